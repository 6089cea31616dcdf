//! The `redis` transport against the plugin contract (`golconde_plugin_api::testing::
//! conformance`), on the local Redis, with streams of the test's own that are deleted at
//! the end.

mod common;

use common::{local_url, unique, Cli};
use golconde_plugin_api::testing::{self, conformance};
use golconde_redis::Redis;

#[test]
fn redis_conforms() {
    conformance::transport::<Redis>(conformance::TransportSuite {
        config: serde_json::json!({
            "url": local_url(),
            "reconnect_initial_ms": 50,
            "reconnect_max_ms": 1000,
        })
        .to_string(),
        queue_prefix: unique("conformance"),
        config_at: Some(Box::new(|host, port| {
            serde_json::json!({
                "url": format!("redis://{host}:{port}/0"),
                "connect_timeout_ms": 2000,
            })
            .to_string()
        })),
        delete_queue: Some(Box::new(|key| {
            Cli::local().run(&["DEL", key]);
        })),
        library: Some(testing::library!(golconde_redis)),
        ..Default::default()
    });
}

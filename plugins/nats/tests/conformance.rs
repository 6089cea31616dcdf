//! The `nats` transport against the plugin contract (`golconde_plugin_api::testing::
//! conformance`), on the local nats-server with JetStream, with streams of the test's own
//! that are deleted at the end.

mod common;

use common::{unique, Side, NATS};
use golconde_nats::Nats;
use golconde_plugin_api::testing::{self, conformance};

#[test]
fn nats_conforms() {
    let side = Side::connect(NATS);
    conformance::transport::<Nats>(conformance::TransportSuite {
        config: serde_json::json!({
            "url": NATS,
            "ack_wait_ms": 5000,
            "reconnect_initial_ms": 50,
            "reconnect_max_ms": 1000,
        })
        .to_string(),
        queue_prefix: unique("conformance").replace('.', "-"),
        config_at: Some(Box::new(|host, port| {
            serde_json::json!({
                "url": format!("nats://{host}:{port}"),
                "connect_timeout_ms": 2000,
            })
            .to_string()
        })),
        delete_queue: Some(Box::new(move |queue| side.delete_stream_of(queue))),
        library: Some(testing::library!(golconde_nats)),
        ..Default::default()
    });
}

//! The `stomp` transport against the plugin contract (`golconde_plugin_api::testing::
//! conformance`), on the local RabbitMQ's STOMP adapter, with queues of the test's own that
//! are deleted (over AMQP) at the end.

mod common;

use common::{unique, Amqp, STOMP};
use golconde_plugin_api::testing::{self, conformance};
use golconde_stomp::Stomp;

#[test]
fn stomp_conforms() {
    let amqp = Amqp::connect();
    conformance::transport::<Stomp>(conformance::TransportSuite {
        config: serde_json::json!({
            "address": STOMP,
            "login": "guest",
            "passcode": "guest",
            "reconnect_initial_ms": 50,
            "reconnect_max_ms": 1000,
        })
        .to_string(),
        queue_prefix: unique("conformance"),
        config_at: Some(Box::new(|host, port| {
            serde_json::json!({
                "address": format!("{host}:{port}"),
                "connect_timeout_ms": 2000,
            })
            .to_string()
        })),
        delete_queue: Some(Box::new(move |queue| amqp.delete(queue))),
        library: Some(testing::library!(golconde_stomp)),
        ..Default::default()
    });
}

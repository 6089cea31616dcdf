//! The `amqp` transport against the plugin contract (`golconde_plugin_api::testing::
//! conformance`), on the local RabbitMQ, with queues of the test's own that are deleted at
//! the end.

mod common;

use common::{broker, unique, URL};
use golconde_amqp::AmqpTransport;
use golconde_plugin_api::testing::{self, conformance};

#[test]
fn amqp_conforms() {
    conformance::transport::<AmqpTransport>(conformance::TransportSuite {
        config: serde_json::json!({
            "url": URL,
            "connection_name": unique("conformance"),
            "reconnect_initial_ms": 50,
            "reconnect_max_ms": 1000,
        })
        .to_string(),
        queue_prefix: unique("conformance"),
        config_at: Some(Box::new(|host, port| {
            serde_json::json!({
                "url": format!("amqp://guest:guest@{host}:{port}/%2f"),
                "connect_timeout_ms": 2000,
            })
            .to_string()
        })),
        delete_queue: Some(Box::new(|queue| broker().delete(queue))),
        library: Some(testing::library!(golconde_amqp)),
        ..Default::default()
    });
}

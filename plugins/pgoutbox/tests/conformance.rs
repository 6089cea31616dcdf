//! The `pgoutbox` transport against the plugin contract (`golconde_plugin_api::testing::
//! conformance`), on the local PostgreSQL, with outboxes in a schema of the test's own that
//! is dropped at the end.

use golconde_pgoutbox::PgOutbox;
use golconde_plugin_api::testing::{self, conformance};

const PG: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";

fn admin() -> postgres::Client {
    postgres::Client::connect(PG, postgres::NoTls).expect("PostgreSQL on 127.0.0.1:5432")
}

#[test]
fn pgoutbox_conforms() {
    let schema = format!("golconde_conformance_{}", std::process::id());
    conformance::transport::<PgOutbox>(conformance::TransportSuite {
        config: serde_json::json!({ "dsn": PG, "poll_interval_ms": 200 }).to_string(),
        // `schema.table`: every queue of the suite is an outbox in the test's schema.
        queue_prefix: format!("{schema}.q"),
        config_at: Some(Box::new(|host, port| {
            serde_json::json!({
                "dsn": format!("host={host} port={port} user=postgres"),
                "connect_timeout_ms": 2000,
            })
            .to_string()
        })),
        delete_queue: Some(Box::new(|queue| {
            let (schema, table) = queue.split_once('.').expect("schema.table");
            let _ = admin().batch_execute(&format!(
                "drop table if exists \"{schema}\".\"{table}\", \"{schema}\".\"{table}_delivered\" cascade"
            ));
        })),
        library: Some(testing::library!(golconde_pgoutbox)),
        ..Default::default()
    });
    let _ = admin().batch_execute(&format!("drop schema if exists {schema} cascade"));
}

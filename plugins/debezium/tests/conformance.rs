//! The `debezium` processor against the plugin contract (`golconde_plugin_api::testing::
//! conformance`): an event of each op, with and without the schema envelope, hostile
//! bodies, enrich, configuration.

mod common;

use common::{event, events_dir};
use golconde_debezium::{Debezium, NEW_KEY_HEADER};
use golconde_plugin_api::{
    testing::{self, conformance},
    Message,
};

#[test]
fn debezium_conforms() {
    let new_key =
        std::fs::read_to_string(events_dir().join("pg-primary-key-update-delete.newkey.json"))
            .unwrap();
    let mut good: Vec<Message> = [
        "pg-create.json",
        "pg-read-no-schema.json",
        "pg-update.json",
        "pg-update-key-changed.json",
        "pg-update-toasted.json",
        "pg-delete.json",
        "pg-delete-no-schema.json",
        "pg-types.json",
        "mysql-create.json",
        "mysql-update.json",
        "mysql-update-no-schema.json",
        "mysql-delete.json",
        "mysql-types.json",
    ]
    .into_iter()
    .map(event)
    .collect();
    good.push(event("pg-primary-key-update-delete.json").with_header(NEW_KEY_HEADER, new_key));
    // An update that moves its row to another key: an `Update` by the old one.
    good.push(Message::new(
        r#"{"op": "u", "before": {"id": 7, "title": "a"}, "after": {"id": 8, "title": "a"},
            "source": {"connector": "postgresql", "name": "s", "schema": "public",
                       "table": "articles", "lsn": 46524000, "txId": 570}}"#,
    ));
    conformance::processor::<Debezium>(conformance::ProcessorSuite {
        // What the host passes for a pipeline with exact `tables`.
        config: r#"{"table": "public.customers",
                    "tables": ["public.customers", "public.articles"]}"#
            .into(),
        good,
        // Tombstones: an empty body, Debezium Server's `null.value`, JSON `null`.
        skipped: vec![
            Message::new(Vec::new()),
            Message::new("default"),
            Message::new("null"),
        ],
        library: Some(testing::library!(golconde_debezium)),
        ..Default::default()
    });
}

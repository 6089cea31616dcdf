//! Every event in `tests/events/` (written after Debezium's documented examples; its
//! README names the section each comes from) through the processor, as the host calls it,
//! with the exact change each must give.

mod common;

use std::collections::BTreeSet;

use common::*;
use golconde_debezium::NEW_KEY_HEADER;
use golconde_plugin_api::{Change, Value};

/// Every file the tests below read; `every_event_file_is_checked` keeps it in step with
/// the directory, so that no file goes untested.
const FILES: &[&str] = &[
    "README.md",
    "mysql-create.json",
    "mysql-delete.json",
    "mysql-truncate.json",
    "mysql-types.json",
    "mysql-update-no-schema.json",
    "mysql-update.json",
    "pg-create.json",
    "pg-delete-no-schema.json",
    "pg-delete.json",
    "pg-primary-key-update-delete.json",
    "pg-primary-key-update-delete.newkey.json",
    "pg-read-no-schema.json",
    "pg-truncate.json",
    "pg-types.json",
    "pg-update-key-changed.json",
    "pg-update-toasted.json",
    "pg-update.json",
    "tombstone-envelope.json",
    "tombstone-null.json",
    "tombstone-rabbitmq-sink.txt",
];

const PG: &str = "dbz:postgresql:PostgreSQL_server";
const MYSQL: &str = "dbz:mysql:mysql-server-1:file=mysql-bin.000003";

fn accepted(config: &str, file: &str) -> Change {
    process(config, &event(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[test]
fn every_event_file_is_checked() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(events_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    let listed: BTreeSet<String> = FILES.iter().map(|f| f.to_string()).collect();
    assert_eq!(on_disk, listed, "add a test for each new event file");
    let readme = std::fs::read_to_string(events_dir().join("README.md")).unwrap();
    for file in FILES.iter().filter(|f| **f != "README.md") {
        assert!(
            readme.contains(&format!("`{file}`")),
            "README.md says nothing of {file}"
        );
    }
}

#[test]
fn postgresql_creates_and_snapshot_reads_are_upserts() {
    assert_eq!(
        accepted("{}", "pg-create.json"),
        change(
            Some(&format!("{PG}:lsn=24023128,txId=555:public.customers:[1]")),
            upsert(
                "public.customers",
                customer(1, "Anne", "Kretchmar", "annek@noanswer.org")
            )
        )
    );
    // Without the schema envelope (`schemas.enable=false`).
    assert_eq!(
        accepted("{}", "pg-read-no-schema.json"),
        change(
            Some(&format!("{PG}:lsn=24023128,txId=555:public.customers:[2]")),
            upsert(
                "public.customers",
                customer(2, "George", "Bailey", "gbailey@foobar.com")
            )
        )
    );
    // Without a known key, the id holds every value of the row.
    assert_eq!(
        accepted(r#"{"default_key_columns": []}"#, "pg-read-no-schema.json").id.into_option(),
        Some(
            format!(
                r#"{PG}:lsn=24023128,txId=555:public.customers:[2,"George","Bailey","gbailey@foobar.com"]"#
            )
            .into()
        )
    );
}

#[test]
fn postgresql_updates_upsert_unless_the_key_changed() {
    let anne_marie = customer(1, "Anne Marie", "Kretchmar", "annek@noanswer.org");
    assert_eq!(
        accepted("{}", "pg-update.json"),
        change(
            Some(&format!("{PG}:lsn=24023128,txId=556:public.customers:[1]")),
            upsert("public.customers", anne_marie.clone())
        )
    );
    // `before` (REPLICA IDENTITY FULL) has another email than `after`: with the key
    // configured as the email, the row with the old email is updated.
    let by_email = r#"{"key_columns": {"public.customers": ["email"]}}"#;
    assert_eq!(
        accepted(by_email, "pg-update-key-changed.json"),
        change(
            Some(&format!(
                r#"{PG}:lsn=24023512,txId=557:public.customers:["anne.marie@example.org"]"#
            )),
            update(
                "public.customers",
                customer(1, "Anne Marie", "Kretchmar", "anne.marie@example.org"),
                vec![column("email", text("annek@noanswer.org"))]
            )
        )
    );
    // With the default key (`id`), which did not change, it is an upsert.
    assert_eq!(
        accepted("{}", "pg-update-key-changed.json").operations[0],
        upsert(
            "public.customers",
            customer(1, "Anne Marie", "Kretchmar", "anne.marie@example.org")
        )
    );
}

#[test]
fn unchanged_toasted_values_are_left_out() {
    assert_eq!(
        accepted("{}", "pg-update-toasted.json"),
        change(
            Some(&format!("{PG}:lsn=46523400,txId=560:public.articles:[7]")),
            upsert(
                "public.articles",
                vec![
                    column("id", Value::Int(7)),
                    column("title", text("A new title"))
                ]
            )
        )
    );
    // A connector with another placeholder: the default one is then a value like any.
    let other = r#"{"unavailable_value_placeholder": "<unavailable>"}"#;
    assert_eq!(
        accepted(other, "pg-update-toasted.json").operations[0]
            .data
            .len(),
        5
    );
}

#[test]
fn postgresql_deletes_select_the_row_by_its_key() {
    assert_eq!(
        accepted("{}", "pg-delete.json"),
        change(
            Some(&format!("{PG}:lsn=46523128,txId=556:public.customers:[1]")),
            delete("public.customers", vec![column("id", Value::Int(1))])
        )
    );
    // REPLICA IDENTITY DEFAULT: Debezium fills the NOT NULL columns the WAL left out with
    // empty strings; the key alone selects the row.
    assert_eq!(
        accepted("{}", "pg-delete-no-schema.json"),
        change(
            Some(&format!("{PG}:lsn=46523240,txId=558:public.customers:[2]")),
            delete("public.customers", vec![column("id", Value::Int(2))])
        )
    );
    let e = refusal(
        r#"{"default_key_columns": []}"#,
        &event("pg-delete-no-schema.json"),
    );
    assert!(
        e.contains(
            "the delete event (op `d`) of table `public.customers` does not say which of its \
             columns (`id`, `first_name`, `last_name`, `email`) are the key"
        ),
        "{e}"
    );
    assert!(e.contains("`key_columns`"), "{e}");
}

#[test]
fn a_primary_key_change_deletes_by_the_key_its_header_names() {
    let expected = change(
        Some(&format!(
            "{PG}:lsn=46523300,txId=559:public.products_on_hand:[101]"
        )),
        delete(
            "public.products_on_hand",
            vec![column("product_id", Value::Int(101))],
        ),
    );
    let new_key =
        std::fs::read_to_string(events_dir().join("pg-primary-key-update-delete.newkey.json"))
            .unwrap();
    let with_header =
        event("pg-primary-key-update-delete.json").with_header(NEW_KEY_HEADER, new_key.clone());
    assert_eq!(process("{}", &with_header).unwrap(), expected);
    // The header without its schema envelope names the same key.
    let bare = event("pg-primary-key-update-delete.json")
        .with_header(NEW_KEY_HEADER, r#"{"product_id": 102}"#);
    assert_eq!(process("{}", &bare).unwrap(), expected);
    // Without the header, `key_columns` must say it: `quantity` holds a zero Debezium
    // filled in, not the row's value.
    let e = refusal("{}", &event("pg-primary-key-update-delete.json"));
    assert!(e.contains("(`product_id`, `quantity`) are the key"), "{e}");
    let configured = r#"{"key_columns": {"public.products_on_hand": ["product_id"]}}"#;
    assert_eq!(
        process(configured, &event("pg-primary-key-update-delete.json")).unwrap(),
        expected
    );
    let bad_header =
        event("pg-primary-key-update-delete.json").with_header(NEW_KEY_HEADER, r#"{"sku": "A-1"}"#);
    assert!(refusal("{}", &bad_header).contains(
        "no value in `before` for key column `sku`, which its `__debezium.newkey` header names"
    ));
}

#[test]
fn postgresql_logical_types_are_decoded() {
    let change = accepted("{}", "pg-types.json");
    assert_eq!(
        change.id.clone().into_option(),
        Some(format!("{PG}:lsn=46523500,txId=561:public.type_samples:[1]").into())
    );
    let [op] = change.operations.as_slice() else {
        panic!("{change:?}")
    };
    assert_eq!(op.table.as_str(), "public.type_samples");
    let json = |text: &str| Value::Json(text.into());
    let expected = vec![
        column("id", Value::Int(1)),
        column("price", Value::Numeric("-12345.67".into())),
        column("amount", Value::Numeric("1234567890123456.7890".into())),
        column("born", text("1960-01-01")),
        column("alarm", text("01:02:03.004")),
        column("wakes", text("07:30:00.5")),
        column("legacy", text("1969-12-31T00:00:00")),
        column("created", text("2018-06-20T15:13:16.945104")),
        column("updated", text("2018-06-20T13:13:16.945104Z")),
        column("opens", text("07:00:00Z")),
        column("span", text("90061000000 microseconds")),
        column("doc", json(r#"{"a": [1, 2]}"#)),
        column("uid", text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")),
        column("flags", text("1011")),
        column("mood", text("happy")),
        column("data", Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef].into())),
        column("ratio", Value::Float(0.5)),
        column("temperature", Value::Float(36.6)),
        column("active", Value::Bool(true)),
        column(
            "scores",
            Value::Array(vec![Value::Int(1), Value::Int(2), Value::Null].into()),
        ),
        column("note", Value::Null),
    ];
    // A struct stays JSON text as written (spread over lines here): compared as JSON.
    let (location, rest): (Vec<_>, Vec<_>) =
        op.data.iter().partition(|c| c.name.as_str() == "location");
    assert_eq!(rest.into_iter().cloned().collect::<Vec<_>>(), expected);
    let [location] = location.as_slice() else {
        panic!("{op:?}")
    };
    let Value::Json(located) = &location.value else {
        panic!("{location:?}")
    };
    let parsed: serde_json::Value = serde_json::from_str(located).unwrap();
    assert_eq!(
        parsed,
        serde_json::json!({"x": 1.5, "y": -2.25, "wkb": null, "srid": null})
    );
}

#[test]
fn mysql_events_name_their_table_by_database() {
    let anne = customer(1004, "Anne", "Kretchmar", "annek@noanswer.org");
    let anne_marie = customer(1004, "Anne Marie", "Kretchmar", "annek@noanswer.org");
    assert_eq!(
        accepted("{}", "mysql-create.json"),
        change(
            Some(&format!("{MYSQL},pos=154,row=0:inventory.customers:[1004]")),
            upsert("inventory.customers", anne)
        )
    );
    assert_eq!(
        accepted("{}", "mysql-update.json"),
        change(
            Some(&format!("{MYSQL},pos=484,row=0:inventory.customers:[1004]")),
            upsert("inventory.customers", anne_marie)
        )
    );
    assert_eq!(
        accepted("{}", "mysql-delete.json"),
        change(
            Some(&format!("{MYSQL},pos=805,row=0:inventory.customers:[1004]")),
            delete("inventory.customers", vec![column("id", Value::Int(1004))])
        )
    );
    assert_eq!(
        accepted(
            r#"{"table_prefix": "replica."}"#,
            "mysql-update-no-schema.json"
        ),
        change(
            Some(&format!(
                "{MYSQL},pos=1021,row=0:inventory.customers:[1004]"
            )),
            upsert(
                "replica.customers",
                customer(1004, "Anne Marie", "Kretchmar", "anne.marie@noanswer.org")
            )
        )
    );
}

#[test]
fn mysql_types_are_decoded() {
    let config = r#"{"table_map": {"inventory.type_samples": "public.mysql_samples"},
                     "tables": ["public.mysql_samples"]}"#;
    let change = accepted(config, "mysql-types.json");
    assert_eq!(
        change,
        change_of(
            &format!("{MYSQL},pos=1200,row=0:inventory.type_samples:[1]"),
            upsert(
                "public.mysql_samples",
                vec![
                    column("id", Value::Int(1)),
                    column("price", Value::Numeric("10.49".into())),
                    column("born", text("1995-05-23")),
                    column("alarm", text("-838:59:59")),
                    // The documentation's example: DATETIME 2018-06-20 06:37:03.
                    column("seen", text("2018-06-20T06:37:03")),
                    column("precise", text("2018-06-20T06:37:03.000001")),
                    column("stamped", text("2018-06-20T13:37:03Z")),
                    column("made", Value::Int(2018)),
                    column("size", text("M")),
                    column("colours", text("red,blue")),
                    column("flags", text("1000000101")),
                    column("photo", Value::Bytes(b"\x89PNG".to_vec().into())),
                    column("doc", Value::Json(r#"{"k":"v"}"#.into())),
                    column("tiny", Value::Int(1)),
                    column("big", Value::Int(i64::MIN)),
                ]
            )
        )
    );
}

fn change_of(id: &str, operation: golconde_plugin_api::Operation) -> Change {
    change(Some(id), operation)
}

#[test]
fn truncates_are_refused_skipped_or_applied() {
    for (file, table) in [
        ("pg-truncate.json", "public.customers"),
        ("mysql-truncate.json", "inventory.customers"),
    ] {
        let e = refusal("{}", &event(file));
        assert!(
            e.contains(&format!(
                "the event truncates table `{table}` (op `t`), and Golconde does not apply \
                 them unless told to"
            )),
            "{e}"
        );
        assert!(e.contains("`truncate = \"skip\"`"), "{e}");
        assert!(e.contains("`truncate = \"apply\"`"), "{e}");
        assert_eq!(accepted(r#"{"truncate": "skip"}"#, file), nothing());
        // Applied: a delete of every row of the target, with the event's position as id.
        let applied = accepted(
            &format!(r#"{{"truncate": "apply", "table_map": {{"{table}": "replica.customers"}}}}"#),
            file,
        );
        assert_eq!(applied.operations.len(), 1);
        let op = &applied.operations[0];
        assert_eq!(op.action, golconde_plugin_api::Action::Delete);
        assert_eq!(op.table.as_str(), "replica.customers");
        assert!(op.restriction.is_empty() && op.data.is_empty());
        let id = applied.id.clone().into_option().unwrap_or_default();
        assert!(id.starts_with("dbz:") && id.contains(table), "{applied:?}");
    }
}

#[test]
fn tombstones_write_nothing() {
    for file in [
        "tombstone-null.json",
        "tombstone-envelope.json",
        "tombstone-rabbitmq-sink.txt",
    ] {
        assert_eq!(accepted("{}", file), nothing(), "{file}");
    }
    // An empty body is a tombstone whatever `null_value` says.
    let empty = golconde_plugin_api::Message::new(Vec::new());
    assert_eq!(process("{}", &empty).unwrap(), nothing());
    assert_eq!(process(r#"{"null_value": ""}"#, &empty).unwrap(), nothing());
    // Once another body stands for tombstones, `default` is no event.
    let default = event("tombstone-rabbitmq-sink.txt");
    assert!(refusal(r#"{"null_value": "<null>"}"#, &default).contains("not valid JSON"));
}

#[test]
fn long_keys_make_short_ids() {
    let long = "x".repeat(200);
    let body = format!(
        r#"{{"op": "c", "after": {{"id": "{long}"}}, "source": {{"connector": "postgresql",
            "name": "s", "schema": "public", "table": "t", "lsn": 5, "txId": 9}}}}"#
    );
    let id = process("{}", &golconde_plugin_api::Message::new(body))
        .unwrap()
        .id
        .into_option()
        .unwrap();
    let (prefix, digest) = id.as_str().rsplit_once(':').unwrap();
    assert_eq!(prefix, "dbz:postgresql:s:lsn=5,txId=9:public.t:sha256");
    assert_eq!(digest.len(), 32);
    assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()));
    // Other connectors' positions are not known: no id rather than a weak one.
    let oracle = r#"{"op": "c", "after": {"id": 1}, "source": {"connector": "oracle",
        "schema": "INVENTORY", "table": "CUSTOMERS", "scn": "123"}}"#;
    let change = process("{}", &golconde_plugin_api::Message::new(oracle)).unwrap();
    assert_eq!(change.id.into_option(), None);
    assert_eq!(change.operations[0].table.as_str(), "INVENTORY.CUSTOMERS");
}

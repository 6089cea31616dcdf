//! Pipelines end to end against RabbitMQ and PostgreSQL: each test computes the expected
//! final table from its input and compares it row by row.

use std::time::Duration;

use golconde_e2e::{
    eventually,
    services::{real_config, unique, Database, Queues},
    Daemon, Scratch,
};

const ITEMS: &str = "create table items (id bigint primary key, version int not null, note text)";

fn set(id: u64, version: u64) -> String {
    format!(r#"{{"action": "set", "data": {{"id": {id}, "version": {version}}}}}"#)
}

fn pipeline(name: &str, queue: &str, extra: &str) -> String {
    format!(
        r#"
[[pipelines]]
name = "{name}"
transport = "rabbit"
queue = "{queue}"
processor = {{ plugin = "autosql" }}
database = "db"
table = "items"
batch = {{ max_messages = 500, max_wait_ms = 20 }}
retry = {{ initial_backoff_ms = 50, max_backoff_ms = 1000 }}
{extra}
"#
    )
}

#[test]
fn every_row_ends_at_its_last_version_with_four_workers() {
    let mut queues = Queues::new();
    let queue = queues.name("ordering");
    let mut db = Database::create("ordering", ITEMS);
    let scratch = Scratch::new();
    let config = scratch.config(&real_config(
        &unique("ordering"),
        &[("db", &db, "")],
        &pipeline("ordering", &queue, "workers = 4"),
    ));
    let messages: Vec<String> = (0..20_000).map(|i| set(i % 200, i)).collect();
    queues.publish(&queue, &messages);

    let daemon = Daemon::start(&config);
    let done = eventually(Duration::from_secs(120), || queues.depth(&queue) == (0, 0));
    let (status, log) = daemon.stop();
    assert!(done, "queue not drained: {:?}\n{log}", queues.depth(&queue));
    assert!(status.success(), "{log}");
    let expected: Vec<String> = (0..200).map(|id| format!("{id}|{}", 19_800 + id)).collect();
    assert_eq!(
        db.rows("select id, version from items order by id"),
        expected
    );
}

#[test]
fn ten_bad_messages_among_ten_thousand_are_dead_lettered_with_reasons() {
    let mut queues = Queues::new();
    let queue = queues.name("poison");
    let dead = queues.name("poison-dead");
    let mut db = Database::create("poison", ITEMS);
    let scratch = Scratch::new();
    let config = scratch.config(&real_config(
        &unique("poison"),
        &[("db", &db, "")],
        &pipeline(
            "poison",
            &queue,
            &format!(r#"dead_letter = {{ transport = "rabbit", queue = "{dead}" }}"#),
        ),
    ));
    let bad = [
        "this is not JSON".to_string(),
        r#"{"action": "upsert", "data": {"id": 1}}"#.to_string(),
        r#"{"action": "set", "data": {"id": 2, "colour": "red"}}"#.to_string(),
        r#"{"action": "set", "data": {"id": 3, "version": null}}"#.to_string(),
        r#"{"action": "set", "data": {"id": 4, "version": "seven"}}"#.to_string(),
        r#"{"action": "set", "table": "pg_catalog.pg_authid", "data": {"id": 5}}"#.to_string(),
        r#"{"action": "delete"}"#.to_string(),
        r#"{"action": "update", "data": {"version": 1}, "restriction": {}}"#.to_string(),
        r#"{"action": "set", "data": {"id": 6, "version x\"; drop table items; --": 1}}"#
            .to_string(),
        r#"{"action": "add", "data": {"id": 7, "version": 2147483648}}"#.to_string(),
    ];
    let mut messages: Vec<String> = (0..10_000u64).map(|i| set(1000 + i, i)).collect();
    for (n, body) in bad.iter().enumerate() {
        messages.insert(n * 997 + 13, body.clone());
    }
    queues.publish(&queue, &messages);

    let daemon = Daemon::start(&config);
    let done = eventually(Duration::from_secs(120), || queues.depth(&queue) == (0, 0));
    let (status, log) = daemon.stop();
    assert!(done, "queue not drained: {:?}\n{log}", queues.depth(&queue));
    assert!(status.success(), "{log}");

    assert_eq!(db.count("items"), 10_000);
    assert_eq!(
        db.rows(
            "select count(*) from items where id between 1000 and 10999 and version = id - 1000"
        ),
        ["10000"]
    );
    let letters = queues.drain(&dead, Duration::from_millis(500));
    let mut bodies: Vec<String> = letters
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    bodies.sort();
    let mut expected = bad.to_vec();
    expected.sort();
    assert_eq!(bodies, expected);
    for letter in &letters {
        let body = String::from_utf8_lossy(&letter.body);
        let error = letter.header("x-golconde-error").unwrap_or_default();
        assert!(!error.is_empty(), "no reason for {body}");
        assert_eq!(
            letter.header("x-golconde-error-kind"),
            Some("permanent"),
            "{body}: {error}"
        );
        assert_eq!(letter.header("x-golconde-pipeline"), Some("poison"));
        assert_eq!(
            letter.header("x-golconde-source-queue"),
            Some(queue.as_str())
        );
        assert!(letter.header("x-golconde-failed-at").is_some());
        if body.contains("colour") {
            assert!(error.contains("colour"), "{error}");
        }
        if body.contains("pg_authid") {
            assert!(error.contains("pg_catalog.pg_authid"), "{error}");
        }
    }
}

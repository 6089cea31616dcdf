//! The out-of-tree example plugin `sqlite` (examples/plugins/sqlite) in the real daemon:
//! AMQP into a primary SQLite file, whose keys SQLite generates, fanned out to a replica
//! SQLite file. Both files end with the same rows and the same ids, and a message that
//! cannot apply is dead-lettered with SQLite's reason.
//!
//! The plugin is no workspace member: `scripts/test` builds it into the workspace's target
//! folder, beside the others.

use std::{path::Path, time::Duration};

use golconde_e2e::{
    build_dir, eventually,
    services::{real_config, unique, Queues},
    Daemon, Scratch,
};

// AUTOINCREMENT: ids are never reused, so the primary, which once held id 1000, numbers
// new rows from 1001 while the replica, left alone, would start at 1. The replica ends with
// the same ids only if the fan-out copies carry the keys the primary generated.
const SCHEMA: &str = "CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    email TEXT UNIQUE,
    score REAL
)";
const USED_BEFORE: &str = "INSERT INTO users (id, name) VALUES (1000, 'gone'); DELETE FROM users;";

/// Every row of `users`, by id, rendered as text.
fn users(path: &Path) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("the database file");
    let mut query = conn
        .prepare("SELECT id, name, email, score FROM users ORDER BY id")
        .expect("users");
    query
        .query_map([], |row| {
            Ok(format!(
                "{}|{}|{}|{}",
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?.unwrap_or_default(),
                row.get::<_, Option<f64>>(3)?
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
            ))
        })
        .expect("rows")
        .map(|row| row.expect("a row"))
        .collect()
}

fn pipeline(name: &str, queue: &str, database: &str, extra: &str) -> String {
    format!(
        r#"
[[pipelines]]
name = "{name}"
transport = "rabbit"
queue = "{queue}"
processor = "autosql"
database = "{database}"
table = "users"
batch = {{ max_messages = 20, max_wait_ms = 10 }}
{extra}
"#
    )
}

#[test]
fn a_primary_and_a_replica_sqlite_file_end_identical_with_generated_ids() {
    assert!(
        build_dir().join("libgolconde_sqlite.so").exists(),
        "the example plugin is not built: run `cargo build --manifest-path \
         examples/plugins/sqlite/Cargo.toml --target-dir target` (scripts/test does)"
    );
    let mut queues = Queues::new();
    let source = queues.name("sqlite-source");
    let to_replica = queues.name("sqlite-replica");
    let dead = queues.name("sqlite-dead");
    let scratch = Scratch::new();
    for (file, history) in [("primary.db", USED_BEFORE), ("replica.db", "")] {
        rusqlite::Connection::open(scratch.path(file))
            .and_then(|conn| conn.execute_batch(&format!("{SCHEMA}; {history}")))
            .expect("a database file");
    }
    // Relative paths: the plugin resolves them against the configuration file's folder
    // (ABI 1.1), not against wherever the daemon was started.
    let mut sections = String::from(
        r#"
[databases.primary]
plugin = "sqlite"
path = "primary.db"

[databases.replica]
plugin = "sqlite"
path = "replica.db"
busy_timeout_ms = 2000
"#,
    );
    sections.push_str(&pipeline(
        "primary",
        &source,
        "primary",
        &format!(
            r#"fan_out = [ {{ transport = "rabbit", queue = "{to_replica}" }} ]
dead_letter = {{ transport = "rabbit", queue = "{dead}" }}"#
        ),
    ));
    sections.push_str(&pipeline("replica", &to_replica, "replica", ""));
    let config = scratch.config(&real_config(&unique("sqlite"), &[], &sections));
    let mut daemon = Daemon::start(&config);
    daemon.wait_for_log("pipeline(s) running", Duration::from_secs(30));

    // No ids: the primary's SQLite generates them, and the fan-out copies carry them.
    let adds: Vec<String> = (1..=30)
        .map(|i| format!(r#"{{"action": "add", "data": {{"name": "user {i}", "email": "u{i}@example.com"}}}}"#))
        .collect();
    queues.publish(&source, &adds);
    let primary = scratch.path("primary.db");
    let replica = scratch.path("replica.db");
    assert!(
        eventually(Duration::from_secs(30), || users(&primary).len() == 30),
        "adds not applied; log:\n{}",
        daemon.log()
    );
    // User i has id 1000 + i.
    let rest = [
        r#"{"action": "set", "data": {"id": 1003, "name": "renamed", "score": 2.5}}"#,
        r#"{"action": "set", "data": {"id": 5000, "name": "set new"}}"#,
        r#"{"action": "update", "data": {"score": 9.75}, "restriction": {"name": "user 7"}}"#,
        r#"{"action": "delete", "restriction": {"id": 1010}}"#,
        // Cannot apply: email is UNIQUE, and user 1 has it.
        r#"{"action": "add", "data": {"name": "impostor", "email": "u1@example.com"}}"#,
        r#"{"action": "add", "data": {"name": "after"}}"#,
    ];
    queues.publish(&source, &rest.map(String::from));

    let mut expected: Vec<String> = (1..=30)
        .filter(|&i| i != 10)
        .map(|i| match i {
            3 => "1003|renamed|u3@example.com|2.5".to_string(),
            7 => "1007|user 7|u7@example.com|9.75".to_string(),
            i => format!("{}|user {i}|u{i}@example.com|", 1000 + i),
        })
        .collect();
    expected.push("5000|set new||".into());
    // After 5000, the largest id so far.
    expected.push("5001|after||".into());
    let settled = eventually(Duration::from_secs(60), || {
        users(&primary) == expected && users(&replica) == expected
    });
    let (status, log) = daemon.stop();
    assert!(
        settled,
        "primary:\n{:#?}\nreplica:\n{:#?}\nlog:\n{log}",
        users(&primary),
        users(&replica)
    );
    assert!(status.success(), "{log}");

    let letters = queues.drain(&dead, Duration::from_millis(500));
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter.body.as_slice(), rest[4].as_bytes());
    let reason = letter.header("x-golconde-error").unwrap_or_default();
    assert!(
        reason.contains("UNIQUE constraint failed: users.email"),
        "{reason}"
    );
    assert_eq!(letter.header("x-golconde-error-kind"), Some("permanent"));
    assert_eq!(letter.header("x-golconde-pipeline"), Some("primary"));
    for queue in [&source, &to_replica] {
        assert_eq!(queues.depth(queue), (0, 0), "{queue}");
    }
}

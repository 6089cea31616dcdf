//! The `mysql` database end to end against RabbitMQ and MariaDB, the cases the `postgres`
//! database is held to: every row at its last version with four workers, bad messages
//! dead-lettered alone with their reasons, and Golconde's sessions killed mid-stream with
//! nothing lost.

use std::time::Duration;

use golconde_e2e::{
    eventually,
    mariadb::MariaDb,
    services::{real_config, unique, Queues},
    Daemon, Scratch,
};

const ITEMS: &str =
    "create table items (id bigint primary key, version int not null, note varchar(20))";

fn set(id: u64, version: u64) -> String {
    format!(r#"{{"action": "set", "data": {{"id": {id}, "version": {version}}}}}"#)
}

/// A pipeline from `queue` into `items` of `db`, with the database's section.
fn config(
    scratch: &Scratch,
    what: &str,
    queue: &str,
    db: &MariaDb,
    extra: &str,
) -> std::path::PathBuf {
    let text = format!(
        r#"
[databases.db]
plugin = "mysql"
dsn = "{dsn}"

[[pipelines]]
name = "{what}"
transport = "rabbit"
queue = "{queue}"
processor = "autosql"
database = "db"
table = "items"
batch = {{ max_messages = 500, max_wait_ms = 20 }}
retry = {{ initial_backoff_ms = 50, max_backoff_ms = 1000 }}
{extra}
"#,
        dsn = db.dsn()
    );
    scratch.config(&real_config(&unique(what), &[], &text))
}

/// Runs the daemon on `config` until `queue` is empty, then stops it; fails unless both
/// happen.
fn run_until_drained(config: &std::path::Path, queues: &Queues, queue: &str) {
    let daemon = Daemon::start(config);
    let done = eventually(Duration::from_secs(120), || queues.depth(queue) == (0, 0));
    let (status, log) = daemon.stop();
    assert!(done, "queue not drained: {:?}\n{log}", queues.depth(queue));
    assert!(status.success(), "{log}");
}

fn last_versions(keys: u64, messages: u64) -> Vec<String> {
    (0..keys)
        .map(|id| format!("{id}|{}", messages - keys + id))
        .collect()
}

#[test]
fn every_row_ends_at_its_last_version_with_four_workers() {
    let mut queues = Queues::new();
    let queue = queues.name("my-ordering");
    let db = MariaDb::create("my_ordering", ITEMS);
    let scratch = Scratch::new();
    let config = config(&scratch, "my-ordering", &queue, &db, "workers = 4");
    let messages: Vec<String> = (0..20_000).map(|i| set(i % 200, i)).collect();
    queues.publish(&queue, &messages);

    run_until_drained(&config, &queues, &queue);
    assert_eq!(
        db.rows("select id, version from items order by id"),
        last_versions(200, 20_000)
    );
}

#[test]
fn bad_messages_among_thousands_are_dead_lettered_alone_with_reasons() {
    let mut queues = Queues::new();
    let queue = queues.name("my-poison");
    let dead = queues.name("my-poison-dead");
    let db = MariaDb::create("my_poison", ITEMS);
    let scratch = Scratch::new();
    let config = config(
        &scratch,
        "my-poison",
        &queue,
        &db,
        &format!(
            r#"workers = 2
dead_letter = {{ transport = "rabbit", queue = "{dead}" }}"#
        ),
    );
    // Each fails only in MariaDB's hands or the plugin's: what strict mode refuses and what
    // MySQL would otherwise truncate or coerce.
    let bad = [
        (
            r#"{"action": "set", "data": {"id": 2, "colour": "red"}}"#,
            "colour",
        ),
        (
            r#"{"action": "set", "data": {"id": 3, "version": null}}"#,
            "version",
        ),
        (
            r#"{"action": "set", "data": {"id": 4, "version": "seven"}}"#,
            "version",
        ),
        (
            r#"{"action": "set", "data": {"id": 5, "version": 2147483648}}"#,
            "version",
        ),
        (
            r#"{"action": "set", "data": {"id": 6, "version": 1, "note": "twenty-one characters"}}"#,
            "note",
        ),
        (
            r#"{"action": "set", "data": {"id": 7, "version": 1.5}}"#,
            "version",
        ),
        (
            r#"{"action": "set", "data": {"id": 8, "version x`; drop table items; --": 1}}"#,
            "drop table",
        ),
        (
            r#"{"action": "add", "data": {"id": 1000, "version": 0}}"#,
            "items",
        ),
    ];
    let mut messages: Vec<String> = (0..10_000u64).map(|i| set(1000 + i, i)).collect();
    for (n, (body, _)) in bad.iter().enumerate() {
        messages.insert(n * 997 + 1013, body.to_string());
    }
    queues.publish(&queue, &messages);

    run_until_drained(&config, &queues, &queue);

    assert_eq!(
        db.rows("select count(*), sum(version = id - 1000) from items"),
        ["10000|10000"]
    );
    let letters = queues.drain(&dead, Duration::from_millis(500));
    let mut bodies: Vec<String> = letters
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect();
    bodies.sort();
    let mut expected: Vec<String> = bad.iter().map(|(b, _)| b.to_string()).collect();
    expected.sort();
    assert_eq!(bodies, expected);
    for letter in &letters {
        let body = String::from_utf8_lossy(&letter.body);
        let error = letter.header("x-golconde-error").unwrap_or_default();
        let (_, named) = bad.iter().find(|(b, _)| *b == body).unwrap();
        assert!(
            error.contains(named),
            "{body}: the error does not name `{named}`: {error}"
        );
        assert_eq!(
            letter.header("x-golconde-error-kind"),
            Some("permanent"),
            "{body}: {error}"
        );
    }
}

#[test]
fn sessions_killed_mid_stream_lose_nothing() {
    const MESSAGES: u64 = 30_000;
    const KEYS: u64 = 500;
    let mut queues = Queues::new();
    let queue = queues.name("my-kill");
    let db = MariaDb::create("my_kill", ITEMS);
    let scratch = Scratch::new();
    let config = config(&scratch, "my-kill", &queue, &db, "workers = 2");
    let messages: Vec<String> = (0..MESSAGES).map(|i| set(i % KEYS, i)).collect();
    queues.publish(&queue, &messages);

    let daemon = Daemon::start(&config);
    let started = eventually(Duration::from_secs(60), || {
        queues.depth(&queue).0 < MESSAGES * 3 / 4
    });
    assert!(started, "never got going; log:\n{}", daemon.log());
    let (mut killed, mut mid_stream) = (0, false);
    for _ in 0..3 {
        let n = db.kill_golconde_connections();
        killed += n;
        // On a loaded machine the stream may be done before a kill lands: only when the
        // table is short of its last versions after the kill must a batch be retried.
        mid_stream |= n > 0
            && db.rows("select id, version from items order by id")
                != last_versions(KEYS, MESSAGES);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(killed > 0, "no Golconde connection to kill");
    let drained = eventually(Duration::from_secs(120), || queues.depth(&queue) == (0, 0));
    let (status, log) = daemon.stop();
    assert!(
        drained,
        "queue not drained: {:?}; log:\n{log}",
        queues.depth(&queue)
    );
    assert!(status.success(), "{log}");
    if mid_stream {
        assert!(log.contains("retrying the batch"), "{log}");
    }
    assert_eq!(
        db.rows("select id, version from items order by id"),
        last_versions(KEYS, MESSAGES)
    );
}

/// A MariaDB account of the test's own, dropped at the end.
struct Account(String);

impl Drop for Account {
    fn drop(&mut self) {
        let _ = std::process::Command::new("mariadb")
            .args(["-h", "127.0.0.1", "-u", "root", "-e"])
            .arg(format!(
                "drop user if exists '{0}'@'%', '{0}'@'localhost'",
                self.0
            ))
            .status();
    }
}

#[test]
fn refusals_that_might_pass_are_retried_a_bounded_number_of_times() {
    let db = MariaDb::create(
        "my_refusals",
        "create table items (id bigint primary key, v varchar(20));
         create table secret (id bigint primary key, v varchar(20));
         create table sleepy (id bigint primary key, v varchar(20));
         create trigger nap before insert on sleepy for each row
             set @nap = if(new.v = 'slow', sleep(5), 0)",
    );
    // It may read `secret` (or the table would look missing) but not write it. MariaDB
    // account names are at most 80 characters.
    let account = Account(format!("golconde_{}", std::process::id()));
    let user = &account.0;
    for host in ["%", "localhost"] {
        db.execute(&format!(
            "create user if not exists '{user}'@'{host}';
             grant all on `{0}`.items to '{user}'@'{host}';
             grant all on `{0}`.sleepy to '{user}'@'{host}';
             grant select on `{0}`.secret to '{user}'@'{host}';",
            db.name
        ));
    }
    let mut queues = Queues::new();
    let queue = queues.name("my-refusals");
    let dead = queues.name("my-refusals-dead");
    let scratch = Scratch::new();
    let text = format!(
        r#"
[databases.db]
plugin = "mysql"
dsn = "mysql://{user}@127.0.0.1:3306/{name}"
max_attempts = 2
statement_timeout_ms = 500

[[pipelines]]
name = "my-refusals"
transport = "rabbit"
queue = "{queue}"
processor = "autosql"
database = "db"
tables = ["items", "secret", "sleepy"]
retry = {{ initial_backoff_ms = 50, max_backoff_ms = 500 }}
dead_letter = {{ transport = "rabbit", queue = "{dead}" }}
"#,
        name = db.name
    );
    let config = scratch.config(&real_config(&unique("my-refusals"), &[], &text));
    let bad = [
        r#"{"action": "set", "table": "secret", "data": {"id": 1, "v": "x"}}"#,
        r#"{"action": "set", "table": "sleepy", "data": {"id": 1, "v": "slow"}}"#,
    ];
    let good = [
        r#"{"action": "set", "table": "items", "data": {"id": 1, "v": "fine"}}"#,
        r#"{"action": "set", "table": "sleepy", "data": {"id": 2, "v": "quick"}}"#,
    ];
    let all: Vec<String> = bad.iter().chain(&good).map(|s| s.to_string()).collect();
    queues.publish(&queue, &all);

    let daemon = Daemon::start(&config);
    let done = eventually(Duration::from_secs(60), || {
        queues.depth(&queue) == (0, 0) && queues.depth(&dead).0 == 2
    });
    let (status, log) = daemon.stop();
    assert!(
        done,
        "{:?} {:?}\n{log}",
        queues.depth(&queue),
        queues.depth(&dead)
    );
    assert!(status.success(), "{log}");
    assert_eq!(db.rows("select v from items"), ["fine"]);
    assert_eq!(db.rows("select v from sleepy"), ["quick"]);
    let letters = queues.drain(&dead, Duration::from_millis(500));
    for (body, why) in [
        (bad[0], "lacks a privilege"),
        (bad[1], "statement time limit"),
    ] {
        let letter = letters
            .iter()
            .find(|m| m.body.as_slice() == body.as_bytes())
            .unwrap_or_else(|| panic!("no dead letter for {body}"));
        let error = letter.header("x-golconde-error").unwrap_or_default();
        assert!(error.contains("failed 2 times"), "{error}");
        assert!(error.contains(why), "{error}");
        assert_eq!(letter.header("x-golconde-error-kind"), Some("permanent"));
    }
}

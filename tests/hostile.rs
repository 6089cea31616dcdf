//! Messages written to hurt, through the real daemon on RabbitMQ and PostgreSQL: each test
//! sends one class of hostile message and then an ordinary one, and asserts that the daemon
//! is alive, that the ordinary message was applied after it, and that the hostile one was
//! applied exactly or dead-lettered with a reason. No single message may crash the
//! process, stop the pipeline, or be acknowledged with a wrong value stored.

use std::time::Duration;

use golconde_e2e::{
    eventually,
    services::{real_config, unique, Database, Queues},
    Daemon, Scratch,
};
use golconde_plugin_api::Message;

const ITEMS: &str = "create table items (id bigint primary key, v text)";

/// A daemon with one pipeline on queues and a database of the test's own, dead-lettering
/// what it cannot apply.
struct Target {
    queues: Queues,
    queue: String,
    dead: String,
    db: Database,
    daemon: Option<Daemon>,
    _scratch: Scratch,
    /// The id of the next ordinary message.
    next: i64,
}

impl Target {
    /// `schema` runs in a new database (it must create `items`); `pipeline` and `database`
    /// are extra lines for the pipeline and the database section.
    fn start(what: &str, schema: &str, pipeline: &str, database: &str) -> Target {
        Target::start_as(what, schema, pipeline, database, None)
    }

    /// [`Target::start`], the daemon connecting to the database as `user`.
    fn start_as(
        what: &str,
        schema: &str,
        pipeline: &str,
        database: &str,
        user: Option<&str>,
    ) -> Target {
        let mut queues = Queues::new();
        let queue = queues.name(what);
        let dead = queues.name(&format!("{what}-dead"));
        let db = Database::create(what, schema);
        let scratch = Scratch::new();
        let transport = if pipeline.lines().any(|l| l.starts_with("transport = ")) {
            ""
        } else {
            "transport = \"rabbit\""
        };
        let mut text = real_config(
            &unique(what),
            &[("db", &db, database)],
            &format!(
                r#"
[transports.small-stomp]
plugin = "stomp"
address = "127.0.0.1:61613"
login = "guest"
passcode = "guest"
max_frame_bytes = 4096

[[pipelines]]
name = "{what}"
queue = "{queue}"
processor = {{ plugin = "autosql" }}
database = "db"
batch = {{ max_messages = 100, max_wait_ms = 5 }}
retry = {{ initial_backoff_ms = 10, max_backoff_ms = 200 }}
dead_letter = {{ transport = "rabbit", queue = "{dead}" }}
{pipeline}
{transport}
"#
            ),
        );
        if let Some(user) = user {
            text = text.replace("user=postgres", &format!("user={user}"));
        }
        let daemon = Daemon::start(&scratch.config(&text));
        Target {
            queues,
            queue,
            dead,
            db,
            daemon: Some(daemon),
            _scratch: scratch,
            next: 1_000_000,
        }
    }

    fn send(&self, bodies: &[String]) {
        self.queues.publish(&self.queue, bodies);
    }

    /// Sends an ordinary change and waits for its row and for the queue to be acknowledged
    /// to the end: the pipeline is alive and everything sent before is committed (with
    /// several workers, its row can commit before rows of earlier batches on other workers;
    /// acknowledgements go back in order, each after its batch and all before it committed).
    fn still_applies(&mut self) {
        let id = self.next;
        self.next += 1;
        self.send(&[format!(
            r#"{{"action": "set", "table": "items", "data": {{"id": {id}, "v": "after"}}}}"#
        )]);
        let db = &mut self.db;
        let applied = eventually(Duration::from_secs(60), || {
            db.rows(&format!("select v from items where id = {id}")) == ["after"]
        });
        let log = self.daemon.as_ref().unwrap().log();
        assert!(
            applied,
            "an ordinary message was not applied after it; log:\n{log}"
        );
        let (queues, queue) = (&self.queues, &self.queue);
        let acknowledged = eventually(Duration::from_secs(60), || queues.depth(queue) == (0, 0));
        assert!(
            acknowledged,
            "messages left unacknowledged on `{queue}`: {:?}; log:\n{log}",
            queues.depth(queue)
        );
        assert!(
            !log.contains("panicked at") && !log.contains("stopped:"),
            "the daemon hurt itself:\n{log}"
        );
    }

    /// Waits for `n` dead letters and returns them.
    fn dead_letters(&self, n: usize) -> Vec<Message> {
        let mut letters = Vec::new();
        eventually(Duration::from_secs(60), || {
            letters.extend(self.queues.drain(&self.dead, Duration::from_millis(200)));
            letters.len() >= n
        });
        assert_eq!(
            letters.len(),
            n,
            "dead letters: {:?}\nlog:\n{}",
            reasons(&letters),
            self.daemon.as_ref().unwrap().log()
        );
        letters
    }

    /// Stops the daemon, which must exit as asked.
    fn stop(&mut self) -> String {
        let (status, log) = self.daemon.take().unwrap().stop();
        assert!(status.success(), "{log}");
        log
    }
}

fn reasons(letters: &[Message]) -> Vec<String> {
    letters
        .iter()
        .map(|m| m.header("x-golconde-error").unwrap_or("(none)").to_string())
        .collect()
}

/// Asserts the dead letter of `body` says `why`.
fn dead_lettered_because(letters: &[Message], body: &str, why: &str) {
    let letter = letters
        .iter()
        .find(|m| m.body.as_slice() == body.as_bytes())
        .unwrap_or_else(|| {
            panic!(
                "no dead letter for {}: {:?}",
                &body[..body.len().min(200)],
                reasons(letters)
            )
        });
    let reason = letter.header("x-golconde-error").unwrap_or_default();
    assert!(reason.contains(why), "expected {why:?} in {reason:?}");
    assert_eq!(letter.header("x-golconde-error-kind"), Some("permanent"));
}

#[test]
fn deeply_nested_values_are_dead_lettered_before_anything_recurses() {
    let mut target = Target::start("nested", ITEMS, r#"table = "items""#, "");
    let arrays = format!(
        r#"{{"action": "set", "data": {{"id": 1, "v": {}1{}}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let objects = format!(
        r#"{{"action": "set", "data": {{"id": 2, "v": {}1{}}}}}"#,
        r#"{"a":"#.repeat(50_000),
        "}".repeat(50_000)
    );
    let unclosed = format!(
        r#"{{"action": "set", "data": {{"id": 3, "v": {}"#,
        "[".repeat(500_000)
    );
    target.send(&[arrays.clone(), objects.clone(), unclosed.clone()]);
    target.still_applies();
    let letters = target.dead_letters(3);
    dead_lettered_because(&letters, &arrays, "max_depth");
    dead_lettered_because(&letters, &objects, "max_depth");
    dead_lettered_because(&letters, &unclosed, "");
    assert_eq!(target.db.count("items"), 1);
    target.stop();
}

#[test]
fn tens_of_thousands_of_fields_are_refused_at_once() {
    let mut target = Target::start("fields", ITEMS, r#"table = "items""#, "");
    let fields: String = (0..100_000).map(|i| format!(r#","c{i}": {i}"#)).collect();
    let wide = format!(r#"{{"action": "set", "data": {{"id": 1{fields}}}}}"#);
    let dupes: String = (0..100_000).map(|_| r#","v": "x""#).collect();
    let repeated = format!(r#"{{"action": "set", "data": {{"id": 2{dupes}}}}}"#);
    target.send(&[wide.clone(), repeated.clone()]);
    target.still_applies();
    let letters = target.dead_letters(2);
    dead_lettered_because(&letters, &wide, "max_fields");
    dead_lettered_because(&letters, &repeated, "");
    target.stop();
}

#[test]
fn a_message_over_max_message_bytes_is_dead_lettered_unread() {
    let mut target = Target::start(
        "huge",
        ITEMS,
        "table = \"items\"\nmax_message_bytes = 4096",
        "",
    );
    let big = format!(
        r#"{{"action": "set", "data": {{"id": 1, "v": "{}"}}}}"#,
        "x".repeat(5000)
    );
    target.send(std::slice::from_ref(&big));
    target.still_applies();
    let letters = target.dead_letters(1);
    dead_lettered_because(&letters, &big, "max_message_bytes");
    target.stop();
}

#[test]
fn numbers_out_of_a_columns_range_are_refused_never_stored_wrong() {
    let schema = "create table items (id bigint primary key, v text);
                  create table nums (id bigint primary key, d double precision, r real,
                                     b bigint, i integer, s smallint, n numeric)";
    let mut target = Target::start("ranges", schema, r#"tables = ["items", "nums"]"#, "");
    let set = |id: i64, column: &str, value: &str| {
        format!(
            r#"{{"action": "set", "table": "nums", "data": {{"id": {id}, "{column}": {value}}}}}"#
        )
    };
    let bad = [
        set(1, "d", "1e400"),
        set(2, "d", "-1e400"),
        set(3, "d", "1e-400"),
        set(4, "r", "1e39"),
        set(5, "b", "1e19"),
        set(6, "b", "9223372036854775808"),
        set(7, "i", "2147483648"),
        set(8, "s", "40000.0"),
        set(9, "b", "1.5e300"),
    ];
    let good = [
        set(20, "d", "1.7976931348623157e308"),
        set(21, "n", "1e400"),
        set(22, "b", "-9223372036854775808"),
        set(23, "d", "5e-324"),
    ];
    target.send(&bad);
    target.send(&good);
    target.still_applies();
    let letters = target.dead_letters(bad.len());
    for body in &bad {
        dead_lettered_because(&letters, body, "");
    }
    assert_eq!(
        target
            .db
            .rows("select id, d::text, b, n = 1e400 from nums order by id"),
        [
            "20|1.7976931348623157e+308|NULL|NULL",
            "21|NULL|NULL|t",
            "22|NULL|-9223372036854775808|NULL",
            "23|5e-324|NULL|NULL"
        ]
    );
    target.stop();
}

#[test]
fn spellings_of_one_key_keep_queue_order_across_workers() {
    let schema = "create table items (id bigint primary key, v text);
                  create table by_uuid (id uuid primary key, v int);
                  create table by_numeric (id numeric primary key, v int);
                  create table by_time (id timestamptz primary key, v int)";
    let mut target = Target::start(
        "spellings",
        schema,
        "tables = [\"items\", \"by_uuid\", \"by_numeric\", \"by_time\"]\nworkers = 4",
        "",
    );
    let uuid = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
    let spellings: [(&str, Vec<String>); 3] = [
        (
            "by_uuid",
            vec![
                format!("\"{uuid}\""),
                format!("\"{}\"", uuid.to_uppercase()),
                format!("\"{{{uuid}}}\""),
                format!("\"{}\"", uuid.replace('-', "")),
            ],
        ),
        (
            "by_numeric",
            ["1", "1.0", "\"1.00\"", "1e0", "\"10e-1\""]
                .map(String::from)
                .to_vec(),
        ),
        (
            "by_time",
            [
                "\"2024-01-01T00:00:00Z\"",
                "\"2024-01-01T02:00:00+02:00\"",
                "\"2023-12-31T19:00:00-05:00\"",
                "\"2024-01-01 00:00:00+00\"",
            ]
            .map(String::from)
            .to_vec(),
        ),
    ];
    // Many rounds, each spelling in turn, in one stream: the last by position must win, in
    // set-based batches and across the four workers alike.
    let mut bodies = Vec::new();
    let mut version = 0;
    for _ in 0..300 {
        for (table, keys) in &spellings {
            for key in keys {
                version += 1;
                bodies.push(format!(
                    r#"{{"action": "set", "table": "{table}", "data": {{"id": {key}, "v": {version}}}}}"#
                ));
                version += 1;
                bodies.push(format!(
                    r#"{{"action": "update", "table": "{table}", "data": {{"v": {version}}}, "restriction": {{"id": {key}}}}}"#
                ));
            }
        }
    }
    target.send(&bodies);
    target.still_applies();
    let last: Vec<i64> = spellings
        .iter()
        .scan(0, |_, (table, _)| {
            Some(
                bodies
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.contains(&format!("\"table\": \"{table}\"")))
                    .map(|(i, _)| i as i64)
                    .max()
                    .unwrap(),
            )
        })
        .collect();
    for ((table, _), position) in spellings.iter().zip(last) {
        // Version numbers count up from 1 with positions.
        let expected = position + 1;
        assert_eq!(
            target
                .db
                .rows(&format!("select count(*), max(v) from {table}")),
            [format!("1|{expected}")],
            "{table}"
        );
    }
    target.dead_letters(0);
    target.stop();
}

#[test]
fn an_update_that_moves_its_row_stays_in_order_with_what_follows() {
    let mut target = Target::start("moves", ITEMS, "table = \"items\"\nworkers = 4", "");
    let mut bodies = Vec::new();
    for round in 0..200i64 {
        let (old, new) = (round * 2, round * 2 + 1);
        bodies.push(format!(
            r#"{{"action": "set", "data": {{"id": {old}, "v": "first"}}}}"#
        ));
        bodies.push(format!(
            r#"{{"action": "update", "data": {{"id": {new}}}, "restriction": {{"id": {old}}}}}"#
        ));
        // Matches no row unless the move above has committed before it.
        bodies.push(format!(
            r#"{{"action": "update", "data": {{"v": "moved"}}, "restriction": {{"id": {new}}}}}"#
        ));
    }
    target.send(&bodies);
    target.still_applies();
    assert_eq!(
        target
            .db
            .rows("select count(*) from items where v = 'moved' and id % 2 = 1"),
        ["200"]
    );
    target.dead_letters(0);
    target.stop();
}

#[test]
fn system_tables_and_malformed_names_are_never_written() {
    let mut target = Target::start("reach", ITEMS, r#"tables = ["*"]"#, "dedupe = true");
    let set = |table: &str| {
        format!(
            r#"{{"action": "set", "table": {}, "data": {{"id": 1, "rolname": "x"}}}}"#,
            serde_json::to_string(table).unwrap()
        )
    };
    let bad = [
        set("pg_catalog.pg_authid"),
        set("pg_authid"),
        set("information_schema.tables"),
        set("golconde.applied"),
        set("pg_toast.pg_toast_1"),
        set("a.\"b\".c"),
        set("items\"; drop table items; --"),
        r#"{"action": "update", "table": "pg_roles", "data": {"rolsuper": true}, "restriction": {"rolname": "postgres"}}"#.to_string(),
    ];
    target.send(&bad);
    target.still_applies();
    let letters = target.dead_letters(bad.len());
    for body in &bad {
        dead_lettered_because(&letters, body, "");
    }
    dead_lettered_because(&letters, &bad[0], "system schema");
    dead_lettered_because(&letters, &bad[1], "pg_catalog");
    target.stop();
}

#[test]
fn dedupe_ids_are_scoped_by_table_and_checked_against_the_content() {
    let schema = "create table items (id bigint primary key, v text);
                  create table other (id bigint primary key, v text)";
    let mut target = Target::start(
        "dedupe",
        schema,
        r#"tables = ["items", "other"]"#,
        "dedupe = true",
    );
    target.send(&[
        r#"{"id": "m-1", "action": "set", "table": "items", "data": {"id": 1, "v": "a"}}"#.into(),
        r#"{"id": "m-1", "action": "set", "table": "other", "data": {"id": 1, "v": "b"}}"#.into(),
        // A true replay: skipped.
        r#"{"id": "m-1", "action": "set", "table": "items", "data": {"id": 1, "v": "a"}}"#.into(),
        // The same id on the same table with another content is another change.
        r#"{"id": "m-1", "action": "set", "table": "items", "data": {"id": 2, "v": "c"}}"#.into(),
    ]);
    target.still_applies();
    assert_eq!(
        target
            .db
            .rows("select id, v from items where id < 10 order by id"),
        ["1|a", "2|c"]
    );
    assert_eq!(target.db.rows("select id, v from other"), ["1|b"]);
    let log = target.stop();
    assert!(
        log.contains("m-1"),
        "no warning about the reused id:\n{log}"
    );
}

/// A login role of the test's own, dropped after everything that uses it.
struct Role(String);

impl Drop for Role {
    fn drop(&mut self) {
        let mut admin = postgres::Client::connect(
            "host=127.0.0.1 user=postgres dbname=postgres",
            postgres::NoTls,
        )
        .expect("PostgreSQL");
        let _ = admin.batch_execute(&format!("drop role if exists {}", self.0));
    }
}

#[test]
fn refusals_that_might_pass_are_retried_a_bounded_number_of_times() {
    let role = Role(unique("role"));
    let name = &role.0;
    let schema = format!(
        "create table items (id bigint primary key, v text);
         create table secret (id bigint primary key, v text);
         create table guarded (id bigint primary key, v text);
         alter table guarded enable row level security;
         create policy no_forbidden on guarded using (true) with check (v <> 'forbidden');
         create table sleepy (id bigint primary key, v text);
         create function nap() returns trigger language plpgsql as
           $$ begin if new.v = 'slow' then perform pg_sleep(5); end if; return new; end $$;
         create trigger nap before insert or update on sleepy for each row execute function nap();
         do $$ begin create role {name} login; exception when duplicate_object then null; end $$;
         grant all on items, guarded, sleepy to {name};"
    );
    // The daemon connects as the unprivileged role: a superuser bypasses both checks.
    let mut target = Target::start_as(
        "refusals",
        &schema,
        r#"tables = ["items", "secret", "guarded", "sleepy"]"#,
        "max_attempts = 2\nstatement_timeout_ms = 500",
        Some(name),
    );
    let bad = [
        r#"{"action": "set", "table": "secret", "data": {"id": 1, "v": "x"}}"#.to_string(),
        r#"{"action": "set", "table": "guarded", "data": {"id": 1, "v": "forbidden"}}"#.to_string(),
        r#"{"action": "set", "table": "sleepy", "data": {"id": 1, "v": "slow"}}"#.to_string(),
    ];
    let good = [
        r#"{"action": "set", "table": "guarded", "data": {"id": 2, "v": "fine"}}"#.to_string(),
        r#"{"action": "set", "table": "sleepy", "data": {"id": 2, "v": "quick"}}"#.to_string(),
    ];
    target.send(&bad);
    target.send(&good);
    target.still_applies();
    let letters = target.dead_letters(bad.len());
    dead_lettered_because(&letters, &bad[0], "42501");
    dead_lettered_because(&letters, &bad[1], "42501");
    dead_lettered_because(&letters, &bad[2], "57014");
    assert_eq!(target.db.rows("select v from guarded"), ["fine"]);
    assert_eq!(target.db.rows("select v from sleepy"), ["quick"]);
    target.stop();
}

#[test]
fn a_header_table_nested_thousands_deep_does_not_crash_the_daemon() {
    use golconde_e2e::services::nested_header_table;
    let mut target = Target::start("deepheaders", ITEMS, r#"table = "items""#, "");
    let body = r#"{"action": "set", "data": {"id": 1, "v": "deep"}}"#;
    // About 100 KB of header, within RabbitMQ's default frame size.
    target.queues.publish_with_headers(
        &target.queue,
        body.as_bytes(),
        nested_header_table("x-deep", 14_000),
    );
    target.still_applies();
    // The body is whole, so the change applies; the header arrives cut at its depth limit.
    assert_eq!(target.db.rows("select v from items where id = 1"), ["deep"]);
    let log = target.stop();
    assert!(
        log.contains("x-deep"),
        "no warning naming the cut header:\n{log}"
    );
}

#[test]
fn headers_that_fit_no_amqp_property_travel_as_plain_headers() {
    use golconde_e2e::services::flat_header_table;
    let mut queues_for_replica = Queues::new();
    let replica = queues_for_replica.name("propsreplica");
    let mut target = Target::start(
        "props",
        ITEMS,
        &format!(
            "table = \"items\"\nfan_out = [ {{ transport = \"rabbit\", queue = \"{replica}\" }} ]"
        ),
        "",
    );
    let long_id = "m".repeat(300);
    let headers = [
        ("priority", "urgent"),
        ("timestamp", "yesterday"),
        ("message-id", long_id.as_str()),
        ("correlation-id", long_id.as_str()),
    ];
    let good = r#"{"action": "set", "data": {"id": 1, "v": "odd headers"}}"#;
    let bad = r#"{"action": "set", "data": {"id": 2, "nope": 1}}"#;
    for body in [good, bad] {
        target.queues.publish_with_headers(
            &target.queue,
            body.as_bytes(),
            flat_header_table(&headers),
        );
    }
    target.still_applies();
    // The copy is published after the commit the check above saw.
    let mut copies = Vec::new();
    eventually(Duration::from_secs(20), || {
        copies.extend(queues_for_replica.drain(&replica, Duration::from_millis(200)));
        copies.iter().any(|m| m.body.as_slice() == good.as_bytes())
    });
    let copy = copies
        .iter()
        .find(|m| m.body.as_slice() == good.as_bytes())
        .unwrap_or_else(|| {
            panic!(
                "no fan-out copy among {copies:?}; log:\n{}",
                target.daemon.as_ref().unwrap().log()
            )
        });
    let letters = target.dead_letters(1);
    dead_lettered_because(&letters, bad, "nope");
    for message in [copy, &letters[0]] {
        for (name, value) in headers {
            assert_eq!(message.header(name), Some(value), "{name}");
        }
    }
    target.stop();
}

#[test]
fn a_stomp_frame_over_the_size_limit_costs_only_itself() {
    // Consumed over STOMP with a small frame limit: the frame's body is skipped unread, the
    // connection stays up, and the message is dead-lettered with the reason.
    let mut target = Target::start(
        "stompbig",
        ITEMS,
        "table = \"items\"\ntransport = \"small-stomp\"",
        "",
    );
    let big = format!(
        r#"{{"action": "set", "data": {{"id": 1, "v": "{}"}}}}"#,
        "x".repeat(10_000)
    );
    target.send(&[big]);
    target.still_applies();
    let letters = target.dead_letters(1);
    let reason = letters[0].header("x-golconde-error").unwrap_or_default();
    assert!(reason.contains("max_frame_bytes"), "{reason}");
    assert!(letters[0].body.is_empty(), "the body was never read");
    assert_eq!(
        target.db.rows("select count(*) from items where id = 1"),
        ["0"]
    );
    target.stop();
}

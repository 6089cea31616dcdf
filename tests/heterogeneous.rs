//! Swapping the database and the processor: a PostgreSQL primary fed over AMQP fans out to
//! a MariaDB replica, which ends with the same rows and the same generated keys; and the
//! same Debezium change events, applied by the `debezium` processor to PostgreSQL and to
//! MariaDB, give the same rows in both.

use std::time::Duration;

use golconde_e2e::{
    eventually,
    mariadb::MariaDb,
    services::{real_config, unique, Database, Queues},
    Daemon, Scratch,
};

const PG_USERS: &str = "create table users (
    id bigserial primary key,
    name text not null,
    email text unique,
    score integer,
    balance numeric(12, 2),
    born date,
    seen timestamptz,
    active boolean,
    tags jsonb)";

const MARIADB_USERS: &str = "create table users (
    id bigint primary key,
    name varchar(100) not null,
    email varchar(200) unique,
    score int,
    balance decimal(12, 2),
    born date,
    seen timestamp(6) null,
    active boolean,
    tags json)";

/// Each row as the same text in both databases: timestamps in UTC, booleans as 0/1, the
/// JSON document by one of its fields.
const PG_QUERY: &str = "select id, name, coalesce(email, 'NULL'), coalesce(score::text, 'NULL'),
    coalesce(balance::text, 'NULL'), coalesce(born::text, 'NULL'),
    coalesce(to_char(seen at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), 'NULL'),
    coalesce(active::int::text, 'NULL'), coalesce(tags->>'team', 'NULL')
    from users order by id";
const MARIADB_QUERY: &str = "set time_zone = '+00:00';
    select id, name, ifnull(email, 'NULL'), ifnull(score, 'NULL'), ifnull(balance, 'NULL'),
    ifnull(born, 'NULL'), ifnull(date_format(seen, '%Y-%m-%d %H:%i:%s.%f'), 'NULL'),
    ifnull(active, 'NULL'), ifnull(json_value(tags, '$.team'), 'NULL')
    from users order by id";

fn mysql_section(name: &str, db: &MariaDb, extra: &str) -> String {
    format!(
        "\n[databases.{name}]\nplugin = \"mysql\"\ndsn = \"{}\"\n{extra}\n",
        db.dsn()
    )
}

#[test]
fn a_postgres_primary_fans_out_to_a_mariadb_replica_with_the_same_keys() {
    let mut queues = Queues::new();
    let source = queues.name("hetero-source");
    let to_replica = queues.name("hetero-replica");
    let dead = queues.name("hetero-dead");
    let mut primary = Database::create("hetero_primary", PG_USERS);
    let replica = MariaDb::create("hetero_replica", MARIADB_USERS);
    let scratch = Scratch::new();
    let pipelines = format!(
        r#"
[[pipelines]]
name = "primary"
transport = "rabbit"
queue = "{source}"
processor = "autosql"
database = "primary"
table = "users"
workers = 2
fan_out = [ {{ transport = "rabbit", queue = "{to_replica}" }} ]

[[pipelines]]
name = "replica"
transport = "rabbit"
queue = "{to_replica}"
processor = "autosql"
database = "replica"
table = "users"
workers = 2
dead_letter = {{ transport = "rabbit", queue = "{dead}" }}
{}"#,
        mysql_section("replica", &replica, "")
    );
    let config = scratch.config(&real_config(
        &unique("hetero"),
        &[("primary", &primary, "")],
        &pipelines,
    ));
    let mut daemon = Daemon::start(&config);
    daemon.wait_for_log("pipeline(s) running", Duration::from_secs(30));

    // New rows without ids (the primary's sequence makes them; the fan-out copy carries
    // them), every type spelled the way a producer would; then updates and deletes by a
    // unique column that is not the key, and an upsert by the key.
    let adds: Vec<String> = (0..300)
        .map(|i| {
            let seen = if i % 7 == 0 {
                "null".to_string()
            } else {
                format!("\"2026-03-{:02}T{:02}:15:30.25+02:00\"", i % 28 + 1, i % 24)
            };
            format!(
                r#"{{"action": "add", "data": {{"name": "user {i} \u00e9\u4e2d", "email": "u{i}@example.com", "score": {i}, "balance": "{i}.{:02}", "born": "19{:02}-02-{:02}", "seen": {seen}, "active": {}, "tags": {{"team": "t{}"}}}}}}"#,
                i % 100,
                50 + i % 50,
                i % 28 + 1,
                i % 2 == 0,
                i % 5
            )
        })
        .collect();
    queues.publish(&source, &adds);
    let mut changes: Vec<String> = (0..100)
        .map(|i| {
            format!(
                r#"{{"action": "update", "data": {{"score": {}, "balance": -{i}.5}}, "restriction": {{"email": "u{i}@example.com"}}}}"#,
                i + 1000
            )
        })
        .collect();
    changes.extend((290..300).map(|i| {
        format!(r#"{{"action": "delete", "restriction": {{"email": "u{i}@example.com"}}}}"#)
    }));
    queues.publish(&source, &changes);

    let settled = eventually(Duration::from_secs(90), || {
        primary.rows("select count(*), sum(score) from users") == ["290|141905"]
            && replica.rows("select count(*), sum(score) from users") == ["290|141905"]
    });
    let (status, log) = daemon.stop();
    assert!(
        settled,
        "primary {:?}, replica {:?}; log:\n{log}",
        primary.rows("select count(*), sum(score) from users"),
        replica.rows("select count(*), sum(score) from users")
    );
    assert!(status.success(), "{log}");
    let rows = primary.rows(PG_QUERY);
    assert_eq!(rows.len(), 290);
    assert_eq!(rows, replica.rows(MARIADB_QUERY));
    assert_eq!(queues.depth(&dead), (0, 0), "nothing dead-lettered:\n{log}");
}

/// A Debezium event in the PostgreSQL connector's shape, with the schema envelope:
/// `id` int64, `name` string, `balance` a `Decimal` of scale 2 (base64 big-endian unscaled
/// bytes), `born` a `Date` (days since 1970-01-01), `seen` a `MicroTimestamp`.
fn debezium_event(op: &str, before: Option<&Row>, after: Option<&Row>, lsn: u64) -> String {
    let field = |name: &str, kind: &str, logical: Option<&str>, extra: &str| {
        let logical = logical
            .map(|l| format!(r#", "name": "{l}", "version": 1"#))
            .unwrap_or_default();
        format!(r#"{{"type": "{kind}", "optional": true, "field": "{name}"{logical}{extra}}}"#)
    };
    let value_schema = |name: &str| {
        format!(
            r#"{{"type": "struct", "optional": true, "name": "{name}", "field": "{}", "fields": [{}, {}, {}, {}, {}]}}"#,
            if name.ends_with("before") {
                "before"
            } else {
                "after"
            },
            r#"{"type": "int64", "optional": false, "field": "id"}"#,
            field("name", "string", None, ""),
            field(
                "balance",
                "bytes",
                Some("org.apache.kafka.connect.data.Decimal"),
                r#", "parameters": {"scale": "2", "connect.decimal.precision": "12"}"#
            ),
            field("born", "int32", Some("io.debezium.time.Date"), ""),
            field("seen", "int64", Some("io.debezium.time.MicroTimestamp"), ""),
        )
    };
    let row = |row: Option<&Row>| row.map(Row::json).unwrap_or_else(|| "null".into());
    format!(
        r#"{{"schema": {{"type": "struct", "optional": false, "name": "dbserver1.inventory.customers.Envelope", "fields": [{}, {}, {{"type": "struct", "optional": false, "field": "source", "fields": []}}, {{"type": "string", "optional": false, "field": "op"}}, {{"type": "int64", "optional": true, "field": "ts_ms"}}]}},
"payload": {{"before": {}, "after": {}, "source": {{"version": "2.7.0.Final", "connector": "postgresql", "name": "dbserver1", "ts_ms": 1700000000000, "snapshot": "{}", "db": "shop", "schema": "inventory", "table": "customers", "txId": {}, "lsn": {lsn}}}, "op": "{op}", "ts_ms": 1700000000100}}}}"#,
        value_schema("dbserver1.inventory.customers.Value.before"),
        value_schema("dbserver1.inventory.customers.Value.after"),
        row(before),
        row(after),
        if op == "r" { "true" } else { "false" },
        lsn / 10,
    )
}

#[derive(Clone)]
struct Row {
    id: i64,
    name: String,
    cents: i64,
    born_days: i32,
    seen_us: i64,
}

impl Row {
    fn new(id: i64) -> Row {
        Row {
            id,
            name: format!("customer {id}"),
            cents: id * 1_234 - 500_000,
            born_days: (id as i32) * 97 - 9_000,
            seen_us: 1_700_000_000_000_000 + id * 1_000_001,
        }
    }

    fn json(&self) -> String {
        // Decimal: the unscaled value as the fewest big-endian two's-complement bytes.
        let bytes = self.cents.to_be_bytes();
        let skip = (0..7)
            .take_while(|&i| {
                let (b, next) = (bytes[i], bytes[i + 1]);
                (b == 0x00 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0)
            })
            .count();
        format!(
            r#"{{"id": {}, "name": "{}", "balance": "{}", "born": {}, "seen": {}}}"#,
            self.id,
            self.name,
            base64(&bytes[skip..]),
            self.born_days,
            self.seen_us
        )
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, &b| n << 8 | b as u32) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

const PG_CUSTOMERS: &str = "create table customers (
    id bigint primary key, name text not null, balance numeric(12, 2), born date,
    seen timestamp(6))";
const MARIADB_CUSTOMERS: &str = "create table customers (
    id bigint primary key, name varchar(100) not null, balance decimal(12, 2), born date,
    seen datetime(6))";

#[test]
fn debezium_events_give_the_same_rows_in_postgres_and_in_mariadb() {
    let mut queues = Queues::new();
    let to_pg = queues.name("dbz-pg");
    let to_maria = queues.name("dbz-maria");
    let dead = queues.name("dbz-dead");
    let mut pg = Database::create("dbz_pg", PG_CUSTOMERS);
    let maria = MariaDb::create("dbz_maria", MARIADB_CUSTOMERS);
    let scratch = Scratch::new();
    let pipeline = |name: &str, queue: &str, database: &str| {
        format!(
            r#"
[[pipelines]]
name = "{name}"
transport = "rabbit"
queue = "{queue}"
processor = {{ plugin = "debezium", table_map = {{ "inventory.customers" = "customers" }} }}
database = "{database}"
tables = ["customers"]
workers = 2
dead_letter = {{ transport = "rabbit", queue = "{dead}" }}
"#
        )
    };
    let mut text = pipeline("to-postgres", &to_pg, "pg");
    text.push_str(&pipeline("to-mariadb", &to_maria, "maria"));
    text.push_str(&mysql_section("maria", &maria, ""));
    let config = scratch.config(&real_config(&unique("dbz"), &[("pg", &pg, "")], &text));
    let mut daemon = Daemon::start(&config);
    daemon.wait_for_log("pipeline(s) running", Duration::from_secs(30));

    // A snapshot of 100 rows, 50 created after it, 40 updated (10 of them moving to a new
    // key), 20 deleted, each delete followed by its tombstone, as Debezium sends them.
    let mut events = Vec::new();
    let mut lsn = 1_000;
    let mut next =
        |events: &mut Vec<String>, op: &str, before: Option<&Row>, after: Option<&Row>| {
            lsn += 10;
            events.push(debezium_event(op, before, after, lsn));
        };
    for id in 1..=100 {
        next(&mut events, "r", None, Some(&Row::new(id)));
    }
    for id in 101..=150 {
        next(&mut events, "c", None, Some(&Row::new(id)));
    }
    for id in 1..=40 {
        let before = Row::new(id);
        let mut after = before.clone();
        after.name = format!("renamed {id}");
        after.cents = -after.cents;
        if id <= 10 {
            after.id = id + 1_000;
        }
        next(&mut events, "u", Some(&before), Some(&after));
    }
    let mut tombstones = Vec::new();
    for id in 131..=150 {
        let key_only = Row {
            name: String::new(),
            ..Row::new(id)
        };
        let mut before = key_only.json();
        // The PostgreSQL connector's `before` of a delete holds the key (REPLICA IDENTITY
        // DEFAULT): the other columns are null.
        before = before.replacen(r#""name": """#, r#""name": null"#, 1);
        let event = debezium_event("d", None, None, lsn).replacen(
            r#""before": null"#,
            &format!(r#""before": {before}"#),
            1,
        );
        lsn += 10;
        events.push(event);
        tombstones.push(events.len());
    }
    let mut bodies = Vec::new();
    for (i, event) in events.into_iter().enumerate() {
        bodies.push(event);
        if tombstones.contains(&(i + 1)) {
            bodies.push(String::new());
        }
    }
    queues.publish(&to_pg, &bodies);
    queues.publish(&to_maria, &bodies);

    let settled = eventually(Duration::from_secs(90), || {
        pg.rows("select count(*) from customers") == ["130"]
            && maria.rows("select count(*) from customers") == ["130"]
    });
    let (status, log) = daemon.stop();
    assert!(settled, "log:\n{log}");
    assert!(status.success(), "{log}");
    let pg_rows = pg.rows(
        "select id, name, balance::text, born::text, to_char(seen, 'YYYY-MM-DD HH24:MI:SS.US')
         from customers order by id",
    );
    let maria_rows = maria.rows(
        "select id, name, balance, born, date_format(seen, '%Y-%m-%d %H:%i:%s.%f')
         from customers order by id",
    );
    assert_eq!(pg_rows.len(), 130);
    assert_eq!(pg_rows, maria_rows);
    // The decoded values are the ones the events meant, not merely equal in both.
    assert_eq!(
        pg_rows
            .iter()
            .filter(|r| r.starts_with("1001|renamed 1|"))
            .count(),
        1
    );
    assert!(
        pg_rows.contains(&format!(
            "11|renamed 11|{}|{}|{}",
            decimal(-Row::new(11).cents),
            date(Row::new(11).born_days),
            "2023-11-14 22:13:31.000011"
        )),
        "{pg_rows:?}"
    );
    assert!(
        !pg_rows.iter().any(|r| r.starts_with("1|")),
        "row 1 moved to 1001"
    );
    assert_eq!(queues.depth(&dead), (0, 0), "nothing dead-lettered:\n{log}");
}

fn decimal(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100)
}

/// Days since 1970-01-01 as `YYYY-MM-DD` (proleptic Gregorian, as Debezium counts).
fn date(days: i32) -> String {
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The pipeline section of a Debezium pipeline into `customers`, with `truncate` as given.
fn truncating_pipeline(
    name: &str,
    queue: &str,
    database: &str,
    truncate: &str,
    dead: &str,
) -> String {
    format!(
        r#"
[[pipelines]]
name = "{name}"
transport = "rabbit"
queue = "{queue}"
processor = {{ plugin = "debezium", truncate = "{truncate}", table_map = {{ "inventory.customers" = "customers" }} }}
database = "{database}"
tables = ["customers"]
dead_letter = {{ transport = "rabbit", queue = "{dead}" }}
"#
    )
}

#[test]
fn a_truncate_event_empties_the_table_in_postgres_and_in_mariadb_when_told_to() {
    let mut queues = Queues::new();
    let to_pg = queues.name("dbz-trunc-pg");
    let to_maria = queues.name("dbz-trunc-maria");
    let refused = queues.name("dbz-trunc-refused");
    let dead = queues.name("dbz-trunc-dead");
    let mut pg = Database::create("dbz_trunc_pg", PG_CUSTOMERS);
    let mut pg_refused = Database::create("dbz_trunc_refused", PG_CUSTOMERS);
    let maria = MariaDb::create("dbz_trunc_maria", MARIADB_CUSTOMERS);
    let scratch = Scratch::new();
    let mut text = truncating_pipeline("trunc-pg", &to_pg, "pg", "apply", &dead);
    text.push_str(&truncating_pipeline(
        "trunc-maria",
        &to_maria,
        "maria",
        "apply",
        &dead,
    ));
    text.push_str(&truncating_pipeline(
        "trunc-refused",
        &refused,
        "pg_refused",
        "refuse",
        &dead,
    ));
    text.push_str(&mysql_section("maria", &maria, ""));
    let config = scratch.config(&real_config(
        &unique("dbztrunc"),
        &[("pg", &pg, ""), ("pg_refused", &pg_refused, "")],
        &text,
    ));
    // Ten rows, a truncate, three rows after it.
    let mut bodies: Vec<String> = (1..=10)
        .map(|id| debezium_event("r", None, Some(&Row::new(id)), 100 + id as u64))
        .collect();
    bodies.push(debezium_event("t", None, None, 200));
    bodies.extend(
        (11..=13).map(|id| debezium_event("c", None, Some(&Row::new(id)), 300 + id as u64)),
    );
    let mut daemon = Daemon::start(&config);
    daemon.wait_for_log("pipeline(s) running", Duration::from_secs(30));
    for queue in [&to_pg, &to_maria, &refused] {
        queues.publish(queue, &bodies);
    }
    let settled = eventually(Duration::from_secs(60), || {
        pg.rows("select count(*) from customers") == ["3"]
            && maria.rows("select count(*) from customers") == ["3"]
            && pg_refused.rows("select count(*) from customers") == ["13"]
            && queues.depth(&dead).0 == 1
    });
    let (status, log) = daemon.stop();
    assert!(settled, "log:\n{log}");
    assert!(status.success(), "{log}");
    assert_eq!(
        pg.rows("select id from customers order by id"),
        ["11", "12", "13"]
    );
    assert_eq!(
        maria.rows("select id from customers order by id"),
        ["11", "12", "13"]
    );
    let letters = queues.drain(&dead, Duration::from_millis(500));
    assert_eq!(letters.len(), 1);
    let error = letters[0].header("x-golconde-error").unwrap_or_default();
    assert!(error.contains("truncate"), "{error}");
    assert!(
        error.contains("inventory.customers") || error.contains("customers"),
        "{error}"
    );
}

/// A truncate the processor was told to apply, through a database that never said it can
/// delete every row (the test fixture's), is the message's fault: dead-lettered, saying why.
#[test]
fn a_truncate_for_a_database_that_cannot_delete_every_row_is_dead_lettered() {
    let scratch = Scratch::new();
    let text = golconde_e2e::fixture_config(
        "dbz-fixture",
        "rows.jsonl",
        "",
        "tables = [\"customers\"]\ndead_letter = { transport = \"files\", queue = \"dead\" }",
    )
    .replace(
        "processor = { plugin = \"fixture-rows\" }",
        "processor = { plugin = \"debezium\", truncate = \"apply\", table_map = { \"inventory.customers\" = \"customers\" } }",
    )
    .replace("table = \"rows\"\n", "");
    scratch.enqueue_raw("dbz-fixture", &debezium_event("t", None, None, 10));
    let daemon = Daemon::start(&scratch.config(&text));
    let dead = eventually(Duration::from_secs(20), || {
        !scratch.published("dead").is_empty()
    });
    let (status, log) = daemon.stop();
    assert!(dead, "nothing dead-lettered:\n{log}");
    assert!(status.success(), "{log}");
    let letter = scratch.published("dead")[0].to_string();
    assert!(
        letter.contains("deletes every row of table `customers`"),
        "{letter}"
    );
    assert!(letter.contains("fixture-table"), "{letter}");
}

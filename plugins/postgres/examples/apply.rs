//! Benchmark: 200,000 `set` messages over 50,000 keys, in batches of 500, through the
//! `autosql` processor and the `postgres` database (in-process, through their SDK traits,
//! no broker), against a hand-written `unnest` upsert of the same rows in the same
//! batches, one transaction per batch each.
//!
//! ```text
//! cargo run --release -p golconde-postgres --example apply [-- DSN]
//! ```
//!
//! The two take turns batch by batch, each writing its own table, so that both see the
//! same load on a shared machine; the tables are emptied before each round and must end
//! up equal. Prints rows/s of each and their ratio.

use std::{
    collections::HashMap,
    time::{Duration, Instant, SystemTime},
};

use golconde_autosql::AutoSql;
use golconde_plugin_api::{sdk::parse_config, Database, Message, Processor, Session};
use golconde_postgres::{Config, Postgres};
use tokio_postgres::{Client, NoTls};

const MESSAGES: usize = 200_000;
const KEYS: u64 = 50_000;
const BATCH: usize = 500;
const ROUNDS: usize = 3;

/// One generated row, as the hand-written upsert sends it.
#[derive(Clone)]
struct Row {
    id: i64,
    name: String,
    email: String,
    score: i32,
    updated_at: SystemTime,
}

fn rows() -> Vec<Row> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let epoch = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    (0..MESSAGES)
        .map(|i| {
            // xorshift: deterministic, and spread over every key.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let id = (state % KEYS) as i64;
            Row {
                id,
                name: format!("name {id} v{i}"),
                email: format!("user{id}@example.com"),
                score: (i % 1000) as i32,
                updated_at: epoch + Duration::from_secs(i as u64),
            }
        })
        .collect()
}

fn message(row: &Row) -> Message {
    let seconds = row
        .updated_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Message::new(format!(
        r#"{{"action": "set", "data": {{"id": {}, "name": "{}", "email": "{}", "score": {}, "updated_at": "{}"}}}}"#,
        row.id,
        row.name,
        row.email,
        row.score,
        rfc3339(seconds)
    ))
}

/// `seconds` since the epoch as an RFC 3339 UTC timestamp.
fn rfc3339(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

struct Setup {
    runtime: tokio::runtime::Runtime,
    client: Client,
    schema: String,
}

impl Setup {
    fn exec(&self, sql: &str) {
        self.runtime
            .block_on(self.client.batch_execute(&sql.replace("{s}", &self.schema)))
            .unwrap();
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.exec("DROP SCHEMA IF EXISTS {s} CASCADE");
    }
}

/// The hand-written upsert of one batch: typed arrays, binary timestamps, each key's last
/// row only (ON CONFLICT may touch a row once per statement).
async fn hand_written(client: &Client, statement: &tokio_postgres::Statement, batch: &[Row]) {
    let mut last: HashMap<i64, usize> = HashMap::with_capacity(batch.len());
    for (i, row) in batch.iter().enumerate() {
        last.insert(row.id, i);
    }
    let mut keep: Vec<usize> = last.into_values().collect();
    keep.sort_unstable();
    let ids: Vec<i64> = keep.iter().map(|&i| batch[i].id).collect();
    let names: Vec<&str> = keep.iter().map(|&i| batch[i].name.as_str()).collect();
    let emails: Vec<&str> = keep.iter().map(|&i| batch[i].email.as_str()).collect();
    let scores: Vec<i32> = keep.iter().map(|&i| batch[i].score).collect();
    let times: Vec<SystemTime> = keep.iter().map(|&i| batch[i].updated_at).collect();
    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute(statement, &[&ids, &names, &emails, &scores, &times])
        .await
        .unwrap();
    client.batch_execute("COMMIT").await.unwrap();
}

/// Timings of one round.
#[derive(Default)]
struct Round {
    hand: Duration,
    plugin: Duration,
    processing: Duration,
}

/// One round: every batch goes through both, one after the other, each into its own
/// table, so that both see the same load on this shared machine.
fn round(setup: &Setup, dsn: &str, rows: &[Row], messages: &[Message]) -> Round {
    let processor = AutoSql::from_config(golconde_autosql::Config {
        table: Some(format!("{}.plugin", setup.schema)),
        tables: Vec::new(),
    })
    .unwrap();
    let database =
        Postgres::from_config(parse_config::<Config>(&format!(r#"{{"dsn": "{dsn}"}}"#)).unwrap())
            .unwrap();
    let mut session = database.connect().unwrap();
    let sql = format!(
        "INSERT INTO {}.hand (id, name, email, score, updated_at)
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::int[], $5::timestamptz[])
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, email = EXCLUDED.email,
             score = EXCLUDED.score, updated_at = EXCLUDED.updated_at",
        setup.schema
    );
    let statement = setup.runtime.block_on(setup.client.prepare(&sql)).unwrap();
    let mut timings = Round::default();
    for (batch, messages) in rows.chunks(BATCH).zip(messages.chunks(BATCH)) {
        let started = Instant::now();
        setup
            .runtime
            .block_on(hand_written(&setup.client, &statement, batch));
        timings.hand += started.elapsed();

        let started = Instant::now();
        let changes: Vec<_> = messages
            .iter()
            .map(|m| processor.process(m).unwrap())
            .collect();
        timings.processing += started.elapsed();
        let results = session.apply(&changes).unwrap();
        timings.plugin += started.elapsed();
        assert!(results.iter().all(|r| r.is_ok()));
    }
    timings
}

fn main() {
    let dsn = std::env::args()
        .nth(1)
        // Without TLS, for both: the comparison is of the statements, not of encryption.
        .unwrap_or_else(|| "host=127.0.0.1 user=postgres dbname=postgres sslmode=disable".into());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&dsn, NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    });
    let setup = Setup {
        runtime,
        client,
        schema: format!("bench_{}", std::process::id()),
    };
    setup.exec(
        "CREATE SCHEMA {s};
         CREATE TABLE {s}.hand (id bigint PRIMARY KEY, name text, email text, score int,
                                updated_at timestamptz);
         CREATE TABLE {s}.plugin (LIKE {s}.hand INCLUDING ALL);",
    );
    let rows = rows();
    let messages: Vec<Message> = rows.iter().map(message).collect();
    println!(
        "{MESSAGES} set messages over {KEYS} keys, batches of {BATCH}, {ROUNDS} rounds; \
         hand-written and plugins take turns batch by batch"
    );

    let rate = |d: Duration| MESSAGES as f64 / d.as_secs_f64();
    let mut total = Round::default();
    for n in 1..=ROUNDS {
        setup.exec("TRUNCATE {s}.hand, {s}.plugin");
        setup.exec("VACUUM ANALYZE {s}.hand, {s}.plugin");
        let r = round(&setup, &dsn, &rows, &messages);
        println!(
            "round {n}: hand-written {:>7.0} rows/s   autosql+postgres {:>7.0} rows/s \
             (processing {:.0} ms of {:.0} ms)   ratio {:.2}",
            rate(r.hand),
            rate(r.plugin),
            r.processing.as_secs_f64() * 1000.0,
            r.plugin.as_secs_f64() * 1000.0,
            r.hand.as_secs_f64() / r.plugin.as_secs_f64()
        );
        total.hand += r.hand;
        total.plugin += r.plugin;
    }
    let same: bool = setup
        .runtime
        .block_on(setup.client.query_one(
            &format!(
                "SELECT NOT EXISTS (SELECT * FROM {0}.hand h FULL JOIN {0}.plugin p USING (id)
                 WHERE h IS DISTINCT FROM p)",
                setup.schema
            ),
            &[],
        ))
        .unwrap()
        .get(0);
    assert!(same, "both tables end up with the same rows");
    println!(
        "all rounds: hand-written {:.0} rows/s, autosql+postgres {:.0} rows/s, ratio {:.2}",
        rate(total.hand / ROUNDS as u32),
        rate(total.plugin / ROUNDS as u32),
        total.hand.as_secs_f64() / total.plugin.as_secs_f64()
    );
}

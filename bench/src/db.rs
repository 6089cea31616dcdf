//! PostgreSQL side of the benchmark: the bench's own database and tables, the checks that
//! a run left every row right, ceiling B (the database alone, in 1,000-row UNNEST
//! upserts), the publish-to-commit latencies and the probe that times
//! the database's own commits beside them.
//!
//! Depends on tokio-postgres only. Key decision: the bench creates a database of its own
//! (`golconde_bench_<pid>`) and drops it at the end, so it never touches anyone's data and
//! runs beside the tests.

use std::collections::HashMap;
use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio_postgres::{Client, NoTls};

use crate::report::{Sample, Stall};
use crate::workload::{Expected, Found, Row, Workload};

/// Golconde's default `batch.max_messages`: how many messages a ceiling pulls and
/// acknowledges at once.
pub const BATCH: usize = 500;

pub const HOST: &str = "host=127.0.0.1 port=5432 user=postgres";

pub const SCHEMA: &str = "
    create table users (
        id bigint primary key, name text, email text, score int, updated_at timestamptz);
    create table users_latency (
        id bigint primary key, name text, email text, score int, updated_at timestamptz,
        published_us bigint, applied_at timestamptz);
    create function stamp_applied() returns trigger language plpgsql as $$
        begin new.applied_at := clock_timestamp(); return new; end $$;
    create trigger stamp_applied before insert or update on users_latency
        for each row execute function stamp_applied();
    create table commit_probe (id int primary key, at timestamptz);
    insert into commit_probe values (1, now());";

pub async fn connect(dsn: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(dsn, NoTls)
        .await
        .with_context(|| format!("connecting to PostgreSQL with `{dsn}`"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The bench's own database, dropped by [`Database::drop_all`].
pub struct Database {
    pub name: String,
    pub dsn: String,
}

impl Database {
    pub async fn create(name: &str) -> Result<Database> {
        let admin = connect(&format!("{HOST} dbname=postgres")).await?;
        // Two statements: DROP/CREATE DATABASE refuse the implicit transaction of a batch.
        for sql in [
            format!("drop database if exists {name} with (force)"),
            format!("create database {name}"),
        ] {
            admin
                .batch_execute(&sql)
                .await
                .with_context(|| format!("creating database `{name}`"))?;
        }
        let db = Database {
            name: name.to_string(),
            dsn: format!("{HOST} dbname={name}"),
        };
        db.client()
            .await?
            .batch_execute(SCHEMA)
            .await
            .with_context(|| format!("creating the tables in database `{name}`"))?;
        Ok(db)
    }

    pub async fn client(&self) -> Result<Client> {
        connect(&self.dsn).await
    }

    pub async fn drop_all(&self) -> Result<()> {
        let admin = connect(&format!("{HOST} dbname=postgres")).await?;
        admin
            .batch_execute(&format!(
                "drop database if exists {} with (force)",
                self.name
            ))
            .await
            .with_context(|| format!("dropping database `{}`", self.name))
    }
}

pub async fn truncate(client: &Client) -> Result<()> {
    client
        .batch_execute("truncate users, users_latency")
        .await
        .context("emptying tables users and users_latency")
}

/// Whether `users` holds as many rows as expected and their scores add up: cheap enough
/// to poll while a run drains.
pub async fn reached(client: &Client, expected: &Expected) -> Result<bool> {
    let row = client
        .query_one(
            "select count(*), coalesce(sum(score), 0)::bigint from users",
            &[],
        )
        .await
        .context("counting rows of table users")?;
    let (count, sum): (i64, i64) = (row.get(0), row.get(1));
    Ok(count == expected.last.len() as i64 && sum == expected.score_sum)
}

/// Fails unless every key of `users` holds exactly its last message's values.
pub async fn verify(client: &Client, workload: &Workload, expected: &Expected) -> Result<()> {
    let rows = client
        .query(
            "select id, name, email, score, extract(epoch from updated_at)::bigint from users",
            &[],
        )
        .await
        .context("reading table users back")?;
    let found: Vec<Found> = rows
        .iter()
        .map(|row| Found {
            id: row.get(0),
            name: row.get(1),
            email: row.get(2),
            score: row.get(3),
            epoch: row.get(4),
        })
        .collect();
    expected
        .check(workload, "users", &found)
        .map_err(anyhow::Error::msg)
}

/// Ceiling B: the workload's rows in chunks of 1,000 messages, each chunk one autocommit
/// UNNEST upsert (a chunk keeps only the last message of each key, as an upsert cannot
/// touch a row twice). Returns the elapsed time.
pub async fn ceiling(client: &Client, workload: &Workload) -> Result<Duration> {
    let statement = prepare_upsert(client).await?;
    // Built before the clock starts, as the broker hands Golconde ready-made messages.
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < workload.messages {
        let end = (start + 1000).min(workload.messages);
        let mut last: HashMap<i64, Row> = HashMap::new();
        for i in start..end {
            let row = workload.row(i);
            last.insert(row.id, row);
        }
        let rows: Vec<Row> = last.into_values().collect();
        chunks.push((
            rows.iter().map(|r| r.id).collect::<Vec<_>>(),
            rows.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
            rows.iter().map(|r| r.email.clone()).collect::<Vec<_>>(),
            rows.iter().map(|r| r.score).collect::<Vec<_>>(),
            rows.iter()
                .map(|r| r.updated_at.clone())
                .collect::<Vec<_>>(),
        ));
        start = end;
    }
    let clock = Instant::now();
    for (ids, names, emails, scores, times) in &chunks {
        client
            .execute(&statement, &[ids, names, emails, scores, times])
            .await
            .context("running a 1,000-row UNNEST upsert into table users")?;
    }
    Ok(clock.elapsed())
}

/// The UNNEST upsert of ceiling B: `$1..$5` are the columns' arrays (`updated_at` as text).
pub async fn prepare_upsert(client: &Client) -> Result<tokio_postgres::Statement> {
    client
        .prepare(
            "insert into users (id, name, email, score, updated_at)
             select id, name, email, score, updated_at::timestamptz
             from unnest($1::bigint[], $2::text[], $3::text[], $4::int[], $5::text[])
               as u(id, name, email, score, updated_at)
             on conflict (id) do update set name = excluded.name, email = excluded.email,
               score = excluded.score, updated_at = excluded.updated_at",
        )
        .await
        .context("preparing the UNNEST upsert")
}

/// The latency part's bare consumer's upsert into `users_latency`: `$1..$6` are the
/// columns' arrays (`updated_at` as text), the trigger stamps `applied_at` as for Golconde.
pub async fn prepare_latency_upsert(client: &Client) -> Result<tokio_postgres::Statement> {
    client
        .prepare(
            "insert into users_latency (id, name, email, score, updated_at, published_us)
             select id, name, email, score, updated_at::timestamptz, published_us
             from unnest($1::bigint[], $2::text[], $3::text[], $4::int[], $5::text[],
                         $6::bigint[])
               as u(id, name, email, score, updated_at, published_us)
             on conflict (id) do update set name = excluded.name, email = excluded.email,
               score = excluded.score, updated_at = excluded.updated_at,
               published_us = excluded.published_us",
        )
        .await
        .context("preparing the latency part's UNNEST upsert into table users_latency")
}

/// Publish-to-commit latencies of `users_latency`, in publishing order; fails unless
/// there are `count` rows.
pub async fn latencies(client: &Client, count: u64) -> Result<Vec<Sample>> {
    let rows = client
        .query(
            "select published_us,
                    (extract(epoch from applied_at) * 1000000)::bigint - published_us
             from users_latency order by published_us",
            &[],
        )
        .await
        .context("reading table users_latency")?;
    if rows.len() as u64 != count {
        bail!(
            "table users_latency holds {} rows after the latency run, expected {count}",
            rows.len()
        );
    }
    Ok(rows
        .iter()
        .map(|r| Sample {
            published_us: r.get(0),
            ms: r.get::<_, i64>(1) as f64 / 1000.0,
        })
        .collect())
}

pub async fn latency_rows(client: &Client) -> Result<u64> {
    let row = client
        .query_one("select count(*) from users_latency", &[])
        .await
        .context("counting rows of table users_latency")?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// How often [`CommitProbe`] commits.
const PROBE_EVERY: Duration = Duration::from_millis(10);

/// A probe's commit slower than this is a stall. One row's commit takes well under a
/// millisecond when nothing holds the database up.
pub const STALL_MS: f64 = 5.0;

/// Times a one-row commit of its own every [`PROBE_EVERY`] during a latency run, on a
/// connection of its own: a commit waits for the write-ahead log to reach the disk, as
/// every consumer's does, so its slow ones ([`STALL_MS`]) show when the database (or the
/// disk under it) held every commit up, whoever ran. Its load, 100 small commits a second,
/// is the same for every consumer.
pub struct CommitProbe {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<Vec<Stall>>>,
}

impl CommitProbe {
    pub async fn start(dsn: &str) -> Result<CommitProbe> {
        let client = connect(dsn).await?;
        let update = client
            .prepare("update commit_probe set at = clock_timestamp() where id = 1")
            .await
            .context("preparing the commit probe's update of table commit_probe")?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut stalls = Vec::new();
            let mut tick = tokio::time::interval(PROBE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stopped.load(Ordering::Relaxed) {
                tick.tick().await;
                let start_us = crate::broker::now_us();
                let clock = Instant::now();
                client
                    .execute(&update, &[])
                    .await
                    .context("the commit probe's update of table commit_probe")?;
                let ms = clock.elapsed().as_secs_f64() * 1000.0;
                if ms > STALL_MS {
                    stalls.push(Stall { start_us, ms });
                }
            }
            Ok(stalls)
        });
        Ok(CommitProbe { stop, task })
    }

    /// The commits that stalled since [`CommitProbe::start`].
    pub async fn stop(self) -> Result<Vec<Stall>> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.context("the commit probe's task")?
    }
}

/// A workload message, as the hand-written pipelines (ceilings AB, NB, RB) read it: only what the row needs.
#[derive(serde::Deserialize)]
struct Change {
    data: ChangeRow,
}

#[derive(serde::Deserialize)]
struct ChangeRow {
    id: i64,
    name: String,
    email: String,
    score: i32,
    updated_at: String,
}

/// The columns of one UNNEST upsert.
#[derive(Default)]
pub struct Columns {
    ids: Vec<i64>,
    names: Vec<String>,
    emails: Vec<String>,
    scores: Vec<i32>,
    times: Vec<String>,
}

impl Columns {
    /// One batch of message bodies as the columns of one upsert, keeping the last change
    /// of each key (an upsert cannot touch a row twice).
    pub fn parse<'a>(bodies: impl Iterator<Item = &'a [u8]>) -> Result<Columns> {
        let mut last: std::collections::HashMap<i64, ChangeRow> = std::collections::HashMap::new();
        for body in bodies {
            let change: Change = serde_json::from_slice(body).context("a workload message")?;
            last.insert(change.data.id, change.data);
        }
        let mut c = Columns::default();
        for row in last.into_values() {
            c.ids.push(row.id);
            c.names.push(row.name);
            c.emails.push(row.email);
            c.scores.push(row.score);
            c.times.push(row.updated_at);
        }
        Ok(c)
    }

    pub async fn write(
        &self,
        client: &tokio_postgres::Client,
        upsert: &tokio_postgres::Statement,
    ) -> Result<()> {
        let c = self;
        client
            .execute(upsert, &[&c.ids, &c.names, &c.emails, &c.scores, &c.times])
            .await
            .context("running an UNNEST upsert into table users")?;
        Ok(())
    }
}

/// Batches read and parsed, waiting to be written: two, so that reading the next one
/// overlaps writing this one, as Golconde's dispatcher and worker overlap.
const IN_FLIGHT: usize = 2;

/// The loop of a hand-written pipeline (ceilings AB, SB, NB and RB): `read` takes the next batch
/// and parses it into rows (`None` once the drain is done) while, at the same time, each
/// batch read before is written by one UNNEST upsert (`upsert`, from [`prepare_upsert`])
/// and then acknowledged by `ack`, with up to [`IN_FLIGHT`] batches waiting between them.
pub async fn pipeline<T>(
    client: &Client,
    upsert: &tokio_postgres::Statement,
    mut read: impl AsyncFnMut() -> Result<Option<(Columns, T)>>,
    mut ack: impl AsyncFnMut(T) -> Result<()>,
) -> Result<()> {
    let (sender, mut batches) = tokio::sync::mpsc::channel(IN_FLIGHT);
    let reading = async move {
        while let Some(batch) = read().await? {
            if sender.send(batch).await.is_err() {
                break;
            }
        }
        anyhow::Ok(())
    };
    // Moved in, so that a failed write drops the receiver and a reader waiting to send
    // stops instead of waiting forever.
    let writing = async move {
        while let Some((rows, token)) = batches.recv().await {
            rows.write(client, upsert).await?;
            ack(token).await?;
        }
        anyhow::Ok(())
    };
    let (read, write) = tokio::join!(reading, writing);
    read.and(write)
}

//! MariaDB side of the benchmark, for the `mysql` database plugin: the bench's own
//! database and `users` table, the checks that a run left every row right, and ceiling C
//! (the database alone, in 1,000-row `INSERT ... ON DUPLICATE KEY UPDATE` statements).
//!
//! Depends on mysql_async, with the features the `mysql` plugin uses, so the bench builds
//! no second copy of it. Key decision: like the PostgreSQL side, a database of the bench's
//! own (`golconde_bench_<pid>`), dropped at the end; and ceiling C writes what the plugin
//! writes (every message's row, in queue order, as bound parameters of a prepared
//! multi-row upsert, one transaction per statement), only without Golconde around it.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, Params, TxOpts, Value};

use crate::workload::{Expected, Found, Workload};

/// The server, as the tests use it: root over TCP without a password.
pub const URL: &str = "mysql://root@127.0.0.1:3306";

/// `timestamp(6) null`: an instant like PostgreSQL's `timestamptz`, and no implicit
/// `DEFAULT CURRENT_TIMESTAMP ON UPDATE` where `explicit_defaults_for_timestamp` is off.
const SCHEMA: &str = "create table users (
    id bigint primary key, name varchar(100), email varchar(200), score int,
    updated_at timestamp(6) null default null)";

/// Rows per statement (and per transaction) of ceiling C, as ceiling B's per UNNEST.
const CHUNK: usize = 1000;

async fn connect(url: &str) -> Result<Conn> {
    let opts = Opts::from_url(url).with_context(|| format!("reading the MariaDB URL `{url}`"))?;
    let mut conn = Conn::new(opts)
        .await
        .with_context(|| format!("connecting to MariaDB at {url} (root, no password)"))?;
    // The plugin's sessions write and read TIMESTAMPs in UTC; so do the bench's.
    conn.query_drop("set time_zone = '+00:00'")
        .await
        .context("setting the session's time zone to UTC on MariaDB")?;
    Ok(conn)
}

/// The bench's own database on MariaDB, dropped by [`drop_database`].
pub struct Database {
    /// The `dsn` of the pipeline's `mysql` database section.
    pub dsn: String,
}

impl Database {
    pub async fn create(name: &str) -> Result<Database> {
        let mut admin = connect(URL).await?;
        for sql in [
            format!("drop database if exists `{name}`"),
            format!("create database `{name}`"),
        ] {
            admin
                .query_drop(&sql)
                .await
                .with_context(|| format!("creating database `{name}` on MariaDB"))?;
        }
        admin.disconnect().await.ok();
        let db = Database {
            dsn: format!("{URL}/{name}"),
        };
        let mut conn = db.connect().await?;
        conn.query_drop(SCHEMA)
            .await
            .with_context(|| format!("creating table users in MariaDB database `{name}`"))?;
        Ok(db)
    }

    pub async fn connect(&self) -> Result<Conn> {
        connect(&self.dsn).await
    }
}

/// Drops the bench's database `name` if it exists: also after a run that failed before
/// or while creating it.
pub async fn drop_database(name: &str) -> Result<()> {
    let mut admin = connect(URL).await?;
    admin
        .query_drop(format!("drop database if exists `{name}`"))
        .await
        .with_context(|| format!("dropping MariaDB database `{name}`"))?;
    admin.disconnect().await.ok();
    Ok(())
}

pub async fn truncate(conn: &mut Conn) -> Result<()> {
    conn.query_drop("truncate table users")
        .await
        .context("emptying table users on MariaDB")
}

/// Whether `users` holds as many rows as expected and their scores add up: cheap enough
/// to poll while a run drains.
pub async fn reached(conn: &mut Conn, expected: &Expected) -> Result<bool> {
    let row: Option<(i64, i64)> = conn
        .query_first("select count(*), cast(coalesce(sum(score), 0) as signed) from users")
        .await
        .context("counting rows of table users on MariaDB")?;
    let (count, sum) = row.unwrap_or_default();
    Ok(count == expected.last.len() as i64 && sum == expected.score_sum)
}

/// Fails unless every key of `users` holds exactly its last message's values.
pub async fn verify(conn: &mut Conn, workload: &Workload, expected: &Expected) -> Result<()> {
    type Read = (i64, Option<String>, Option<String>, Option<i32>, i64);
    let rows: Vec<Read> = conn
        .query(
            "select id, name, email, score, cast(unix_timestamp(updated_at) as signed)
             from users",
        )
        .await
        .context("reading table users back from MariaDB")?;
    let found: Vec<Found> = rows
        .into_iter()
        .map(|(id, name, email, score, epoch)| Found {
            id,
            name,
            email,
            score,
            epoch,
        })
        .collect();
    expected
        .check(workload, "users (MariaDB)", &found)
        .map_err(anyhow::Error::msg)
}

/// The upsert of `rows` rows, as the `mysql` plugin writes one.
fn upsert(rows: usize) -> String {
    format!(
        "insert into users (id, name, email, score, updated_at) values {} \
         on duplicate key update name = values(name), email = values(email), \
         score = values(score), updated_at = values(updated_at)",
        vec!["(?, ?, ?, ?, ?)"; rows].join(", ")
    )
}

/// Ceiling C: every message's row, in queue order, 1,000 rows per prepared
/// `INSERT ... ON DUPLICATE KEY UPDATE` and per transaction (the server applies a
/// statement's rows in order, so a key written twice in one ends at its last). Returns the
/// elapsed time.
pub async fn ceiling(conn: &mut Conn, workload: &Workload) -> Result<Duration> {
    let full = conn
        .prep(upsert(CHUNK))
        .await
        .context("preparing the 1,000-row upsert on MariaDB")?;
    let rest = (workload.messages as usize) % CHUNK;
    let short = if rest == 0 {
        None
    } else {
        Some(
            conn.prep(upsert(rest))
                .await
                .context("preparing the last, shorter upsert on MariaDB")?,
        )
    };
    // Built before the clock starts, as the broker hands Golconde ready-made messages;
    // timestamps as the plugin binds them, text in UTC.
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < workload.messages {
        let end = (start + CHUNK as u64).min(workload.messages);
        let mut values = Vec::with_capacity(5 * (end - start) as usize);
        for i in start..end {
            let row = workload.row(i);
            let at = row.updated_at.trim_end_matches('Z').replacen('T', " ", 1);
            values.extend([
                Value::Int(row.id),
                Value::Bytes(row.name.into_bytes()),
                Value::Bytes(row.email.into_bytes()),
                Value::Int(row.score.into()),
                Value::Bytes(at.into_bytes()),
            ]);
        }
        chunks.push((end - start == CHUNK as u64, Params::Positional(values)));
        start = end;
    }
    let clock = Instant::now();
    for (is_full, params) in chunks {
        let statement = if is_full {
            &full
        } else {
            short.as_ref().expect("prepared for the last chunk")
        };
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .await
            .context("starting a transaction on MariaDB")?;
        tx.exec_drop(statement, params)
            .await
            .context("running a 1,000-row upsert into table users on MariaDB")?;
        tx.commit()
            .await
            .context("committing a 1,000-row upsert on MariaDB")?;
    }
    Ok(clock.elapsed())
}

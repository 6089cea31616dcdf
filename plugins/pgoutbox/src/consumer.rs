//! Consuming an outbox: one consumer per outbox (a session advisory lock), rows handed
//! over in `seq` order, rows committed late caught, rows deleted when acknowledged.
//!
//! A read, in one `REPEATABLE READ` snapshot, hands over first the rows at or below
//! `cursor` (the highest `seq` handed over) that this consumer does not hold: acknowledged
//! rows are deleted, so those are rows that committed after the consumer had passed
//! their `seq`; then, if they all fit, the rows after `cursor`. Both in `seq` order, so two
//! changes of one row always go in commit order (`golconde_pg::outbox` says why).
//!
//! Writers notify only a consumer that said it waits (`waiting` in `<outbox>_delivered`),
//! because a `NOTIFY` serialises their commits: a consumer sets the flag when a read comes
//! back empty, reads once more, and sleeps; the first read that finds rows clears it.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use golconde_pg::outbox::{ident, Name};
use golconde_plugin_api::{
    ConsumeOptions, Consumer, Delivery, Header, Message, PluginError, RVec, TRANSPORT_ERROR_HEADER,
};
use tokio::sync::Notify;
use tokio_postgres::Row;

use crate::{declare, open, statement_error, Conn, Runtime, Settings};

/// The advisory lock key space of outbox consumers: the high half of the key, beside the
/// outbox's oid in the low half.
const LOCK_SPACE: i64 = 0x676f_6c63; // "golc"

/// A consumer of one outbox.
pub struct OutboxConsumer {
    runtime: Arc<Runtime>,
    settings: Arc<Settings>,
    outbox: Name,
    prefetch: usize,
    wake: Arc<Notify>,
    state: Mutex<State>,
}

struct State {
    conn: Option<Conn>,
    /// The lock key, once held.
    locked: Option<i64>,
    /// Whether "waiting for the other consumer" was logged.
    waiting_logged: bool,
    /// Highest `seq` handed over.
    cursor: i64,
    /// What a consumer before this one handed over, read when the lock was taken.
    delivered_before: i64,
    next_tag: u64,
    /// Handed over and not yet acknowledged: tag -> seq.
    held: BTreeMap<u64, i64>,
    held_seqs: HashSet<i64>,
    /// What this consumer last wrote to `waiting`; `None` until it wrote it once (a
    /// consumer before it may have left it set).
    waiting: Option<bool>,
    /// Set when the connection was lost: every call fails, and the host opens a new
    /// consumer (which reads from the start of the outbox again).
    broken: Option<String>,
    sql: Statements,
}

impl State {
    /// The held tags that `tag` settles: it alone, or with `multiple` every one up to it.
    fn settled_by(&self, tag: u64, multiple: bool) -> Vec<u64> {
        if multiple {
            self.held.range(..=tag).map(|(t, _)| *t).collect()
        } else {
            self.held.get(&tag).map(|_| tag).into_iter().collect()
        }
    }
}

/// The statements, with the outbox's name in them.
struct Statements {
    passed: String,
    late: String,
    after: String,
    delete: String,
    delivered: String,
    record: String,
    wait: String,
    unwait: String,
}

impl OutboxConsumer {
    pub fn start(
        runtime: Arc<Runtime>,
        settings: Arc<Settings>,
        outbox: Name,
        options: ConsumeOptions,
    ) -> Result<OutboxConsumer, PluginError> {
        let table = outbox.sql();
        let delivered_table = outbox.sibling("_delivered").sql();
        let columns = "seq, extract(epoch from created_at)::bigint, headers::text, \
                       CASE WHEN octet_length(body) <= $2 THEN body END, octet_length(body)";
        let sql = Statements {
            passed: format!("SELECT seq FROM {table} WHERE seq <= $1 ORDER BY seq"),
            late: format!("SELECT {columns} FROM {table} WHERE seq = ANY($1) ORDER BY seq"),
            after: format!("SELECT {columns} FROM {table} WHERE seq > $1 ORDER BY seq LIMIT $3"),
            delete: format!("DELETE FROM {table} WHERE seq = ANY($1)"),
            delivered: format!("SELECT coalesce(max(delivered_up_to), 0) FROM {delivered_table}"),
            record: format!(
                "UPDATE {delivered_table} SET delivered_up_to = greatest(delivered_up_to, $1), \
                 waiting = false WHERE delivered_up_to < $1 OR waiting"
            ),
            // The flag needs no durability: a lost one costs a poll interval at most.
            wait: format!(
                "BEGIN; SET LOCAL synchronous_commit TO off; \
                 UPDATE {delivered_table} SET waiting = true WHERE NOT waiting; COMMIT"
            ),
            unwait: format!("UPDATE {delivered_table} SET waiting = false WHERE waiting"),
        };
        let consumer = OutboxConsumer {
            runtime,
            settings,
            outbox,
            prefetch: options.prefetch as usize,
            wake: Arc::new(Notify::new()),
            state: Mutex::new(State {
                conn: None,
                locked: None,
                waiting_logged: false,
                cursor: 0,
                delivered_before: 0,
                next_tag: 1,
                held: BTreeMap::new(),
                held_seqs: HashSet::new(),
                waiting: None,
                broken: None,
                sql,
            }),
        };
        {
            let mut state = consumer.lock();
            consumer.runtime.block_on(consumer.connect(&mut state))?;
        }
        Ok(consumer)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn context(&self, doing: &str) -> String {
        format!("{doing} outbox `{}`", self.outbox)
    }

    /// Opens the connection, makes sure the outbox exists, and listens on its channel.
    async fn connect(&self, state: &mut State) -> Result<(), PluginError> {
        let conn = open(&self.settings, Some(self.wake.clone())).await?;
        declare(&conn.client, &self.settings, &self.outbox).await?;
        let listen = format!("LISTEN {}", ident(&self.outbox.channel()));
        conn.client
            .batch_execute(&listen)
            .await
            .map_err(|e| statement_error(&e, &self.settings, &self.context("listening on")))?;
        state.conn = Some(conn);
        Ok(())
    }

    /// Takes the outbox's lock if free. Says once, at info level, who holds it otherwise.
    async fn try_lock(&self, state: &mut State) -> Result<bool, PluginError> {
        let conn = state.conn.as_ref().expect("connected");
        let row = conn
            .client
            .query_one(
                "SELECT ($1::bigint << 32) | to_regclass($2)::oid::bigint",
                &[&LOCK_SPACE, &self.outbox.sql()],
            )
            .await
            .map_err(|e| self.failed(&e, "locking"))?;
        let key: Option<i64> = row.get(0);
        let key = key.ok_or_else(|| {
            PluginError::config(format!(
                "outbox `{}` was dropped while being consumed",
                self.outbox
            ))
        })?;
        let got: bool = conn
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .await
            .map_err(|e| self.failed(&e, "locking"))?
            .get(0);
        if !got {
            if !state.waiting_logged {
                state.waiting_logged = true;
                let holder: Option<i32> = conn
                    .client
                    .query_opt(
                        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
                         AND ((classid::bigint << 32) | objid::bigint) = $1 LIMIT 1",
                        &[&key],
                    )
                    .await
                    .ok()
                    .flatten()
                    .map(|row| row.get(0));
                tracing::info!(
                    "outbox `{}` on {} is being consumed by another session (backend pid \
                     {}); waiting to take over when it ends",
                    self.outbox,
                    self.settings.target(),
                    holder.map_or("unknown".into(), |pid| pid.to_string())
                );
            }
            return Ok(false);
        }
        if state.waiting_logged {
            tracing::info!("took over outbox `{}`", self.outbox);
        }
        state.delivered_before = conn
            .client
            .query_one(&state.sql.delivered, &[])
            .await
            .map_err(|e| self.failed(&e, "reading"))?
            .get(0);
        state.locked = Some(key);
        Ok(true)
    }

    /// A failed statement, saying what it was doing to which outbox.
    fn failed(&self, error: &tokio_postgres::Error, doing: &str) -> PluginError {
        statement_error(error, &self.settings, &self.context(doing))
    }

    /// One read: at most `max` rows, in `seq` order.
    async fn read(&self, state: &mut State, max: usize) -> Result<Vec<Delivery>, PluginError> {
        let max_bytes = self.settings.max_message_bytes as i32;
        let conn = state.conn.as_mut().expect("connected");
        let tx = conn
            .client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(|e| {
                statement_error(
                    &e,
                    &self.settings,
                    &format!("reading outbox `{}`", self.outbox),
                )
            })?;
        let fail = |e: tokio_postgres::Error| {
            statement_error(
                &e,
                &self.settings,
                &format!("reading outbox `{}`", self.outbox),
            )
        };
        // Rows at or below the cursor not held: committed since the cursor passed them.
        let mut late: Vec<i64> = Vec::new();
        if state.cursor > 0 {
            for row in tx
                .query(&state.sql.passed, &[&state.cursor])
                .await
                .map_err(fail)?
            {
                let seq: i64 = row.get(0);
                if !state.held_seqs.contains(&seq) {
                    late.push(seq);
                }
            }
        }
        let all_late_fit = late.len() < max;
        late.truncate(max);
        let late_rows = if late.is_empty() {
            Vec::new()
        } else {
            tx.query(&state.sql.late, &[&late, &max_bytes])
                .await
                .map_err(fail)?
        };
        // A row after the cursor may go only once every late row before it has.
        let after = if all_late_fit {
            let room = (max - late_rows.len()) as i64;
            tx.query(&state.sql.after, &[&state.cursor, &max_bytes, &room])
                .await
                .map_err(fail)?
        } else {
            Vec::new()
        };
        tx.commit().await.map_err(fail)?;
        let mut deliveries = Vec::with_capacity(late_rows.len() + after.len());
        let mut highest = state.cursor;
        for row in late_rows.iter().chain(after.iter()) {
            let seq: i64 = row.get(0);
            if !state.held_seqs.insert(seq) {
                continue;
            }
            highest = highest.max(seq);
            let tag = state.next_tag;
            state.next_tag += 1;
            state.held.insert(tag, seq);
            deliveries.push(Delivery {
                tag,
                redelivered: seq <= state.delivered_before,
                message: self.message(row),
            });
        }
        if !late_rows.is_empty() {
            tracing::debug!(
                "outbox `{}`: {} row(s) committed after later ones were handed over",
                self.outbox,
                late_rows.len()
            );
        }
        state.cursor = highest;
        if !deliveries.is_empty()
            && (highest > state.delivered_before || state.waiting != Some(false))
        {
            let conn = state.conn.as_ref().expect("connected");
            conn.client
                .execute(&state.sql.record, &[&highest])
                .await
                .map_err(|e| self.failed(&e, "recording what was handed over from"))?;
            state.waiting = Some(false);
        }
        Ok(deliveries)
    }

    fn message(&self, row: &Row) -> Message {
        let stored: Option<i64> = row.get(1);
        let headers: Option<String> = row.get(2);
        let body: Option<Vec<u8>> = row.get(3);
        let size: i32 = row.get(4);
        let mut problems = Vec::new();
        let mut list: Vec<Header> = match headers.as_deref().map(parse_headers) {
            None => Vec::new(),
            Some(Ok(list)) => list,
            Some(Err(why)) => {
                problems.push(format!(
                    "its `headers` are not [[name, value], ...] ({why})"
                ));
                Vec::new()
            }
        };
        list.retain(|h| h.name.as_str() != TRANSPORT_ERROR_HEADER);
        if let Some(stored) = stored {
            if !list.iter().any(|h| h.name.as_str() == "timestamp") {
                list.push(Header {
                    name: "timestamp".into(),
                    value: stored.to_string().into(),
                });
            }
        }
        let body = body.unwrap_or_else(|| {
            problems.push(format!(
                "its body of {size} bytes is larger than `max_message_bytes` ({}); it was not read",
                self.settings.max_message_bytes
            ));
            Vec::new()
        });
        if !problems.is_empty() {
            let seq: i64 = row.get(0);
            list.push(Header {
                name: TRANSPORT_ERROR_HEADER.into(),
                value: format!(
                    "outbox `{}` row {seq}: {}",
                    self.outbox,
                    problems.join("; ")
                )
                .into(),
            });
        }
        Message {
            body: RVec::from(body),
            headers: RVec::from(list),
        }
    }

    /// Says that this consumer waits, so that the next writer notifies it.
    async fn set_waiting(&self, state: &mut State) -> Result<(), PluginError> {
        let conn = state.conn.as_ref().expect("connected");
        conn.client
            .batch_execute(&state.sql.wait)
            .await
            .map_err(|e| self.failed(&e, "flagging as waiting"))?;
        state.waiting = Some(true);
        Ok(())
    }

    /// Waits until `deadline` for a notification or the poll interval, whichever first.
    async fn pause(&self, deadline: Instant) {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let wait = (deadline - now).min(self.settings.poll_interval);
        let _ = tokio::time::timeout(wait, self.wake.notified()).await;
    }

    fn check(&self, state: &State) -> Result<(), PluginError> {
        match &state.broken {
            Some(why) => Err(PluginError::transient(why.clone())),
            None => Ok(()),
        }
    }

    /// Marks the consumer broken when its connection is gone.
    fn note<T>(&self, state: &mut State, result: Result<T, PluginError>) -> Result<T, PluginError> {
        if result.is_err() && state.conn.as_ref().is_none_or(|c| c.client.is_closed()) {
            state.broken = Some(format!(
                "the connection consuming outbox `{}` on {} was lost; deliveries not \
                 acknowledged come again",
                self.outbox,
                self.settings.target()
            ));
            state.conn = None;
        }
        result
    }
}

impl Consumer for OutboxConsumer {
    fn receive(&self, max: usize, timeout: Duration) -> Result<Vec<Delivery>, PluginError> {
        let mut state = self.lock();
        self.check(&state)?;
        let deadline = Instant::now() + timeout;
        let result = self.runtime.block_on(async {
            loop {
                if state.locked.is_none() && !self.try_lock(&mut state).await? {
                    if Instant::now() >= deadline {
                        return Ok(Vec::new());
                    }
                    let wait = (deadline - Instant::now()).min(Duration::from_millis(250));
                    tokio::time::sleep(wait).await;
                    continue;
                }
                let room = self.prefetch.saturating_sub(state.held.len()).min(max);
                if room > 0 {
                    let got = self.read(&mut state, room).await?;
                    if !got.is_empty() {
                        return Ok(got);
                    }
                    if state.waiting != Some(true) {
                        // What committed before the flag was seen notified no one.
                        self.set_waiting(&mut state).await?;
                        continue;
                    }
                }
                if Instant::now() >= deadline {
                    return Ok(Vec::new());
                }
                self.pause(deadline).await;
            }
        });
        self.note(&mut state, result)
    }

    fn ack(&self, tag: u64, multiple: bool) -> Result<(), PluginError> {
        let mut state = self.lock();
        self.check(&state)?;
        let tags = state.settled_by(tag, multiple);
        let seqs: Vec<i64> = tags
            .iter()
            .filter_map(|t| state.held.get(t).copied())
            .collect();
        if seqs.is_empty() {
            return Ok(());
        }
        let result = self.runtime.block_on(async {
            let conn = state.conn.as_ref().expect("connected");
            conn.client
                .execute(&state.sql.delete, &[&seqs])
                .await
                .map(drop)
                .map_err(|e| self.failed(&e, "acknowledging (deleting) from"))
        });
        let result = self.note(&mut state, result);
        if result.is_ok() {
            for t in tags {
                if let Some(seq) = state.held.remove(&t) {
                    state.held_seqs.remove(&seq);
                }
            }
        }
        result
    }

    fn nack(&self, tag: u64, multiple: bool, requeue: bool) -> Result<(), PluginError> {
        if !requeue {
            // Given up on: an outbox has no dead-letter of its own.
            return self.ack(tag, multiple);
        }
        let mut state = self.lock();
        self.check(&state)?;
        let tags = state.settled_by(tag, multiple);
        let mut lowest = i64::MAX;
        for t in tags {
            if let Some(seq) = state.held.remove(&t) {
                state.held_seqs.remove(&seq);
                lowest = lowest.min(seq);
            }
        }
        // Read again from the start, as a new consumer would; rows still held are skipped.
        if lowest != i64::MAX {
            state.delivered_before = state.delivered_before.max(state.cursor);
            state.cursor = 0;
        }
        Ok(())
    }

    /// Ends the session: its lock goes with it, and what was not acknowledged stays in
    /// the outbox for the next consumer.
    fn close(&self) -> Result<(), PluginError> {
        let mut state = self.lock();
        let conn = state.conn.take();
        if let (Some(conn), Some(_)) = (&conn, state.locked) {
            // With no one waiting, writers need not notify; best effort, the next
            // consumer's first read clears it too.
            let unwait = &state.sql.unwait;
            let _ = self.runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(1), conn.client.execute(unwait, &[])).await
            });
        }
        state.locked = None;
        drop(conn);
        Ok(())
    }
}

/// Headers as the `headers` column holds them: `[[name, value], ...]`, in order.
pub fn headers_json(headers: &[Header]) -> Option<String> {
    if headers.is_empty() {
        return None;
    }
    let pairs: Vec<[&str; 2]> = headers
        .iter()
        .map(|h| [h.name.as_str(), h.value.as_str()])
        .collect();
    serde_json::to_string(&pairs).ok()
}

fn parse_headers(text: &str) -> Result<Vec<Header>, String> {
    let pairs: Vec<(String, String)> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok(pairs
        .into_iter()
        .map(|(name, value)| Header {
            name: name.into(),
            value: value.into(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_in_order() {
        let headers = vec![
            Header {
                name: "b".into(),
                value: "1".into(),
            },
            Header {
                name: "a".into(),
                value: "colon: backslash \\ ü \"q\"".into(),
            },
        ];
        let text = headers_json(&headers).unwrap();
        let back = parse_headers(&text).unwrap();
        assert_eq!(back, headers);
        assert_eq!(headers_json(&[]), None);
        assert!(parse_headers("{\"a\": 1}").is_err());
    }
}

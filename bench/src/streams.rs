//! The stream brokers' side of the bench: NATS JetStream and Redis Streams. Pre-loads a
//! stream with the workload, drains one with the server's own client acknowledging as the
//! pipeline does (ceilings N and R), drains one into PostgreSQL by a pipeline written by
//! hand for the workload, reading while it writes (ceilings NB and RB), and counts what a
//! consumer has not acknowledged.
//!
//! Depends on async-nats, redis, tokio-postgres and serde. Key decision: the ceilings
//! acknowledge as the transports do, so that Golconde is compared with the same round
//! trips, not with a client that acknowledges less often: every message on a JetStream
//! work-queue stream (which refuses cumulative acknowledgements, so the `nats` transport
//! acknowledges each one), one `XACK` of each batch's ids on Redis.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use async_nats::jetstream::{self, consumer::pull, stream::RetentionPolicy};
use futures_lite::StreamExt;
use redis::AsyncCommands;

pub const NATS_URL: &str = "nats://127.0.0.1:4222";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379/0";

use crate::db::{self, Columns, BATCH};

/// A stream broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Nats,
    Redis,
}

/// The stream name of a subject: what the `nats` plugin would create for it.
fn stream_name(subject: &str) -> String {
    subject.replace(['.', '*', '>', ' '], "_")
}

/// One connection to each server for the whole bench: the drain loops poll [`unacked`]
/// every few milliseconds, and a connection per poll would load the machine they measure.
static NATS: tokio::sync::OnceCell<jetstream::Context> = tokio::sync::OnceCell::const_new();
static REDIS: tokio::sync::OnceCell<redis::aio::MultiplexedConnection> =
    tokio::sync::OnceCell::const_new();

async fn jetstream() -> Result<jetstream::Context> {
    NATS.get_or_try_init(|| async {
        let client = async_nats::connect(NATS_URL)
            .await
            .with_context(|| format!("connecting to NATS at {NATS_URL}"))?;
        Ok(jetstream::new(client))
    })
    .await
    .cloned()
}

async fn redis() -> Result<redis::aio::MultiplexedConnection> {
    REDIS
        .get_or_try_init(|| async {
            redis::Client::open(REDIS_URL)?
                .get_multiplexed_async_connection()
                .await
                .with_context(|| format!("connecting to Redis at {REDIS_URL}"))
        })
        .await
        .cloned()
}

/// Writes `bodies` to a new stream `queue`, every one confirmed by the server (a JetStream
/// work-queue stream on file storage, as the plugin creates one; a Redis stream entry with
/// a `body` field).
pub async fn preload(kind: Kind, queue: &str, bodies: impl Iterator<Item = Vec<u8>>) -> Result<()> {
    match kind {
        Kind::Nats => {
            let js = jetstream().await?;
            js.create_stream(jetstream::stream::Config {
                name: stream_name(queue),
                subjects: vec![queue.to_string()],
                retention: RetentionPolicy::WorkQueue,
                ..Default::default()
            })
            .await
            .with_context(|| format!("creating the stream of `{queue}`"))?;
            let mut pending = Vec::with_capacity(5000);
            for body in bodies {
                pending.push(
                    js.publish(queue.to_string(), body.into())
                        .await
                        .with_context(|| format!("publishing to `{queue}`"))?,
                );
                if pending.len() == 5000 {
                    for ack in pending.drain(..) {
                        ack.await.with_context(|| format!("confirming `{queue}`"))?;
                    }
                }
            }
            for ack in pending {
                ack.await.with_context(|| format!("confirming `{queue}`"))?;
            }
        }
        Kind::Redis => {
            let mut connection = redis().await?;
            let mut bodies = bodies.peekable();
            while bodies.peek().is_some() {
                let mut pipe = redis::pipe();
                for body in bodies.by_ref().take(1000) {
                    pipe.cmd("XADD").arg(queue).arg("*").arg("body").arg(body);
                }
                let _: Vec<String> = pipe
                    .query_async(&mut connection)
                    .await
                    .with_context(|| format!("XADD to `{queue}`"))?;
            }
        }
    }
    Ok(())
}

/// The durable consumer `ceiling` of `queue`'s stream, acknowledging each message as the
/// `nats` transport does on a work-queue stream.
async fn ceiling_consumer(
    js: &jetstream::Context,
    queue: &str,
) -> Result<jetstream::consumer::Consumer<pull::Config>> {
    let stream = js.get_stream(stream_name(queue)).await?;
    stream
        .create_consumer(pull::Config {
            durable_name: Some("ceiling".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: (BATCH * 4) as i64,
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating a consumer of `{queue}`"))
}

/// The consumer group `ceiling` of `queue`, and how its consumer reads: up to [`BATCH`].
async fn ceiling_group(
    queue: &str,
) -> Result<(
    redis::aio::MultiplexedConnection,
    redis::streams::StreamReadOptions,
)> {
    let mut connection = redis().await?;
    let _: () = connection
        .xgroup_create(queue, "ceiling", "0")
        .await
        .with_context(|| format!("XGROUP CREATE on `{queue}`"))?;
    let options = redis::streams::StreamReadOptions::default()
        .group("ceiling", "bench")
        .count(BATCH)
        .block(1000);
    Ok((connection, options))
}

/// Ceilings N and R: drains `count` messages of `queue` with the server's own client,
/// pulling batches of up to [`BATCH`]: acknowledging each message on JetStream, each batch
/// with one `XACK` on Redis. Returns the elapsed time.
pub async fn ceiling(kind: Kind, queue: &str, count: u64) -> Result<Duration> {
    match kind {
        Kind::Nats => {
            let js = jetstream().await?;
            let consumer = ceiling_consumer(&js, queue).await?;
            let clock = Instant::now();
            let mut messages = consumer
                .stream()
                .max_messages_per_batch(BATCH)
                .messages()
                .await?;
            let mut seen = 0u64;
            while seen < count {
                let message = messages
                    .next()
                    .await
                    .with_context(|| format!("`{queue}` ended after {seen} messages"))?
                    .map_err(|e| anyhow::anyhow!("consuming `{queue}`: {e}"))?;
                seen += 1;
                message
                    .ack()
                    .await
                    .map_err(|e| anyhow::anyhow!("acknowledging on `{queue}`: {e}"))?;
            }
            // Acknowledgements are queued in the client: sent before it is dropped.
            js.client()
                .flush()
                .await
                .map_err(|e| anyhow::anyhow!("flushing acknowledgements on `{queue}`: {e}"))?;
            Ok(clock.elapsed())
        }
        Kind::Redis => {
            let (mut connection, options) = ceiling_group(queue).await?;
            let clock = Instant::now();
            let mut seen = 0u64;
            while seen < count {
                let reply: redis::streams::StreamReadReply = connection
                    .xread_options(&[queue], &[">"], &options)
                    .await
                    .with_context(|| format!("XREADGROUP on `{queue}`"))?;
                let ids: Vec<String> = reply
                    .keys
                    .into_iter()
                    .flat_map(|k| k.ids)
                    .map(|entry| entry.id)
                    .collect();
                if ids.is_empty() {
                    bail!("`{queue}` ended after {seen} of {count} entries");
                }
                seen += ids.len() as u64;
                let _: u64 = connection
                    .xack(queue, "ceiling", &ids)
                    .await
                    .with_context(|| format!("XACK on `{queue}`"))?;
            }
            Ok(clock.elapsed())
        }
    }
}

/// Ceilings NB and RB: a hand-written pipeline from the stream to PostgreSQL, written for
/// this workload alone. A reader pulls batches of up to [`BATCH`] with the server's own
/// client and parses each into the rows of one UNNEST upsert of ceiling B; a writer, at the
/// same time, writes each batch and then acknowledges it as the transport does. Returns the
/// elapsed time.
pub async fn through(
    kind: Kind,
    queue: &str,
    count: u64,
    client: &tokio_postgres::Client,
) -> Result<Duration> {
    let upsert = crate::db::prepare_upsert(client).await?;
    match kind {
        Kind::Nats => {
            let js = jetstream().await?;
            let consumer = ceiling_consumer(&js, queue).await?;
            let clock = Instant::now();
            let mut messages = consumer
                .stream()
                .max_messages_per_batch(BATCH)
                .messages()
                .await?;
            let mut read = 0u64;
            let next = async || {
                if read == count {
                    return Ok(None);
                }
                let mut batch = Vec::with_capacity(BATCH);
                let first = messages
                    .next()
                    .await
                    .with_context(|| format!("`{queue}` ended after {read} messages"))?
                    .map_err(|e| anyhow::anyhow!("consuming `{queue}`: {e}"))?;
                batch.push(first);
                while batch.len() < BATCH {
                    match futures_lite::future::poll_once(messages.next()).await {
                        Some(Some(Ok(message))) => batch.push(message),
                        Some(Some(Err(e))) => bail!("consuming `{queue}`: {e}"),
                        _ => break,
                    }
                }
                read += batch.len() as u64;
                let rows = Columns::parse(batch.iter().map(|m| &m.payload[..]))?;
                Ok(Some((rows, batch)))
            };
            let ack = async |batch: Vec<jetstream::Message>| {
                for message in batch {
                    message
                        .ack()
                        .await
                        .map_err(|e| anyhow::anyhow!("acknowledging on `{queue}`: {e}"))?;
                }
                Ok(())
            };
            db::pipeline(client, &upsert, next, ack).await?;
            js.client()
                .flush()
                .await
                .map_err(|e| anyhow::anyhow!("flushing acknowledgements on `{queue}`: {e}"))?;
            Ok(clock.elapsed())
        }
        Kind::Redis => {
            let (mut connection, options) = ceiling_group(queue).await?;
            let clock = Instant::now();
            let mut reading = connection.clone();
            let mut read = 0u64;
            let next = async || {
                if read >= count {
                    return Ok(None);
                }
                let reply: redis::streams::StreamReadReply = reading
                    .xread_options(&[queue], &[">"], &options)
                    .await
                    .with_context(|| format!("XREADGROUP on `{queue}`"))?;
                let entries: Vec<redis::streams::StreamId> =
                    reply.keys.into_iter().flat_map(|k| k.ids).collect();
                if entries.is_empty() {
                    bail!("`{queue}` ended after {read} of {count} entries");
                }
                read += entries.len() as u64;
                let bodies: Vec<Vec<u8>> = entries
                    .iter()
                    .map(|entry| entry.get::<Vec<u8>>("body").context("an entry's body"))
                    .collect::<Result<_>>()?;
                let rows = Columns::parse(bodies.iter().map(Vec::as_slice))?;
                let ids: Vec<String> = entries.into_iter().map(|e| e.id).collect();
                Ok(Some((rows, ids)))
            };
            let ack = async |ids: Vec<String>| {
                let _: u64 = connection
                    .xack(queue, "ceiling", &ids)
                    .await
                    .with_context(|| format!("XACK on `{queue}`"))?;
                Ok(())
            };
            db::pipeline(client, &upsert, next, ack).await?;
            Ok(clock.elapsed())
        }
    }
}

/// How many messages of `queue` the consumer `consumer` (a pipeline's name) has not
/// acknowledged, delivered or not; `None` before it exists (or while Redis cannot tell).
pub async fn unacked(kind: Kind, queue: &str, consumer: &str) -> Result<Option<u64>> {
    match kind {
        Kind::Nats => {
            let js = jetstream().await?;
            let stream = js.get_stream(stream_name(queue)).await?;
            let Ok(mut found) = stream.get_consumer::<pull::Config>(consumer).await else {
                return Ok(None);
            };
            let info = found.info().await?;
            Ok(Some(info.num_pending + info.num_ack_pending as u64))
        }
        Kind::Redis => {
            let mut connection = redis().await?;
            let groups: redis::streams::StreamInfoGroupsReply =
                match connection.xinfo_groups(queue).await {
                    Ok(groups) => groups,
                    Err(_) => return Ok(None),
                };
            Ok(groups
                .groups
                .iter()
                .find(|g| g.name == consumer)
                // No lag (Redis cannot always tell) counts as not drained.
                .and_then(|g| g.lag.map(|lag| g.pending as u64 + lag as u64)))
        }
    }
}

/// [`unacked`] once it reaches 0, or after `limit`: acknowledgements sent without waiting
/// for the server (JetStream's) take a moment to land.
pub async fn settled(
    kind: Kind,
    queue: &str,
    consumer: &str,
    limit: Duration,
) -> Result<Option<u64>> {
    let deadline = Instant::now() + limit;
    loop {
        let left = unacked(kind, queue, consumer).await?;
        if left == Some(0) || Instant::now() >= deadline {
            return Ok(left);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Deletes `queue`'s stream.
pub async fn delete(kind: Kind, queue: &str) -> Result<()> {
    match kind {
        Kind::Nats => {
            let js = jetstream().await?;
            js.delete_stream(stream_name(queue))
                .await
                .with_context(|| format!("deleting the stream of `{queue}`"))?;
        }
        Kind::Redis => {
            let _: () = redis()
                .await?
                .del(queue)
                .await
                .with_context(|| format!("deleting `{queue}`"))?;
        }
    }
    Ok(())
}

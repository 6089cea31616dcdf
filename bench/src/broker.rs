//! RabbitMQ side of the benchmark: the bench's queues, pre-loading them, ceiling A (a bare
//! lapin consumer), ceiling AB (a hand-written RabbitMQ -> PostgreSQL pipeline), the
//! baseline (the first Golconde's one-message-at-a-time model) and the fixed-rate
//! publisher of the latency run.
//!
//! Depends on lapin and tokio-postgres. Key decision: everything here is the simplest
//! fast Rust that does the job, so a ceiling is what the broker or the database can do,
//! not what a slow client can do.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use crate::db::Columns;
use crate::report::Sample;
use crate::workload::{latency_body, Format, Workload};

pub const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

pub async fn connect() -> Result<Connection> {
    Connection::connect(URL, ConnectionProperties::default())
        .await
        .context("connecting to RabbitMQ at 127.0.0.1:5672 as guest")
}

pub async fn declare(channel: &Channel, queue: &str) -> Result<()> {
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .with_context(|| format!("declaring queue `{queue}`"))?;
    Ok(())
}

/// Messages ready in `queue` (not counting those delivered and not yet acknowledged).
pub async fn ready(channel: &Channel, queue: &str) -> Result<u32> {
    let options = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let q = channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .with_context(|| format!("checking queue `{queue}`"))?;
    Ok(q.message_count())
}

pub async fn delete(channel: &Channel, queue: &str) -> Result<()> {
    channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await
        .with_context(|| format!("deleting queue `{queue}`"))?;
    Ok(())
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// Publishes `bodies` persistent to `queue`, with publisher confirms, and fails on a
/// nack, so a run starts only once every message is safely queued.
pub async fn preload(
    connection: &Connection,
    queue: &str,
    bodies: impl Iterator<Item = Vec<u8>>,
) -> Result<()> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut pending = Vec::with_capacity(5000);
    for body in bodies {
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body,
                persistent(),
            )
            .await
            .with_context(|| format!("publishing to queue `{queue}`"))?;
        pending.push(confirm);
        if pending.len() == 5000 {
            settle(&mut pending, queue).await?;
        }
    }
    settle(&mut pending, queue).await?;
    channel.close(200, "loaded".into()).await.ok();
    Ok(())
}

async fn settle(pending: &mut Vec<lapin::PublisherConfirm>, queue: &str) -> Result<()> {
    for confirm in pending.drain(..) {
        let confirmation = confirm
            .await
            .with_context(|| format!("waiting for the broker to confirm queue `{queue}`"))?;
        if !confirmation.is_ack() {
            bail!("RabbitMQ refused a message published to queue `{queue}`");
        }
    }
    Ok(())
}

/// A channel with `prefetch` consuming `queue`, with manual acknowledgements.
async fn consume(
    connection: &Connection,
    queue: &str,
    prefetch: u16,
    tag: &str,
) -> Result<(lapin::Channel, lapin::Consumer)> {
    let channel = connection.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let consumer = channel
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("consuming queue `{queue}`"))?;
    Ok((channel, consumer))
}

/// Ceiling A: consumes `count` messages with `prefetch`, acknowledging each one
/// (`ack_every` = 1) or every `ack_every`-th cumulatively. Returns the elapsed time.
pub async fn ceiling(
    connection: &Connection,
    queue: &str,
    count: u64,
    prefetch: u16,
    ack_every: u64,
) -> Result<Duration> {
    let clock = Instant::now();
    let (channel, mut consumer) = consume(connection, queue, prefetch, "ceiling").await?;
    let mut seen = 0;
    while seen < count {
        let delivery = consumer
            .next()
            .await
            .with_context(|| format!("queue `{queue}` was cancelled after {seen} messages"))?
            .with_context(|| format!("consuming queue `{queue}`"))?;
        seen += 1;
        if ack_every == 1 {
            // Not awaited one by one: that would measure lapin's round trip to its I/O
            // thread, not the broker. The first poll queues the frame; a failed channel
            // shows in the next delivery or in the final check of the queue.
            let ack = channel.basic_ack(delivery.delivery_tag, BasicAckOptions::default());
            if let Some(Err(e)) = futures_lite::future::poll_once(ack).await {
                return Err(e).with_context(|| format!("acknowledging on queue `{queue}`"));
            }
        } else if seen % ack_every == 0 || seen == count {
            // Awaited: a cumulative ack must not overtake a later one.
            channel
                .basic_ack(delivery.delivery_tag, BasicAckOptions { multiple: true })
                .await
                .with_context(|| format!("acknowledging on queue `{queue}`"))?;
        }
    }
    let elapsed = clock.elapsed();
    channel.close(200, "done".into()).await.ok();
    Ok(elapsed)
}

/// Ceiling AB: a hand-written pipeline from RabbitMQ to PostgreSQL, written for this
/// workload alone, as ceilings NB and RB are for theirs. A reader takes what has arrived,
/// up to `batch` messages, with `prefetch`, and parses it into the rows of one UNNEST
/// upsert of ceiling B; a writer, at the same time, writes each batch and then
/// acknowledges it with one cumulative ack, as Golconde does. Returns the elapsed time.
pub async fn through(
    connection: &Connection,
    client: &tokio_postgres::Client,
    queue: &str,
    count: u64,
    prefetch: u16,
    batch: usize,
) -> Result<Duration> {
    let upsert = crate::db::prepare_upsert(client).await?;
    let clock = Instant::now();
    let (channel, mut consumer) = consume(connection, queue, prefetch, "through").await?;
    let mut read = 0u64;
    let next = async || {
        if read == count {
            return Ok(None);
        }
        let mut deliveries = Vec::with_capacity(batch);
        loop {
            let next = if deliveries.is_empty() {
                Some(consumer.next().await)
            } else {
                futures_lite::future::poll_once(consumer.next()).await
            };
            match next {
                Some(Some(delivery)) => {
                    deliveries.push(delivery.with_context(|| format!("consuming queue `{queue}`"))?)
                }
                Some(None) => bail!("queue `{queue}` was cancelled after {read} messages"),
                None => break,
            }
            if deliveries.len() == batch || read + deliveries.len() as u64 == count {
                break;
            }
        }
        read += deliveries.len() as u64;
        let rows = Columns::parse(deliveries.iter().map(|d| &d.data[..]))?;
        let last = deliveries.last().map(|d| d.delivery_tag);
        Ok(Some((rows, last)))
    };
    let ack = async |last: Option<u64>| {
        if let Some(tag) = last {
            channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await
                .with_context(|| format!("acknowledging on queue `{queue}`"))?;
        }
        Ok(())
    };
    crate::db::pipeline(client, &upsert, next, ack).await?;
    let elapsed = clock.elapsed();
    channel.close(200, "done".into()).await.ok();
    Ok(elapsed)
}

/// The baseline, the first Golconde's model: per message, parse it, run one autocommit
/// upsert, acknowledge it, then take the next. Returns the elapsed time.
pub async fn baseline(
    connection: &Connection,
    client: &tokio_postgres::Client,
    queue: &str,
    count: u64,
    prefetch: u16,
) -> Result<Duration> {
    let statement = client
        .prepare(
            "insert into users (id, name, email, score, updated_at)
             values ($1, $2, $3, $4, $5::text::timestamptz)
             on conflict (id) do update set name = excluded.name, email = excluded.email,
               score = excluded.score, updated_at = excluded.updated_at",
        )
        .await
        .context("preparing the baseline's upsert")?;
    let clock = Instant::now();
    let (channel, mut consumer) = consume(connection, queue, prefetch, "baseline").await?;
    for seen in 0..count {
        let delivery = consumer
            .next()
            .await
            .with_context(|| format!("queue `{queue}` was cancelled after {seen} messages"))?
            .with_context(|| format!("consuming queue `{queue}`"))?;
        let message: serde_json::Value = serde_json::from_slice(&delivery.data)
            .with_context(|| format!("parsing message {seen} of queue `{queue}`"))?;
        let data = &message["data"];
        let (Some(id), Some(name), Some(email), Some(score), Some(updated_at)) = (
            data["id"].as_i64(),
            data["name"].as_str(),
            data["email"].as_str(),
            data["score"].as_i64(),
            data["updated_at"].as_str(),
        ) else {
            bail!("message {seen} of queue `{queue}` lacks a column of table users");
        };
        client
            .execute(
                &statement,
                &[&id, &name, &email, &(score as i32), &updated_at],
            )
            .await
            .with_context(|| format!("upserting id {id} into table users"))?;
        channel
            .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
            .await
            .with_context(|| format!("acknowledging on queue `{queue}`"))?;
    }
    let elapsed = clock.elapsed();
    channel.close(200, "done".into()).await.ok();
    Ok(elapsed)
}

pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Publishes messages with distinct keys at `rate` per second for `duration`, each
/// carrying its publish time, in small bursts every millisecond. Returns how many.
pub async fn publish_at_rate(
    connection: &Connection,
    queue: &str,
    rate: f64,
    duration: Duration,
) -> Result<u64> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let total = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    let mut pending = Vec::new();
    let start = Instant::now();
    let mut sent = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while sent < total {
        tick.tick().await;
        let due = ((start.elapsed().as_secs_f64() * rate) as u64).min(total);
        while sent < due {
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    &latency_body(sent, now_us()),
                    persistent(),
                )
                .await
                .with_context(|| format!("publishing to queue `{queue}`"))?;
            pending.push(confirm);
            sent += 1;
        }
    }
    settle(&mut pending, queue).await?;
    channel.close(200, "published".into()).await.ok();
    Ok(total)
}

/// A latency message's row, as the bare database consumer reads it.
#[derive(serde::Deserialize)]
struct LatencyMessage {
    data: LatencyRow,
}

#[derive(serde::Deserialize)]
struct LatencyRow {
    id: i64,
    name: String,
    email: String,
    score: i32,
    updated_at: String,
    published_us: i64,
}

/// The most messages the bare database consumer puts in one statement.
const DATABASE_BATCH: usize = 1000;

/// What any queue-to-database path pays: the same fixed-rate publishing, consumed by a bare
/// lapin consumer that upserts whatever has arrived (up to [`DATABASE_BATCH`] messages) into
/// `users_latency` with one UNNEST statement, its own transaction, and acknowledges it
/// cumulatively once committed. Nothing of Golconde runs, so its latency beside the broker
/// alone's is the database's share. Returns how many messages it applied; their latencies
/// are read from the table, as Golconde's are.
pub async fn latency_into_database(
    connection: &Connection,
    queue: &str,
    rate: f64,
    duration: Duration,
    prefetch: u16,
    database: tokio_postgres::Client,
) -> Result<u64> {
    let total = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    let receiver = connect().await?;
    let (channel, mut consumer) = consume(&receiver, queue, prefetch, "latency-database").await?;
    let upsert = crate::db::prepare_latency_upsert(&database).await?;
    let name = queue.to_string();
    let receiving = tokio::spawn(async move {
        let cancelled = || format!("queue `{name}` was cancelled");
        let mut applied = 0;
        let mut batch = Vec::with_capacity(DATABASE_BATCH);
        while applied < total {
            batch.push(consumer.next().await.with_context(cancelled)??);
            while batch.len() < DATABASE_BATCH {
                match futures_lite::future::poll_once(consumer.next()).await {
                    Some(delivery) => batch.push(delivery.with_context(cancelled)??),
                    None => break,
                }
            }
            let mut rows = Vec::with_capacity(batch.len());
            for delivery in &batch {
                let message: LatencyMessage = serde_json::from_slice(&delivery.data)
                    .with_context(|| format!("reading a latency message of queue `{name}`"))?;
                rows.push(message.data);
            }
            let column =
                |pick: fn(&LatencyRow) -> &str| -> Vec<&str> { rows.iter().map(pick).collect() };
            database
                .execute(
                    &upsert,
                    &[
                        &rows.iter().map(|r| r.id).collect::<Vec<_>>(),
                        &column(|r| &r.name),
                        &column(|r| &r.email),
                        &rows.iter().map(|r| r.score).collect::<Vec<_>>(),
                        &column(|r| &r.updated_at),
                        &rows.iter().map(|r| r.published_us).collect::<Vec<_>>(),
                    ],
                )
                .await
                .context("upserting a batch of latency messages into table users_latency")?;
            let last = batch.last().expect("a batch starts with a delivery");
            channel
                .basic_ack(last.delivery_tag, BasicAckOptions { multiple: true })
                .await?;
            applied += batch.len() as u64;
            batch.clear();
        }
        channel.close(200, "done".into()).await.ok();
        receiver.close(200, "done".into()).await.ok();
        Ok::<_, anyhow::Error>(applied)
    });
    let published = publish_at_rate(connection, queue, rate, duration).await?;
    let applied = tokio::time::timeout(Duration::from_secs(60), receiving)
        .await
        .with_context(|| {
            format!("not every message of queue `{queue}` was applied within 60 s")
        })???;
    if applied != published {
        bail!("published {published} messages to queue `{queue}` but applied {applied}");
    }
    Ok(applied)
}

/// The bodies of `workload` written in `format`, in queue order.
pub fn bodies(workload: Workload, format: Format) -> impl Iterator<Item = Vec<u8>> {
    (0..workload.messages).map(move |i| workload.body_in(format, i))
}

/// The broker's own share of the latency: the same fixed-rate publishing, consumed by a
/// bare lapin consumer (acking cumulatively every 100) that notes when each message
/// arrives. Returns the publish-to-delivery latencies, in arrival order.
pub async fn latency(
    connection: &Connection,
    queue: &str,
    rate: f64,
    duration: Duration,
    prefetch: u16,
) -> Result<Vec<Sample>> {
    let total = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    // A connection of its own, as Golconde has: one lapin connection publishing and
    // consuming at once serialises both on its single I/O loop.
    let receiver = connect().await?;
    let (channel, mut consumer) = consume(&receiver, queue, prefetch, "latency").await?;
    let name = queue.to_string();
    let receiving = tokio::spawn(async move {
        let mut ms = Vec::with_capacity(total as usize);
        while (ms.len() as u64) < total {
            let delivery = consumer
                .next()
                .await
                .with_context(|| format!("queue `{name}` was cancelled"))?
                .with_context(|| format!("consuming queue `{name}`"))?;
            let arrived = now_us();
            let message: serde_json::Value = serde_json::from_slice(&delivery.data)?;
            let published = message["data"]["published_us"]
                .as_i64()
                .context("a latency message without published_us")?;
            ms.push(Sample {
                published_us: published,
                ms: (arrived - published) as f64 / 1000.0,
            });
            if ms.len() % 100 == 0 || ms.len() as u64 == total {
                channel
                    .basic_ack(delivery.delivery_tag, BasicAckOptions { multiple: true })
                    .await?;
            }
        }
        channel.close(200, "done".into()).await.ok();
        receiver.close(200, "done".into()).await.ok();
        Ok::<_, anyhow::Error>(ms)
    });
    let published = publish_at_rate(connection, queue, rate, duration).await?;
    let ms = tokio::time::timeout(Duration::from_secs(60), receiving)
        .await
        .with_context(|| format!("not every message of queue `{queue}` arrived within 60 s"))???;
    if ms.len() as u64 != published {
        bail!(
            "published {published} messages to queue `{queue}` but received {}",
            ms.len()
        );
    }
    Ok(ms)
}

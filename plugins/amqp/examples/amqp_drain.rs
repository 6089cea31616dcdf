//! Drain-rate benchmark: the plugin, called through its ABI as the host calls it, against
//! lapin used directly, with the same prefetch and acknowledgement pattern, in one run.
//!
//! Fills a durable queue with persistent 200-byte messages (through the plugin's confirmed
//! publish), then drains it four times, refilling in between:
//!
//! - lapin directly, acknowledging every delivery (`delivery.ack().await` in the consumer
//!   loop, the usual way to write it);
//! - the plugin: a host-side loop of `receive` and one `ack(tag, multiple = false)` per
//!   delivery;
//! - both again with a cumulative acknowledgement every 100 deliveries.
//!
//! ```text
//! cargo run --release -p golconde-amqp --example amqp_drain [-- MESSAGES [PREFETCH [each|every100|both]]]
//! ```
//!
//! Needs RabbitMQ on 127.0.0.1:5672 (guest/guest, or `AMQP_URL`). The queue is deleted at
//! the end.

use std::time::{Duration, Instant};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RArc, RSlice, RStr, RString},
};
use futures_lite::StreamExt;
use golconde_amqp::AmqpTransport;
use golconde_plugin_api::{
    abi::{Constructor, HostContext, TransportBox},
    log::{FfiLogSink, FfiLogSink_TO, LogLevel, LogRecord},
    sdk::transport_entry,
    AckMode, ConsumeOptions, Message,
};
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeleteOptions},
    types::FieldTable,
    Connection, ConnectionProperties,
};

const BODY_BYTES: usize = 200;
const PUBLISH_BATCH: usize = 1000;
const RECEIVE_MAX: u32 = 256;

#[derive(Clone, Copy, PartialEq)]
enum Ack {
    Each,
    Every100,
}

impl Ack {
    fn label(self) -> &'static str {
        match self {
            Ack::Each => "ack each",
            Ack::Every100 => "cumulative ack every 100",
        }
    }
}

#[derive(Clone)]
struct WarnSink;

impl FfiLogSink for WarnSink {
    fn max_level(&self) -> LogLevel {
        LogLevel::Warn
    }

    fn log(&self, record: &LogRecord<'_>) {
        eprintln!("[plugin {:?}] {}", record.level, record.message);
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let total: usize = args
        .next()
        .map_or(200_000, |a| a.parse().expect("MESSAGES"));
    let prefetch: u16 = args.next().map_or(1000, |a| a.parse().expect("PREFETCH"));
    let patterns: &[Ack] = match args.next().as_deref() {
        None | Some("both") => &[Ack::Each, Ack::Every100],
        Some("each") => &[Ack::Each],
        Some("every100") => &[Ack::Every100],
        Some(other) => panic!("unknown pattern {other}: each, every100 or both"),
    };
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_string());
    let queue = format!("golconde-amqp-drain-{}", std::process::id());

    let Constructor::Transport(construct) = transport_entry::<AmqpTransport>().constructor else {
        unreachable!("amqp is a transport");
    };
    let config = serde_json::json!({"url": url, "connection_name": "golconde drain benchmark"});
    let transport = construct(
        RStr::from_str(&config.to_string()),
        HostContext {
            instance: RString::from("bench"),
            log: FfiLogSink_TO::from_ptr(RArc::new(WarnSink), TD_Opaque),
        },
    )
    .into_result()
    .expect("plugin configuration");

    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let direct = runtime
        .block_on(Connection::connect_with_runtime(
            &url,
            ConnectionProperties::default().with_connection_name("lapin drain benchmark".into()),
            async_rs::Runtime::tokio_with_handle(runtime.handle().clone()),
        ))
        .expect("RabbitMQ");

    println!(
        "{total} persistent {BODY_BYTES}-byte messages, prefetch {prefetch}, plugin receive max {RECEIVE_MAX}"
    );
    for &ack in patterns {
        fill(&transport, &queue, total);
        let lapin_rate = runtime.block_on(drain_lapin(&direct, &queue, total, prefetch, ack));
        fill(&transport, &queue, total);
        let plugin_rate = drain_plugin(&transport, &queue, total, prefetch, ack);
        println!(
            "{:<26} lapin {:>9.0} msg/s   plugin {:>9.0} msg/s   plugin/lapin {:.3}",
            ack.label(),
            lapin_rate,
            plugin_rate,
            plugin_rate / lapin_rate
        );
    }

    runtime.block_on(async {
        let channel = direct.create_channel().await.expect("channel");
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .expect("queue delete");
        let _ = direct.close(200, "done".into()).await;
    });
}

/// Publishes `total` messages through the plugin and prints the confirmed rate.
fn fill(transport: &TransportBox, queue: &str, total: usize) {
    let body = vec![b'x'; BODY_BYTES];
    let batch: Vec<Message> = (0..PUBLISH_BATCH)
        .map(|_| Message::new(body.clone()))
        .collect();
    let started = Instant::now();
    let mut sent = 0;
    while sent < total {
        let n = PUBLISH_BATCH.min(total - sent);
        transport
            .publish(RStr::from_str(queue), RSlice::from_slice(&batch[..n]))
            .into_result()
            .expect("publish");
        sent += n;
    }
    let elapsed = started.elapsed();
    println!(
        "  filled: {total} confirmed in {:.2} s ({:.0} msg/s, batches of {PUBLISH_BATCH})",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
}

/// The host's side: receive in batches, acknowledge as `ack` says. Timed from the first
/// delivery to the last acknowledgement.
fn drain_plugin(
    transport: &TransportBox,
    queue: &str,
    total: usize,
    prefetch: u16,
    ack: Ack,
) -> f64 {
    let consumer = transport
        .consume(
            RStr::from_str(queue),
            ConsumeOptions {
                prefetch: prefetch as u32,
                ack_mode: AckMode::Cumulative,
            },
        )
        .into_result()
        .expect("consume");
    let mut received = 0;
    let mut started = None;
    let mut last = 0;
    while received < total {
        let batch = consumer
            .receive(RECEIVE_MAX, 5_000)
            .into_result()
            .expect("receive");
        assert!(!batch.is_empty(), "the queue ran dry at {received}");
        started.get_or_insert_with(Instant::now);
        for delivery in batch.iter() {
            received += 1;
            last = delivery.tag;
            match ack {
                Ack::Each => consumer
                    .ack(delivery.tag, false)
                    .into_result()
                    .expect("ack"),
                Ack::Every100 if received % 100 == 0 => {
                    consumer.ack(delivery.tag, true).into_result().expect("ack")
                }
                Ack::Every100 => {}
            }
        }
    }
    if ack == Ack::Every100 && received % 100 != 0 {
        consumer.ack(last, true).into_result().expect("ack");
    }
    let elapsed = started.expect("received something").elapsed();
    consumer.close().into_result().expect("close");
    total as f64 / elapsed.as_secs_f64()
}

/// lapin used directly, the way its examples consume.
async fn drain_lapin(
    connection: &Connection,
    queue: &str,
    total: usize,
    prefetch: u16,
    ack: Ack,
) -> f64 {
    let channel = connection.create_channel().await.expect("channel");
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "lapin-bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut received = 0;
    let mut started = None;
    let mut last = None;
    while received < total {
        let delivery = tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await
            .expect("the queue ran dry")
            .expect("consumer ended")
            .expect("delivery");
        started.get_or_insert_with(Instant::now);
        received += 1;
        match ack {
            Ack::Each => {
                delivery.ack(BasicAckOptions::default()).await.expect("ack");
            }
            Ack::Every100 if received % 100 == 0 => {
                delivery
                    .ack(BasicAckOptions { multiple: true })
                    .await
                    .expect("ack");
                last = None;
            }
            Ack::Every100 => last = Some(delivery),
        }
    }
    if let Some(delivery) = last {
        delivery
            .ack(BasicAckOptions { multiple: true })
            .await
            .expect("ack");
    }
    let elapsed = started.expect("received something").elapsed();
    let _ = channel.close(200, "done".into()).await;
    total as f64 / elapsed.as_secs_f64()
}

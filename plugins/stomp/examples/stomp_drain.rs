//! Drain-rate benchmark: how fast a host-side loop empties a queue of persistent messages
//! through the `stomp` plugin, against the same broker over AMQP with lapin used directly,
//! with the same prefetch and the same acknowledgement pattern, in the same run.
//!
//! ```text
//! cargo run --release -p golconde-stomp --example drain -- [MESSAGES] [PREFETCH]
//! ```
//!
//! Defaults: 200,000 messages of 200 bytes, prefetch 1000, against the local RabbitMQ
//! (STOMP on 127.0.0.1:61613, AMQP on 5672, guest/guest). Each run fills a fresh durable
//! queue over AMQP (publisher confirms), drains it, checks it is empty, and deletes it.
//! Two acknowledgement patterns: cumulative every 100 messages (what pipelines do) and
//! one acknowledgement per message (STOMP `ack:client-individual`, AMQP `multiple =
//! false`). A drain is timed from the subscription to the last acknowledgement sent.
//!
//! A third figure, "bare STOMP" (cumulative pattern only), drains over a bare socket with
//! the plugin's codec and nothing else (no tasks, no channel, no tags, no host calls):
//! the broker's STOMP ceiling, which tells the plugin's own overhead apart from that of
//! the broker's STOMP adapter. CPU seconds of this process and of the broker
//! (`beam.smp`, read from `/proc`) are printed with each figure.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use golconde_plugin_api::{sdk::parse_config, AckMode, ConsumeOptions, Consumer, Transport};
use golconde_stomp::{
    codec::{Item, StompCodec},
    frame::{Command, Frame},
    Config, Stomp,
};
use lapin::{
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
        ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
    },
    types::FieldTable,
    BasicProperties, Channel, Connection,
};

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const STOMP: &str = "127.0.0.1:61613";
const BODY_BYTES: usize = 200;
const CUMULATIVE_EVERY: usize = 100;

#[derive(Clone, Copy, PartialEq)]
enum Pattern {
    EveryHundred,
    EachMessage,
}

impl Pattern {
    fn name(self) -> &'static str {
        match self {
            Pattern::EveryHundred => "cumulative ack every 100",
            Pattern::EachMessage => "ack per message",
        }
    }
}

struct Amqp {
    runtime: tokio::runtime::Runtime,
    connection: Connection,
    channel: Channel,
}

impl Amqp {
    fn connect() -> Amqp {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (connection, channel) = runtime.block_on(async {
            let connection = Connection::connect(AMQP, Default::default())
                .await
                .expect("AMQP connection");
            let channel = connection.create_channel().await.expect("channel");
            (connection, channel)
        });
        Amqp {
            runtime,
            connection,
            channel,
        }
    }

    /// A fresh durable queue holding `n` persistent messages, confirmed by the broker.
    fn fill(&self, n: usize) -> String {
        let queue = format!("golconde-stomp-drain-{}-{}", std::process::id(), unique());
        self.runtime.block_on(async {
            let channel = self.connection.create_channel().await.expect("channel");
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .expect("confirms");
            channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .expect("queue");
            let body = vec![b'x'; BODY_BYTES];
            let mut confirms = Vec::with_capacity(10_000);
            for i in 0..n {
                let confirm = channel
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        &body,
                        BasicProperties::default()
                            .with_delivery_mode(2)
                            .with_message_id(format!("m-{i}").into()),
                    )
                    .await
                    .expect("publish");
                confirms.push(confirm);
                if confirms.len() == 10_000 {
                    for confirm in confirms.drain(..) {
                        confirm.await.expect("confirmed");
                    }
                }
            }
            for confirm in confirms {
                confirm.await.expect("confirmed");
            }
            let _ = channel.close(200, "filled".into()).await;
        });
        queue
    }

    fn count(&self, queue: &str) -> u32 {
        self.runtime.block_on(async {
            self.channel
                .queue_declare(
                    queue.into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .expect("queue exists")
                .message_count()
        })
    }

    fn delete(&self, queue: &str) {
        self.runtime.block_on(async {
            let _ = self
                .channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await;
        });
    }

    /// Drains `queue` with lapin directly; returns the time taken.
    fn drain(&self, queue: &str, n: usize, prefetch: u16, pattern: Pattern) -> Duration {
        self.runtime.block_on(async {
            let channel = self.connection.create_channel().await.expect("channel");
            channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await
                .expect("qos");
            let start = Instant::now();
            let mut consumer = channel
                .basic_consume(
                    queue.into(),
                    "drain".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("consume");
            let mut seen = 0;
            while seen < n {
                let delivery = consumer
                    .next()
                    .await
                    .expect("consumer open")
                    .expect("delivery");
                seen += 1;
                let multiple = match pattern {
                    Pattern::EachMessage => false,
                    Pattern::EveryHundred if seen % CUMULATIVE_EVERY == 0 || seen == n => true,
                    Pattern::EveryHundred => continue,
                };
                delivery
                    .acker
                    .ack(BasicAckOptions { multiple })
                    .await
                    .expect("ack");
            }
            let elapsed = start.elapsed();
            let _ = channel.close(200, "drained".into()).await;
            elapsed
        })
    }
}

impl Amqp {
    /// Drains `queue` over a bare STOMP connection, acknowledging cumulatively every 100;
    /// returns the time taken.
    fn drain_bare_stomp(&self, queue: &str, n: usize, prefetch: u16) -> Duration {
        self.runtime.block_on(async {
            let stream = tokio::net::TcpStream::connect(STOMP).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let mut framed = tokio_util::codec::Framed::new(stream, StompCodec::new(1 << 20, 1024));
            let connect = Frame::new(Command::Connect)
                .with_header("accept-version", "1.2")
                .with_header("host", "/")
                .with_header("login", "guest")
                .with_header("passcode", "guest");
            framed.send(Item::Frame(connect)).await.expect("CONNECT");
            while !matches!(framed.next().await, Some(Ok(Item::Frame(f))) if f.command == Command::Connected)
            {}
            let start = Instant::now();
            let subscribe = Frame::new(Command::Subscribe)
                .with_header("id", "0")
                .with_header("destination", format!("/queue/{queue}"))
                .with_header("ack", "client")
                .with_header("prefetch-count", prefetch.to_string());
            framed.send(Item::Frame(subscribe)).await.expect("SUBSCRIBE");
            let mut seen = 0;
            while seen < n {
                let Some(Ok(Item::Frame(message))) = framed.next().await else {
                    continue;
                };
                seen += 1;
                if seen % CUMULATIVE_EVERY == 0 || seen == n {
                    let id = message.header("ack").expect("ack header").to_string();
                    let ack = Item::Frame(Frame::new(Command::Ack).with_header("id", id));
                    framed.send(ack).await.expect("ACK");
                }
            }
            let elapsed = start.elapsed();
            let disconnect = Frame::new(Command::Disconnect).with_header("receipt", "bye");
            framed.send(Item::Frame(disconnect)).await.expect("DISCONNECT");
            while !matches!(framed.next().await, Some(Ok(Item::Frame(f))) if f.command == Command::Receipt)
            {}
            elapsed
        })
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Drains `queue` through the plugin with the host's calls; returns the time taken.
fn drain_stomp(queue: &str, n: usize, prefetch: u32, pattern: Pattern) -> Duration {
    let config = format!(r#"{{"address": "{STOMP}", "login": "guest", "passcode": "guest"}}"#);
    let transport =
        Stomp::from_config(parse_config::<Config>(&config).expect("config")).expect("transport");
    let ack_mode = match pattern {
        Pattern::EveryHundred => AckMode::Cumulative,
        Pattern::EachMessage => AckMode::Individual,
    };
    let start = Instant::now();
    let consumer = transport
        .consume(queue, ConsumeOptions { prefetch, ack_mode })
        .expect("consumer");
    let mut seen = 0;
    let mut since_ack = 0;
    while seen < n {
        let batch = consumer
            .receive(CUMULATIVE_EVERY, Duration::from_secs(5))
            .expect("receive");
        assert!(!batch.is_empty(), "stalled after {seen} messages");
        for delivery in &batch {
            seen += 1;
            since_ack += 1;
            match pattern {
                Pattern::EachMessage => consumer.ack(delivery.tag, false).expect("ack"),
                Pattern::EveryHundred if since_ack >= CUMULATIVE_EVERY || seen == n => {
                    consumer.ack(delivery.tag, true).expect("ack");
                    since_ack = 0;
                }
                Pattern::EveryHundred => {}
            }
        }
    }
    let elapsed = start.elapsed();
    // DISCONNECT's receipt: every ACK above has taken effect.
    consumer.close().expect("close");
    elapsed
}

/// CPU seconds used so far by a process (Linux `/proc`), to see who the bottleneck is.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn broker_pid() -> Option<String> {
    let out = std::process::Command::new("pgrep")
        .arg("beam.smp")
        .output()
        .ok()?;
    String::from_utf8(out.stdout)
        .ok()?
        .split_whitespace()
        .next()
        .map(str::to_string)
}

/// Runs `drain`, returning its time and the CPU seconds this process and the broker used.
fn measured(drain: impl FnOnce() -> Duration) -> (Duration, f64, f64) {
    let broker = broker_pid();
    let cpu = |pid: Option<&str>| pid.and_then(cpu_seconds).unwrap_or(0.0);
    let (me0, b0) = (cpu(Some("self")), cpu(broker.as_deref()));
    let elapsed = drain();
    let (me1, b1) = (cpu(Some("self")), cpu(broker.as_deref()));
    (elapsed, me1 - me0, b1 - b0)
}

fn rate(n: usize, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64()
}

/// One drain's figures.
struct Run {
    what: &'static str,
    elapsed: Duration,
    client_cpu: f64,
    broker_cpu: f64,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args
        .next()
        .map_or(200_000, |a| a.parse().expect("MESSAGES"));
    let prefetch: u16 = args.next().map_or(1000, |a| a.parse().expect("PREFETCH"));
    println!(
        "draining {n} persistent {BODY_BYTES}-byte messages, prefetch {prefetch}, host loop \
         receiving up to {CUMULATIVE_EVERY} at a time"
    );
    let amqp = Amqp::connect();
    for pattern in [Pattern::EveryHundred, Pattern::EachMessage] {
        let mut runs = Vec::new();
        let mut run = |what: &'static str, drain: &dyn Fn(&str) -> Duration| {
            let queue = amqp.fill(n);
            let (elapsed, client_cpu, broker_cpu) = measured(|| drain(&queue));
            assert_eq!(amqp.count(&queue), 0, "{what} left messages behind");
            amqp.delete(&queue);
            runs.push(Run {
                what,
                elapsed,
                client_cpu,
                broker_cpu,
            });
        };
        run("STOMP plugin", &|q| {
            drain_stomp(q, n, prefetch as u32, pattern)
        });
        run("AMQP lapin", &|q| amqp.drain(q, n, prefetch, pattern));
        if pattern == Pattern::EveryHundred {
            run("bare STOMP", &|q| amqp.drain_bare_stomp(q, n, prefetch));
        }
        println!("{}:", pattern.name());
        for r in &runs {
            println!(
                "  {:<13} {:>7.0} msg/s   CPU s client {:>4.1} broker {:>4.1}",
                r.what,
                rate(n, r.elapsed),
                r.client_cpu,
                r.broker_cpu
            );
        }
        let plugin = rate(n, runs[0].elapsed);
        println!("  plugin/AMQP {:.2}", plugin / rate(n, runs[1].elapsed));
        if let Some(bare) = runs.get(2) {
            println!("  plugin/bare STOMP {:.2}", plugin / rate(n, bare.elapsed));
        }
    }
}

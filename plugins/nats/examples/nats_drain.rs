//! Throughput and CPU benchmark: how fast the `nats` plugin publishes a batch of persistent
//! messages to JetStream and drains it again, as a pipeline does (cumulative
//! acknowledgement every 100 messages), with the CPU this process and the server used.
//!
//! ```text
//! cargo run -p golconde-nats --example nats_drain -- [MESSAGES] [PREFETCH] [RETENTION]
//! ```
//!
//! Defaults: 50,000 messages of 200 bytes, prefetch 1000, retention `workqueue` (explicit
//! acknowledgement, one per message) against the local nats-server on 4222; `limits`
//! measures cumulative acknowledgement (ack policy `all`). The run's stream is deleted at
//! the end. CPU seconds come from `/proc` (this process, and `nats-server` found by name).

use std::time::{Duration, Instant};

use golconde_nats::{Config, Nats};
use golconde_plugin_api::{
    sdk::parse_config, AckMode, ConsumeOptions, Consumer, Message, Transport,
};

const URL: &str = "nats://127.0.0.1:4222";
const BODY_BYTES: usize = 200;
const CUMULATIVE_EVERY: usize = 100;

/// CPU seconds used so far by process `pid` (Linux `/proc`).
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn server_pid() -> Option<String> {
    let out = std::process::Command::new("pgrep")
        .args(["-o", "nats-server"])
        .output()
        .ok()?;
    Some(String::from_utf8(out.stdout).ok()?.trim().to_string()).filter(|p| !p.is_empty())
}

/// Runs `work`, printing its time and the CPU this process and the server used.
fn measure(what: &str, n: usize, work: impl FnOnce()) {
    let server = server_pid();
    let (me0, server0) = (cpu_seconds("self"), server.as_deref().and_then(cpu_seconds));
    let started = Instant::now();
    work();
    let elapsed = started.elapsed();
    let me = cpu_seconds("self").zip(me0).map(|(b, a)| b - a);
    let server = server
        .as_deref()
        .and_then(cpu_seconds)
        .zip(server0)
        .map(|(b, a)| b - a);
    println!(
        "{what}: {n} messages in {elapsed:.2?} ({:.0}/s); CPU: plugin {} µs/message, server {} \
         µs/message",
        n as f64 / elapsed.as_secs_f64(),
        me.map_or("?".into(), |s| format!("{:.1}", s * 1e6 / n as f64)),
        server.map_or("?".into(), |s| format!("{:.1}", s * 1e6 / n as f64)),
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let prefetch: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let retention = args.next().unwrap_or_else(|| "workqueue".into());
    let subject = format!("golconde-nats-drain.{}", std::process::id());
    let config = serde_json::json!({ "url": URL, "retention": retention }).to_string();
    let transport = Nats::from_config(parse_config::<Config>(&config).expect("config"), None)
        .expect("transport");

    let body = vec![b'x'; BODY_BYTES];
    let messages: Vec<Message> = (0..n)
        .map(|i| Message::new(body.clone()).with_header("message-id", format!("m-{i}")))
        .collect();
    measure("publish, batches of 1000", n, || {
        for chunk in messages.chunks(1000) {
            transport.publish(&subject, chunk).expect("publish");
        }
    });

    let consumer = transport
        .consume_as(
            &subject,
            ConsumeOptions {
                prefetch,
                ack_mode: AckMode::Cumulative,
            },
            "drain",
        )
        .expect("consumer");
    measure(
        &format!("drain, prefetch {prefetch}, {retention}, ack every {CUMULATIVE_EVERY}"),
        n,
        || {
            let mut taken = 0;
            let mut unacked = 0;
            while taken < n {
                let got = consumer
                    .receive(CUMULATIVE_EVERY, Duration::from_secs(5))
                    .expect("receive");
                let Some(last) = got.last() else {
                    panic!("only {taken} of {n} drained");
                };
                taken += got.len();
                unacked += got.len();
                if unacked >= CUMULATIVE_EVERY || taken == n {
                    consumer.ack(last.tag, true).expect("ack");
                    unacked = 0;
                }
            }
        },
    );
    consumer.close().expect("close");

    // Clean up the run's stream through JetStream's API.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        if let Ok(client) = async_nats::connect(URL).await {
            let js = async_nats::jetstream::new(client);
            let stream = subject.replace('.', "_");
            let _ = js.delete_stream(&stream).await;
        }
    });
}

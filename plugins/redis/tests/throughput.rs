//! What a message costs this process, publishing and consuming (not the server): run with
//! `cargo test -p golconde-redis --test throughput -- --ignored --nocapture`. Not a
//! check, a measurement; ignored so the suite stays fast.

mod common;

use std::time::{Duration, Instant};

use common::*;
use golconde_plugin_api::{AckMode, Consumer, Message, Transport};

/// User plus system CPU time of this process so far.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

#[test]
#[ignore]
fn cpu_per_message() {
    const N: usize = 100_000;
    const BATCH: usize = 1000;
    let stream = Stream::new("throughput");
    let transport = transport("");
    let body = vec![b'x'; 200];
    let batches: Vec<Vec<Message>> = (0..N / BATCH)
        .map(|b| {
            (0..BATCH)
                .map(|i| {
                    Message::new(body.clone())
                        .with_header("message-id", format!("m-{}", b * BATCH + i))
                        .with_header("content-type", "application/json")
                })
                .collect()
        })
        .collect();
    let (cpu0, wall0) = (cpu(), Instant::now());
    for batch in &batches {
        transport.publish(&stream.key, batch).expect("published");
    }
    let (cpu1, wall1) = (cpu(), Instant::now());
    let consumer = transport
        .consume(&stream.key, options(BATCH as u32, AckMode::Cumulative))
        .expect("consumer");
    let mut got = 0;
    while got < N {
        let batch = consumer
            .receive(BATCH, Duration::from_secs(1))
            .expect("receive");
        got += batch.len();
        if let Some(last) = batch.last() {
            consumer.ack(last.tag, true).expect("ack");
        }
    }
    let (cpu2, wall2) = (cpu(), Instant::now());
    consumer.close().unwrap();
    let per = |d: Duration| d.as_secs_f64() * 1e6 / N as f64;
    println!(
        "{N} messages of 200 bytes and 2 headers, batches of {BATCH}: publish {:.2} µs CPU \
         ({:.2} µs wall) per message, consume+ack {:.2} µs CPU ({:.2} µs wall) per message",
        per(cpu1 - cpu0),
        per(wall1 - wall0),
        per(cpu2 - cpu1),
        per(wall2 - wall1)
    );
}

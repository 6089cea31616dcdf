//! A consumer's connection stays up while deliveries stream in for longer than lapin's
//! heartbeat timeout. The broker sends no heartbeats while it is sending deliveries, and the
//! deliveries go past lapin (`src/tap.rs`), so lapin has to be told the connection is alive.

mod common;

use std::{
    thread,
    time::{Duration, Instant},
};

use common::*;
use golconde_amqp::generation_of;

#[test]
fn a_steady_stream_longer_than_the_heartbeat_timeout_keeps_the_connection() {
    let queue = TestQueue::new("heartbeat");
    let consuming = build(&serde_json::json!({
        "url": URL,
        "connection_name": unique("heartbeat"),
        // lapin declares a connection dead after about twice this without reading a thing.
        "heartbeat_s": 1,
        "reconnect_initial_ms": 50,
    }))
    .expect("a valid configuration");
    let consumer = consume(&consuming, &queue.name, 100);

    let name = queue.name.clone();
    let publishing = thread::spawn(move || {
        let transport = transport();
        let started = Instant::now();
        let mut sent = 0;
        // A message every 20 ms for 5 s: the broker is never idle long enough to send a
        // heartbeat of its own.
        while started.elapsed() < Duration::from_secs(5) {
            publish(&transport, &name, &numbered("h", sent..sent + 1));
            sent += 1;
            thread::sleep(Duration::from_millis(20));
        }
        sent
    });

    let mut received = Vec::new();
    while !publishing.is_finished() {
        let batch = consumer.receive(100, 100).into_result().expect("receive");
        if let Some(last) = batch.last() {
            consumer.ack(last.tag, true).into_result().unwrap();
        }
        received.extend(batch);
    }
    let sent = publishing.join().unwrap();
    let rest = receive_exactly(&consumer, sent - received.len());
    consumer
        .ack(rest.last().map_or(0, |d| d.tag), true)
        .into_result()
        .ok();
    received.extend(rest);

    assert!(sent > 100, "only {sent} published");
    assert_eq!(
        received.iter().map(body).collect::<Vec<_>>(),
        numbered("h", 0..sent)
            .iter()
            .map(|m| String::from_utf8(m.body.to_vec()).unwrap())
            .collect::<Vec<_>>()
    );
    assert!(
        received
            .iter()
            .all(|d| generation_of(d.tag) == 1 && !d.redelivered),
        "the consumer reconnected on the way"
    );
    consumer.close().into_result().unwrap();
}

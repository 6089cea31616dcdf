//! While the host is busy, the consumer's reader lets the broker's frames gather in the
//! socket (raising its receive low-water mark for a millisecond) instead of waking for each.
//! Whatever arrives during such a nap must still be read as soon as it ends, even when
//! nothing follows it: with heart-beats off, nothing else would wake the reader.

mod common;

use std::{
    thread,
    time::{Duration, Instant},
};

use common::*;
use golconde_plugin_api::{AckMode, Consumer, Transport};

#[test]
fn what_arrives_while_a_busy_host_naps_the_reader_still_comes_at_once() {
    const N: usize = 400;
    let queue = Queue::new("nap");
    let consuming = transport(r#""heartbeat_ms": [0, 0]"#);
    let consumer = consuming
        .consume(&queue.name, options(1000, AckMode::Cumulative))
        .expect("consumer");

    // A trickle, one message every 2 ms, so that messages keep arriving while the reader
    // naps, and the last ones arrive during a nap with nothing after them.
    let name = queue.name.clone();
    let publishing = thread::spawn(move || {
        let transport = transport(r#""heartbeat_ms": [0, 0]"#);
        for i in 0..N {
            transport
                .publish(&name, &[message(&format!("n-{i}"), b"x")])
                .expect("published");
            thread::sleep(Duration::from_millis(2));
        }
        Instant::now()
    });

    // A busy host: a few at a time, with work in between, so batches wait for it and the
    // reader naps.
    let mut got = Vec::new();
    let mut done = None;
    while got.len() < N {
        if done.is_none() && publishing.is_finished() {
            done = Some(Instant::now());
        }
        if let Some(done) = done {
            assert!(
                done.elapsed() < Duration::from_secs(5),
                "{} of {N} deliveries, and nothing more came after publishing ended",
                got.len()
            );
        }
        let batch = consumer
            .receive(3, Duration::from_millis(100))
            .expect("receive");
        if let Some(last) = batch.last() {
            consumer.ack(last.tag, true).expect("ack");
        }
        got.extend(batch);
        thread::sleep(Duration::from_millis(3));
    }
    publishing.join().unwrap();
    let ids: Vec<String> = got.iter().map(id).collect();
    let expected: Vec<String> = (0..N).map(|i| format!("n-{i}")).collect();
    assert_eq!(ids, expected);
    consumer.close().expect("close");
    queue.assert_ready(0);
}

//! While the host is busy, the consumer's reader lets the broker's frames gather in the
//! socket (raising its receive low-water mark for a millisecond) instead of waking for each
//! few. Whatever arrives during such a nap must still be read as soon as it ends, even when
//! nothing follows it: the broker's heartbeats are a minute apart here.

mod common;

use std::{
    thread,
    time::{Duration, Instant},
};

use common::*;

#[test]
fn what_arrives_while_a_busy_host_naps_the_reader_still_comes_at_once() {
    const N: usize = 400;
    let queue = TestQueue::new("nap");
    let consuming = transport();
    let consumer = consume(&consuming, &queue.name, 1000);

    // A trickle, one message every 2 ms, so that messages keep arriving while the reader
    // naps, and the last ones arrive during a nap with nothing after them.
    let name = queue.name.clone();
    let publishing = thread::spawn(move || {
        let transport = transport();
        for i in 0..N {
            publish(&transport, &name, &numbered("n", i..i + 1));
            thread::sleep(Duration::from_millis(2));
        }
    });

    // A busy host: a few at a time, with work in between, so deliveries wait for it and the
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
        let batch = consumer.receive(3, 100).into_result().expect("receive");
        if let Some(last) = batch.last() {
            consumer.ack(last.tag, true).into_result().unwrap();
        }
        got.extend(batch);
        thread::sleep(Duration::from_millis(3));
    }
    publishing.join().unwrap();
    let bodies: Vec<String> = got.iter().map(body).collect();
    let expected: Vec<String> = (0..N).map(|i| format!("n-{i}")).collect();
    assert_eq!(bodies, expected);
    consumer.close().into_result().unwrap();
    assert_eq!(broker().ready(&queue.name), Some(0));
}

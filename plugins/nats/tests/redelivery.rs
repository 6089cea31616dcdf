//! What comes back, and in which order: deliveries of a consumer dropped without `close`
//! (as in a crash) come back after `ack_wait`, before anything newer, under both ack
//! policies; `nack` gives back with or without redelivery.

mod common;

use std::time::{Duration, Instant};

use common::*;
use golconde_plugin_api::{Consumer, Transport};

/// A consumer takes 10 of 20 messages, acknowledges 3 and disappears without `close`;
/// the next one gets the other 7 (flagged redelivered) and then the 10 it never saw, in
/// order, and nothing twice.
fn crash_with_deliveries_in_flight(retention: &str) {
    let queue = Queue::new(&format!("crash-{retention}"));
    let transport = transport(&format!(
        r#""ack_wait_ms": 1000, "retention": "{retention}""#
    ));
    fill(&transport, &queue.name, "c", 0..20);

    let first = transport
        .consume_as(&queue.name, options(10), "crash")
        .expect("consumer");
    let got = receive_n(&first, 10, Duration::from_secs(10));
    assert_eq!(ids(&got), names("c", 0..10));
    first.ack(got[2].tag, true).expect("ack");
    // Let the acknowledgement reach the server, then vanish as a crashed process would.
    std::thread::sleep(Duration::from_millis(200));
    drop(first);

    let started = Instant::now();
    let second = transport
        .consume_as(&queue.name, options(20), "crash")
        .expect("consumer");
    let got = receive_n(&second, 17, Duration::from_secs(15));
    let waited = started.elapsed();
    assert_eq!(
        ids(&got),
        names("c", 3..20),
        "the crashed consumer's deliveries first, then the rest, in order"
    );
    // The first consumer had also pulled a few more after its acknowledgement (the prefetch
    // left room): those come back flagged too, and the rest are new.
    let flagged = got.iter().take_while(|d| d.redelivered).count();
    assert!(flagged >= 7, "3..9 were delivered before");
    assert!(
        got[flagged..].iter().all(|d| !d.redelivered) && flagged < got.len(),
        "the flagged ones first, then messages never delivered: {:?}",
        got.iter().map(|d| d.redelivered).collect::<Vec<_>>()
    );
    assert!(
        waited >= Duration::from_millis(800),
        "they came back before `ack_wait` ran out ({waited:?})"
    );
    second
        .ack(got.last().expect("deliveries").tag, true)
        .expect("ack");
    second.close().expect("close");

    let third = transport
        .consume_as(&queue.name, options(10), "crash")
        .expect("consumer");
    assert_nothing(&third, Duration::from_millis(1500));
    third.close().expect("close");
    println!("{retention}: the crashed consumer's deliveries came back after {waited:?}");
}

#[test]
fn a_crashed_consumers_deliveries_come_back_first_with_explicit_acks() {
    // A work queue: JetStream requires ack policy "explicit".
    crash_with_deliveries_in_flight("workqueue");
}

#[test]
fn a_crashed_consumers_deliveries_come_back_first_with_cumulative_acks() {
    // ack policy "all": acknowledging a newer message first would cover the lost ones.
    crash_with_deliveries_in_flight("limits");
}

#[test]
fn nack_gives_back_with_or_without_redelivery() {
    let queue = Queue::new("nack");
    let transport = transport("");
    fill(&transport, &queue.name, "n", 0..5);
    let consumer = transport
        .consume_as(&queue.name, options(10), "nack")
        .expect("consumer");
    let got = receive_n(&consumer, 5, Duration::from_secs(10));
    assert_eq!(ids(&got), names("n", 0..5));

    // The first two back to the queue, the third dropped.
    consumer.nack(got[1].tag, true, true).expect("nack requeue");
    consumer.nack(got[2].tag, false, false).expect("nack drop");
    let again = receive_n(&consumer, 2, Duration::from_secs(10));
    assert_eq!(ids(&again), names("n", 0..2));
    assert!(again.iter().all(|d| d.redelivered));
    assert!(again[0].tag > got[4].tag, "tags are never reused");

    // A settled tag cannot be settled again; a tag never handed out is refused.
    assert!(consumer.ack(got[2].tag, false).is_err());
    assert!(consumer.ack(9999, true).is_err());

    consumer.ack(got[4].tag, true).expect("ack");
    consumer.ack(again[1].tag, true).expect("ack");
    assert_nothing(&consumer, Duration::from_millis(500));
    consumer.close().expect("close");
    assert_eq!(queue.side.stored(&queue.name), 0, "everything settled");
}

#[test]
fn closing_gives_back_at_once_in_order() {
    let queue = Queue::new("close");
    let transport = transport(r#""ack_wait_ms": 30000"#);
    fill(&transport, &queue.name, "k", 0..6);
    let first = transport
        .consume_as(&queue.name, options(4), "close")
        .expect("consumer");
    // Two handed over, two more waiting inside the consumer (prefetch 4).
    let got = receive_n(&first, 2, Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(5);
    while first.waiting() < 2 {
        assert!(Instant::now() < deadline, "the consumer did not prefetch");
        std::thread::sleep(Duration::from_millis(20));
    }
    first.ack(got[0].tag, true).expect("ack");
    first.close().expect("close");

    let started = Instant::now();
    let second = transport
        .consume_as(&queue.name, options(10), "close")
        .expect("consumer");
    let got = receive_n(&second, 5, Duration::from_secs(5));
    assert_eq!(ids(&got), names("k", 1..6));
    assert!(got[..3].iter().all(|d| d.redelivered));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "given back, not waited for (`ack_wait` is 30 s)"
    );
    second.ack(got[4].tag, true).expect("ack");
    second.close().expect("close");
}

#[test]
fn a_slow_batch_is_not_redelivered_behind_its_back() {
    let queue = Queue::new("slow");
    let transport = transport(r#""ack_wait_ms": 600"#);
    fill(&transport, &queue.name, "w", 0..3);
    let consumer = transport
        .consume_as(&queue.name, options(10), "slow")
        .expect("consumer");
    let got = receive_n(&consumer, 3, Duration::from_secs(10));
    // Five times `ack_wait` without an acknowledgement: the consumer keeps them alive.
    std::thread::sleep(Duration::from_secs(3));
    let info = queue
        .side
        .consumer_info(&queue.stream(), "slow")
        .expect("consumer");
    assert_eq!(info["num_redelivered"], 0, "{info}");
    assert_eq!(
        info["delivered"]["consumer_seq"], 3,
        "delivered once each: {info}"
    );
    assert_nothing(&consumer, Duration::from_millis(200));
    consumer.ack(got[2].tag, true).expect("ack after the wait");
    consumer.close().expect("close");
    assert_eq!(
        queue.side.stored(&queue.name),
        0,
        "acknowledged, so removed"
    );
}

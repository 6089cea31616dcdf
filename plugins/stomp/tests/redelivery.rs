//! Messages that were handed out but not acknowledged come back, flagged as redelivered:
//! after a NACK with requeue, and after the consumer died without acknowledging.

mod common;

use std::time::Duration;

use common::*;
use golconde_plugin_api::{AckMode, Consumer, Transport};

#[test]
fn a_nack_with_requeue_brings_the_message_back_redelivered() {
    let queue = Queue::new("nack");
    let transport = transport("");
    fill(&transport, &queue.name, "n", 1);
    let consumer = transport
        .consume(&queue.name, options(10, AckMode::Cumulative))
        .expect("consumer");
    let first = receive_n(&consumer, 1, Duration::from_secs(10));
    assert!(!first[0].redelivered);
    consumer
        .nack(first[0].tag, false, true)
        .expect("nack, requeue");

    let again = receive_n(&consumer, 1, Duration::from_secs(10));
    assert_eq!(id(&again[0]), "n-0");
    assert!(again[0].redelivered, "a requeued message says so");
    assert!(again[0].tag > first[0].tag, "a new delivery has a new tag");

    // Without requeue RabbitMQ drops it (the queue has no dead-letter exchange).
    consumer
        .nack(again[0].tag, true, false)
        .expect("nack, drop");
    consumer.close().expect("close");
    assert_eq!(queue.ready(), 0);
}

#[test]
fn messages_a_dead_consumer_held_are_redelivered_to_the_next() {
    let queue = Queue::new("dead-consumer");
    let publisher = transport("");
    fill(&publisher, &queue.name, "d", 5);

    // A consumer takes everything and dies before acknowledging: its transport and runtime
    // go away without DISCONNECT, as when the process is killed.
    let dead_tags = {
        let transport = transport("");
        let consumer = transport
            .consume(&queue.name, options(10, AckMode::Cumulative))
            .expect("consumer");
        let got = receive_n(&consumer, 5, Duration::from_secs(10));
        assert!(got.iter().all(|d| !d.redelivered));
        drop(transport);
        drop(consumer);
        got.len()
    };
    assert_eq!(dead_tags, 5);

    let consumer = publisher
        .consume(&queue.name, options(10, AckMode::Cumulative))
        .expect("next consumer");
    let got = receive_n(&consumer, 5, Duration::from_secs(20));
    let got_ids: Vec<String> = got.iter().map(id).collect();
    assert_eq!(got_ids, ["d-0", "d-1", "d-2", "d-3", "d-4"]);
    assert!(got.iter().all(|d| d.redelivered));
    consumer.ack(got[4].tag, true).expect("ack");
    consumer.close().expect("close");
    assert_eq!(queue.ready(), 0);
}

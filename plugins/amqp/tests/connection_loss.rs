//! The broker closes the plugin's connections in the middle of a long drain: the consumer
//! reconnects by itself, and every message is handed to the host and acknowledged, none
//! lost. Redeliveries are expected; losses are not.
//!
//! Only this test's own connections are closed (found by their unique name), because
//! other people's tests share the broker.

mod common;

use std::{
    collections::HashSet,
    thread,
    time::{Duration, Instant},
};

use abi_stable::std_types::{RSlice, RStr};
use common::*;
use golconde_amqp::generation_of;

const TOTAL: usize = 10_000;
const HALF: usize = TOTAL / 2;

#[test]
fn no_message_is_lost_when_the_broker_closes_the_connections() {
    let queue = TestQueue::new("loss");
    let name = unique("loss-conn");
    let transport = transport_named(&name);
    publish(&transport, &queue.name, &numbered("m", 0..HALF));

    // Acknowledging after each batch, cumulatively, as the host's pipelines do.
    let consumer = consume(&transport, &queue.name, 500);
    let mut seen = HashSet::new();
    let mut generations = HashSet::new();
    let mut redelivered = 0;
    let mut closed = Vec::new();
    // The highest tag of the first connection, acknowledged again once the second one
    // delivers: if it reached the new channel it would acknowledge messages the host never
    // saw (lost) or an unknown tag (the broker closes the channel: one generation too many).
    let mut highest_first = 0;
    let mut stale_acked = false;
    let give_up = Instant::now() + Duration::from_secs(90);
    while seen.len() < TOTAL {
        assert!(
            Instant::now() < give_up,
            "only {} of {TOTAL} messages arrived",
            seen.len()
        );
        let batch = consumer.receive(200, 500).into_result().expect("receive");
        for delivery in batch.iter() {
            let id = delivery.message.header("message-id").expect("a message-id");
            assert_eq!(id, body(delivery));
            seen.insert(id.to_string());
            generations.insert(generation_of(delivery.tag));
            redelivered += delivery.redelivered as usize;
            if generation_of(delivery.tag) == 1 {
                highest_first = highest_first.max(delivery.tag);
            }
        }
        if !stale_acked && generations.len() == 2 {
            consumer
                .ack(highest_first, true)
                .into_result()
                .expect("stale ack");
            stale_acked = true;
        }
        // Cut twice, each time between handing a batch over and acknowledging it, while
        // the plugin holds a full prefetch more: once in the first half, and once after
        // the second half was published (through a new publishing connection).
        let cut = match closed.len() {
            0 => seen.len() >= 1_500,
            1 => seen.len() >= HALF + 1_500,
            _ => false,
        };
        if cut {
            closed.push(close_connections(&name));
        }
        if let Some(last) = batch.last() {
            // After a cut this acknowledges nothing: the batch comes back.
            consumer.ack(last.tag, true).into_result().expect("ack");
        }
        if cut && closed.len() == 1 {
            publish_retrying(&transport, &queue.name, &numbered("m", HALF..TOTAL));
        }
    }
    assert!(
        closed.len() == 2 && closed.iter().all(|&n| n > 0),
        "each cut closed connections: {closed:?}"
    );
    assert_eq!(
        generations.len(),
        3,
        "one new connection per cut, and no other: {generations:?}"
    );
    assert!(stale_acked);
    assert!(redelivered > 0, "messages in flight came back");

    // Everything handed over was acknowledged: after closing (which would requeue anything
    // unacknowledged), the queue is empty.
    consumer.close().into_result().unwrap();
    assert_eq!(broker().ready(&queue.name), Some(0));
    eprintln!(
        "{TOTAL} messages, {redelivered} redeliveries, {} generations, connections closed {closed:?}",
        generations.len()
    );
}

/// Publishes as the host does after a connection loss: a transient failure is retried.
fn publish_retrying(
    transport: &golconde_plugin_api::abi::TransportBox,
    queue: &str,
    messages: &[golconde_plugin_api::Message],
) {
    for attempt in 1..=20 {
        match transport
            .publish(RStr::from_str(queue), RSlice::from_slice(messages))
            .into_result()
        {
            Ok(()) => return,
            Err(e) if e.is_transient() => {
                eprintln!("publish attempt {attempt}: {e}");
                thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("publishing never succeeded");
}

/// The host may be busy elsewhere for a while (a long batch in the database) and not ask
/// for deliveries: a lost connection is noticed and replaced by the plugin itself, not on
/// the host's next `receive`.
#[test]
fn a_consumer_nobody_receives_from_reconnects_by_itself() {
    let queue = TestQueue::new("idle-loss");
    let name = unique("idle-loss-conn");
    let transport = transport_named(&name);
    let consumer = consume(&transport, &queue.name, 10);
    let consumer_named = format!("{name} consumer");
    the_connection(&consumer_named);
    let before = connection_pids(&consumer_named);
    assert_eq!(close_connections(&consumer_named), 1);
    // No `receive` until the new connection is there.
    let give_up = Instant::now() + Duration::from_secs(20);
    loop {
        let now = connection_pids(&consumer_named);
        if now.len() == 1 && now != before {
            break;
        }
        assert!(
            Instant::now() < give_up,
            "no new connection 20 s after the broker closed {before:?}: {now:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
    publish(&transport, &queue.name, &numbered("m", 0..1));
    let got = receive_exactly(&consumer, 1);
    assert_eq!(body(&got[0]), "m-0");
    assert_eq!(generation_of(got[0].tag), 2, "delivered on the new channel");
    consumer.ack(got[0].tag, false).into_result().unwrap();
    consumer.close().into_result().unwrap();
}

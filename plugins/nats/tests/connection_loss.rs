//! A private nats-server is killed and started again while a consumer streams through
//! 2,000 messages: the consumer goes on by itself (deliveries it held are settled after
//! the reconnection), a publish during the outage fails as transient and goes through
//! once the server is back, nothing is lost and new messages come in order.

mod common;

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use common::*;
use golconde_plugin_api::{Consumer, ErrorKind, Message, Transport};

const BEFORE: usize = 2000;
const DURING: usize = 100;

#[test]
fn a_server_restarted_mid_stream_loses_nothing() {
    let mut server = Server::start();
    let queue = Queue::at(&server.url(), "restart");
    let transport = transport_at(
        &server.url(),
        r#""ack_wait_ms": 2000, "request_timeout_ms": 1000"#,
    );
    fill(&transport, &queue.name, "r", 0..BEFORE);
    let consumer = transport
        .consume_as(&queue.name, options(100), "restart")
        .expect("consumer");

    let all: usize = BEFORE + DURING;
    let mut next_new = 0usize;
    let mut seen: HashSet<usize> = HashSet::new();
    let (mut replays, mut receive_errors) = (0usize, 0usize);
    let mut restarted = false;
    let mut outage_publish: Option<ErrorKind> = None;
    let mut published_after = false;
    let mut acked_across = false;
    let deadline = Instant::now() + Duration::from_secs(40);
    while seen.len() < all {
        assert!(
            Instant::now() < deadline,
            "only {} of {all} messages in time; server log:\n{}",
            seen.len(),
            server.log()
        );
        let batch = match consumer.receive(50, Duration::from_millis(200)) {
            Ok(batch) => batch,
            Err(e) => {
                assert_eq!(e.kind, ErrorKind::Transient, "{e}");
                receive_errors += 1;
                continue;
            }
        };
        for delivery in &batch {
            if id(delivery) == "during" {
                // Refused as transient, yet sent once the connection was back: the host
                // would publish it again; at least once is the contract.
                continue;
            }
            let index: usize = id(delivery)
                .trim_start_matches("r-")
                .parse()
                .expect("a test message");
            if index == next_new {
                next_new += 1;
                seen.insert(index);
            } else {
                assert!(
                    index < next_new,
                    "message {index} came before {next_new}: out of order"
                );
                replays += 1;
            }
        }
        if !restarted && seen.len() >= 500 {
            // Mid-stream, with a batch handed over and not yet acknowledged.
            server.kill();
            let outage = transport.publish(&queue.name, &[message("during", b"x")]);
            outage_publish = Some(outage.expect_err("nothing to publish to").kind);
            std::thread::sleep(Duration::from_millis(300));
            server.start_again();
            restarted = true;
        }
        if let Some(last) = batch.last() {
            if consumer.ack(last.tag, true).is_ok() && restarted {
                acked_across = true;
            }
        }
        if restarted && !published_after {
            let more: Vec<Message> = (BEFORE..all)
                .map(|i| message(&format!("r-{i}"), b"after"))
                .collect();
            // The publisher reconnects on its own; until then publishing is transient.
            match transport.publish(&queue.name, &more) {
                Ok(()) => published_after = true,
                Err(e) => assert_eq!(e.kind, ErrorKind::Transient, "{e}"),
            }
        }
    }
    consumer.close().expect("close");
    assert_eq!(outage_publish, Some(ErrorKind::Transient));
    assert!(
        acked_across,
        "deliveries held across the outage were settled"
    );
    assert_eq!(next_new, all, "every message, new ones in order");
    println!(
        "{all} messages through a server restart: {replays} replays, {receive_errors} receive \
         errors"
    );

    // Once everything is acknowledged, nothing is left.
    let deadline = Instant::now() + Duration::from_secs(10);
    while queue.side.stored(&queue.name) > 0 {
        assert!(
            Instant::now() < deadline,
            "acknowledged messages left in the stream"
        );
        let last = consumer_drain(&transport, &queue.name);
        if last == 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Takes and acknowledges whatever is left (replays of lost acknowledgements).
fn consumer_drain(transport: &golconde_nats::Nats, queue: &str) -> usize {
    let consumer = transport
        .consume_as(queue, options(100), "restart")
        .expect("consumer");
    let mut taken = 0;
    loop {
        let got = consumer
            .receive(100, Duration::from_millis(300))
            .expect("receive");
        let Some(last) = got.last() else { break };
        taken += got.len();
        consumer.ack(last.tag, true).expect("ack");
    }
    consumer.close().expect("close");
    taken
}

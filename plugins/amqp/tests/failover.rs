//! Several brokers in `url`, as for a cluster's nodes: connecting goes through the list
//! until one answers, whatever the order and wherever the dead ones are; a connection the
//! broker closes comes back on the next node that answers, for consumers and the publisher
//! alike; and when none answers, the error lists every one of them, passwords hidden.
//!
//! There is one broker here, so its "other node" is the same broker spelled `localhost`
//! instead of `127.0.0.1`; with several URLs each connection's name ends in
//! `@ host:port`, which tells which spelling it used. The dead nodes are loopback ports
//! where nothing listens.

mod common;

use std::time::{Duration, Instant};

use abi_stable::std_types::{RSlice, RStr};
use common::*;
use golconde_amqp::generation_of;
use golconde_plugin_api::{abi::TransportBox, AckMode, ConsumeOptions, ErrorKind, Message};
use serde_json::json;

const LIVE: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const LIVE_BY_NAME: &str = "amqp://guest:guest@localhost:5672/%2f";
const DEAD: &str = "amqp://golconde:dead-secret-1@127.0.0.1:1/%2f";
const DEAD_TOO: &str = "amqp://other:dead-secret-2@localhost:2/%2f";

fn transport_over(urls: &[&str], name: &str) -> TransportBox {
    build(&json!({
        "url": urls,
        "shuffle_urls": false,
        "connection_name": name,
        "connect_timeout_ms": 5000,
        "reconnect_initial_ms": 50,
        "reconnect_max_ms": 1000,
    }))
    .expect("a valid configuration")
}

/// Publishes, consumes and acknowledges one message through `transport`.
fn round_trip(transport: &TransportBox, queue: &str) {
    publish(transport, queue, &numbered("o", 0..1));
    let consumer = consume(transport, queue, 1);
    let got = receive_exactly(&consumer, 1);
    assert_eq!(body(&got[0]), "o-0");
    consumer.ack(got[0].tag, false).into_result().unwrap();
    consumer.close().into_result().unwrap();
    assert_eq!(broker().ready(queue), Some(0));
}

#[test]
fn publishing_and_consuming_work_whatever_the_order_of_dead_and_live_brokers() {
    let orders: [&[&str]; 5] = [
        &[DEAD, LIVE],
        &[LIVE, DEAD],
        &[DEAD, DEAD_TOO, LIVE],
        &[DEAD, LIVE, DEAD_TOO],
        &[DEAD_TOO, LIVE_BY_NAME, DEAD],
    ];
    for urls in orders {
        let queue = TestQueue::new("order");
        let name = unique("order-conn");
        let transport = transport_over(urls, &name);
        transport.ping().into_result().expect("one broker answers");
        round_trip(&transport, &queue.name);
        eprintln!("{urls:?}: ok");
    }
}

#[test]
fn shuffled_lists_work_too() {
    for _ in 0..4 {
        let queue = TestQueue::new("shuffled");
        let transport = build(&json!({
            "urls": [DEAD, LIVE, DEAD_TOO],
            "connection_name": unique("shuffled-conn"),
            "connect_timeout_ms": 5000,
        }))
        .unwrap();
        round_trip(&transport, &queue.name);
    }
}

/// Each dead broker a round passes is logged once, with its address (password hidden) and
/// the reason, and the connection's name says which broker it reached.
#[test]
fn every_broker_that_fails_is_logged_once_and_the_connection_names_its_node() {
    let queue = TestQueue::new("logged");
    let name = unique("logged-conn");
    let (transport, log) = build_capturing(&json!({
        "url": [DEAD, DEAD_TOO, LIVE_BY_NAME],
        "shuffle_urls": false,
        "connection_name": name,
    }))
    .unwrap();
    let consumer = consume(&transport, &queue.name, 1);
    assert_eq!(
        the_connection(&name),
        format!("{name} consumer {} @ localhost:5672", queue.name)
    );
    let lines = log.lines();
    for (shown, secret) in [
        ("amqp://golconde:***@127.0.0.1:1/%2f", "dead-secret-1"),
        ("amqp://other:***@localhost:2/%2f", "dead-secret-2"),
    ] {
        let about: Vec<&String> = lines.iter().filter(|l| l.contains(shown)).collect();
        assert_eq!(about.len(), 1, "{shown} logged once: {lines:#?}");
        assert!(about[0].starts_with("Warn"), "{}", about[0]);
        assert!(about[0].contains("Connection refused"), "{}", about[0]);
        assert!(lines.iter().all(|l| !l.contains(secret)), "{lines:#?}");
    }
    consumer.close().into_result().unwrap();
}

#[test]
fn when_no_broker_answers_the_error_names_each_one_without_its_password() {
    let queue = TestQueue::new("all-dead");
    let transport = build(&json!({
        "url": [DEAD, DEAD_TOO],
        "shuffle_urls": false,
        "reconnect_initial_ms": 60_000,
        "reconnect_max_ms": 60_000,
    }))
    .unwrap();
    let started = Instant::now();
    let errors = [
        transport.ping().into_result().unwrap_err(),
        transport
            .consume(
                RStr::from_str(&queue.name),
                ConsumeOptions {
                    prefetch: 1,
                    ack_mode: AckMode::Cumulative,
                },
            )
            .into_result()
            .err()
            .expect("no consumer without a broker"),
        transport
            .publish(
                RStr::from_str(&queue.name),
                RSlice::from_slice(&[Message::new("x")]),
            )
            .into_result()
            .unwrap_err(),
    ];
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "no backoff between the brokers of one round: {:?}",
        started.elapsed()
    );
    for err in errors {
        eprintln!("{err}");
        assert_eq!(err.kind, ErrorKind::Transient, "{err}");
        let message = err.message.as_str();
        assert!(
            message.starts_with("none of the 2 brokers answered: "),
            "{message}"
        );
        assert!(
            message.contains("1) amqp://golconde:***@127.0.0.1:1/%2f: "),
            "{message}"
        );
        assert!(
            message.contains("; 2) amqp://other:***@localhost:2/%2f: "),
            "{message}"
        );
        assert_eq!(
            message.matches("Connection refused").count(),
            2,
            "{message}"
        );
        assert!(
            message.contains("check that the broker is running"),
            "{message}"
        );
        assert!(!message.contains("dead-secret"), "{message}");
    }
    assert_eq!(broker().ready(&queue.name), None, "nothing was declared");
}

/// The broker closes the consumer's connection (as a node going down does): the consumer
/// reconnects to the next broker of the list that answers, skipping a dead one, and goes
/// round the list; nothing is lost on the way.
#[test]
fn a_consumer_whose_connection_is_closed_moves_to_the_next_broker_that_answers() {
    let queue = TestQueue::new("move");
    let name = unique("move-conn");
    let transport = transport_over(&[LIVE, DEAD, LIVE_BY_NAME], &name);
    let consumer = consume(&transport, &queue.name, 1);
    let consumer_named = format!("{name} consumer");

    for (i, node) in ["127.0.0.1:5672", "localhost:5672", "127.0.0.1:5672"]
        .iter()
        .enumerate()
    {
        // One message at a time, so that the consumer holds none when its connection goes.
        publish(&transport, &queue.name, &numbered("m", i..i + 1));
        let got = receive_exactly(&consumer, 1);
        assert_eq!(body(&got[0]), format!("m-{i}"));
        assert!(!got[0].redelivered);
        assert_eq!(
            generation_of(got[0].tag),
            i as u64 + 1,
            "one new channel per cut"
        );
        consumer.ack(got[0].tag, false).into_result().unwrap();
        wait_until_acknowledged(&queue.name, 0);
        assert_eq!(
            the_connection(&consumer_named),
            format!("{consumer_named} {} @ {node}", queue.name),
            "connection {}",
            i + 1
        );
        if i < 2 {
            assert_eq!(close_connections(&consumer_named), 1);
        }
    }
    consumer.close().into_result().unwrap();
    assert_eq!(broker().ready(&queue.name), Some(0));
}

/// The publisher's connection is closed: the next batch fails (transient) or goes through a
/// new connection, on the next broker that answers.
#[test]
fn the_publisher_reconnects_to_the_next_broker_that_answers() {
    let queue = TestQueue::new("publisher-move");
    let name = unique("publisher-move-conn");
    let transport = transport_over(&[LIVE, DEAD, LIVE_BY_NAME], &name);
    publish(&transport, &queue.name, &numbered("p", 0..1));
    let publisher = format!("{name} publisher");
    assert_eq!(
        the_connection(&publisher),
        format!("{publisher} @ 127.0.0.1:5672")
    );
    assert_eq!(close_connections(&publisher), 1);
    publish_retrying(&transport, &queue.name, &numbered("p", 1..2));
    assert_eq!(
        the_connection(&publisher),
        format!("{publisher} @ localhost:5672")
    );
    assert_eq!(
        broker().ready(&queue.name),
        Some(2),
        "nothing lost, nothing doubled"
    );
}

/// Waits until the broker holds `left` messages of `queue`, ready or delivered: then the
/// last acknowledgement reached it, and a cut cannot requeue the acknowledged message.
fn wait_until_acknowledged(queue: &str, left: u32) {
    let give_up = Instant::now() + Duration::from_secs(20);
    loop {
        let listing = std::process::Command::new("rabbitmqctl")
            .args(["-q", "list_queues", "name", "messages"])
            .output()
            .expect("rabbitmqctl");
        let held = String::from_utf8_lossy(&listing.stdout)
            .lines()
            .find_map(|line| {
                let (name, count) = line.split_once('\t')?;
                (name == queue).then(|| count.trim().parse::<u32>().ok())?
            });
        if held == Some(left) {
            return;
        }
        assert!(
            Instant::now() < give_up,
            "{queue} holds {held:?}, not {left}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn publish_retrying(transport: &TransportBox, queue: &str, messages: &[Message]) {
    for attempt in 1..=20 {
        match transport
            .publish(RStr::from_str(queue), RSlice::from_slice(messages))
            .into_result()
        {
            Ok(()) => return,
            Err(e) if e.is_transient() => {
                eprintln!("publish attempt {attempt}: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("publishing never succeeded");
}

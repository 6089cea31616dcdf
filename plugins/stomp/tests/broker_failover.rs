//! Several brokers (`addresses`): a dead one is passed over wherever it is listed, none
//! answering is a transient error naming each, and a consumer or publisher whose broker
//! is lost mid-stream goes on with the next one, losing no message and settling none on
//! the wrong connection.
//!
//! The brokers are the local RabbitMQ reached through proxies of the test's own (so the
//! test sees which one each connection went to, and can take one down for good), and
//! dead ones: a closed port, a listener that closes every connection at once, and one that
//! never answers.

mod common;

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use common::*;
use golconde_plugin_api::{
    sdk::parse_config, testing::logged, AckMode, Consumer, ErrorKind, PluginError, Transport,
};
use golconde_stomp::{Config, Stomp};

#[test]
fn each_transport_shuffles_its_brokers() {
    let config = r#"{"addresses": ["a.example:61613", "b.example:61613", "c.example:61613"]}"#;
    let mut first = HashSet::new();
    for _ in 0..100 {
        let stomp = Stomp::from_config(parse_config::<Config>(config).unwrap()).unwrap();
        let mut addresses: Vec<&str> = stomp
            .settings()
            .brokers
            .iter()
            .map(|b| b.address.as_str())
            .collect();
        first.insert(addresses[0].to_string());
        addresses.sort();
        assert_eq!(
            addresses,
            ["a.example:61613", "b.example:61613", "c.example:61613"]
        );
    }
    assert_eq!(
        first.len(),
        3,
        "every broker comes first now and then: {first:?}"
    );
    // Unless told to keep the order written.
    let config = config.replace('}', r#", "shuffle_addresses": false}"#);
    for _ in 0..10 {
        let stomp = Stomp::from_config(parse_config::<Config>(&config).unwrap()).unwrap();
        assert_eq!(stomp.settings().brokers[0].address, "a.example:61613");
    }
}

#[test]
fn a_dead_broker_is_passed_over_wherever_it_is_listed() {
    let refused = closed_address();
    let closing = DeadBroker::closing();
    let silent = DeadBroker::silent();
    for dead in [refused.as_str(), &closing.address, &silent.address] {
        for order in [[dead, STOMP], [STOMP, dead]] {
            let queue = Queue::new("dead-broker");
            let transport = transport_in_order(&order, r#""connect_timeout_ms": 500"#);
            let (pinged, log) = logged(|| transport.ping());
            pinged.unwrap_or_else(|e| panic!("{order:?}: ping: {e}"));
            if order[0] == dead {
                // The failure is logged with the dead broker's address and the reason.
                let line = log
                    .lines()
                    .find(|l| l.contains(&format!("cannot connect to the broker at {dead}")))
                    .unwrap_or_else(|| panic!("{order:?}: no warning about {dead}: {log}"));
                assert!(line.contains("WARN"), "{line}");
                assert!(line.contains(&format!("trying {STOMP} next")), "{line}");
            } else {
                assert!(log.is_empty(), "{order:?}: {log}");
            }
            transport
                .publish(&queue.name, &[message("d-0", b"through the live one")])
                .unwrap_or_else(|e| panic!("{order:?}: publish: {e}"));
            let consumer = transport
                .consume(&queue.name, options(10, AckMode::Cumulative))
                .unwrap_or_else(|e| panic!("{order:?}: consume: {e}"));
            let got = receive_n(&consumer, 1, Duration::from_secs(10));
            assert_eq!(id(&got[0]), "d-0");
            consumer.ack(got[0].tag, true).expect("ack");
            consumer.close().expect("close");
            queue.assert_ready(0);
        }
    }
    // Listed first, each dead broker was tried by the ping, the publisher and the consumer;
    // listed last, never.
    assert_eq!(closing.accepted(), 3);
    assert_eq!(silent.accepted(), 3);
}

#[test]
fn no_broker_answering_is_a_transient_error_naming_each() {
    let refused = closed_address();
    let closing = DeadBroker::closing();
    let silent = DeadBroker::silent();
    let transport = transport_in_order(
        &[&refused, &closing.address, &silent.address],
        r#""connect_timeout_ms": 300"#,
    );
    let check = |what: &str, error: PluginError| {
        assert_eq!(error.kind, ErrorKind::Transient, "{what}: {error}");
        let message = error.message.as_str();
        assert!(
            message.contains("none of the 3 brokers answered"),
            "{what}: {message}"
        );
        // Each broker with its own reason, in the order they were tried.
        let refused_at = message
            .find(&format!("cannot connect to {refused}: Connection refused"))
            .unwrap_or_else(|| panic!("{what}: {refused} not named: {message}"));
        let closing_at = message
            .find(&format!("{}: ", closing.address))
            .unwrap_or_else(|| panic!("{what}: {} not named: {message}", closing.address));
        let silent_at = message
            .find(&format!(
                "{}: no answer within 300 ms while waiting for CONNECTED",
                silent.address
            ))
            .unwrap_or_else(|| panic!("{what}: {} not named: {message}", silent.address));
        assert!(
            refused_at < closing_at && closing_at < silent_at,
            "{message}"
        );
    };
    check("ping", transport.ping().unwrap_err());
    check(
        "publish",
        transport
            .publish("golconde-stomp-test-nowhere", &[message("n-0", b"x")])
            .unwrap_err(),
    );
    check(
        "consume",
        transport
            .consume(
                "golconde-stomp-test-nowhere",
                options(10, AckMode::Cumulative),
            )
            .err()
            .expect("consumed with no broker"),
    );
    assert_eq!(closing.accepted(), 3);
    assert_eq!(silent.accepted(), 3);
}

#[test]
fn a_consumer_whose_broker_is_lost_goes_on_with_the_next() {
    const MESSAGES: usize = 3000;
    let queue = Queue::new("consumer-failover");
    fill(&transport(""), &queue.name, "f", MESSAGES);
    let a = Proxy::start(STOMP);
    let mut b = Some(Proxy::start(STOMP));
    let b_address = b.as_ref().unwrap().address.clone();
    let transport = transport_in_order(&[&a.address, &b_address], "");
    let consumer = transport
        .consume(&queue.name, options(200, AckMode::Cumulative))
        .expect("consumer");
    assert_eq!(a.connections(), 1, "the first broker listed is tried first");

    let mut handed_over = 0usize;
    let mut acked: HashSet<String> = HashSet::new();
    let (mut refused_acks, mut redelivered) = (0, 0);
    let mut b_connections = 0;
    let deadline = Instant::now() + Duration::from_secs(100);
    while acked.len() < MESSAGES {
        assert!(
            Instant::now() < deadline,
            "only {} of {MESSAGES} acknowledged in time",
            acked.len()
        );
        let batch = match consumer.receive(100, Duration::from_millis(500)) {
            Ok(batch) => batch,
            Err(e) => {
                assert_eq!(e.kind, ErrorKind::Transient, "{e}");
                continue;
            }
        };
        let Some(last) = batch.last() else { continue };
        let before = handed_over;
        handed_over += batch.len();
        redelivered += batch.iter().filter(|d| d.redelivered).count();
        if before < 1000 && handed_over >= 1000 {
            // The connection to `a` is closed, `a` itself stays up: the consumer goes on
            // with the next broker, `b`, not back to `a`.
            let port = *a.upstream_ports().last().expect("a connection");
            assert!(close_from_broker(port), "closed the connection to a");
        }
        if before < 2000 && handed_over >= 2000 {
            // By now the consumer is on `b`; `b` goes down for good, and the only broker
            // left is `a` again.
            let proxy = b.take().expect("b still up");
            assert_eq!(proxy.connections(), 1, "the consumer moved on to b");
            assert_eq!(a.connections(), 1, "and not back to a");
            b_connections = proxy.connections();
            let port = *proxy.upstream_ports().last().expect("a connection");
            drop(proxy);
            assert!(close_from_broker(port), "closed the connection to b");
        }
        // Acknowledged after the close, on purpose: a tag of the lost connection must be
        // refused, never sent over the new one.
        match consumer.ack(last.tag, true) {
            Ok(()) => acked.extend(batch.iter().map(id)),
            Err(e) => {
                assert_eq!(e.kind, ErrorKind::Transient, "{e}");
                assert!(e.message.contains("lost"), "{e}");
                refused_acks += 1;
            }
        }
    }
    consumer.close().expect("close");

    assert_eq!(b_connections, 1);
    assert_eq!(a.connections(), 2, "back to a once b was down");
    assert!(refused_acks >= 1, "a tag of a lost connection was refused");
    assert!(redelivered > 0, "what was in flight came back");
    let leftovers = consume_all(&common::transport(""), &queue.name);
    assert!(
        leftovers.iter().all(|d| acked.contains(&id(d))),
        "a leftover message was never handed over before"
    );
    assert_eq!(queue.ready(), 0);
    let expected: HashSet<String> = (0..MESSAGES).map(|i| format!("f-{i}")).collect();
    assert_eq!(
        acked, expected,
        "every message handed over and acknowledged"
    );
}

/// Publishes one message, retrying a transient failure as the host does.
fn publish_retrying(transport: &Stomp, queue: &str, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match transport.publish(queue, &[message(id, id.as_bytes())]) {
            Ok(()) => return,
            Err(e) => {
                assert_eq!(e.kind, ErrorKind::Transient, "{e}");
                assert!(Instant::now() < deadline, "{id} never published: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

#[test]
fn publishing_goes_on_with_the_next_broker_when_its_own_is_lost() {
    let queue = Queue::new("publish-failover");
    let a = Proxy::start(STOMP);
    let b = Proxy::start(STOMP);
    let transport = transport_in_order(&[&a.address, &b.address], "");
    publish_retrying(&transport, &queue.name, "p-0");
    assert_eq!((a.connections(), b.connections()), (1, 0));

    // The connection to `a` is lost, `a` stays up: the next publish goes to `b`.
    assert!(
        close_from_broker(a.upstream_ports()[0]),
        "closed the connection to a"
    );
    publish_retrying(&transport, &queue.name, "p-1");
    assert_eq!((a.connections(), b.connections()), (1, 1));

    // `b` goes down for good: back to `a`.
    let port = b.upstream_ports()[0];
    drop(b);
    assert!(close_from_broker(port), "closed the connection to b");
    publish_retrying(&transport, &queue.name, "p-2");
    assert_eq!(a.connections(), 2);

    let got = consume_all(&common::transport(""), &queue.name);
    assert_eq!(
        ids(&got),
        HashSet::from(["p-0".into(), "p-1".into(), "p-2".into()])
    );
}

//! The broker closes the consumer's connection three times while 10,000 messages stream
//! through: the consumer reconnects on its own, tags of dead connections are never
//! acknowledged on new ones, and every message is eventually acknowledged after being
//! handed over; none is lost (redelivered duplicates are fine).

mod common;

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use common::*;
use golconde_plugin_api::{AckMode, Consumer, ErrorKind, Transport};

const MESSAGES: usize = 10_000;

#[test]
fn connections_closed_by_the_broker_mid_stream_lose_no_message() {
    let queue = Queue::new("forced-close");
    fill(&transport(""), &queue.name, "f", MESSAGES);
    // Through a proxy, whose own ports tell which broker connections are this test's.
    let proxy = Proxy::start(STOMP);
    let transport = transport_at(&proxy.address, "");
    let consumer = transport
        .consume(&queue.name, options(200, AckMode::Cumulative))
        .expect("consumer");

    let mut closes_due = vec![8000, 5000, 2000];
    let mut closed = 0;
    let mut handed_over = 0usize;
    let mut acked: HashSet<String> = HashSet::new();
    let (mut refused_acks, mut redelivered, mut receive_errors) = (0, 0, 0);
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
                receive_errors += 1;
                continue;
            }
        };
        let Some(last) = batch.last() else { continue };
        handed_over += batch.len();
        redelivered += batch.iter().filter(|d| d.redelivered).count();
        // Between handing a batch over and acknowledging it, with more in flight: the
        // worst moment for the connection to go.
        if closes_due.last().is_some_and(|&due| handed_over >= due) {
            closes_due.pop();
            let port = *proxy.upstream_ports().last().expect("a connection");
            if close_from_broker(port) {
                closed += 1;
            }
        }
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

    // An ACK queued just before its connection died never reached the broker; those
    // messages are still on the queue, as redeliveries of messages already seen.
    let leftovers = consume_all(&transport, &queue.name);
    assert!(
        leftovers.iter().all(|d| acked.contains(&id(d))),
        "a leftover message was never handed over before"
    );
    assert_eq!(queue.ready(), 0, "every message acknowledged in the end");
    let expected: HashSet<String> = (0..MESSAGES).map(|i| format!("f-{i}")).collect();
    assert_eq!(
        acked, expected,
        "every message handed over and acknowledged"
    );
    assert_eq!(
        closed, 3,
        "the broker closed the consumer's connection three times"
    );
    assert!(
        proxy.connections() >= 4,
        "the consumer reconnected after each close"
    );
    assert!(redelivered > 0, "what was in flight came back");
    println!(
        "{MESSAGES} messages: {handed_over} handed over, {redelivered} redelivered, \
         {refused_acks} acks refused for lost connections, {receive_errors} receive errors, \
         {} connections, {} leftovers",
        proxy.connections(),
        leftovers.len()
    );
}

#[test]
fn an_error_frame_mid_stream_makes_the_consumer_subscribe_again() {
    let queue = Queue::new("deleted-under-consumer");
    let proxy = Proxy::start(STOMP);
    let transport = transport_at(&proxy.address, "");
    let consumer = transport
        .consume(&queue.name, options(10, AckMode::Cumulative))
        .expect("consumer");
    let publisher = common::transport("");
    fill(&publisher, &queue.name, "e", 1);
    let before = receive_n(&consumer, 1, Duration::from_secs(10)).remove(0);

    // RabbitMQ answers the deletion of a consumed queue with an ERROR frame ("Server
    // cancelled subscription"), unasked for: the connection is over. The consumer
    // connects again, and its SUBSCRIBE declares the queue anew.
    queue.amqp.delete(&queue.name);
    let deadline = Instant::now() + Duration::from_secs(20);
    assert_eq!(proxy.connections(), 1);
    while proxy.connections() < 2 {
        assert!(Instant::now() < deadline, "the consumer did not reconnect");
        let _ = consumer.receive(10, Duration::from_millis(200));
    }
    let err = consumer.ack(before.tag, true).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    fill(&publisher, &queue.name, "after", 1);
    let after = receive_n(&consumer, 1, Duration::from_secs(10)).remove(0);
    assert_eq!(id(&after), "after-0");
    consumer.ack(after.tag, true).expect("ack");
    consumer.close().expect("close");
}

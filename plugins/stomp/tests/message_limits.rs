//! A message the consumer cannot take whole (a frame over `max_frame_bytes`, more headers
//! than `max_headers`) costs that message only: it is delivered without what was left out
//! and marked with `x-golconde-transport-error`, so the host dead-letters it, and the
//! connection stays up. Dropping the connection instead would have the broker redeliver
//! the same message first, forever: a halted pipeline.

mod common;

use std::time::Duration;

use common::*;
use golconde_plugin_api::{AckMode, Consumer, Delivery, Transport};
use lapin::{
    types::{AMQPValue, FieldTable},
    BasicProperties,
};

const MARK: &str = "x-golconde-transport-error";

fn with_id(id: &str) -> BasicProperties {
    BasicProperties::default().with_message_id(id.into())
}

/// Acknowledges everything, closes, and checks that nothing comes back.
fn settle(consumer: golconde_stomp::StompConsumer, got: &[Delivery], queue: &Queue) {
    consumer.ack(got.last().unwrap().tag, true).expect("ack");
    consumer.close().expect("close");
    queue.assert_ready(0);
}

#[test]
fn a_message_over_the_frame_limit_is_delivered_marked_without_its_body() {
    let queue = Queue::new("oversized");
    // Published over AMQP, so the big body never passes through this plugin's encoder.
    queue
        .amqp
        .publish(&queue.name, &vec![b'x'; 10_000], with_id("big"));
    queue.amqp.publish(&queue.name, b"small", with_id("small"));
    let proxy = Proxy::start(STOMP);
    let transport = transport_at(&proxy.address, r#""max_frame_bytes": 4096"#);
    let consumer = transport
        .consume(&queue.name, options(10, AckMode::Cumulative))
        .expect("consumer");

    let got = receive_n(&consumer, 2, Duration::from_secs(10));
    let (big, small) = (&got[0], &got[1]);
    assert_eq!(id(big), "big");
    assert!(big.message.body.is_empty());
    assert!(!big.redelivered, "delivered once, not after a reconnection");
    let mark = big.message.header(MARK).expect("the big message is marked");
    assert!(
        mark.contains("more than `max_frame_bytes` (4096)"),
        "{mark}"
    );
    assert!(mark.contains("its 10000-byte body was dropped"), "{mark}");
    assert_eq!(id(small), "small");
    assert_eq!(&small.message.body[..], b"small");
    assert_eq!(small.message.header(MARK), None);
    assert_eq!(proxy.connections(), 1, "the connection stayed up");
    settle(consumer, &got, &queue);
}

#[test]
fn a_message_with_too_many_headers_keeps_the_first_ones_and_is_marked() {
    let queue = Queue::new("many-headers");
    let mut headers = FieldTable::default();
    for i in 0..5_000 {
        headers.insert(
            format!("x-h{i:05}").into(),
            AMQPValue::LongString(format!("{i}").into()),
        );
    }
    queue.amqp.publish(
        &queue.name,
        b"body kept",
        with_id("many").with_headers(headers),
    );
    queue.amqp.publish(&queue.name, b"small", with_id("small"));
    let proxy = Proxy::start(STOMP);
    let transport = transport_at(&proxy.address, r#""max_headers": 100"#);
    let consumer = transport
        .consume(&queue.name, options(10, AckMode::Cumulative))
        .expect("consumer");

    let got = receive_n(&consumer, 2, Duration::from_secs(10));
    let many = &got[0].message;
    assert_eq!(id(&got[0]), "many");
    assert_eq!(
        &many.body[..],
        b"body kept",
        "the frame fits: its body is kept"
    );
    let mark = many.header(MARK).expect("marked");
    assert!(mark.contains("more than `max_headers` (100)"), "{mark}");
    assert!(
        many.headers.len() <= 100 + 10,
        "{} headers",
        many.headers.len()
    );
    assert_eq!(id(&got[1]), "small");
    assert_eq!(proxy.connections(), 1, "the connection stayed up");
    settle(consumer, &got, &queue);
}

#[test]
fn a_broker_header_cannot_pretend_a_message_was_cut() {
    let queue = Queue::new("fake-mark");
    let transport = transport("");
    let mut headers = FieldTable::default();
    headers.insert(MARK.into(), AMQPValue::LongString("forged".into()));
    queue
        .amqp
        .publish(&queue.name, b"whole", with_id("m").with_headers(headers));
    let consumer = transport
        .consume(&queue.name, options(10, AckMode::Cumulative))
        .expect("consumer");
    let got = receive_n(&consumer, 1, Duration::from_secs(10));
    assert_eq!(got[0].message.header(MARK), None);
    assert_eq!(&got[0].message.body[..], b"whole");
    settle(consumer, &got, &queue);
}

//! Headers survive the trip through the broker, over STOMP alone and across protocols:
//! what AMQP publishes as properties arrives over STOMP under the same names the AMQP
//! side uses, and back.

mod common;

use std::time::Duration;

use common::*;
use golconde_plugin_api::{AckMode, Consumer, Message, Transport};
use lapin::{
    types::{AMQPValue, FieldTable},
    BasicProperties,
};

#[test]
fn headers_round_trip_over_stomp() {
    let queue = Queue::new("headers");
    let transport = transport("");
    let sent = Message::new(&b"{\"a\": 1}"[..])
        .with_header("message-id", "h-1")
        .with_header("correlation-id", "corr-7")
        .with_header("content-type", "application/json")
        .with_header("timestamp", "1700000000")
        .with_header("x-tricky", "colon: newline\n backslash\\ cr\r end")
        .with_header("x-repeated", "first")
        .with_header("x-repeated", "second")
        .with_header("x-empty", "");
    transport.publish(&queue.name, &[sent]).expect("published");

    let consumer = transport
        .consume(&queue.name, options(10, AckMode::Cumulative))
        .expect("consumer");
    let got = receive_n(&consumer, 1, Duration::from_secs(10)).remove(0);
    let m = &got.message;
    assert_eq!(m.header("message-id"), Some("h-1"));
    assert_eq!(m.header("correlation-id"), Some("corr-7"));
    assert_eq!(m.header("content-type"), Some("application/json"));
    assert_eq!(m.header("timestamp"), Some("1700000000"));
    assert_eq!(
        m.header("x-tricky"),
        Some("colon: newline\n backslash\\ cr\r end")
    );
    assert_eq!(m.header("x-repeated"), Some("first"));
    assert_eq!(m.header("x-empty"), Some(""));
    assert_eq!(m.header("persistent"), Some("true"));
    for protocol_only in ["ack", "subscription", "receipt", "amqp-message-id"] {
        assert_eq!(m.header(protocol_only), None, "{protocol_only}");
    }
    let names: Vec<&str> = m.headers.iter().map(|h| h.name.as_str()).collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "no repeated names: {names:?}");
    consumer.ack(got.tag, true).expect("ack");
    consumer.close().expect("close");
}

#[test]
fn amqp_properties_arrive_over_stomp_under_the_same_names() {
    let queue = Queue::new("amqp-to-stomp");
    let mut custom = FieldTable::default();
    custom.insert(
        "x-custom".into(),
        AMQPValue::LongString("custom value".into()),
    );
    queue.amqp.publish(
        &queue.name,
        b"from amqp",
        BasicProperties::default()
            .with_message_id("amqp-42".into())
            .with_correlation_id("corr-42".into())
            .with_content_type("text/plain".into())
            .with_timestamp(1_700_000_042)
            .with_delivery_mode(2)
            .with_headers(custom),
    );
    let transport = transport("");
    let consumer = transport
        .consume(&queue.name, options(10, AckMode::Cumulative))
        .expect("consumer");
    let got = receive_n(&consumer, 1, Duration::from_secs(10)).remove(0);
    let m = &got.message;
    assert_eq!(&m.body[..], b"from amqp");
    assert_eq!(m.header("message-id"), Some("amqp-42"));
    assert_eq!(m.header("correlation-id"), Some("corr-42"));
    assert_eq!(m.header("content-type"), Some("text/plain"));
    assert_eq!(m.header("timestamp"), Some("1700000042"));
    assert_eq!(m.header("x-custom"), Some("custom value"));
    consumer.ack(got.tag, true).expect("ack");
    consumer.close().expect("close");
}

#[test]
fn stomp_headers_arrive_over_amqp_as_properties() {
    let queue = Queue::new("stomp-to-amqp");
    let transport = transport("");
    let sent = Message::new(&b"from stomp"[..])
        .with_header("message-id", "stomp-42")
        .with_header("correlation-id", "corr-43")
        .with_header("content-type", "text/plain")
        .with_header("x-custom", "custom value");
    transport.publish(&queue.name, &[sent]).expect("published");
    let got = queue.amqp.get(&queue.name).expect("a message over AMQP");
    assert_eq!(got.data, b"from stomp");
    let p = &got.properties;
    assert_eq!(
        p.message_id().as_ref().map(|s| s.as_str()),
        Some("stomp-42")
    );
    assert_eq!(
        p.correlation_id().as_ref().map(|s| s.as_str()),
        Some("corr-43")
    );
    assert_eq!(
        p.content_type().as_ref().map(|s| s.as_str()),
        Some("text/plain")
    );
    assert_eq!(*p.delivery_mode(), Some(2), "published persistent");
    let headers = p.headers().clone().unwrap_or_default();
    let custom = headers.inner().get("x-custom").expect("custom header");
    assert!(
        matches!(custom, AMQPValue::LongString(s) if s.to_string() == "custom value"),
        "{custom:?}"
    );
}

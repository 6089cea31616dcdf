//! Properties and headers survive the broker both ways.

mod common;

use common::*;
use golconde_plugin_api::{ErrorKind, Message};
use lapin::{
    types::{AMQPValue, FieldTable, LongString},
    BasicProperties,
};

fn pairs(message: &Message) -> Vec<(String, String)> {
    message
        .headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_string()))
        .collect()
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

#[test]
fn headers_and_properties_round_trip_through_the_broker() {
    let queue = TestQueue::new("headers");
    let transport = transport();
    let sent = Message::new(&b"{\"action\": \"add\"}"[..])
        .with_header("message-id", "id-42")
        .with_header("correlation-id", "corr-7")
        .with_header("content-type", "application/json")
        .with_header("timestamp", "1700000000")
        .with_header("x-origin", "billing")
        .with_header("user-id", "someone-else");
    publish(&transport, &queue.name, std::slice::from_ref(&sent));

    let consumer = consume(&transport, &queue.name, 1);
    let got = receive_exactly(&consumer, 1).remove(0);
    assert_eq!(got.message.body, sent.body);
    assert_eq!(
        pairs(&got.message),
        owned(&[
            ("message-id", "id-42"),
            ("correlation-id", "corr-7"),
            ("content-type", "application/json"),
            ("timestamp", "1700000000"),
            ("user-id", "someone-else"),
            ("x-origin", "billing"),
        ])
    );
    consumer.ack(got.tag, false).into_result().unwrap();
    consumer.close().into_result().unwrap();
}

#[test]
fn properties_set_by_another_client_become_headers() {
    let queue = TestQueue::new("foreign");
    let transport = transport();
    // Declared the way the plugin declares it, before anyone publishes.
    let consumer = consume(&transport, &queue.name, 1);
    let mut table = FieldTable::default();
    table.insert("x-count".into(), AMQPValue::LongInt(3));
    table.insert("x-flag".into(), AMQPValue::Boolean(false));
    table.insert(
        "x-text".into(),
        AMQPValue::LongString(LongString::from("é")),
    );
    broker().publish(
        &queue.name,
        b"payload",
        BasicProperties::default()
            .with_message_id("m-1".into())
            .with_content_type("text/plain".into())
            .with_priority(4)
            .with_reply_to("answers".into())
            .with_headers(table),
    );
    let got = receive_exactly(&consumer, 1).remove(0);
    assert_eq!(
        pairs(&got.message),
        owned(&[
            ("message-id", "m-1"),
            ("content-type", "text/plain"),
            ("reply-to", "answers"),
            ("priority", "4"),
            ("x-count", "3"),
            ("x-flag", "false"),
            ("x-text", "é"),
        ])
    );
    consumer.ack(got.tag, false).into_result().unwrap();
    consumer.close().into_result().unwrap();
}

#[test]
fn a_bad_header_fails_the_whole_batch_before_anything_is_sent() {
    let queue = TestQueue::new("bad-header");
    let transport = transport();
    let batch = vec![
        Message::new("fine").with_header("priority", "1"),
        Message::new("bad").with_header("priority", "urgent"),
    ];
    let err = transport
        .publish(
            abi_stable::std_types::RStr::from_str(&queue.name),
            abi_stable::std_types::RSlice::from_slice(&batch),
        )
        .into_result()
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
    assert!(err.message.contains("message 2 of 2"), "{err}");
    assert!(err.message.contains("`priority`"), "{err}");
    assert_eq!(broker().ready(&queue.name), None, "not even declared");
}

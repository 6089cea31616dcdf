//! Properties and headers survive the broker both ways.

mod common;

use common::*;
use golconde_plugin_api::Message;
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

/// Headers that fit no AMQP property, or cannot be an AMQP header of their own, once made
/// `publish` fail for good (or, for `CC` and a bad `expiration`, made the broker close the
/// channel), which stops a pipeline on a fan-out copy or a dead letter. Each now travels
/// as a plain (or packed) header and comes back under its own name, unchanged.
#[test]
fn headers_that_fit_no_property_come_back_under_their_own_name() {
    let queue = TestQueue::new("unmappable");
    let transport = transport();
    let long = "x".repeat(256);
    let cases: Vec<(String, String)> = [
        ("priority", "urgent"),
        ("priority", "256"),
        ("timestamp", "yesterday"),
        ("timestamp", "0012"),
        ("expiration", "soon"),
        ("expiration", "-1"),
        ("message-id", long.as_str()),
        ("correlation-id", long.as_str()),
        ("content-type", long.as_str()),
        ("reply-to", long.as_str()),
        ("type", long.as_str()),
        ("app-id", long.as_str()),
        (long.as_str(), "a name over 255 bytes"),
        ("CC", "not a list of queues"),
        ("BCC", "nor this"),
        ("x-golconde-packed-headers", "{\"not\": \"unpacked\"}"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    let batch: Vec<Message> = cases
        .iter()
        .map(|(name, value)| {
            Message::new(name.clone())
                .with_header(name.clone(), value.clone())
                .with_header("x-after", "kept")
        })
        .collect();
    publish(&transport, &queue.name, &batch);

    let consumer = consume(&transport, &queue.name, 100);
    let got = receive_exactly(&consumer, cases.len());
    for ((name, value), delivery) in cases.iter().zip(&got) {
        assert_eq!(&body(delivery), name);
        let headers = pairs(&delivery.message);
        assert!(
            headers.contains(&(name.clone(), value.clone())),
            "{name}: {headers:?}"
        );
        assert!(
            headers.contains(&("x-after".into(), "kept".into())),
            "{name}"
        );
        assert_eq!(headers.len(), 2, "nothing else: {headers:?}");
    }
    consumer
        .ack(got.last().unwrap().tag, true)
        .into_result()
        .unwrap();
    consumer.close().into_result().unwrap();
}

/// A header too large for one frame once had the broker close the publishing connection:
/// a transient error, retried forever. It is now left out, and named.
#[test]
fn headers_too_large_for_a_frame_are_left_out_and_named() {
    let queue = TestQueue::new("huge-header");
    let transport = transport();
    let batch = vec![
        Message::new("huge")
            .with_header("message-id", "huge-1")
            .with_header("x-huge", "h".repeat(200_000))
            .with_header("x-small", "s"),
        Message::new("next").with_header("message-id", "next-1"),
    ];
    publish(&transport, &queue.name, &batch);
    let consumer = consume(&transport, &queue.name, 10);
    let got = receive_exactly(&consumer, 2);
    let huge = &got[0].message;
    assert_eq!(huge.header("message-id"), Some("huge-1"));
    assert_eq!(huge.header("x-small"), Some("s"));
    assert_eq!(huge.header("x-huge"), None);
    let note = huge
        .header("x-golconde-dropped-headers")
        .expect("the left-out header is named");
    assert!(note.contains("x-huge"), "{note}");
    assert_eq!(got[1].message.header("message-id"), Some("next-1"));
    consumer.ack(got[1].tag, true).into_result().unwrap();
    consumer.close().into_result().unwrap();
}

//! Content headers that once crashed the process or stopped a consumer for good, sent the
//! way a hostile or careless publisher would (`common::raw`), each followed by a plain
//! message: the consumer delivers both and goes on.

mod common;

use common::{raw::*, *};
use golconde_plugin_api::{Delivery, Message};

/// The marker for values nested too deep, and the header naming headers left out: what the
/// plugin delivers in their place (`src/properties.rs`).
const TOO_DEEP: &str = "(removed by Golconde: nested more than 64 levels deep)";
const DROPPED: &str = "x-golconde-dropped-headers";

fn header<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
    message.header(name)
}

/// Receives the two messages and acknowledges them; the queue is left empty.
fn receive_both(consumer: &golconde_plugin_api::abi::ConsumerBox, queue: &str) -> Delivery {
    let got = receive_exactly(consumer, 2);
    assert_eq!(body(&got[1]), "plain", "the next message comes through too");
    assert!(
        !got[0].redelivered,
        "delivered the first time: no connection was lost"
    );
    consumer.ack(got[1].tag, true).into_result().unwrap();
    consumer.close().into_result().unwrap();
    assert_eq!(broker().ready(queue), Some(0));
    got.into_iter().next().unwrap()
}

#[test]
fn the_deepest_header_tables_that_fit_a_frame_are_delivered_with_a_marker() {
    let queue = TestQueue::new("deep");
    let transport = transport();
    let consumer = consume(&transport, &queue.name, 10);
    let mut raw = RawPublisher::connect();

    let mut others = Vec::new();
    deep_array_entry(&mut others, b"limit", 64);
    string_entry(&mut others, b"x-kept", b"kept");
    let mut entries = Vec::new();
    let besides = others.len() + 1 + "deep-1".len();
    deep_array_entry(
        &mut entries,
        b"deep",
        deepest(raw.frame_max, b"deep", besides),
    );
    entries.extend(&others);
    // Properties go in the order of their flags: headers before message-id.
    let mut properties = table(&entries);
    short(&mut properties, b"deep-1");
    raw.publish(&queue.name, HEADERS | MESSAGE_ID, &properties, b"arrays");
    raw.publish(&queue.name, 0, &[], b"plain");
    let got = receive_both(&consumer, &queue.name);
    assert_eq!(body(&got), "arrays");
    assert_eq!(header(&got.message, "message-id"), Some("deep-1"));
    assert_eq!(header(&got.message, "deep"), Some(TOO_DEEP));
    let limit = format!("{}{}", "[".repeat(64), "]".repeat(64));
    assert_eq!(header(&got.message, "limit"), Some(limit.as_str()));
    assert_eq!(header(&got.message, "x-kept"), Some("kept"));

    let consumer = consume(&transport, &queue.name, 10);
    let mut entries = Vec::new();
    let depth = deepest(raw.frame_max, b"deep", 0) * 5 / 7;
    deep_table_entry(&mut entries, b"deep", depth);
    raw.publish(&queue.name, HEADERS, &table(&entries), b"tables");
    raw.publish(&queue.name, 0, &[], b"plain");
    let got = receive_both(&consumer, &queue.name);
    assert_eq!(body(&got), "tables");
    assert_eq!(header(&got.message, "deep"), Some(TOO_DEEP));
}

/// RabbitMQ passes on property strings and table keys that are not UTF-8; lapin refuses
/// the whole frame, closes the connection, and the broker delivers the same message again.
#[test]
fn property_strings_and_keys_that_are_not_utf8_are_delivered_lossily() {
    let queue = TestQueue::new("utf8");
    let transport = transport();
    let consumer = consume(&transport, &queue.name, 10);
    let mut raw = RawPublisher::connect();
    let mut entries = Vec::new();
    string_entry(&mut entries, b"key-\xc3", b"value-\xff");
    let mut nested = Vec::new();
    string_entry(&mut nested, b"inner-\xfe", b"v");
    short(&mut entries, b"x-table");
    entries.push(b'F');
    long(&mut entries, &nested);
    let mut properties = Vec::new();
    short(&mut properties, b"text/\xff");
    properties.extend(table(&entries));
    short(&mut properties, b"id-\xfe");
    raw.publish(
        &queue.name,
        CONTENT_TYPE | HEADERS | MESSAGE_ID,
        &properties,
        b"bytes",
    );
    raw.publish(&queue.name, 0, &[], b"plain");
    let got = receive_both(&consumer, &queue.name);
    assert_eq!(body(&got), "bytes");
    assert_eq!(header(&got.message, "content-type"), Some("text/\u{fffd}"));
    assert_eq!(header(&got.message, "message-id"), Some("id-\u{fffd}"));
    assert_eq!(header(&got.message, "key-\u{fffd}"), Some("value-\u{fffd}"));
    assert_eq!(
        header(&got.message, "x-table"),
        Some("{\"inner-\u{fffd}\":\"v\"}")
    );
}

/// RabbitMQ sends a header frame as its publisher sent it, even when it is larger than the
/// consumer's frame_max; lapin refuses it and closes the connection, again and again.
#[test]
fn a_header_frame_larger_than_the_connection_allows_loses_its_largest_headers() {
    let queue = TestQueue::new("frame");
    let transport = build(&serde_json::json!({
        "url": format!("{URL}?frame_max=8192"),
        "connection_name": unique("frame"),
    }))
    .unwrap();
    let consumer = consume(&transport, &queue.name, 10);
    let mut raw = RawPublisher::connect();
    let mut entries = Vec::new();
    string_entry(&mut entries, b"x-big", &[b'b'; 20_000]);
    string_entry(&mut entries, b"x-small", b"s");
    let mut properties = table(&entries);
    short(&mut properties, b"big-1");
    raw.publish(&queue.name, HEADERS | MESSAGE_ID, &properties, b"big");
    raw.publish(&queue.name, 0, &[], b"plain");
    let got = receive_both(&consumer, &queue.name);
    assert_eq!(body(&got), "big");
    assert_eq!(header(&got.message, "message-id"), Some("big-1"));
    assert_eq!(header(&got.message, "x-small"), Some("s"));
    assert_eq!(header(&got.message, "x-big"), None);
    let note = header(&got.message, DROPPED).expect("the left-out header is named");
    assert!(note.contains("x-big") && note.contains("8192"), "{note}");
}

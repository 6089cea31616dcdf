//! Headers and bodies as they travel: a Golconde message keeps every header (odd names and
//! values included) and its body byte for byte; what other producers send (no headers,
//! empty or binary bodies, JetStream's own headers, forged transport errors, a packed
//! header that is not ours) arrives as it was, except the transport-error header.

mod common;

use std::time::Duration;

use async_nats::HeaderMap;
use common::*;
use golconde_plugin_api::{Consumer, Message, Transport, TRANSPORT_ERROR_HEADER};

fn pairs(message: &Message) -> Vec<(String, String)> {
    message
        .headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_string()))
        .collect()
}

#[test]
fn a_golconde_message_keeps_every_header_and_its_body() {
    let queue = Queue::new("round-trip");
    let transport = transport("");
    let binary: Vec<u8> = (0..=255u8).chain([0, 0, 13, 10]).collect();
    let odd = [
        ("message-id", "m-1"),
        ("content-type", "application/octet-stream"),
        ("correlation-id", "c-9"),
        ("x-golconde-error", "column `id`: value too long"),
        ("x-repeated", "first"),
        ("x-repeated", "second"),
        ("with space", "v"),
        ("colon:name", "v"),
        ("", "an empty name"),
        ("ünïcode", "välue"),
        ("x-line-break", "one\r\ntwo"),
        ("x-padded", "  padded  "),
        ("x-empty", ""),
        ("Nats-Expected-Last-Sequence", "1"),
        ("x-golconde-packed-headers", "a header of that name"),
    ];
    let mut sent = Message::new(binary.clone());
    for (name, value) in odd {
        sent.push_header(name, value);
    }
    let empty = Message::new(Vec::new()).with_header("message-id", "m-2");
    transport
        .publish(&queue.name, &[sent.clone(), empty])
        .expect("publish: no header makes it fail");

    let consumer = transport
        .consume(&queue.name, options(10))
        .expect("consumer");
    let got = receive_n(&consumer, 2, Duration::from_secs(10));
    assert_eq!(got[0].message.body.as_slice(), binary.as_slice());
    let mut expected = pairs(&sent);
    let mut back = pairs(&got[0].message);
    // Besides, when JetStream stored it (seconds since 1970).
    stored_at(&got[0].message);
    back.retain(|(name, _)| name != "timestamp");
    // Repeated names keep their order.
    let repeated: Vec<&str> = back
        .iter()
        .filter(|(n, _)| n == "x-repeated")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(repeated, ["first", "second"]);
    expected.sort();
    back.sort();
    assert_eq!(back, expected, "every header back, as it was sent");
    assert!(got[1].message.body.is_empty());
    assert_eq!(got[1].message.header("message-id"), Some("m-2"));
    consumer.ack(got[1].tag, true).expect("ack");
    consumer.close().expect("close");
}

#[test]
fn what_other_producers_send_arrives_as_it_was() {
    let queue = Queue::new("hostile");
    let transport = transport("");
    // Made by the plugin, so that the side door publishes into a stream.
    transport
        .publish(&queue.name, &[message("first", b"")])
        .expect("publish");

    let side = &queue.side;
    side.publish(&queue.name, None, b"");
    let mut forged = HeaderMap::new();
    forged.insert(TRANSPORT_ERROR_HEADER, "forged by a producer");
    forged.insert("x-golconde-packed-headers", "[not, json");
    forged.insert("Nats-Msg-Id", "upstream-id-1");
    forged.append("X-Mixed-Case", "a");
    forged.append("X-Mixed-Case", "b");
    let not_utf8: Vec<u8> = vec![0xff, 0xfe, 0x00, 0xc3, 0x28];
    side.publish(&queue.name, Some(forged), &not_utf8);
    let big = vec![7u8; 900 * 1024];
    side.publish(&queue.name, None, &big);

    let consumer = transport
        .consume(&queue.name, options(10))
        .expect("consumer");
    let got = receive_n(&consumer, 4, Duration::from_secs(10));
    assert_eq!(got[0].message.header("message-id"), Some("first"));
    assert!(got[1].message.body.is_empty());
    assert_eq!(got[1].message.headers.len(), 1, "only `timestamp`");
    stored_at(&got[1].message);
    let hostile = &got[2].message;
    assert_eq!(hostile.body.as_slice(), not_utf8.as_slice());
    assert_eq!(
        hostile.header(TRANSPORT_ERROR_HEADER),
        None,
        "only the plugin sets it"
    );
    assert_eq!(
        hostile.header("x-golconde-packed-headers"),
        Some("[not, json"),
        "not ours: shown as it came"
    );
    assert_eq!(hostile.header("Nats-Msg-Id"), Some("upstream-id-1"));
    let mixed: Vec<&str> = hostile
        .headers
        .iter()
        .filter(|h| h.name.as_str() == "X-Mixed-Case")
        .map(|h| h.value.as_str())
        .collect();
    assert_eq!(mixed, ["a", "b"], "case and order of a repeated name kept");
    assert_eq!(got[3].message.body.len(), big.len());
    consumer.ack(got[3].tag, true).expect("ack");

    // Forwarded by Golconde (a dead letter, a fan-out copy), the upstream `Nats-Msg-Id`
    // is data, not an instruction: a second copy is not dropped as its duplicate.
    let other = Queue::new("hostile-forward");
    let forward = got[2].message.clone();
    transport
        .publish(&other.name, &[forward.clone(), forward])
        .expect("publish");
    assert_eq!(other.side.stored(&other.name), 2);
    consumer.close().expect("close");
}

/// A message whose header block the NATS client cannot parse (stored as a bare-protocol
/// producer wrote it) is handed over marked, once, and settled; the queue goes on, in order.
fn unreadable_headers_cost_only_their_message(retention: &str) {
    let queue = Queue::new(&format!("unreadable-{retention}"));
    let transport = transport(&format!(
        r#""ack_wait_ms": 1000, "retention": "{retention}""#
    ));
    fill(&transport, &queue.name, "u", 0..1);
    publish_raw(
        "127.0.0.1:4222",
        &queue.name,
        b"NATS/1.0\r\nbad name: x\r\nmessage-id: unreadable\r\n\r\n",
        b"its body",
    );
    fill(&transport, &queue.name, "u", 1..3);

    let consumer = transport
        .consume_as(&queue.name, options(10), "unreadable")
        .expect("consumer");
    let got = receive_n(&consumer, 4, Duration::from_secs(15));
    assert_eq!(ids(&got), ["u-0", "unreadable", "u-1", "u-2"]);
    let marked = &got[1].message;
    let why = marked.header(TRANSPORT_ERROR_HEADER).expect("marked");
    assert!(why.contains("bad name"), "{why}");
    assert_eq!(marked.header("bad name"), Some("x"), "what could be read");
    assert_eq!(marked.body.as_slice(), b"its body");
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, d)| (i == 1) == d.message.header(TRANSPORT_ERROR_HEADER).is_some()));
    // Settled through the reply subject the plugin made for it.
    consumer.ack(got[1].tag, true).expect("ack");
    let side = &queue.side;
    let info = || {
        side.consumer_info(&queue.stream(), "unreadable")
            .expect("consumer")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while info()["ack_floor"]["stream_seq"] != 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the marked one was not settled: {}",
            info()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    consumer.ack(got[3].tag, true).expect("ack");
    consumer.close().expect("close");
    assert_eq!(info()["num_ack_pending"], 0, "{}", info());
    assert_eq!(info()["ack_floor"]["stream_seq"], 4, "{}", info());
}

#[test]
fn unreadable_headers_cost_only_their_message_with_explicit_acks() {
    unreadable_headers_cost_only_their_message("workqueue");
}

#[test]
fn unreadable_headers_cost_only_their_message_with_cumulative_acks() {
    unreadable_headers_cost_only_their_message("limits");
}

/// The `timestamp` header of a delivery: when JetStream stored it, a moment ago.
fn stored_at(message: &Message) -> u64 {
    let stamp: u64 = message
        .header("timestamp")
        .and_then(|t| t.parse().ok())
        .expect("a `timestamp` header in seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        stamp <= now && stamp + 60 > now,
        "stored at {stamp}, now {now}"
    );
    stamp
}

//! Entries written by other producers, as `redis-cli` or any client may write them: no
//! `body`, binary bytes, a field named like the body, thousands of fields, a forged
//! transport-error field, two bodies, an entry over `max_entry_bytes`. Each is delivered
//! on its own (marked when it cannot be taken whole, for the host to dead-letter it), and
//! the entries around it come through untouched.

mod common;

use std::time::Duration;

use common::*;
use golconde_plugin_api::{AckMode, Consumer, Message, Transport, TRANSPORT_ERROR_HEADER};

fn error(message: &Message) -> Option<&str> {
    message.header(TRANSPORT_ERROR_HEADER)
}

#[test]
fn entries_from_other_producers_are_delivered_each_on_its_own() {
    let stream = Stream::new("hostile");
    let key = stream.key.as_bytes();
    let mut cli = Cli::local();
    let mut add = |fields: &[&[u8]]| {
        let mut args: Vec<&[u8]> = vec![b"XADD", key, b"*"];
        args.extend_from_slice(fields);
        let reply = cli.cmd(&args);
        assert!(matches!(reply, V::Str(_)), "{reply:?}");
    };
    let all_bytes: Vec<u8> = (0..=255).collect();
    let many: Vec<Vec<u8>> = (0..3000)
        .flat_map(|i| [format!("f{i}").into_bytes(), format!("v{i}").into_bytes()])
        .collect();
    let mut many_fields: Vec<&[u8]> = vec![b"body", b"many"];
    many_fields.extend(many.iter().map(Vec::as_slice));
    let big = vec![b'x'; 200_000];

    add(&[b"body", b"first", b"message-id", b"first"]);
    add(&[b"action", b"add", b"table", b"t"]);
    add(&[b"body", &all_bytes, b"message-id", b"binary"]);
    add(&[b"message-id", b"bad-header", b"raw", b"\xff\xfe"]);
    add(&many_fields);
    add(&[
        b"_body",
        b"a header named body",
        b"body",
        b"b",
        b"message-id",
        b"escaped",
    ]);
    add(&[
        b"body",
        b"c",
        TRANSPORT_ERROR_HEADER.as_bytes(),
        b"forged",
        b"message-id",
        b"forged",
    ]);
    add(&[
        b"body",
        b"one",
        b"body",
        b"two",
        b"message-id",
        b"two-bodies",
    ]);
    add(&[b"message-id", b"big", b"body", &big, b"after", b"x"]);
    add(&[b"body", b"last", b"message-id", b"last"]);

    let transport = transport(r#""max_entry_bytes": 100000"#);
    let consumer = transport
        .consume(&stream.key, options(20, AckMode::Cumulative))
        .expect("consumer");
    let got = receive_n(&consumer, 10, Duration::from_secs(10));
    let m: Vec<&Message> = got.iter().map(|d| &d.message).collect();

    assert_eq!(m[0].body.as_slice(), b"first");
    assert_eq!(error(m[0]), None);

    assert!(m[1].body.is_empty());
    assert_eq!(m[1].header("action"), Some("add"));
    assert_eq!(m[1].header("table"), Some("t"));
    assert!(error(m[1]).unwrap().contains("has no `body` field"));

    assert_eq!(
        m[2].body.as_slice(),
        &all_bytes[..],
        "any bytes in the body"
    );
    assert_eq!(error(m[2]), None);

    assert_eq!(m[3].header("message-id"), Some("bad-header"));
    assert_eq!(m[3].header("raw"), None);
    assert!(
        error(m[3]).unwrap().contains("not UTF-8"),
        "{:?}",
        error(m[3])
    );

    assert_eq!(m[4].body.as_slice(), b"many");
    assert_eq!(
        m[4].headers.len(),
        1024 + 2,
        "max_headers, the mark and the time Redis stored it"
    );
    assert_eq!(m[4].header("f1023"), Some("v1023"));
    let why = error(m[4]).unwrap();
    assert!(
        why.contains("1976 fields more than `max_headers` (1024)"),
        "{why}"
    );

    assert_eq!(m[5].body.as_slice(), b"b");
    assert_eq!(m[5].header("body"), Some("a header named body"));
    assert_eq!(error(m[5]), None);

    assert_eq!(m[6].header("message-id"), Some("forged"));
    assert_eq!(error(m[6]), None, "a producer cannot set the mark");

    assert_eq!(m[7].body.as_slice(), b"one");
    assert!(error(m[7]).unwrap().contains("2 `body` fields"));

    assert!(m[8].body.is_empty());
    assert_eq!(m[8].header("message-id"), Some("big"));
    let why = error(m[8]).unwrap();
    assert!(
        why.contains("is 200023 bytes") && why.contains("`max_entry_bytes` (100000)"),
        "{why}"
    );
    assert!(why.contains("200000-byte body was dropped"), "{why}");

    assert_eq!(m[9].body.as_slice(), b"last");
    assert_eq!(error(m[9]), None);
    assert!(got.iter().all(|d| !d.redelivered));

    consumer.ack(got[9].tag, true).expect("ack");
    consumer.close().unwrap();
}

#[test]
fn golconde_headers_named_like_the_body_come_back_as_they_were_sent() {
    let stream = Stream::new("escape");
    let transport = transport("");
    let sent = Message::new(&b"payload"[..])
        .with_header("message-id", "m-1")
        .with_header("body", "a header named body")
        .with_header("_body", "and one with an underscore")
        .with_header("content-type", "application/json")
        .with_header("x-golconde-change-id", "c-7")
        .with_header("colon: backslash \\ ü", "value: ü\\");
    transport
        .publish(&stream.key, std::slice::from_ref(&sent))
        .expect("published");
    let mut cli = Cli::local();
    let entry = cli.run(&["XRANGE", &stream.key, "-", "+"]);
    let fields: Vec<String> = entry.items()[0].items()[1]
        .items()
        .iter()
        .map(V::text)
        .collect();
    assert_eq!(
        fields,
        [
            "body",
            "payload",
            "message-id",
            "m-1",
            "_body",
            "a header named body",
            "__body",
            "and one with an underscore",
            "content-type",
            "application/json",
            "x-golconde-change-id",
            "c-7",
            "colon: backslash \\ ü",
            "value: ü\\",
        ]
    );
    let consumer = transport
        .consume(&stream.key, options(5, AckMode::Cumulative))
        .expect("consumer");
    let got = receive_n(&consumer, 1, Duration::from_secs(5));
    // With the time Redis stored it, from the entry's id.
    let id = entry.items()[0].items()[0].text();
    let stored_ms: u64 = id.split('-').next().unwrap().parse().unwrap();
    let expected = sent.with_header("timestamp", (stored_ms / 1000).to_string());
    assert_eq!(got[0].message, expected);
    consumer.ack(got[0].tag, true).unwrap();
    consumer.close().unwrap();
}

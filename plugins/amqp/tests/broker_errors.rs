//! What the host is told when the broker cannot be used: the right kind of error, naming
//! the broker (never its password) and the queue, and saying what to do.

mod common;

use abi_stable::std_types::{RSlice, RStr};
use common::*;
use golconde_plugin_api::{AckMode, ConsumeOptions, ErrorKind, Message, PluginError};
use lapin::options::QueueDeclareOptions;

fn options() -> ConsumeOptions {
    ConsumeOptions {
        prefetch: 10,
        ack_mode: AckMode::Cumulative,
    }
}

fn assert_names_host_not_password(err: &PluginError, host: &str, password: &str) {
    eprintln!("{err}");
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert!(err.message.contains(host), "{err}");
    assert!(!err.message.contains(password), "{err}");
}

#[test]
fn a_wrong_password_is_a_transient_error_naming_the_host() {
    let transport = build(&serde_json::json!({
        "url": "amqp://guest:not-the-password@127.0.0.1:5672/%2f",
        "connect_timeout_ms": 5000,
    }))
    .unwrap();
    let err = transport.ping().into_result().unwrap_err();
    assert_names_host_not_password(
        &err,
        "amqp://guest:***@127.0.0.1:5672/%2f",
        "not-the-password",
    );
    let queue = TestQueue::new("refused");
    let err = transport
        .consume(RStr::from_str(&queue.name), options())
        .into_result()
        .err()
        .expect("no consumer without a login");
    assert_names_host_not_password(&err, "127.0.0.1:5672", "not-the-password");
    let err = transport
        .publish(
            RStr::from_str(&queue.name),
            RSlice::from_slice(&[Message::new("x")]),
        )
        .into_result()
        .unwrap_err();
    assert_names_host_not_password(&err, "127.0.0.1:5672", "not-the-password");
}

#[test]
fn an_unreachable_broker_is_a_transient_error_naming_the_host() {
    // Port 1 on the loopback: nothing listens there.
    let transport = build(&serde_json::json!({
        "url": "amqp://golconde:s3cret-pw@127.0.0.1:1/%2f",
        "connect_timeout_ms": 5000,
    }))
    .unwrap();
    let err = transport.ping().into_result().unwrap_err();
    assert_names_host_not_password(&err, "amqp://golconde:***@127.0.0.1:1/%2f", "s3cret-pw");
    assert!(err.message.contains("cannot connect"), "{err}");
}

#[test]
fn tls_against_a_plain_port_fails_cleanly() {
    let transport = build(&serde_json::json!({
        "url": "amqps://guest:guest@127.0.0.1:5672/%2f",
        "connect_timeout_ms": 5000,
    }))
    .unwrap();
    let err = transport.ping().into_result().unwrap_err();
    assert_names_host_not_password(&err, "amqps://guest:***@127.0.0.1:5672/%2f", "guest:guest");
}

#[test]
fn passive_declare_of_a_missing_queue_is_a_clear_error() {
    let queue = TestQueue::new("missing");
    let transport = build(&serde_json::json!({"url": URL, "declare": "passive"})).unwrap();
    let err = transport
        .consume(RStr::from_str(&queue.name), options())
        .into_result()
        .err()
        .expect("no consumer for a missing queue");
    eprintln!("{err}");
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert!(err.message.contains(&queue.name), "{err}");
    assert!(err.message.contains("does not exist"), "{err}");
    assert!(err.message.contains("declare"), "{err}");

    let err = transport
        .publish(
            RStr::from_str(&queue.name),
            RSlice::from_slice(&[Message::new("x")]),
        )
        .into_result()
        .unwrap_err();
    assert!(err.message.contains("does not exist"), "{err}");
    assert_eq!(broker().ready(&queue.name), None, "passive creates nothing");

    // Once its owner creates it, the same transport works.
    broker().declare(
        &queue.name,
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
    );
    publish(&transport, &queue.name, &numbered("p", 0..1));
    let consumer = consume(&transport, &queue.name, 1);
    let got = receive_exactly(&consumer, 1);
    consumer.ack(got[0].tag, false).into_result().unwrap();
    consumer.close().into_result().unwrap();
}

#[test]
fn a_queue_with_other_settings_is_a_permanent_error_suggesting_passive() {
    let queue = TestQueue::new("transient-queue");
    broker().declare(&queue.name, QueueDeclareOptions::default());
    let transport = transport();
    let err = transport
        .consume(RStr::from_str(&queue.name), options())
        .into_result()
        .err()
        .expect("durable declare of a non-durable queue fails");
    eprintln!("{err}");
    assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
    assert!(err.message.contains(&queue.name), "{err}");
    assert!(err.message.contains("passive"), "{err}");

    let passive = build(&serde_json::json!({"url": URL, "declare": "passive"})).unwrap();
    publish(&passive, &queue.name, &numbered("ok", 0..1));
    assert_eq!(broker().ready(&queue.name), Some(1));
}

#[test]
fn bad_configuration_is_refused_by_key_without_connecting() {
    let err = build(&serde_json::json!({"url": URL, "prefetch": 5}))
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(err.message.contains("prefetch"), "{err}");

    let err = build(&serde_json::json!({"url": URL, "heartbeat_s": "fast"}))
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(err.message.contains("heartbeat_s"), "{err}");

    let err = build(&serde_json::json!({"url": "amqp://u:hunter2@h:99999/"}))
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(err.message.contains("`url`"), "{err}");
    assert!(!err.message.contains("hunter2"), "{err}");

    // A broker that does not exist is no configuration error: nothing connects yet.
    build(&serde_json::json!({"url": "amqp://nowhere.invalid:5672/%2f"})).unwrap();
}

#[test]
fn an_overlong_queue_name_is_refused_before_connecting() {
    let transport =
        build(&serde_json::json!({"url": "amqp://guest:guest@127.0.0.1:1/%2f"})).unwrap();
    let long = "q".repeat(300);
    let err = transport
        .consume(RStr::from_str(&long), options())
        .into_result()
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert!(err.message.contains("255"), "{err}");
}

/// AMQP reads a prefetch of 0 as "no limit": the broker would push the whole queue into
/// the consumer's memory. Refused as a configuration error naming the setting, before any
/// connection is made and before a queue is declared.
#[test]
fn a_prefetch_of_zero_is_refused() {
    let queue = TestQueue::new("prefetch-0");
    let transport = transport();
    let err = transport
        .consume(
            RStr::from_str(&queue.name),
            ConsumeOptions {
                prefetch: 0,
                ack_mode: AckMode::Cumulative,
            },
        )
        .into_result()
        .err()
        .expect("no consumer without a prefetch limit");
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert!(err.message.contains("`prefetch`"), "{err}");
    assert!(err.message.contains(&queue.name), "{err}");
    assert_eq!(broker().ready(&queue.name), None, "not even declared");
}

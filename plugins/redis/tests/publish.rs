//! Publishing: a batch is in Redis when `publish` returns (read back with `redis-cli`),
//! trimming happens only when `maxlen` is set, `wait_replicas` waits for replicas and
//! fails as transient without them, and what can never be published (too large, a key
//! that is not a stream) is refused with the right kind. Also `declare = "passive"`,
//! which says what to run when the stream or the group is missing.

mod common;

use std::{process::Command, time::Duration};

use common::*;
use golconde_plugin_api::{AckMode, ErrorKind, Message, Transport};

#[test]
fn a_published_batch_is_in_redis_when_publish_returns() {
    let stream = Stream::new("confirm");
    let transport = transport("");
    let batch: Vec<Message> = (0..100)
        .map(|i| message(&format!("p-{i}"), format!("body {i}").as_bytes()))
        .collect();
    transport.publish(&stream.key, &batch).expect("published");
    // Read back with the server's own client.
    let output = Command::new("redis-cli")
        .args([
            "-p",
            &LOCAL_PORT.to_string(),
            "--json",
            "XRANGE",
            &stream.key,
            "-",
            "+",
        ])
        .output()
        .expect("redis-cli runs");
    let entries: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("redis-cli's JSON");
    let entries = entries.as_array().expect("a list of entries");
    assert_eq!(entries.len(), 100);
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(
            entry[1],
            serde_json::json!(["body", format!("body {i}"), "message-id", format!("p-{i}")])
        );
    }
}

#[test]
fn the_stream_is_trimmed_only_when_maxlen_is_set() {
    let plain = Stream::new("untrimmed");
    fill(&transport(""), &plain.key, "u", 0..2000);
    let trimmed = Stream::new("trimmed");
    fill(&transport(r#""maxlen": 100"#), &trimmed.key, "t", 0..2000);
    let mut cli = Cli::local();
    assert_eq!(cli.xlen(&plain.key), 2000);
    // `MAXLEN ~` trims whole nodes of the stream (100 entries each by default).
    let kept = cli.xlen(&trimmed.key);
    assert!((100..=300).contains(&kept), "{kept} entries kept");
}

#[test]
fn wait_replicas_confirms_on_replicas_or_fails_as_transient() {
    let primary = Server::start(&["--repl-diskless-sync-delay", "0"]);
    let replica = Server::start(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
    // The replica is in sync once the primary counts it.
    let mut cli = primary.cli();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cli
        .run(&["INFO", "replication"])
        .text()
        .contains("connected_slaves:1")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the replica never connected"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let key = unique("replicated");
    let one = transport_at(&primary.url(), r#""wait_replicas": 1"#);
    fill(&one, &key, "w", 0..10);
    assert_eq!(
        replica.cli().xlen(&key),
        10,
        "on the replica when confirmed"
    );

    let two = transport_at(
        &primary.url(),
        r#""wait_replicas": 2, "wait_timeout_ms": 200"#,
    );
    let error = two
        .publish(&key, &[message("w-10", b"x")])
        .expect_err("two replicas asked for, one there");
    assert_eq!(error.kind, ErrorKind::Transient, "{error}");
    assert!(
        error.message.contains("only 1 of the 2 replicas")
            && error.message.contains("`wait_replicas`"),
        "{error}"
    );
}

#[test]
fn what_can_never_be_published_is_refused_by_kind() {
    let stream = Stream::new("refused");
    let transport = transport(r#""max_entry_bytes": 4096"#);
    let batch = vec![message("ok", b"small"), message("big", &[b'x'; 5000])];
    let error = transport.publish(&stream.key, &batch).unwrap_err();
    assert_eq!(error.kind, ErrorKind::Permanent, "{error}");
    assert!(
        error.message.contains("message 1 of the batch")
            && error.message.contains("`max_entry_bytes`"),
        "{error}"
    );
    let mut cli = Cli::local();
    assert_eq!(cli.xlen(&stream.key), 0, "nothing of the batch was sent");

    cli.run(&["SET", &stream.key, "not a stream"]);
    let error = transport.publish(&stream.key, &batch[..1]).unwrap_err();
    assert_eq!(error.kind, ErrorKind::Config, "{error}");
    assert!(error.message.contains("WRONGTYPE"), "{error}");
    let error = transport
        .consume(&stream.key, options(1, AckMode::Cumulative))
        .err()
        .expect("consuming a string");
    assert_eq!(error.kind, ErrorKind::Config, "{error}");
    assert!(error.message.contains("other than a stream"), "{error}");

    let error = transport.publish("", &batch[..1]).unwrap_err();
    assert_eq!(error.kind, ErrorKind::Config, "{error}");
}

#[test]
fn passive_consumers_say_what_to_run_when_the_stream_or_group_is_missing() {
    let stream = Stream::new("passive");
    let passive = transport(r#""declare": "passive""#);
    let refused = |what: &str| {
        let error = passive
            .consume_as(&stream.key, options(5, AckMode::Cumulative), "orders")
            .err()
            .unwrap_or_else(|| panic!("consumed with {what}"));
        assert_eq!(error.kind, ErrorKind::Config, "{error}");
        error.message.to_string()
    };
    let message = refused("no stream");
    assert!(
        message.contains(&format!("the stream `{}` does not exist", stream.key)),
        "{message}"
    );
    assert!(
        message.contains(&format!("XGROUP CREATE {} orders 0 MKSTREAM", stream.key)),
        "{message}"
    );
    assert!(message.contains("group `orders`"), "{message}");

    fill(&passive, &stream.key, "s", 0..1);
    let message = refused("no group");
    assert!(
        message.contains("has no consumer group `orders`")
            && message.contains(&format!("XGROUP CREATE {} orders 0`", stream.key)),
        "{message}"
    );

    let mut cli = Cli::local();
    cli.run(&["XGROUP", "CREATE", &stream.key, "orders", "0"]);
    let consumer = passive
        .consume_as(&stream.key, options(5, AckMode::Cumulative), "orders")
        .expect("the group exists now");
    assert_eq!(
        ids(&receive_n(&consumer, 1, Duration::from_secs(5))),
        ["s-0"]
    );
    use golconde_plugin_api::Consumer;
    consumer.close().unwrap();
}

//! Queues declared as the configuration says: quorum queues used end to end, a queue's own
//! type and arguments over the transport's, streams published to but never consumed, and
//! a clear error saying what differs when the queue on the broker is not what Golconde
//! asks for.

mod common;

use abi_stable::std_types::{RSlice, RStr};
use common::*;
use golconde_plugin_api::{
    abi::TransportBox, AckMode, ConsumeOptions, ErrorKind, Message, PluginError,
};
use serde_json::{json, Value};

fn with(extra: Value) -> TransportBox {
    let mut config = json!({"url": URL, "connection_name": unique("types-conn")});
    for (key, value) in extra.as_object().unwrap() {
        config[key] = value.clone();
    }
    build(&config).expect("a valid configuration")
}

fn consume_err(transport: &TransportBox, queue: &str) -> PluginError {
    transport
        .consume(
            RStr::from_str(queue),
            ConsumeOptions {
                prefetch: 10,
                ack_mode: AckMode::Cumulative,
            },
        )
        .into_result()
        .err()
        .expect("consuming is refused")
}

fn publish_err(transport: &TransportBox, queue: &str) -> PluginError {
    transport
        .publish(
            RStr::from_str(queue),
            RSlice::from_slice(&[Message::new("x")]),
        )
        .into_result()
        .expect_err("publishing is refused")
}

fn assert_says(err: &PluginError, kind: ErrorKind, parts: &[&str]) {
    eprintln!("{err}");
    assert_eq!(err.kind, kind, "{err}");
    for part in parts {
        assert!(err.message.contains(part), "`{part}` missing from: {err}");
    }
}

/// A quorum queue of its own (per-queue settings over the transport's) takes messages,
/// delivers them, takes acknowledgements and gives back what was rejected, with the
/// broker's count of deliveries in `x-delivery-count`; the transport's other queues stay
/// classic with the transport's arguments.
#[test]
fn a_quorum_queue_is_declared_and_used_end_to_end() {
    let quorum = TestQueue::new("quorum");
    let classic = TestQueue::new("classic");
    let transport = with(json!({
        "arguments": {"x-max-length": 1000},
        "queues": {&quorum.name: {
            "queue_type": "quorum",
            "arguments": {"x-delivery-limit": 5, "x-single-active-consumer": true},
        }},
    }));
    publish(&transport, &quorum.name, &numbered("q", 0..3));
    publish(&transport, &classic.name, &numbered("c", 0..1));

    let (kind, arguments) = queue_row(&quorum.name).expect("declared");
    assert_eq!(kind, "quorum");
    assert!(arguments.contains("x-delivery-limit"), "{arguments}");
    assert!(
        arguments.contains("x-single-active-consumer"),
        "{arguments}"
    );
    assert!(
        !arguments.contains("x-max-length"),
        "a queue's own arguments replace the transport's: {arguments}"
    );
    let (kind, arguments) = queue_row(&classic.name).expect("declared");
    assert_eq!(kind, "classic");
    assert!(arguments.contains("x-max-length"), "{arguments}");
    assert_eq!(broker().ready(&quorum.name), Some(3));

    let consumer = consume(&transport, &quorum.name, 10);
    let first = receive_exactly(&consumer, 3);
    let bodies: Vec<String> = first.iter().map(body).collect();
    assert_eq!(bodies, ["q-0", "q-1", "q-2"]);
    assert!(first.iter().all(|d| !d.redelivered));
    assert!(first
        .iter()
        .all(|d| d.message.header("x-delivery-count").is_none()));

    // q-0 acknowledged, q-1 rejected back to the queue, q-2 left unacknowledged when the
    // consumer goes away.
    consumer.ack(first[0].tag, false).into_result().unwrap();
    consumer
        .nack(first[1].tag, false, true)
        .into_result()
        .unwrap();
    let again = receive_exactly(&consumer, 1);
    assert_eq!(body(&again[0]), "q-1");
    assert!(again[0].redelivered);
    assert_eq!(again[0].message.header("x-delivery-count"), Some("1"));
    consumer.close().into_result().unwrap();

    // Closed without acknowledging: both come back, counted once more each.
    let consumer = consume(&transport, &quorum.name, 10);
    let mut back = receive_exactly(&consumer, 2);
    back.sort_by_key(body);
    assert_eq!(back.iter().map(body).collect::<Vec<_>>(), ["q-1", "q-2"]);
    assert!(back.iter().all(|d| d.redelivered));
    let counts: Vec<Option<&str>> = back
        .iter()
        .map(|d| d.message.header("x-delivery-count"))
        .collect();
    eprintln!("x-delivery-count after the consumer went away: {counts:?}");
    assert_eq!(counts, [Some("2"), Some("1")]);
    let last = back.iter().map(|d| d.tag).max().unwrap();
    consumer.ack(last, true).into_result().unwrap();
    consumer.close().into_result().unwrap();
    assert_eq!(broker().ready(&quorum.name), Some(0));
}

/// The transport's `queue_type` for every queue, `x-queue-type` given as an argument
/// instead: the same queue.
#[test]
fn the_transport_s_queue_type_applies_to_every_queue() {
    let queue = TestQueue::new("all-quorum");
    let transport = with(json!({"queue_type": "quorum"}));
    publish(&transport, &queue.name, &numbered("a", 0..1));
    assert_eq!(queue_row(&queue.name).unwrap().0, "quorum");
    let same = with(json!({"arguments": {"x-queue-type": "quorum"}}));
    let consumer = consume(&same, &queue.name, 1);
    let got = receive_exactly(&consumer, 1);
    consumer.ack(got[0].tag, false).into_result().unwrap();
    consumer.close().into_result().unwrap();
}

#[test]
fn a_stream_is_published_to_but_never_consumed() {
    let stream = TestQueue::new("stream");
    let transport = with(json!({"queues": {&stream.name: {"queue_type": "stream"}}}));
    publish(&transport, &stream.name, &numbered("s", 0..3));
    publish(&transport, &stream.name, &numbered("s", 3..5));
    assert_eq!(queue_row(&stream.name).unwrap().0, "stream");

    let err = consume_err(&transport, &stream.name);
    assert_says(
        &err,
        ErrorKind::Config,
        &[
            &stream.name,
            "is a stream",
            // Test queue names are bare TOML keys.
            &format!("`queues.{}.queue_type` is \"stream\"", stream.name),
            "offset",
            "fan-out target",
        ],
    );
    // The same with `declare = "passive"`: the type still says what the queue is.
    let passive = with(json!({"declare": "passive", "queue_type": "stream"}));
    assert_says(
        &consume_err(&passive, &stream.name),
        ErrorKind::Config,
        &["`queue_type` is \"stream\""],
    );
    publish(&passive, &stream.name, &numbered("p", 0..1));
}

/// The queue exists as a classic queue; another configuration asks for a quorum one.
#[test]
fn asking_for_another_queue_type_says_what_the_queue_is_and_what_to_set() {
    let queue = TestQueue::new("was-classic");
    publish(&with(json!({})), &queue.name, &numbered("c", 0..1));

    let quorum = with(json!({"queue_type": "quorum"}));
    for err in [
        consume_err(&quorum, &queue.name),
        publish_err(&quorum, &queue.name),
    ] {
        assert_says(
            &err,
            ErrorKind::Permanent,
            &[
                &format!(
                    "queue `{}` on amqp://guest:***@127.0.0.1:5672/%2f",
                    queue.name
                ),
                "exists as a classic queue",
                "declares it as a quorum queue (`queue_type` is \"quorum\")",
                &format!("set `queues.{}.queue_type` = \"classic\"", queue.name),
                "`declare = \"passive\"`",
                "delete the queue",
                "inequivalent arg 'x-queue-type'",
            ],
        );
    }
    assert_eq!(queue_row(&queue.name).unwrap().0, "classic", "left alone");
    assert_eq!(broker().ready(&queue.name), Some(1));
}

/// And the other way round: a quorum queue, and a configuration that says nothing of types.
#[test]
fn a_quorum_queue_asked_for_as_classic_says_so() {
    let queue = TestQueue::new("was-quorum");
    publish(
        &with(json!({"queue_type": "quorum"})),
        &queue.name,
        &numbered("q", 0..1),
    );
    let err = publish_err(&with(json!({})), &queue.name);
    assert_says(
        &err,
        ErrorKind::Permanent,
        &[
            "exists as a quorum queue",
            "as a classic queue",
            "= \"quorum\"",
        ],
    );
}

#[test]
fn asking_for_other_arguments_says_which_differs_and_what_to_set() {
    let queue = TestQueue::new("max-length");
    publish(
        &with(json!({"arguments": {"x-max-length": 10}})),
        &queue.name,
        &numbered("m", 0..1),
    );

    let twenty = with(json!({"arguments": {"x-max-length": 20}}));
    for err in [
        consume_err(&twenty, &queue.name),
        publish_err(&twenty, &queue.name),
    ] {
        assert_says(
            &err,
            ErrorKind::Permanent,
            &[
                &queue.name,
                "exists with argument `x-max-length` = `10`, but Golconde declares it with \
                 `x-max-length` = `20` (from `arguments`)",
                "make \"x-max-length\" = 10 in `arguments`",
                "`declare = \"passive\"`",
                "delete the queue",
            ],
        );
    }
    let none = with(json!({}));
    assert_says(
        &publish_err(&none, &queue.name),
        ErrorKind::Permanent,
        &[
            "declares it without `x-max-length`",
            "make \"x-max-length\" = 10 in `arguments`",
        ],
    );
    // What the error suggests works.
    let passive = with(json!({"declare": "passive"}));
    publish(&passive, &queue.name, &numbered("p", 0..1));
    let matching = with(json!({"queues": {&queue.name: {"arguments": {"x-max-length": 10}}}}));
    publish(&matching, &queue.name, &numbered("n", 0..1));
    assert_eq!(broker().ready(&queue.name), Some(3));
}

/// An argument the queue's type does not take (a classic queue has no delivery limit).
#[test]
fn an_argument_the_queue_type_refuses_is_named() {
    let queue = TestQueue::new("refused-arg");
    let transport = with(json!({"arguments": {"x-delivery-limit": 5}}));
    assert_says(
        &publish_err(&transport, &queue.name),
        ErrorKind::Permanent,
        &[
            "argument `x-delivery-limit` (from `arguments`)",
            "as a classic queue",
            "a classic queue does not take it",
        ],
    );
    assert_eq!(queue_row(&queue.name), None, "nothing was created");
}

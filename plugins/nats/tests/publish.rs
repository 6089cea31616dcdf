//! Publishing: a publish returns only once JetStream stored every message (read back with
//! the server's own client), `Nats-Msg-Id` drops true replays of a change and nothing
//! else, and a message over the server's `max_payload` is refused alone.

mod common;

use common::*;
use golconde_plugin_api::{ErrorKind, Message, Transport};

#[test]
fn a_publish_returns_once_jetstream_stored_every_message() {
    let queue = Queue::new("confirm");
    let transport = transport("");
    let messages: Vec<Message> = (0..2500)
        .map(|i| {
            message(&format!("m-{i}"), format!("body {i}").as_bytes())
                .with_header("content-type", "text/plain")
        })
        .collect();
    // More than one window of acknowledgements in one batch.
    transport.publish(&queue.name, &messages).expect("publish");

    let stored = queue.side.messages(&queue.name);
    assert_eq!(
        stored.len(),
        2500,
        "every message stored before publish returned"
    );
    for (i, (headers, body)) in stored.iter().enumerate() {
        assert_eq!(body, format!("body {i}").as_bytes());
        let headers = headers.as_ref().expect("headers");
        assert_eq!(
            headers.get("message-id").map(|v| v.as_str()),
            Some(format!("m-{i}").as_str())
        );
        assert_eq!(
            headers.get("content-type").map(|v| v.as_str()),
            Some("text/plain")
        );
        assert!(
            headers.get("Nats-Msg-Id").is_none(),
            "no change id, no Nats-Msg-Id"
        );
    }
}

#[test]
fn nats_msg_id_drops_true_replays_only() {
    let queue = Queue::new("dedup");
    let transport = transport("");
    let copy =
        |body: &[u8]| message("fan-out", body).with_header("x-golconde-change-id", "change-1");

    transport
        .publish(&queue.name, &[copy(b"v1")])
        .expect("publish");
    // The host publishing the same batch again: JetStream drops it, and says so.
    transport
        .publish(&queue.name, &[copy(b"v1")])
        .expect("a replay is a success");
    assert_eq!(queue.side.stored(&queue.name), 1, "the replay was dropped");
    // Another change that reuses the id: kept.
    transport
        .publish(&queue.name, &[copy(b"v2")])
        .expect("publish");
    assert_eq!(
        queue.side.stored(&queue.name),
        2,
        "same id, other body: kept"
    );
    // Without a change id, nothing is dropped.
    let plain = message("plain", b"v1");
    transport
        .publish(&queue.name, &[plain.clone(), plain])
        .expect("publish");
    assert_eq!(queue.side.stored(&queue.name), 4);

    let stored = queue.side.messages(&queue.name);
    let id = stored[0]
        .0
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .expect("an id");
    assert!(id.as_str().starts_with("change-1:"), "{}", id.as_str());
    assert_eq!(id.as_str().len(), "change-1:".len() + 32);
    assert!(stored[2]
        .0
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .is_none());
}

#[test]
fn a_message_over_max_payload_is_refused_alone() {
    let queue = Queue::new("max-payload");
    let transport = transport("");
    let huge = Message::new(vec![b'x'; 2 * 1024 * 1024]);
    let err = transport
        .publish(&queue.name, &[message("small", b"ok"), huge])
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
    for words in ["message 1", "2097152", "max_payload", "1048576"] {
        assert!(err.message.contains(words), "`{words}` not in: {err}");
    }
    // Nothing of that batch went out; the small one alone goes.
    assert!(queue.side.stream_of(&queue.name).is_none());
    transport
        .publish(&queue.name, &[message("small", b"ok")])
        .expect("publish");
    assert_eq!(queue.side.stored(&queue.name), 1);
}

#[test]
fn a_subject_nats_cannot_hold_is_a_configuration_error() {
    let transport = transport("");
    for bad in ["a b", "a..b", "orders.*", ""] {
        let err = transport.publish(bad, &[message("m", b"x")]).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config, "{bad:?}: {err}");
    }
}

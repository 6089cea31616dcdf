//! A broker that falls silent is detected by its missing heart-beats, and the consumer
//! reconnects on its own; the message it held comes back, and its old tag is refused.

mod common;

use std::time::Duration;

use common::*;
use golconde_plugin_api::{AckMode, Consumer, ErrorKind, Transport};

#[test]
fn a_silent_broker_is_detected_and_the_connection_re_established() {
    let queue = Queue::new("heartbeat");
    fill(&transport(""), &queue.name, "hb", 1);
    let proxy = Proxy::start(STOMP);
    let transport = transport_at(&proxy.address, r#""heartbeat_ms": [1000, 1000]"#);
    let consumer = transport
        .consume(&queue.name, options(10, AckMode::Cumulative))
        .expect("consumer");
    let first = receive_n(&consumer, 1, Duration::from_secs(10)).remove(0);
    let before = proxy.connections();
    assert_eq!(before, 1, "heart-beats kept the first connection alive");

    // From now on nothing the broker says reaches the consumer, while the broker still
    // hears the consumer's heart-beats and keeps the connection: only the consumer's own
    // heart-beat check can end it. When it does, the proxy closes the broker side too and
    // the broker requeues the message.
    proxy.deafen_existing();
    let again = receive_n(&consumer, 1, Duration::from_secs(30)).remove(0);
    assert_eq!(id(&again), "hb-0");
    assert!(again.redelivered);
    assert!(again.tag > first.tag, "tags stay unique across connections");
    assert!(proxy.connections() > before, "the consumer reconnected");

    let err = consumer.ack(first.tag, true).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert!(err.message.contains("lost"), "{err}");
    consumer
        .ack(again.tag, true)
        .expect("ack on the new connection");
    consumer.close().expect("close");
    assert_eq!(queue.ready(), 0);
}

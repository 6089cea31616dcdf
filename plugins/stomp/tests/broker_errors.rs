//! What goes wrong is reported with the broker's own words and the right kind: a refused
//! login is a configuration error, a refused destination a permanent one, an unreachable
//! broker a transient one; and building the transport never connects.

mod common;

use common::*;
use golconde_plugin_api::{AckMode, ErrorKind, Message, Transport};

#[test]
fn a_bad_login_is_a_config_error_with_the_brokers_message() {
    let transport = transport(r#""passcode": "wrong""#);
    let err = transport.ping().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    // RabbitMQ's ERROR frame says "Bad CONNECT" and "Access refused for user 'guest'".
    assert!(err.message.contains("refused the connection"), "{err}");
    assert!(
        err.message.contains("Access refused"),
        "broker's words: {err}"
    );
    assert!(
        err.message.contains("`passcode`"),
        "says what to check: {err}"
    );
    assert!(
        !err.message.contains("wrong"),
        "never shows the passcode: {err}"
    );

    let queue = Queue::new("bad-login");
    let err = transport
        .consume(&queue.name, options(10, AckMode::Cumulative))
        .err()
        .expect("consume fails");
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert!(err.message.contains(&queue.name), "names the queue: {err}");
    let err = transport
        .publish(&queue.name, &[Message::new(&b"x"[..])])
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert_eq!(queue.ready(), 0);
}

#[test]
fn an_unknown_virtual_host_is_a_config_error() {
    let err = transport(r#""virtual_host": "golconde-no-such-vhost""#)
        .ping()
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert!(err.message.contains("golconde-no-such-vhost"), "{err}");
}

#[test]
fn publishing_to_a_missing_exchange_is_rejected_with_the_brokers_reason() {
    let transport = transport("");
    let destination = format!("/exchange/{}/key", unique("no-such-exchange"));
    let err = transport
        .publish(&destination, &[Message::new(&b"x"[..])])
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
    assert!(err.message.contains("no exchange"), "{err}");
    assert!(err.message.contains(&destination), "{err}");
    // The failed connection is replaced: the next publish works.
    let queue = Queue::new("after-error");
    transport
        .publish(&queue.name, &[Message::new(&b"ok"[..])])
        .expect("publish after an error");
    assert_eq!(queue.ready(), 1);
}

#[test]
fn subscribing_against_a_queue_of_other_properties_is_rejected() {
    // Declared non-durable over AMQP, while STOMP's /queue/ wants it durable.
    let amqp = Amqp::connect();
    let name = unique("non-durable");
    amqp.runtime_declare_transient(&name);
    let err = transport("")
        .consume(&name, options(10, AckMode::Cumulative))
        .err()
        .expect("refused");
    amqp.delete(&name);
    assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
    assert!(err.message.contains("PRECONDITION_FAILED"), "{err}");
}

#[test]
fn an_unreachable_broker_is_transient_and_building_does_not_connect() {
    // Port 1 on localhost: nothing listens there.
    let transport = transport_at("127.0.0.1:1", r#""connect_timeout_ms": 2000"#);
    let err = transport.ping().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert!(err.message.contains("127.0.0.1:1"), "{err}");
    let err = transport
        .consume("anything", options(1, AckMode::Cumulative))
        .err()
        .expect("no broker");
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
}

#[test]
fn messages_that_cannot_be_sent_are_refused_before_anything_is_sent() {
    let queue = Queue::new("unsendable");
    let transport = transport("");
    let batch = [
        Message::new(&b"fine"[..]),
        Message::new(&b"bad"[..]).with_header("", "no name"),
    ];
    let err = transport.publish(&queue.name, &batch).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
    assert!(err.message.contains("message 1"), "{err}");
    assert_eq!(queue.ready(), 0, "nothing of the batch was sent");
    let err = transport.publish("", &batch[..1]).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
}

//! The same plugin against ActiveMQ, the broker the first Golconde ran on. Skipped unless
//! `GOLCONDE_ACTIVEMQ_STOMP=host:port` names a running ActiveMQ STOMP listener. To run one
//! beside RabbitMQ (Debian's `activemq` package, STOMP on 61614, starts in seconds):
//!
//! ```text
//! apt-get install -y activemq
//! dir=$(mktemp -d); mkdir -p "$dir/data" "$dir/tmp"
//! ACTIVEMQ_CONF=$PWD/plugins/stomp/tests/activemq ACTIVEMQ_BASE=$dir \
//!   ACTIVEMQ_DATA=$dir/data ACTIVEMQ_TMP=$dir/tmp ACTIVEMQ_USER=$(id -un) \
//!   ACTIVEMQ_PIDFILE=$dir/activemq.pid \
//!   activemq start xbean:file:$PWD/plugins/stomp/tests/activemq/activemq.xml
//! export GOLCONDE_ACTIVEMQ_STOMP=127.0.0.1:61614
//! export GOLCONDE_ACTIVEMQ_STOMP_TLS=127.0.0.1:61615   # stomp+ssl, client certificate required
//! # afterwards: kill $(cat $dir/activemq.pid); rm -rf $dir
//! ```

mod common;

use std::{io::Write, time::Duration};

use common::*;
use golconde_plugin_api::{AckMode, Consumer, Message, Transport};
use golconde_stomp::Stomp;

/// The transport for the ActiveMQ named by the environment, or `None` (and a note on the
/// test's output) when there is none.
fn activemq(test: &str) -> Option<Stomp> {
    let Ok(address) = std::env::var("GOLCONDE_ACTIVEMQ_STOMP") else {
        // Straight to stderr, past the test harness's capture, so the skip shows in every run.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: no ActiveMQ; set GOLCONDE_ACTIVEMQ_STOMP=host:port to run it"
        );
        return None;
    };
    Some(transport_at(
        &address,
        r#""login": null, "passcode": null, "prefetch_header": "activemq.prefetchSize""#,
    ))
}

/// The transport for ActiveMQ's `stomp+ssl` listener named by the environment
/// (`GOLCONDE_ACTIVEMQ_STOMP_TLS`), which requires a client certificate of the test CA in
/// `tests/activemq/tls/`; with `client_certificate` false it offers none.
fn activemq_tls(test: &str, client_certificate: bool) -> Option<Stomp> {
    let Ok(address) = std::env::var("GOLCONDE_ACTIVEMQ_STOMP_TLS") else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: no ActiveMQ TLS listener; set GOLCONDE_ACTIVEMQ_STOMP_TLS=host:port \
             to run it"
        );
        return None;
    };
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/activemq/tls");
    let mut extra = format!(
        r#""login": null, "passcode": null, "prefetch_header": "activemq.prefetchSize",
           "tls": true, "tls_ca_file": "{dir}/ca.pem", "tls_server_name": "localhost""#
    );
    if client_certificate {
        extra.push_str(&format!(
            r#", "tls_cert_file": "{dir}/client.pem", "tls_key_file": "{dir}/client.key""#
        ));
    }
    Some(transport_at(&address, &extra))
}

#[test]
fn activemq_over_tls_with_a_client_certificate() {
    let test = "activemq_over_tls_with_a_client_certificate";
    let Some(transport) = activemq_tls(test, true) else {
        return;
    };
    let queue = unique("activemq-tls");
    transport
        .publish(&queue, &[message("t-0", b"over TLS")])
        .expect("published over TLS");
    let consumer = transport
        .consume(&queue, options(10, AckMode::Cumulative))
        .expect("consumer over TLS");
    let got = receive_n(&consumer, 1, Duration::from_secs(10));
    assert_eq!(id(&got[0]), "t-0");
    assert_eq!(&got[0].message.body[..], b"over TLS");
    consumer.ack(got[0].tag, true).expect("ack");
    consumer.close().expect("close");

    // The broker wants a client certificate: without one, nothing gets through, and the
    // error says which keys to set.
    let without = activemq_tls(test, false).expect("same environment");
    let error = without
        .publish(&queue, &[message("t-1", b"refused")])
        .expect_err("published without a client certificate");
    assert!(error.message.contains("tls_cert_file"), "{error}");
}

/// Another name of 127.0.0.1 than those the test broker's certificate is for (`localhost`,
/// `127.0.0.1`): the machine's own name, if it resolves there.
fn loopback_alias() -> Option<String> {
    use std::net::ToSocketAddrs;
    let output = std::process::Command::new("hostname").output().ok()?;
    let name = String::from_utf8(output.stdout).ok()?.trim().to_string();
    let loopback = (name.as_str(), 0)
        .to_socket_addrs()
        .ok()?
        .any(|a| a.ip() == std::net::Ipv4Addr::LOCALHOST);
    (loopback && !name.is_empty() && name != "localhost").then_some(name)
}

#[test]
fn activemq_over_tls_checks_each_broker_by_its_own_name() {
    let test = "activemq_over_tls_checks_each_broker_by_its_own_name";
    let Ok(address) = std::env::var("GOLCONDE_ACTIVEMQ_STOMP_TLS") else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: no ActiveMQ TLS listener; set GOLCONDE_ACTIVEMQ_STOMP_TLS=host:port"
        );
        return;
    };
    let Some(alias) = loopback_alias() else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: the machine's name does not resolve to 127.0.0.1"
        );
        return;
    };
    let port = address.rsplit_once(':').expect("host:port").1;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/activemq/tls");
    let extra = format!(
        r#""login": null, "passcode": null, "prefetch_header": "activemq.prefetchSize",
           "tls": true, "tls_ca_file": "{dir}/ca.pem", "tls_cert_file": "{dir}/client.pem",
           "tls_key_file": "{dir}/client.key""#
    );
    let wrong = format!("{alias}:{port}");
    let right = format!("localhost:{port}");
    // Both reach the same broker, whose certificate is for `localhost` only: the first is
    // refused for its name, the second, checked by its own name, is taken.
    let transport = transport_in_order(&[&wrong, &right], &extra);
    let queue = unique("activemq-tls-names");
    transport
        .publish(&queue, &[message("n-0", b"checked by its own name")])
        .expect("published through the second broker");
    let consumer = transport
        .consume(&queue, options(10, AckMode::Cumulative))
        .expect("consumer");
    let got = receive_n(&consumer, 1, Duration::from_secs(10));
    assert_eq!(id(&got[0]), "n-0");
    consumer.ack(got[0].tag, true).expect("ack");
    consumer.close().expect("close");

    let error = transport_in_order(&[&wrong], &extra)
        .ping()
        .expect_err("the certificate is not for the machine's name");
    assert!(error.message.contains("not valid for name"), "{error}");
    assert!(error.message.contains("`tls_server_name`"), "{error}");
}

#[test]
fn activemq_publish_consume_ack_and_headers() {
    let Some(transport) = activemq("activemq_publish_consume_ack_and_headers") else {
        return;
    };
    let queue = unique("activemq");
    let messages: Vec<Message> = (0..20)
        .map(|i| {
            message(&format!("a-{i}"), format!("body {i}\0binary").as_bytes())
                .with_header("correlation-id", format!("c-{i}"))
                .with_header("content-type", "application/json")
                .with_header("x-tricky", "colon: and\nnewline")
        })
        .collect();
    transport.publish(&queue, &messages).expect("published");

    let consumer = transport
        .consume(&queue, options(10, AckMode::Cumulative))
        .expect("consumer");
    let first = receive_n(&consumer, 10, Duration::from_secs(10));
    let beyond = consumer
        .receive(10, Duration::from_millis(500))
        .expect("receive");
    assert!(beyond.is_empty(), "ActiveMQ honours activemq.prefetchSize");
    consumer.ack(first[9].tag, true).expect("ack ten");
    let rest = receive_n(&consumer, 10, Duration::from_secs(10));
    for (i, delivery) in first.iter().chain(&rest).enumerate() {
        let m = &delivery.message;
        assert_eq!(id(delivery), format!("a-{i}"));
        assert_eq!(&m.body[..], format!("body {i}\0binary").as_bytes());
        assert_eq!(m.header("correlation-id"), Some(format!("c-{i}").as_str()));
        assert_eq!(m.header("content-type"), Some("application/json"));
        assert_eq!(m.header("x-tricky"), Some("colon: and\nnewline"));
        assert!(!delivery.redelivered);
    }
    // Leave the last five unacknowledged: they come back, marked redelivered.
    consumer.ack(rest[4].tag, true).expect("ack five more");
    consumer.close().expect("close");

    let consumer = transport
        .consume(&queue, options(10, AckMode::Cumulative))
        .expect("second consumer");
    let again = receive_n(&consumer, 5, Duration::from_secs(10));
    assert_eq!(id(&again[0]), "a-15");
    assert!(again.iter().all(|d| d.redelivered), "{again:?}");
    consumer.ack(again[4].tag, true).expect("ack the rest");
    consumer.close().expect("close");
    assert!(
        consume_all(&transport, &queue).is_empty(),
        "everything was acknowledged"
    );
}

#[test]
fn activemq_individual_acknowledgement() {
    let Some(transport) = activemq("activemq_individual_acknowledgement") else {
        return;
    };
    let queue = unique("activemq-individual");
    fill(&transport, &queue, "i", 3);
    let consumer = transport
        .consume(&queue, options(10, AckMode::Individual))
        .expect("consumer");
    let got = receive_n(&consumer, 3, Duration::from_secs(10));
    consumer.ack(got[0].tag, false).expect("ack the first");
    consumer.ack(got[2].tag, false).expect("ack the third");
    consumer.close().expect("close");
    let left = consume_all(&transport, &queue);
    assert_eq!(left.iter().map(id).collect::<Vec<_>>(), ["i-1"]);
}

#[test]
fn activemq_a_message_over_the_frame_limit_costs_only_itself() {
    let test = "activemq_a_message_over_the_frame_limit_costs_only_itself";
    let Some(transport) = activemq(test) else {
        return;
    };
    let address = std::env::var("GOLCONDE_ACTIVEMQ_STOMP").expect("checked by activemq()");
    let small_frames = transport_at(
        &address,
        r#""login": null, "passcode": null, "prefetch_header": "activemq.prefetchSize",
           "max_frame_bytes": 4096"#,
    );
    let queue = unique("activemq-oversized");
    transport
        .publish(
            &queue,
            &[message("big", &[b'x'; 10_000]), message("small", b"small")],
        )
        .expect("published");
    let consumer = small_frames
        .consume(&queue, options(10, AckMode::Cumulative))
        .expect("consumer");
    let got = receive_n(&consumer, 2, Duration::from_secs(10));
    assert_eq!(id(&got[0]), "big");
    assert!(got[0].message.body.is_empty());
    let mark = got[0]
        .message
        .header("x-golconde-transport-error")
        .expect("marked");
    assert!(mark.contains("its 10000-byte body was dropped"), "{mark}");
    assert_eq!(id(&got[1]), "small");
    assert_eq!(&got[1].message.body[..], b"small");
    assert!(!got[1].redelivered, "no reconnection redelivered it");
    consumer.ack(got[1].tag, true).expect("ack");
    consumer.close().expect("close");
    assert!(consume_all(&transport, &queue).is_empty());
}

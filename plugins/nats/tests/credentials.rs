//! Authentication against private nats-servers: user and password (also in the URL), a
//! token, an NKey seed file. The right credentials publish and consume; wrong ones are a
//! configuration error naming the keys to check, and never show the secret.

mod common;

use std::time::Duration;

use common::*;
use golconde_plugin_api::{Consumer, ErrorKind, Transport};

/// Publishes and consumes one message through `transport`.
fn round_trip(transport: &golconde_nats::Nats) {
    transport.ping().expect("ping");
    let queue = unique("auth");
    fill(transport, &queue, "a", 0..1);
    let consumer = transport.consume(&queue, options(10)).expect("consumer");
    let got = receive_n(&consumer, 1, Duration::from_secs(10));
    consumer.ack(got[0].tag, true).expect("ack");
    consumer.close().expect("close");
}

#[track_caller]
fn refused(transport: &golconde_nats::Nats, secret: &str) {
    let err = transport.ping().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert!(err.message.contains("`password`"), "{err}");
    assert!(err.message.contains("`token`"), "{err}");
    assert!(!err.message.contains(secret), "the secret is shown: {err}");
    let err = transport
        .publish(&unique("auth"), &[message("m", b"x")])
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
}

#[test]
fn user_and_password() {
    let server = Server::with_config(
        r#"
        listen: "127.0.0.1:{port}"
        jetstream { store_dir: "{dir}" }
        authorization { users = [ { user: "golconde", password: "s3cr3t-pw" } ] }
        "#,
    );
    round_trip(&transport_at(
        &server.url(),
        r#""user": "golconde", "password": "s3cr3t-pw""#,
    ));
    round_trip(&transport_at(
        &server
            .url()
            .replace("nats://", "nats://golconde:s3cr3t-pw@"),
        "",
    ));
    refused(
        &transport_at(
            &server.url(),
            r#""user": "golconde", "password": "wrong-pw""#,
        ),
        "wrong-pw",
    );
    refused(&transport_at(&server.url(), ""), "s3cr3t-pw");
}

#[test]
fn token() {
    let server = Server::with_config(
        r#"
        listen: "127.0.0.1:{port}"
        jetstream { store_dir: "{dir}" }
        authorization { token: "t0ken-value" }
        "#,
    );
    round_trip(&transport_at(&server.url(), r#""token": "t0ken-value""#));
    refused(
        &transport_at(&server.url(), r#""token": "other-t0ken""#),
        "other-t0ken",
    );
}

#[test]
fn nkey_seed_file() {
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().expect("seed");
    let server = Server::with_config(&format!(
        r#"
        listen: "127.0.0.1:{{port}}"
        jetstream {{ store_dir: "{{dir}}" }}
        authorization {{ users = [ {{ nkey: "{}" }} ] }}
        "#,
        user.public_key()
    ));
    let file = server.dir.path().join("golconde.nk");
    std::fs::write(&file, format!("{seed}\n")).expect("seed written");
    round_trip(&transport_at(
        &server.url(),
        &format!(r#""nkey_seed_file": "{}""#, file.display()),
    ));
    let stranger = server.dir.path().join("stranger.nk");
    std::fs::write(&stranger, nkeys::KeyPair::new_user().seed().expect("seed")).expect("written");
    let err = transport_at(
        &server.url(),
        &format!(r#""nkey_seed_file": "{}""#, stranger.display()),
    )
    .ping()
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert!(err.message.contains("`nkey_seed_file`"), "{err}");
}

//! Logging in: an ACL user with exactly the permissions the documentation lists can ping,
//! publish and consume (the held entries' refresh script included); a password alone logs
//! in as the default user; a wrong or missing password and a missing permission are
//! configuration errors that say what to check and never show the password.

mod common;

use std::time::Duration;

use common::*;
use golconde_plugin_api::{testing, AckMode, Consumer, ErrorKind, Transport};

/// The permissions the crate documentation lists for an ACL user.
const DOCUMENTED: &str = "+xadd +xreadgroup +xack +xautoclaim +xclaim +xpending \
                          +xgroup|create +xinfo|groups +eval +ping +wait";

fn server() -> (Server, Cli) {
    let server = Server::start(&["--requirepass", "topsecret"]);
    let mut cli = server.cli();
    assert_eq!(cli.run(&["AUTH", "topsecret"]), V::Str(b"OK".to_vec()));
    let mut acl = vec![
        "ACL",
        "SETUSER",
        "app",
        "on",
        ">s3cret",
        "~golconde-*",
        "resetchannels",
        "-@all",
    ];
    acl.extend(DOCUMENTED.split_whitespace());
    assert_eq!(cli.run(&acl), V::Str(b"OK".to_vec()));
    let reader = [
        "ACL",
        "SETUSER",
        "reader",
        "on",
        ">r3ad",
        "~*",
        "-@all",
        "+ping",
        "+xreadgroup",
    ];
    assert_eq!(cli.run(&reader), V::Str(b"OK".to_vec()));
    (server, cli)
}

fn at(server: &Server, extra: &str) -> golconde_redis::Redis {
    transport_at(&server.url(), extra)
}

#[test]
fn the_documented_permissions_are_enough() {
    let (server, _cli) = server();
    let key = unique("acl");
    let transport = at(
        &server,
        r#""username": "app", "password": "s3cret", "claim_idle_ms": 60"#,
    );
    transport.ping().expect("ping");
    fill(&transport, &key, "a", 0..5);
    let ((), logged) = testing::logged(|| {
        let consumer = transport
            .consume(&key, options(10, AckMode::Cumulative))
            .expect("consumer");
        let got = receive_n(&consumer, 5, Duration::from_secs(5));
        // Held across several refresh periods, then a claim round.
        std::thread::sleep(Duration::from_millis(200));
        assert!(consumer
            .receive(5, Duration::from_millis(100))
            .unwrap()
            .is_empty());
        consumer.ack(got[4].tag, true).expect("ack");
        consumer.close().unwrap();
    });
    assert!(!logged.contains("WARN"), "{logged}");

    // The same user, given in the URL.
    let in_url = transport_at(
        &format!("redis://app:s3cret@127.0.0.1:{}/0", server.port),
        "",
    );
    in_url.ping().expect("ping with the user in the URL");
}

#[test]
fn a_password_alone_logs_in_as_the_default_user() {
    let (server, _cli) = server();
    at(&server, r#""password": "topsecret""#)
        .ping()
        .expect("ping");
    let error = at(&server, "").ping().unwrap_err();
    assert_eq!(error.kind, ErrorKind::Config, "{error}");
    assert!(
        error.message.contains("NOAUTH") && error.message.contains("`password`"),
        "{error}"
    );
}

#[test]
fn refused_logins_and_permissions_say_what_to_check() {
    let (server, _cli) = server();
    let key = unique("refused");
    let wrong = at(&server, r#""username": "app", "password": "wrong-one""#);
    let error = wrong.ping().unwrap_err();
    assert_eq!(error.kind, ErrorKind::Config, "{error}");
    assert!(error.message.contains("WRONGPASS"), "{error}");
    assert!(
        error.message.contains("`username` and `password`"),
        "{error}"
    );
    assert!(!error.message.contains("wrong-one"), "{error}");
    let error = wrong
        .consume(&key, options(1, AckMode::Cumulative))
        .err()
        .expect("consumed with a wrong password");
    assert_eq!(error.kind, ErrorKind::Config, "{error}");

    let in_url = transport_at(
        &format!("redis://app:wrong-one@127.0.0.1:{}/0", server.port),
        "",
    );
    let error = in_url.ping().unwrap_err();
    assert!(
        error.message.contains("redis://app:***@127.0.0.1"),
        "{error}"
    );
    assert!(!error.message.contains("wrong-one"), "{error}");

    let reader = at(&server, r#""username": "reader", "password": "r3ad""#);
    let error = reader.publish(&key, &[message("m", b"x")]).unwrap_err();
    assert_eq!(error.kind, ErrorKind::Config, "{error}");
    assert!(
        error.message.contains("NOPERM") && error.message.contains("ACL user"),
        "{error}"
    );
}

//! `amqps://` against a real TLS listener: a RabbitMQ node of the test's own whose
//! certificate a private CA signed and which refuses clients without a certificate of
//! that CA. A wrong or missing trust anchor or client certificate is refused with a
//! reason; with the right files, messages go over TLS into PostgreSQL.

use std::time::Duration;

use golconde_e2e::{
    broker::{Certificates, PrivateBroker},
    eventually, run,
    services::{unique, Database},
    Daemon, Scratch,
};

/// A configuration whose `tls` transport reaches `url` with the given `tls_*` lines.
fn config(url: &str, tls_lines: &str, rest: &str) -> String {
    format!(
        r#"
plugin_dirs = ["{{plugins}}"]
[log]
level = "info"

[transports.tls]
plugin = "amqp"
url = "{url}"
connect_timeout_ms = 5000
{tls_lines}
{rest}
"#
    )
}

fn files(ca: &std::path::Path, client: Option<&Certificates>) -> String {
    let mut lines = format!("tls_ca_file = \"{}\"\n", ca.display());
    if let Some(certs) = client {
        lines.push_str(&format!(
            "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            certs.client_cert.display(),
            certs.client_key.display()
        ));
    }
    lines
}

/// `golconde check --connect` on a configuration with only the `tls` transport.
fn check(scratch: &Scratch, url: &str, tls_lines: &str) -> (bool, String) {
    let path = scratch.config(&config(url, tls_lines, ""));
    let (output, text) = run(&["check", "--connect", "--config", path.to_str().unwrap()]);
    (output.status.success(), text)
}

#[test]
fn tls_connections_are_verified_both_ways() {
    let certs = Certificates::generate();
    let broker = PrivateBroker::start_with("tls", Some(&certs));
    let scratch = Scratch::new();
    let url = broker.tls_url();

    let (ok, text) = check(&scratch, &url, &files(&certs.ca, Some(&certs)));
    assert!(ok, "{text}");
    assert!(text.contains("connected"), "{text}");

    // The server's certificate is signed by a CA the client was not told to trust.
    for (what, lines) in [
        ("no tls_ca_file", String::new()),
        ("an unrelated CA", files(&certs.other_ca, Some(&certs))),
    ] {
        let (ok, text) = check(&scratch, &url, &lines);
        eprintln!("{what}: {text}");
        assert!(!ok, "{what}: {text}");
        assert!(text.contains("cannot connect"), "{what}: {text}");
        assert!(
            text.contains("certificate is not trusted") && text.contains("tls_ca_file"),
            "{what}: the reason should say what to do: {text}"
        );
        assert!(
            !text.contains("guest:guest"),
            "{what}: password shown: {text}"
        );
    }

    // The broker asks for a client certificate and none is given.
    let (ok, text) = check(&scratch, &url, &files(&certs.ca, None));
    eprintln!("no client certificate: {text}");
    assert!(!ok, "{text}");
    assert!(text.contains("cannot connect"), "{text}");
    assert!(text.contains("tls_cert_file"), "{text}");

    // A plain client on the TLS port, and TLS files with a plain URL.
    let plain_on_tls = url.replace("amqps://", "amqp://");
    let (ok, text) = check(&scratch, &plain_on_tls, "");
    assert!(!ok, "{text}");
    let (ok, text) = check(&scratch, &broker.url(), &files(&certs.ca, Some(&certs)));
    assert!(!ok, "{text}");
    assert!(text.contains("is not amqps://"), "{text}");
}

#[test]
fn messages_travel_over_tls_into_the_database() {
    let certs = Certificates::generate();
    let broker = PrivateBroker::start_with("tlsflow", Some(&certs));
    let db = Database::create(
        "tlsflow",
        "create table items (id bigint primary key, name text not null)",
    );
    let scratch = Scratch::new();
    let queue = unique("tlsflow").replace('_', ".");
    let pipeline = format!(
        r#"
[databases.db]
plugin = "postgres"
dsn = "{}"

[[pipelines]]
name = "tls"
transport = "tls"
queue = "{queue}"
processor = {{ plugin = "autosql" }}
database = "db"
table = "items"
"#,
        db.dsn()
    );
    let path = scratch.config(&config(
        &broker.tls_url(),
        &files(&certs.ca, Some(&certs)),
        &pipeline,
    ));

    let input = scratch.path("changes.jsonl");
    let lines: String = (0..500)
        .map(|i| {
            format!("{{\"action\": \"set\", \"data\": {{\"id\": {i}, \"name\": \"n{i}\"}}}}\n")
        })
        .collect();
    std::fs::write(&input, lines).unwrap();
    let (output, text) = run(&[
        "send",
        "--config",
        path.to_str().unwrap(),
        "--transport",
        "tls",
        "--queue",
        &queue,
        input.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("500 message(s) confirmed"), "{text}");

    let daemon = Daemon::start(&path);
    let mut db = db;
    let done = eventually(Duration::from_secs(60), || db.count("items") == 500);
    let (status, log) = daemon.stop();
    assert!(done, "{} rows; log:\n{log}", db.count("items"));
    assert!(status.success(), "{log}");
    assert_eq!(
        db.rows("select name from items where id = 499"),
        vec!["n499".to_string()]
    );
}

//! TLS to the broker over both protocols, against real TLS listeners: a RabbitMQ node of
//! the test's own whose certificate a private CA signed and which refuses clients without
//! a certificate of that CA. A wrong or missing trust anchor or client certificate is
//! refused with a reason that names the key to set; with the right files, changes travel
//! over `amqps://` and STOMP over TLS into PostgreSQL.

use std::{path::Path, time::Duration};

use golconde_e2e::{
    broker::{Certificates, PrivateBroker},
    eventually, run,
    services::{unique, Database},
    Daemon, Scratch,
};

/// The `tls_*` lines: trust `ca`, and present the client certificate if `client`.
fn files(ca: &Path, client: Option<&Certificates>) -> String {
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

/// `[transports.amqps]` to `url` with `tls_lines`.
fn amqp(url: &str, tls_lines: &str) -> String {
    format!(
        "[transports.amqps]\nplugin = \"amqp\"\nurl = \"{url}\"\nconnect_timeout_ms = 5000\n\
         {tls_lines}\n"
    )
}

/// `[transports.stomps]` to `address` with `tls = true` and `tls_lines`.
fn stomp(address: &str, tls_lines: &str) -> String {
    format!(
        "[transports.stomps]\nplugin = \"stomp\"\naddress = \"{address}\"\nlogin = \"guest\"\n\
         passcode = \"guest\"\nconnect_timeout_ms = 5000\ntls = true\n{tls_lines}\n"
    )
}

fn config(sections: &str) -> String {
    format!("plugin_dirs = [\"{{plugins}}\"]\n[log]\nlevel = \"info\"\n{sections}")
}

/// A transport's section, given its `tls_*` lines.
type TransportSection<'a> = dyn Fn(&str) -> String + 'a;

/// `golconde check --connect` on a configuration of `transport` alone.
fn check(scratch: &Scratch, transport: &str) -> (bool, String) {
    let path = scratch.config(&config(transport));
    let (output, text) = run(&["check", "--connect", "--config", path.to_str().unwrap()]);
    (output.status.success(), text)
}

#[test]
fn tls_connections_are_verified_both_ways_over_both_protocols() {
    let certs = Certificates::generate();
    let broker = PrivateBroker::start_with("tls", Some(&certs));
    let scratch = Scratch::new();
    let url = broker.tls_url();
    let address = broker.stomp_tls_address();
    let transports: [(&str, &TransportSection); 2] = [
        ("amqp", &|lines: &str| amqp(&url, lines)),
        ("stomp", &|lines: &str| stomp(&address, lines)),
    ];

    for (protocol, transport) in transports {
        let (ok, text) = check(&scratch, &transport(&files(&certs.ca, Some(&certs))));
        assert!(ok, "{protocol}: {text}");
        assert!(text.contains("connected"), "{protocol}: {text}");

        // The server's certificate is signed by a CA the client was not told to trust.
        for (what, lines) in [
            ("no tls_ca_file", String::new()),
            ("an unrelated CA", files(&certs.other_ca, Some(&certs))),
        ] {
            let (ok, text) = check(&scratch, &transport(&lines));
            assert!(!ok, "{protocol}, {what}: {text}");
            assert!(
                text.contains("certificate is not trusted") && text.contains("tls_ca_file"),
                "{protocol}, {what}: the reason should say what to do: {text}"
            );
            assert!(
                !text.contains("guest:guest"),
                "{protocol}, {what}: password shown: {text}"
            );
        }

        // The broker asks for a client certificate and none is given.
        let (ok, text) = check(&scratch, &transport(&files(&certs.ca, None)));
        assert!(!ok, "{protocol}: {text}");
        assert!(text.contains("tls_cert_file"), "{protocol}: {text}");
    }

    // The certificate is for localhost, not for the name the STOMP client checks.
    let named = format!(
        "{}tls_server_name = \"broker.example\"\n",
        files(&certs.ca, Some(&certs))
    );
    let (ok, text) = check(&scratch, &stomp(&address, &named));
    assert!(!ok, "{text}");
    assert!(text.contains("tls_server_name"), "{text}");

    // TLS files with a plain URL are refused before any connection.
    let (ok, text) = check(
        &scratch,
        &amqp(&broker.url(), &files(&certs.ca, Some(&certs))),
    );
    assert!(!ok, "{text}");
    assert!(text.contains("is not amqps://"), "{text}");
}

#[test]
fn changes_travel_over_tls_into_the_database_over_both_protocols() {
    let certs = Certificates::generate();
    let broker = PrivateBroker::start_with("tlsflow", Some(&certs));
    let mut db = Database::create(
        "tlsflow",
        "create table items (id bigint primary key, name text not null)",
    );
    let scratch = Scratch::new();
    let lines = files(&certs.ca, Some(&certs));
    // Each queue is published to over one protocol and consumed over the other.
    let (to_stomp, to_amqp) = (
        unique("tls_a").replace('_', "."),
        unique("tls_s").replace('_', "."),
    );
    let pipeline = |name: &str, transport: &str, queue: &str| {
        format!(
            "[[pipelines]]\nname = \"{name}\"\ntransport = \"{transport}\"\nqueue = \"{queue}\"\n\
             processor = {{ plugin = \"autosql\" }}\ndatabase = \"db\"\ntable = \"items\"\n"
        )
    };
    let path = scratch.config(&config(&format!(
        "{}{}[databases.db]\nplugin = \"postgres\"\ndsn = \"{}\"\n{}{}",
        amqp(&broker.tls_url(), &lines),
        stomp(&broker.stomp_tls_address(), &lines),
        db.dsn(),
        pipeline("from-amqp", "stomps", &to_stomp),
        pipeline("from-stomp", "amqps", &to_amqp),
    )));

    for (transport, queue, ids) in [("amqps", &to_stomp, 0..250), ("stomps", &to_amqp, 250..500)] {
        let input = scratch.path(&format!("{transport}.jsonl"));
        let text: String = ids
            .map(|i| {
                format!("{{\"action\": \"set\", \"data\": {{\"id\": {i}, \"name\": \"n{i}\"}}}}\n")
            })
            .collect();
        std::fs::write(&input, text).unwrap();
        let (output, text) = run(&[
            "send",
            "--config",
            path.to_str().unwrap(),
            "--transport",
            transport,
            "--queue",
            queue,
            input.to_str().unwrap(),
        ]);
        assert!(output.status.success(), "{transport}: {text}");
        assert!(
            text.contains("250 message(s) confirmed"),
            "{transport}: {text}"
        );
    }

    let daemon = Daemon::start(&path);
    let done = eventually(Duration::from_secs(60), || db.count("items") == 500);
    let (status, log) = daemon.stop();
    assert!(done, "{} rows; log:\n{log}", db.count("items"));
    assert!(status.success(), "{log}");
    assert_eq!(
        db.rows("select count(*) from items where name = 'n' || id"),
        vec!["500".to_string()]
    );
}

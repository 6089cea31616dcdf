//! The `mysql` database over TLS, against a MariaDB server of the test's own that wants a
//! client certificate: with `ssl_mode = "verify_identity"`, the CA and the client
//! certificate, changes replicate; with a CA that did not sign the server's certificate, or
//! without the client certificate, the connection is refused with an error that says so.

use std::time::Duration;

use golconde_e2e::{
    broker::Certificates,
    eventually,
    mariadb::PrivateMariaDb,
    run,
    services::{real_config, unique, Queues},
    Daemon, Scratch,
};

fn database_section(db: &PrivateMariaDb, tls: &str) -> String {
    format!(
        "\n[databases.db]\nplugin = \"mysql\"\ndsn = \"{}\"\n{tls}\n",
        db.dsn()
    )
}

fn tls_keys(mode: &str, ca: &std::path::Path, client: Option<&Certificates>) -> String {
    let mut keys = format!("ssl_mode = \"{mode}\"\nssl_ca = \"{}\"\n", ca.display());
    if let Some(c) = client {
        keys.push_str(&format!(
            "ssl_cert = \"{}\"\nssl_key = \"{}\"\n",
            c.client_cert.display(),
            c.client_key.display()
        ));
    }
    keys
}

#[test]
fn changes_replicate_over_verified_tls_with_a_client_certificate() {
    let certificates = Certificates::generate();
    let db = PrivateMariaDb::start_tls(&certificates);
    db.sql("create table shop.items (id bigint primary key, version int not null)");
    let mut queues = Queues::new();
    let queue = queues.name("my-tls");
    let scratch = Scratch::new();
    let mut text = database_section(
        &db,
        &tls_keys("verify_identity", &certificates.ca, Some(&certificates)),
    );
    text.push_str(&format!(
        r#"
[[pipelines]]
name = "tls"
transport = "rabbit"
queue = "{queue}"
processor = "autosql"
database = "db"
table = "items"
"#
    ));
    let config = scratch.config(&real_config(&unique("mytls"), &[], &text));
    let messages: Vec<String> = (0..1000)
        .map(|i| {
            format!(
                r#"{{"action": "set", "data": {{"id": {}, "version": {i}}}}}"#,
                i % 100
            )
        })
        .collect();
    queues.publish(&queue, &messages);
    let daemon = Daemon::start(&config);
    let done = eventually(Duration::from_secs(60), || queues.depth(&queue) == (0, 0));
    let (status, log) = daemon.stop();
    assert!(done, "queue not drained: {:?}\n{log}", queues.depth(&queue));
    assert!(status.success(), "{log}");
    assert_eq!(
        db.sql("select count(*), sum(version) from shop.items")
            .trim(),
        format!("100\t{}", (900..1000).sum::<i32>())
    );
}

/// `golconde check --connect` with the database section `tls`: its success and output.
fn check_connect(db: &PrivateMariaDb, tls: &str) -> (bool, String) {
    let scratch = Scratch::new();
    let mut text = database_section(db, tls);
    text.push_str(
        "\n[[pipelines]]\nname = \"p\"\ntransport = \"rabbit\"\nqueue = \"unused\"\nprocessor = \"autosql\"\ndatabase = \"db\"\ntable = \"items\"\n",
    );
    let config = scratch.config(&real_config(&unique("mytls-check"), &[], &text));
    let (output, text) = run(&["check", "--connect", "--config", config.to_str().unwrap()]);
    (output.status.success(), text)
}

#[test]
fn a_server_certificate_from_another_authority_or_no_client_certificate_is_refused() {
    let certificates = Certificates::generate();
    let db = PrivateMariaDb::start_tls(&certificates);

    let (ok, out) = check_connect(
        &db,
        &tls_keys("verify_ca", &certificates.other_ca, Some(&certificates)),
    );
    assert!(!ok, "an unrelated CA was accepted:\n{out}");
    assert!(
        out.contains("check that `ssl_ca` names the authority"),
        "{out}"
    );

    let (ok, out) = check_connect(&db, &tls_keys("verify_ca", &certificates.ca, None));
    assert!(!ok, "no client certificate, yet connected:\n{out}");
    assert!(out.contains("Access denied for user 'golconde'"), "{out}");
    assert!(out.contains("give `ssl_cert` and `ssl_key`"), "{out}");

    let (ok, out) = check_connect(
        &db,
        &tls_keys("verify_identity", &certificates.ca, Some(&certificates)),
    );
    assert!(ok, "{out}");
}

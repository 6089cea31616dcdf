//! The outbox over TLS, with the `postgres` plugin's `sslmode` and `sslrootcert`, against
//! the local server's TLS (Debian's PostgreSQL serves the "snakeoil" certificate,
//! self-signed for `localhost`): the consuming session is encrypted and verified, and a
//! root that signed nothing the server has is refused, saying so.

use std::time::Duration;

use golconde_pgoutbox::PgOutbox;
use golconde_plugin_api::{
    testing, AckMode, ConsumeOptions, Consumer, ErrorKind, Message, Plugin, RVec, Transport,
};

const PG: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";
const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
/// A root certificate that signed nothing the server has.
const UNRELATED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../postgres/tests/unrelated-ca.pem"
);

fn transport(dsn: &str) -> PgOutbox {
    let config = serde_json::json!({ "dsn": dsn, "poll_interval_ms": 100 });
    PgOutbox::new(
        serde_json::from_value(config).expect("a pgoutbox configuration"),
        &testing::host("tls"),
    )
    .expect("pgoutbox")
}

fn options() -> ConsumeOptions {
    ConsumeOptions {
        prefetch: 10,
        ack_mode: AckMode::Cumulative,
    }
}

#[test]
fn an_outbox_is_consumed_over_verified_tls() {
    let mut admin = postgres::Client::connect(PG, postgres::NoTls).expect("PostgreSQL");
    let schema = format!("golconde_tls_{}", std::process::id());
    let queue = format!("{schema}.q");
    let verified = format!(
        "host=localhost user=postgres dbname=postgres sslmode=verify-full sslrootcert={SNAKEOIL}"
    );
    let outbox = transport(&verified);
    outbox
        .publish(
            &queue,
            &[Message {
                body: RVec::from(b"{}".to_vec()),
                headers: RVec::new(),
            }],
        )
        .expect("published over TLS");
    let consumer = outbox
        .consume(&queue, options())
        .expect("consuming over TLS");
    let got = consumer
        .receive(10, Duration::from_secs(10))
        .expect("receive");
    assert_eq!(got.len(), 1);
    // The session holding the outbox's lock is the consumer's.
    let encrypted: Vec<bool> = admin
        .query(
            "SELECT s.ssl FROM pg_locks l JOIN pg_stat_ssl s ON s.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.objid = to_regclass($1)::oid",
            &[&queue],
        )
        .expect("pg_locks")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(encrypted, [true], "the consuming session is encrypted");
    consumer.ack(got[0].tag, true).expect("ack");
    consumer.close().expect("close");

    let unrelated = transport(&format!(
        "host=localhost user=postgres dbname=postgres sslmode=verify-full sslrootcert={UNRELATED}"
    ));
    let error = match unrelated.consume(&queue, options()) {
        Ok(_) => panic!("consumed with a root that signed nothing the server has"),
        Err(e) => e,
    };
    assert_eq!(error.kind, ErrorKind::Transient, "{error}");
    assert!(
        error.message.as_str().contains("certificate"),
        "the error says what failed: {error}"
    );
    let _ = admin.batch_execute(&format!("drop schema if exists {schema} cascade"));
}

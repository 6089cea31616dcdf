//! `sslmode` with libpq's meanings, against the local server's TLS (Debian's PostgreSQL
//! serves the "snakeoil" certificate, self-signed for `localhost`).

mod common;

use common::*;
use golconde_plugin_api::{sdk::parse_config, Database, ErrorKind, PluginError};
use golconde_postgres::{Config, Postgres};

const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
/// A root certificate that signed nothing the server has.
const UNRELATED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/unrelated-ca.pem");

fn plugin(dsn: &str) -> Result<Postgres, PluginError> {
    Postgres::from_config(parse_config::<Config>(&format!(r#"{{"dsn": "{dsn}"}}"#))?)
}

/// Whether the session's connection is encrypted, as the server sees it.
fn encrypted(db: &Db, dsn: &str) -> Result<bool, PluginError> {
    let mut session = plugin(dsn)?.connect()?;
    let pid = session.backend_pid()?;
    Ok(db.query("SELECT ssl FROM pg_stat_ssl WHERE pid = $1", &[&pid])[0].get(0))
}

fn refused(db: &Db, dsn: &str) -> String {
    match encrypted(db, dsn) {
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::Transient, "{e}");
            e.message.into_string()
        }
        Ok(_) => panic!("{dsn} connected"),
    }
}

#[test]
fn the_server_offers_tls() {
    let db = Db::new("tls_server");
    assert_eq!(
        db.text("SHOW ssl"),
        "on",
        "these tests need a server with TLS"
    );
}

#[test]
fn disable_prefer_and_require_encrypt_as_libpq_does() {
    let db = Db::new("tls_modes");
    let base = "host=127.0.0.1 user=postgres dbname=postgres";
    assert!(!encrypted(&db, &format!("{base} sslmode=disable")).unwrap());
    // Encrypted without verifying the self-signed certificate, as libpq does.
    assert!(encrypted(&db, base).unwrap());
    assert!(encrypted(&db, &format!("{base} sslmode=prefer")).unwrap());
    assert!(encrypted(&db, &format!("{base} sslmode=require")).unwrap());
}

#[test]
fn verify_full_checks_the_chain_and_the_host_name() {
    let db = Db::new("tls_verify_full");
    let good = format!(
        "host=localhost user=postgres dbname=postgres sslmode=verify-full sslrootcert={SNAKEOIL}"
    );
    assert!(encrypted(&db, &good).unwrap());
    let url = format!(
        "postgres://postgres@localhost/postgres?sslmode=verify-full&sslrootcert={}",
        SNAKEOIL.replace('/', "%2F")
    );
    assert!(encrypted(&db, &url).unwrap());

    // The certificate is for `localhost`, not `127.0.0.1`.
    let error = refused(
        &db,
        &format!("host=127.0.0.1 user=postgres sslmode=verify-full sslrootcert={SNAKEOIL}"),
    );
    assert!(error.contains("certificate not valid for name"), "{error}");
    assert!(
        error.contains("cannot connect to postgres://postgres@127.0.0.1/"),
        "{error}"
    );
    // A root that did not sign it.
    let error = refused(
        &db,
        &format!("host=localhost user=postgres sslmode=verify-full sslrootcert={UNRELATED}"),
    );
    assert!(error.contains("UnknownIssuer"), "{error}");
}

#[test]
fn verify_ca_checks_the_chain_only() {
    let db = Db::new("tls_verify_ca");
    assert!(encrypted(
        &db,
        &format!("host=127.0.0.1 user=postgres sslmode=verify-ca sslrootcert={SNAKEOIL}")
    )
    .unwrap());
    let error = refused(
        &db,
        &format!("host=127.0.0.1 user=postgres sslmode=verify-ca sslrootcert={UNRELATED}"),
    );
    assert!(error.contains("certificate"), "{error}");
    // With a root certificate named, `require` checks the chain too.
    let error = refused(
        &db,
        &format!("host=127.0.0.1 user=postgres sslmode=require sslrootcert={UNRELATED}"),
    );
    assert!(error.contains("certificate"), "{error}");
}

//! TLS settings against the local MariaDB, which has no TLS set up: `required` and the
//! verifying modes fail to connect, saying that the server offers no TLS and what to do;
//! `preferred` (the default) connects without; `disabled` never tries. The certificate
//! files are checked when the configuration is read. A handshake with a server that has
//! TLS is not tested here.

mod common;

use common::*;
use golconde_plugin_api::{Database, ErrorKind};

#[test]
fn required_tls_against_a_server_without_it_fails_clearly() {
    let db = Db::new("tls");
    for mode in ["required", "verify_ca", "verify_identity"] {
        let my = db.plugin(&format!(r#", "ssl_mode": "{mode}""#));
        let error = my.connect().err().unwrap();
        assert_eq!(error.kind, ErrorKind::Transient, "{mode}: {error}");
        assert!(
            error.message.contains("the server does not offer TLS"),
            "{mode}: {error}"
        );
        assert!(error.message.contains(mode), "{mode}: {error}");
    }
    for mode in ["preferred", "disabled"] {
        let my = db.plugin(&format!(r#", "ssl_mode": "{mode}""#));
        assert!(my.connect().is_ok(), "{mode}");
    }
}

#[test]
fn certificate_files_are_read_with_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("junk.pem"), "junk").unwrap();
    let config = |extra: &str| format!(r#"{{"dsn": "{DSN}/x", "ssl_mode": "verify_ca"{extra}}}"#);
    // Relative paths are resolved against the configuration's folder: here, the test's.
    for (extra, key) in [
        (r#", "ssl_ca": "missing.pem""#.to_string(), "`ssl_ca`"),
        (
            format!(r#", "ssl_ca": "{}""#, dir.path().join("junk.pem").display()),
            "`ssl_ca`",
        ),
        (
            format!(
                r#", "ssl_cert": "{0}", "ssl_key": "{0}""#,
                dir.path().join("junk.pem").display()
            ),
            "`ssl_cert`",
        ),
        (
            r#", "ssl_key": "k.pem""#.to_string(),
            "`ssl_key` needs `ssl_cert`",
        ),
    ] {
        let err =
            golconde_plugin_api::testing::build_database::<golconde_mysql::Mysql>(&config(&extra))
                .err()
                .unwrap();
        assert_eq!(err.kind, ErrorKind::Config, "{extra}: {err}");
        assert!(err.message.contains(key), "{extra}: {err}");
    }
}

//! `sslcert`/`sslkey`: a server that authenticates clients by certificate only
//! (`hostssl ... cert`) lets in the session that presents one its CA signed, and refuses
//! one without, or with another CA's.
//!
//! The shared server must not be reconfigured, so the test starts a PostgreSQL server of
//! its own (`common::server`).

mod common;

use std::{fs, os::unix::fs::PermissionsExt};

use common::server::Server;
use golconde_plugin_api::{sdk::parse_config, Database, ErrorKind, PluginError};
use golconde_postgres::{Config, Postgres};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

/// A server that accepts only TLS connections with a client certificate signed by the CA
/// in `ca` (PEM), presenting `cert`/`key` as its own.
fn start(ca: &str, cert: &str, key: &str) -> Server {
    Server::start(
        "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
         ssl_ca_file = 'root.crt'",
        "hostssl all all 127.0.0.1/32 cert\n",
        &[
            ("root.crt", ca, 0o644),
            ("server.crt", cert, 0o644),
            ("server.key", key, 0o600),
        ],
    )
}

/// Throwaway certificates in PEM: the CA; certificates it signed, with their keys, for the
/// server, for the `postgres` user and for another user; and a client certificate
/// another CA signed.
struct Certificates {
    dir: tempfile::TempDir,
    ca: String,
    server: (String, String),
}

impl Certificates {
    fn generate() -> Certificates {
        let dir = tempfile::tempdir().unwrap();
        let (ca_params, ca_key, ca) = authority("golconde test CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let server = leaf(&issuer, "localhost", true);
        let client = leaf(&issuer, "postgres", false);
        let someone_else = leaf(&issuer, "someone-else", false);
        let (other_params, other_key, _) = authority("unrelated CA");
        let stranger = leaf(&Issuer::new(other_params, other_key), "postgres", false);
        for (name, text) in [
            ("ca.pem", &ca),
            ("client.pem", &client.0),
            ("client.key", &client.1),
            ("stranger.pem", &stranger.0),
            ("stranger.key", &stranger.1),
            ("someone-else.pem", &someone_else.0),
            ("someone-else.key", &someone_else.1),
        ] {
            let path = dir.path().join(name);
            fs::write(&path, text).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        }
        Certificates { dir, ca, server }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

fn authority(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let pem = params.self_signed(&key).unwrap().pem();
    (params, key, pem)
}

fn leaf(issuer: &Issuer<'_, KeyPair>, name: &str, server: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    if server {
        params.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::IpAddress([127, 0, 0, 1].into()),
        ];
    }
    let pem = params.signed_by(&key, issuer).unwrap().pem();
    (pem, key.serialize_pem())
}

/// Opens a session with `dsn` and asks the server who it is talking to.
fn connect(dsn: &str) -> Result<i32, PluginError> {
    let plugin = Postgres::from_config(parse_config::<Config>(
        &serde_json::json!({ "dsn": dsn }).to_string(),
    )?)?;
    plugin.connect()?.backend_pid()
}

#[test]
fn a_client_certificate_opens_a_server_that_asks_for_one() {
    let certs = Certificates::generate();
    let server = start(&certs.ca, &certs.server.0, &certs.server.1);
    let base = format!(
        "host=localhost port={} user=postgres dbname=postgres sslmode=verify-full sslrootcert={}",
        server.port,
        certs.path("ca.pem")
    );
    let pid = connect(&format!(
        "{base} sslcert={} sslkey={}",
        certs.path("client.pem"),
        certs.path("client.key")
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(pid > 0);

    let refused = |dsn: String| {
        let error = connect(&dsn).expect_err("connected without a good client certificate");
        assert_eq!(error.kind, ErrorKind::Transient, "{error}");
        error.message.to_string()
    };
    let error = refused(base.clone());
    assert!(
        error.contains("give one with `sslcert` and `sslkey`"),
        "{error}"
    );
    let error = refused(format!(
        "{base} sslcert={} sslkey={}",
        certs.path("stranger.pem"),
        certs.path("stranger.key")
    ));
    assert!(
        error.contains("does not trust the client certificate"),
        "{error}"
    );
    let error = refused(format!(
        "{base} sslcert={} sslkey={}",
        certs.path("someone-else.pem"),
        certs.path("someone-else.key")
    ));
    assert!(
        error.contains("common name (CN) must be the user name"),
        "{error}"
    );
}

//! `rediss://`: a server of the test's own that accepts only TLS connections with a client
//! certificate its CA signed (`--tls-auth-clients yes`) lets the transport in with one,
//! and every way of getting it wrong (no client certificate, a stranger's, the server's
//! CA not trusted, a name the certificate is not for, plain text to the TLS port) fails
//! as transient, saying which key to look at.

mod common;

use std::time::{Duration, Instant};

use common::*;
use golconde_plugin_api::{AckMode, Consumer, ErrorKind, Transport};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

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

/// A TLS-only server demanding client certificates, and the files a client needs.
struct Setup {
    server: Server,
    files: tempfile::TempDir,
}

impl Setup {
    fn start() -> Setup {
        let files = tempfile::tempdir().unwrap();
        let dir = files.path();
        let (ca_params, ca_key, ca) = authority("golconde test CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let server_cert = leaf(&issuer, "localhost", true);
        let client = leaf(&issuer, "golconde", false);
        let (other_params, other_key, _) = authority("unrelated CA");
        let stranger = leaf(&Issuer::new(other_params, other_key), "golconde", false);
        for (name, text) in [
            ("ca.pem", &ca),
            ("server.pem", &server_cert.0),
            ("server.key", &server_cert.1),
            ("client.pem", &client.0),
            ("client.key", &client.1),
            ("stranger.pem", &stranger.0),
            ("stranger.key", &stranger.1),
        ] {
            write_private(dir, name, text);
        }
        let path = |name: &str| dir.join(name).display().to_string();
        let server = Server::start_tls(&[
            "--tls-cert-file",
            &path("server.pem"),
            "--tls-key-file",
            &path("server.key"),
            "--tls-ca-cert-file",
            &path("ca.pem"),
            "--tls-auth-clients",
            "yes",
        ]);
        Setup { server, files }
    }

    fn path(&self, name: &str) -> String {
        self.files.path().join(name).display().to_string()
    }

    fn transport(&self, host: &str, extra: &str) -> golconde_redis::Redis {
        let url = format!("rediss://{host}:{}/0", self.server.port);
        transport_at(&url, &format!(r#""connect_timeout_ms": 3000 {extra}"#))
    }

    fn with(&self, cert: Option<&str>, ca: bool, extra: &str) -> golconde_redis::Redis {
        let mut json = String::new();
        if ca {
            json.push_str(&format!(r#", "tls_ca_file": "{}""#, self.path("ca.pem")));
        }
        if let Some(cert) = cert {
            json.push_str(&format!(
                r#", "tls_cert_file": "{}", "tls_key_file": "{}""#,
                self.path(&format!("{cert}.pem")),
                self.path(&format!("{cert}.key"))
            ));
        }
        json.push_str(extra);
        self.transport("localhost", &json)
    }
}

#[track_caller]
fn refused(transport: &golconde_redis::Redis, hint: &str) {
    let started = Instant::now();
    let error = transport.ping().expect_err("connected");
    assert_eq!(error.kind, ErrorKind::Transient, "{error}");
    assert!(error.message.contains("TLS"), "{error}");
    assert!(
        error.message.contains(hint),
        "expected {hint:?} in: {error}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    println!("{error}");
}

#[test]
fn a_client_certificate_signed_by_the_servers_ca_gets_in() {
    let setup = Setup::start();
    let transport = setup.with(Some("client"), true, "");
    transport.ping().unwrap_or_else(|e| panic!("{e}"));
    let key = unique("tls");
    fill(&transport, &key, "t", 0..20);
    let consumer = transport
        .consume(&key, options(20, AckMode::Cumulative))
        .expect("consumer");
    let got = receive_n(&consumer, 20, Duration::from_secs(5));
    assert_eq!(ids(&got), names("t", 0..20));
    consumer.ack(got[19].tag, true).expect("ack");
    consumer.close().unwrap();
    // The IP address is in the certificate as well.
    setup
        .transport(
            "127.0.0.1",
            &format!(
                r#", "tls_ca_file": "{}", "tls_cert_file": "{}", "tls_key_file": "{}""#,
                setup.path("ca.pem"),
                setup.path("client.pem"),
                setup.path("client.key")
            ),
        )
        .ping()
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn every_tls_mistake_says_which_key_to_look_at() {
    let setup = Setup::start();
    refused(&setup.with(None, true, ""), "`tls_cert_file`");
    refused(
        &setup.with(Some("stranger"), true, ""),
        "trusts the CA of `tls_cert_file`",
    );
    refused(&setup.with(Some("client"), false, ""), "`tls_ca_file`");
    refused(
        &setup.with(
            Some("client"),
            true,
            r#", "tls_server_name": "other.example""#,
        ),
        "`tls_server_name`",
    );
    // Plain text to the TLS port: the server drops it.
    let plain = transport_at(
        &format!("redis://127.0.0.1:{}/0", setup.server.port),
        r#""connect_timeout_ms": 2000"#,
    );
    let error = plain.ping().expect_err("plain text to a TLS port");
    assert_eq!(error.kind, ErrorKind::Transient, "{error}");
}

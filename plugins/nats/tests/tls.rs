//! TLS with a private certificate authority and client certificates, against a private
//! nats-server that verifies clients (`verify: true`): the plugin publishes and consumes
//! with the right files, and says what to change without them.

mod common;

use std::{fs, time::Duration};

use common::*;
use golconde_plugin_api::{Consumer, ErrorKind, Transport};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    /// A CA, a server certificate for 127.0.0.1 and a client certificate it signed, and a
    /// client certificate from another CA.
    fn new() -> Certificates {
        let dir = tempfile::tempdir().expect("temp dir");
        let (ca_params, ca_key, ca_pem) = authority("golconde test CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let (server, server_key) = leaf(&issuer, "nats", true);
        let (client, client_key) = leaf(&issuer, "golconde", false);
        let (other_params, other_key, _) = authority("someone else's CA");
        let (stranger, stranger_key) = leaf(&Issuer::new(other_params, other_key), "x", false);
        for (name, text) in [
            ("ca.pem", ca_pem),
            ("server.pem", server),
            ("server.key", server_key),
            ("client.pem", client),
            ("client.key", client_key),
            ("stranger.pem", stranger),
            ("stranger.key", stranger_key),
        ] {
            fs::write(dir.path().join(name), text).expect("written");
        }
        Certificates { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

fn authority(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let pem = params.self_signed(&key).expect("CA").pem();
    (params, key, pem)
}

fn leaf(issuer: &Issuer<'_, KeyPair>, name: &str, server: bool) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    if server {
        params.subject_alt_names = vec![
            SanType::DnsName("localhost".try_into().expect("name")),
            SanType::IpAddress([127, 0, 0, 1].into()),
        ];
    }
    let pem = params.signed_by(&key, issuer).expect("signed").pem();
    (pem, key.serialize_pem())
}

#[test]
fn tls_with_a_private_ca_and_a_client_certificate() {
    let certs = Certificates::new();
    let server = Server::with_config(&format!(
        r#"
        listen: "127.0.0.1:{{port}}"
        jetstream {{ store_dir: "{{dir}}" }}
        tls {{
            cert_file: "{}"
            key_file: "{}"
            ca_file: "{}"
            verify: true
            timeout: 2
        }}
        "#,
        certs.path("server.pem"),
        certs.path("server.key"),
        certs.path("ca.pem")
    ));
    let url = server.url().replace("nats://", "tls://");
    let files = |cert: &str, key: &str| {
        format!(
            r#""tls_ca_file": "{}", "tls_cert_file": "{}", "tls_key_file": "{}""#,
            certs.path("ca.pem"),
            certs.path(cert),
            certs.path(key)
        )
    };

    let transport = transport_at(&url, &files("client.pem", "client.key"));
    transport.ping().expect("ping over TLS");
    let queue = "golconde.tls";
    fill(&transport, queue, "t", 0..3);
    let consumer = transport.consume(queue, options(10)).expect("consumer");
    let got = receive_n(&consumer, 3, Duration::from_secs(10));
    assert_eq!(ids(&got), names("t", 0..3));
    consumer.ack(got[2].tag, true).expect("ack");
    consumer.close().expect("close");

    // `tls = true` with a nats:// URL is the same.
    let plain_url = transport_at(
        &server.url(),
        &format!(r#""tls": true, {}"#, files("client.pem", "client.key")),
    );
    plain_url.ping().expect("ping with `tls = true`");

    // Without a client certificate, or with one the server's CA did not sign.
    for (extra, hint) in [
        (
            format!(r#""tls_ca_file": "{}""#, certs.path("ca.pem")),
            "tls_cert_file",
        ),
        (files("stranger.pem", "stranger.key"), "tls_cert_file"),
    ] {
        let err = transport_at(&url, &extra).ping().unwrap_err();
        println!("{err}");
        assert_eq!(err.kind, ErrorKind::Transient, "{err}");
        assert!(err.message.contains(hint), "`{hint}` not in: {err}");
    }
    // Without the private CA, the server's certificate is not trusted.
    let err = transport_at(
        &url,
        &format!(
            r#""tls_cert_file": "{}", "tls_key_file": "{}""#,
            certs.path("client.pem"),
            certs.path("client.key")
        ),
    )
    .ping()
    .unwrap_err();
    println!("{err}");
    assert!(err.message.contains("tls_ca_file"), "{err}");
    // And without TLS at all, the server says it wants it.
    let err = transport_at(&server.url(), "").ping().unwrap_err();
    println!("{err}");
    assert!(err.message.contains("`tls = true`"), "{err}");
}

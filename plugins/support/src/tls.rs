//! TLS for a transport's connections: rustls with ring, trusting the system's roots plus
//! `tls_ca_file`, presenting `tls_cert_file`/`tls_key_file` when the server asks for a
//! client certificate, and checking the server's certificate against a name (the
//! plugin's `tls_server_name`, by default the host it connects to).
//!
//! Everything is read and checked when the configuration is, so a wrong path or a file of
//! the wrong kind is a configuration error naming its key, not a failed handshake later.
//! The `stomp` and `redis` transports use it; `nats` uses [`Failure`] to read why a
//! handshake failed.
//!
//! May depend on: rustls, tokio-rustls, rustls-native-certs, rustls-pki-types, tokio.

use std::{fmt, fs, path::Path, sync::Arc};

use rustls::{pki_types::ServerName, ClientConfig, RootCertStore};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::{client::TlsStream, TlsConnector};

/// What a TLS connection to one server needs. The client configuration is built once per
/// transport instance and shared by its servers ([`Tls::for_server`]).
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
    identity: bool,
}

/// Never shows key material.
impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("server_name", &self.server_name.to_str())
            .field("identity", &self.identity)
            .finish()
    }
}

/// The `tls_*` file keys, as resolved against the configuration's folder.
pub struct Files<'a> {
    pub ca_file: Option<&'a Path>,
    pub cert_file: Option<&'a Path>,
    pub key_file: Option<&'a Path>,
}

/// Why a TLS handshake failed, as far as rustls' reason tells: what the user must change.
/// Each transport words its hint in its own keys and its server's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The server's certificate is not for the name connected to.
    WrongName,
    /// The server's certificate is not signed by a trusted CA.
    Untrusted,
    /// No client certificate was offered, and the server may want one (or the port is
    /// not a TLS port).
    NoClientCertificate,
    /// A client certificate was offered and the server refused it (or the port is not a
    /// TLS port).
    ClientCertificateRefused,
}

impl Failure {
    /// Reads rustls' `reason`; `identity` tells whether a client certificate was offered.
    /// An alert is the server refusing this client, not this client refusing the server.
    pub fn classify(reason: &str, identity: bool) -> Failure {
        if reason.contains("NotValidForName") || reason.contains("not valid for name") {
            Failure::WrongName
        } else if reason.contains("UnknownIssuer")
            || (reason.contains("certificate")
                && !reason.contains("CertificateRequired")
                && !reason.contains("alert"))
        {
            Failure::Untrusted
        } else if !identity {
            Failure::NoClientCertificate
        } else {
            Failure::ClientCertificateRefused
        }
    }
}

/// `name` as the name a certificate must be for: a DNS name or an IP address, which may
/// be bracketed as in `[::1]:61613`.
pub fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    let name = name.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(name.to_string())
        .map_err(|_| format!("`{name}` is neither a DNS name nor an IP address"))
}

impl Tls {
    /// Builds the client configuration, checking certificates against `server_name`; the
    /// error names the key at fault.
    pub fn new(files: Files<'_>, server_name: ServerName<'static>) -> Result<Tls, String> {
        let mut roots = RootCertStore::empty();
        // Unreadable system certificates are skipped, as every TLS client does; a private
        // CA in `tls_ca_file` still works without any.
        for certificate in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(certificate);
        }
        if let Some(path) = files.ca_file {
            for certificate in certificates("tls_ca_file", path)? {
                roots.add(certificate).map_err(|e| {
                    format!(
                        "`tls_ca_file` {}: unusable certificate: {e}",
                        path.display()
                    )
                })?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots);
        let identity = files.cert_file.is_some();
        let config = match (files.cert_file, files.key_file) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = certificates("tls_cert_file", cert)?;
                let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    format!(
                        "`tls_key_file` {}: no usable private key ({e}); give an unencrypted \
                         PEM key (PKCS#8, PKCS#1 or SEC1)",
                        key.display()
                    )
                })?;
                builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                    format!(
                        "`tls_key_file` {} does not go with `tls_cert_file` {}: {e}",
                        key.display(),
                        cert.display()
                    )
                })?
            }
            (Some(_), None) => {
                return Err("`tls_cert_file` is set without `tls_key_file`; a client \
                            certificate needs its private key"
                    .into())
            }
            (None, Some(_)) => {
                return Err("`tls_key_file` is set without `tls_cert_file`; give the \
                            certificate that goes with the key"
                    .into())
            }
        };
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            identity,
        })
    }

    /// The same configuration, checking certificates against another name.
    pub fn for_server(&self, server_name: ServerName<'static>) -> Tls {
        Tls {
            server_name,
            ..self.clone()
        }
    }

    /// Whether a client certificate is offered.
    pub fn has_identity(&self) -> bool {
        self.identity
    }

    /// The TLS handshake over an open TCP connection.
    pub async fn handshake(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        self.connector.connect(self.server_name.clone(), tcp).await
    }
}

fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text =
        fs::read(path).map_err(|e| format!("`{key}` {}: cannot be read: {e}", path.display()))?;
    let certificates = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("`{key}` {}: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!(
            "`{key}` {}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certificates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_handshake_is_read_as_what_to_change() {
        let read = Failure::classify;
        assert_eq!(
            read("invalid peer certificate: NotValidForName", true),
            Failure::WrongName
        );
        assert_eq!(
            read("invalid peer certificate: UnknownIssuer", false),
            Failure::Untrusted
        );
        // The server refusing this client's certificate is not this client's distrust.
        assert_eq!(
            read("received fatal alert: BadCertificate", true),
            Failure::ClientCertificateRefused
        );
        assert_eq!(
            read("received fatal alert: CertificateRequired", false),
            Failure::NoClientCertificate
        );
        assert_eq!(
            read("connection reset", false),
            Failure::NoClientCertificate
        );
    }

    const CERT: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    const KEY: &str = "/etc/ssl/private/ssl-cert-snakeoil.key";

    fn files<'a>(ca: Option<&'a str>, cert: Option<&'a str>, key: Option<&'a str>) -> Files<'a> {
        Files {
            ca_file: ca.map(Path::new),
            cert_file: cert.map(Path::new),
            key_file: key.map(Path::new),
        }
    }

    fn name(text: &str) -> ServerName<'static> {
        server_name(text).unwrap()
    }

    #[test]
    fn a_ca_and_a_client_identity_are_taken() {
        let tls = Tls::new(
            files(Some(CERT), Some(CERT), Some(KEY)),
            name("broker.example"),
        )
        .unwrap();
        assert!(!format!("{tls:?}").contains("PRIVATE"));
        let other = tls.for_server(name("[::1]"));
        assert!(format!("{other:?}").contains("::1"), "{other:?}");
        assert!(other.has_identity());
        Tls::new(files(None, None, None), name("127.0.0.1")).unwrap();
        let error = server_name("not a name!").unwrap_err();
        assert!(
            error.contains("neither a DNS name nor an IP address"),
            "{error}"
        );
    }

    #[test]
    fn every_mistake_names_its_key() {
        let cases = [
            (
                files(Some("/nonexistent.pem"), None, None),
                "`tls_ca_file` /nonexistent.pem: cannot be read",
            ),
            (
                files(Some(KEY), None, None),
                "`tls_ca_file` /etc/ssl/private/ssl-cert-snakeoil.key: holds no PEM certificate",
            ),
            (files(None, Some(CERT), None), "without `tls_key_file`"),
            (files(None, None, Some(KEY)), "without `tls_cert_file`"),
            (
                files(None, Some(CERT), Some(CERT)),
                "`tls_key_file` /etc/ssl/certs/ssl-cert-snakeoil.pem: no usable private key",
            ),
        ];
        for (files, expected) in cases {
            let error = Tls::new(files, name("h")).unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
    }
}

//! The files behind `amqps://`: a private certificate authority to trust and a client
//! certificate to present, read and checked when the configuration is, so a wrong path or
//! a file of the wrong kind is a configuration error naming its key rather than a failed
//! handshake later.
//!
//! lapin's TLS layer trusts the system's roots plus whatever is in `cert_chain`, and takes a
//! client identity as PEM certificate and key; it skips certificates it cannot parse
//! without a word, which is why they are parsed here first.
//!
//! May depend on: rustls' PEM types, lapin's TLS configuration type.

use std::{fmt, fs, path::Path};

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

/// What `amqps://` connections present and trust beyond the system's roots.
#[derive(Clone, Default)]
pub struct TlsFiles {
    /// PEM certificates from `tls_ca_file`.
    ca: Option<String>,
    /// PEM certificate chain and key from `tls_cert_file` and `tls_key_file`.
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsFiles {
    /// Reads and checks the files; the error names the key and the file.
    pub fn read(
        ca_file: Option<&Path>,
        cert_file: Option<&Path>,
        key_file: Option<&Path>,
    ) -> Result<TlsFiles, String> {
        let ca = ca_file
            .map(|path| {
                let text = read("tls_ca_file", path)?;
                certificates("tls_ca_file", path, text.as_bytes())?;
                Ok::<_, String>(text)
            })
            .transpose()?;
        let identity = match (cert_file, key_file) {
            (None, None) => None,
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
            (Some(cert_path), Some(key_path)) => {
                let cert = read("tls_cert_file", cert_path)?;
                certificates("tls_cert_file", cert_path, cert.as_bytes())?;
                let key = read("tls_key_file", key_path)?;
                PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| {
                    format!(
                        "`tls_key_file` {}: no usable private key ({e}); give an \
                         unencrypted PEM key (PKCS#8, PKCS#1 or SEC1)",
                        key_path.display()
                    )
                })?;
                Some((cert.into_bytes(), key.into_bytes()))
            }
        };
        Ok(TlsFiles { ca, identity })
    }

    pub fn has_identity(&self) -> bool {
        self.identity.is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.identity.is_none()
    }

    /// lapin's form of the same.
    pub fn lapin(&self) -> OwnedTLSConfig {
        OwnedTLSConfig {
            identity: self
                .identity
                .as_ref()
                .map(|(pem, key)| OwnedIdentity::PKCS8 {
                    pem: pem.clone(),
                    key: key.clone(),
                }),
            cert_chain: self.ca.clone(),
        }
    }
}

/// Never shows the key.
impl fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsFiles")
            .field("ca", &self.ca.is_some())
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

fn read(key: &str, path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| format!("`{key}` {}: cannot be read: {e}", path.display()))
}

fn certificates(key: &str, path: &Path, pem: &[u8]) -> Result<(), String> {
    let mut count = 0;
    for certificate in CertificateDer::pem_slice_iter(pem) {
        certificate.map_err(|e| format!("`{key}` {}: {e}", path.display()))?;
        count += 1;
    }
    if count == 0 {
        return Err(format!(
            "`{key}` {}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CERT: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    const KEY: &str = "/etc/ssl/private/ssl-cert-snakeoil.key";

    fn path(s: &str) -> Option<&Path> {
        Some(Path::new(s))
    }

    #[test]
    fn a_ca_file_and_a_client_identity_are_read() {
        let files = TlsFiles::read(path(CERT), path(CERT), path(KEY)).unwrap();
        let lapin = files.lapin();
        assert!(lapin.cert_chain.unwrap().contains("BEGIN CERTIFICATE"));
        assert!(matches!(lapin.identity, Some(OwnedIdentity::PKCS8 { .. })));
        assert!(!format!("{files:?}").contains("PRIVATE"));
    }

    #[test]
    fn every_mistake_names_its_key_and_file() {
        let cases = [
            (
                TlsFiles::read(path("/nonexistent.pem"), None, None),
                "`tls_ca_file` /nonexistent.pem: cannot be read",
            ),
            (
                TlsFiles::read(path(KEY), None, None),
                "`tls_ca_file` /etc/ssl/private/ssl-cert-snakeoil.key: holds no PEM certificate",
            ),
            (
                TlsFiles::read(None, path(CERT), None),
                "without `tls_key_file`",
            ),
            (
                TlsFiles::read(None, None, path(KEY)),
                "without `tls_cert_file`",
            ),
            (
                TlsFiles::read(None, path(CERT), path(CERT)),
                "`tls_key_file` /etc/ssl/certs/ssl-cert-snakeoil.pem: no usable private key",
            ),
        ];
        for (result, expected) in cases {
            let error = result.unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
    }
}

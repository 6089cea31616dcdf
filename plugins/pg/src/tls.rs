//! TLS for the connection, with libpq's `sslmode` meanings, through rustls and ring.
//!
//! tokio-postgres knows `sslmode=disable|prefer|require` and no `sslrootcert`, so both are
//! taken out of the DSN here ([`split_dsn`]) and turned into a rustls configuration:
//!
//! | sslmode | TLS | certificate checked |
//! |---|---|---|
//! | `disable` | never | - |
//! | `allow`, `prefer` (default) | if the server offers it | only against `sslrootcert`, if given |
//! | `require` | always | only against `sslrootcert`, if given |
//! | `verify-ca` | always | chain, against `sslrootcert` or the system's roots |
//! | `verify-full` | always | chain and host name |
//!
//! That is libpq's behaviour: `prefer` and `require` encrypt without proving who the
//! server is, unless a root certificate is named.
//!
//! `sslcert` and `sslkey` name a client certificate (PEM, chain allowed) and its
//! unencrypted key (PEM), for servers that authenticate clients by certificate
//! (`hostssl ... cert` in `pg_hba.conf`). Unlike libpq, nothing is read from
//! `~/.postgresql/` unless named: a daemon's identity should be in its configuration.
//!
//! Reading the DSN here is also where a password could leak into an error message: an
//! unquoted password with a space reads as a second word, one with `&` in a URL as a
//! second parameter, one with `@` as part of the host. So an error quotes a word of the
//! DSN only if it is an option name PostgreSQL knows or the DSN holds no password
//! ([`may_hold_password`]), and a URL whose user name or password would be taken for
//! part of the host or the user name is refused rather than shown.

use std::{path::PathBuf, sync::Arc};

use rustls::{
    client::{
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        WebPkiServerVerifier,
    },
    crypto::CryptoProvider,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// `sslmode`, as libpq spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Mode {
    fn parse(text: &str) -> Result<Mode, String> {
        Ok(match text {
            "disable" => Mode::Disable,
            // `allow` prefers no TLS; encrypting when offered is the safe side of it.
            "allow" | "prefer" => Mode::Prefer,
            "require" => Mode::Require,
            "verify-ca" => Mode::VerifyCa,
            "verify-full" => Mode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode `{other}` is none of disable, allow, prefer, require, verify-ca, \
                     verify-full"
                ))
            }
        })
    }

    /// What tokio-postgres is told.
    pub fn ssl_mode(self) -> SslMode {
        match self {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }
}

/// The TLS options of a DSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub mode: Mode,
    pub root_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// The DSN keys handled here rather than by tokio-postgres.
const TLS_KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Values of [`TLS_KEYS`], in that order.
type TlsValues = [Option<String>; 4];

/// The option names of a DSN: tokio-postgres's and [`TLS_KEYS`]. Only these are quoted
/// in an error about a DSN that may hold a password.
const KNOWN_KEYS: [&str; 23] = [
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "sslmode",
    "sslnegotiation",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
    "replication",
];

/// Whether `dsn` may hold a password: then no word of it but a known option name is
/// quoted in an error, since any other word may be a piece of the password.
pub fn may_hold_password(dsn: &str) -> bool {
    dsn.to_ascii_lowercase().contains("password") || dsn.contains('@')
}

/// `word` quoted for an error about `dsn`, or a stand-in when it may be part of a
/// password.
fn quoted(word: &str, dsn: &str) -> String {
    if KNOWN_KEYS.contains(&word) || !may_hold_password(dsn) {
        format!("`{word}`")
    } else {
        "a word (not repeated here: it may be part of a password)".into()
    }
}

/// Splits `sslmode`, `sslrootcert`, `sslcert` and `sslkey` off a DSN (`key=value ...` or a
/// `postgres://` URL); returns the rest of the DSN for tokio-postgres.
pub fn split_dsn(dsn: &str) -> Result<(String, Options), String> {
    let trimmed = dsn.trim_start();
    let (rest, [mode, root_cert, client_cert, client_key]) =
        if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
            split_url(trimmed)?
        } else {
            split_pairs(dsn)?
        };
    let mode = match mode {
        Some(mode) => Mode::parse(&mode).map_err(|e| {
            if may_hold_password(dsn) {
                "sslmode is none of disable, allow, prefer, require, verify-ca, verify-full"
                    .to_string()
            } else {
                e
            }
        })?,
        None => Mode::Prefer,
    };
    if mode == Mode::Disable && (client_cert.is_some() || client_key.is_some()) {
        return Err(
            "`sslcert`/`sslkey` are given with sslmode=disable, which never uses \
                    them; remove them or choose another sslmode"
                .into(),
        );
    }
    Ok((
        rest,
        Options {
            mode,
            root_cert: root_cert.map(PathBuf::from),
            client_cert: client_cert.map(PathBuf::from),
            client_key: client_key.map(PathBuf::from),
        },
    ))
}

/// Stores `value` for `key` if it is one of [`TLS_KEYS`]; false otherwise.
fn take(values: &mut TlsValues, key: &str, value: String) -> bool {
    match TLS_KEYS.iter().position(|k| *k == key) {
        Some(i) => {
            values[i] = Some(value);
            true
        }
        None => false,
    }
}

fn split_url(url: &str) -> Result<(String, TlsValues), String> {
    let mut values = TlsValues::default();
    let after_scheme = url.find("://").map_or(0, |at| at + 3);
    // tokio-postgres (as libpq) takes everything before the first `@` for user name and
    // password; where that cannot be meant, the URL is refused, so that no piece of a
    // password becomes a host or user name that messages would show.
    let credentials = url[after_scheme..].find('@').map(|at| after_scheme + at);
    if let Some(at) = credentials {
        let user = url[after_scheme..at].split(':').next().unwrap_or_default();
        if user.contains(['/', '?', '#', '&', '=']) {
            return Err(
                "the URL has an `@` after its host (in the database name or a \
                        parameter value): write it as %40"
                    .into(),
            );
        }
        let host = url[at + 1..].split(['/', '?']).next().unwrap_or_default();
        if host.contains('@') {
            return Err("the URL's user name or password contains an `@`: write it as %40".into());
        }
    }
    let query_from = credentials.unwrap_or(after_scheme);
    let Some(question) = url[query_from..].find('?').map(|at| query_from + at) else {
        return Ok((url.to_string(), values));
    };
    let (base, query) = (&url[..question], &url[question + 1..]);
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        // Only the TLS keys' values are read here; the rest (a password among them) goes
        // to tokio-postgres as written.
        let key =
            percent_decode(key).map_err(|e| format!("a parameter name of the URL has {e}"))?;
        if TLS_KEYS.contains(&key.as_str()) {
            let value = percent_decode(value).map_err(|e| format!("`{key}` has {e}"))?;
            take(&mut values, &key, value);
        } else {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, values))
}

/// `%XX` escapes decoded; the error says what is wrong without quoting the text.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a bad %-escape (a `%` not followed by two hex digits; write `%` as %25)")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "%-escapes that are not UTF-8".to_string())
}

/// libpq's `key = value` list: values may be single-quoted, `\` escapes the next character.
fn split_pairs(dsn: &str) -> Result<(String, TlsValues), String> {
    let mut chars = dsn.chars().peekable();
    let mut values = TlsValues::default();
    let mut kept = Vec::new();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!(
                "{} has no `=value`; a value with spaces must be quoted: key='a b'",
                quoted(&key, dsn)
            ));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => {
                        return Err(format!(
                            "the value of {} has an unclosed quote",
                            quoted(&key, dsn)
                        ))
                    }
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        let escaped = value.replace('\\', "\\\\").replace('\'', "\\'");
        if !take(&mut values, &key, value) {
            kept.push(format!("{key}='{escaped}'"));
        }
    }
    Ok((kept.join(" "), values))
}

/// The connector for `options`. Reads the root certificates now, so that a missing file
/// is a configuration error rather than a connection failure.
pub fn connector(options: &Options) -> Result<MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?;
    let roots = match (&options.root_cert, options.mode) {
        (Some(path), _) => Some(read_roots(path)?),
        (None, Mode::VerifyCa | Mode::VerifyFull) => Some(system_roots()?),
        (None, _) => None,
    };
    let builder = match (roots, options.mode) {
        (None, _) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider))),
        (Some(roots), Mode::VerifyFull) => builder.with_root_certificates(roots),
        (Some(roots), _) => {
            let chain = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("cannot use the root certificates: {e}"))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyHostName(chain)))
        }
    };
    let config = match (&options.client_cert, &options.client_key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = read_certificates("sslcert", cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                format!(
                    "sslkey `{}` holds no usable private key ({e}); give an unencrypted PEM \
                     key (PKCS#8, PKCS#1 or SEC1)",
                    key.display()
                )
            })?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                format!(
                    "sslkey `{}` does not go with sslcert `{}`: {e}",
                    key.display(),
                    cert.display()
                )
            })?
        }
        (Some(_), None) => {
            return Err(
                "`sslcert` is given without `sslkey`; a client certificate needs its \
                        private key"
                    .into(),
            )
        }
        (None, Some(_)) => {
            return Err(
                "`sslkey` is given without `sslcert`; give the certificate that goes \
                        with the key"
                    .into(),
            )
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

/// What to do about a failed connection whose reason is about certificates; empty
/// otherwise.
pub fn connect_hint(reason: &str, options: &Options) -> &'static str {
    let client = options.client_cert.is_some();
    if reason.contains("requires a valid client certificate") && !client {
        "; the server authenticates clients by certificate: give one with `sslcert` and \
         `sslkey` in `dsn`"
    } else if (reason.contains("UnknownCA") || reason.contains("certificate verify failed"))
        && client
    {
        "; the server does not trust the client certificate (`sslcert`): its CA must be in the \
         server's `ssl_ca_file`"
    } else if reason.contains("certificate authentication failed") {
        "; the client certificate's common name (CN) must be the user name in `dsn`, or be \
         mapped to it in the server's `pg_ident.conf`"
    } else if reason.contains("UnknownIssuer") {
        "; the server's certificate is not signed by a CA in `sslrootcert`"
    } else {
        ""
    }
}

fn read_roots(path: &PathBuf) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates("sslrootcert", path)? {
        roots
            .add(cert)
            .map_err(|e| format!("sslrootcert `{}`: {e}", path.display()))?;
    }
    Ok(roots)
}

/// The PEM certificates in the file `key` names; at least one.
fn read_certificates(key: &str, path: &PathBuf) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{key} `{}` cannot be read: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{key} `{}` is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{key} `{}` holds no certificate", path.display()));
    }
    Ok(certs)
}

fn system_roots() -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(
            "verifying the server needs root certificates, and the system has none; name a \
             file with `sslrootcert=...`"
                .into(),
        );
    }
    Ok(roots)
}

/// `prefer`/`require` without `sslrootcert`: encrypt, accept any certificate (libpq's
/// behaviour), but still check that the server holds its key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca` (and `prefer`/`require` with `sslrootcert`): the chain must lead to a
/// trusted root; the host name is not checked.
#[derive(Debug)]
struct AnyHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The name is checked after the chain, so a wrong name means a good chain.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(dsn: &str) -> (String, Mode, Option<String>) {
        let (rest, options) = split_dsn(dsn).unwrap();
        (
            rest,
            options.mode,
            options.root_cert.map(|p| p.display().to_string()),
        )
    }

    #[test]
    fn key_value_dsns_lose_only_the_tls_keys() {
        assert_eq!(
            split("host=db sslmode=verify-full  sslrootcert = '/etc/my ca.pem' user=a"),
            (
                "host='db' user='a'".into(),
                Mode::VerifyFull,
                Some("/etc/my ca.pem".into())
            )
        );
        assert_eq!(
            split(r"host=db password='it\'s \\ secret'"),
            (
                r"host='db' password='it\'s \\ secret'".into(),
                Mode::Prefer,
                None
            )
        );
        assert_eq!(split("sslmode=disable").1, Mode::Disable);
        assert_eq!(split("sslmode=allow").1, Mode::Prefer);
        assert!(split_dsn("host=db sslmode=sometimes").is_err());
        assert!(split_dsn("host='db").is_err());
        assert!(split_dsn("host").is_err());
    }

    #[test]
    fn url_dsns_lose_only_the_tls_parameters() {
        assert_eq!(
            split("postgres://u:p@db:5433/x?sslmode=verify-ca&application_name=g&sslrootcert=%2Fca.pem"),
            (
                "postgres://u:p@db:5433/x?application_name=g".into(),
                Mode::VerifyCa,
                Some("/ca.pem".into())
            )
        );
        assert_eq!(
            split("postgresql://db/x?sslmode=require"),
            ("postgresql://db/x".into(), Mode::Require, None)
        );
        assert_eq!(split("postgres://db/x").1, Mode::Prefer);
        assert!(split_dsn("postgres://db/x?sslrootcert=%zz").is_err());
        // Everything before the first `@` is user name and password, also a `/` or `?`.
        assert_eq!(
            split("postgres://u:a/b?c@db/x?sslmode=require"),
            ("postgres://u:a/b?c@db/x".into(), Mode::Require, None)
        );
        assert!(split_dsn("postgres://u:a@b@db/x").is_err());
        assert!(split_dsn("postgres://db/x?password=a@b").is_err());
    }

    fn options(dsn: &str) -> Options {
        split_dsn(dsn).unwrap().1
    }

    #[test]
    fn client_certificate_keys_are_taken_from_both_forms() {
        let (rest, o) =
            split_dsn("host=db sslcert=/c.pem sslkey='/k ey.pem' sslmode=require").unwrap();
        assert_eq!(rest, "host='db'");
        assert_eq!(o.client_cert, Some("/c.pem".into()));
        assert_eq!(o.client_key, Some("/k ey.pem".into()));
        let (rest, o) = split_dsn("postgres://db/x?sslcert=%2Fc.pem&sslkey=%2Fk.pem").unwrap();
        assert_eq!(rest, "postgres://db/x");
        assert_eq!(o.client_cert, Some("/c.pem".into()));
        assert_eq!(o.client_key, Some("/k.pem".into()));
        assert!(split_dsn("sslmode=disable sslcert=/c.pem")
            .unwrap_err()
            .contains("sslmode=disable"));
    }

    #[test]
    fn every_file_mistake_names_its_key_and_file() {
        const CERT: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
        const KEY: &str = "/etc/ssl/private/ssl-cert-snakeoil.key";
        let cases = [
            (
                "sslmode=verify-full sslrootcert=/nonexistent/ca.pem".to_string(),
                "sslrootcert `/nonexistent/ca.pem` cannot be read",
            ),
            (format!("sslrootcert={KEY}"), "holds no certificate"),
            (format!("sslcert={CERT}"), "without `sslkey`"),
            (format!("sslkey={KEY}"), "without `sslcert`"),
            (
                format!("sslcert=/nonexistent/c.pem sslkey={KEY}"),
                "sslcert `/nonexistent/c.pem` cannot be read",
            ),
            (
                format!("sslcert={CERT} sslkey={CERT}"),
                "holds no usable private key",
            ),
        ];
        for (dsn, expected) in cases {
            let error = connector(&options(&dsn)).err().unwrap();
            assert!(error.contains(expected), "{dsn}: {error}");
        }
        assert!(connector(&options(&format!("sslcert={CERT} sslkey={KEY}"))).is_ok());
    }
}

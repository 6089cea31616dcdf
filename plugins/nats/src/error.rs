//! What can go wrong talking to NATS, and how each failure becomes a [`PluginError`] of the
//! right kind at the boundary: [`NatsError::Unavailable`] (transient: the host waits and
//! retries), [`NatsError::Misconfigured`] (a key or the server's setup must change) and
//! [`NatsError::Refused`] (this one message can never be published).
//!
//! The helpers here read async-nats' errors and JetStream's error codes, and add what to
//! change to the text. Credentials never appear: async-nats' errors do not carry them, and
//! server addresses are shown without their user part.
//!
//! May depend on: async-nats' error types, `golconde-plugin-api`.

use async_nats::{
    jetstream::{self, ErrorCode},
    ConnectError, ConnectErrorKind,
};
use golconde_plugin_api::{ErrorKind, PluginError};
use golconde_plugin_support::tls::Failure;

#[derive(Debug, Clone, thiserror::Error)]
pub enum NatsError {
    /// The server or the network failed, or did not answer in time: may pass.
    #[error("{0}")]
    Unavailable(String),
    /// The configuration, the credentials or the server's setup must change.
    #[error("{0}")]
    Misconfigured(String),
    /// One message can never be published as it is.
    #[error("{0}")]
    Refused(String),
}

impl NatsError {
    /// The boundary error, prefixed with what was being done and where.
    pub fn to_plugin(&self, context: &str) -> PluginError {
        let kind = match self {
            NatsError::Unavailable(_) => ErrorKind::Transient,
            NatsError::Misconfigured(_) => ErrorKind::Config,
            NatsError::Refused(_) => ErrorKind::Permanent,
        };
        PluginError::new(kind, format!("{context}: {self}"))
    }

    /// The same failure, its text prefixed with `context`.
    pub fn context(self, context: &str) -> NatsError {
        match self {
            NatsError::Unavailable(m) => NatsError::Unavailable(format!("{context}: {m}")),
            NatsError::Misconfigured(m) => NatsError::Misconfigured(format!("{context}: {m}")),
            NatsError::Refused(m) => NatsError::Refused(format!("{context}: {m}")),
        }
    }
}

/// A failed connection to `target`; `tls` tells whether TLS was configured and `identity`
/// whether a client certificate was offered, for the hint.
pub fn connect_error(target: &str, error: &ConnectError, tls: bool, identity: bool) -> NatsError {
    let reason = describe(error);
    match error.kind() {
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
            NatsError::Misconfigured(format!(
                "{target} refused the credentials ({reason}); check `user` and `password`, \
                 `token`, `creds_file` or `nkey_seed_file`, and the user part of `url`"
            ))
        }
        ConnectErrorKind::ServerParse => {
            NatsError::Misconfigured(format!("cannot use `url` {target}: {reason}"))
        }
        ConnectErrorKind::TimedOut => NatsError::Unavailable(format!(
            "no server of {target} completed the handshake within `connect_timeout_ms`; check \
             that nats-server runs there{}",
            if tls {
                " and speaks TLS the way `tls_first` says"
            } else {
                ""
            }
        )),
        ConnectErrorKind::Tls => NatsError::Unavailable(format!(
            "TLS with {target} failed: {reason}; {}",
            tls_hint(&reason, identity)
        )),
        _ if tls && looks_like_tls(&reason) => NatsError::Unavailable(format!(
            "TLS with {target} failed: {reason}; {}",
            tls_hint(&reason, identity)
        )),
        _ if looks_like_tls(&reason) => NatsError::Unavailable(format!(
            "cannot connect to {target}: {reason}; the server requires TLS: set `tls = true` \
             (and `tls_ca_file` for a server a private CA signed)"
        )),
        _ => NatsError::Unavailable(format!(
            "cannot connect to {target}: {reason}; check that nats-server runs there (`url`)"
        )),
    }
}

/// An error and its sources, on one line.
pub fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text
}

fn looks_like_tls(reason: &str) -> bool {
    [
        "certificate",
        "Certificate",
        "handshake",
        "tls",
        "TLS",
        "alert",
        "UnknownIssuer",
    ]
    .iter()
    .any(|word| reason.contains(word))
}

/// What to do about a failed TLS connection, read from rustls' reason.
pub fn tls_hint(reason: &str, identity: bool) -> &'static str {
    match Failure::classify(reason, identity) {
        Failure::WrongName => {
            "the server's certificate is not for the host named in `url`: connect by a name \
             the certificate lists"
        }
        Failure::Untrusted => {
            "the server's certificate is not trusted: give the CA that signed it in \
             `tls_ca_file` (a PEM file)"
        }
        Failure::NoClientCertificate => {
            "if the server verifies clients (`verify: true`), give a client certificate in \
             `tls_cert_file` and `tls_key_file`"
        }
        Failure::ClientCertificateRefused => {
            "check that the server trusts the CA of `tls_cert_file` (its `ca_file`)"
        }
    }
}

/// A JetStream API error answering `what`, classified by its code.
pub fn api_error(what: &str, error: &jetstream::Error) -> NatsError {
    let text = format!("{what}: JetStream answered: {error}");
    match error.error_code() {
        ErrorCode::JETSTREAM_NOT_ENABLED | ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT => {
            NatsError::Misconfigured(format!(
                "{text}; enable JetStream on the server (`-js`, or `jetstream {{}}` in its \
                 configuration) and for the account"
            ))
        }
        // The server's resources: may pass once something is freed.
        ErrorCode::INSUFFICIENT_RESOURCES
        | ErrorCode::STORAGE_RESOURCES_EXCEEDED
        | ErrorCode::MEMORY_RESOURCES_EXCEEDED
        | ErrorCode::STREAM_STORE_FAILED
        | ErrorCode::CONSUMER_STORE_FAILED => NatsError::Unavailable(text),
        code if error.code() >= 500 && code != ErrorCode::ACCOUNT_RESOURCES_EXCEEDED => {
            NatsError::Unavailable(text)
        }
        _ => NatsError::Misconfigured(text),
    }
}

/// A request that got no answer in time, or whose connection failed.
pub fn request_failed(what: &str, detail: &str) -> NatsError {
    NatsError::Unavailable(format!(
        "{what}: {detail} (`request_timeout_ms` bounds each JetStream request)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_failures_say_what_to_change() {
        let cases = [
            (
                "invalid peer certificate: UnknownIssuer",
                true,
                "`tls_ca_file`",
            ),
            (
                "certificate not valid for name \"x\"",
                true,
                "a name the certificate lists",
            ),
            (
                "received fatal alert: CertificateRequired",
                false,
                "`tls_cert_file`",
            ),
            (
                "received fatal alert: UnknownCA",
                true,
                "trusts the CA of `tls_cert_file`",
            ),
        ];
        for (reason, identity, expected) in cases {
            let hint = tls_hint(reason, identity);
            assert!(hint.contains(expected), "{reason}: {hint}");
        }
    }

    #[test]
    fn kinds_reach_the_boundary() {
        let e = NatsError::Refused("too big".into()).to_plugin("publishing to `q`");
        assert_eq!(e.kind, ErrorKind::Permanent);
        assert_eq!(e.message.as_str(), "publishing to `q`: too big");
        assert_eq!(
            NatsError::Misconfigured("x".into()).to_plugin("c").kind,
            ErrorKind::Config
        );
        assert_eq!(
            NatsError::Unavailable("x".into())
                .context("a")
                .to_plugin("b")
                .message
                .as_str(),
            "b: a: x"
        );
    }
}

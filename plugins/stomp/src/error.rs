//! What can go wrong talking to a STOMP broker, and how each failure becomes a
//! [`PluginError`] of the right kind at the boundary.
//!
//! [`StompError`] is `Clone` because one failure (a lost connection) is reported to every
//! request waiting on that connection; I/O errors are therefore kept behind an `Arc`.

use std::{fmt, sync::Arc};

use golconde_plugin_api::{ErrorKind, PluginError};
use golconde_plugin_support::tls::Failure;

use crate::codec::CodecError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StompError {
    #[error(
        "cannot connect to {address}: {source}; check that the broker runs there \
         (`address`, `addresses`)"
    )]
    Connect {
        address: String,
        source: Arc<std::io::Error>,
    },
    #[error("TLS with {address} failed: {reason}; {hint}")]
    Tls {
        address: String,
        reason: String,
        hint: &'static str,
    },
    #[error("no answer within {ms} ms while {what} (`{key}`)")]
    Timeout {
        what: &'static str,
        ms: u64,
        key: &'static str,
    },
    /// An ERROR frame answering CONNECT: the login, passcode or virtual host is wrong.
    #[error("the broker refused the connection: {0}")]
    Refused(String),
    /// An ERROR frame answering a request (SUBSCRIBE, SEND): what was asked cannot be done.
    #[error("the broker answered with an error: {0}")]
    Rejected(String),
    /// An ERROR frame nothing was waiting for; the broker closes the connection after it.
    #[error("the broker reported an error and closed the connection: {0}")]
    Broker(String),
    #[error("connection lost: {0}")]
    Io(Arc<std::io::Error>),
    #[error("malformed data from the broker: {0}")]
    Malformed(String),
    #[error("the broker sent nothing for {0} ms although heart-beats were agreed; presumed dead")]
    HeartbeatMissed(u64),
    #[error("the broker closed the connection")]
    Closed,
    /// The broker does not speak STOMP 1.2.
    #[error("{0}")]
    Protocol(String),
    /// A request that cannot be made at all (an empty queue name).
    #[error("{0}")]
    Invalid(String),
    /// None of several brokers could be connected to: each one's address and failure, in
    /// the order they were tried.
    #[error("none of the {} brokers answered: {}", .0.len(), Failures(.0))]
    NoBroker(Vec<(String, StompError)>),
}

/// `a:1: why; b:2: why`, without naming an address twice.
struct Failures<'a>(&'a [(String, StompError)]);

impl fmt::Display for Failures<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (address, error)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            match error {
                StompError::Connect { .. } | StompError::Tls { .. } => write!(f, "{error}")?,
                _ => write!(f, "{address}: {error}")?,
            }
        }
        Ok(())
    }
}

impl From<CodecError> for StompError {
    fn from(e: CodecError) -> StompError {
        match e {
            CodecError::Io(io) => StompError::Io(Arc::new(io)),
            other => StompError::Malformed(other.to_string()),
        }
    }
}

impl StompError {
    /// The boundary error, prefixed with what was being done and where.
    pub fn to_plugin(&self, context: &str) -> PluginError {
        let (kind, advice) = self.kind();
        PluginError::new(kind, format!("{context}: {self}{advice}"))
    }

    /// What kind of failure this is at the boundary, and what to do about it. When no
    /// broker answered, that is the kind all of them agree on (every one refused the
    /// login: a configuration error), and transient otherwise: one may be back soon.
    fn kind(&self) -> (ErrorKind, &'static str) {
        match self {
            StompError::Refused(_) => (
                ErrorKind::Config,
                "; check `login`, `passcode` and `virtual_host`",
            ),
            StompError::Rejected(_) => (
                ErrorKind::Permanent,
                "; the broker will refuse it again until the destination or the message is \
                 fixed",
            ),
            StompError::Protocol(_) => (ErrorKind::Config, "; check `address`, `addresses`"),
            StompError::Invalid(_) => (ErrorKind::Permanent, ""),
            StompError::NoBroker(failures) => {
                let mut kinds = failures.iter().map(|(_, e)| e.kind());
                match kinds.next() {
                    Some(first) if kinds.all(|k| k == first) => first,
                    _ => (ErrorKind::Transient, ""),
                }
            }
            _ => (ErrorKind::Transient, ""),
        }
    }
}

/// What to do about a failed TLS connection, read from rustls' reason; `identity` tells
/// whether a client certificate was offered.
pub fn tls_hint(reason: &str, identity: bool) -> &'static str {
    match Failure::classify(reason, identity) {
        Failure::WrongName => {
            "the broker's certificate is not for that name: set `tls_server_name` to a name \
             the certificate lists"
        }
        Failure::Untrusted => {
            "the broker's certificate is not trusted: give the CA that signed it in \
             `tls_ca_file` (a PEM file)"
        }
        Failure::NoClientCertificate => {
            "if the broker requires client certificates, give one in `tls_cert_file` and \
             `tls_key_file`; otherwise check that `address` is the broker's TLS port"
        }
        Failure::ClientCertificateRefused => {
            "check that the broker trusts the CA of `tls_cert_file`, and that `address` is the \
             broker's TLS port"
        }
    }
}

/// The text of an ERROR frame: its `message` header and, if any, its body.
pub fn describe_error_frame(frame: &crate::frame::Frame) -> String {
    let summary = frame.header("message").unwrap_or("(no message header)");
    let details = String::from_utf8_lossy(&frame.body);
    let details = details.trim();
    if details.is_empty() || details == summary {
        summary.to_string()
    } else {
        format!("{summary} ({details})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_connection(address: &str) -> StompError {
        StompError::Connect {
            address: address.into(),
            source: Arc::new(std::io::ErrorKind::ConnectionRefused.into()),
        }
    }

    #[test]
    fn no_broker_names_each_and_agrees_on_the_kind() {
        let error = StompError::NoBroker(vec![
            ("a:1".into(), refused_connection("a:1")),
            (
                "b:2".into(),
                StompError::Timeout {
                    what: "connecting",
                    ms: 5,
                    key: "connect_timeout_ms",
                },
            ),
        ]);
        let plugin = error.to_plugin("connecting to [a:1, b:2]");
        assert_eq!(plugin.kind, ErrorKind::Transient);
        assert_eq!(
            plugin.message.as_str(),
            "connecting to [a:1, b:2]: none of the 2 brokers answered: cannot connect to a:1: \
             connection refused; check that the broker runs there (`address`, `addresses`); \
             b:2: no answer within 5 ms while connecting (`connect_timeout_ms`)"
        );
        // Every broker refused the login: that will not pass on its own.
        let refused = StompError::NoBroker(vec![
            ("a:1".into(), StompError::Refused("bad login".into())),
            ("b:2".into(), StompError::Refused("bad login".into())),
        ])
        .to_plugin("connecting");
        assert_eq!(refused.kind, ErrorKind::Config);
        assert!(refused
            .message
            .ends_with("check `login`, `passcode` and `virtual_host`"));
        let mixed = StompError::NoBroker(vec![
            ("a:1".into(), StompError::Refused("bad login".into())),
            ("b:2".into(), refused_connection("b:2")),
        ])
        .to_plugin("connecting");
        assert_eq!(mixed.kind, ErrorKind::Transient);
    }

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
                "`tls_server_name`",
            ),
            (
                "the broker closed the connection before CONNECTED",
                false,
                "`tls_cert_file`",
            ),
            (
                "received fatal alert: CertificateRequired",
                false,
                "`tls_cert_file`",
            ),
            (
                "Connection reset by peer (os error 104)",
                true,
                "trusts the CA of `tls_cert_file`",
            ),
        ];
        for (reason, identity, expected) in cases {
            let hint = tls_hint(reason, identity);
            assert!(hint.contains(expected), "{reason}: {hint}");
        }
    }
}

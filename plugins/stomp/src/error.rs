//! What can go wrong talking to a STOMP broker, and how each failure becomes a
//! [`PluginError`] of the right kind at the boundary.
//!
//! [`StompError`] is `Clone` because one failure (a lost connection) is reported to every
//! request waiting on that connection; I/O errors are therefore kept behind an `Arc`.

use std::sync::Arc;

use golconde_plugin_api::PluginError;

use crate::codec::CodecError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StompError {
    #[error("cannot connect to {address}: {source}; check that the broker runs there (`address`)")]
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
        let message = format!("{context}: {self}");
        match self {
            StompError::Refused(_) => PluginError::config(format!(
                "{message}; check `login`, `passcode` and `virtual_host`"
            )),
            StompError::Rejected(_) => PluginError::permanent(format!(
                "{message}; the broker will refuse it again until the destination or the \
                 message is fixed"
            )),
            StompError::Protocol(_) => PluginError::config(format!("{message}; check `address`")),
            StompError::Invalid(_) => PluginError::permanent(message),
            _ => PluginError::transient(message),
        }
    }
}

/// What to do about a failed TLS connection, read from rustls' reason; `identity` tells
/// whether a client certificate was offered.
pub fn tls_hint(reason: &str, identity: bool) -> &'static str {
    if reason.contains("NotValidForName") || reason.contains("not valid for name") {
        "the broker's certificate is not for that name: set `tls_server_name` to a name the \
         certificate lists"
    } else if reason.contains("certificate") && !reason.contains("CertificateRequired") {
        "the broker's certificate is not trusted: give the CA that signed it in `tls_ca_file` \
         (a PEM file)"
    } else if !identity {
        "if the broker requires client certificates, give one in `tls_cert_file` and \
         `tls_key_file`; otherwise check that `address` is the broker's TLS port"
    } else {
        "check that the broker trusts the CA of `tls_cert_file`, and that `address` is the \
         broker's TLS port"
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
    use super::tls_hint;

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

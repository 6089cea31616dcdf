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

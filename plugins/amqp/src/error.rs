//! What can go wrong talking to the broker, and which [`ErrorKind`] each failure is for the
//! host.
//!
//! lapin reports everything as one `lapin::Error`; [`classify`] turns the broker's answers
//! that mean something for the operator (a queue that does not exist, a refused
//! permission, a queue declared with other arguments) into their own variants, so that the
//! message says what to do, and leaves the rest as "connection lost", which is transient.
//! Every message names the broker by its redacted address ([`crate::config::endpoint`]).

use golconde_plugin_api::{ErrorKind, PluginError};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to {endpoint}: {reason}; {hint}")]
    Connect {
        endpoint: String,
        reason: String,
        hint: &'static str,
    },

    #[error(
        "{action} on {endpoint} timed out after {ms} ms; check that the broker is reachable \
         and not overloaded{hint}"
    )]
    Timeout {
        action: String,
        endpoint: String,
        ms: u128,
        hint: &'static str,
    },

    #[error(
        "queue `{queue}` does not exist on {endpoint} ({reason}); create it, or set \
         `declare = \"durable\"` to have Golconde declare it"
    )]
    QueueMissing {
        queue: String,
        endpoint: String,
        reason: String,
    },

    #[error("queue `{queue}` on {endpoint} {detail} (the broker said: {reason})")]
    QueueMismatch {
        queue: String,
        endpoint: String,
        /// What differs and what to do, from [`crate::queues::explain`].
        detail: String,
        reason: String,
    },

    #[error("{}", unreachable(.failures))]
    Unreachable {
        /// One [`Error::Connect`] or [`Error::Timeout`] per broker, in the order tried.
        failures: Vec<Error>,
    },

    #[error(
        "queue `{queue}` is a stream ({key} is \"stream\"), and Golconde does not consume \
         streams: a stream keeps its messages after they are acknowledged and is read from an \
         offset that the consumer must track and store, which Golconde does not do, so a \
         restart would read the stream again from its start or skip what came meanwhile; use \
         a stream only as a fan-out target (publishing to it works) and consume from a \
         classic or quorum queue"
    )]
    StreamConsumed { queue: String, key: String },

    #[error(
        "{action} on {endpoint} was refused: {reason}; give the user of `url` the \
         permissions it needs on that vhost"
    )]
    Refused {
        action: String,
        endpoint: String,
        reason: String,
    },

    #[error("{action} on {endpoint} failed: {reason}; the connection is opened again on retry")]
    Lost {
        action: String,
        endpoint: String,
        reason: String,
    },

    #[error(
        "the broker {endpoint} refused (nack) message {index} of {count} for queue \
         `{queue}`; it was not stored, retry later"
    )]
    Nacked {
        queue: String,
        endpoint: String,
        index: usize,
        count: usize,
    },

    #[error(
        "message {index} of {count} for queue `{queue}` was returned unroutable by \
         {endpoint} ({reason}): the queue no longer exists; create it again"
    )]
    Unroutable {
        queue: String,
        endpoint: String,
        index: usize,
        count: usize,
        reason: String,
    },

    #[error(
        "consuming queue `{queue}` with a prefetch of 0, which AMQP takes as \"no limit\": the \
         broker would push the whole queue into memory; give the pipeline a `prefetch` of at \
         least 1"
    )]
    Prefetch { queue: String },

    #[error("queue name `{queue}` is {len} bytes long; AMQP allows at most 255")]
    QueueName { queue: String, len: usize },

    #[error("cannot start the plugin's runtime: {0}")]
    Runtime(std::io::Error),

    #[error("the consumer of queue `{queue}` is closed")]
    Closed { queue: String },

    #[error("the consumer of queue `{queue}` stopped: {reason}; open a new consumer")]
    Stopped { queue: String, reason: String },

    #[error(
        "delivery tag {tag} was never handed out by the consumer of queue `{queue}`; \
         acknowledge only tags that `receive` returned"
    )]
    UnknownTag { queue: String, tag: u64 },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Connect { .. }
            | Error::Timeout { .. }
            | Error::Lost { .. }
            | Error::Nacked { .. }
            | Error::Runtime(_)
            | Error::Closed { .. }
            | Error::Stopped { .. }
            // Queues someone else owns may appear later, and permissions may be granted: the
            // pipeline waits rather than dies.
            | Error::QueueMissing { .. }
            | Error::Unreachable { .. }
            | Error::Unroutable { .. }
            | Error::Refused { .. } => ErrorKind::Transient,
            // Retrying cannot help: the queue's arguments, the message or the host's call
            // must change.
            Error::QueueMismatch { .. } | Error::UnknownTag { .. } => ErrorKind::Permanent,
            Error::QueueName { .. } | Error::Prefetch { .. } | Error::StreamConsumed { .. } => {
                ErrorKind::Config
            }
        }
    }
}

impl From<Error> for PluginError {
    fn from(error: Error) -> PluginError {
        PluginError::new(error.kind(), error.to_string())
    }
}

/// Turns a failure of `action` on `queue` into the variant that tells the operator what to
/// do.
pub fn classify(action: &str, queue: &str, endpoint: &str, error: &lapin::Error) -> Error {
    let reason = describe(error);
    let (queue, endpoint, action) = (queue.to_string(), endpoint.to_string(), action.to_string());
    if let lapin::ErrorKind::ProtocolError(amqp) = error.kind() {
        match amqp.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) => {
                return Error::QueueMissing {
                    queue,
                    endpoint,
                    reason,
                }
            }
            AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)
            | AMQPErrorKind::Soft(AMQPSoftError::RESOURCELOCKED) => {
                return Error::QueueMismatch {
                    queue,
                    endpoint,
                    detail: "exists with other settings than Golconde asks for, or is locked \
                             by another connection; set `declare = \"passive\"` to use it as \
                             it is"
                        .into(),
                    reason,
                }
            }
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => {
                return Error::Refused {
                    action,
                    endpoint,
                    reason,
                }
            }
            _ => {}
        }
    }
    Error::Lost {
        action,
        endpoint,
        reason,
    }
}

/// "none of the 2 brokers answered: 1) amqp://…: reason; 2) amqp://…: reason; hint", each
/// distinct hint once.
fn unreachable(failures: &[Error]) -> String {
    let mut out = format!("none of the {} brokers answered:", failures.len());
    let mut hints: Vec<String> = Vec::new();
    for (i, failure) in failures.iter().enumerate() {
        let (endpoint, reason, hint) = match failure {
            Error::Connect {
                endpoint,
                reason,
                hint,
            } => (endpoint.as_str(), reason.clone(), hint.to_string()),
            Error::Timeout {
                action,
                endpoint,
                ms,
                hint,
            } => (
                endpoint.as_str(),
                format!("{action} timed out after {ms} ms"),
                format!("check that the broker is reachable and not overloaded{hint}"),
            ),
            other => ("", other.to_string(), String::new()),
        };
        let separator = if i == 0 { " " } else { "; " };
        out.push_str(&format!("{separator}{}) {endpoint}: {reason}", i + 1));
        if !hint.is_empty() && !hints.contains(&hint) {
            hints.push(hint);
        }
    }
    for hint in hints {
        out.push_str("; ");
        out.push_str(&hint);
    }
    out
}

/// What to do about a failed connection, read from rustls' and lapin's reasons. `tls` tells
/// whether the connection was TLS and `identity` whether it offered a client certificate.
pub fn connect_hint(reason: &str, tls: bool, identity: bool) -> &'static str {
    let reset = reason.contains("reset by peer")
        || reason.contains("CertificateRequired")
        || reason.contains("HandshakeFailure")
        || reason.contains("UnexpectedEof");
    if reason.contains("NotValidForName") || reason.contains("not valid for name") {
        "the broker's certificate is not for the host in `url`: connect by a name the \
         certificate lists"
    } else if reason.contains("certificate") && !reason.contains("CertificateRequired") {
        "the broker's certificate is not trusted: give the CA that signed it in \
         `tls_ca_file` (a PEM file)"
    } else if tls && !identity && reset {
        // A broker that requires a client certificate closes a TLS 1.3 connection right
        // after the handshake, which the client often sees as a plain reset.
        "if the broker requires client certificates (`ssl_options.fail_if_no_peer_cert`), \
         give one in `tls_cert_file` and `tls_key_file`; otherwise check that `url` names a \
         TLS port"
    } else if tls && reset {
        "check that the broker trusts the CA of `tls_cert_file`, and that `url` names a TLS \
         port"
    } else {
        "check that the broker is running and reachable, and the user, password and vhost \
         in `url`"
    }
}

/// lapin's message, with the broker's reply text where there is one.
pub fn describe(error: &lapin::Error) -> String {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => {
            format!("{} {}", amqp.get_id(), amqp.get_message())
        }
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::{connect_hint, Error};

    #[test]
    fn no_broker_answering_lists_every_failure_and_each_hint_once() {
        let refused = |endpoint: &str| Error::Connect {
            endpoint: endpoint.into(),
            reason: "Connection refused (os error 111)".into(),
            hint: connect_hint("Connection refused (os error 111)", false, false),
        };
        let error = Error::Unreachable {
            failures: vec![
                refused("amqp://u:***@a:5672/%2f"),
                Error::Timeout {
                    action: "connecting".into(),
                    endpoint: "amqp://u:***@b:5672/%2f".into(),
                    ms: 900,
                    hint: ", or raise `connect_timeout_ms`",
                },
                refused("amqp://u:***@c:5672/%2f"),
            ],
        };
        assert_eq!(
            error.to_string(),
            "none of the 3 brokers answered: 1) amqp://u:***@a:5672/%2f: Connection refused \
             (os error 111); 2) amqp://u:***@b:5672/%2f: connecting timed out after 900 ms; \
             3) amqp://u:***@c:5672/%2f: Connection refused (os error 111); check that the \
             broker is running and reachable, and the user, password and vhost in `url`; \
             check that the broker is reachable and not overloaded, or raise \
             `connect_timeout_ms`"
        );
        assert_eq!(
            error.kind(),
            golconde_plugin_api::ErrorKind::Transient,
            "a cluster may come back"
        );
    }

    #[test]
    fn connection_failures_say_what_to_change() {
        let cases = [
            (
                "invalid peer certificate: UnknownIssuer",
                true,
                true,
                "`tls_ca_file`",
            ),
            (
                "invalid peer certificate: NotValidForName",
                true,
                true,
                "a name the certificate lists",
            ),
            (
                "certificate not valid for name \"x\"",
                true,
                true,
                "a name the certificate lists",
            ),
            (
                "Connection reset by peer (os error 104)",
                true,
                false,
                "`tls_cert_file`",
            ),
            (
                "received fatal alert: CertificateRequired",
                true,
                false,
                "`tls_cert_file`",
            ),
            (
                "Connection reset by peer (os error 104)",
                true,
                true,
                "trusts the CA of `tls_cert_file`",
            ),
            (
                "Connection refused (os error 111)",
                false,
                false,
                "running and reachable",
            ),
            (
                "Connection reset by peer (os error 104)",
                false,
                false,
                "running and reachable",
            ),
        ];
        for (reason, tls, identity, expected) in cases {
            let hint = connect_hint(reason, tls, identity);
            assert!(hint.contains(expected), "{reason}: {hint}");
        }
    }
}

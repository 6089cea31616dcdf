//! What can go wrong talking to Redis, and how each failure becomes a [`PluginError`] of
//! the right kind at the boundary.
//!
//! Two families matter to the rest of the plugin: failures that leave a connection
//! unusable ([`Error::is_lost`]: it is dropped and another one opened), and error replies,
//! after which the connection is still in step and may be reused. Which of the latter
//! pass on their own (a server loading its data, a replica during a failover) is
//! [`Error::passes`].
//!
//! May depend on: `golconde-plugin-api` (its error type), `thiserror`.

use golconde_plugin_api::{ErrorKind, PluginError};
use golconde_plugin_support::tls::Failure;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to {address}: {source}; check that Redis runs there (`url`)")]
    Connect {
        address: String,
        source: std::io::Error,
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
    /// AUTH was refused: wrong user or password, or a user that is off.
    #[error("Redis refused the login: {0}")]
    Auth(String),
    /// SELECT was refused: the database of `url` does not exist.
    #[error("Redis refused database {db} of `url`: {reply}")]
    Database { db: u32, reply: String },
    /// What `declare = "passive"` requires is not there: the text says what to run.
    #[error("{0}")]
    Missing(String),
    /// An error reply (`-CODE text`): the connection is still in step.
    #[error("Redis answered `{line}`")]
    Server { line: String },
    /// `WAIT` counted fewer replicas than `wait_replicas`.
    #[error(
        "only {acknowledged} of the {wanted} replicas asked for (`wait_replicas`) confirmed \
         the batch within {ms} ms (`wait_timeout_ms`)"
    )]
    Replicas {
        acknowledged: i64,
        wanted: u32,
        ms: u64,
    },
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("Redis closed the connection")]
    Closed,
    #[error("unexpected reply from Redis: {0}")]
    Malformed(String),
}

impl Error {
    /// An error reply, from its line without the leading `-`.
    pub fn server(line: impl Into<String>) -> Error {
        Error::Server { line: line.into() }
    }

    /// The error reply's code (`WRONGTYPE`, `NOGROUP`, `ERR`), if this is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Server { line } => line.split(' ').next(),
            _ => None,
        }
    }

    /// The connection this came from is out of step or gone, and must be dropped.
    pub fn is_lost(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. }
                | Error::Tls { .. }
                | Error::Timeout { .. }
                | Error::Io(_)
                | Error::Closed
                | Error::Malformed(_)
        )
    }

    /// Worth trying again after a pause on a new connection: the connection was lost, or
    /// the server said it cannot serve for now (loading its data, a replica that cannot
    /// take writes during a failover, a busy script, out of memory, cannot persist).
    pub fn passes(&self) -> bool {
        self.is_lost()
            || matches!(
                self.code(),
                Some(
                    "LOADING"
                        | "BUSY"
                        | "MASTERDOWN"
                        | "READONLY"
                        | "TRYAGAIN"
                        | "CLUSTERDOWN"
                        | "OOM"
                        | "MISCONF"
                        | "NOREPLICAS"
                        | "UNBLOCKED"
                )
            )
    }

    /// The boundary error, prefixed with what was being done and where.
    pub fn to_plugin(&self, context: &str) -> PluginError {
        let (kind, advice) = self.kind();
        PluginError::new(kind, format!("{context}: {self}{advice}"))
    }

    /// What kind of failure this is at the boundary, and what to do about it.
    fn kind(&self) -> (ErrorKind, &'static str) {
        match self {
            Error::Auth(_) => (
                ErrorKind::Config,
                "; check `username` and `password` (or the user and password in `url`)",
            ),
            Error::Missing(_) => (ErrorKind::Config, ""),
            Error::Database { .. } => (
                ErrorKind::Config,
                "; the number after the address in `url` is the database (0 unless the server \
                 has more: `databases` in redis.conf)",
            ),
            Error::Server { .. } => match self.code() {
                Some("NOPERM") => (
                    ErrorKind::Config,
                    "; the ACL user lacks a permission: grant it the commands and keys the \
                     transport uses (see the `redis` transport's documentation)",
                ),
                Some("WRONGTYPE") => (
                    ErrorKind::Config,
                    "; the key holds something other than a stream: choose another queue name, \
                     or delete the key",
                ),
                Some("MOVED" | "ASK" | "CROSSSLOT") => (
                    ErrorKind::Config,
                    "; Redis Cluster is not supported: point `url` at a standalone server (or a \
                     primary behind a failover address)",
                ),
                Some("NOGROUP") => (
                    ErrorKind::Config,
                    "; the consumer group is missing: create it, or use `declare = \"create\"`",
                ),
                _ => (ErrorKind::Transient, ""),
            },
            _ => (ErrorKind::Transient, ""),
        }
    }
}

/// What to do about a failed TLS connection, read from rustls' reason; `identity` tells
/// whether a client certificate was offered.
pub fn tls_hint(reason: &str, identity: bool) -> &'static str {
    match Failure::classify(reason, identity) {
        Failure::WrongName => {
            "the server's certificate is not for that name: set `tls_server_name` to a name \
             the certificate lists"
        }
        Failure::Untrusted => {
            "the server's certificate is not trusted: give the CA that signed it in \
             `tls_ca_file` (a PEM file)"
        }
        Failure::NoClientCertificate => {
            "if the server requires client certificates (`tls-auth-clients yes`), give one in \
             `tls_cert_file` and `tls_key_file`; otherwise check that `url` names the server's \
             TLS port"
        }
        Failure::ClientCertificateRefused => {
            "check that the server trusts the CA of `tls_cert_file` (`tls-ca-cert-file`), and \
             that `url` names the server's TLS port"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_what_will_pass() {
        let wrongtype = Error::server("WRONGTYPE Operation against a key holding the wrong kind");
        assert_eq!(wrongtype.code(), Some("WRONGTYPE"));
        let plugin = wrongtype.to_plugin("publishing to `q`");
        assert_eq!(plugin.kind, ErrorKind::Config);
        assert!(plugin
            .message
            .starts_with("publishing to `q`: Redis answered `WRONGTYPE"));
        assert!(plugin.message.contains("choose another queue name"));

        let noperm = Error::server("NOPERM User app has no permissions to run the 'xadd' command");
        assert_eq!(noperm.to_plugin("x").kind, ErrorKind::Config);
        assert!(!noperm.passes());

        for line in [
            "LOADING Redis is loading the dataset in memory",
            "READONLY You can't write against a read only replica.",
            "OOM command not allowed when used memory > 'maxmemory'.",
        ] {
            let error = Error::server(line);
            assert!(error.passes(), "{line}");
            assert!(!error.is_lost(), "{line}");
            assert_eq!(error.to_plugin("x").kind, ErrorKind::Transient, "{line}");
        }
        assert!(Error::Closed.passes() && Error::Closed.is_lost());
        let auth = Error::Auth("WRONGPASS invalid username-password pair".into());
        assert_eq!(auth.to_plugin("x").kind, ErrorKind::Config);
        assert!(auth.to_plugin("x").message.contains("`password`"));
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
                "received fatal alert: CertificateRequired",
                false,
                "`tls_cert_file`",
            ),
            (
                "Connection reset by peer (os error 104)",
                true,
                "trusts the CA",
            ),
        ];
        for (reason, identity, expected) in cases {
            let hint = tls_hint(reason, identity);
            assert!(hint.contains(expected), "{reason}: {hint}");
        }
    }
}

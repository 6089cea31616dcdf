//! Opening a connection to the first host of a DSN that takes it.

use golconde_plugin_support::errors::chain;
use tokio_postgres::{tls::MakeTlsConnect, Client, Socket};

use crate::{
    dsn::{Candidate, Target},
    tls,
};

/// A connection not yet driven: the caller runs it (spawned, or polled for
/// notifications).
pub type Connection = tokio_postgres::Connection<
    Socket,
    <tokio_postgres_rustls::MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream,
>;

/// Connects to the first host of `target` that takes the connection. Each host gets
/// `connect_timeout` of its own, and a host that fails is logged before the next is
/// tried; when none takes it, the error names each host and why, with a hint where there
/// is one. Returns the client, its connection (to be driven by the caller) and the
/// `host:port` connected to.
pub async fn open(target: &Target) -> Result<(Client, Connection, String), String> {
    let candidates = target.candidates();
    let mut failures = Vec::new();
    for (i, candidate) in candidates.iter().enumerate() {
        match open_one(target, candidate).await {
            Ok((client, connection)) => {
                tracing::debug!("connected to {}", candidate.label);
                return Ok((client, connection, candidate.label.clone()));
            }
            Err(reason) => {
                if let Some(next) = candidates.get(i + 1) {
                    tracing::warn!(
                        host = %candidate.label,
                        "cannot connect to {} ({reason}); trying {} next",
                        candidate.label,
                        next.label
                    );
                }
                failures.push((&candidate.label, reason));
            }
        }
    }
    let name = &target.target;
    Err(match failures.as_slice() {
        [(_, reason)] => format!("cannot connect to {name}: {reason}"),
        _ => format!(
            "cannot connect to any of the {} hosts of {name}: {}",
            failures.len(),
            failures
                .iter()
                .map(|(label, reason)| format!("{label}: {reason}"))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    })
}

/// Connects to one host within the connect timeout; the error says why not.
async fn open_one(target: &Target, candidate: &Candidate) -> Result<(Client, Connection), String> {
    match tokio::time::timeout(
        target.connect_timeout,
        candidate.connect.connect(target.tls.connector.clone()),
    )
    .await
    {
        Err(_) => Err(format!(
            "timed out after {} ms (`connect_timeout_ms`)",
            target.connect_timeout.as_millis()
        )),
        Ok(Err(e)) => {
            let reason = chain(&e);
            let hint = tls::connect_hint(&reason, &target.tls.options);
            Err(format!("{reason}{hint}"))
        }
        Ok(Ok(pair)) => Ok(pair),
    }
}

/// A failed statement, as a person needs it: the server's message with its detail and
/// hint, or the client's error with its causes.
pub fn describe_error(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => {
            let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                text.push_str("; ");
                text.push_str(detail);
            }
            if let Some(hint) = db.hint() {
                text.push_str("; ");
                text.push_str(hint);
            }
            text
        }
        None => chain(error),
    }
}

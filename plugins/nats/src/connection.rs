//! Opening a NATS connection from [`Settings`]: credentials, TLS, timeouts, and the
//! reconnection backoff async-nats applies when a connection is lost.
//!
//! Each consumer has a connection of its own, so that its reconnections (which a consumer
//! follows to resynchronise, see [`crate::consumer`]) are its own, and the publisher and
//! `ping` have one each. async-nats reconnects a lost connection by itself, forever, with
//! the delays of [`backoff`]; the first connection is tried once per server, each bounded
//! by `connect_timeout_ms`.
//!
//! May depend on: async-nats, tokio, [`crate::config`], [`crate::error`].

use std::time::Duration;

use async_nats::{jetstream, Client, ConnectOptions, Event};
use tokio::sync::mpsc;

use crate::{
    config::{Auth, Settings},
    error::{connect_error, NatsError},
};

/// How often a connection pings the server: a server silent for two intervals is taken for
/// dead and the connection re-established.
const PING_INTERVAL: Duration = Duration::from_secs(10);

/// The delay before reconnection attempt `attempts` (1 for the first): none for the first,
/// then `initial` doubling up to `max`.
pub fn backoff(attempts: usize, initial: Duration, max: Duration) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let doublings = u32::try_from(attempts - 2).unwrap_or(u32::MAX).min(30);
    initial.saturating_mul(1 << doublings).min(max)
}

/// Connects to the first server of `settings` that answers. `role` names the connection
/// to the server (`golconde <instance> <role>`); `events` receives async-nats' connection
/// events (lost, re-established).
pub async fn connect(
    settings: &Settings,
    instance: &str,
    role: &str,
    events: Option<mpsc::UnboundedSender<Event>>,
) -> Result<Client, NatsError> {
    let (initial, max) = (settings.reconnect_initial, settings.reconnect_max);
    let mut options = ConnectOptions::new()
        .name(format!("golconde {instance} {role}"))
        .connection_timeout(settings.connect_timeout)
        .request_timeout(Some(settings.request_timeout))
        .ping_interval(PING_INTERVAL)
        .max_reconnects(None)
        .reconnect_delay_callback(move |attempts| backoff(attempts, initial, max));
    options = match &settings.auth {
        Auth::None => options,
        Auth::UserPassword { user, password } => {
            options.user_and_password(user.clone(), password.clone())
        }
        Auth::Token(token) => options.token(token.clone()),
        Auth::Credentials { contents, path } => options.credentials(contents).map_err(|e| {
            NatsError::Misconfigured(format!(
                "`creds_file` {} cannot be used: {e}",
                path.display()
            ))
        })?,
        Auth::NKey { seed, .. } => options.nkey(seed.clone()),
    };
    if let Some(tls) = &settings.tls {
        options = options
            .require_tls(true)
            .tls_client_config((*tls.config).clone());
        if tls.first {
            options = options.tls_first();
        }
    }
    if let Some(events) = events {
        options = options.event_callback(move |event| {
            let events = events.clone();
            async move {
                let _ = events.send(event);
            }
        });
    }
    // async-nats bounds each server's attempt; this bounds the whole, name resolution
    // included.
    let servers = u32::try_from(settings.servers.len()).unwrap_or(u32::MAX);
    let limit = settings.connect_timeout.saturating_mul(servers) + Duration::from_secs(1);
    let tls = settings.tls.as_ref();
    match tokio::time::timeout(limit, options.connect(settings.servers.clone())).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(connect_error(
            &settings.target,
            &e,
            tls.is_some(),
            tls.is_some_and(|t| t.identity),
        )),
        Err(_) => Err(NatsError::Unavailable(format!(
            "no server of {} answered within {} ms (`connect_timeout_ms` per server)",
            settings.target,
            limit.as_millis()
        ))),
    }
}

/// The JetStream context for `client`: API requests and publish acknowledgements bounded
/// by `request_timeout_ms`.
pub fn jetstream(client: Client, settings: &Settings) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(settings.request_timeout)
        // Publishing waits for its own acknowledgements batch by batch; async-nats' cap on
        // unacknowledged publishes would only make concurrent batches wait for each other.
        .max_ack_inflight(1 << 20)
        .build(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_millis(1000));
        let delays: Vec<u128> = (1..=8)
            .map(|a| backoff(a, initial, max).as_millis())
            .collect();
        assert_eq!(delays, [0, 100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(backoff(usize::MAX, initial, max), max);
    }
}

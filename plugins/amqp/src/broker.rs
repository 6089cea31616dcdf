//! The plugin's own tokio runtime and the steps every connection goes through: connect,
//! open a channel, declare a queue, each bounded by a timeout.
//!
//! The runtime is built on first use, not in `Plugin::new`, because `golconde check`
//! builds every plugin without starting anything. It is small ([`WORKERS`] threads): lapin
//! reads and writes each connection's socket on a thread of its own, so the runtime only
//! carries lapin's internal tasks and one task per consumer. Host threads enter it with
//! `block_on`; no future, waker or runtime handle ever leaves the plugin.
//!
//! Every connection reads through `src/screen.rs`, so that what lapin parses on its I/O
//! thread can be neither nested deep enough to overflow that thread's stack nor a frame
//! lapin refuses (which would close the connection on the same message again and again).

use std::{future::Future, sync::OnceLock, time::Duration};

use lapin::{
    options::QueueDeclareOptions,
    tcp::{AMQPUriTcpExt, AsyncTcpStream},
    types::FieldTable,
    types::ShortString,
    uri::AMQPUri,
    Channel, Connection, ConnectionProperties,
};
use tokio::runtime::{Handle, Runtime};

use crate::{
    config::{Declare, Settings},
    error::{classify, connect_hint, describe, Error},
    screen::{Kit, Screened},
};

/// Worker threads of the runtime. Two drained a queue measurably faster than one in
/// `examples/amqp_drain.rs`: a consumer's task then does not wait behind lapin's own tasks.
const WORKERS: usize = 2;

/// What a transport and its consumers share: the settings and the runtime.
pub struct Engine {
    pub settings: std::sync::Arc<Settings>,
    runtime: OnceLock<Runtime>,
}

impl Engine {
    pub fn new(settings: Settings) -> Engine {
        Engine {
            settings: std::sync::Arc::new(settings),
            runtime: OnceLock::new(),
        }
    }

    fn runtime(&self) -> Result<&Runtime, Error> {
        if let Some(runtime) = self.runtime.get() {
            return Ok(runtime);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .thread_name("golconde-amqp")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?;
        // Another thread may have won the race; its runtime is used and ours dropped unused.
        Ok(self.runtime.get_or_init(|| runtime))
    }

    /// Runs `future` to completion on the calling (host) thread.
    pub fn block_on<F: Future>(&self, future: F) -> Result<F::Output, Error> {
        Ok(self.runtime()?.block_on(future))
    }

    /// What tasks on the runtime need to connect.
    pub fn connector(&self) -> Result<Connector, Error> {
        Ok(Connector {
            settings: self.settings.clone(),
            handle: self.runtime()?.handle().clone(),
        })
    }

    /// Whether the runtime was ever started, i.e. whether anything may need closing.
    pub fn started(&self) -> bool {
        self.runtime.get().is_some()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Never block the host's thread on the plugin's tasks: connections were closed
            // by their owners already.
            runtime.shutdown_background();
        }
    }
}

/// Opens connections for the runtime's tasks.
#[derive(Clone)]
pub struct Connector {
    pub settings: std::sync::Arc<Settings>,
    pub handle: Handle,
}

impl Connector {
    /// Connects; `role` ends up in the connection's name on the broker, after the
    /// configured `connection_name`, so operators (and tests) can tell connections apart.
    pub async fn connect(&self, role: &str) -> Result<Connection, Error> {
        let settings = &self.settings;
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("{} {role}", settings.connection_name).into());
        let tls = settings.tls.lapin();
        let frame_max = settings.frame_max as usize;
        let tokio = async_rs::Runtime::tokio_with_handle(self.handle.clone());
        // What `Connection::connect_uri_with_config` does, with the stream screened.
        let connecting = Connection::connector(
            settings.uri.clone(),
            async_rs::Runtime::new(Kit::new(self.handle.clone(), frame_max)),
            async move |uri: AMQPUri, _| {
                let stream = uri.connect_with_config_async(tls.as_ref(), &tokio).await?;
                Ok(AsyncTcpStream::Plain(Screened::new(stream, frame_max)))
            },
            properties,
        );
        match tokio::time::timeout(settings.connect_timeout, connecting).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => {
                let reason = describe(&e);
                let tls = settings.uri.scheme == lapin::uri::AMQPScheme::AMQPS;
                Err(Error::Connect {
                    endpoint: settings.endpoint.clone(),
                    hint: connect_hint(&reason, tls, settings.tls.has_identity()),
                    reason,
                })
            }
            Err(_) => Err(self.timeout("connecting", settings.connect_timeout)),
        }
    }

    /// Runs one broker operation about `queue` with the connect timeout.
    pub async fn step<T>(
        &self,
        action: &str,
        queue: &str,
        operation: impl Future<Output = lapin::Result<T>>,
    ) -> Result<T, Error> {
        let limit = self.settings.connect_timeout;
        match tokio::time::timeout(limit, operation).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(classify(action, queue, &self.settings.endpoint, &e)),
            Err(_) => Err(self.timeout(action, limit)),
        }
    }

    /// Declares `queue` durable, or checks that it exists, as configured.
    pub async fn declare(&self, channel: &Channel, queue: &ShortString) -> Result<(), Error> {
        let options = match self.settings.declare {
            Declare::Durable => QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            Declare::Passive => QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
        };
        let action = format!("declaring queue `{queue}`");
        self.step(
            &action,
            queue.as_str(),
            channel.queue_declare(queue.clone(), options, FieldTable::default()),
        )
        .await
        .map(drop)
    }

    pub fn timeout(&self, action: &str, limit: Duration) -> Error {
        Error::Timeout {
            action: action.to_string(),
            endpoint: self.settings.endpoint.clone(),
            ms: limit.as_millis(),
            hint: ", or raise `connect_timeout_ms`",
        }
    }
}

/// Closes `connection`, waiting at most `limit`; what is unacknowledged on it goes back to
/// its queues.
pub async fn close(connection: &Connection, limit: Duration, why: &str) {
    let closing = connection.close(200, ShortString::from(why));
    match tokio::time::timeout(limit, closing).await {
        Ok(Ok(())) => {}
        // Already closed or broken: the broker has requeued everything anyway.
        Ok(Err(e)) => tracing::debug!("closing the connection: {e}"),
        Err(_) => tracing::debug!("closing the connection timed out"),
    }
}

/// A queue name as AMQP carries it.
pub fn queue_name(queue: &str) -> Result<ShortString, Error> {
    ShortString::try_new(queue).map_err(|_| Error::QueueName {
        queue: queue.to_string(),
        len: queue.len(),
    })
}

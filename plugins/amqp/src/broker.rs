//! The plugin's own tokio runtime and the steps every connection goes through: connect,
//! open a channel, declare a queue, each bounded by a timeout.
//!
//! The runtime is built on first use, not in `Plugin::new`, because `golconde check`
//! builds every plugin without starting anything. It is small ([`WORKERS`] threads): lapin
//! reads and writes each connection's socket on a thread of its own, so the runtime only
//! carries lapin's internal tasks and one task per consumer. Host threads enter it with
//! `block_on`; no future, waker or runtime handle ever leaves the plugin.
//!
//! With several brokers in `url` (a cluster's nodes), connecting is a round: the brokers
//! are tried in turn, from the one after the connection owner's last (see [`Connector::connect`]),
//! until one answers; the owner's backoff comes between rounds, never between the brokers
//! of one round, so losing one node costs at most one connect attempt per dead node. The
//! list is shuffled once per transport ([`Engine::new`]), so that many Golconde processes
//! with the same configuration spread over the nodes instead of all crowding the first.
//!
//! Every connection reads through `src/screen.rs`, so that what lapin parses on its I/O
//! thread can be neither nested deep enough to overflow that thread's stack nor a frame
//! lapin refuses (which would close the connection on the same message again and again).

use std::{
    future::Future,
    sync::{Arc, OnceLock},
    time::Duration,
};

use lapin::{
    options::QueueDeclareOptions,
    tcp::{AMQPUriTcpExt, AsyncTcpStream, OwnedTLSConfig},
    types::{FieldTable, ShortString},
    uri::AMQPUri,
    Channel, Connection, ConnectionProperties,
};
use tokio::runtime::{Handle, Runtime};

use crate::{
    config::{Address, Declare, Settings},
    error::{classify, connect_hint, describe, Error},
    queues,
    screen::{self, BrokerStream, Kit, Screened},
    tap::{Inbox, Napping},
};

/// Worker threads of the runtime. Two drained a queue measurably faster than one in
/// `examples/amqp_drain.rs`: a consumer's task then does not wait behind lapin's own tasks.
const WORKERS: usize = 2;

/// Opens one connection's socket: TCP, TLS if the URL asks for it, then the screen (and
/// the consumer's tap) around it.
struct Opener {
    tls: OwnedTLSConfig,
    handle: Handle,
    frame_max: usize,
    tap: Option<Arc<Inbox>>,
}

impl Opener {
    async fn open(&self, uri: &AMQPUri) -> lapin::Result<AsyncTcpStream<BrokerStream>> {
        let tokio = async_rs::Runtime::tokio_with_handle(self.handle.clone());
        let stream = uri
            .connect_with_config_async(self.tls.as_ref(), &tokio)
            .await?;
        let napping = screen::low_water(&stream).map(|low_water| Napping {
            low_water,
            runtime: self.handle.clone(),
        });
        let screened = Screened::new(stream, self.frame_max);
        Ok(AsyncTcpStream::Plain(match self.tap.clone() {
            Some(inbox) => screened.tapped(inbox, napping),
            None => screened,
        }))
    }
}

/// What a transport and its consumers share: the settings and the runtime.
pub struct Engine {
    pub settings: std::sync::Arc<Settings>,
    runtime: OnceLock<Runtime>,
}

impl Engine {
    pub fn new(mut settings: Settings) -> Engine {
        if settings.shuffle {
            fastrand::shuffle(&mut settings.brokers);
        }
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

/// A connection, and which broker it is to.
pub struct Connected {
    pub connection: Connection,
    /// The broker's address as it may be shown (password redacted).
    pub endpoint: String,
}

impl Connector {
    /// Connects to the first broker that answers, trying each once, from the one at
    /// `*next` in the (shuffled) list; on success `*next` becomes the one after it, so
    /// that an owner whose connection is lost starts its next round on another node.
    /// `role` ends up in the connection's name on the broker, after the configured
    /// `connection_name` (and, with several brokers, `@ host:port`), so operators and tests
    /// can tell connections apart.
    ///
    /// With one broker its error is returned as it is; with several, each failure is
    /// logged as it happens and the error lists them all.
    ///
    /// `tap`, on a consumer's connection, is the inbox its deliveries go to instead of lapin
    /// (`src/tap.rs`).
    pub async fn connect(
        &self,
        role: &str,
        next: &mut usize,
        tap: Option<Arc<Inbox>>,
    ) -> Result<Connected, Error> {
        let brokers = &self.settings.brokers;
        let count = brokers.len();
        let start = *next % count;
        let mut failures = Vec::new();
        for step in 0..count {
            let index = (start + step) % count;
            let broker = &brokers[index];
            match self.connect_to(broker, role, tap.clone()).await {
                Ok(connection) => {
                    if !failures.is_empty() {
                        tracing::info!(
                            "connected to {} ({role}) after {} other broker(s) failed",
                            broker.endpoint,
                            failures.len()
                        );
                    }
                    *next = (index + 1) % count;
                    return Ok(Connected {
                        connection,
                        endpoint: broker.endpoint.clone(),
                    });
                }
                Err(e) if count == 1 => return Err(e),
                Err(e) => {
                    let left = count - step - 1;
                    if left > 0 {
                        tracing::warn!("{role}: {e}; trying the next broker ({left} left)");
                    } else {
                        tracing::warn!("{role}: {e}; that was the last broker of the round");
                    }
                    failures.push(e);
                }
            }
        }
        Err(Error::Unreachable { failures })
    }

    async fn connect_to(
        &self,
        broker: &Address,
        role: &str,
        tap: Option<Arc<Inbox>>,
    ) -> Result<Connection, Error> {
        let settings = &self.settings;
        let name = if settings.brokers.len() > 1 {
            format!("{} {role} @ {}", settings.connection_name, broker.node)
        } else {
            format!("{} {role}", settings.connection_name)
        };
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let opener = Opener {
            tls: settings.tls.lapin(),
            handle: self.handle.clone(),
            frame_max: broker.frame_max as usize,
            tap,
        };
        let deadline = tokio::time::Instant::now() + settings.connect_timeout;
        // The socket is opened here and handed to lapin, not opened by lapin's I/O thread:
        // lapin reports a failed connect through the handshake's first promise, and when the
        // refusal comes before that promise is registered it is lost and connecting hangs
        // until the timeout. Opened here, a refused or unreachable broker fails at once.
        let stream = match tokio::time::timeout_at(deadline, opener.open(&broker.uri)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(self.refused(broker, &e)),
            Err(_) => {
                return Err(self.timeout(&broker.endpoint, "connecting", settings.connect_timeout))
            }
        };
        let opened = std::sync::Mutex::new(Some(stream));
        // What `Connection::connect_uri_with_config` does, with the stream screened. lapin
        // calls this once (it is given no backoff of its own); if it ever called again, a
        // new socket is opened the same way.
        let connecting = Connection::connector(
            broker.uri.clone(),
            async_rs::Runtime::new(Kit::new(self.handle.clone(), opener.frame_max)),
            async move |uri: AMQPUri, _| {
                let ready = opened.lock().unwrap_or_else(|e| e.into_inner()).take();
                match ready {
                    Some(stream) => Ok(stream),
                    None => opener.open(&uri).await,
                }
            },
            properties,
        );
        match tokio::time::timeout_at(deadline, connecting).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(e)) => Err(self.refused(broker, &e)),
            Err(_) => Err(self.timeout(&broker.endpoint, "connecting", settings.connect_timeout)),
        }
    }

    /// Why connecting to `broker` failed, with what to check.
    fn refused(&self, broker: &Address, e: &lapin::Error) -> Error {
        let reason = describe(e);
        let tls = broker.uri.scheme == lapin::uri::AMQPScheme::AMQPS;
        Error::Connect {
            endpoint: broker.endpoint.clone(),
            hint: connect_hint(&reason, tls, self.settings.tls.has_identity()),
            reason,
        }
    }

    /// Runs one broker operation about `queue` on the broker at `endpoint` with the
    /// connect timeout.
    pub async fn step<T>(
        &self,
        endpoint: &str,
        action: &str,
        queue: &str,
        operation: impl Future<Output = lapin::Result<T>>,
    ) -> Result<T, Error> {
        let limit = self.settings.connect_timeout;
        match tokio::time::timeout(limit, operation).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(classify(action, queue, endpoint, &e)),
            Err(_) => Err(self.timeout(endpoint, action, limit)),
        }
    }

    /// Declares `queue` durable with its type and arguments, or checks that it exists, as
    /// configured. A refusal because the queue exists otherwise says what differs and what
    /// to set.
    pub async fn declare(
        &self,
        endpoint: &str,
        channel: &Channel,
        queue: &ShortString,
    ) -> Result<(), Error> {
        let spec = self.settings.queues.spec(queue.as_str());
        let (options, arguments) = match self.settings.declare {
            Declare::Durable => (
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                spec.table(),
            ),
            Declare::Passive => (
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            ),
        };
        let action = format!("declaring queue `{queue}`");
        let declared = self
            .step(
                endpoint,
                &action,
                queue.as_str(),
                channel.queue_declare(queue.clone(), options, arguments),
            )
            .await;
        match declared {
            Ok(_) => Ok(()),
            Err(Error::QueueMismatch {
                queue,
                endpoint,
                reason,
                ..
            }) if self.settings.declare == Declare::Durable => Err(Error::QueueMismatch {
                detail: queues::explain(spec, &queue, &reason),
                queue,
                endpoint,
                reason,
            }),
            Err(e) => Err(e),
        }
    }

    pub fn timeout(&self, endpoint: &str, action: &str, limit: Duration) -> Error {
        Error::Timeout {
            action: action.to_string(),
            endpoint: endpoint.to_string(),
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

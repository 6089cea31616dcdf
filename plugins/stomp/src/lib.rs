//! The `stomp` transport: consumes from and publishes to a broker over STOMP 1.2
//! (RabbitMQ's STOMP adapter, ActiveMQ), the protocol the first Golconde spoke.
//!
//! It carries its own small STOMP client, because no well-kept Rust one exists: a
//! `tokio-util` codec ([`codec`]) over frames ([`frame`]), a connection with heart-beats
//! and receipts ([`connection`]), a self-healing subscription ([`consumer`]) and publishing
//! with receipts as confirmations ([`publisher`]). May depend on: `golconde-plugin-api`,
//! `golconde-plugin-support` (its runtime and TLS set-up), tokio and tokio-util, `bytes`, `memchr`, serde
//! (configuration only), `thiserror`, `tracing`, rustls, `fastrand` (the order of the
//! brokers); never on a host crate.
//!
//! Design decisions, and why:
//! - **The plugin owns its tokio runtime** (one worker thread per transport instance,
//!   created on first use), and nothing async crosses the ABI: each boundary call enters
//!   the runtime with `block_on`, and a consumer's `receive` does so only when it has to
//!   wait, draining already buffered deliveries without touching the runtime. One worker
//!   is enough because the host's own threads do the rest (taking deliveries, queueing
//!   ACKs); the worker only moves bytes.
//! - **A receipt is a confirmation.** Every SEND asks for one and a batch is published
//!   when all have come back; RabbitMQ answers only once the message is confirmed.
//! - **Acknowledgements are queued, not awaited.** `ack` returns once the ACK frame is
//!   queued on the connection the delivery came from; if that connection dies before the
//!   broker read it, the message is redelivered (at-least-once, as the host expects).
//!   Closing a consumer says DISCONNECT and waits for its receipt, so every ACK sent before
//!   `close` returns has taken effect.
//! - **Several brokers are one list, shuffled once per transport instance** (`addresses`,
//!   a cluster's nodes; `shuffle_addresses = false` keeps the order written). Every
//!   connection of the instance tries them in that order, so several Golconde processes
//!   spread over the brokers while one process keeps to one;
//!   a connection that is lost is re-established on the next broker that answers, the
//!   lost one being tried last. Nothing else changes with the broker: a delivery is only
//!   ever settled on the connection it came from.
//! - **Tags are the plugin's.** The host's delivery tags increase in delivery order and
//!   never repeat, also across reconnections; a tag from a lost connection is never
//!   acknowledged on a new one (see [`consumer`]).
//!
//! # Configuration
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `address` | `"127.0.0.1:61613"` | the broker's STOMP listener, `host:port` |
//! | `addresses` | none | instead of `address`: several brokers (`["a:61613", "b:61613"]`, a cluster's nodes), each `host:port`; at least one. Connections try them in an order shuffled per transport instance; a lost one is re-established on the next that answers |
//! | `shuffle_addresses` | `true` | `false`: try `addresses` in the order written (a preferred broker first) |
//! | `login` | none | CONNECT's `login` |
//! | `passcode` | none | CONNECT's `passcode`; never logged |
//! | `virtual_host` | `"/"` | CONNECT's `host` header: the RabbitMQ virtual host (ActiveMQ ignores it) |
//! | `heartbeat_ms` | `[10000, 10000]` | `[send, receive]`: we send a heart-beat at least every `send` ms and want one from the broker every `receive` ms; 0 turns a direction off. The broker's wishes are merged in as STOMP says; a broker silent for twice the agreed period is taken for dead and the connection re-established |
//! | `connect_timeout_ms` | `10000` | for TCP connect plus CONNECTED, per broker |
//! | `receipt_timeout_ms` | `30000` | for the receipt of a SUBSCRIBE, of a published batch, of DISCONNECT |
//! | `max_frame_bytes` | `16777216` | the largest frame held in memory (4096 to 1 GiB). A larger MESSAGE is not buffered: its body is skipped as it arrives and it is delivered empty, marked `x-golconde-transport-error` (see Headers) |
//! | `max_headers` | `1024` | the most header lines of a frame kept (at least 1); a MESSAGE with more is delivered with the first ones (and those the client needs, such as `ack`), marked `x-golconde-transport-error` |
//! | `reconnect_initial_ms`, `reconnect_max_ms` | `100`, `30000` | a lost consumer connection is re-established after `initial`, doubling up to `max` between failed attempts (with `addresses`: between rounds that tried every broker) |
//! | `prefetch_header` | `"prefetch-count"` | the SUBSCRIBE header carrying the pipeline's prefetch: `prefetch-count` for RabbitMQ, `activemq.prefetchSize` for ActiveMQ, `""` for none. Whatever the broker does with it, the consumer holds at most the prefetch in deliveries the host has not taken, and refuses a prefetch of 0 |
//! | `tls` | `false` | connect with TLS (rustls): RabbitMQ's `stomp.listeners.ssl`, ActiveMQ's `stomp+ssl` |
//! | `tls_ca_file` | none | with `tls`: PEM file of certificate authorities trusted besides the system's roots |
//! | `tls_cert_file`, `tls_key_file` | none | with `tls`: client certificate (PEM, chain allowed) and its unencrypted key (PEM), for a broker that requires one; both or neither |
//! | `tls_server_name` | the host of each address | with `tls`: the name every broker's certificate must be for |
//!
//! # Destinations
//!
//! A pipeline's queue is the STOMP destination. A name that does not start with `/` is a
//! queue: `orders` is sent to and consumed from `/queue/orders`, which RabbitMQ maps to the
//! durable queue `orders` (the one an AMQP pipeline on `orders` uses) and ActiveMQ to its
//! queue `orders`. A name starting with `/` is passed as it is (`/exchange/x/key`,
//! `/amq/queue/q`, `/topic/t`).
//!
//! # Acknowledgement
//!
//! `AckMode::Cumulative` subscribes with `ack:client`: `ack(tag, multiple = true)` sends
//! one ACK for the last pending delivery up to `tag`, which STOMP applies to every earlier
//! one too. Settling a single delivery (`multiple = false`) is only possible for the
//! oldest pending one, since STOMP would settle the earlier ones with it; anything else is
//! a permanent error. `AckMode::Individual` subscribes with `ack:client-individual`, and
//! `multiple = true` sends one ACK per pending delivery up to `tag`. `nack` sends NACK
//! the same way; `requeue = false` adds RabbitMQ's `requeue:false` (dead-letter or drop),
//! while ActiveMQ applies its redelivery policy either way.
//!
//! # Errors
//!
//! - The broker refuses CONNECT (an ERROR frame: wrong login or passcode, unknown virtual
//!   host), or does not speak STOMP 1.2: a configuration error, with the broker's words.
//!   So is a consumer asked for a prefetch of 0.
//! - The broker answers a request with ERROR (SUBSCRIBE to a destination it refuses, SEND
//!   to a missing exchange, a header it does not allow): a permanent error with the
//!   broker's message. RabbitMQ's ERROR frames never name the receipt they answer, so an
//!   ERROR is charged to every request waiting at that moment.
//! - A lost or closed connection, a timeout, missed heart-beats, malformed frames, an
//!   ERROR nothing was waiting for (RabbitMQ's "Server cancelled subscription" when the
//!   queue is deleted): transient. A consumer reconnects on its own; `receive` reports
//!   an error only while reconnecting fails. The publishing connection is replaced on the
//!   next publish.
//! - With several brokers, a failure to connect to one is logged (address and reason) and
//!   the next is tried; when none answers, the error names each broker and why, and is of
//!   the kind they all agree on (every broker refused the login: configuration), else
//!   transient. `ping` succeeds if any broker answers.
//!
//! # Headers
//!
//! MESSAGE headers reach the host as [`Message::headers`], first occurrence of a repeated
//! header only, without the ones that only mean something on the connection
//! (`subscription`, `ack`, and `receipt`, which RabbitMQ echoes from the sender);
//! `destination`, `redelivered`, `persistent`, `content-type` and the rest are kept.
//! On publish, a message's headers are sent as SEND headers (escaped), except the ones the
//! plugin sets or that would change what SEND means: `content-length`, `destination`,
//! `receipt`, `transaction`, `persistent` (always `true`), `subscription`, `ack`,
//! `redelivered`. Names are kept as they are, which is how RabbitMQ spells the AMQP
//! properties (`correlation-id`, `content-type`, `timestamp`, ...), with one exception:
//! the message id (see [`message`] for why `message-id` travels as `amqp-message-id`).
//!
//! A MESSAGE the consumer could not take whole is delivered anyway, so that it costs only
//! itself: dropping the connection would have the broker redeliver it first, for ever. It
//! carries what was kept and the header `x-golconde-transport-error`, whose value says what
//! was left out and which key to raise, e.g. "the STOMP frame is 20971790 bytes, more than
//! `max_frame_bytes` (16777216); its 20971520-byte body was dropped". That happens to a
//! frame over `max_frame_bytes` (its body is dropped), to one with more header lines than
//! `max_headers` (the ones past it are dropped) and to header lines that cannot be read (not
//! UTF-8, a bad escape). The host dead-letters such a delivery. The header is the plugin's
//! own: one the broker sends under that name is dropped.

pub mod codec;
pub mod config;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod frame;
pub mod message;
pub mod publisher;

pub use golconde_plugin_support::{runtime::Runtime, tls};

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use golconde_plugin_api::{
    export_plugins, ConsumeOptions, Host, Message, Plugin, PluginError, Transport,
};

pub use config::{Config, Settings};
pub use consumer::StompConsumer;

use crate::{connection::open_any, message::destination, publisher::Publisher};

/// One configured STOMP broker.
pub struct Stomp {
    settings: Settings,
    runtime: OnceLock<Arc<Runtime>>,
    publisher: Publisher,
}

impl Stomp {
    /// Validates the configuration and, unless `shuffle_addresses = false`, shuffles the
    /// brokers; connects to nothing.
    pub fn from_config(config: Config) -> Result<Stomp, PluginError> {
        let mut settings = Settings::from_config(config)?;
        if settings.shuffle {
            fastrand::shuffle(&mut settings.brokers);
        }
        Ok(Stomp {
            settings,
            runtime: OnceLock::new(),
            publisher: Publisher::default(),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn runtime(&self) -> Result<Arc<Runtime>, PluginError> {
        if let Some(runtime) = self.runtime.get() {
            return Ok(runtime.clone());
        }
        let runtime = Runtime::new("golconde-stomp").map_err(|e| {
            PluginError::transient(format!("cannot start the STOMP plugin's runtime: {e}"))
        })?;
        Ok(self.runtime.get_or_init(|| Arc::new(runtime)).clone())
    }
}

impl Plugin for Stomp {
    const NAME: &'static str = "stomp";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "STOMP 1.2 transport (RabbitMQ, ActiveMQ): client acknowledgement, receipts as confirms";
    type Config = Config;

    fn new(config: Config, host: &Host) -> Result<Self, PluginError> {
        let stomp = Stomp::from_config(config)?;
        tracing::debug!(
            instance = host.instance(),
            "STOMP transport for {}",
            stomp.settings.target()
        );
        Ok(stomp)
    }
}

impl Transport for Stomp {
    type Consumer = StompConsumer;

    fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<StompConsumer, PluginError> {
        let destination =
            destination(queue).map_err(|e| e.to_plugin(&format!("consuming `{queue}`")))?;
        StompConsumer::start(self.runtime()?, self.settings.clone(), destination, options)
    }

    fn publish(&self, queue: &str, messages: &[Message]) -> Result<(), PluginError> {
        if messages.is_empty() {
            return Ok(());
        }
        let destination =
            destination(queue).map_err(|e| e.to_plugin(&format!("publishing to `{queue}`")))?;
        let frames = messages
            .iter()
            .enumerate()
            .map(|(index, message)| {
                message::send_frame(&destination, message).map_err(|why| {
                    PluginError::permanent(format!(
                        "message {index} of the batch for `{destination}` cannot be sent: {why}"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let runtime = self.runtime()?;
        runtime
            .block_on(self.publisher.publish(&self.settings, frames))
            .map_err(|e| {
                e.to_plugin(&format!(
                    "publishing {} messages to `{destination}` on {}",
                    messages.len(),
                    self.settings.target()
                ))
            })
    }

    fn ping(&self) -> Result<(), PluginError> {
        let runtime = self.runtime()?;
        // Any broker will do: a cluster with one node down still works.
        runtime
            .block_on(async {
                let (connection, _) = open_any(&self.settings, 0, None).await?;
                connection.disconnect().await
            })
            .map_err(|e| e.to_plugin(&format!("connecting to {}", self.settings.target())))
    }
}

impl Drop for Stomp {
    fn drop(&mut self) {
        // Say goodbye to the broker, but never hold up the host's shutdown for long.
        if let Some(runtime) = self.runtime.get() {
            let limit = self.settings.receipt_timeout.min(Duration::from_secs(2));
            let _ = runtime
                .block_on(async { tokio::time::timeout(limit, self.publisher.close()).await });
        }
    }
}

export_plugins! {
    transport: Stomp,
}

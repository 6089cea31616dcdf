//! The `amqp` transport plugin: consumes from and publishes to an AMQP 0-9-1 broker
//! (RabbitMQ) with lapin.
//!
//! What it does for the host: consumes with manual acknowledgements and the prefetch the
//! host asks for, acknowledges one delivery or all up to it, rejects with or without
//! requeue; publishes persistent messages and returns only once the broker confirmed every
//! one; survives connection loss by reconnecting with exponential backoff, to the next node
//! of a cluster that answers when `url` lists several. Declares queues with the type
//! (classic, quorum, stream) and arguments configured for them (`src/queues.rs`). AMQP
//! properties and headers travel as the message's string headers (`src/properties.rs`).
//!
//! Key decisions, and why:
//! - **The plugin owns a small tokio runtime** (`src/broker.rs`), started on first use. lapin
//!   runs on it through `async_rs`'s tokio support (`connect_uri_with_runtime`). The
//!   boundary stays blocking: host threads enter the runtime with `block_on` for connecting
//!   and publishing, and not at all for receiving and acknowledging, which are the hot path
//!   (`src/consumer.rs`).
//! - **Delivery tags carry the channel's generation**, so an acknowledgement can never land
//!   on a channel other than the one that delivered the message (`src/consumer.rs`).
//! - **Batches are pipelined** when publishing: one round trip per batch (`src/publisher.rs`).
//! - **lapin reads through a screen** (`src/screen.rs`): content header frames are rewritten
//!   before lapin parses them where they would crash the process (headers nested thousands
//!   of levels deep overflow the stack of lapin's I/O thread, which the plugin cannot size)
//!   or make lapin drop the connection on the same message forever (strings that are not
//!   UTF-8, a frame over the connection's frame_max).
//! - **Deliveries do not go through lapin** (`src/tap.rs`): on a consumer's connection the
//!   screen also lifts each delivery's frames out of the stream and builds the host's
//!   delivery itself; lapin keeps the connection and every other frame. Its per-frame
//!   parsing and routing were the largest share of the plugin's CPU time per message.
//! - **No header makes publishing fail** (`src/properties.rs`): what fits no property travels
//!   as a plain header, what cannot be a header travels packed, what does not fit in a frame
//!   is left out and named.
//!
//! May depend on: `golconde-plugin-api`, lapin and its runtime glue (`async-rs`, tokio),
//! serde for the configuration. Nothing async crosses the ABI.
//!
//! # Configuration
//!
//! ```toml
//! [transports.rabbit]
//! plugin = "amqp"
//! url = "amqp://golconde:secret@rabbit.internal:5672/%2f"
//! ```
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `url` | (required) | `amqp://user:password@host:port/vhost`, or `amqps://` for TLS (rustls; the system's root certificates plus `tls_ca_file`). The vhost is percent-encoded (`%2f` is `/`). Logs and errors show it with the password as `***`. Of the query parameters, `frame_max` is the largest frame asked for (default 131072, RabbitMQ's; at least 4096; the broker may lower it): larger means fewer frames for large bodies and room for larger headers, and lapin keeps 32 frames of buffer each way per connection. Or a list of such URLs, a cluster's nodes (one scheme for all, each once): each connection tries them in turn until one answers; after losing one, it starts from the next. |
//! | `urls` | | The same key as `url`, under another name; give one of the two. |
//! | `shuffle_urls` | `true` | Shuffle the list once per transport, so that many Golconde processes spread over the nodes; `false` tries them in the order given (a preferred node first). |
//! | `connection_name` | `golconde <instance>` | Shown by the broker (`rabbitmqctl list_connections client_properties`); each connection appends its role: `publisher`, `consumer <queue>`, `ping`, and with several URLs ` @ host:port` of the node it is connected to. |
//! | `heartbeat_s` | `30` | AMQP heartbeat in seconds, 0 to take the broker's. A silent connection is declared dead after about twice this. Overrides a `heartbeat` in `url`. |
//! | `declare` | `"durable"` | `"durable"`: declare each queue durable, with its `queue_type` and `arguments`, before consuming from or publishing to it (created if missing). `"passive"`: only check that it exists, for queues someone else owns with arguments of their choosing. |
//! | `queue_type` | (none: classic) | `"classic"`, `"quorum"` (replicated; durable by definition) or `"stream"` (published to only: consuming one is refused, Golconde does not track stream offsets). Left out, queues are declared without `x-queue-type`, as before this key. |
//! | `arguments` | `{}` | Queue arguments sent when declaring: `{ "x-delivery-limit" = 5, "x-single-active-consumer" = true }`. Strings, integers, booleans and floats, sent as AMQP long strings, signed 64-bit integers, booleans and doubles. `x-queue-type` here is `queue_type`. Refused with `declare = "passive"`. |
//! | `queues` | `{}` | Per queue, a table keyed by queue name with `queue_type` and `arguments` of its own: `{ "golconde.users" = { queue_type = "quorum" } }`. Each replaces the transport's (a queue's `arguments` are not merged with the transport's). |
//! | `connect_timeout_ms` | `10000` | Bound on connecting, and on each setup step (channel, prefetch, declare, subscribe) and on closing. |
//! | `publish_timeout_ms` | `30000` | Bound on publishing one batch, confirmations included. |
//! | `reconnect_initial_ms` | `100` | First delay before a consumer reconnects; it doubles on each failed attempt... |
//! | `reconnect_max_ms` | `30000` | ...up to this. |
//! | `tls_ca_file` | (none) | With `amqps://`: a PEM file of certificate authorities to trust besides the system's, for a broker whose certificate a private CA signed. |
//! | `tls_cert_file`, `tls_key_file` | (none) | With `amqps://`: a client certificate (PEM, chain allowed) and its unencrypted private key (PEM), for a broker that asks for one (`ssl_options.verify = verify_peer`). Both or neither. |
//!
//! An unknown key, or a value of the wrong type or range, is a configuration error naming
//! the key. Building the plugin never connects.
//!
//! # Headers
//!
//! Delivered messages carry, in this order: `message-id`, `correlation-id`,
//! `content-type`, `content-encoding`, `reply-to`, `expiration`, `type`, `app-id`,
//! `user-id`, `timestamp` (seconds since 1970), `priority` when the AMQP property is set,
//! then every custom header, its value as text (numbers in decimal, tables and arrays as
//! JSON). A quorum queue's count of earlier deliveries is one of them: `x-delivery-count`
//! (`"1"`, `"2"`, ...) on a redelivered message. A value nested more than 64 levels deep arrives as
//! `(removed by Golconde: nested more than 64 levels deep)`; strings that are not UTF-8 are
//! read lossily; headers that would make a frame larger than the connection's frame_max are
//! left out and named in `x-golconde-dropped-headers`. Each is logged as a warning naming
//! the message.
//!
//! Publishing maps the same names back to properties when the value fits the property
//! exactly (except `user-id`, sent as a plain header because RabbitMQ refuses a `user_id`
//! that is not the publisher's); any other header, and a property header whose value does
//! not fit (`priority: urgent`, a `message-id` over 255 bytes, an `expiration` that is not
//! a number), becomes a string header of the same name. Headers that cannot be AMQP headers
//! (names over 255 bytes; `CC` and `BCC`, which RabbitMQ takes for routing lists;
//! `x-golconde-packed-headers` and `x-golconde-dropped-headers`) travel inside
//! `x-golconde-packed-headers`, a JSON object, and come back as themselves when the plugin
//! consumes them. Headers too large for one frame with the rest of the properties are left
//! out, largest first, and named in `x-golconde-dropped-headers`. Publishing never fails
//! because of a header; the last two cases are logged as warnings. Messages are always
//! published persistent.
//!
//! # Limits
//!
//! A consumer refuses a prefetch of 0 (AMQP's "no limit") and holds at most the prefetch's
//! worth of deliveries that the host has not taken; beyond that it takes nothing more from
//! lapin until the host receives. Bodies are not copied on the way in (lapin's buffer
//! becomes the delivery's body) nor limited here: the broker's `max_message_size` and the
//! host's `max_message_bytes` bound them.
//!
//! When the broker refuses to declare a queue because it exists with another type or other
//! arguments, the error names the argument, what the queue has and what was asked, and the
//! key to set (or `declare = "passive"`, or deleting the queue).
//!
//! # Connection loss
//!
//! A consumer whose connection or channel dies reconnects with backoff and consumes
//! again, on the next broker of `url` that answers; the backoff comes between rounds of
//! the whole list, not between its brokers. Deliveries of the dead channel that the host has not acknowledged come back from
//! the broker as redeliveries; acknowledging them with their old tags does nothing (it is
//! logged at debug level), and a cumulative acknowledgement covers only the deliveries of
//! the current channel. A publish that fails on a lost connection is a transient error;
//! the next one connects again.

mod broker;
mod config;
mod consumer;
mod error;
mod properties;
mod publisher;
mod queues;
mod screen;
mod tap;
mod tls;

#[doc(hidden)]
pub mod fuzzing;

use std::sync::Arc;

use golconde_plugin_api::{
    export_plugins, ConsumeOptions, Host, Message, Plugin, PluginError, Transport,
};

use crate::{broker::Engine, config::Settings, publisher::Publisher};
pub use crate::{
    config::Config,
    consumer::{generation_of, AmqpConsumer},
};

/// One configured broker.
pub struct AmqpTransport {
    engine: Arc<Engine>,
    publisher: Publisher,
}

impl Plugin for AmqpTransport {
    const NAME: &'static str = "amqp";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "AMQP 0-9-1 (RabbitMQ): acknowledged consuming, confirmed publishing, reconnection";
    type Config = Config;

    fn new(config: Config, host: &Host) -> Result<Self, PluginError> {
        let settings = Settings::from_config(config, host.instance())?;
        tracing::debug!(
            "amqp transport `{}` for {}",
            host.instance(),
            settings.endpoints()
        );
        Ok(AmqpTransport {
            engine: Arc::new(Engine::new(settings)),
            publisher: Publisher::default(),
        })
    }
}

impl Transport for AmqpTransport {
    type Consumer = AmqpConsumer;

    fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<AmqpConsumer, PluginError> {
        Ok(AmqpConsumer::open(self.engine.clone(), queue, options)?)
    }

    fn publish(&self, queue: &str, messages: &[Message]) -> Result<(), PluginError> {
        Ok(self.publisher.publish(&self.engine, queue, messages)?)
    }

    /// The queue's ready messages, asked on the publishing connection.
    fn lag(&self, queue: &str, _pipeline: &str) -> Result<Option<u64>, PluginError> {
        Ok(self.publisher.ready(&self.engine, queue)?)
    }

    fn ping(&self) -> Result<(), PluginError> {
        let connector = self.engine.connector()?;
        self.engine.block_on(async {
            // Any broker answering is enough: the cluster can serve. The rest were logged.
            let connected = connector.connect("ping", &mut 0, None).await?;
            broker::close(
                &connected.connection,
                connector.settings.connect_timeout,
                "ping",
            )
            .await;
            Ok::<_, error::Error>(())
        })??;
        Ok(())
    }
}

impl Drop for AmqpTransport {
    fn drop(&mut self) {
        if !self.engine.started() {
            return;
        }
        if let Ok(connector) = self.engine.connector() {
            let _ = self.engine.block_on(self.publisher.close(&connector));
        }
    }
}

export_plugins! {
    transport: AmqpTransport,
}

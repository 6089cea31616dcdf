//! The `nats` transport: consumes from and publishes to NATS JetStream, with async-nats.
//!
//! A queue is a JetStream subject. Publishing sends to the subject and waits for
//! JetStream's publish acknowledgement, the confirmation that the message is stored.
//! Consuming pulls from a durable consumer named after the pipeline, with explicit
//! acknowledgements. May depend on: `golconde-plugin-api`, `golconde-plugin-support` (its
//! runtime), async-nats (with rustls and
//! ring), tokio, `futures-util`, `bytes`, serde (configuration),
//! serde_json (the packed headers and JetStream's API), base64 (stored messages read back),
//! sha2 (`Nats-Msg-Id`), nkeys, `rustls-pki-types` and `rustls-native-certs` (credentials
//! and certificates, read when built), `thiserror`, `tracing`; never on a host crate.
//!
//! Design decisions, and why:
//! - **The plugin owns its tokio runtime** (one worker thread per transport instance,
//!   started on first use), and nothing async crosses the ABI: a boundary call enters it
//!   with `block_on`; `receive` does so only when it must wait, and `ack` never (it queues
//!   the acknowledgements for the consumer's task).
//! - **Pulled, not pushed** (`src/consumer.rs`): the consumer asks for as many messages as
//!   the prefetch leaves room for, so it never holds more, whatever the consumer's
//!   configuration on the server says.
//! - **Held deliveries are kept alive** with in-progress acknowledgements, so `ack_wait`
//!   needs no relation to how long a batch takes: it only bounds how long after a crash
//!   the messages a consumer held come back.
//! - **Order survives crashes**: a consumer that starts (or reconnects) while JetStream
//!   counts deliveries nobody holds delivers those first, holding newer ones back
//!   (`src/consumer.rs`, "Recovery"). JetStream would otherwise hand over newer messages
//!   first, and a cumulative acknowledgement of them would cover the missing ones unseen.
//! - **Several servers are one list** (`url` with commas); async-nats picks one, learns
//!   the cluster's other servers from it, and re-establishes a lost connection on any.
//!
//! # Configuration
//!
//! ```toml
//! [transports.nats]
//! plugin = "nats"
//! url = "nats://127.0.0.1:4222"
//! ```
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `url` | `"nats://127.0.0.1:4222"` | the server, `nats://host:port` (or `tls://` for TLS); several separated by commas for a cluster. A user part (`nats://user:password@host`) is used as credentials and never shown |
//! | `declare` | `"create"` | `"create"`: make a missing stream or consumer (see Streams); `"passive"`: use only what exists, and refuse with a configuration error naming what to create |
//! | `stream` | derived from the subject | the name of the stream made for a subject no stream captures. Left out, each subject gets its own stream, named after it with every character a stream name cannot hold (`.`, `*`, `>`, `/`, `\`, whitespace) made `_`: `golconde.users` gets `golconde_users`. Given, every subject goes into that one stream (made with the first, extended with the next ones) |
//! | `retention` | `"workqueue"` | for a stream the plugin makes: `"workqueue"` (a message is removed once acknowledged: a queue; one consumer per subject), `"limits"` (messages stay until `max_bytes`/`max_age_s` remove them) or `"interest"` (removed once every consumer acknowledged it) |
//! | `stream_replicas` | `1` | for a stream the plugin makes: its replicas in a cluster (1 to 5) |
//! | `duplicate_window_s` | `120` | for a stream the plugin makes: how long JetStream remembers `Nats-Msg-Id`s to drop replays (0: JetStream's default, two minutes) |
//! | `max_bytes` | none | for a stream the plugin makes: its size limit; a full stream refuses new messages (`discard = new`: publishing is retried) rather than dropping old ones |
//! | `max_age_s` | none | for a stream the plugin makes: messages older than this are removed, consumed or not |
//! | `ack_wait_ms` | `30000` | for a consumer the plugin makes: how long after a crash the deliveries a consumer held come back (a live consumer keeps its deliveries with in-progress acknowledgements every third of it, whatever the batch takes). At least 100 |
//! | `max_deliver` | `-1` | for a consumer the plugin makes: how many times JetStream delivers a message; -1, no limit: Golconde dead-letters a message that cannot be applied itself, and a limit would have JetStream stop delivering one silently |
//! | `max_ack_pending` | `1000` | for a consumer the plugin makes: how many unacknowledged deliveries JetStream allows it; raised to the pipeline's prefetch if lower |
//! | `user`, `password` | none | user and password authentication |
//! | `token` | none | token authentication |
//! | `creds_file` | none | a `.creds` file (user JWT and NKey seed, as `nsc` writes them); relative to the configuration file |
//! | `nkey_seed_file` | none | a file holding an NKey seed (`SU...`) for NKey authentication; relative to the configuration file |
//! | `tls` | `false` (`true` with `tls://`) | connect with TLS (rustls) |
//! | `tls_ca_file` | none (the system's roots) | with TLS: PEM file of the certificate authorities to trust instead of the system's, for a server a private CA signed |
//! | `tls_cert_file`, `tls_key_file` | none | with TLS: client certificate (PEM, chain allowed) and its unencrypted key, for a server that verifies clients (`verify: true`); both or neither |
//! | `tls_first` | `false` | with TLS: the TLS handshake first, before the server's greeting (a server with `handshake_first`) |
//! | `connect_timeout_ms` | `10000` | for connecting to one server (TCP, TLS, greeting) |
//! | `request_timeout_ms` | `10000` | for each JetStream API request, and for the publish acknowledgements of one batch |
//! | `reconnect_initial_ms`, `reconnect_max_ms` | `100`, `30000` | a lost connection is re-established after `initial`, doubling up to `max` between failed attempts |
//!
//! Only one way of authenticating may be given. An unknown key, a value of the wrong type or
//! range, or a file that cannot be read is a configuration error naming the key; building
//! the plugin never connects. Credentials are never logged.
//!
//! # Streams and consumers
//!
//! With `declare = "create"`, consuming or publishing a queue whose subject no stream
//! captures makes a stream for it (see `stream`, `retention`): file storage, the subject
//! only. A stream that captures the subject already is used as it is, whatever its
//! settings.
//!
//! A pipeline consumes with a durable pull consumer named after it (a name JetStream cannot
//! hold is made acceptable as stream names are); `golconde` tools that consume without a
//! pipeline name it after the queue. Made by the plugin, it delivers everything from the
//! start, filters the queue's subject, and acknowledges cumulatively (ack policy `all`), or
//! explicitly on a `"workqueue"` stream, where JetStream refuses `all`. An existing consumer
//! is used if it is a pull consumer filtering the queue's subject (or taking all of a stream
//! that holds only that subject), with ack policy `explicit` (each delivery acknowledged, in
//! order) or `all`; `none` is refused.
//!
//! Several processes running the same pipeline share its consumer, each pulling deliveries
//! of its own, when its ack policy is `explicit`. With `all`, each acknowledgement covers
//! every earlier message, another process's too: a consumer with ack policy `all` that
//! another client is pulling from is refused with a configuration error saying to make it
//! with ack policy `explicit` instead.
//!
//! A `"workqueue"` stream lets one consumer take each subject: a second pipeline on the same
//! queue is refused with a configuration error saying to give it its own queue, or to keep
//! the queue on a `"limits"` or `"interest"` stream.
//!
//! # Acknowledgement and redelivery
//!
//! The host's cumulative acknowledgement becomes one `+ACK` (ack policy `all`) or one per
//! delivery, in delivery order (`explicit`); `AckMode::Individual` works the same, `multiple`
//! deciding what is settled. `nack` with requeue sends `-NAK` (redelivered
//! at once, flagged redelivered); without, `+TERM` (never redelivered; under ack policy
//! `all`, an acknowledgement). `close` gives back (`-NAK`) every delivery not acknowledged,
//! in delivery order, so the next consumer gets them at once, flagged redelivered.
//! Dropping a consumer without `close` is a crash: what it held comes back after
//! `ack_wait`, before anything newer. A delivery is flagged redelivered when JetStream
//! counts more than one delivery of it.
//!
//! # Publishing
//!
//! Each batch is sent whole, then every publish acknowledgement awaited; one missing within
//! `request_timeout_ms` fails the batch as transient (the host sends it again). A message
//! larger than the server's `max_payload` (or the stream's `max_msg_size`) is refused alone
//! as permanent, saying the size and the limit.
//!
//! A message with header `x-golconde-change-id` (the host sets it on fan-out copies of a
//! change that has an id) is published with `Nats-Msg-Id` = that id, `:`, and the first 32
//! hex digits of the SHA-256 of its body: JetStream then drops a replay of the copy (the
//! host republishing a batch) within the stream's duplicate window. The id alone would have
//! JetStream drop, silently, a different change that reuses an id within the window (the
//! databases apply such a change, with a warning); with the digest, only a true replay is
//! dropped. Messages without that header get no `Nats-Msg-Id`.
//!
//! # Headers
//!
//! Headers travel as NATS headers with the names the other transports use (`message-id`,
//! `content-type`, `correlation-id`, `x-golconde-error`, ...). They come back sorted by name
//! (the client keeps them in a hash map), the values of a repeated name in order. What a
//! NATS header cannot carry as it is (odd names, line breaks, values with whitespace at an
//! end, names starting with `Nats-`, which JetStream would take for instructions) travels
//! packed in `x-golconde-packed-headers` and comes back as itself; see [`message`]. So a
//! `Nats-Msg-Id` or `Nats-Expected-...` that a producer set arrives as a header, and goes
//! on as data, not as an instruction to JetStream, when Golconde publishes the message
//! again. `x-golconde-transport-error` arriving from a producer is dropped.
//!
//! # Connection loss
//!
//! async-nats re-establishes a lost connection by itself, with `reconnect_initial_ms`
//! doubling up to `reconnect_max_ms`. A consumer goes on where it was: the deliveries it
//! holds are settled as usual afterwards (a JetStream acknowledgement names the message,
//! not the connection), and deliveries lost on the way are recovered as after a crash;
//! meanwhile `receive` just finds nothing. A publish during the outage fails as transient
//! once its acknowledgements are overdue (`request_timeout_ms`), and the next one goes
//! through when the connection is back; what the failed one had queued may be sent then
//! too, so a message may arrive twice, as the host allows for. Consuming fails only when the consumer is gone (deleted): the host then opens
//! it again.
//!
//! # Unreadable headers
//!
//! nats-server stores a message's header block as its producer wrote it, and the NATS
//! client drops its connection on one it cannot parse (not UTF-8, a header name with a
//! space, a line without `:`). After each reconnection the consumer looks at the message
//! that was on its way with JetStream's message API; one the client cannot read is handed
//! over with the headers that can be read and `x-golconde-transport-error` saying why, and
//! settled as any other when the host has set it aside (see [`poison`]). It costs the
//! queue a reconnection and, for the messages lost with the connection, `ack_wait`.

pub mod config;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod jetstream;
pub mod message;
pub mod poison;
pub mod publisher;

pub use golconde_plugin_support::runtime::Runtime;

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use golconde_plugin_api::{
    export_plugins, ConsumeOptions, Host, Message, Plugin, PluginError, Transport,
};

pub use config::{Config, Settings};
pub use consumer::NatsConsumer;

use crate::{
    connection::connect,
    consumer::Opened,
    error::NatsError,
    jetstream::{check_subject, consumer_name, ensure_consumer},
    publisher::{Publisher, CLOSE_LIMIT},
};

/// One configured NATS server (or cluster).
pub struct Nats {
    settings: Settings,
    instance: String,
    runtime: OnceLock<Arc<Runtime>>,
    publisher: Publisher,
}

impl Nats {
    /// Validates the configuration; connects to nothing. Relative paths are resolved
    /// against `host`'s configuration folder, or taken as they are without a host.
    pub fn from_config(config: Config, host: Option<&Host>) -> Result<Nats, PluginError> {
        Ok(Nats {
            settings: Settings::from_config(config, host)?,
            instance: host.map_or_else(|| "nats".to_string(), |h| h.instance().to_string()),
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
        let runtime = Runtime::new("golconde-nats").map_err(|e| {
            PluginError::transient(format!("cannot start the NATS plugin's runtime: {e}"))
        })?;
        Ok(self.runtime.get_or_init(|| Arc::new(runtime)).clone())
    }

    /// Starts consuming `queue` with the durable consumer named after `owner` (a pipeline,
    /// or the queue itself), made acceptable to JetStream (see the crate documentation).
    fn open_consumer(
        &self,
        queue: &str,
        options: ConsumeOptions,
        owner: &str,
    ) -> Result<NatsConsumer, PluginError> {
        let name = consumer_name(owner);
        let place = format!("`{queue}` (consumer `{name}`) on {}", self.settings.target);
        if options.prefetch == 0 {
            return Err(PluginError::config(format!(
                "consuming {place}: a `prefetch` of 0 (no limit) is refused: the consumer \
                 holds at most `prefetch` unacknowledged deliveries, so it must be at least 1; \
                 set the pipeline's `prefetch`"
            )));
        }
        check_subject(queue).map_err(|e| e.to_plugin(&format!("consuming {place}")))?;
        let runtime = self.runtime()?;
        let settings = &self.settings;
        let opened = runtime.block_on(async {
            let (events, receiver) = tokio::sync::mpsc::unbounded_channel();
            let client = connect(
                settings,
                &self.instance,
                &format!("consumer {name}"),
                Some(events),
            )
            .await?;
            let js = connection::jetstream(client.clone(), settings);
            let state = ensure_consumer(&js, settings, queue, &name, options.prefetch).await?;
            if state.ack_policy == jetstream::AckPolicy::All && state.num_waiting > 0 {
                return Err(NatsError::Misconfigured(format!(
                    "another client is pulling from consumer `{name}` of stream `{}` ({} pull \
                     requests waiting), whose ack policy `all` makes each acknowledgement cover \
                     every earlier message, the other client's too: run the pipeline in one \
                     process, or, to run it in several, make the consumer with ack policy \
                     explicit (`nats consumer add {} {name} --pull --filter {queue} --ack \
                     explicit`)",
                    state.stream, state.num_waiting, state.stream
                )));
            }
            let place = format!(
                "`{queue}` (consumer `{name}` of stream `{}`) on {}",
                state.stream, settings.target
            );
            NatsConsumer::start(
                runtime.clone(),
                Opened {
                    client,
                    js,
                    events: receiver,
                    state,
                    subject: queue.to_string(),
                    prefetch: options.prefetch,
                    place,
                    close_limit: settings.request_timeout * 2 + Duration::from_secs(1),
                },
            )
            .await
        });
        opened.map_err(|e| e.to_plugin(&format!("consuming {place}")))
    }
}

impl Plugin for Nats {
    const NAME: &'static str = "nats";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "NATS JetStream transport: durable pull consumers, publish acknowledgements as confirms";
    type Config = Config;

    fn new(config: Config, host: &Host) -> Result<Self, PluginError> {
        let nats = Nats::from_config(config, Some(host))?;
        tracing::debug!(
            instance = host.instance(),
            "NATS transport for {}",
            nats.settings.target
        );
        Ok(nats)
    }
}

impl Transport for Nats {
    type Consumer = NatsConsumer;

    /// Consumes with a durable consumer named after the queue (an older host, the tools).
    fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<NatsConsumer, PluginError> {
        self.open_consumer(queue, options, queue)
    }

    /// Consumes with a durable consumer named after the pipeline.
    fn consume_as(
        &self,
        queue: &str,
        options: ConsumeOptions,
        pipeline: &str,
    ) -> Result<NatsConsumer, PluginError> {
        self.open_consumer(queue, options, pipeline)
    }

    fn publish(&self, queue: &str, messages: &[Message]) -> Result<(), PluginError> {
        if messages.is_empty() {
            return Ok(());
        }
        let runtime = self.runtime()?;
        runtime
            .block_on(
                self.publisher
                    .publish(&self.settings, &self.instance, queue, messages),
            )
            .map_err(|e| {
                e.to_plugin(&format!(
                    "publishing {} messages to `{queue}` on {}",
                    messages.len(),
                    self.settings.target
                ))
            })
    }

    /// The consumer's pending count: messages on the subject it has not delivered yet.
    fn lag(&self, queue: &str, pipeline: &str) -> Result<Option<u64>, PluginError> {
        check_subject(queue).map_err(|e| e.to_plugin(&format!("reading the lag of `{queue}`")))?;
        let runtime = self.runtime()?;
        let consumer = consumer_name(pipeline);
        let asking = self
            .publisher
            .pending(&self.settings, &self.instance, queue, &consumer);
        runtime
            .block_on(async {
                tokio::time::timeout(self.settings.request_timeout * 2, asking)
                    .await
                    .unwrap_or_else(|_| {
                        Err(NatsError::Unavailable(
                            "no answer within twice `request_timeout_ms`".into(),
                        ))
                    })
            })
            .map_err(|e| {
                e.to_plugin(&format!(
                    "reading the lag of `{queue}` on {}",
                    self.settings.target
                ))
            })
    }

    fn ping(&self) -> Result<(), PluginError> {
        let runtime = self.runtime()?;
        runtime
            .block_on(async {
                let client = connect(&self.settings, &self.instance, "ping", None).await?;
                let js = connection::jetstream(client.clone(), &self.settings);
                jetstream::account_info(&js).await?;
                let _ = client.flush().await;
                Ok::<(), NatsError>(())
            })
            .map_err(|e| e.to_plugin(&format!("connecting to {}", self.settings.target)))
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        // Send what is queued on the publishing connection, but never hold up the host's
        // shutdown for long.
        if let Some(runtime) = self.runtime.get() {
            let _ = runtime.block_on(async {
                tokio::time::timeout(CLOSE_LIMIT, self.publisher.close()).await
            });
        }
    }
}

export_plugins! {
    transport: Nats,
}

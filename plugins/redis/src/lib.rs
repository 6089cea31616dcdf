//! The `redis` transport: queues are Redis streams, consumed in consumer groups with
//! `XREADGROUP` and acknowledged with `XACK`; publishing is `XADD`.
//!
//! It speaks RESP2 itself ([`resp`]) rather than through a client library, because a
//! consumer must hold no entry larger than `max_entry_bytes` whatever a producer wrote,
//! and general clients read every reply whole. May depend on: `golconde-plugin-api`,
//! `golconde-plugin-support` (its runtime and TLS set-up), tokio, rustls (with tokio-rustls, rustls-native-certs, rustls-pki-types), serde
//! (configuration only), `thiserror`, `tracing`; never on a host
//! crate.
//!
//! Design decisions, and why:
//! - **The plugin owns its tokio runtime** (one worker thread per transport instance,
//!   created on first use), and nothing async crosses the ABI: each boundary call enters
//!   it with `block_on`. A consumer reads on the host's thread, in the call to `receive`,
//!   on a connection of its own (a blocking `XREADGROUP` would hold up anything else on
//!   it); the worker only runs the task that keeps held entries fresh.
//! - **The queue is a stream key; the consumer group is named after the pipeline**
//!   (`consume_as`), or after the queue when the host does not say which pipeline
//!   consumes (`consume`). Redis takes any bytes as a name, so names are used as they are.
//!   Several pipelines on one stream each get every entry; several processes in one
//!   pipeline share its entries.
//! - **A reply is a confirmation**: `XADD` answers with the entry's id once Redis has it
//!   (see Durability for what "has" means); a batch is one pipelined round trip.
//! - **Nothing is lost when a consumer dies, nor replayed out of order**: Redis keeps
//!   each consumer's delivered, unacknowledged entries (its pending list). A consumer
//!   reads its own list first, claims what others left idle for `claim_idle_ms`, and
//!   reads no new entry before what others held when it started is settled (see
//!   [`consumer`]).
//!
//! # Configuration
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `url` | `"redis://127.0.0.1:6379/0"` | the server: `redis://[user[:password]@]host[:port][/db]`, `rediss://` for TLS. The user name and password are percent-decoded; the URL is shown in messages with its password masked |
//! | `username`, `password` | none | the ACL user and its password (`AUTH`), instead of giving them in `url`; a password alone logs in as `default` (`requirepass`). Never logged |
//! | `consumer_name` | `"<hostname>-<pid>"` | the consumer name of this process in every group it reads. Two processes must never share one: each would take the other's pending entries for its own. A second consumer of the same group in one process gets `<name>-1` |
//! | `declare` | `"create"` | `"create"`: a consumer creates its group when missing, with `XGROUP CREATE key group 0 MKSTREAM` (from the first entry, so entries written before are consumed too). `"passive"`: the stream and the group must exist; a consumer refuses to start otherwise, saying what to run |
//! | `claim_idle_ms` | `30000` | an entry delivered to another consumer and left unacknowledged this long is claimed (`XAUTOCLAIM`) and delivered again, flagged redelivered; claim rounds run this often. After a crash, the pipeline resumes within this (see Consuming). At least 30 |
//! | `max_entry_bytes` | `16777216` | the largest entry (field names and values) held in memory (4096 to 512 MiB). A larger one is delivered without its body, marked `x-golconde-transport-error` (see Entries); a message larger than this is refused by `publish` as a permanent error |
//! | `max_headers` | `1024` | the most header fields of an entry kept (at least 1); the rest are dropped and the delivery marked |
//! | `maxlen` | none | trims the stream on every publish to about this many entries (`XADD ... MAXLEN ~ n`); see Trimming |
//! | `wait_replicas` | `0` | after each published batch, `WAIT` for this many replicas to confirm it; fewer within `wait_timeout_ms` fails the publish (transient, published again) |
//! | `wait_timeout_ms` | `10000` | how long `WAIT` waits |
//! | `connect_timeout_ms` | `10000` | for TCP connect, TLS, `AUTH` and `SELECT` |
//! | `response_timeout_ms` | `10000` | for any reply, beyond the time a command is asked to wait (`BLOCK`, `WAIT`) |
//! | `reconnect_initial_ms`, `reconnect_max_ms` | `100`, `30000` | a consumer whose connection is lost reconnects after `initial`, doubling up to `max` between failed attempts |
//! | `tls_ca_file` | none | with `rediss://`: PEM file of certificate authorities trusted besides the system's roots |
//! | `tls_cert_file`, `tls_key_file` | none | with `rediss://`: client certificate (PEM, chain allowed) and its unencrypted key, for a server with `tls-auth-clients yes`; both or neither |
//! | `tls_server_name` | the host of `url` | with `rediss://`: the name the server's certificate must be for |
//!
//! # Consuming
//!
//! A consumer reads, in this order: its own pending list (entries delivered to its
//! consumer name and never acknowledged: by a consumer of this process closed since, or
//! whose connection was lost), then, every `claim_idle_ms`, entries other consumers of the
//! group left pending that long (`XAUTOCLAIM`: a process that died), then new entries
//! (`XREADGROUP ... >`, waiting with `BLOCK`). The first two come flagged redelivered, in
//! id order. Redis counts deliveries; an entry delivered many times is still delivered
//! (the host dead-letters a message that keeps failing), never dropped.
//!
//! **Nothing newer comes before what others held.** A consumer name belongs to one
//! process, so the process that replaces a killed one (or a second process of the
//! pipeline) cannot read what the other was given as its own. Were it to read new entries
//! while those wait to be claimed, it would apply them first, and the claimed ones after:
//! an older version of a row over a newer one. So when a consumer starts, and again after
//! it reconnects, it takes note of the entries pending for other consumers of the group
//! (`XPENDING`), up to the highest id pending, and reads no new entry until each is
//! acknowledged by its owner or claimed by this consumer (and then delivered, flagged
//! redelivered, in id order); meanwhile it delivers its own pending list and what it
//! claims, and `receive` returns empty at its timeout. It looks every 250 ms, and claims a
//! dead consumer's entries as soon as they have been idle for `claim_idle_ms`, so **after
//! a crash, the pipeline resumes within `claim_idle_ms`** of the dead process's last
//! touch; it logs once, at info level, what it waits for. A live consumer's entries are
//! waited for until it acknowledges them (it keeps them from being claimed, below), which
//! with a healthy pipeline is one batch. Entries other consumers receive after the start
//! are not waited for: processes of one pipeline still share new entries, each waiting,
//! when it starts, only for the batches the others hold then. Lowering `claim_idle_ms`
//! shortens the pause after a crash, and is safe as long as it stays above the bound
//! below: held entries are refreshed, so the length of a batch does not count.
//!
//! `claim_idle_ms` must exceed the longest time an entry can wait between `XREADGROUP`
//! and `XACK` *in a process that has stopped refreshing it*: while a consumer holds a
//! batch, a background task resets the idle time of each held entry every third of
//! `claim_idle_ms` (`XCLAIM ... JUSTID` of those still its own), so a live consumer never
//! loses an entry to another however slow its batch. What it protects against is a
//! process that cannot reach Redis (or is paused) for longer: its entries are then
//! claimed and processed again elsewhere (at-least-once), and its later `XACK` is
//! harmless.
//!
//! A consumer holds at most the pipeline's prefetch of unacknowledged entries. `ack(tag,
//! multiple)` sends one `XACK` of every held id up to `tag`; settling one delivery alone
//! works in either acknowledgement mode. `nack` with requeue sends nothing: the
//! deliveries are forgotten, stay pending, and the next `receive` reads them again first;
//! without requeue it acknowledges them (Redis has no dead-letter of its own: the entry
//! stays in the stream, the group never delivers it again). `close` sends nothing either:
//! held entries stay pending under the consumer name, for the next consumer of this
//! process, or for `XAUTOCLAIM` elsewhere if the process ends.
//!
//! A lost connection is re-established with backoff, by `receive`, which reports an
//! error only while that fails. Tags stay valid across it: they name entries, and the
//! pending list is the server's, not the connection's.
//!
//! # Durability: what Golconde guarantees on Redis
//!
//! Redis confirms an `XADD` (and records an `XACK`) once it is in memory. Whether it
//! survives a crash is the server's configuration:
//! - `appendonly yes` with `appendfsync always`: on disk before the reply; a confirmed
//!   entry survives a crash of the server or of its machine.
//! - `appendonly yes` with `appendfsync everysec` (Redis's default when the AOF is on):
//!   up to about a second of confirmed writes is lost if the machine crashes.
//! - No AOF, RDB snapshots only (`save ...`): everything since the last snapshot is lost
//!   on a restart; with neither (`save ""`, `appendonly no`), a restart loses every
//!   stream. The transport logs a warning when the server reports `aof_enabled:0`.
//! - Replicas are asynchronous: a failover may lose what the primary confirmed and had
//!   not yet sent. `wait_replicas = n` makes each publish wait until `n` replicas have the
//!   batch (`WAIT`), which narrows that window; it does not make a replica's copy durable
//!   on disk, and it cannot undo a write when it times out (the batch is published again).
//!
//! So Golconde gives at-least-once delivery on Redis **as far as Redis keeps what it
//! acknowledged**: a message is acknowledged (`XACK`) only after its changes committed,
//! a crashed Golconde loses nothing and replays a suffix of what it held, and a lost
//! connection or a publish whose confirmation was lost can deliver an entry twice. What
//! Redis itself forgets (a restart without AOF, a failover) is lost, unacknowledged or
//! not.
//!
//! # Trimming
//!
//! Without `maxlen` the stream only grows: acknowledged entries stay until trimmed by an
//! operator (`XTRIM key MINID ...`, below the smallest id still pending in every group).
//! With `maxlen`, every `XADD` trims the oldest entries beyond about that many, **whether
//! or not every group has consumed them**: a consumer that falls further behind loses
//! entries without a trace, and an entry trimmed while pending is reported (logged) and
//! acknowledged when it comes up, since it cannot be delivered. Use it only where a
//! bounded stream is worth that.
//!
//! # Entries
//!
//! An entry has the field `body` (the message body) and one field per header, named as
//! the header and in its order; see [`entry`] for the escaping of headers named like the
//! body (`body` travels as `_body`). An entry another producer wrote without `body` is
//! delivered with an empty body, its fields as headers, marked with the header
//! `x-golconde-transport-error` saying what is missing; so is an entry over
//! `max_entry_bytes` (delivered without its body, and without the fields past the limit:
//! they are skipped as they arrive, never held), one with more than `max_headers`
//! fields, several `body` fields, or fields other than `body` that are not UTF-8 text.
//! The host dead-letters such a delivery alone. A field named
//! `x-golconde-transport-error` in an entry is dropped: only the transport sets it.
//!
//! # Errors
//!
//! - Refused login (`WRONGPASS`, `NOAUTH`), a missing database, a missing permission
//!   (`NOPERM`), a key that is not a stream (`WRONGTYPE`), a cluster's `MOVED`, and what
//!   `declare = "passive"` finds missing: configuration errors, saying what to change.
//! - A lost connection, a timeout, a server loading its data or read-only during a
//!   failover, `OOM`, fewer replicas than `wait_replicas`: transient.
//! - A message larger than `max_entry_bytes`: permanent (that message only).
//!
//! # Permissions
//!
//! An ACL user needs: `+xadd +xreadgroup +xack +xautoclaim +xclaim +xpending
//! +xgroup|create +xinfo|groups +eval +ping +wait` (and `+select` for a database other
//! than 0; `+info` lets the transport check persistence), on the stream keys
//! (`~pattern`).

pub mod config;
pub mod consumer;
pub mod entry;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod publisher;
pub mod resp;

pub use golconde_plugin_support::{runtime::Runtime, tls};

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc, OnceLock,
};

use golconde_plugin_api::{
    export_plugins, ConsumeOptions, Host, Message, Plugin, PluginError, Transport,
};

pub use config::{Config, Settings};
pub use consumer::RedisConsumer;

use crate::{
    error::Error,
    publisher::{check_sizes, Pool},
    resp::{Conn, Reply},
};

/// One configured Redis server.
pub struct Redis {
    settings: Arc<Settings>,
    runtime: OnceLock<Arc<Runtime>>,
    pool: Arc<Pool>,
    /// Whether the server's persistence was looked at already.
    durability_checked: AtomicBool,
}

impl Redis {
    /// Validates the configuration; connects to nothing. Relative file paths are resolved
    /// against `host`'s configuration folder, when given.
    pub fn from_config(config: Config, host: Option<&Host>) -> Result<Redis, PluginError> {
        let settings = Arc::new(Settings::from_config(config, host)?);
        Ok(Redis {
            pool: Arc::new(Pool::new(settings.clone())),
            settings,
            runtime: OnceLock::new(),
            durability_checked: AtomicBool::new(false),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn runtime(&self) -> Result<Arc<Runtime>, PluginError> {
        if let Some(runtime) = self.runtime.get() {
            return Ok(runtime.clone());
        }
        let runtime = Runtime::new("golconde-redis").map_err(|e| {
            PluginError::transient(format!("cannot start the Redis plugin's runtime: {e}"))
        })?;
        Ok(self.runtime.get_or_init(|| Arc::new(runtime)).clone())
    }

    /// Logs a warning, once per instance, if the server writes no append-only file.
    fn check_durability_once(&self, runtime: &Runtime) {
        if self.durability_checked.swap(true, Ordering::Relaxed) {
            return;
        }
        let settings = &self.settings;
        let _ = runtime.block_on(self.pool.run(|mut conn| async move {
            let result = check_durability(&mut conn, settings).await;
            (conn, result)
        }));
    }
}

/// Asks the server whether it writes an append-only file, and warns if not. A user not
/// allowed `INFO` is not asked again.
async fn check_durability(conn: &mut Conn, settings: &Settings) -> Result<(), Error> {
    let reply = conn
        .call(
            &[b"INFO", b"persistence"],
            settings.response_timeout,
            "asking about persistence",
        )
        .await;
    match reply {
        Ok(Reply::Bulk(text)) => {
            let text = String::from_utf8_lossy(&text);
            if text.lines().any(|line| line.trim() == "aof_enabled:0") {
                tracing::warn!(
                    "Redis at {} writes no append-only file (`appendonly no`): what it \
                     confirms lives in memory until its next snapshot, if any, and a restart \
                     loses the rest; see the `redis` transport's notes on durability",
                    settings.target()
                );
            }
            Ok(())
        }
        Ok(_) => Ok(()),
        // Not ours to insist on: an ACL user without `+info` consumes all the same.
        Err(e) if !e.is_lost() => {
            tracing::debug!("cannot ask {} about persistence: {e}", settings.target());
            Ok(())
        }
        Err(e) => Err(e),
    }
}

impl Plugin for Redis {
    const NAME: &'static str = "redis";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Redis Streams transport: consumer groups, XACK, claiming what a dead consumer left";
    type Config = Config;

    fn new(config: Config, host: &Host) -> Result<Self, PluginError> {
        let redis = Redis::from_config(config, Some(host))?;
        tracing::debug!(
            instance = host.instance(),
            "Redis transport for {}",
            redis.settings.target()
        );
        Ok(redis)
    }
}

impl Transport for Redis {
    type Consumer = RedisConsumer;

    /// The consumer group is named after the queue, for a host that does not say which
    /// pipeline consumes.
    fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<RedisConsumer, PluginError> {
        self.consume_as(queue, options, queue)
    }

    /// Consumes `queue` (a stream key) in the consumer group named `pipeline`.
    fn consume_as(
        &self,
        queue: &str,
        options: ConsumeOptions,
        pipeline: &str,
    ) -> Result<RedisConsumer, PluginError> {
        let runtime = self.runtime()?;
        let consumer = RedisConsumer::start(
            runtime.clone(),
            self.settings.clone(),
            self.pool.clone(),
            queue,
            pipeline,
            options,
        )?;
        self.check_durability_once(&runtime);
        Ok(consumer)
    }

    fn publish(&self, queue: &str, messages: &[Message]) -> Result<(), PluginError> {
        if messages.is_empty() {
            return Ok(());
        }
        if queue.is_empty() {
            return Err(PluginError::config(format!(
                "publishing to {}: the queue name (the stream's key) is empty",
                self.settings.target()
            )));
        }
        check_sizes(&self.settings, queue, messages)?;
        let runtime = self.runtime()?;
        let settings = &self.settings;
        runtime
            .block_on(self.pool.run(|mut conn| async move {
                let result = publisher::publish(&mut conn, settings, queue, messages).await;
                (conn, result)
            }))
            .map(drop)
            .map_err(|e| {
                e.to_plugin(&format!(
                    "publishing {} messages to stream `{queue}` on {}",
                    messages.len(),
                    settings.target()
                ))
            })?;
        self.check_durability_once(&runtime);
        Ok(())
    }

    /// The consumer group's lag: entries added to the stream that the group has not been
    /// given yet.
    fn lag(&self, queue: &str, pipeline: &str) -> Result<Option<u64>, PluginError> {
        let runtime = self.runtime()?;
        let settings = &self.settings;
        runtime
            .block_on(self.pool.run(|mut conn| async move {
                let result = publisher::group_lag(&mut conn, settings, queue, pipeline).await;
                (conn, result)
            }))
            .map_err(|e| {
                e.to_plugin(&format!(
                    "reading the lag of stream `{queue}` on {}",
                    settings.target()
                ))
            })
    }

    /// Connects, logs in (`AUTH`, `SELECT`), says `PING`, and reports whether the server
    /// keeps an append-only file. The API names no queue here, so what `declare =
    /// "passive"` requires of a stream is checked when a consumer starts.
    fn ping(&self) -> Result<(), PluginError> {
        let runtime = self.runtime()?;
        let settings = &self.settings;
        runtime
            .block_on(async {
                let mut conn = Conn::open(settings).await?;
                check_durability(&mut conn, settings).await
            })
            .map_err(|e| e.to_plugin(&format!("connecting to {}", settings.target())))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.pool.clear();
    }
}

export_plugins! {
    transport: Redis,
}

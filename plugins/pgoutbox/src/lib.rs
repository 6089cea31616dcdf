//! The `pgoutbox` transport: a queue is an outbox table in PostgreSQL, the one
//! `golconde capture install` writes a table's changes to in the transaction that makes
//! them (see docs/capture.md).
//!
//! - `receive` hands over committed rows in `seq` order, which for any two changes to one
//!   row is their commit order (`golconde_pg::outbox` says why), and never skips a row
//!   that commits late with a lower `seq`;
//! - `ack` deletes the rows acknowledged (cumulative, in delivery order);
//! - `publish` inserts (fan-out to an outbox, dead letters), committed before it returns;
//! - a consumer that found nothing wakes on `LISTEN`/`NOTIFY`, which writers send only
//!   while it says it waits (with a poll every `poll_interval_ms` besides);
//! - one consumer per outbox at a time, by a session advisory lock: a second one waits,
//!   and takes over when the first one's session ends (its process died or stopped).
//!
//! May depend on: `golconde-plugin-api`, `golconde-plugin-support` (its runtime),
//! `golconde-pg` (DSN, connecting, the outbox's SQL), tokio, tokio-postgres, serde,
//! serde_json, tracing; never on a host crate.
//!
//! # Configuration
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `dsn` | required | the database, as the `postgres` database plugin takes it (libpq `key=value` or a URL; several hosts; `sslmode`, `sslrootcert`, `sslcert`, `sslkey`) |
//! | `declare` | `"create"` | `"create"`: an outbox (and its sequence, index and wake-up trigger) is created where missing when consumed or published to. `"passive"`: it must exist |
//! | `poll_interval_ms` | `1000` | a consumer looks for rows this often even without a notification (one lost while reconnecting, say) |
//! | `max_message_bytes` | `16777216` | a row whose body is larger is handed over without it, marked `x-golconde-transport-error`, so one row cannot exhaust memory; `publish` refuses a larger message as permanent |
//! | `connect_timeout_ms` | `10000` | for each host of `dsn` |

pub mod consumer;

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use golconde_pg::{
    connect::describe_error,
    dsn::Target,
    outbox::{self, Name},
};
use golconde_plugin_api::{
    export_plugins, ConsumeOptions, Host, Message, Plugin, PluginError, Transport,
};
pub use golconde_plugin_support::runtime::Runtime;
use serde::Deserialize;
use tokio_postgres::{error::SqlState, Client};

pub use consumer::OutboxConsumer;

/// `[transports.NAME]` with `plugin = "pgoutbox"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub dsn: String,
    #[serde(default)]
    pub declare: Declare,
    #[serde(default = "default_poll_interval")]
    pub poll_interval_ms: u64,
    #[serde(default = "default_max_message")]
    pub max_message_bytes: usize,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
}

/// Whether a missing outbox is created.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Declare {
    #[default]
    Create,
    Passive,
}

fn default_poll_interval() -> u64 {
    1000
}

fn default_max_message() -> usize {
    16 * 1024 * 1024
}

fn default_connect_timeout() -> u64 {
    10_000
}

/// The configuration, validated.
#[derive(Debug)]
pub struct Settings {
    pub pg: Target,
    pub declare: Declare,
    pub poll_interval: Duration,
    pub max_message_bytes: usize,
}

impl Settings {
    pub fn from_config(config: Config) -> Result<Settings, PluginError> {
        if config.connect_timeout_ms == 0 {
            return Err(PluginError::config(
                "`connect_timeout_ms` must be at least 1 (milliseconds)",
            ));
        }
        if config.poll_interval_ms == 0 {
            return Err(PluginError::config(
                "`poll_interval_ms` must be at least 1 (milliseconds)",
            ));
        }
        if config.max_message_bytes == 0 || config.max_message_bytes > i32::MAX as usize {
            return Err(PluginError::config(
                "`max_message_bytes` must be between 1 and 2147483647 (PostgreSQL's largest \
                 value is 1 GiB)",
            ));
        }
        let pg = Target::parse(
            &config.dsn,
            Duration::from_millis(config.connect_timeout_ms),
        )
        .map_err(PluginError::config)?;
        Ok(Settings {
            pg,
            declare: config.declare,
            poll_interval: Duration::from_millis(config.poll_interval_ms),
            max_message_bytes: config.max_message_bytes,
        })
    }

    /// The database, without its password, for messages.
    pub fn target(&self) -> &str {
        &self.pg.target
    }
}

/// The outbox a queue name names.
pub fn outbox_name(queue: &str) -> Result<Name, PluginError> {
    Name::parse(queue).map_err(|e| {
        PluginError::config(format!(
            "queue `{queue}`: a pgoutbox queue is an outbox table; {e}"
        ))
    })
}

/// A connection and the task that drives it.
pub(crate) struct Conn {
    pub client: Client,
    pub task: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens a connection whose notifications go to `wake`; must run inside the runtime.
pub(crate) async fn open(
    settings: &Settings,
    wake: Option<Arc<tokio::sync::Notify>>,
) -> Result<Conn, PluginError> {
    let (client, mut connection, label) = golconde_pg::connect::open(&settings.pg)
        .await
        .map_err(PluginError::transient)?;
    let task = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => {
                    if let Some(wake) = &wake {
                        wake.notify_one();
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!("connection to {label} ended: {e}");
                    break;
                }
                None => break,
            }
        }
        // Whoever waits learns at its next statement that the connection is gone.
        if let Some(wake) = &wake {
            wake.notify_one();
        }
    });
    Ok(Conn { client, task })
}

/// Makes sure `outbox` exists: creates it with `declare = "create"`, or says what to run.
pub(crate) async fn declare(
    client: &Client,
    settings: &Settings,
    outbox: &Name,
) -> Result<(), PluginError> {
    let exists: Option<String> = client
        .query_one("SELECT to_regclass($1)::text", &[&outbox.sql()])
        .await
        .map_err(|e| statement_error(&e, settings, &format!("looking for outbox `{outbox}`")))?
        .get(0);
    if exists.is_some() {
        return Ok(());
    }
    match settings.declare {
        Declare::Passive => Err(PluginError::config(format!(
            "outbox `{outbox}` does not exist on {} and `declare` is \"passive\"; create it \
             (`golconde capture install ... --outbox {outbox}`) or set `declare = \"create\"`",
            settings.target()
        ))),
        Declare::Create => {
            let sql = format!("BEGIN;\n{}COMMIT;\n", outbox::create_sql(outbox));
            match client.batch_execute(&sql).await {
                Ok(()) => {
                    tracing::info!("created outbox `{outbox}` on {}", settings.target());
                    Ok(())
                }
                // Another process created it at the same moment.
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Ok(()),
                Err(e) => Err(statement_error(
                    &e,
                    settings,
                    &format!("creating outbox `{outbox}`"),
                )),
            }
        }
    }
}

/// A failed statement as a plugin error: lost connections and conflicts pass
/// (transient); missing permissions and objects are for the operator (config).
pub(crate) fn statement_error(
    error: &tokio_postgres::Error,
    settings: &Settings,
    doing: &str,
) -> PluginError {
    let text = format!(
        "{doing} on {}: {}",
        settings.target(),
        describe_error(error)
    );
    match error.code() {
        Some(code)
            if *code == SqlState::INSUFFICIENT_PRIVILEGE
                || *code == SqlState::UNDEFINED_TABLE
                || *code == SqlState::UNDEFINED_COLUMN
                || *code == SqlState::UNDEFINED_FUNCTION
                || *code == SqlState::INVALID_SCHEMA_NAME
                || *code == SqlState::READ_ONLY_SQL_TRANSACTION =>
        {
            PluginError::config(text)
        }
        _ => PluginError::transient(text),
    }
}

/// One configured database holding outboxes.
pub struct PgOutbox {
    settings: Arc<Settings>,
    runtime: OnceLock<Arc<Runtime>>,
    /// The connection `publish`, `lag` and `ping` share; reopened after an error.
    shared: Mutex<Option<Conn>>,
    /// Outboxes known to exist.
    declared: Mutex<Vec<Name>>,
}

impl PgOutbox {
    pub fn from_config(config: Config) -> Result<PgOutbox, PluginError> {
        Ok(PgOutbox {
            settings: Arc::new(Settings::from_config(config)?),
            runtime: OnceLock::new(),
            shared: Mutex::new(None),
            declared: Mutex::new(Vec::new()),
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn runtime(&self) -> Result<Arc<Runtime>, PluginError> {
        if let Some(runtime) = self.runtime.get() {
            return Ok(runtime.clone());
        }
        let runtime = Runtime::new("golconde-pgoutbox").map_err(|e| {
            PluginError::transient(format!("cannot start the pgoutbox plugin's runtime: {e}"))
        })?;
        Ok(self.runtime.get_or_init(|| Arc::new(runtime)).clone())
    }

    /// Runs `work` on the shared connection, opening it first if needed; an error that is
    /// not the data's drops the connection, to be opened again next time.
    fn with_shared<T>(
        &self,
        work: impl AsyncFnOnce(&Client) -> Result<T, PluginError>,
    ) -> Result<T, PluginError> {
        let runtime = self.runtime()?;
        let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        runtime.block_on(async {
            if shared.as_ref().is_none_or(|c| c.client.is_closed()) {
                *shared = Some(open(&self.settings, None).await?);
            }
            let conn = shared.as_ref().expect("opened above");
            let result = work(&conn.client).await;
            if result.is_err() && conn.client.is_closed() {
                *shared = None;
            }
            result
        })
    }

    async fn declare_once(&self, client: &Client, outbox: &Name) -> Result<(), PluginError> {
        if self
            .declared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(outbox)
        {
            return Ok(());
        }
        declare(client, &self.settings, outbox).await?;
        self.declared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(outbox.clone());
        Ok(())
    }
}

impl Plugin for PgOutbox {
    const NAME: &'static str = "pgoutbox";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "PostgreSQL outbox transport: captured changes in commit order per row, one consumer per outbox";
    type Config = Config;

    fn new(config: Config, host: &Host) -> Result<Self, PluginError> {
        let plugin = PgOutbox::from_config(config)?;
        tracing::debug!(
            instance = host.instance(),
            "pgoutbox transport for {}",
            plugin.settings.target()
        );
        Ok(plugin)
    }
}

impl Transport for PgOutbox {
    type Consumer = OutboxConsumer;

    fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<OutboxConsumer, PluginError> {
        if options.prefetch == 0 {
            return Err(PluginError::config(
                "prefetch 0 would mean no limit; give the pipeline a prefetch of at least 1",
            ));
        }
        let outbox = outbox_name(queue)?;
        OutboxConsumer::start(self.runtime()?, self.settings.clone(), outbox, options)
    }

    fn publish(&self, queue: &str, messages: &[Message]) -> Result<(), PluginError> {
        if messages.is_empty() {
            return Ok(());
        }
        let outbox = outbox_name(queue)?;
        let mut headers = Vec::with_capacity(messages.len());
        let mut bodies = Vec::with_capacity(messages.len());
        for message in messages {
            if message.body.len() > self.settings.max_message_bytes {
                return Err(PluginError::permanent(format!(
                    "a message of {} bytes is larger than `max_message_bytes` ({}) of outbox \
                     `{outbox}`",
                    message.body.len(),
                    self.settings.max_message_bytes
                )));
            }
            headers.push(consumer::headers_json(&message.headers));
            bodies.push(message.body.as_slice());
        }
        let settings = &self.settings;
        let insert = format!(
            "INSERT INTO {} (headers, body) SELECT h::json, b FROM unnest($1::text[], \
             $2::bytea[]) WITH ORDINALITY AS m(h, b, n) ORDER BY n",
            outbox.sql()
        );
        self.with_shared(async |client| {
            self.declare_once(client, &outbox).await?;
            client
                .execute(&insert, &[&headers, &bodies])
                .await
                .map(drop)
                .map_err(|e| {
                    statement_error(
                        &e,
                        settings,
                        &format!(
                            "publishing {} messages to outbox `{outbox}`",
                            messages.len()
                        ),
                    )
                })
        })
    }

    /// The rows waiting in the outbox (delivered and not yet acknowledged ones included),
    /// counted up to a million.
    fn lag(&self, queue: &str, _pipeline: &str) -> Result<Option<u64>, PluginError> {
        let outbox = outbox_name(queue)?;
        let count = format!(
            "SELECT count(*) FROM (SELECT FROM {} LIMIT 1000000) waiting",
            outbox.sql()
        );
        let settings = &self.settings;
        self.with_shared(async |client| match client.query_one(&count, &[]).await {
            Ok(row) => Ok(Some(row.get::<_, i64>(0).max(0) as u64)),
            Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => Ok(None),
            Err(e) => Err(statement_error(
                &e,
                settings,
                &format!("counting outbox `{outbox}`"),
            )),
        })
    }

    fn ping(&self) -> Result<(), PluginError> {
        let settings = &self.settings;
        self.with_shared(async |client| {
            client
                .simple_query("SELECT 1")
                .await
                .map(drop)
                .map_err(|e| statement_error(&e, settings, "asking"))
        })
    }
}

export_plugins! {
    transport: PgOutbox,
}

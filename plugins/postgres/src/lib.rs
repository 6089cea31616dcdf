//! The `postgres` database plugin: applies batches of database-neutral changes to
//! PostgreSQL, each batch in one transaction, set-based.
//!
//! Data flow: [`Postgres`] (the shared instance: settings, the cache of table definitions)
//! opens a [`PgSession`] per host worker. A session reads each target table's definition
//! once (`schema`), checks and converts every value against its column (`convert`),
//! groups consecutive operations of one shape into one `unnest`-based statement
//! (`plan`), and applies the batch, isolating the changes that cannot apply
//! (`session`); with `dedupe = true` it records change ids in the same transaction
//! (`dedupe`), scoped by table and compared by content (a change's fingerprint). Errors
//! that may or may not pass on a retry are counted per change, so one message holds its
//! queue back at most `max_attempts` times. `number` reads numbers exactly; `fuzzing` is
//! for the fuzz target and is no interface. What this plugin shares with `mysql` (the
//! fingerprint, the counting of doubtful errors, the order of bisection, the table cache,
//! decimal text read exactly) is `golconde-plugin-support`'s.
//!
//! Key decisions, and why:
//! - **tokio-postgres with a single-threaded runtime per session**, driven only while the
//!   host's thread is inside a call: nothing async crosses the ABI, no thread of the
//!   plugin's own wakes up to hand over results, and dropping a session ends its runtime.
//! - **Set-based statements over `unnest` of one array parameter per column**, each value a
//!   bind parameter and each identifier quoted; integers, floats, booleans and RFC 3339
//!   timestamps go binary (`timestamp.rs`), the rest as text the server casts to the
//!   column's type. One statement per run keeps
//!   a batch of 500 upserts to a handful of round trips.
//! - **Bisection under savepoints** finds the changes that cannot apply without giving up
//!   the set-based fast path for the others.
//! - **A DSN naming several hosts is tried host by host** (`golconde_pg::dsn`,
//!   `golconde_pg::connect`), not handed to tokio-postgres whole: each host gets its own
//!   `connect_timeout_ms`, so a hung one cannot use up the time of those after it, and
//!   each one's failure is logged and reported. `target_session_attrs=read-write` is still
//!   tokio-postgres's check, per host.
//! - **TLS through rustls and ring**, with libpq's `sslmode` meanings (`prefer` and
//!   `require` encrypt without verifying, `verify-ca`/`verify-full` verify against
//!   `sslrootcert` or the system's roots; `sslcert`/`sslkey` for a client certificate): no
//!   OpenSSL to link, no aws-lc to build (`golconde_pg::tls`).
//!
//! May depend on: `golconde-plugin-api`, `golconde-plugin-support`, `golconde-pg` (reading
//! a DSN and connecting), tokio (inside only), tokio-postgres, serde, base64. Knows nothing of the message
//! format: that is the processor's.

mod config;
mod convert;
mod dedupe;
#[doc(hidden)]
pub mod fuzzing;
mod number;
mod plan;
mod schema;
mod session;
mod timestamp;

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use golconde_plugin_api::{Database, Host, Plugin, PluginError};
use golconde_plugin_support::{applied::Pruning, doubt::Doubts};

pub use config::{Config, UnknownColumns};
pub use schema::quote_ident;
pub use session::PgSession;

use config::Settings;
use schema::Catalog;

/// What every session of one database instance shares.
#[derive(Debug)]
pub struct Shared {
    settings: Settings,
    catalog: Catalog,
    doubts: Doubts,
    dedupe_ready: AtomicBool,
    pruning: Pruning,
}

impl Shared {
    fn dedupe_ready(&self) -> bool {
        self.dedupe_ready.load(Ordering::Acquire)
    }

    fn set_dedupe_ready(&self) {
        self.dedupe_ready.store(true, Ordering::Release)
    }

    /// Whether it is time to prune golconde.applied; claims the turn if so. Pruning runs
    /// ten times per retention period, and at least every ten minutes.
    fn prune_due(&self) -> bool {
        self.pruning.due(self.settings.dedupe_retention)
    }
}

/// The `postgres` database plugin.
pub struct Postgres {
    shared: Arc<Shared>,
}

impl Postgres {
    /// Builds the instance from its configuration, without connecting.
    pub fn from_config(config: Config) -> Result<Postgres, PluginError> {
        Ok(Postgres {
            shared: Arc::new(Shared {
                settings: Settings::from_config(config)?,
                catalog: Catalog::default(),
                doubts: Doubts::default(),
                dedupe_ready: AtomicBool::new(false),
                pruning: Pruning::default(),
            }),
        })
    }
}

impl Plugin for Postgres {
    const NAME: &'static str = "postgres";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "PostgreSQL: set-based batches in one transaction, bad changes isolated (tokio-postgres)";
    type Config = Config;

    fn new(config: Config, _host: &Host) -> Result<Self, PluginError> {
        Postgres::from_config(config)
    }
}

impl Database for Postgres {
    type Session = PgSession;
    // A delete with no restriction is `DELETE FROM` the table (see `plan::sql`).
    const DELETES_ALL_ROWS: bool = true;

    fn connect(&self) -> Result<PgSession, PluginError> {
        PgSession::connect(self.shared.clone())
    }

    fn key_columns(&self, table: &str) -> Result<Vec<String>, PluginError> {
        let shared = &self.shared;
        let missing = || {
            PluginError::permanent(format!(
                "table `{table}` does not exist in {}",
                shared.settings.pg.target
            ))
        };
        let definition = match shared.catalog.get(table) {
            Some(definition) => definition,
            // A stream of messages for a missing table must not open a connection each.
            None if shared.catalog.is_missing(table) => return Err(missing()),
            None => {
                schema::parse_table_name(table).map_err(PluginError::permanent)?;
                let runtime = session::runtime()?;
                let found = runtime.block_on(async {
                    let (client, _connection) = session::open(shared).await?;
                    schema::introspect(&client, table)
                        .await
                        .map_err(|e| match e {
                            schema::Introspection::BadName(e) => PluginError::permanent(e),
                            schema::Introspection::Database(e) => PluginError::transient(format!(
                                "reading the definition of `{table}` on {}: {e}",
                                shared.settings.pg.target
                            )),
                        })
                })?;
                let Some(found) = found else {
                    shared.catalog.insert_missing(table);
                    return Err(missing());
                };
                let found = Arc::new(found);
                shared.catalog.insert(table, found.clone());
                found
            }
        };
        if let Some(refusal) = schema::refusal(&definition, &shared.settings.dedupe_schema) {
            return Err(PluginError::permanent(refusal));
        }
        Ok(definition
            .primary_key
            .iter()
            .map(|&p| definition.columns[p].name.clone())
            .collect())
    }
}

golconde_plugin_api::export_plugins! {
    database: Postgres,
}

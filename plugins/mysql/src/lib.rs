//! The `mysql` database plugin: applies batches of database-neutral changes to MariaDB
//! (10.5 and newer) and MySQL 8, each batch in one transaction, set-based.
//!
//! Data flow: [`Mysql`] (the shared instance: settings, the cache of table definitions)
//! opens a [`MySession`] per host worker. A session reads each target table's definition
//! from `information_schema` once (`schema`), checks and converts every value against its
//! column (`convert`, with `number` and `temporal`), groups consecutive operations of
//! one shape into multi-row statements (`plan`), and applies the batch, isolating the
//! changes that cannot apply (`session`); with `dedupe = true` it records change ids in
//! the same transaction (`dedupe`), scoped by table and compared by content (a change's
//! fingerprint). Errors that may or may not pass on a retry are counted per change, so one
//! message holds its queue back at most `max_attempts` times. What this plugin shares
//! with `postgres` (the fingerprint, the counting of doubtful errors, the order of
//! bisection, the table cache, decimal text read exactly) is `golconde-plugin-support`'s.
//!
//! Key decisions, and why:
//! - **mysql_async with a single-threaded runtime per session**, driven only while the
//!   host's thread is inside a call: nothing async crosses the ABI, and dropping a
//!   session ends its runtime.
//! - **Every value a bound parameter of a prepared statement**, every identifier quoted
//!   with backticks; values are checked here before they are sent (strict SQL mode is
//!   the second line), because MySQL rounds or cuts some values with a mere note.
//! - **Multi-row statements, cut at 65,535 placeholders**: one `INSERT` per run of inserts
//!   or upserts, one `DELETE ... IN` or `UPDATE ... JOIN` per run keyed by the primary key.
//! - **Generated keys by `RETURNING` on MariaDB, by `LAST_INSERT_ID()` on MySQL**, where a
//!   multi-row insert's keys are consecutive only with `innodb_autoinc_lock_mode` 0 or 1;
//!   with 2, inserts that generate keys go row by row.
//! - **Bisection under savepoints** finds the changes that cannot apply without giving up
//!   the set-based fast path for the others.
//! - **TLS through rustls and ring**, with the mysql client's `ssl_mode` meanings: no
//!   OpenSSL to link.
//!
//! May depend on: `golconde-plugin-api`, `golconde-plugin-support`, tokio (inside only),
//! mysql_async, serde, base64, sha2. Knows nothing of the message format: that is the
//! processor's.

mod config;
mod convert;
mod dedupe;
mod number;
mod plan;
mod schema;
mod session;
mod temporal;

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

use golconde_plugin_api::{Database, Host, Plugin, PluginError};
use golconde_plugin_support::{applied::Pruning, doubt::Doubts};

pub use config::{Config, SslMode, UnknownColumns};
pub use schema::quote_ident;
pub use session::{Flavour, MySession, SQL_MODE};

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

    /// Whether it is time to prune the applied-change table; claims the turn if so.
    /// Pruning runs ten times per retention period, and at least every ten minutes.
    fn prune_due(&self) -> bool {
        self.pruning.due(self.settings.dedupe_retention)
    }
}

/// The `mysql` database plugin.
pub struct Mysql {
    shared: Arc<Shared>,
}

impl Mysql {
    /// Builds the instance from its configuration, without connecting; relative file
    /// paths are resolved by `host`.
    pub fn from_config(config: Config, host: &Host) -> Result<Mysql, PluginError> {
        Ok(Mysql {
            shared: Arc::new(Shared {
                settings: Settings::from_config(config, host)?,
                catalog: Catalog::default(),
                doubts: Doubts::default(),
                dedupe_ready: AtomicBool::new(false),
                pruning: Pruning::default(),
            }),
        })
    }
}

impl Plugin for Mysql {
    const NAME: &'static str = "mysql";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "MariaDB and MySQL: set-based batches in one transaction, bad changes isolated (mysql_async)";
    type Config = Config;

    fn new(config: Config, host: &Host) -> Result<Self, PluginError> {
        Mysql::from_config(config, host)
    }
}

impl Database for Mysql {
    type Session = MySession;
    // A delete with no restriction is `DELETE FROM` the table (see `plan`).
    const DELETES_ALL_ROWS: bool = true;

    fn connect(&self) -> Result<MySession, PluginError> {
        MySession::connect(self.shared.clone())
    }

    fn key_columns(&self, table: &str) -> Result<Vec<String>, PluginError> {
        let shared = &self.shared;
        let missing = || {
            PluginError::permanent(format!(
                "table `{table}` does not exist in {}",
                shared.settings.target
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
                    let (mut conn, flavour) = session::open(shared).await?;
                    let found = schema::introspect(
                        &mut conn,
                        table,
                        shared.settings.database.as_deref(),
                        flavour.mariadb,
                    )
                    .await
                    .map_err(|e| match e {
                        schema::Introspection::BadName(e) => PluginError::permanent(e),
                        schema::Introspection::Database(e) => PluginError::transient(format!(
                            "reading the definition of `{table}` on {}: {}",
                            shared.settings.target,
                            session::message(&e)
                        )),
                    });
                    let _ = conn.disconnect().await;
                    found
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
        if let Some(refusal) = schema::refusal(&definition, &shared.settings.dedupe_database) {
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
    database: Mysql,
}

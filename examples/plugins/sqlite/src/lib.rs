//! `sqlite`: a Golconde database plugin that applies changes to an SQLite file, and the
//! worked example for plugin authors.
//!
//! What a database plugin does, and where it is here:
//! - `config`: its section of the configuration file, checked in `Plugin::new`, without
//!   touching the database (`golconde check` builds plugins offline).
//! - [`Sqlite`]: the shared instance. `key_columns` tells the host each table's primary key,
//!   so that it sends every change of one row through one worker, in queue order.
//! - `session`: one connection per host worker; `apply` writes a batch in one transaction,
//!   each change under a savepoint so that a bad one is reported alone and the others commit.
//! - `statement` and `convert`: operations and values made into SQL and bind parameters.
//! - `schema`: what a table has, read from SQLite itself.
//!
//! Decisions, and why:
//! - **Blocking calls, no runtime.** The plugin boundary is synchronous and SQLite is
//!   in-process, so every call simply does its work on the host's thread.
//! - **A savepoint per change, not bisection.** A statement costs no network round trip
//!   here, so trying each change in turn is as fast as anything cleverer, and far simpler
//!   (the `postgres` plugin bisects because its round trips are what cost).
//! - **Errors are told apart by SQLite's result code**: a locked or busy database, a full
//!   disk, a file that cannot be opened or read, are transient (the host retries, the
//!   pipeline pauses, nothing is dead-lettered); a constraint violation, a datatype
//!   mismatch, a value too big, are the change's own fault and permanent.

mod config;
mod convert;
mod schema;
mod session;
mod statement;

use std::{collections::HashMap, sync::Mutex};

use golconde_plugin_api::{Database, Host, Plugin, PluginError};

pub use config::{Config, UnknownColumns};
pub use session::SqliteSession;

use config::Settings;

/// The `sqlite` database plugin: one per `[databases.NAME]` section, shared by the
/// pipelines that name it.
pub struct Sqlite {
    settings: Settings,
    /// Primary keys by table name. The host asks for them as it routes changes; reading
    /// them from the file each time would open a connection per message.
    keys: Mutex<HashMap<String, Vec<String>>>,
}

impl Plugin for Sqlite {
    const NAME: &'static str = "sqlite";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "SQLite file: batches in one transaction, bad changes isolated by savepoints (example)";
    type Config = Config;

    fn new(config: Config, host: &Host) -> Result<Self, PluginError> {
        Ok(Sqlite {
            settings: Settings::new(config, host)?,
            keys: Mutex::new(HashMap::new()),
        })
    }
}

impl Database for Sqlite {
    type Session = SqliteSession;

    fn connect(&self) -> Result<SqliteSession, PluginError> {
        SqliteSession::open(&self.settings)
    }

    fn key_columns(&self, table: &str) -> Result<Vec<String>, PluginError> {
        // A poisoned lock only means another thread panicked while holding it; the map
        // itself is always whole.
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(key) = keys.get(table) {
            return Ok(key.clone());
        }
        let conn = session::open(&self.settings)?;
        let path = self.settings.path.display();
        let found = schema::read_table(&conn, table).map_err(|e| {
            session::error(e, &format!("reading the columns of `{table}` in {path}"))
        })?;
        // Not cached when missing: the table may be created before the next message.
        let key = found
            .ok_or_else(|| {
                PluginError::permanent(format!(
                    "table `{table}` does not exist in {path}; create it, or fix the \
                     message's table"
                ))
            })?
            .key_names();
        keys.insert(table.to_string(), key.clone());
        Ok(key)
    }
}

golconde_plugin_api::export_plugins! {
    database: Sqlite,
}

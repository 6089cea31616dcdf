//! The plugin's configuration section, and its validation.
//!
//! Checked in full when the instance is built, without opening the database: `golconde
//! check` builds every plugin offline, and a mistake should be found there, naming its key.

use std::{path::PathBuf, time::Duration};

use golconde_plugin_api::{Host, PluginError};
use serde::Deserialize;

/// `[databases.NAME]` with `plugin = "sqlite"`.
#[derive(Debug, Deserialize)]
// A misspelt key (`busy_timeout`) is an error naming it, not a setting silently ignored.
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The database file; relative to the configuration file's folder.
    pub path: PathBuf,
    /// How long a statement waits for another connection's lock before giving up.
    #[serde(default = "default_busy_timeout")]
    pub busy_timeout_ms: u64,
    #[serde(default)]
    pub unknown_columns: UnknownColumns,
}

/// `unknown_columns = "error" | "ignore"`: what to do with a column of a message that the
/// table does not have.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnknownColumns {
    /// The change is refused (dead-lettered), naming the column.
    #[default]
    Error,
    /// The column is dropped from `data` (never from a restriction, which would widen the
    /// rows it selects).
    Ignore,
}

fn default_busy_timeout() -> u64 {
    5000
}

/// The configuration, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Absolute.
    pub path: PathBuf,
    pub busy_timeout: Duration,
    pub unknown_columns: UnknownColumns,
}

impl Settings {
    pub fn new(config: Config, host: &Host) -> Result<Settings, PluginError> {
        if config.path.as_os_str().is_empty() {
            return Err(PluginError::config(
                "`path` is empty; name the SQLite database file",
            ));
        }
        // SQLite takes the timeout as a C int of milliseconds.
        if config.busy_timeout_ms > i32::MAX as u64 {
            return Err(PluginError::config(format!(
                "`busy_timeout_ms` = {} is more than SQLite can wait ({} ms, 24 days)",
                config.busy_timeout_ms,
                i32::MAX
            )));
        }
        Ok(Settings {
            // A path relative to wherever the daemon happens to start would be a trap; the
            // host says where its configuration file is (ABI 1.1).
            path: host.resolve("path", &config.path)?,
            busy_timeout: Duration::from_millis(config.busy_timeout_ms),
            unknown_columns: config.unknown_columns,
        })
    }
}

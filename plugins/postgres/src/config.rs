//! The plugin's configuration section, its validation, and the connection options made of
//! it.

use std::{str::FromStr, time::Duration};

use golconde_plugin_api::PluginError;
use serde::Deserialize;
use tokio_postgres::config::Host;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::tls;

/// `[databases.NAME]` with `plugin = "postgres"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// libpq-style `key=value ...` or a `postgres://` URL.
    pub dsn: String,
    /// What to do with a column of a message that the table does not have.
    #[serde(default)]
    pub unknown_columns: UnknownColumns,
    /// Record each change's `id` in `SCHEMA.applied` and skip ids seen before.
    #[serde(default)]
    pub dedupe: bool,
    /// How long a recorded id is kept, in seconds (default 7 days).
    #[serde(default = "default_retention")]
    pub dedupe_retention_s: u64,
    /// The schema of the applied-change table (default `golconde`).
    #[serde(default = "default_dedupe_schema")]
    pub dedupe_schema: String,
    /// The server-side `statement_timeout` of each session; none by default.
    pub statement_timeout_ms: Option<u64>,
    /// How long connecting may take (default 10 s).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
}

/// `unknown_columns = "error" | "ignore"`.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnknownColumns {
    /// A change naming a column the table lacks is a permanent error.
    #[default]
    Error,
    /// Such columns are dropped from `data` (never from a restriction, which would widen
    /// the rows it selects).
    Ignore,
}

fn default_retention() -> u64 {
    7 * 24 * 3600
}

fn default_dedupe_schema() -> String {
    "golconde".into()
}

fn default_connect_timeout() -> u64 {
    10_000
}

/// The configuration, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub connect: tokio_postgres::Config,
    pub tls: Tls,
    /// The DSN without its password, for messages.
    pub target: String,
    pub unknown_columns: UnknownColumns,
    pub dedupe: bool,
    pub dedupe_retention: Duration,
    pub dedupe_schema: String,
    pub statement_timeout_ms: Option<u64>,
    pub connect_timeout: Duration,
}

impl Settings {
    pub fn from_config(config: Config) -> Result<Settings, PluginError> {
        let (dsn, tls_options) =
            tls::split_dsn(&config.dsn).map_err(|e| PluginError::config(format!("`dsn`: {e}")))?;
        let mut connect = tokio_postgres::Config::from_str(&dsn).map_err(|e| {
            // The parser's messages name the option, never its value, so no password leaks.
            let cause = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            PluginError::config(format!("`dsn` cannot be parsed: {e}{cause}"))
        })?;
        if connect.get_hosts().is_empty() {
            return Err(PluginError::config(
                "`dsn` names no host; add `host=...` (or use postgres://user@host/db)",
            ));
        }
        connect.ssl_mode(tls_options.mode.ssl_mode());
        let tls = Tls {
            connector: tls::connector(&tls_options)
                .map_err(|e| PluginError::config(format!("`dsn`: {e}")))?,
            options: tls_options,
        };
        if config.dedupe_retention_s == 0 {
            return Err(PluginError::config(
                "`dedupe_retention_s` must be at least 1 (seconds)",
            ));
        }
        if config.dedupe_schema.is_empty() || config.dedupe_schema.len() > 63 {
            return Err(PluginError::config(
                "`dedupe_schema` must be a schema name of 1 to 63 bytes",
            ));
        }
        if config.connect_timeout_ms == 0 {
            return Err(PluginError::config(
                "`connect_timeout_ms` must be at least 1 (milliseconds)",
            ));
        }
        if config.statement_timeout_ms == Some(0) {
            return Err(PluginError::config(
                "`statement_timeout_ms` must be at least 1 (milliseconds); leave it out for \
                 no timeout",
            ));
        }
        let connect_timeout = Duration::from_millis(config.connect_timeout_ms);
        connect.connect_timeout(connect_timeout);
        if connect.get_application_name().is_none() {
            connect.application_name("golconde");
        }
        Ok(Settings {
            target: describe(&connect),
            connect,
            tls,
            unknown_columns: config.unknown_columns,
            dedupe: config.dedupe,
            dedupe_retention: Duration::from_secs(config.dedupe_retention_s),
            dedupe_schema: config.dedupe_schema,
            statement_timeout_ms: config.statement_timeout_ms,
            connect_timeout,
        })
    }
}

/// How connections are encrypted.
#[derive(Clone)]
pub struct Tls {
    pub connector: MakeRustlsConnect,
    pub options: tls::Options,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.options.fmt(f)
    }
}

/// `user@host:port/dbname`, never the password.
fn describe(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let name = match host {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            match config.get_ports().get(i).or(config.get_ports().first()) {
                Some(port) => format!("{name}:{port}"),
                None => name,
            }
        })
        .collect();
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let db = config.get_dbname().unwrap_or("");
    format!("postgres://{user}{}/{db}", hosts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use golconde_plugin_api::{sdk::parse_config, ErrorKind};

    fn settings(json: &str) -> Result<Settings, PluginError> {
        Settings::from_config(parse_config::<Config>(json)?)
    }

    #[test]
    fn defaults_are_sane() {
        let s = settings(r#"{"dsn": "host=127.0.0.1 user=postgres"}"#).unwrap();
        assert_eq!(s.unknown_columns, UnknownColumns::Error);
        assert!(!s.dedupe);
        assert_eq!(s.dedupe_retention, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(s.statement_timeout_ms, None);
        assert_eq!(s.connect.get_application_name(), Some("golconde"));
    }

    #[test]
    fn the_password_never_appears_in_the_target_or_an_error() {
        let s = settings(r#"{"dsn": "postgres://app:s3cr3t@db.example:6543/shop"}"#).unwrap();
        assert_eq!(s.target, "postgres://app@db.example:6543/shop");
        assert!(!format!("{:?}", s.connect).contains("s3cr3t"));
        let err = settings(r#"{"dsn": "host=x password=s3cr3t sslmode=sometimes"}"#).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
        assert!(err.message.contains("sslmode"), "{err}");
        assert!(!err.message.contains("s3cr3t"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (json, key) in [
            (
                r#"{"dsn": "host=x", "dedupe_retention_s": 0}"#,
                "dedupe_retention_s",
            ),
            (
                r#"{"dsn": "host=x", "connect_timeout_ms": 0}"#,
                "connect_timeout_ms",
            ),
            (
                r#"{"dsn": "host=x", "statement_timeout_ms": 0}"#,
                "statement_timeout_ms",
            ),
            (r#"{"dsn": "host=x", "unknown_columns": "drop"}"#, "drop"),
            (r#"{"dsn": "host=x", "dedup": true}"#, "dedup"),
            (r#"{"dsn": "user=x"}"#, "host"),
            (r#"{"dsn": "host=x sslmode=verify"}"#, "sslmode `verify`"),
            (
                r#"{"dsn": "host=x sslmode=verify-full sslrootcert=/nonexistent.pem"}"#,
                "sslrootcert `/nonexistent.pem`",
            ),
            (r#"{}"#, "dsn"),
        ] {
            let err = settings(json).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Config, "{json}");
            assert!(err.message.contains(key), "{json}: {err}");
        }
    }

    #[test]
    fn ignore_is_spelt_in_lower_case() {
        let s =
            settings(r#"{"dsn": "host=x", "unknown_columns": "ignore", "dedupe": true}"#).unwrap();
        assert_eq!(s.unknown_columns, UnknownColumns::Ignore);
        assert!(s.dedupe);
    }
}

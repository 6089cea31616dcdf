//! The plugin's configuration section, its validation, and the connection options made of
//! it (the DSN is read by `golconde_pg::dsn`, as every Golconde part that connects to
//! PostgreSQL reads it).

use std::time::Duration;

use golconde_plugin_api::PluginError;
use serde::Deserialize;

use golconde_pg::dsn::Target;

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
    /// How long connecting to one host may take (default 10 s).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// How often a change may fail with an error that may or may not pass on a retry (a
    /// missing privilege, a row-level security policy, `statement_timeout`) before it is
    /// taken to be at fault and dead-lettered (default 5).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
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

fn default_max_attempts() -> u32 {
    5
}

/// The configuration, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to connect, and how.
    pub pg: Target,
    pub unknown_columns: UnknownColumns,
    pub dedupe: bool,
    pub dedupe_retention: Duration,
    pub dedupe_schema: String,
    pub statement_timeout_ms: Option<u64>,
    pub max_attempts: u32,
}

impl Settings {
    pub fn from_config(config: Config) -> Result<Settings, PluginError> {
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
        if config.max_attempts == 0 {
            return Err(PluginError::config(
                "`max_attempts` must be at least 1 (1: dead-letter at the first failure)",
            ));
        }
        let pg = Target::parse(
            &config.dsn,
            Duration::from_millis(config.connect_timeout_ms),
        )
        .map_err(PluginError::config)?;
        Ok(Settings {
            pg,
            unknown_columns: config.unknown_columns,
            dedupe: config.dedupe,
            dedupe_retention: Duration::from_secs(config.dedupe_retention_s),
            dedupe_schema: config.dedupe_schema,
            statement_timeout_ms: config.statement_timeout_ms,
            max_attempts: config.max_attempts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use golconde_plugin_api::{sdk::parse_config, ErrorKind};
    use tokio_postgres::config::{Host, TargetSessionAttrs};

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
        assert_eq!(s.pg.connect.get_application_name(), Some("golconde"));
        assert_eq!(s.max_attempts, 5);
    }

    #[test]
    fn the_password_never_appears_in_the_target_or_an_error() {
        let s = settings(r#"{"dsn": "postgres://app:s3cr3t@db.example:6543/shop"}"#).unwrap();
        assert_eq!(s.pg.target, "postgres://app@db.example:6543/shop");
        assert!(!format!("{:?}", s.pg.connect).contains("s3cr3t"));
        let err = settings(r#"{"dsn": "host=x password=s3cr3t sslmode=sometimes"}"#).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
        assert!(err.message.contains("sslmode"), "{err}");
        assert!(!err.message.contains("s3cr3t"), "{err}");
    }

    /// No part of a password shows in the target, the connection options' `Debug` or an
    /// error, in any form of DSN, accepted or not. The password's pieces are marked `Qz`
    /// so that any piece of it is found.
    #[test]
    fn no_part_of_a_password_shows_in_any_dsn_form() {
        let dsns = [
            // key=value, quoted and not, with the characters that matter in either form.
            "host=db user=app password=Qz1",
            "host=db user=app password='Qz1 Qz2'",
            "host=db user=app password = 'Qz1 Qz2' dbname=shop",
            r"host=db user=app password='Qz1\'Qz2\\Qz3'",
            r"host=db user=app password=Qz1\ Qz2",
            "host=db user=app password=Qz1'Qz2",
            "host=db user=app password=Qz1@Qz2:Qz3/Qz4?Qz5#Qz6&Qz7=Qz8",
            // An unquoted password with a space: libpq reads a second word.
            "host=db user=app password=Qz1 Qz2",
            "host=db user=app password=Qz1 Qz2 dbname=shop",
            "user=app password=Qz1 Qz2=Qz3 host=db",
            "password=Qz1 Qz2 Qz3=Qz4",
            "host=db password='Qz1",
            "host=db password=Qz1 sslmode=Qz2 Qz3",
            // URLs, encoded as they should be and not.
            "postgres://app:Qz1%20Qz2%40Qz3%3AQz4%2FQz5%3FQz6%23Qz7@db:5433/shop",
            "postgres://app:Qz1@Qz2@db/shop",
            "postgres://app:Qz1@Qz2@db:5433/shop?sslmode=disable",
            "postgres://app:Qz1/Qz2@db/shop",
            "postgres://app:Qz1?Qz2@db/shop",
            "postgres://app:Qz1#Qz2@db/shop",
            "postgres://app:Qz1 Qz2@db/shop",
            "postgres://app:Qz1:Qz2@db/shop",
            "postgres://app:Qz1%zzQz2@db/shop",
            "postgresql://db/shop?user=app&password=Qz1",
            "postgresql://db/shop?user=app&password=Qz1@Qz2",
            "postgresql://db/shop?password=Qz1&Qz2=Qz3",
            "postgresql://db/shop?password=Qz1&Qz2",
            "postgresql://db/shop?password=Qz1%zzQz2",
            "postgresql://db/shop?password=Qz1#Qz2&sslmode=require",
            "postgres://db/shop?sslrootcert=Qz1%zz&password=Qz2",
            // Several hosts.
            "host=db1,db2 port=5432,5433 user=app password=Qz1 target_session_attrs=read-write",
            "host=db1,db2 port=5432,5433,5434 user=app password=Qz1",
            "postgres://app:Qz1@db1:5432,db2:5433/shop?target_session_attrs=read-write",
            "postgres://app:Qz1%40Qz2@db1,db2:5433/shop",
            "postgres://app:Qz1@Qz2@db1:5432,db2:5433/shop",
        ];
        for dsn in dsns {
            let json = serde_json::json!({ "dsn": dsn }).to_string();
            let shown = match settings(&json) {
                Ok(s) => format!("{} {:?}", s.pg.target, s),
                Err(e) => {
                    assert_eq!(e.kind, ErrorKind::Config, "{dsn}");
                    e.message.to_string()
                }
            };
            assert!(!shown.contains("Qz"), "{dsn}: {shown}");
        }
    }

    #[test]
    fn passwords_in_every_form_reach_the_connection_intact() {
        for (dsn, password) in [
            ("host=db password='a b'", "a b"),
            (r"host=db password=a\ b", "a b"),
            (r"host=db password='it\'s'", "it's"),
            ("postgres://u:a%20b%40c@db/x", "a b@c"),
            ("postgres://u:a/b@db/x", "a/b"),
            ("postgres://db/x?password=a%26b", "a&b"),
        ] {
            let json = serde_json::json!({ "dsn": dsn }).to_string();
            let s = settings(&json).unwrap_or_else(|e| panic!("{dsn}: {e}"));
            assert_eq!(
                s.pg.connect.get_password(),
                Some(password.as_bytes()),
                "{dsn}"
            );
            assert!(
                s.pg.target.starts_with("postgres://"),
                "{dsn}: {}",
                s.pg.target
            );
        }
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
            (r#"{"dsn": "host=x", "max_attempts": 0}"#, "max_attempts"),
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

    fn labels(s: &Settings) -> Vec<&str> {
        s.pg.candidates.iter().map(|c| c.label.as_str()).collect()
    }

    #[test]
    fn several_hosts_become_one_candidate_each_in_both_forms() {
        for dsn in [
            "host=a.example,b.example port=5432,5433 user=app password=pw dbname=shop \
             target_session_attrs=read-write",
            "postgres://app:pw@a.example:5432,b.example:5433/shop?target_session_attrs=read-write",
        ] {
            let json = serde_json::json!({ "dsn": dsn }).to_string();
            let s = settings(&json).unwrap_or_else(|e| panic!("{dsn}: {e}"));
            assert_eq!(labels(&s), ["a.example:5432", "b.example:5433"], "{dsn}");
            assert_eq!(
                s.pg.target, "postgres://app@a.example:5432,b.example:5433/shop",
                "{dsn}"
            );
            for (candidate, host) in s.pg.candidates.iter().zip(["a.example", "b.example"]) {
                let c = &candidate.connect;
                assert_eq!(c.get_hosts(), [Host::Tcp(host.into())], "{dsn}");
                assert_eq!(c.get_ports().len(), 1, "{dsn}");
                assert_eq!(c.get_password(), Some(&b"pw"[..]), "{dsn}");
                assert_eq!(c.get_dbname(), Some("shop"), "{dsn}");
                assert_eq!(
                    c.get_target_session_attrs(),
                    TargetSessionAttrs::ReadWrite,
                    "{dsn}"
                );
                // What the plugin adds to the DSN reaches every host.
                assert_eq!(c.get_application_name(), Some("golconde"), "{dsn}");
                assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(10)));
            }
        }
        // In a URL, a host without a port has PostgreSQL's.
        let s = settings(r#"{"dsn": "postgres://a:1,b:2,c/db"}"#).unwrap();
        assert_eq!(labels(&s), ["a:1", "b:2", "c:5432"]);
        // One port serves every host; none means PostgreSQL's.
        let s = settings(r#"{"dsn": "host=a,b port=6000"}"#).unwrap();
        assert_eq!(labels(&s), ["a:6000", "b:6000"]);
        let s = settings(r#"{"dsn": "host=a,b,c"}"#).unwrap();
        assert_eq!(labels(&s), ["a:5432", "b:5432", "c:5432"]);
        let s = settings(r#"{"dsn": "host=a,b hostaddr=10.0.0.1,10.0.0.2"}"#).unwrap();
        assert_eq!(
            s.pg.candidates[1].connect.get_hostaddrs(),
            ["10.0.0.2".parse::<std::net::IpAddr>().unwrap()]
        );
        // The host name stays, for the certificate check; the address is only dialled.
        assert_eq!(
            s.pg.candidates[1].connect.get_hosts(),
            [Host::Tcp("b".into())]
        );
    }

    #[test]
    fn ports_and_hostaddrs_must_go_with_the_hosts() {
        for (dsn, expected) in [
            ("host=a,b,c port=1,2", "names 3 hosts and 2 ports"),
            (
                "host=a,b hostaddr=10.0.0.1",
                "names 2 hosts and 1 hostaddrs",
            ),
        ] {
            let json = serde_json::json!({ "dsn": dsn }).to_string();
            let err = settings(&json).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Config, "{dsn}");
            assert!(err.message.contains("`dsn`"), "{dsn}: {err}");
            assert!(err.message.contains(expected), "{dsn}: {err}");
        }
    }

    #[test]
    fn load_balance_hosts_random_shuffles_the_hosts_each_time() {
        let s = settings(r#"{"dsn": "host=a,b,c"}"#).unwrap();
        for _ in 0..10 {
            let order: Vec<&str> = s.pg.candidates().iter().map(|c| c.label.as_str()).collect();
            assert_eq!(order, ["a:5432", "b:5432", "c:5432"]);
        }
        let s = settings(r#"{"dsn": "host=a,b,c load_balance_hosts=random"}"#).unwrap();
        let firsts: std::collections::HashSet<String> = (0..100)
            .map(|_| s.pg.candidates()[0].label.clone())
            .collect();
        assert_eq!(firsts.len(), 3, "{firsts:?}");
    }

    #[test]
    fn ignore_is_spelt_in_lower_case() {
        let s =
            settings(r#"{"dsn": "host=x", "unknown_columns": "ignore", "dedupe": true}"#).unwrap();
        assert_eq!(s.unknown_columns, UnknownColumns::Ignore);
        assert!(s.dedupe);
    }
}

//! The plugin's configuration section, its validation, and the connection options made of
//! it.
//!
//! TLS follows the mysql client's `--ssl-mode`; the files it names (`ssl_ca`, `ssl_cert`,
//! `ssl_key`) are resolved against the configuration's folder and read here, so that a
//! wrong path or a file that holds no PEM certificate or key is a configuration error
//! naming its key, not a connection that fails later.

use std::{fmt, path::PathBuf, time::Duration};

use golconde_plugin_api::{Host, PluginError};
use mysql_async::{ClientIdentity, Opts, OptsBuilder, SslOpts};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use serde::Deserialize;

/// `[databases.NAME]` with `plugin = "mysql"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `mysql://user:password@host:3306/database`.
    pub dsn: String,
    /// `disabled`, `preferred` (default), `required`, `verify_ca`, `verify_identity`.
    #[serde(default)]
    pub ssl_mode: SslMode,
    /// PEM file of the certificate authorities to verify the server against.
    #[serde(default)]
    pub ssl_ca: Option<PathBuf>,
    /// PEM file of a client certificate (with `ssl_key`).
    #[serde(default)]
    pub ssl_cert: Option<PathBuf>,
    /// PEM file of the client certificate's private key, unencrypted.
    #[serde(default)]
    pub ssl_key: Option<PathBuf>,
    #[serde(default)]
    pub unknown_columns: UnknownColumns,
    /// Record change ids in `dedupe_database`.applied and skip replays.
    #[serde(default)]
    pub dedupe: bool,
    #[serde(default = "default_retention")]
    pub dedupe_retention_s: u64,
    /// The database of the applied-change table.
    #[serde(default = "default_dedupe_database")]
    pub dedupe_database: String,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// MariaDB `max_statement_time` (every statement); MySQL `max_execution_time` (reads
    /// only).
    #[serde(default)]
    pub statement_timeout_ms: Option<u64>,
    /// InnoDB's `innodb_lock_wait_timeout` for the plugin's sessions.
    #[serde(default)]
    pub lock_wait_timeout_s: Option<u64>,
    /// How often a change may fail with an error that may pass (a missing privilege, a
    /// statement timeout) before it is dead-lettered.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
}

fn default_retention() -> u64 {
    7 * 24 * 3600
}

fn default_dedupe_database() -> String {
    "golconde".into()
}

fn default_connect_timeout() -> u64 {
    10_000
}

fn default_max_attempts() -> u32 {
    5
}

/// What to do with data columns the table lacks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownColumns {
    #[default]
    Error,
    Ignore,
}

/// The mysql client's `--ssl-mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SslMode {
    /// Never TLS.
    Disabled,
    /// TLS when the server offers it, unverified unless `ssl_ca` is given.
    #[default]
    Preferred,
    /// Always TLS, unverified unless `ssl_ca` is given.
    Required,
    /// Always TLS, the certificate chain verified.
    VerifyCa,
    /// Always TLS, the chain and the host name verified.
    VerifyIdentity,
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SslMode::Disabled => "disabled",
            SslMode::Preferred => "preferred",
            SslMode::Required => "required",
            SslMode::VerifyCa => "verify_ca",
            SslMode::VerifyIdentity => "verify_identity",
        })
    }
}

/// The validated configuration.
#[derive(Debug)]
pub struct Settings {
    /// Connection options with TLS, or without it for `disabled`.
    pub connect: Opts,
    /// For `preferred`: the same options without TLS, for a server that offers none.
    pub plain: Option<Opts>,
    pub ssl_mode: SslMode,
    /// A client certificate is presented (`ssl_cert`, `ssl_key`).
    pub client_certificate: bool,
    /// `mysql://user@host:port/database`, for messages: never the password.
    pub target: String,
    /// The DSN's database: where unqualified table names are.
    pub database: Option<String>,
    pub unknown_columns: UnknownColumns,
    pub dedupe: bool,
    pub dedupe_retention: Duration,
    pub dedupe_database: String,
    pub connect_timeout: Duration,
    pub statement_timeout_ms: Option<u64>,
    pub lock_wait_timeout_s: Option<u64>,
    pub max_attempts: u32,
}

impl Settings {
    pub fn from_config(config: Config, host: &Host) -> Result<Settings, PluginError> {
        let bad = |key: &str, why: &str| PluginError::config(format!("`{key}` {why}"));
        if config.dedupe_retention_s == 0 {
            return Err(bad("dedupe_retention_s", "must be at least 1"));
        }
        if config.connect_timeout_ms == 0 {
            return Err(bad("connect_timeout_ms", "must be at least 1"));
        }
        if config.statement_timeout_ms == Some(0) {
            return Err(bad(
                "statement_timeout_ms",
                "must be at least 1 (leave it out for no limit)",
            ));
        }
        if matches!(config.lock_wait_timeout_s, Some(0) | Some(1_073_741_825..)) {
            return Err(bad(
                "lock_wait_timeout_s",
                "must be between 1 and 1073741824 (leave it out for the server's)",
            ));
        }
        if config.max_attempts == 0 {
            return Err(bad("max_attempts", "must be at least 1"));
        }
        if config.dedupe_database.is_empty()
            || config.dedupe_database.chars().count() > crate::schema::MAX_IDENTIFIER
        {
            return Err(bad(
                "dedupe_database",
                "must be a database name of 1 to 64 characters",
            ));
        }
        let opts = parse_dsn(&config.dsn)?;
        let target = describe(&opts);
        let database = opts.db_name().map(str::to_string);
        let tls = ssl_opts(&config, host)?;
        let client_certificate = config.ssl_cert.is_some();
        let base = OptsBuilder::from_opts(opts)
            // The driver would otherwise move a connection to 127.0.0.1 onto the server's
            // Unix socket, where TLS is never used.
            .prefer_socket(false)
            .stmt_cache_size(64usize);
        let (connect, plain) = match (config.ssl_mode, tls) {
            (SslMode::Disabled, _) => (Opts::from(base), None),
            (SslMode::Preferred, Some(tls)) => (
                Opts::from(base.clone().ssl_opts(tls)),
                Some(Opts::from(base)),
            ),
            (_, Some(tls)) => (Opts::from(base.ssl_opts(tls)), None),
            (_, None) => unreachable!("every mode but disabled has TLS options"),
        };
        Ok(Settings {
            connect,
            plain,
            ssl_mode: config.ssl_mode,
            client_certificate,
            target,
            database,
            unknown_columns: config.unknown_columns,
            dedupe: config.dedupe,
            dedupe_retention: Duration::from_secs(config.dedupe_retention_s),
            dedupe_database: config.dedupe_database,
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            statement_timeout_ms: config.statement_timeout_ms,
            lock_wait_timeout_s: config.lock_wait_timeout_s,
            max_attempts: config.max_attempts,
        })
    }
}

/// The DSN as connection options. The driver's own messages about a URL quote none of
/// its text but a parameter's name and value, so they may be shown.
fn parse_dsn(dsn: &str) -> Result<Opts, PluginError> {
    if !dsn.starts_with("mysql://") {
        return Err(PluginError::config(
            "`dsn` must be a URL of the form mysql://user:password@host:3306/database",
        ));
    }
    // A bare `@` in the password would make the URL parser take part of it for the host,
    // and then show it as one.
    let authority = &dsn["mysql://".len()..];
    let authority = &authority[..authority.find(['/', '?']).unwrap_or(authority.len())];
    if authority.matches('@').count() > 1 {
        return Err(PluginError::config(
            "`dsn`: the user name or password holds an `@`; write it as `%40`",
        ));
    }
    Opts::from_url(dsn).map_err(|e| {
        let reason = match &e {
            mysql_async::UrlError::Parse(_) => "it is not a valid URL".to_string(),
            mysql_async::UrlError::InvalidParamValue { param, .. } => {
                format!("the value of URL parameter `{param}` is not valid")
            }
            other => other.to_string(),
        };
        PluginError::config(format!("`dsn`: {reason}"))
    })
}

/// The TLS options for `ssl_mode`, with the files checked; `None` for `disabled`.
fn ssl_opts(config: &Config, host: &Host) -> Result<Option<SslOpts>, PluginError> {
    let read = |key: &str, path: &PathBuf| -> Result<Vec<u8>, PluginError> {
        let path = host.resolve(key, path)?;
        std::fs::read(&path).map_err(|e| {
            PluginError::config(format!("`{key}` {}: cannot read it: {e}", path.display()))
        })
    };
    if config.ssl_mode == SslMode::Disabled {
        if config.ssl_ca.is_some() || config.ssl_cert.is_some() || config.ssl_key.is_some() {
            return Err(PluginError::config(
                "`ssl_ca`, `ssl_cert` and `ssl_key` have no use with `ssl_mode = \
                 \"disabled\"`; remove them or choose another `ssl_mode`",
            ));
        }
        return Ok(None);
    }
    let ca = match &config.ssl_ca {
        Some(path) => {
            let pem = read("ssl_ca", path)?;
            let found = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    PluginError::config(format!(
                        "`ssl_ca` {}: not a PEM certificate file: {e}",
                        path.display()
                    ))
                })?;
            if found.is_empty() {
                return Err(PluginError::config(format!(
                    "`ssl_ca` {}: holds no PEM certificate",
                    path.display()
                )));
            }
            Some(pem)
        }
        None => None,
    };
    let identity = match (&config.ssl_cert, &config.ssl_key) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(PluginError::config(
                "`ssl_cert` needs `ssl_key`: the client certificate's private key",
            ))
        }
        (None, Some(_)) => {
            return Err(PluginError::config(
                "`ssl_key` needs `ssl_cert`: the client certificate it belongs to",
            ))
        }
        (Some(cert_path), Some(key_path)) => {
            let cert = read("ssl_cert", cert_path)?;
            let certs = CertificateDer::pem_slice_iter(&cert)
                .collect::<Result<Vec<_>, _>>()
                .unwrap_or_default();
            if certs.is_empty() {
                return Err(PluginError::config(format!(
                    "`ssl_cert` {}: holds no PEM certificate",
                    cert_path.display()
                )));
            }
            let key = read("ssl_key", key_path)?;
            if PrivateKeyDer::from_pem_slice(&key).is_err() {
                return Err(PluginError::config(format!(
                    "`ssl_key` {}: holds no unencrypted PEM private key",
                    key_path.display()
                )));
            }
            Some(ClientIdentity::new(cert.into(), key.into()))
        }
    };
    let verify = matches!(config.ssl_mode, SslMode::VerifyCa | SslMode::VerifyIdentity);
    let tls = SslOpts::default().with_client_identity(identity);
    Ok(Some(match ca {
        // As the mysql client: given a CA, `preferred` and `required` verify the chain
        // too; only `verify_identity` checks the name.
        Some(ca) => tls
            .with_root_certs(vec![ca.into()])
            .with_disable_built_in_roots(true)
            .with_danger_skip_domain_validation(config.ssl_mode != SslMode::VerifyIdentity),
        None if verify => {
            tls.with_danger_skip_domain_validation(config.ssl_mode != SslMode::VerifyIdentity)
        }
        None => tls.with_danger_accept_invalid_certs(true),
    }))
}

/// `mysql://user@host:port/database`, never the password.
fn describe(opts: &Opts) -> String {
    let user = opts.user().map(|u| format!("{u}@")).unwrap_or_default();
    format!(
        "mysql://{user}{}:{}/{}",
        opts.ip_or_hostname(),
        opts.tcp_port(),
        opts.db_name().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use golconde_plugin_api::{sdk::parse_config, testing, ErrorKind};

    fn settings(json: &str) -> Result<Settings, PluginError> {
        Settings::from_config(parse_config::<Config>(json)?, &testing::host("test"))
    }

    #[test]
    fn defaults_are_sane() {
        let s = settings(r#"{"dsn": "mysql://root@127.0.0.1:3306/shop"}"#).unwrap();
        assert_eq!(s.unknown_columns, UnknownColumns::Error);
        assert_eq!(s.ssl_mode, SslMode::Preferred);
        assert!(s.plain.is_some());
        assert!(!s.dedupe);
        assert_eq!(s.dedupe_database, "golconde");
        assert_eq!(s.dedupe_retention, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(s.connect_timeout, Duration::from_secs(10));
        assert_eq!(s.statement_timeout_ms, None);
        assert_eq!(s.max_attempts, 5);
        assert_eq!(s.database.as_deref(), Some("shop"));
        assert!(!s.connect.prefer_socket());
    }

    #[test]
    fn the_password_never_appears_in_the_target_or_an_error() {
        let s = settings(r#"{"dsn": "mysql://app:s3cr3t@db.example:3307/shop"}"#).unwrap();
        assert_eq!(s.target, "mysql://app@db.example:3307/shop");
        for dsn in [
            "mysql://app:Qz1@Qz2@db/shop",
            "mysql://app:Qz1%zzQz2@db/shop",
            "mysql://app:Qz1 Qz2@db/shop",
            "mysql://app:Qz1@db/shop?Qz2=Qz3",
            "mysql://app:Qz1@db/shop?prefer_socket=Qz2",
            "postgres://app:Qz1@db/shop",
        ] {
            let json = serde_json::json!({ "dsn": dsn }).to_string();
            let shown = match settings(&json) {
                Ok(s) => s.target,
                Err(e) => {
                    assert_eq!(e.kind, ErrorKind::Config, "{dsn}");
                    e.message.to_string()
                }
            };
            assert!(!shown.contains("Qz1"), "{dsn}: {shown}");
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        for (json, key) in [
            (
                r#"{"dsn": "mysql://h/d", "dedupe_retention_s": 0}"#,
                "dedupe_retention_s",
            ),
            (
                r#"{"dsn": "mysql://h/d", "connect_timeout_ms": 0}"#,
                "connect_timeout_ms",
            ),
            (
                r#"{"dsn": "mysql://h/d", "statement_timeout_ms": 0}"#,
                "statement_timeout_ms",
            ),
            (
                r#"{"dsn": "mysql://h/d", "lock_wait_timeout_s": 0}"#,
                "lock_wait_timeout_s",
            ),
            (
                r#"{"dsn": "mysql://h/d", "max_attempts": 0}"#,
                "max_attempts",
            ),
            (
                r#"{"dsn": "mysql://h/d", "dedupe_database": ""}"#,
                "dedupe_database",
            ),
            (
                r#"{"dsn": "mysql://h/d", "unknown_columns": "drop"}"#,
                "drop",
            ),
            (
                r#"{"dsn": "mysql://h/d", "ssl_mode": "verify-full"}"#,
                "verify-full",
            ),
            (r#"{"dsn": "mysql://h/d", "dedup": true}"#, "dedup"),
            (
                r#"{"dsn": "mysql://h/d", "ssl_ca": "/nonexistent.pem"}"#,
                "`ssl_ca` /nonexistent.pem",
            ),
            (
                r#"{"dsn": "mysql://h/d", "ssl_cert": "/nonexistent.pem"}"#,
                "`ssl_cert` needs `ssl_key`",
            ),
            (
                r#"{"dsn": "mysql://h/d", "ssl_mode": "disabled", "ssl_ca": "/etc/hostname"}"#,
                "ssl_mode",
            ),
            (r#"{"dsn": "host=x user=y"}"#, "`dsn`"),
            (r#"{}"#, "dsn"),
        ] {
            let err = settings(json).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Config, "{json}");
            assert!(err.message.contains(key), "{json}: {err}");
        }
    }

    #[test]
    fn files_that_are_no_pem_are_refused_naming_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let junk = junk.display().to_string();
        for (json, key) in [
            (
                serde_json::json!({"dsn": "mysql://h/d", "ssl_ca": junk}),
                "`ssl_ca`",
            ),
            (
                serde_json::json!({"dsn": "mysql://h/d", "ssl_cert": junk, "ssl_key": junk}),
                "`ssl_cert`",
            ),
        ] {
            let err = settings(&json.to_string()).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Config, "{json}");
            assert!(err.message.contains(key), "{json}: {err}");
        }
    }

    #[test]
    fn modes_are_spelt_as_the_mysql_clients() {
        for (mode, plain) in [
            ("disabled", false),
            ("preferred", true),
            ("required", false),
            ("verify_ca", false),
            ("verify_identity", false),
        ] {
            let json = format!(r#"{{"dsn": "mysql://h/d", "ssl_mode": "{mode}"}}"#);
            let s = settings(&json).unwrap();
            assert_eq!(s.ssl_mode.to_string(), mode);
            assert_eq!(s.plain.is_some(), plain, "{mode}");
            assert_eq!(s.connect.ssl_opts().is_some(), mode != "disabled", "{mode}");
        }
    }
}

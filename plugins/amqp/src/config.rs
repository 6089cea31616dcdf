//! The plugin's configuration section: decoded leniently, then validated key by key so that
//! every mistake is a [`PluginError`] of kind `Config` that names the key.
//!
//! Each key arrives as a raw JSON value and is converted here rather than by serde's
//! derive: serde reports a wrong type as "invalid type: string, expected u64" without
//! saying which key, and the operator needs the key.

use std::{path::PathBuf, time::Duration};

use golconde_plugin_api::PluginError;
use lapin::uri::AMQPUri;
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::Value;

use crate::tls::TlsFiles;

/// The section as written in the configuration file. Unknown keys are refused by name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    url: Option<Value>,
    connection_name: Option<Value>,
    heartbeat_s: Option<Value>,
    declare: Option<Value>,
    connect_timeout_ms: Option<Value>,
    publish_timeout_ms: Option<Value>,
    reconnect_initial_ms: Option<Value>,
    reconnect_max_ms: Option<Value>,
    tls_ca_file: Option<Value>,
    tls_cert_file: Option<Value>,
    tls_key_file: Option<Value>,
}

/// How queues are made sure of before consuming from or publishing to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declare {
    /// Declare the queue durable (creating it if missing).
    Durable,
    /// Only check that it exists: for queues someone else owns, with arguments we do not
    /// know.
    Passive,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub uri: AMQPUri,
    /// `url` as it may be shown: password replaced by `***`.
    pub endpoint: String,
    pub connection_name: String,
    pub declare: Declare,
    pub connect_timeout: Duration,
    pub publish_timeout: Duration,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    /// What `amqps://` connections trust and present beyond the system's roots.
    pub tls: TlsFiles,
}

const DEFAULT_HEARTBEAT_S: u16 = 30;
const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_PUBLISH_TIMEOUT_MS: u64 = 30_000;
const DEFAULT_RECONNECT_INITIAL_MS: u64 = 100;
const DEFAULT_RECONNECT_MAX_MS: u64 = 30_000;

impl Settings {
    /// Validates `config`; `instance` names the default connection.
    pub fn from_config(config: Config, instance: &str) -> Result<Settings, PluginError> {
        let url: String = required(config.url, "url")?;
        let mut uri = parse_url(&url)?;
        let heartbeat = optional(config.heartbeat_s, "heartbeat_s")?.unwrap_or(DEFAULT_HEARTBEAT_S);
        uri.query.heartbeat = Some(heartbeat);

        let connection_name = optional::<String>(config.connection_name, "connection_name")?
            .unwrap_or_else(|| format!("golconde {instance}"));
        if connection_name.trim().is_empty() {
            return Err(PluginError::config(
                "`connection_name` is empty; leave it out to get `golconde <instance>`",
            ));
        }

        let declare = match optional::<String>(config.declare, "declare")?.as_deref() {
            None | Some("durable") => Declare::Durable,
            Some("passive") => Declare::Passive,
            Some(other) => {
                return Err(PluginError::config(format!(
                    "`declare` is \"{other}\"; use \"durable\" (declare queues durable, the \
                     default) or \"passive\" (only check that they exist)"
                )))
            }
        };

        let connect_timeout = millis(
            config.connect_timeout_ms,
            "connect_timeout_ms",
            DEFAULT_CONNECT_TIMEOUT_MS,
        )?;
        // lapin applies this to the TCP connect; our own timeout covers the handshake too.
        uri.query.connection_timeout = Some(connect_timeout.as_millis() as u64);
        let publish_timeout = millis(
            config.publish_timeout_ms,
            "publish_timeout_ms",
            DEFAULT_PUBLISH_TIMEOUT_MS,
        )?;
        let reconnect_initial = millis(
            config.reconnect_initial_ms,
            "reconnect_initial_ms",
            DEFAULT_RECONNECT_INITIAL_MS,
        )?;
        let reconnect_max = millis(
            config.reconnect_max_ms,
            "reconnect_max_ms",
            DEFAULT_RECONNECT_MAX_MS,
        )?;
        if reconnect_max < reconnect_initial {
            return Err(PluginError::config(format!(
                "`reconnect_max_ms` ({} ms) is below `reconnect_initial_ms` ({} ms); the \
                 backoff starts at the first and doubles up to the second",
                reconnect_max.as_millis(),
                reconnect_initial.as_millis()
            )));
        }

        let tls = TlsFiles::read(
            optional::<PathBuf>(config.tls_ca_file, "tls_ca_file")?.as_deref(),
            optional::<PathBuf>(config.tls_cert_file, "tls_cert_file")?.as_deref(),
            optional::<PathBuf>(config.tls_key_file, "tls_key_file")?.as_deref(),
        )
        .map_err(PluginError::config)?;
        if !tls.is_empty() && uri.scheme != lapin::uri::AMQPScheme::AMQPS {
            return Err(PluginError::config(format!(
                "`tls_*` files are given but `url` ({}) is not amqps://; the connection \
                 would not use them",
                endpoint(&uri)
            )));
        }

        Ok(Settings {
            endpoint: endpoint(&uri),
            uri,
            connection_name,
            declare,
            connect_timeout,
            publish_timeout,
            reconnect_initial,
            reconnect_max,
            tls,
        })
    }
}

fn required<T: DeserializeOwned>(value: Option<Value>, key: &str) -> Result<T, PluginError> {
    optional(value, key)?.ok_or_else(|| {
        PluginError::config(format!(
            "`{key}` is missing; give the broker's address, e.g. \
             url = \"amqp://user:password@host:5672/%2f\""
        ))
    })
}

fn optional<T: DeserializeOwned>(
    value: Option<Value>,
    key: &str,
) -> Result<Option<T>, PluginError> {
    value
        .map(|value| {
            serde_json::from_value(value).map_err(|e| PluginError::config(format!("`{key}`: {e}")))
        })
        .transpose()
}

/// A duration in milliseconds that must be at least 1.
fn millis(value: Option<Value>, key: &str, default: u64) -> Result<Duration, PluginError> {
    match optional::<u64>(value, key)?.unwrap_or(default) {
        0 => Err(PluginError::config(format!(
            "`{key}` is 0; give a number of milliseconds of at least 1 (default {default})"
        ))),
        ms => Ok(Duration::from_millis(ms)),
    }
}

fn parse_url(url: &str) -> Result<AMQPUri, PluginError> {
    let shown = redact(url);
    let bad = |why: String| PluginError::config(format!("`url` \"{shown}\": {why}"));
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    if !matches!(scheme, Some("amqp" | "amqps")) {
        return Err(bad("the scheme must be amqp:// or amqps:// (TLS), as in \
             \"amqp://user:password@host:5672/%2f\""
            .into()));
    }
    let mut uri: AMQPUri = url.parse().map_err(|e: String| bad(redact_in(&e, url)))?;
    // amq-protocol-uri reads the host with `Url::domain`, which is empty for IP literals
    // and then silently becomes "localhost": take the host from the URL ourselves.
    let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    uri.authority.host = match parsed.host() {
        Some(url::Host::Domain(name)) if !name.is_empty() => name.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        _ => return Err(bad("it names no host".into())),
    };
    Ok(uri)
}

/// `scheme://user:***@host:port/vhost`: what errors and logs show of the broker's address.
pub fn endpoint(uri: &AMQPUri) -> String {
    let host = &uri.authority.host;
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    format!(
        "{}://{}:***@{}:{}/{}",
        uri.scheme,
        uri.authority.userinfo.username,
        host,
        uri.authority.port,
        uri.vhost.replace('%', "%25").replace('/', "%2f")
    )
}

/// `url` with the password replaced by `***`, for a `url` too broken to parse.
///
/// The user information ends at the last `@` before any query: a password may hold an
/// unescaped `/` or `@` in a mistyped URL, and over-redacting is harmless where leaking is
/// not.
pub fn redact(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let end = url[start..]
        .find(['?', '#'])
        .map_or(url.len(), |i| start + i);
    let Some(at) = url[start..end].rfind('@').map(|i| start + i) else {
        return url.to_string();
    };
    match url[start..at].find(':').map(|i| start + i) {
        Some(colon) => format!("{}:***{}", &url[..colon], &url[at..]),
        None => url.to_string(),
    }
}

/// Removes the password of `url` from a parser's message that may quote it.
fn redact_in(message: &str, url: &str) -> String {
    let shown = redact(url);
    let message = message.replace(url, &shown);
    match password(url) {
        Some(password) if !password.is_empty() => message.replace(password, "***"),
        _ => message,
    }
}

fn password(url: &str) -> Option<&str> {
    let start = url.find("://")? + 3;
    let end = url[start..]
        .find(['?', '#'])
        .map_or(url.len(), |i| start + i);
    let at = start + url[start..end].rfind('@')?;
    let colon = start + url[start..at].find(':')?;
    Some(&url[colon + 1..at])
}

#[cfg(test)]
mod tests {
    use golconde_plugin_api::{sdk::parse_config, ErrorKind};

    use super::*;

    fn settings(json: &str) -> Result<Settings, PluginError> {
        Settings::from_config(parse_config::<Config>(json)?, "rabbit")
    }

    fn config_error(json: &str) -> String {
        let err = settings(json).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config, "{err}");
        err.message.to_string()
    }

    #[test]
    fn defaults_fill_everything_but_the_url() {
        let s = settings(r#"{"url": "amqp://guest:secret@127.0.0.1:5672/%2f"}"#).unwrap();
        assert_eq!(s.uri.authority.host, "127.0.0.1");
        assert_eq!(s.uri.authority.port, 5672);
        assert_eq!(s.uri.vhost, "/");
        assert_eq!(s.uri.query.heartbeat, Some(DEFAULT_HEARTBEAT_S));
        assert_eq!(s.declare, Declare::Durable);
        assert_eq!(s.connection_name, "golconde rabbit");
        assert_eq!(s.endpoint, "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(s.reconnect_initial, Duration::from_millis(100));
    }

    #[test]
    fn every_key_is_read() {
        let s = settings(
            r#"{"url": "amqps://u:p@broker.example:5671/prod", "connection_name": "c",
                "heartbeat_s": 5, "declare": "passive", "connect_timeout_ms": 7,
                "publish_timeout_ms": 8, "reconnect_initial_ms": 9, "reconnect_max_ms": 10}"#,
        )
        .unwrap();
        assert_eq!(s.uri.scheme, lapin::uri::AMQPScheme::AMQPS);
        assert_eq!(s.uri.authority.host, "broker.example");
        assert_eq!(s.uri.vhost, "prod");
        assert_eq!(s.uri.query.heartbeat, Some(5));
        assert_eq!(s.connection_name, "c");
        assert_eq!(s.declare, Declare::Passive);
        assert_eq!(s.connect_timeout, Duration::from_millis(7));
        assert_eq!(s.publish_timeout, Duration::from_millis(8));
        assert_eq!(s.reconnect_initial, Duration::from_millis(9));
        assert_eq!(s.reconnect_max, Duration::from_millis(10));
    }

    #[test]
    fn ip_literal_hosts_are_kept() {
        let s = settings(r#"{"url": "amqp://10.1.2.3:5673"}"#).unwrap();
        assert_eq!(s.uri.authority.host, "10.1.2.3");
        let s = settings(r#"{"url": "amqp://[::1]:5672/%2f"}"#).unwrap();
        assert_eq!(s.uri.authority.host, "::1");
        assert_eq!(s.endpoint, "amqp://guest:***@[::1]:5672/%2f");
    }

    #[test]
    fn unknown_and_missing_keys_are_named() {
        assert!(config_error(r#"{"url": "amqp://h", "hearbeat_s": 3}"#).contains("hearbeat_s"));
        assert!(config_error(r#"{}"#).contains("`url` is missing"));
    }

    #[test]
    fn wrong_values_name_their_key() {
        let cases = [
            (r#"{"url": 5}"#, "`url`"),
            (
                r#"{"url": "amqp://h", "heartbeat_s": 70000}"#,
                "`heartbeat_s`",
            ),
            (
                r#"{"url": "amqp://h", "heartbeat_s": "often"}"#,
                "`heartbeat_s`",
            ),
            (r#"{"url": "amqp://h", "declare": "maybe"}"#, "`declare`"),
            (
                r#"{"url": "amqp://h", "connect_timeout_ms": 0}"#,
                "`connect_timeout_ms`",
            ),
            (
                r#"{"url": "amqp://h", "publish_timeout_ms": -1}"#,
                "`publish_timeout_ms`",
            ),
            (
                r#"{"url": "amqp://h", "connection_name": " "}"#,
                "`connection_name`",
            ),
            (
                r#"{"url": "amqp://h", "reconnect_initial_ms": 500, "reconnect_max_ms": 100}"#,
                "`reconnect_max_ms`",
            ),
            (r#"{"url": "http://h"}"#, "`url`"),
            (
                r#"{"url": "amqp://h", "tls_ca_file": "/etc/ssl/certs/ssl-cert-snakeoil.pem"}"#,
                "is not amqps://",
            ),
            (
                r#"{"url": "amqps://h", "tls_ca_file": "/nonexistent/ca.pem"}"#,
                "`tls_ca_file` /nonexistent/ca.pem",
            ),
            (r#"{"url": "amqps://h", "tls_ca_file": 3}"#, "`tls_ca_file`"),
            (r#"{"url": "amqp:///vhost"}"#, "`url`"),
        ];
        for (json, key) in cases {
            let message = config_error(json);
            assert!(message.contains(key), "{json}: {message}");
        }
    }

    #[test]
    fn passwords_never_appear_in_url_errors() {
        for url in [
            "http://user:hunter2@host",
            "amqp://user:hunter2@host:notaport/",
            "amqp://user:hun/ter2@host:99999/",
        ] {
            let message = config_error(&format!(r#"{{"url": "{url}"}}"#));
            assert!(!message.contains("hunter2"), "{message}");
            assert!(!message.contains("ter2"), "{message}");
            assert!(message.contains("user"), "{message}");
        }
    }

    #[test]
    fn redact_keeps_user_and_host() {
        assert_eq!(redact("amqp://u:p@h:1/v"), "amqp://u:***@h:1/v");
        assert_eq!(redact("amqp://u@h/v"), "amqp://u@h/v");
        assert_eq!(redact("amqp://h/v@x"), "amqp://h/v@x");
        assert_eq!(
            redact("amqp://u:p@h/v?heartbeat=1"),
            "amqp://u:***@h/v?heartbeat=1"
        );
        assert_eq!(redact("no scheme"), "no scheme");
    }
}

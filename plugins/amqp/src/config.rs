//! The plugin's configuration section: decoded leniently, then validated key by key so that
//! every mistake is a [`PluginError`] of kind `Config` that names the key.
//!
//! Each key arrives as a raw JSON value and is converted here rather than by serde's
//! derive: serde reports a wrong type as "invalid type: string, expected u64" without
//! saying which key, and the operator needs the key.

use std::{fmt, path::PathBuf, time::Duration};

use golconde_plugin_api::PluginError;
use lapin::uri::AMQPUri;
use serde::{de::DeserializeOwned, Deserialize};
use serde_json::Value;

use crate::{queues::Queues, tls::TlsFiles};

/// The section as written in the configuration file. Unknown keys are refused by name. Not
/// `Debug`: `url` holds the password.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    url: Option<Value>,
    urls: Option<Value>,
    shuffle_urls: Option<Value>,
    connection_name: Option<Value>,
    heartbeat_s: Option<Value>,
    declare: Option<Value>,
    queue_type: Option<Value>,
    arguments: Option<Value>,
    queues: Option<Value>,
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
    /// Declare the queue durable (creating it if missing), with its type and arguments.
    Durable,
    /// Only check that it exists: for queues someone else owns, with arguments we do not
    /// know.
    Passive,
}

/// One broker of `url`.
#[derive(Clone)]
pub struct Address {
    pub uri: AMQPUri,
    /// The URL as it may be shown: password replaced by `***`.
    pub endpoint: String,
    /// `host:port`, for connection names.
    pub node: String,
    /// The largest frame this side asks for (`frame_max` in the URL, or
    /// [`DEFAULT_FRAME_MAX`]); the broker may lower it.
    pub frame_max: u32,
}

/// The validated configuration.
#[derive(Clone)]
pub struct Settings {
    /// In the order given; [`crate::broker::Engine`] shuffles them when `shuffle` is set.
    pub brokers: Vec<Address>,
    pub shuffle: bool,
    pub connection_name: String,
    pub declare: Declare,
    pub queues: Queues,
    pub connect_timeout: Duration,
    pub publish_timeout: Duration,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    /// What `amqps://` connections trust and present beyond the system's roots.
    pub tls: TlsFiles,
}

const DEFAULT_HEARTBEAT_S: u16 = 30;
/// RabbitMQ's default. Asked for rather than left to the broker because a broker that offers
/// no limit (0) would have lapin size its buffers for 4 GiB frames (32 frames each way).
pub const DEFAULT_FRAME_MAX: u32 = 131_072;
/// AMQP's smallest frame_max.
const MIN_FRAME_MAX: u32 = 4096;
const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_PUBLISH_TIMEOUT_MS: u64 = 30_000;
const DEFAULT_RECONNECT_INITIAL_MS: u64 = 100;
const DEFAULT_RECONNECT_MAX_MS: u64 = 30_000;

impl Settings {
    /// Validates `config`; `instance` names the default connection.
    pub fn from_config(config: Config, instance: &str) -> Result<Settings, PluginError> {
        let heartbeat = optional(config.heartbeat_s, "heartbeat_s")?.unwrap_or(DEFAULT_HEARTBEAT_S);
        let connect_timeout = millis(
            config.connect_timeout_ms,
            "connect_timeout_ms",
            DEFAULT_CONNECT_TIMEOUT_MS,
        )?;
        let mut brokers = Vec::new();
        for (label, url) in urls(config.url, config.urls)? {
            let mut address = address(&url, &label)?;
            address.uri.query.heartbeat = Some(heartbeat);
            // lapin applies this to the TCP connect; our own timeout covers the handshake too.
            address.uri.query.connection_timeout = Some(connect_timeout.as_millis() as u64);
            if let Some(twin) = brokers
                .iter()
                .find(|b: &&Address| b.endpoint == address.endpoint)
            {
                return Err(PluginError::config(format!(
                    "{label} ({}) is listed twice in `url`; give each broker once",
                    twin.endpoint
                )));
            }
            brokers.push(address);
        }
        if let Some(plain) = brokers
            .iter()
            .find(|b| b.uri.scheme != brokers[0].uri.scheme)
        {
            return Err(PluginError::config(format!(
                "`url` mixes amqp:// and amqps:// ({} and {}): a failover would silently \
                 change whether the connection is encrypted; use one scheme for every broker",
                brokers[0].endpoint, plain.endpoint
            )));
        }
        let shuffle = optional(config.shuffle_urls, "shuffle_urls")?.unwrap_or(true);

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

        let queues = Queues::parse(
            config.queue_type,
            config.arguments,
            config.queues,
            declare == Declare::Passive,
        )?;

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
        if !tls.is_empty() && brokers[0].uri.scheme != lapin::uri::AMQPScheme::AMQPS {
            return Err(PluginError::config(format!(
                "`tls_*` files are given but `url` ({}) is not amqps://; the connection \
                 would not use them",
                brokers[0].endpoint
            )));
        }

        Ok(Settings {
            brokers,
            shuffle,
            connection_name,
            declare,
            queues,
            connect_timeout,
            publish_timeout,
            reconnect_initial,
            reconnect_max,
            tls,
        })
    }
}

/// The brokers' URLs from `url` or `urls` (one key under two names: a string or a list of
/// strings), each with the label that names it in messages. Never shows a value: a URL
/// holds a password.
fn urls(url: Option<Value>, urls: Option<Value>) -> Result<Vec<(String, String)>, PluginError> {
    let (key, value) = match (url, urls) {
        (Some(_), Some(_)) => {
            return Err(PluginError::config(
                "`url` and `urls` are both given; they are one key (a string or a list of \
                 strings): give every broker's address in one of them",
            ))
        }
        (Some(value), None) => ("url", value),
        (None, Some(value)) => ("urls", value),
        (None, None) => {
            return Err(PluginError::config(
                "`url` is missing; give the broker's address, e.g. \
                 url = \"amqp://user:password@host:5672/%2f\", or a list of the cluster's \
                 nodes' addresses",
            ))
        }
    };
    match value {
        Value::String(url) => Ok(vec![(format!("`{key}`"), url)]),
        Value::Array(items) if items.is_empty() => Err(PluginError::config(format!(
            "`{key}` is an empty list; give at least one broker's address, e.g. \
             [\"amqp://user:password@host:5672/%2f\"]"
        ))),
        Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(url) => Ok((format!("`{key}` item {}", i + 1), url)),
                _ => Err(PluginError::config(format!(
                    "`{key}` item {}: expected a string (a broker's amqp:// or amqps:// URL)",
                    i + 1
                ))),
            })
            .collect(),
        _ => Err(PluginError::config(format!(
            "`{key}`: expected a string (the broker's amqp:// or amqps:// URL) or a list of \
             them"
        ))),
    }
}

/// One URL, checked: scheme, host, frame_max.
fn address(url: &str, label: &str) -> Result<Address, PluginError> {
    let mut uri = parse_url(url, label)?;
    let frame_max = match uri.query.frame_max {
        None | Some(0) => DEFAULT_FRAME_MAX,
        Some(n) if n < MIN_FRAME_MAX => {
            return Err(PluginError::config(format!(
                "{label} ({}) asks for frame_max={n}; AMQP's smallest is {MIN_FRAME_MAX}: \
                 raise it or leave it out (default {DEFAULT_FRAME_MAX})",
                endpoint(&uri)
            )))
        }
        Some(n) => n,
    };
    uri.query.frame_max = Some(frame_max);
    Ok(Address {
        endpoint: endpoint(&uri),
        node: node(&uri),
        frame_max,
        uri,
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

fn parse_url(url: &str, label: &str) -> Result<AMQPUri, PluginError> {
    let shown = redact(url);
    let bad = |why: String| PluginError::config(format!("{label} \"{shown}\": {why}"));
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
    format!(
        "{}://{}:***@{}/{}",
        uri.scheme,
        uri.authority.userinfo.username,
        node(uri),
        uri.vhost.replace('%', "%25").replace('/', "%2f")
    )
}

/// `host:port`, the host in brackets when it is an IPv6 address.
fn node(uri: &AMQPUri) -> String {
    let host = &uri.authority.host;
    if host.contains(':') {
        format!("[{host}]:{}", uri.authority.port)
    } else {
        format!("{host}:{}", uri.authority.port)
    }
}

/// `url` with the password replaced by `***`, for a `url` too broken to parse.
///
/// The user information is taken to end at the last `@` anywhere in `url`: a mistyped
/// password may hold an unescaped `/`, `?`, `#`, `:` or `@`, and hiding too much is harmless
/// where showing too little is not. Without any `@`, whatever follows a colon in the
/// authority is hidden to the end unless it is a port number: `amqp://user:password` with the
/// host forgotten shows no password either.
pub fn redact(url: &str) -> String {
    match secret_span(url) {
        Some((from, to)) => format!("{}***{}", &url[..from], &url[to..]),
        None => url.to_string(),
    }
}

/// Where the password may be in `url`, by [`redact`]'s rules, as a byte range.
fn secret_span(url: &str) -> Option<(usize, usize)> {
    let start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[start..];
    if let Some(at) = rest.rfind('@') {
        let colon = rest[..at].find(':')?;
        return Some((start + colon + 1, start + at));
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let colon = match authority.strip_prefix('[') {
        // An IPv6 literal: its port follows the bracket.
        Some(_) => authority.find("]:").map(|i| i + 1)?,
        None => authority.find(':')?,
    };
    let port = &authority[colon + 1..];
    if port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((start + colon + 1, url.len()))
}

/// Removes the password of `url` from a parser's message that may quote it, as written or
/// percent-decoded. Where [`redact`] could not tell where the password starts and ends,
/// every stretch of it between separators goes.
fn redact_in(message: &str, url: &str) -> String {
    let mut message = message.replace(url, &redact(url));
    let Some((from, to)) = secret_span(url) else {
        return message;
    };
    let span = &url[from..to];
    // ASCII, so one past each is a character boundary. Bounded: a URL is short, and past a
    // few dozen separators the whole span and its pieces are enough.
    let cuts: Vec<usize> = span
        .match_indices(['/', '?', '#', '@', ':'])
        .map(|(at, _)| at)
        .take(16)
        .collect();
    let starts = std::iter::once(0).chain(cuts.iter().map(|at| at + 1));
    let ends: Vec<usize> = cuts
        .iter()
        .copied()
        .chain(std::iter::once(span.len()))
        .collect();
    let mut secrets = vec![span.to_string()];
    for start in starts {
        for &end in &ends {
            // A stretch of one character would blank out half the message.
            if end >= start + 2 {
                secrets.push(span[start..end].to_string());
            }
        }
    }
    let decoded: Vec<String> = secrets
        .iter()
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    secrets.extend(decoded);
    // Longest first, so that a stretch never leaves the rest of a longer one behind.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for secret in secrets {
        message = message.replace(&secret, "***");
    }
    message
}

impl Settings {
    /// Every broker's address as it may be shown, in the order they are tried.
    pub fn endpoints(&self) -> String {
        let shown: Vec<&str> = self.brokers.iter().map(|b| b.endpoint.as_str()).collect();
        shown.join(", ")
    }
}

impl fmt::Debug for Settings {
    /// Shows the endpoints, never the password in a URI.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("endpoints", &self.endpoints())
            .field(
                "frame_max",
                &self.brokers.iter().map(|b| b.frame_max).collect::<Vec<_>>(),
            )
            .field("heartbeat", &self.brokers[0].uri.query.heartbeat)
            .field("shuffle", &self.shuffle)
            .field("connection_name", &self.connection_name)
            .field("declare", &self.declare)
            .field("queues", &self.queues)
            .field("connect_timeout", &self.connect_timeout)
            .field("publish_timeout", &self.publish_timeout)
            .field("reconnect_initial", &self.reconnect_initial)
            .field("reconnect_max", &self.reconnect_max)
            .field("tls", &self.tls)
            .finish()
    }
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
        assert_eq!(s.brokers[0].uri.authority.host, "127.0.0.1");
        assert_eq!(s.brokers[0].uri.authority.port, 5672);
        assert_eq!(s.brokers[0].uri.vhost, "/");
        assert_eq!(s.brokers[0].uri.query.heartbeat, Some(DEFAULT_HEARTBEAT_S));
        assert_eq!(s.declare, Declare::Durable);
        assert_eq!(s.connection_name, "golconde rabbit");
        assert_eq!(s.brokers[0].endpoint, "amqp://guest:***@127.0.0.1:5672/%2f");
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
        assert_eq!(s.brokers[0].uri.scheme, lapin::uri::AMQPScheme::AMQPS);
        assert_eq!(s.brokers[0].uri.authority.host, "broker.example");
        assert_eq!(s.brokers[0].uri.vhost, "prod");
        assert_eq!(s.brokers[0].uri.query.heartbeat, Some(5));
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
        assert_eq!(s.brokers[0].uri.authority.host, "10.1.2.3");
        let s = settings(r#"{"url": "amqp://[::1]:5672/%2f"}"#).unwrap();
        assert_eq!(s.brokers[0].uri.authority.host, "::1");
        assert_eq!(s.brokers[0].endpoint, "amqp://guest:***@[::1]:5672/%2f");
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
            "amqp://user:hun?ter2@host/",
            "amqp://user:hun#ter2@host/",
            "amqp://user:hun@ter2@host:99999/",
            "amqp://user:hun%3Fter2@host:notaport/",
            "amqp://user:hun:ter2@host:99999/",
            "amqp://user:hunter2",
            "amqp://user:hun/ter2",
            "amqp://user:hunter2@/vhost",
        ] {
            let message = config_error(&format!(r#"{{"url": "{url}"}}"#));
            assert!(!message.contains("hun"), "{url}: {message}");
            assert!(!message.contains("ter2"), "{url}: {message}");
            assert!(message.contains("user"), "{url}: {message}");
        }
    }

    #[test]
    fn redact_keeps_user_and_host() {
        let cases = [
            ("amqp://u:p@h:1/v", "amqp://u:***@h:1/v"),
            ("amqp://u@h/v", "amqp://u@h/v"),
            ("amqp://h/v@x", "amqp://h/v@x"),
            ("amqp://h:5672/v", "amqp://h:5672/v"),
            ("amqp://[::1]:5672/v", "amqp://[::1]:5672/v"),
            ("amqp://[::1]/v", "amqp://[::1]/v"),
            ("amqp://u:p@h/v?heartbeat=1", "amqp://u:***@h/v?heartbeat=1"),
            ("amqps://u:p@[::1]:5671/%2f", "amqps://u:***@[::1]:5671/%2f"),
            ("amqp://:p@h", "amqp://:***@h"),
            ("no scheme", "no scheme"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    /// Whatever the password holds, escaped or not, and wherever a mistyped URL puts it,
    /// none of it shows. Passwords are in capitals, and nothing else in the URLs is.
    #[test]
    fn redact_hides_every_part_of_any_password() {
        let passwords = [
            "S3CRET",
            "SE?CRET",
            "SE#CRET",
            "SE/CRET",
            "SE@CRET",
            "SE:CRET",
            "SE%40CRET",
            "SE%3F%23CRET",
            "SE CRET",
            "SÉ€CRET",
            "SE[CRET]",
            "@SECRET",
            "SECRET@",
            ":SECRET",
            "SE%CRET",
            "SE&CRET=1",
            "SEÇRET?X=1#Y",
            "SE//CR@ET//",
            "SE\\CRET",
        ];
        // And whether the user still shows.
        let forms = [
            ("amqp://user:{}@host:5672/%2f", true),
            ("amqps://user:{}@host/vhost?heartbeat=10", true),
            ("amqp://user:{}@[::1]:5672", true),
            ("amqp://user:{}@host", true),
            ("amqp://user:{}@", true),
            ("amqp://user:{}", true),
            ("amqp://user:{}/vhost", true),
            ("user:{}@host", true),
            ("amqp://user:{}@host/v?x=a@b", true),
            ("amqp://user:{}@host#frag", true),
            ("amqp:user:{}@host", false),
        ];
        for password in passwords {
            for (form, user) in forms {
                if !form.contains('@') && password.contains('@') {
                    // `amqp://user:SE@CRET` is a password `SE` for host `CRET`: nothing can
                    // tell it from a password holding `@` with the host forgotten.
                    continue;
                }
                let url = form.replace("{}", password);
                let shown = redact(&url);
                assert!(
                    !shown.chars().any(|c| c.is_uppercase()),
                    "{url} shown as {shown}"
                );
                assert_eq!(shown.contains("user"), user, "{url} shown as {shown}");
                let message = redact_in(&format!("cannot parse {url}: {password} is odd"), &url);
                assert!(
                    !message.chars().any(|c| c.is_uppercase()),
                    "{url}: {message}"
                );
            }
        }
    }

    #[test]
    fn frame_max_defaults_to_rabbitmq_s_and_may_be_raised_not_below_the_minimum() {
        let s = settings(r#"{"url": "amqp://h"}"#).unwrap();
        assert_eq!(s.brokers[0].frame_max, DEFAULT_FRAME_MAX);
        assert_eq!(s.brokers[0].uri.query.frame_max, Some(DEFAULT_FRAME_MAX));
        let s = settings(r#"{"url": "amqp://h?frame_max=0"}"#).unwrap();
        assert_eq!(
            s.brokers[0].uri.query.frame_max,
            Some(DEFAULT_FRAME_MAX),
            "0 is no limit"
        );
        let s = settings(r#"{"url": "amqp://h?frame_max=1048576"}"#).unwrap();
        assert_eq!(s.brokers[0].frame_max, 1_048_576);
        let message = config_error(r#"{"url": "amqp://u:pw@h?frame_max=1024"}"#);
        assert!(message.contains("frame_max=1024"), "{message}");
        assert!(!message.contains("pw"), "{message}");
    }

    #[test]
    fn settings_never_show_the_password_when_debugged() {
        let s = settings(r#"{"url": "amqp://u:hunter2@h"}"#).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"), "{s:?}");
    }

    #[test]
    fn url_takes_one_address_or_a_list_and_urls_is_the_same_key() {
        let one = settings(r#"{"url": "amqp://u:p@a:5672/%2f"}"#).unwrap();
        assert_eq!(one.brokers.len(), 1);
        assert!(one.shuffle);
        for key in ["url", "urls"] {
            let s = settings(&format!(
                r#"{{"{key}": ["amqp://u:p@a:5672/%2f", "amqp://u:q@b:5673/%2f",
                    "amqp://u:r@[::1]/%2f?frame_max=8192"], "heartbeat_s": 7,
                    "connect_timeout_ms": 900, "shuffle_urls": false}}"#
            ))
            .unwrap();
            let shown: Vec<&str> = s.brokers.iter().map(|b| b.endpoint.as_str()).collect();
            assert_eq!(
                shown,
                [
                    "amqp://u:***@a:5672/%2f",
                    "amqp://u:***@b:5673/%2f",
                    "amqp://u:***@[::1]:5672/%2f"
                ],
                "in the order given"
            );
            let nodes: Vec<&str> = s.brokers.iter().map(|b| b.node.as_str()).collect();
            assert_eq!(nodes, ["a:5672", "b:5673", "[::1]:5672"]);
            assert!(!s.shuffle);
            for b in &s.brokers {
                assert_eq!(
                    b.uri.query.heartbeat,
                    Some(7),
                    "every URL gets the heartbeat"
                );
                assert_eq!(b.uri.query.connection_timeout, Some(900));
            }
            assert_eq!(s.brokers[0].frame_max, DEFAULT_FRAME_MAX);
            assert_eq!(s.brokers[2].frame_max, 8192, "each URL its own frame_max");
            assert_eq!(
                s.endpoints(),
                "amqp://u:***@a:5672/%2f, amqp://u:***@b:5673/%2f, amqp://u:***@[::1]:5672/%2f"
            );
        }
        let s = settings(r#"{"urls": "amqp://h"}"#).unwrap();
        assert_eq!(s.brokers.len(), 1, "urls may be one string too");
    }

    #[test]
    fn url_lists_are_checked_item_by_item_without_showing_passwords() {
        let cases = [
            (
                r#"{"url": "amqp://a", "urls": ["amqp://b"]}"#,
                "`url` and `urls` are both given",
            ),
            (r#"{"url": []}"#, "`url` is an empty list"),
            (r#"{"urls": []}"#, "`urls` is an empty list"),
            (
                r#"{"url": ["amqp://a", 5]}"#,
                "`url` item 2: expected a string",
            ),
            (r#"{"urls": {"a": 1}}"#, "`urls`: expected a string"),
            (
                r#"{"url": ["amqp://u:hunter2@a", "http://u:hunter2@b"]}"#,
                "`url` item 2 \"http://u:***@b\": the scheme must be",
            ),
            (
                r#"{"urls": ["amqp://u:hunter2@a", "amqp://u:hunter2@b:99999/"]}"#,
                "`urls` item 2 \"amqp://u:***@b:99999/\"",
            ),
            (
                r#"{"url": ["amqp://u:hunter2@a", "amqp://u:hunter2@b?frame_max=10"]}"#,
                "`url` item 2 (amqp://u:***@b:5672/%2f) asks for frame_max=10",
            ),
            (
                r#"{"url": ["amqp://u:hunter2@a", "amqps://u:hunter2@b"]}"#,
                "`url` mixes amqp:// and amqps://",
            ),
            (
                r#"{"url": ["amqp://u:hunter2@a:5672", "amqp://u:other@a/%2f"]}"#,
                "`url` item 2 (amqp://u:***@a:5672/%2f) is listed twice",
            ),
            (
                r#"{"url": ["amqp://u:hunter2@a", "amqp://u:hunter2@b"],
                    "tls_ca_file": "/etc/ssl/certs/ssl-cert-snakeoil.pem"}"#,
                "is not amqps://",
            ),
            (
                r#"{"url": "amqp://a", "shuffle_urls": "yes"}"#,
                "`shuffle_urls`",
            ),
        ];
        for (json, expected) in cases {
            let message = config_error(json);
            assert!(message.contains(expected), "{json}: {message}");
            assert!(!message.contains("hunter2"), "{json}: {message}");
            assert!(!message.contains("other@"), "{json}: {message}");
        }
    }

    #[test]
    fn queue_keys_are_read() {
        let s = settings(
            r#"{"url": "amqp://h", "queue_type": "quorum",
                "arguments": {"x-delivery-limit": 5},
                "queues": {"golconde.users": {"queue_type": "stream"}}}"#,
        )
        .unwrap();
        use crate::queues::QueueType;
        assert_eq!(s.queues.spec("q").queue_type, Some(QueueType::Quorum));
        assert_eq!(
            s.queues.spec("golconde.users").queue_type,
            Some(QueueType::Stream)
        );
        let message = config_error(
            r#"{"url": "amqp://h", "declare": "passive", "arguments": {"x-max-length": 1}}"#,
        );
        assert!(message.contains("`arguments`"), "{message}");
    }
}

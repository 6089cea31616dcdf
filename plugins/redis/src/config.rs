//! The plugin's configuration section, and its validation into [`Settings`].
//!
//! Decoding goes through `golconde_plugin_support::config` so that a value of the wrong type is
//! reported with its key; every other check in [`Settings::from_config`] names its key
//! too. Nothing here touches the network: `golconde check` builds plugins offline. The
//! URL is read here rather than by a library, so that what it may hold is exactly what is
//! documented, and so that its password is never shown ([`Settings::target`]).
//!
//! May depend on: serde, `golconde-plugin-support` (configuration errors, TLS).

use std::{fmt, path::PathBuf, time::Duration};

use golconde_plugin_api::{Host, PluginError};
use serde::{Deserialize, Deserializer};

use crate::tls::{self, Files, Tls};

/// The configuration section as written; see the crate documentation for each key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_url")]
    url: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    consumer_name: Option<String>,
    #[serde(default)]
    declare: Declare,
    #[serde(default = "default_claim_idle")]
    claim_idle_ms: u64,
    #[serde(default = "default_max_entry")]
    max_entry_bytes: usize,
    #[serde(default = "default_max_headers")]
    max_headers: usize,
    #[serde(default)]
    maxlen: Option<u64>,
    #[serde(default)]
    wait_replicas: u32,
    #[serde(default = "default_wait_timeout")]
    wait_timeout_ms: u64,
    #[serde(default = "default_connect_timeout")]
    connect_timeout_ms: u64,
    #[serde(default = "default_response_timeout")]
    response_timeout_ms: u64,
    #[serde(default = "default_reconnect_initial")]
    reconnect_initial_ms: u64,
    #[serde(default = "default_reconnect_max")]
    reconnect_max_ms: u64,
    #[serde(default)]
    tls_ca_file: Option<PathBuf>,
    #[serde(default)]
    tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    tls_key_file: Option<PathBuf>,
    #[serde(default)]
    tls_server_name: Option<String>,
}

/// What a consumer does about its stream and consumer group.
#[derive(Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Declare {
    /// `XGROUP CREATE key group 0 MKSTREAM` when the group is missing.
    #[default]
    Create,
    /// The stream and the group must exist; a consumer refuses to start otherwise.
    Passive,
}

pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379/0";

fn default_url() -> String {
    DEFAULT_URL.into()
}
fn default_claim_idle() -> u64 {
    30_000
}
fn default_max_entry() -> usize {
    16 * 1024 * 1024
}
fn default_max_headers() -> usize {
    1024
}
fn default_wait_timeout() -> u64 {
    10_000
}
fn default_connect_timeout() -> u64 {
    10_000
}
fn default_response_timeout() -> u64 {
    10_000
}
fn default_reconnect_initial() -> u64 {
    100
}
fn default_reconnect_max() -> u64 {
    30_000
}

/// The decoded configuration section, not yet validated.
pub struct Config(RawConfig);

impl<'de> Deserialize<'de> for Config {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Config, D::Error> {
        golconde_plugin_support::config::naming_path(deserializer).map(Config)
    }
}

/// Validated settings, shared by every connection of one transport instance.
#[derive(Clone)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub db: u32,
    /// With a `rediss://` URL, how to wrap each connection.
    pub tls: Option<Tls>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `url` with its password masked, for messages.
    shown: String,
    /// The consumer name of this process (`consumer_name`, or `<hostname>-<pid>`).
    pub consumer_name: String,
    pub declare: Declare,
    pub claim_idle: Duration,
    pub max_entry_bytes: usize,
    pub max_headers: usize,
    pub maxlen: Option<u64>,
    pub wait_replicas: u32,
    pub wait_timeout: Duration,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
}

impl Settings {
    /// The server, for messages: `url` with its password masked.
    pub fn target(&self) -> &str {
        &self.shown
    }

    /// `host:port`, as connections are opened.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Passwords stay out of logs, including debug output.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("url", &self.shown)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("consumer_name", &self.consumer_name)
            .field("declare", &self.declare)
            .field("claim_idle", &self.claim_idle)
            .field("max_entry_bytes", &self.max_entry_bytes)
            .field("max_headers", &self.max_headers)
            .field("maxlen", &self.maxlen)
            .field("wait_replicas", &self.wait_replicas)
            .field("wait_timeout", &self.wait_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("reconnect_initial", &self.reconnect_initial)
            .field("reconnect_max", &self.reconnect_max)
            .finish()
    }
}

/// The smallest entry limit: room for a message's usual headers.
const MIN_ENTRY_BYTES: usize = 4096;
/// Redis's own default `proto-max-bulk-len`: no single value can be larger.
const MAX_ENTRY_BYTES: usize = 512 * 1024 * 1024;
/// The most headers an entry may be read with, whatever `max_headers` says.
const MAX_HEADERS: usize = 1 << 20;
/// Held entries are refreshed every third of `claim_idle_ms`; below this that would be
/// a busy loop.
const MIN_CLAIM_IDLE_MS: u64 = 30;

fn invalid(key: &str, why: impl fmt::Display) -> PluginError {
    PluginError::config(format!("`{key}`: {why}"))
}

fn positive(key: &str, ms: u64) -> Result<Duration, PluginError> {
    if ms == 0 {
        return Err(invalid(key, "must be at least 1 ms"));
    }
    Ok(Duration::from_millis(ms))
}

/// What `url` says.
#[derive(Debug, PartialEq, Eq)]
struct Url {
    tls: bool,
    host: String,
    port: u16,
    db: u32,
    username: Option<String>,
    password: Option<String>,
}

impl Url {
    /// The URL again, with the password masked.
    fn shown(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let user = match (&self.username, &self.password) {
            (Some(user), Some(_)) => format!("{user}:***@"),
            (None, Some(_)) => ":***@".to_string(),
            (Some(user), None) => format!("{user}@"),
            (None, None) => String::new(),
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{user}{host}:{}/{}", self.port, self.db)
    }
}

/// Reads `redis://[user[:password]@]host[:port][/db]` (`rediss://` for TLS). Nothing
/// else is accepted: options are the plugin's keys, not URL parameters.
fn parse_url(url: &str) -> Result<Url, String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("redis://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("rediss://") {
        (true, rest)
    } else {
        return Err("must start with `redis://` (or `rediss://` for TLS), e.g. \
             \"redis://127.0.0.1:6379/0\"; Unix sockets and Redis Cluster are not supported"
            .into());
    };
    if rest.contains(['?', '#']) {
        return Err(
            "has URL parameters (`?` or `#`), which are not read: use the \
                    transport's keys (`username`, `tls_ca_file`, ...) instead"
                .into(),
        );
    }
    // The password may hold `/` only percent-encoded, so the first `/` after the last
    // `@` ends the authority.
    let (userinfo, rest) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash + 1..]),
        None => (rest, ""),
    };
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or("has a `[` without its `]` around an IPv6 address")?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("has `{after}` after the IPv6 address")),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '@') {
        return Err("has no valid host".into());
    }
    let port = match port {
        None => 6379,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(format!("has no valid port (1-65535): `{port}`")),
        },
    };
    let db = match path {
        "" => 0,
        db => db
            .parse::<u32>()
            .map_err(|_| format!("has `/{db}` where the database number goes (e.g. `/0`)"))?,
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(info) => {
            let (user, password) = match info.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (info, None),
            };
            let user = decode(user).map_err(|e| format!("user name: {e}"))?;
            let password = password
                .map(decode)
                .transpose()
                .map_err(|e| format!("password: {e}"))?;
            (
                Some(user).filter(|u| !u.is_empty()),
                password.filter(|p| !p.is_empty()),
            )
        }
    };
    Ok(Url {
        tls,
        host: host.to_string(),
        port,
        db,
        username,
        password,
    })
}

/// Percent-decodes one part of the URL.
fn decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a `%` not followed by two hexadecimal digits")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent-encodes bytes that are not UTF-8".to_string())
}

/// The name this process consumes under unless `consumer_name` says otherwise:
/// `<hostname>-<pid>`, unique among the processes of a machine and, with distinct host
/// names, among machines.
fn default_consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "golconde".to_string());
    format!("{host}-{}", std::process::id())
}

/// Takes a credential from the URL or from its key, refusing both at once.
fn credential(
    key: &str,
    from_url: Option<String>,
    from_key: Option<String>,
) -> Result<Option<String>, PluginError> {
    match (from_url, from_key) {
        (Some(_), Some(_)) => Err(invalid(
            key,
            format!("is given both in `url` and as `{key}`; give it once"),
        )),
        (url, key) => Ok(url.or(key)),
    }
}

impl Settings {
    /// Validates the configuration; relative `tls_*` paths are resolved against the
    /// host's configuration folder when a host is given (as is).
    pub fn from_config(Config(raw): Config, host: Option<&Host>) -> Result<Settings, PluginError> {
        let url = parse_url(&raw.url).map_err(|why| invalid("url", why))?;
        let shown = url.shown();
        let username = credential("username", url.username, raw.username)?;
        let password = credential("password", url.password, raw.password)?;
        if username.is_some() && password.is_none() {
            return Err(invalid(
                "username",
                "is set without a password; Redis ACL users log in with both (`password`, or \
                 `user:password@` in `url`)",
            ));
        }
        let consumer_name = match raw.consumer_name {
            Some(name) if name.is_empty() || name.contains(char::is_control) => {
                return Err(invalid(
                    "consumer_name",
                    "must be a non-empty name without control characters",
                ))
            }
            Some(name) => name,
            None => default_consumer_name(),
        };
        if raw.claim_idle_ms < MIN_CLAIM_IDLE_MS {
            return Err(invalid(
                "claim_idle_ms",
                format!(
                    "{} is less than {MIN_CLAIM_IDLE_MS}; it must exceed the longest time a \
                     process holding entries may be unable to reach Redis (the default is 30000)",
                    raw.claim_idle_ms
                ),
            ));
        }
        if !(MIN_ENTRY_BYTES..=MAX_ENTRY_BYTES).contains(&raw.max_entry_bytes) {
            return Err(invalid(
                "max_entry_bytes",
                format!(
                    "{} is outside {MIN_ENTRY_BYTES}..={MAX_ENTRY_BYTES} (an entry that fits is \
                     held in memory whole; Redis takes no value over 512 MiB)",
                    raw.max_entry_bytes
                ),
            ));
        }
        if !(1..=MAX_HEADERS).contains(&raw.max_headers) {
            return Err(invalid(
                "max_headers",
                format!("{} is outside 1..={MAX_HEADERS}", raw.max_headers),
            ));
        }
        if raw.maxlen == Some(0) {
            return Err(invalid(
                "maxlen",
                "must be at least 1 (leave it out for no trimming)",
            ));
        }
        let wait_timeout = positive("wait_timeout_ms", raw.wait_timeout_ms)?;
        let connect_timeout = positive("connect_timeout_ms", raw.connect_timeout_ms)?;
        let response_timeout = positive("response_timeout_ms", raw.response_timeout_ms)?;
        let reconnect_initial = positive("reconnect_initial_ms", raw.reconnect_initial_ms)?;
        let reconnect_max = positive("reconnect_max_ms", raw.reconnect_max_ms)?;
        if reconnect_initial > reconnect_max {
            return Err(invalid(
                "reconnect_initial_ms",
                format!(
                    "{} is more than `reconnect_max_ms` ({})",
                    raw.reconnect_initial_ms, raw.reconnect_max_ms
                ),
            ));
        }
        let resolve = |key: &str, path: Option<PathBuf>| -> Result<Option<PathBuf>, PluginError> {
            match (path, host) {
                (Some(path), Some(host)) => host.resolve(key, &path).map(Some),
                (path, _) => Ok(path),
            }
        };
        let ca_file = resolve("tls_ca_file", raw.tls_ca_file)?;
        let cert_file = resolve("tls_cert_file", raw.tls_cert_file)?;
        let key_file = resolve("tls_key_file", raw.tls_key_file)?;
        let tls = if url.tls {
            let name = match &raw.tls_server_name {
                Some(name) => tls::server_name(name).map_err(|e| invalid("tls_server_name", e))?,
                None => tls::server_name(&url.host).map_err(|e| {
                    invalid(
                        "url",
                        format!(
                            "its host cannot be checked against a certificate: {e}; set \
                             `tls_server_name`"
                        ),
                    )
                })?,
            };
            let files = Files {
                ca_file: ca_file.as_deref(),
                cert_file: cert_file.as_deref(),
                key_file: key_file.as_deref(),
            };
            Some(Tls::new(files, name).map_err(PluginError::config)?)
        } else {
            let given = [
                ("tls_ca_file", ca_file.is_some()),
                ("tls_cert_file", cert_file.is_some()),
                ("tls_key_file", key_file.is_some()),
                ("tls_server_name", raw.tls_server_name.is_some()),
            ];
            if let Some((key, _)) = given.iter().find(|(_, set)| *set) {
                return Err(invalid(
                    key,
                    "is set but `url` starts with `redis://`; use `rediss://` to connect with TLS",
                ));
            }
            None
        };
        Ok(Settings {
            host: url.host,
            port: url.port,
            db: url.db,
            tls,
            username,
            password,
            shown,
            consumer_name,
            declare: raw.declare,
            claim_idle: Duration::from_millis(raw.claim_idle_ms),
            max_entry_bytes: raw.max_entry_bytes,
            max_headers: raw.max_headers,
            maxlen: raw.maxlen,
            wait_replicas: raw.wait_replicas,
            wait_timeout,
            connect_timeout,
            response_timeout,
            reconnect_initial,
            reconnect_max,
        })
    }
}

#[cfg(test)]
mod tests {
    use golconde_plugin_api::{sdk::parse_config, ErrorKind};

    use super::*;

    fn settings(json: &str) -> Result<Settings, PluginError> {
        Settings::from_config(parse_config::<Config>(json)?, None)
    }

    #[track_caller]
    fn refused(json: &str, key: &str) -> String {
        let err = settings(json)
            .err()
            .unwrap_or_else(|| panic!("{json} accepted"));
        assert_eq!(err.kind, ErrorKind::Config, "{err}");
        assert!(err.message.contains(key), "`{key}` not named in: {err}");
        err.message.to_string()
    }

    #[test]
    fn defaults_suit_a_local_redis() {
        let s = settings("{}").unwrap();
        assert_eq!((s.host.as_str(), s.port, s.db), ("127.0.0.1", 6379, 0));
        assert_eq!(s.target(), "redis://127.0.0.1:6379/0");
        assert!(s.tls.is_none() && s.username.is_none() && s.password.is_none());
        assert_eq!(s.declare, Declare::Create);
        assert_eq!(s.claim_idle, Duration::from_secs(30));
        assert_eq!(s.max_entry_bytes, 16 * 1024 * 1024);
        assert_eq!(s.max_headers, 1024);
        assert_eq!((s.maxlen, s.wait_replicas), (None, 0));
        assert_eq!(s.connect_timeout, Duration::from_secs(10));
        assert_eq!(s.response_timeout, Duration::from_secs(10));
        assert_eq!(s.reconnect_initial, Duration::from_millis(100));
        assert_eq!(s.reconnect_max, Duration::from_secs(30));
        let pid = format!("-{}", std::process::id());
        assert!(s.consumer_name.ends_with(&pid), "{}", s.consumer_name);
        assert!(s.consumer_name.len() > pid.len(), "{}", s.consumer_name);
    }

    #[test]
    fn every_key_is_read() {
        let s = settings(
            r#"{"url": "redis://cache.example:7000/3", "username": "app", "password": "secret",
                "consumer_name": "worker-a", "declare": "passive", "claim_idle_ms": 500,
                "max_entry_bytes": 4096, "max_headers": 7, "maxlen": 100000,
                "wait_replicas": 2, "wait_timeout_ms": 50, "connect_timeout_ms": 1,
                "response_timeout_ms": 2, "reconnect_initial_ms": 3, "reconnect_max_ms": 4}"#,
        )
        .unwrap();
        assert_eq!((s.host.as_str(), s.port, s.db), ("cache.example", 7000, 3));
        assert_eq!(s.address(), "cache.example:7000");
        assert_eq!(s.username.as_deref(), Some("app"));
        assert_eq!(s.password.as_deref(), Some("secret"));
        assert_eq!(s.consumer_name, "worker-a");
        assert_eq!(s.declare, Declare::Passive);
        assert_eq!(s.claim_idle, Duration::from_millis(500));
        assert_eq!((s.max_entry_bytes, s.max_headers), (4096, 7));
        assert_eq!((s.maxlen, s.wait_replicas), (Some(100_000), 2));
        assert_eq!(s.wait_timeout, Duration::from_millis(50));
        assert_eq!(s.connect_timeout, Duration::from_millis(1));
        assert_eq!(s.response_timeout, Duration::from_millis(2));
        assert_eq!(s.reconnect_initial, Duration::from_millis(3));
        assert_eq!(s.reconnect_max, Duration::from_millis(4));
        let debug = format!("{s:?}");
        assert!(!debug.contains("secret"), "{debug}");
    }

    #[test]
    fn urls_are_read_as_documented() {
        let url = parse_url("rediss://app:p%40ss%2Fw:rd@[::1]:6380/2").unwrap();
        assert_eq!(
            url,
            Url {
                tls: true,
                host: "::1".into(),
                port: 6380,
                db: 2,
                username: Some("app".into()),
                password: Some("p@ss/w:rd".into()),
            }
        );
        assert_eq!(url.shown(), "rediss://app:***@[::1]:6380/2");
        let url = parse_url("redis://:only-password@localhost").unwrap();
        assert_eq!(url.username, None);
        assert_eq!(url.password.as_deref(), Some("only-password"));
        assert_eq!(url.shown(), "redis://:***@localhost:6379/0");
        assert_eq!(parse_url("redis://h/").unwrap().db, 0);
        for (bad, why) in [
            ("http://h", "must start with `redis://`"),
            ("unix:///tmp/redis.sock", "must start with `redis://`"),
            ("redis://h:0", "no valid port"),
            ("redis://h:99999", "no valid port"),
            ("redis://:6379", "no valid host"),
            ("redis://h/x", "database number"),
            ("redis://h/0?protocol=resp3", "URL parameters"),
            ("rediss://h/#insecure", "URL parameters"),
            ("redis://[::1", "without its `]`"),
            ("redis://u:%zz@h", "password: a `%` not followed"),
        ] {
            let error = parse_url(bad).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }

    #[test]
    fn the_password_never_shows() {
        let s = settings(r#"{"url": "redis://app:hunter2@h:1/0"}"#).unwrap();
        assert_eq!(s.target(), "redis://app:***@h:1/0");
        assert!(!format!("{s:?}").contains("hunter2"));
        let message = refused(
            r#"{"url": "redis://app:hunter2@h:1/0", "password": "other"}"#,
            "`password`",
        );
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn bad_values_are_refused_by_key() {
        refused(r#"{"urll": "redis://h"}"#, "urll");
        refused(r#"{"url": "h:6379"}"#, "`url`");
        refused(r#"{"url": 6379}"#, "`url`");
        refused(r#"{"username": "app"}"#, "`username`");
        refused(
            r#"{"url": "redis://a:b@h", "username": "c", "password": "d"}"#,
            "`username`",
        );
        refused(r#"{"consumer_name": ""}"#, "`consumer_name`");
        refused(r#"{"consumer_name": "a\nb"}"#, "`consumer_name`");
        let message = refused(r#"{"declare": "maybe"}"#, "`declare`");
        assert!(message.contains("passive"), "{message}");
        refused(r#"{"claim_idle_ms": 10}"#, "`claim_idle_ms`");
        refused(r#"{"max_entry_bytes": 100}"#, "`max_entry_bytes`");
        refused(r#"{"max_entry_bytes": 1073741824}"#, "`max_entry_bytes`");
        refused(r#"{"max_headers": 0}"#, "`max_headers`");
        refused(r#"{"maxlen": 0}"#, "`maxlen`");
        refused(r#"{"maxlen": -5}"#, "`maxlen`");
        refused(r#"{"wait_replicas": "all"}"#, "`wait_replicas`");
        refused(r#"{"wait_timeout_ms": 0}"#, "`wait_timeout_ms`");
        refused(r#"{"connect_timeout_ms": 0}"#, "`connect_timeout_ms`");
        refused(
            r#"{"response_timeout_ms": "soon"}"#,
            "`response_timeout_ms`",
        );
        refused(
            r#"{"reconnect_initial_ms": 5000, "reconnect_max_ms": 100}"#,
            "`reconnect_initial_ms`",
        );
        refused(
            r#"{"tls_ca_file": "/etc/ssl/certs/ssl-cert-snakeoil.pem"}"#,
            "use `rediss://`",
        );
        refused(r#"{"tls_server_name": "x"}"#, "`tls_server_name`");
        refused(
            r#"{"url": "rediss://h", "tls_ca_file": "/nonexistent.pem"}"#,
            "tls_ca_file",
        );
        refused(
            r#"{"url": "rediss://10.0.0.1", "tls_server_name": "not a name!"}"#,
            "`tls_server_name`",
        );
    }

    #[test]
    fn tls_checks_the_host_of_the_url_unless_a_name_is_given() {
        let s = settings(r#"{"url": "rediss://cache.example:6380"}"#).unwrap();
        assert!(format!("{:?}", s.tls).contains("cache.example"));
        let s = settings(r#"{"url": "rediss://10.0.0.1", "tls_server_name": "cache.internal"}"#)
            .unwrap();
        assert!(format!("{:?}", s.tls).contains("cache.internal"));
    }

    #[test]
    fn relative_files_are_resolved_against_the_configuration_folder() {
        let host = golconde_plugin_api::testing::host("t");
        let error = Settings::from_config(
            parse_config::<Config>(r#"{"url": "rediss://h", "tls_ca_file": "nowhere/ca.pem"}"#)
                .unwrap(),
            Some(&host),
        )
        .unwrap_err();
        let folder = std::env::current_dir().unwrap();
        assert!(
            error
                .message
                .contains(&folder.join("nowhere/ca.pem").display().to_string()),
            "{error}"
        );
    }
}

//! The plugin's configuration section, and its validation into [`Settings`].
//!
//! Decoding goes through `golconde_plugin_support::config` so that a value of the wrong type is
//! reported with its key (`heartbeat_ms: invalid type ...`), not just as a type mismatch;
//! every other check in [`Settings::from_config`] names its key too. Nothing here touches
//! the network: `golconde check` builds plugins offline.
//!
//! One broker (`address`) or several (`addresses`) become the same thing, a list of
//! [`Broker`]s, so that the rest of the plugin has one way to connect.

use std::{fmt, path::PathBuf, time::Duration};

use golconde_plugin_api::PluginError;
use rustls::pki_types::ServerName;
use serde::{Deserialize, Deserializer};

use crate::tls::{self, Files, Tls};

/// The configuration section as written; see the crate documentation for each key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    addresses: Option<Vec<String>>,
    #[serde(default = "default_shuffle")]
    shuffle_addresses: bool,
    #[serde(default)]
    login: Option<String>,
    #[serde(default)]
    passcode: Option<String>,
    #[serde(default = "default_virtual_host")]
    virtual_host: String,
    #[serde(default = "default_heartbeat")]
    heartbeat_ms: [u64; 2],
    #[serde(default = "default_connect_timeout")]
    connect_timeout_ms: u64,
    #[serde(default = "default_receipt_timeout")]
    receipt_timeout_ms: u64,
    #[serde(default = "default_max_frame")]
    max_frame_bytes: usize,
    #[serde(default = "default_max_headers")]
    max_headers: usize,
    #[serde(default = "default_reconnect_initial")]
    reconnect_initial_ms: u64,
    #[serde(default = "default_reconnect_max")]
    reconnect_max_ms: u64,
    #[serde(default = "default_prefetch_header")]
    prefetch_header: String,
    #[serde(default)]
    tls: bool,
    #[serde(default)]
    tls_ca_file: Option<PathBuf>,
    #[serde(default)]
    tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    tls_key_file: Option<PathBuf>,
    #[serde(default)]
    tls_server_name: Option<String>,
}

fn default_address() -> String {
    "127.0.0.1:61613".into()
}
fn default_shuffle() -> bool {
    true
}
fn default_virtual_host() -> String {
    "/".into()
}
fn default_heartbeat() -> [u64; 2] {
    [10_000, 10_000]
}
fn default_connect_timeout() -> u64 {
    10_000
}
fn default_receipt_timeout() -> u64 {
    30_000
}
fn default_max_frame() -> usize {
    16 * 1024 * 1024
}
fn default_max_headers() -> usize {
    1024
}
fn default_reconnect_initial() -> u64 {
    100
}
fn default_reconnect_max() -> u64 {
    30_000
}
fn default_prefetch_header() -> String {
    "prefetch-count".into()
}

/// The decoded configuration section, not yet validated.
pub struct Config(RawConfig);

impl<'de> Deserialize<'de> for Config {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Config, D::Error> {
        golconde_plugin_support::config::naming_path(deserializer).map(Config)
    }
}

/// One broker to connect to.
#[derive(Clone, Debug)]
pub struct Broker {
    /// `host:port`, as configured.
    pub address: String,
    /// With `tls = true`, how to wrap the connection: the certificate is checked against
    /// `tls_server_name`, or else this broker's own host.
    pub tls: Option<Tls>,
}

/// Validated settings, shared by every connection of one transport instance.
#[derive(Clone)]
pub struct Settings {
    /// `address`, or `addresses` in the order written (see [`Settings::target`]).
    pub brokers: Vec<Broker>,
    /// Whether the transport shuffles `brokers` before using them (`shuffle_addresses`).
    pub shuffle: bool,
    pub login: Option<String>,
    pub passcode: Option<String>,
    pub virtual_host: String,
    /// What we offer in CONNECT's `heart-beat`: send every `.0` ms, want to hear every
    /// `.1` ms (0 = never).
    pub heartbeat: (u64, u64),
    pub connect_timeout: Duration,
    pub receipt_timeout: Duration,
    pub max_frame_bytes: usize,
    /// The most header lines of a frame kept; see [`crate::codec`].
    pub max_headers: usize,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    /// The SUBSCRIBE header carrying the prefetch; `None` sends none.
    pub prefetch_header: Option<String>,
}

impl Settings {
    /// The brokers, for messages: `127.0.0.1:61613`, or `[a:61613, b:61613]` for several.
    pub fn target(&self) -> String {
        match self.brokers.as_slice() {
            [one] => one.address.clone(),
            several => format!(
                "[{}]",
                several
                    .iter()
                    .map(|b| b.address.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// Passwords stay out of logs, including debug output.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("brokers", &self.brokers)
            .field("shuffle", &self.shuffle)
            .field("login", &self.login)
            .field("passcode", &self.passcode.as_ref().map(|_| "<redacted>"))
            .field("virtual_host", &self.virtual_host)
            .field("heartbeat", &self.heartbeat)
            .field("connect_timeout", &self.connect_timeout)
            .field("receipt_timeout", &self.receipt_timeout)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("max_headers", &self.max_headers)
            .field("reconnect_initial", &self.reconnect_initial)
            .field("reconnect_max", &self.reconnect_max)
            .field("prefetch_header", &self.prefetch_header)
            .finish()
    }
}

/// The smallest frame limit that still leaves room for a broker's CONNECTED and ERROR
/// frames.
const MIN_FRAME_BYTES: usize = 4096;
/// The largest frame limit: a frame that fits is held in memory whole.
const MAX_FRAME_BYTES: usize = 1 << 30;

fn invalid(key: &str, why: impl fmt::Display) -> PluginError {
    PluginError::config(format!("`{key}`: {why}"))
}

/// CONNECT is sent without escaping, so its values cannot hold a line break.
fn check_handshake_value(key: &str, value: &str) -> Result<(), PluginError> {
    if value.contains(['\r', '\n', '\0']) {
        return Err(invalid(
            key,
            "must not contain a line break or NUL (STOMP sends it unescaped in CONNECT)",
        ));
    }
    Ok(())
}

/// Checks one `host:port` of `key` (`address` or `addresses`).
fn check_address(key: &str, address: &str) -> Result<(), PluginError> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| invalid(key, format!("`{address}` is not host:port")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(invalid(key, format!("`{address}` has no valid host")));
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(()),
        _ => Err(invalid(
            key,
            format!("`{address}` has no valid port (1-65535)"),
        )),
    }
}

/// `address` or `addresses`, as a list of `host:port`, and the key it came from.
fn addresses(
    address: Option<String>,
    addresses: Option<Vec<String>>,
) -> Result<(&'static str, Vec<String>), PluginError> {
    let (key, list) = match (address, addresses) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "addresses",
                "is given together with `address`; give one of them (`address` for one \
                 broker, `addresses` for several)",
            ))
        }
        (None, Some(list)) if list.is_empty() => {
            return Err(invalid(
                "addresses",
                "is empty; list at least one broker as \"host:port\" (or leave it out for \
                 `address`, by default 127.0.0.1:61613)",
            ))
        }
        (None, Some(list)) => ("addresses", list),
        (Some(one), None) => ("address", vec![one]),
        (None, None) => ("address", vec![default_address()]),
    };
    for address in &list {
        check_address(key, address)?;
    }
    Ok((key, list))
}

/// The name a broker's certificate must be for: `tls_server_name`, or else the host of
/// its address.
fn server_name(
    configured: Option<&str>,
    key: &str,
    address: &str,
) -> Result<ServerName<'static>, PluginError> {
    match configured {
        Some(name) => tls::server_name(name).map_err(|e| invalid("tls_server_name", e)),
        None => {
            let host = address.rsplit_once(':').map_or("", |(host, _)| host);
            tls::server_name(host).map_err(|e| {
                invalid(
                    key,
                    format!(
                        "the host of `{address}` cannot be checked against a certificate: \
                         {e}; set `tls_server_name`"
                    ),
                )
            })
        }
    }
}

fn positive(key: &str, ms: u64) -> Result<Duration, PluginError> {
    if ms == 0 {
        return Err(invalid(key, "must be at least 1 ms"));
    }
    Ok(Duration::from_millis(ms))
}

impl Settings {
    pub fn from_config(Config(raw): Config) -> Result<Settings, PluginError> {
        let (address_key, addresses) = addresses(raw.address, raw.addresses)?;
        for (key, value) in [
            ("login", raw.login.as_deref()),
            ("passcode", raw.passcode.as_deref()),
            ("virtual_host", Some(raw.virtual_host.as_str())),
        ] {
            if let Some(value) = value {
                check_handshake_value(key, value)?;
            }
        }
        if raw.virtual_host.is_empty() {
            return Err(invalid(
                "virtual_host",
                "must not be empty (RabbitMQ's default virtual host is `/`)",
            ));
        }
        let connect_timeout = positive("connect_timeout_ms", raw.connect_timeout_ms)?;
        let receipt_timeout = positive("receipt_timeout_ms", raw.receipt_timeout_ms)?;
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
        if !(MIN_FRAME_BYTES..=MAX_FRAME_BYTES).contains(&raw.max_frame_bytes) {
            return Err(invalid(
                "max_frame_bytes",
                format!(
                    "{} is outside {MIN_FRAME_BYTES}..={MAX_FRAME_BYTES} (a frame that fits is \
                     held in memory whole)",
                    raw.max_frame_bytes
                ),
            ));
        }
        if raw.max_headers == 0 {
            return Err(invalid(
                "max_headers",
                "must be at least 1 (a message past it is delivered marked, not dropped)",
            ));
        }
        let prefetch_header = match raw.prefetch_header.as_str() {
            "" => None,
            name if name.contains([':', '\r', '\n']) => {
                return Err(invalid(
                    "prefetch_header",
                    format!("`{name}` is not a header name"),
                ))
            }
            name => Some(name.to_string()),
        };
        let brokers = if raw.tls {
            let name =
                |address: &str| server_name(raw.tls_server_name.as_deref(), address_key, address);
            // The files are read once; each broker gets its own name to check.
            let tls = Tls::new(
                Files {
                    ca_file: raw.tls_ca_file.as_deref(),
                    cert_file: raw.tls_cert_file.as_deref(),
                    key_file: raw.tls_key_file.as_deref(),
                },
                name(&addresses[0])?,
            )
            .map_err(PluginError::config)?;
            addresses
                .into_iter()
                .map(|address| {
                    Ok(Broker {
                        tls: Some(tls.for_server(name(&address)?)),
                        address,
                    })
                })
                .collect::<Result<Vec<_>, PluginError>>()?
        } else {
            let given = [
                ("tls_ca_file", raw.tls_ca_file.is_some()),
                ("tls_cert_file", raw.tls_cert_file.is_some()),
                ("tls_key_file", raw.tls_key_file.is_some()),
                ("tls_server_name", raw.tls_server_name.is_some()),
            ];
            if let Some((key, _)) = given.iter().find(|(_, set)| *set) {
                return Err(invalid(
                    key,
                    "is set but `tls` is not; set `tls = true` to connect with TLS",
                ));
            }
            addresses
                .into_iter()
                .map(|address| Broker { address, tls: None })
                .collect()
        };
        Ok(Settings {
            brokers,
            shuffle: raw.shuffle_addresses,
            login: raw.login,
            passcode: raw.passcode,
            virtual_host: raw.virtual_host,
            heartbeat: (raw.heartbeat_ms[0], raw.heartbeat_ms[1]),
            connect_timeout,
            receipt_timeout,
            max_frame_bytes: raw.max_frame_bytes,
            max_headers: raw.max_headers,
            reconnect_initial,
            reconnect_max,
            prefetch_header,
        })
    }
}

#[cfg(test)]
mod tests {
    use golconde_plugin_api::{sdk::parse_config, ErrorKind};

    use super::*;

    fn settings(json: &str) -> Result<Settings, PluginError> {
        Settings::from_config(parse_config::<Config>(json)?)
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

    fn addresses_of(s: &Settings) -> Vec<&str> {
        s.brokers.iter().map(|b| b.address.as_str()).collect()
    }

    #[test]
    fn tls_checks_the_broker_by_the_host_of_the_address() {
        let s = settings(r#"{"address": "broker.example:61614", "tls": true}"#).unwrap();
        assert!(format!("{s:?}").contains("broker.example"), "{s:?}");
        let s = settings(
            r#"{"address": "10.0.0.1:61614", "tls": true, "tls_server_name": "mq.internal"}"#,
        )
        .unwrap();
        assert!(format!("{s:?}").contains("mq.internal"), "{s:?}");
        assert!(settings("{}").unwrap().brokers[0].tls.is_none());
    }

    #[test]
    fn tls_checks_each_broker_by_its_own_host_unless_a_name_is_given() {
        let s = settings(
            r#"{"addresses": ["mq-a.example:61614", "10.0.0.2:61614", "[::1]:61614"],
                "tls": true}"#,
        )
        .unwrap();
        let names: Vec<String> = s
            .brokers
            .iter()
            .map(|b| format!("{:?}", b.tls.as_ref().expect("tls")))
            .collect();
        assert!(names[0].contains("mq-a.example"), "{names:?}");
        assert!(names[1].contains("10.0.0.2"), "{names:?}");
        assert!(names[2].contains("::1"), "{names:?}");
        let s = settings(
            r#"{"addresses": ["10.0.0.1:61614", "10.0.0.2:61614"], "tls": true,
                "tls_server_name": "mq.internal"}"#,
        )
        .unwrap();
        for broker in &s.brokers {
            let tls = format!("{:?}", broker.tls.as_ref().expect("tls"));
            assert!(
                tls.contains("mq.internal") && !tls.contains("10.0.0"),
                "{tls}"
            );
        }
        // A host no certificate can be for is refused by the key it came from.
        let message = refused(
            r#"{"addresses": ["ok.example:1", "bad_host!:1"], "tls": true}"#,
            "`addresses`",
        );
        assert!(message.contains("`bad_host!:1`"), "{message}");
        assert!(message.contains("tls_server_name"), "{message}");
        refused(
            r#"{"address": "10.0.0.1:1", "tls": true, "tls_server_name": "not a name!"}"#,
            "`tls_server_name`",
        );
    }

    #[test]
    fn one_address_or_several() {
        let s = settings(r#"{"addresses": ["a.example:61613", "b.example:61614"]}"#).unwrap();
        assert_eq!(addresses_of(&s), ["a.example:61613", "b.example:61614"]);
        assert!(s.shuffle);
        assert_eq!(s.target(), "[a.example:61613, b.example:61614]");
        let s = settings(r#"{"addresses": ["a:1", "b:1"], "shuffle_addresses": false}"#).unwrap();
        assert!(!s.shuffle);
        refused(r#"{"shuffle_addresses": "no"}"#, "`shuffle_addresses`");
        let s = settings(r#"{"addresses": ["a.example:61613"]}"#).unwrap();
        assert_eq!(addresses_of(&s), ["a.example:61613"]);
        assert_eq!(s.target(), "a.example:61613");
        let s = settings(r#"{"address": "a.example:61613"}"#).unwrap();
        assert_eq!(s.target(), "a.example:61613");

        let both = refused(
            r#"{"address": "a:1", "addresses": ["b:1"]}"#,
            "together with `address`",
        );
        assert!(both.contains("`addresses`"), "{both}");
        refused(r#"{"addresses": []}"#, "`addresses`: is empty");
        // Each one is checked as `address` is, and the error names `addresses`.
        for bad in [
            r#"["a:1", "nohost"]"#,
            r#"["a:1", "host:0"]"#,
            r#"[":61613"]"#,
            r#"["a:1", "b c:1"]"#,
            r#"["a:1", 61613]"#,
            r#""a:1""#,
        ] {
            refused(&format!(r#"{{"addresses": {bad}}}"#), "`addresses");
        }
        let message = refused(r#"{"addresses": ["a:1", "host:0"]}"#, "addresses");
        assert!(message.contains("`host:0` has no valid port"), "{message}");
    }

    #[test]
    fn defaults_suit_a_local_rabbitmq() {
        let s = settings("{}").unwrap();
        assert_eq!(addresses_of(&s), ["127.0.0.1:61613"]);
        assert_eq!(s.virtual_host, "/");
        assert_eq!(s.heartbeat, (10_000, 10_000));
        assert_eq!(s.prefetch_header.as_deref(), Some("prefetch-count"));
        assert_eq!(s.max_frame_bytes, 16 * 1024 * 1024);
        assert_eq!(s.max_headers, 1024);
        assert!(s.login.is_none() && s.passcode.is_none());
    }

    #[test]
    fn every_key_is_read() {
        let s = settings(
            r#"{"address": "mq.example:61614", "login": "app", "passcode": "secret",
                "virtual_host": "prod", "heartbeat_ms": [0, 5000], "connect_timeout_ms": 1,
                "receipt_timeout_ms": 2, "max_frame_bytes": 4096, "max_headers": 7,
                "reconnect_initial_ms": 3,
                "reconnect_max_ms": 4, "prefetch_header": "activemq.prefetchSize"}"#,
        )
        .unwrap();
        assert_eq!(addresses_of(&s), ["mq.example:61614"]);
        assert_eq!(s.login.as_deref(), Some("app"));
        assert_eq!(s.virtual_host, "prod");
        assert_eq!(s.heartbeat, (0, 5000));
        assert_eq!(s.connect_timeout, Duration::from_millis(1));
        assert_eq!(s.receipt_timeout, Duration::from_millis(2));
        assert_eq!(s.max_frame_bytes, 4096);
        assert_eq!(s.max_headers, 7);
        assert_eq!(s.reconnect_initial, Duration::from_millis(3));
        assert_eq!(s.reconnect_max, Duration::from_millis(4));
        assert_eq!(s.prefetch_header.as_deref(), Some("activemq.prefetchSize"));
        let debug = format!("{s:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert_eq!(
            settings(r#"{"prefetch_header": ""}"#)
                .unwrap()
                .prefetch_header,
            None
        );
    }

    #[test]
    fn bad_values_are_refused_by_key() {
        refused(r#"{"adress": "x:1"}"#, "adress");
        refused(r#"{"address": "nohost"}"#, "address");
        refused(
            r#"{"tls_ca_file": "/etc/ssl/certs/ssl-cert-snakeoil.pem"}"#,
            "set `tls = true`",
        );
        refused(
            r#"{"tls": true, "tls_ca_file": "/nonexistent.pem"}"#,
            "tls_ca_file",
        );
        refused(r#"{"tls": "yes"}"#, "`tls`");
        refused(r#"{"address": "host:0"}"#, "address");
        refused(r#"{"address": ":61613"}"#, "address");
        refused(r#"{"address": 61613}"#, "address");
        refused(r#"{"heartbeat_ms": 1000}"#, "heartbeat_ms");
        refused(r#"{"heartbeat_ms": [1, 2, 3]}"#, "heartbeat_ms");
        refused(r#"{"connect_timeout_ms": "soon"}"#, "connect_timeout_ms");
        refused(r#"{"receipt_timeout_ms": 0}"#, "receipt_timeout_ms");
        refused(r#"{"max_frame_bytes": 100}"#, "max_frame_bytes");
        refused(r#"{"max_frame_bytes": 4294967296}"#, "max_frame_bytes");
        refused(r#"{"max_headers": 0}"#, "max_headers");
        refused(r#"{"max_headers": -1}"#, "max_headers");
        refused(
            r#"{"reconnect_initial_ms": 5000, "reconnect_max_ms": 100}"#,
            "reconnect_initial_ms",
        );
        refused(r#"{"passcode": "a\nb"}"#, "passcode");
        refused(r#"{"virtual_host": ""}"#, "virtual_host");
        refused(r#"{"prefetch_header": "a:b"}"#, "prefetch_header");
        let message = refused(r#"{"login": ["x"]}"#, "login");
        assert!(message.contains("`login`"), "{message}");
    }
}

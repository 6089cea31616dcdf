//! The plugin's configuration section, and its validation into [`Settings`].
//!
//! Decoding goes through `golconde_plugin_support::config`, so that a value of the wrong type is reported
//! with its key (`ack_wait_ms: invalid type ...`); every other check in
//! [`Settings::from_config`] names its key too. Files named by the section (credentials,
//! certificates) are read and checked here, so that a wrong path is a configuration error
//! when the plugin is built, not a failed connection later. Nothing here touches the
//! network: `golconde check` builds plugins offline.
//!
//! May depend on: serde, `golconde-plugin-support`, async-nats' address and rustls types,
//! `nkeys` (checking a seed), `rustls-pki-types` (reading PEM files).

use std::{
    fmt, fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use async_nats::{
    rustls::{self, ClientConfig, RootCertStore},
    ServerAddr,
};
use golconde_plugin_api::{Host, PluginError};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Deserializer};

/// The configuration section as written; see the crate documentation for each key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_url")]
    url: String,
    #[serde(default = "default_declare")]
    declare: String,
    #[serde(default)]
    stream: Option<String>,
    #[serde(default = "default_retention")]
    retention: String,
    #[serde(default = "default_replicas")]
    stream_replicas: u64,
    #[serde(default = "default_duplicate_window")]
    duplicate_window_s: u64,
    #[serde(default)]
    max_bytes: Option<u64>,
    #[serde(default)]
    max_age_s: Option<u64>,
    #[serde(default = "default_ack_wait")]
    ack_wait_ms: u64,
    #[serde(default = "default_max_deliver")]
    max_deliver: i64,
    #[serde(default)]
    max_ack_pending: Option<u64>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    creds_file: Option<PathBuf>,
    #[serde(default)]
    nkey_seed_file: Option<PathBuf>,
    #[serde(default)]
    tls: bool,
    #[serde(default)]
    tls_ca_file: Option<PathBuf>,
    #[serde(default)]
    tls_cert_file: Option<PathBuf>,
    #[serde(default)]
    tls_key_file: Option<PathBuf>,
    #[serde(default)]
    tls_first: bool,
    #[serde(default = "default_connect_timeout")]
    connect_timeout_ms: u64,
    #[serde(default = "default_request_timeout")]
    request_timeout_ms: u64,
    #[serde(default = "default_reconnect_initial")]
    reconnect_initial_ms: u64,
    #[serde(default = "default_reconnect_max")]
    reconnect_max_ms: u64,
}

fn default_url() -> String {
    "nats://127.0.0.1:4222".into()
}
fn default_declare() -> String {
    "create".into()
}
fn default_retention() -> String {
    "workqueue".into()
}
fn default_replicas() -> u64 {
    1
}
fn default_duplicate_window() -> u64 {
    120
}
fn default_ack_wait() -> u64 {
    30_000
}
fn default_max_deliver() -> i64 {
    -1
}
fn default_connect_timeout() -> u64 {
    10_000
}
fn default_request_timeout() -> u64 {
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

/// `declare`: whether streams and consumers are made when missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Declare {
    /// Create what is missing, use what exists.
    Create,
    /// Use only what exists; a missing stream or consumer is a configuration error.
    Passive,
}

/// `retention`: how a stream the plugin creates keeps its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// A message is removed once acknowledged: queue semantics, one consumer per subject.
    WorkQueue,
    /// Messages stay until a limit (`max_bytes`, `max_age_s`) removes them.
    Limits,
    /// A message is removed once every consumer acknowledged it.
    Interest,
}

/// How the plugin authenticates.
#[derive(Clone)]
pub enum Auth {
    None,
    UserPassword {
        user: String,
        password: String,
    },
    Token(String),
    /// A `.creds` file's contents (a user JWT and its seed) and where it was read from.
    Credentials {
        contents: String,
        path: PathBuf,
    },
    /// An NKey seed and where it was read from.
    NKey {
        seed: String,
        path: PathBuf,
    },
}

/// Credentials stay out of logs, including debug output.
impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::UserPassword { user, .. } => {
                write!(f, "UserPassword {{ user: {user:?}, password: <redacted> }}")
            }
            Auth::Token(_) => f.write_str("Token(<redacted>)"),
            Auth::Credentials { path, .. } => write!(f, "Credentials({})", path.display()),
            Auth::NKey { path, .. } => write!(f, "NKey({})", path.display()),
        }
    }
}

/// TLS for the connections: the client configuration built from the `tls_*` keys.
#[derive(Clone)]
pub struct Tls {
    pub config: Arc<ClientConfig>,
    /// `tls_first`: the TLS handshake before the server's INFO.
    pub first: bool,
    /// A client certificate is presented.
    pub identity: bool,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("first", &self.first)
            .field("identity", &self.identity)
            .finish()
    }
}

/// Validated settings, shared by every connection of one transport instance.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The servers of `url`, in the order written.
    pub servers: Vec<ServerAddr>,
    /// `url` without credentials, for messages.
    pub target: String,
    pub declare: Declare,
    /// `stream`: the stream created for subjects no stream captures.
    pub stream: Option<String>,
    pub retention: Retention,
    pub replicas: usize,
    pub duplicate_window: Duration,
    pub max_bytes: Option<i64>,
    pub max_age: Option<Duration>,
    pub ack_wait: Duration,
    pub max_deliver: i64,
    pub max_ack_pending: Option<i64>,
    pub auth: Auth,
    pub tls: Option<Tls>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
}

fn invalid(key: &str, why: impl fmt::Display) -> PluginError {
    PluginError::config(format!("`{key}`: {why}"))
}

fn positive_ms(key: &str, ms: u64) -> Result<Duration, PluginError> {
    if ms == 0 {
        return Err(invalid(key, "must be at least 1 ms"));
    }
    Ok(Duration::from_millis(ms))
}

/// The most replicas a JetStream stream may have.
const MAX_REPLICAS: u64 = 5;
/// The shortest `ack_wait_ms`: deliveries held by a consumer are kept alive three times per
/// `ack_wait`, which must leave room for a round trip.
const MIN_ACK_WAIT_MS: u64 = 100;

/// Whether JetStream accepts `name` as a stream or consumer name: printable, no
/// whitespace, none of `.`, `*`, `>`, `/`, `\`, and short enough to be a file name.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !".*>/\\".contains(c))
}

/// `url` as a list of servers: one URL, or several separated by commas. Credentials in
/// a user part are taken out by [`url_credentials`] before the addresses are used, so that
/// no log of the client's shows them.
fn servers(url: &str) -> Result<(Vec<ServerAddr>, String), PluginError> {
    let mut servers = Vec::new();
    let mut shown = Vec::new();
    for part in url.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(invalid(
                "url",
                "has an empty entry; give `nats://host:port`, or several separated by commas",
            ));
        }
        let server: ServerAddr = part.parse().map_err(|e| {
            invalid(
                "url",
                format!("`{}` is not a NATS server URL: {e}", redact(part)),
            )
        })?;
        match server.scheme() {
            "nats" | "tls" => {}
            other => {
                return Err(invalid(
                    "url",
                    format!(
                        "`{}`: the `{other}` scheme (websocket) is not supported; use nats:// \
                         or tls://",
                        redact(part)
                    ),
                ))
            }
        }
        if server.host().is_empty() {
            return Err(invalid("url", format!("`{}` has no host", redact(part))));
        }
        shown.push(format!(
            "{}://{}:{}",
            server.scheme(),
            server.host(),
            server.port()
        ));
        servers.push(server);
    }
    let target = match shown.as_slice() {
        [one] => one.clone(),
        several => format!("[{}]", several.join(", ")),
    };
    Ok((servers, target))
}

/// A URL as it may be shown: without the password of its user part.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// `%xx` escapes of a URL's user part decoded.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The credentials in the user part of `url`: `user:password@` or `token@`. Every server
/// that has one must have the same.
fn url_credentials(servers: &[ServerAddr]) -> Result<Option<Auth>, PluginError> {
    let mut found: Option<(String, Option<String>)> = None;
    for server in servers.iter().filter(|s| s.has_user_pass()) {
        let user = percent_decode(server.username().unwrap_or(""));
        let password = server.password().map(percent_decode);
        match &found {
            None => found = Some((user, password)),
            Some(first) if *first == (user.clone(), password.clone()) => {}
            Some(_) => {
                return Err(invalid(
                    "url",
                    "gives different credentials for different servers; give one set",
                ))
            }
        }
    }
    Ok(found.map(|(user, password)| match password {
        Some(password) => Auth::UserPassword { user, password },
        None => Auth::Token(user),
    }))
}

fn read_file(key: &str, path: &Path) -> Result<String, PluginError> {
    fs::read_to_string(path)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))
}

fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, PluginError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            invalid(
                key,
                format!("cannot read PEM certificates from {}: {e}", path.display()),
            )
        })?;
    if certificates.is_empty() {
        return Err(invalid(
            key,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certificates)
}

fn tls_config(
    ca_file: Option<&Path>,
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
) -> Result<ClientConfig, PluginError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        // A private CA: trusted alone, as a private deployment expects.
        Some(path) => {
            for certificate in certificates("tls_ca_file", path)? {
                roots.add(certificate).map_err(|e| {
                    invalid(
                        "tls_ca_file",
                        format!("{}: unusable certificate: {e}", path.display()),
                    )
                })?;
            }
        }
        None => {
            // Unreadable system certificates are skipped, as every TLS client does.
            for certificate in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(certificate);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PluginError::config(format!("TLS: {e}")))?
        .with_root_certificates(roots);
    match (cert_file, key_file) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let chain = certificates("tls_cert_file", cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                invalid(
                    "tls_key_file",
                    format!(
                        "cannot read an unencrypted PEM private key from {}: {e}",
                        key.display()
                    ),
                )
            })?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                invalid(
                    "tls_key_file",
                    format!("does not go with `tls_cert_file`: {e}"),
                )
            })
        }
        (Some(_), None) => Err(invalid(
            "tls_cert_file",
            "is set without `tls_key_file`; give both or neither",
        )),
        (None, Some(_)) => Err(invalid(
            "tls_key_file",
            "is set without `tls_cert_file`; give both or neither",
        )),
    }
}

fn auth(raw: &RawConfig, host: Option<&Host>) -> Result<Auth, PluginError> {
    let given: Vec<&str> = [
        ("user", raw.user.is_some()),
        ("token", raw.token.is_some()),
        ("creds_file", raw.creds_file.is_some()),
        ("nkey_seed_file", raw.nkey_seed_file.is_some()),
    ]
    .iter()
    .filter(|(_, set)| *set)
    .map(|(key, _)| *key)
    .collect();
    if given.len() > 1 {
        return Err(invalid(
            given[1],
            format!(
                "is given together with `{}`; give one way to authenticate",
                given[0]
            ),
        ));
    }
    let resolve = |key: &str, path: &Path| match host {
        Some(host) => host.resolve(key, path),
        None => Ok(path.to_path_buf()),
    };
    match (&raw.user, &raw.password) {
        (Some(user), Some(password)) => {
            return Ok(Auth::UserPassword {
                user: user.clone(),
                password: password.clone(),
            })
        }
        (Some(_), None) => {
            return Err(invalid("user", "is set without `password`; give both"));
        }
        (None, Some(_)) => {
            return Err(invalid("password", "is set without `user`; give both"));
        }
        (None, None) => {}
    }
    if let Some(token) = &raw.token {
        if token.is_empty() {
            return Err(invalid("token", "is empty"));
        }
        return Ok(Auth::Token(token.clone()));
    }
    if let Some(path) = &raw.creds_file {
        let path = resolve("creds_file", path)?;
        let contents = read_file("creds_file", &path)?;
        async_nats::ConnectOptions::with_credentials(&contents).map_err(|e| {
            invalid(
                "creds_file",
                format!(
                    "{} is not a NATS credentials file (a user JWT and its NKey seed, as `nsc` \
                     writes them): {e}",
                    path.display()
                ),
            )
        })?;
        return Ok(Auth::Credentials { contents, path });
    }
    if let Some(path) = &raw.nkey_seed_file {
        let path = resolve("nkey_seed_file", path)?;
        let seed = read_file("nkey_seed_file", &path)?.trim().to_string();
        nkeys::KeyPair::from_seed(&seed).map_err(|e| {
            invalid(
                "nkey_seed_file",
                format!(
                    "{} does not hold an NKey seed (`SU...`): {e}",
                    path.display()
                ),
            )
        })?;
        return Ok(Auth::NKey { seed, path });
    }
    Ok(Auth::None)
}

impl Settings {
    /// Validates `config`; relative paths are resolved against the host's configuration
    /// folder (without a host, as given).
    pub fn from_config(Config(raw): Config, host: Option<&Host>) -> Result<Settings, PluginError> {
        let (mut servers, target) = servers(&raw.url)?;
        let declare = match raw.declare.as_str() {
            "create" => Declare::Create,
            "passive" => Declare::Passive,
            other => {
                return Err(invalid(
                    "declare",
                    format!(
                        "`{other}` is neither \"create\" (make missing streams and consumers, \
                         the default) nor \"passive\" (only use existing ones)"
                    ),
                ))
            }
        };
        if let Some(stream) = &raw.stream {
            if !is_valid_name(stream) {
                return Err(invalid(
                    "stream",
                    format!(
                        "`{stream}` is not a JetStream stream name (printable, at most 255 \
                         bytes, no whitespace and none of `.`, `*`, `>`, `/`, `\\`)"
                    ),
                ));
            }
        }
        let retention = match raw.retention.as_str() {
            "workqueue" => Retention::WorkQueue,
            "limits" => Retention::Limits,
            "interest" => Retention::Interest,
            other => {
                return Err(invalid(
                    "retention",
                    format!("`{other}` is not one of \"workqueue\", \"limits\", \"interest\""),
                ))
            }
        };
        if !(1..=MAX_REPLICAS).contains(&raw.stream_replicas) {
            return Err(invalid(
                "stream_replicas",
                format!(
                    "{} is outside 1..={MAX_REPLICAS} (JetStream's limit)",
                    raw.stream_replicas
                ),
            ));
        }
        let max_bytes = match raw.max_bytes {
            Some(0) => return Err(invalid("max_bytes", "must be at least 1 (or left out)")),
            Some(n) => Some(i64::try_from(n).map_err(|_| invalid("max_bytes", "is too large"))?),
            None => None,
        };
        let max_age = match raw.max_age_s {
            Some(0) => return Err(invalid("max_age_s", "must be at least 1 (or left out)")),
            Some(s) => Some(Duration::from_secs(s)),
            None => None,
        };
        let duplicate_window = Duration::from_secs(raw.duplicate_window_s);
        if let Some(age) = max_age {
            if duplicate_window > age {
                return Err(invalid(
                    "duplicate_window_s",
                    format!(
                        "{} s is longer than `max_age_s` ({} s); JetStream refuses that",
                        raw.duplicate_window_s,
                        age.as_secs()
                    ),
                ));
            }
        }
        if raw.ack_wait_ms < MIN_ACK_WAIT_MS {
            return Err(invalid(
                "ack_wait_ms",
                format!("{} is less than {MIN_ACK_WAIT_MS}", raw.ack_wait_ms),
            ));
        }
        if raw.max_deliver == 0 || raw.max_deliver < -1 {
            return Err(invalid(
                "max_deliver",
                format!(
                    "{} is neither -1 (no limit, the default) nor a count of at least 1",
                    raw.max_deliver
                ),
            ));
        }
        let max_ack_pending = match raw.max_ack_pending {
            Some(0) => {
                return Err(invalid(
                    "max_ack_pending",
                    "must be at least 1 (or left out)",
                ))
            }
            Some(n) => {
                Some(i64::try_from(n).map_err(|_| invalid("max_ack_pending", "is too large"))?)
            }
            None => None,
        };
        let mut auth = auth(&raw, host)?;
        if let Some(from_url) = url_credentials(&servers)? {
            if !matches!(auth, Auth::None) {
                return Err(invalid(
                    "url",
                    "holds credentials (`user:password@` or `token@`) and another key gives \
                     them too; give them one way",
                ));
            }
            auth = from_url;
            servers = servers
                .into_iter()
                .map(|server| {
                    let mut url = server.into_inner();
                    // Cannot fail on a nats:// or tls:// URL with a host.
                    let _ = url.set_username("");
                    let _ = url.set_password(None);
                    ServerAddr::from_url(url)
                        .map_err(|e| invalid("url", format!("cannot be used: {e}")))
                })
                .collect::<Result<_, _>>()?;
        }
        let connect_timeout = positive_ms("connect_timeout_ms", raw.connect_timeout_ms)?;
        let request_timeout = positive_ms("request_timeout_ms", raw.request_timeout_ms)?;
        let reconnect_initial = positive_ms("reconnect_initial_ms", raw.reconnect_initial_ms)?;
        let reconnect_max = positive_ms("reconnect_max_ms", raw.reconnect_max_ms)?;
        if reconnect_initial > reconnect_max {
            return Err(invalid(
                "reconnect_initial_ms",
                format!(
                    "{} is more than `reconnect_max_ms` ({})",
                    raw.reconnect_initial_ms, raw.reconnect_max_ms
                ),
            ));
        }
        let wants_tls = raw.tls || servers.iter().any(|s| s.tls_required());
        let tls = if wants_tls {
            let resolve =
                |key: &str, path: &Option<PathBuf>| -> Result<Option<PathBuf>, PluginError> {
                    match (path, host) {
                        (Some(path), Some(host)) => host.resolve(key, path).map(Some),
                        (path, _) => Ok(path.clone()),
                    }
                };
            let ca = resolve("tls_ca_file", &raw.tls_ca_file)?;
            let cert = resolve("tls_cert_file", &raw.tls_cert_file)?;
            let key = resolve("tls_key_file", &raw.tls_key_file)?;
            let config = tls_config(ca.as_deref(), cert.as_deref(), key.as_deref())?;
            Some(Tls {
                config: Arc::new(config),
                first: raw.tls_first,
                identity: cert.is_some(),
            })
        } else {
            let given = [
                ("tls_ca_file", raw.tls_ca_file.is_some()),
                ("tls_cert_file", raw.tls_cert_file.is_some()),
                ("tls_key_file", raw.tls_key_file.is_some()),
                ("tls_first", raw.tls_first),
            ];
            if let Some((key, _)) = given.iter().find(|(_, set)| *set) {
                return Err(invalid(
                    key,
                    "is set but TLS is not; set `tls = true` or use tls:// in `url`",
                ));
            }
            None
        };
        Ok(Settings {
            servers,
            target,
            declare,
            stream: raw.stream,
            retention,
            replicas: raw.stream_replicas as usize,
            duplicate_window,
            max_bytes,
            max_age,
            ack_wait: Duration::from_millis(raw.ack_wait_ms),
            max_deliver: raw.max_deliver,
            max_ack_pending,
            auth,
            tls,
            connect_timeout,
            request_timeout,
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

    /// A file of the test's own, removed when dropped.
    struct File(tempfile::TempPath);

    impl File {
        fn with(contents: &str) -> File {
            let path = tempfile::NamedTempFile::new().unwrap().into_temp_path();
            fs::write(&path, contents).unwrap();
            File(path)
        }

        fn path(&self) -> String {
            self.0.display().to_string()
        }
    }

    #[test]
    fn defaults_suit_a_local_server() {
        let s = settings("{}").unwrap();
        assert_eq!(s.target, "nats://127.0.0.1:4222");
        assert_eq!(s.servers.len(), 1);
        assert_eq!(s.declare, Declare::Create);
        assert_eq!(s.stream, None);
        assert_eq!(s.retention, Retention::WorkQueue);
        assert_eq!(s.replicas, 1);
        assert_eq!(s.duplicate_window, Duration::from_secs(120));
        assert_eq!((s.max_bytes, s.max_age), (None, None));
        assert_eq!(s.ack_wait, Duration::from_secs(30));
        assert_eq!(s.max_deliver, -1);
        assert_eq!(s.max_ack_pending, None);
        assert!(matches!(s.auth, Auth::None));
        assert!(s.tls.is_none());
        assert_eq!(s.connect_timeout, Duration::from_secs(10));
        assert_eq!(s.request_timeout, Duration::from_secs(10));
        assert_eq!(s.reconnect_initial, Duration::from_millis(100));
        assert_eq!(s.reconnect_max, Duration::from_secs(30));
    }

    #[test]
    fn every_key_is_read() {
        let s = settings(
            r#"{"url": "nats://a.example:4223, b.example", "declare": "passive",
                "stream": "GOLCONDE", "retention": "limits", "stream_replicas": 3,
                "duplicate_window_s": 60, "max_bytes": 1048576, "max_age_s": 3600,
                "ack_wait_ms": 1500, "max_deliver": 5, "max_ack_pending": 77,
                "user": "app", "password": "secret", "connect_timeout_ms": 1,
                "request_timeout_ms": 2, "reconnect_initial_ms": 3, "reconnect_max_ms": 4}"#,
        )
        .unwrap();
        assert_eq!(s.servers.len(), 2);
        assert_eq!(s.target, "[nats://a.example:4223, nats://b.example:4222]");
        assert_eq!(s.declare, Declare::Passive);
        assert_eq!(s.stream.as_deref(), Some("GOLCONDE"));
        assert_eq!(s.retention, Retention::Limits);
        assert_eq!(s.replicas, 3);
        assert_eq!(s.duplicate_window, Duration::from_secs(60));
        assert_eq!(s.max_bytes, Some(1_048_576));
        assert_eq!(s.max_age, Some(Duration::from_secs(3600)));
        assert_eq!(s.ack_wait, Duration::from_millis(1500));
        assert_eq!(s.max_deliver, 5);
        assert_eq!(s.max_ack_pending, Some(77));
        assert_eq!(s.connect_timeout, Duration::from_millis(1));
        assert_eq!(s.request_timeout, Duration::from_millis(2));
        assert_eq!(s.reconnect_initial, Duration::from_millis(3));
        assert_eq!(s.reconnect_max, Duration::from_millis(4));
        match &s.auth {
            Auth::UserPassword { user, password } => {
                assert_eq!((user.as_str(), password.as_str()), ("app", "secret"))
            }
            other => panic!("{other:?}"),
        }
        let debug = format!("{s:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert_eq!(
            settings(r#"{"retention": "interest"}"#).unwrap().retention,
            Retention::Interest
        );
        assert_eq!(
            settings(r#"{"declare": "create"}"#).unwrap().declare,
            Declare::Create
        );
    }

    #[test]
    fn credentials_of_every_kind() {
        let s = settings(r#"{"token": "s3cr3t"}"#).unwrap();
        assert!(matches!(&s.auth, Auth::Token(t) if t == "s3cr3t"));
        assert!(!format!("{s:?}").contains("s3cr3t"));

        let seed = nkeys::KeyPair::new_user().seed().unwrap();
        let file = File::with(&format!("{seed}\n"));
        let s = settings(&format!(r#"{{"nkey_seed_file": "{}"}}"#, file.path())).unwrap();
        assert!(matches!(&s.auth, Auth::NKey { seed: read, .. } if *read == seed));
        assert!(!format!("{s:?}").contains(&seed));
        let bad = File::with("not a seed");
        refused(
            &format!(r#"{{"nkey_seed_file": "{}"}}"#, bad.path()),
            "`nkey_seed_file`",
        );
        refused(
            &format!(r#"{{"creds_file": "{}"}}"#, bad.path()),
            "`creds_file`",
        );
        let message = refused(r#"{"creds_file": "/nonexistent/x.creds"}"#, "`creds_file`");
        assert!(message.contains("/nonexistent/x.creds"), "{message}");

        refused(r#"{"user": "app"}"#, "`user`");
        refused(r#"{"password": "p"}"#, "`password`");
        refused(r#"{"token": ""}"#, "`token`");
        let both = refused(r#"{"user": "a", "password": "b", "token": "t"}"#, "`token`");
        assert!(both.contains("`user`"), "{both}");
    }

    #[test]
    fn url_lists_servers_and_hides_passwords() {
        let s = settings(r#"{"url": "nats://u:hunter2@mq.example:4222"}"#).unwrap();
        assert_eq!(s.target, "nats://mq.example:4222");
        assert!(!s.servers[0].has_user_pass(), "taken out of the address");
        assert!(!format!("{:?}", s.servers).contains("hunter2"));
        assert!(!format!("{:?}", s.target).contains("hunter2"));
        match &s.auth {
            Auth::UserPassword { user, password } => {
                assert_eq!((user.as_str(), password.as_str()), ("u", "hunter2"))
            }
            other => panic!("{other:?}"),
        }
        let s = settings(r#"{"url": "nats://t%40k@mq.example"}"#).unwrap();
        assert!(matches!(&s.auth, Auth::Token(t) if t == "t@k"));
        refused(
            r#"{"url": "nats://u:p@a:1", "user": "v", "password": "q"}"#,
            "`url`",
        );
        refused(r#"{"url": "nats://u:p@a:1,nats://u:x@b:1"}"#, "`url`");
        let s = settings(r#"{"url": "127.0.0.1:5222"}"#).unwrap();
        assert_eq!(s.target, "nats://127.0.0.1:5222");

        let message = refused(r#"{"url": "http://u:hunter2@x:1"}"#, "`url`");
        assert!(!message.contains("hunter2"), "{message}");
        refused(r#"{"url": "ws://x:1"}"#, "`url`");
        refused(r#"{"url": "nats://a:1,,nats://b:1"}"#, "`url`");
        refused(r#"{"url": "nats://a:99999"}"#, "`url`");
        refused(r#"{"url": ["nats://a:1"]}"#, "`url`");
    }

    #[test]
    fn tls_needs_to_be_asked_for() {
        let s = settings(r#"{"tls": true}"#).unwrap();
        let tls = s.tls.expect("tls");
        assert!(!tls.first && !tls.identity);
        let s = settings(r#"{"url": "tls://mq.example:4222", "tls_first": true}"#).unwrap();
        assert!(s.tls.expect("tls").first);
        for key in ["tls_ca_file", "tls_cert_file", "tls_key_file"] {
            let message = refused(&format!(r#"{{"{key}": "/x.pem"}}"#), key);
            assert!(message.contains("tls = true"), "{message}");
        }
        refused(r#"{"tls_first": true}"#, "`tls_first`");
        refused(r#"{"tls": "yes"}"#, "`tls`");
        refused(
            r#"{"tls": true, "tls_ca_file": "/nonexistent.pem"}"#,
            "`tls_ca_file`",
        );
        let empty = File::with("");
        refused(
            &format!(r#"{{"tls": true, "tls_ca_file": "{}"}}"#, empty.path()),
            "`tls_ca_file`",
        );
        refused(
            &format!(r#"{{"tls": true, "tls_cert_file": "{}"}}"#, empty.path()),
            "`tls_cert_file`",
        );
        refused(
            &format!(r#"{{"tls": true, "tls_key_file": "{}"}}"#, empty.path()),
            "`tls_key_file`",
        );
    }

    #[test]
    fn tls_reads_a_private_ca_and_a_client_certificate() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["client".to_string()]).unwrap();
        let cert_pem = params.signed_by(&key, &issuer).unwrap().pem();
        let (ca, cert, key) = (
            File::with(&ca_pem),
            File::with(&cert_pem),
            File::with(&key.serialize_pem()),
        );
        let s = settings(&format!(
            r#"{{"tls": true, "tls_ca_file": "{}", "tls_cert_file": "{}", "tls_key_file": "{}"}}"#,
            ca.path(),
            cert.path(),
            key.path()
        ))
        .unwrap();
        assert!(s.tls.expect("tls").identity);
        // A certificate where the key belongs.
        refused(
            &format!(
                r#"{{"tls": true, "tls_cert_file": "{}", "tls_key_file": "{}"}}"#,
                cert.path(),
                cert.path()
            ),
            "`tls_key_file`",
        );
    }

    #[test]
    fn bad_values_are_refused_by_key() {
        refused(r#"{"urll": "nats://x"}"#, "urll");
        refused(r#"{"declare": "durable"}"#, "`declare`");
        refused(r#"{"stream": "a.b"}"#, "`stream`");
        refused(r#"{"stream": "a b"}"#, "`stream`");
        refused(r#"{"stream": ""}"#, "`stream`");
        refused(r#"{"stream": 7}"#, "`stream`");
        refused(r#"{"retention": "forever"}"#, "`retention`");
        refused(r#"{"stream_replicas": 0}"#, "`stream_replicas`");
        refused(r#"{"stream_replicas": 6}"#, "`stream_replicas`");
        refused(r#"{"duplicate_window_s": -1}"#, "`duplicate_window_s`");
        refused(
            r#"{"duplicate_window_s": 120, "max_age_s": 60}"#,
            "`duplicate_window_s`",
        );
        refused(r#"{"max_bytes": 0}"#, "`max_bytes`");
        refused(r#"{"max_bytes": "1G"}"#, "`max_bytes`");
        refused(r#"{"max_age_s": 0}"#, "`max_age_s`");
        refused(r#"{"ack_wait_ms": 99}"#, "`ack_wait_ms`");
        refused(r#"{"ack_wait_ms": "30s"}"#, "`ack_wait_ms`");
        refused(r#"{"max_deliver": 0}"#, "`max_deliver`");
        refused(r#"{"max_deliver": -2}"#, "`max_deliver`");
        refused(r#"{"max_ack_pending": 0}"#, "`max_ack_pending`");
        refused(r#"{"max_ack_pending": -1}"#, "`max_ack_pending`");
        refused(r#"{"connect_timeout_ms": 0}"#, "`connect_timeout_ms`");
        refused(r#"{"request_timeout_ms": 0}"#, "`request_timeout_ms`");
        refused(r#"{"reconnect_initial_ms": 0}"#, "`reconnect_initial_ms`");
        refused(r#"{"reconnect_max_ms": 0}"#, "`reconnect_max_ms`");
        refused(
            r#"{"reconnect_initial_ms": 5000, "reconnect_max_ms": 100}"#,
            "`reconnect_initial_ms`",
        );
        refused(r#"{"user": 1, "password": "p"}"#, "`user`");
        refused(r#"{"password": ["p"], "user": "u"}"#, "`password`");
    }

    #[test]
    fn names_jetstream_accepts() {
        for good in ["orders", "GOLCONDE_users-1", "ü"] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in [
            "",
            "a.b",
            "a b",
            "a*",
            "a>",
            "a/b",
            "a\\b",
            "a\tb",
            &"x".repeat(256),
        ] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }
}

//! Helpers for the tests against Redis on this machine: unique stream names that delete
//! themselves, a transport built from JSON, a small RESP client of the tests' own to
//! write and inspect entries outside the plugin, and Redis servers of a test's own (for
//! what the shared one must not be made to do: be killed, restarted, demand TLS or a
//! login).
//!
//! Other engineers use the shared server (127.0.0.1:6379) at the same time, so tests touch
//! only the keys they created there.

#![allow(dead_code)]

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use golconde_plugin_api::{
    sdk::parse_config, AckMode, ConsumeOptions, Consumer, Delivery, Message,
};
use golconde_redis::{Config, Redis, RedisConsumer};

pub const LOCAL_PORT: u16 = 6379;

/// A key no other test (or engineer) uses.
pub fn unique(what: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "golconde-redis-test-{what}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A transport; `extra` is JSON members added to (or replacing) the defaults, e.g.
/// `"claim_idle_ms": 300`.
pub fn transport_at(url: &str, extra: &str) -> Redis {
    let base = format!(
        r#"{{"url": "{url}", "reconnect_initial_ms": 50, "reconnect_max_ms": 500, "connect_timeout_ms": 3000"#
    );
    let json = if extra.trim().is_empty() {
        format!("{base}}}")
    } else {
        // Later members win in serde_json's map, so `extra` overrides the defaults.
        let value: serde_json::Value =
            serde_json::from_str(&format!("{base}, {extra}}}")).expect("valid test JSON");
        value.to_string()
    };
    Redis::from_config(parse_config::<Config>(&json).expect("valid config"), None)
        .expect("transport")
}

pub fn local_url() -> String {
    format!("redis://127.0.0.1:{LOCAL_PORT}/0")
}

pub fn transport(extra: &str) -> Redis {
    transport_at(&local_url(), extra)
}

pub fn options(prefetch: u32, ack_mode: AckMode) -> ConsumeOptions {
    ConsumeOptions { prefetch, ack_mode }
}

/// A message with a `message-id`, as `golconde send` makes them.
pub fn message(id: &str, body: &[u8]) -> Message {
    Message::new(body).with_header("message-id", id)
}

pub fn id(delivery: &Delivery) -> String {
    delivery
        .message
        .header("message-id")
        .expect("test messages carry a message-id")
        .to_string()
}

/// `prefix-i` for every delivery.
pub fn ids(deliveries: &[Delivery]) -> Vec<String> {
    deliveries.iter().map(id).collect()
}

/// `prefix-from` ... `prefix-to` (exclusive).
pub fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}

/// Publishes `n` messages with ids `prefix-0` ... through the plugin, in batches.
pub fn fill(transport: &Redis, key: &str, prefix: &str, range: std::ops::Range<usize>) {
    use golconde_plugin_api::Transport;
    let all: Vec<usize> = range.collect();
    for chunk in all.chunks(500) {
        let batch: Vec<Message> = chunk
            .iter()
            .map(|i| message(&format!("{prefix}-{i}"), format!("body {i}").as_bytes()))
            .collect();
        transport.publish(key, &batch).expect("published");
    }
}

/// Receives until `n` deliveries came, failing the test after `limit`.
pub fn receive_n(consumer: &RedisConsumer, n: usize, limit: Duration) -> Vec<Delivery> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} deliveries within {limit:?}: {:?}",
            got.len(),
            ids(&got)
        );
        got.extend(
            consumer
                .receive(n - got.len(), Duration::from_millis(200))
                .expect("receive"),
        );
    }
    got
}

/// A reply, as the tests' own client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V {
    Nil,
    Int(i64),
    Str(Vec<u8>),
    Err(String),
    Arr(Vec<V>),
}

impl V {
    pub fn int(&self) -> i64 {
        match self {
            V::Int(n) => *n,
            other => panic!("not an integer: {other:?}"),
        }
    }

    pub fn text(&self) -> String {
        match self {
            V::Str(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            other => panic!("not a string: {other:?}"),
        }
    }

    pub fn items(&self) -> &[V] {
        match self {
            V::Arr(items) => items,
            other => panic!("not an array: {other:?}"),
        }
    }
}

/// The tests' own RESP client, on a plain connection: writes entries as another producer
/// would, and looks into streams and groups outside the plugin.
pub struct Cli {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Cli {
    pub fn connect(port: u16) -> Cli {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("Redis answers");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Cli {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        }
    }

    pub fn local() -> Cli {
        Cli::connect(LOCAL_PORT)
    }

    /// Sends a command of binary arguments and reads its reply.
    pub fn cmd(&mut self, args: &[&[u8]]) -> V {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out).expect("command written");
        self.read()
    }

    /// Sends a command of text arguments.
    pub fn run(&mut self, args: &[&str]) -> V {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.cmd(&args)
    }

    fn read(&mut self) -> V {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a reply");
        let line = line.trim_end_matches("\r\n");
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" => V::Str(rest.as_bytes().to_vec()),
            "-" => V::Err(rest.to_string()),
            ":" => V::Int(rest.parse().unwrap()),
            "$" => {
                let len: i64 = rest.parse().unwrap();
                if len < 0 {
                    return V::Nil;
                }
                let mut bytes = vec![0; len as usize + 2];
                self.reader.read_exact(&mut bytes).unwrap();
                bytes.truncate(len as usize);
                V::Str(bytes)
            }
            "*" => {
                let len: i64 = rest.parse().unwrap();
                if len < 0 {
                    return V::Nil;
                }
                V::Arr((0..len).map(|_| self.read()).collect())
            }
            other => panic!("unexpected reply type {other:?}"),
        }
    }

    /// How many entries of `group` on `key` are pending, per consumer.
    pub fn pending(&mut self, key: &str, group: &str) -> Vec<(String, i64)> {
        let reply = self.run(&["XPENDING", key, group]);
        match reply.items().get(3) {
            Some(V::Arr(consumers)) => consumers
                .iter()
                .map(|c| (c.items()[0].text(), c.items()[1].text().parse().unwrap()))
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn xlen(&mut self, key: &str) -> i64 {
        self.run(&["XLEN", key]).int()
    }
}

/// A stream of this test on the shared server, deleted when the test ends.
pub struct Stream {
    pub key: String,
    port: u16,
}

impl Stream {
    pub fn new(what: &str) -> Stream {
        Stream::on(LOCAL_PORT, what)
    }

    pub fn on(port: u16, what: &str) -> Stream {
        Stream {
            key: unique(what),
            port,
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", self.port)) {
            drop(stream);
            let mut cli = Cli::connect(self.port);
            cli.run(&["DEL", &self.key]);
        }
    }
}

/// A free port of 127.0.0.1, as far as anyone can tell.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A Redis server of the test's own, on a free port, in a folder of its own, killed
/// (by its process id) when dropped.
pub struct Server {
    pub port: u16,
    pub dir: tempfile::TempDir,
    args: Vec<String>,
    child: Option<Child>,
    /// Whether it listens with TLS (readiness is then read from its log).
    tls: bool,
}

impl Server {
    /// A server without persistence, plus `extra` arguments.
    pub fn start(extra: &[&str]) -> Server {
        let port = free_port();
        let mut args: Vec<String> = vec![
            "--port".into(),
            port.to_string(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        Server::launch(port, args, false)
    }

    /// A server listening only with TLS on its port, with `extra` arguments.
    pub fn start_tls(extra: &[&str]) -> Server {
        let port = free_port();
        let mut args: Vec<String> = vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        Server::launch(port, args, true)
    }

    fn launch(port: u16, mut args: Vec<String>, tls: bool) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("golconde-redis-")
            .tempdir()
            .expect("a folder for the server");
        args.extend([
            "--bind".into(),
            "127.0.0.1".into(),
            "--dir".into(),
            dir.path().display().to_string(),
            "--logfile".into(),
            dir.path().join("redis.log").display().to_string(),
        ]);
        let mut server = Server {
            port,
            dir,
            args,
            child: None,
            tls,
        };
        server.run();
        server
    }

    fn run(&mut self) {
        let log = self.dir.path().join("redis.log");
        let _ = fs::remove_file(&log);
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(
                Instant::now() < deadline,
                "the test's Redis on port {} did not start: {}",
                self.port,
                fs::read_to_string(&log).unwrap_or_default()
            );
            let ready = fs::read_to_string(&log)
                .map(|text| text.contains("Ready to accept connections"))
                .unwrap_or(false);
            if ready && (self.tls || TcpStream::connect(("127.0.0.1", self.port)).is_ok()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn cli(&self) -> Cli {
        Cli::connect(self.port)
    }

    /// Kills the server at once (SIGKILL): nothing is written on the way out.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again, on the same port and folder.
    pub fn restart(&mut self) {
        self.kill();
        self.run();
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Writes `text` to `name` in `dir`, readable by its owner only.
pub fn write_private(dir: &Path, name: &str, text: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    fs::write(&path, text).expect("file written");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    path.display().to_string()
}

/// Acknowledges everything `consumer` holds of `deliveries`.
pub fn ack_all(consumer: &RedisConsumer, deliveries: &[Delivery]) {
    if let Some(last) = deliveries.last() {
        consumer.ack(last.tag, true).expect("ack");
    }
}

/// Runs `f`, returning with its result what it logged on this thread at info level and
/// above, one line each (the plugin logs on the caller's thread, inside `receive`).
pub fn logged_info<T>(f: impl FnOnce() -> T) -> (T, String) {
    use std::sync::{Arc, Mutex};
    let lines = Arc::new(Mutex::new(String::new()));
    let result = tracing::subscriber::with_default(InfoLines(lines.clone()), f);
    let text = lines.lock().map(|l| l.clone()).unwrap_or_default();
    (result, text)
}

/// The subscriber of [`logged_info`]: events only, spans ignored.
struct InfoLines(std::sync::Arc<std::sync::Mutex<String>>);

impl tracing::Subscriber for InfoLines {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::INFO
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut line = format!("{} ", event.metadata().level());
        event.record(&mut Text(&mut line));
        line.push('\n');
        if let Ok(mut lines) = self.0.lock() {
            lines.push_str(&line);
        }
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// Writes an event's fields as text.
struct Text<'a>(&'a mut String);

impl tracing::field::Visit for Text<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

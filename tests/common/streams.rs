//! The stream brokers the end-to-end tests run against besides RabbitMQ: NATS JetStream
//! and Redis Streams, shared (127.0.0.1:4222, 127.0.0.1:6379) or a private server of the
//! test's own that it can restart mid-stream.
//!
//! Test data goes on through the transport plugin itself, loaded from the build's plugin
//! library and called through its ABI as the host would; what is left on a stream is read with the server's
//! own client (async-nats, redis), so a test never takes the plugin's word for it.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use abi_stable::std_types::{RSlice, RStr};
use golconde_plugin_api::{abi::TransportBox, Message};

use crate::{
    broker::free_port,
    services::{load_transport, unique},
};

pub const NATS_URL: &str = "nats://127.0.0.1:4222";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379/0";

/// Which stream broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nats,
    Redis,
}

impl Kind {
    /// The plugin's name, as configuration files write it.
    pub fn plugin(self) -> &'static str {
        match self {
            Kind::Nats => "nats",
            Kind::Redis => "redis",
        }
    }

    /// The shared server's URL.
    pub fn shared_url(self) -> &'static str {
        match self {
            Kind::Nats => NATS_URL,
            Kind::Redis => REDIS_URL,
        }
    }
}

/// A `[transports.NAME]` section for the broker at `url`.
pub fn transport_section(name: &str, kind: Kind, url: &str) -> String {
    format!(
        "\n[transports.{name}]\nplugin = \"{}\"\nurl = \"{url}\"\n",
        kind.plugin()
    )
}

/// A nats-server or redis-server of the test's own, on a free port, keeping its data in a
/// folder of its own across restarts (Redis with an append-only file synced on every
/// write, so a restart loses nothing it acknowledged).
pub struct PrivateServer {
    kind: Kind,
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateServer {
    pub fn start(kind: Kind) -> PrivateServer {
        let dir = tempfile::Builder::new()
            .prefix(&format!("golconde-{}-", kind.plugin()))
            .tempdir()
            .expect("a folder for the server");
        let mut server = PrivateServer {
            kind,
            port: free_port(),
            dir,
            child: None,
        };
        server.boot();
        server
    }

    pub fn url(&self) -> String {
        match self.kind {
            Kind::Nats => format!("nats://127.0.0.1:{}", self.port),
            Kind::Redis => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    fn boot(&mut self) {
        let port = self.port.to_string();
        let dir = self.dir.path();
        let mut command = match self.kind {
            Kind::Nats => {
                let mut c = Command::new("nats-server");
                c.args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
                    .arg(dir.join("jetstream"));
                c
            }
            Kind::Redis => {
                let mut c = Command::new("redis-server");
                c.args(["--bind", "127.0.0.1", "--port", &port, "--save", ""])
                    .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                    .arg(dir);
                c
            }
        };
        let log = std::fs::File::create(self.log_path()).expect("server log");
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("server log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}-server: {e} (scripts/test installs it)",
                    self.kind.plugin()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "{}-server did not start on port {}:\n{}",
                self.kind.plugin(),
                self.port,
                std::fs::read_to_string(self.log_path()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Stops the server gracefully (SIGTERM), waits for it to exit, and starts it again
    /// on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        std::thread::sleep(Duration::from_millis(500));
        self.boot();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Streams of the test's own on one broker, deleted at the end.
pub struct Streams {
    kind: Kind,
    url: String,
    transport: TransportBox,
    names: Vec<String>,
    runtime: tokio::runtime::Runtime,
}

impl Streams {
    /// On the shared server of `kind`.
    pub fn new(kind: Kind) -> Streams {
        Self::at(kind, kind.shared_url())
    }

    pub fn at(kind: Kind, url: &str) -> Streams {
        let config = serde_json::json!({ "url": url }).to_string();
        let file = format!("libgolconde_{}.so", kind.plugin());
        let transport = load_transport(&file, kind.plugin(), &config).unwrap_or_else(|e| {
            panic!(
                "the {} plugin does not build from {config}: {}",
                kind.plugin(),
                e.message
            )
        });
        Streams {
            kind,
            url: url.to_string(),
            transport,
            names: Vec::new(),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the NATS client"),
        }
    }

    /// A new stream name (a NATS subject, a Redis key), deleted at the end.
    pub fn name(&mut self, what: &str) -> String {
        let name = unique(what).replace('_', "-");
        self.names.push(name.clone());
        name
    }

    /// Publishes each body, confirmed, through the plugin.
    pub fn publish(&self, queue: &str, bodies: &[String]) {
        for chunk in bodies.chunks(1000) {
            let messages: Vec<Message> = chunk.iter().map(|b| Message::new(b.as_bytes())).collect();
            self.transport
                .publish(RStr::from_str(queue), RSlice::from_slice(&messages))
                .into_result()
                .expect("publish");
        }
    }

    /// How many messages of `queue` the consumer named `consumer` (a pipeline's name) has
    /// not acknowledged yet, delivered or not, as the server counts them; `None` while
    /// there is no such consumer (or the server does not answer).
    pub fn unacked(&self, queue: &str, consumer: &str) -> Option<u64> {
        match self.kind {
            Kind::Nats => self.runtime.block_on(async {
                let client = async_nats::connect(&self.url).await.ok()?;
                let js = async_nats::jetstream::new(client);
                let name = js.stream_by_subject(queue).await.ok()?;
                let stream = js.get_stream(&name).await.ok()?;
                let mut found = stream
                    .get_consumer::<async_nats::jetstream::consumer::pull::Config>(consumer)
                    .await
                    .ok()?;
                let info = found.info().await.ok()?;
                Some(info.num_pending + info.num_ack_pending as u64)
            }),
            Kind::Redis => {
                let mut connection = self.try_redis()?;
                let groups: redis::streams::StreamInfoGroupsReply = redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg(queue)
                    .query(&mut connection)
                    .ok()?;
                let group = groups.groups.iter().find(|g| g.name == consumer)?;
                // Redis cannot always tell the lag (after a restart, say): count the entries
                // past what the group was given instead.
                let lag = match group.lag {
                    Some(lag) => lag as u64,
                    None => {
                        let mut after = format!("({}", group.last_delivered_id);
                        let mut count = 0u64;
                        loop {
                            let page: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                                .arg(queue)
                                .arg(&after)
                                .arg("+")
                                .arg("COUNT")
                                .arg(10_000)
                                .query(&mut connection)
                                .ok()?;
                            let Some(last) = page.ids.last() else { break };
                            after = format!("({}", last.id);
                            count += page.ids.len() as u64;
                        }
                        count
                    }
                };
                Some(group.pending as u64 + lag)
            }
        }
    }

    /// How many messages the stream holds.
    pub fn len(&self, queue: &str) -> u64 {
        match self.kind {
            Kind::Nats => self.runtime.block_on(async {
                let client = async_nats::connect(&self.url)
                    .await
                    .expect("connect to NATS");
                let js = async_nats::jetstream::new(client);
                let name = js
                    .stream_by_subject(queue)
                    .await
                    .expect("a stream holds the subject");
                let mut stream = js.get_stream(&name).await.expect("the stream");
                stream.info().await.expect("stream info").state.messages
            }),
            Kind::Redis => redis::cmd("XLEN")
                .arg(queue)
                .query(&mut self.redis())
                .expect("XLEN"),
        }
    }

    fn redis(&self) -> redis::Connection {
        self.try_redis().expect("connect to Redis")
    }

    fn try_redis(&self) -> Option<redis::Connection> {
        redis::Client::open(self.url.as_str())
            .and_then(|c| c.get_connection())
            .ok()
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        for name in std::mem::take(&mut self.names) {
            match self.kind {
                Kind::Nats => self.runtime.block_on(async {
                    let Ok(client) = async_nats::connect(&self.url).await else {
                        return;
                    };
                    let js = async_nats::jetstream::new(client);
                    if let Ok(stream) = js.stream_by_subject(&name).await {
                        let _ = js.delete_stream(&stream).await;
                    }
                }),
                Kind::Redis => {
                    if let Some(mut connection) = self.try_redis() {
                        let _: Result<(), _> = redis::cmd("DEL").arg(&name).query(&mut connection);
                    }
                }
            }
        }
    }
}

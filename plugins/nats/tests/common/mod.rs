//! Helpers for the tests against NATS on this machine: the shared server on 4222 (with
//! JetStream), private servers of a test's own (which it may stop and start again), queue
//! names no other run uses, a transport built from JSON, and a side door (async-nats
//! itself) to look into streams, publish as another producer would, and clean up.
//!
//! Other engineers use the shared server at the same time, so everything here touches only
//! what this test created: streams found by the test's own subjects.

#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Write},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use async_nats::{
    jetstream::{self, response::Response},
    HeaderMap,
};
use golconde_nats::{Config, Nats, NatsConsumer};
use golconde_plugin_api::{
    sdk::parse_config, AckMode, ConsumeOptions, Consumer, Delivery, Message, Transport,
};

pub const NATS: &str = "nats://127.0.0.1:4222";

/// A subject no other test (or engineer) uses.
pub fn unique(what: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "golconde-nats-test.{what}.{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// JSON configuration for the server at `url`; `extra` holds members added to (or
/// replacing) the defaults, e.g. `"ack_wait_ms": 1000`.
pub fn config_json(url: &str, extra: &str) -> String {
    let base = format!(
        r#"{{"url": "{url}", "reconnect_initial_ms": 50, "reconnect_max_ms": 500, "request_timeout_ms": 5000, "connect_timeout_ms": 3000"#
    );
    let json = if extra.trim().is_empty() {
        format!("{base}}}")
    } else {
        format!("{base}, {extra}}}")
    };
    // Later members win in serde_json's map, so `extra` overrides the defaults.
    let value: serde_json::Value = serde_json::from_str(&json).expect("valid test JSON");
    value.to_string()
}

pub fn transport_at(url: &str, extra: &str) -> Nats {
    Nats::from_config(
        parse_config::<Config>(&config_json(url, extra)).expect("valid config"),
        None,
    )
    .expect("transport")
}

pub fn transport(extra: &str) -> Nats {
    transport_at(NATS, extra)
}

pub fn options(prefetch: u32) -> ConsumeOptions {
    ConsumeOptions {
        prefetch,
        ack_mode: AckMode::Cumulative,
    }
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

pub fn ids(deliveries: &[Delivery]) -> Vec<String> {
    deliveries.iter().map(id).collect()
}

/// `prefix-0` ... `prefix-(n-1)`.
pub fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}

/// Publishes `prefix-0` ... `prefix-(n-1)`, 100 at a time.
pub fn fill(transport: &Nats, queue: &str, prefix: &str, range: std::ops::Range<usize>) {
    let all: Vec<Message> = range
        .map(|i| message(&format!("{prefix}-{i}"), format!("body {i}").as_bytes()))
        .collect();
    for chunk in all.chunks(100) {
        transport.publish(queue, chunk).expect("publish");
    }
}

/// Receives until `n` deliveries came, failing the test after `limit`.
pub fn receive_n(consumer: &NatsConsumer, n: usize, limit: Duration) -> Vec<Delivery> {
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

/// Nothing arrives for `wait`.
pub fn assert_nothing(consumer: &NatsConsumer, wait: Duration) {
    let got = consumer.receive(100, wait).expect("receive");
    assert!(got.is_empty(), "unexpected deliveries: {:?}", ids(&got));
}

/// A client of the server's own, beside the plugin: to look into streams and consumers,
/// publish as another producer, and delete what a test made.
pub struct Side {
    runtime: tokio::runtime::Runtime,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
}

#[derive(serde::Deserialize)]
struct Names {
    #[serde(default)]
    streams: Option<Vec<String>>,
}

impl Side {
    pub fn connect(url: &str) -> Side {
        Side::connect_with(url, async_nats::ConnectOptions::new())
    }

    pub fn connect_with(url: &str, options: async_nats::ConnectOptions) -> Side {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let client = runtime
            .block_on(options.connect(url))
            .expect("side connection to NATS");
        // The context spawns a task of its own.
        let js = {
            let _inside = runtime.enter();
            jetstream::new(client.clone())
        };
        Side {
            runtime,
            client,
            js,
        }
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// The stream capturing `subject`, if any.
    pub fn stream_of(&self, subject: &str) -> Option<String> {
        let names: Response<Names> = self
            .block_on(
                self.js
                    .request("STREAM.NAMES", &serde_json::json!({ "subject": subject })),
            )
            .expect("stream names");
        match names {
            Response::Ok(names) => names.streams.and_then(|s| s.into_iter().next()),
            Response::Err { error } => panic!("stream names: {error}"),
        }
    }

    /// The stream's configuration and state, as JSON.
    pub fn stream_info(&self, stream: &str) -> serde_json::Value {
        match self
            .block_on(self.js.request::<_, _, Response<serde_json::Value>>(
                format!("STREAM.INFO.{stream}"),
                &serde_json::json!({}),
            ))
            .expect("stream info")
        {
            Response::Ok(info) => info,
            Response::Err { error } => panic!("stream info {stream}: {error}"),
        }
    }

    /// Messages stored in the stream capturing `subject`.
    pub fn stored(&self, subject: &str) -> u64 {
        let stream = self.stream_of(subject).expect("a stream");
        self.stream_info(&stream)["state"]["messages"]
            .as_u64()
            .unwrap_or(0)
    }

    /// The consumer's configuration and state, as JSON; `None` if there is none.
    pub fn consumer_info(&self, stream: &str, name: &str) -> Option<serde_json::Value> {
        match self
            .block_on(self.js.request::<_, _, Response<serde_json::Value>>(
                format!("CONSUMER.INFO.{stream}.{name}"),
                &serde_json::json!({}),
            ))
            .expect("consumer info")
        {
            Response::Ok(info) => Some(info),
            Response::Err { .. } => None,
        }
    }

    /// Every message of the stream capturing `subject`, read with the server's own
    /// message API, in order: (headers, body).
    pub fn messages(&self, subject: &str) -> Vec<(Option<HeaderMap>, Vec<u8>)> {
        let stream_name = self.stream_of(subject).expect("a stream");
        let info = self.stream_info(&stream_name);
        let (first, last) = (
            info["state"]["first_seq"].as_u64().unwrap_or(0),
            info["state"]["last_seq"].as_u64().unwrap_or(0),
        );
        let stream = self
            .block_on(self.js.get_stream_no_info(&stream_name))
            .expect("stream");
        let mut out = Vec::new();
        for seq in first..=last {
            if let Ok(message) = self.block_on(stream.get_raw_message(seq)) {
                if message.subject.as_str() == subject {
                    out.push((Some(message.headers), message.payload.to_vec()));
                }
            }
        }
        out
    }

    /// Publishes to `subject` as another producer would, waiting for JetStream's answer.
    pub fn publish(&self, subject: &str, headers: Option<HeaderMap>, body: &[u8]) {
        self.block_on(async {
            let ack = match headers {
                Some(h) => {
                    self.js
                        .publish_with_headers(subject.to_string(), h, body.to_vec().into())
                        .await
                }
                None => {
                    self.js
                        .publish(subject.to_string(), body.to_vec().into())
                        .await
                }
            }
            .expect("publish");
            ack.await.expect("publish acknowledged");
        })
    }

    /// Makes a stream for `subject` with the given JSON settings added.
    pub fn create_stream(&self, name: &str, subject: &str, extra: serde_json::Value) {
        let mut config = serde_json::json!({
            "name": name, "subjects": [subject], "storage": "file", "retention": "limits",
        });
        if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        // nats-server 2.9 now and then fails to make a stream's store while others are
        // made and deleted ("error creating store", 10049): once more is enough.
        for attempt in 0..3 {
            match self
                .block_on(self.js.request::<_, _, Response<serde_json::Value>>(
                    format!("STREAM.CREATE.{name}"),
                    &config,
                ))
                .expect("create stream")
            {
                Response::Ok(_) => return,
                Response::Err { error } if attempt < 2 && error.error_code().0 == 10049 => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Response::Err { error } => panic!("create stream {name}: {error}"),
            }
        }
    }

    /// Makes a durable consumer on `stream` with the given JSON configuration.
    pub fn create_consumer(&self, stream: &str, name: &str, config: serde_json::Value) {
        match self
            .block_on(self.js.request::<_, _, Response<serde_json::Value>>(
                format!("CONSUMER.DURABLE.CREATE.{stream}.{name}"),
                &serde_json::json!({ "stream_name": stream, "config": config }),
            ))
            .expect("create consumer")
        {
            Response::Ok(_) => {}
            Response::Err { error } => panic!("create consumer {name}: {error}"),
        }
    }

    /// Deletes the stream capturing `subject`, if any.
    pub fn delete_stream_of(&self, subject: &str) {
        if let Some(stream) = self.stream_of(subject) {
            let _ = self.block_on(self.js.delete_stream(&stream));
        }
    }
}

/// Publishes `body` to `subject` with `header_block` exactly as given, over the bare NATS
/// protocol (no client would write a header block it cannot read), and waits until the
/// server has read it.
pub fn publish_raw(address: &str, subject: &str, header_block: &[u8], body: &[u8]) {
    let mut socket = TcpStream::connect(address).expect("connect");
    let mut reader = BufReader::new(socket.try_clone().expect("socket"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("INFO");
    socket
        .write_all(b"CONNECT {\"verbose\":false,\"headers\":true}\r\n")
        .expect("CONNECT");
    let mut frame = format!(
        "HPUB {subject} {} {}\r\n",
        header_block.len(),
        header_block.len() + body.len()
    )
    .into_bytes();
    frame.extend_from_slice(header_block);
    frame.extend_from_slice(body);
    frame.extend_from_slice(b"\r\nPING\r\n");
    socket.write_all(&frame).expect("HPUB");
    loop {
        line.clear();
        reader.read_line(&mut line).expect("PONG");
        assert!(!line.starts_with("-ERR"), "the server refused: {line}");
        if line.starts_with("PONG") {
            break;
        }
    }
}

/// A subject of the test's own on the shared server, whose stream is deleted at the end.
pub struct Queue {
    pub name: String,
    pub side: Side,
}

impl Queue {
    pub fn new(what: &str) -> Queue {
        Queue::at(NATS, what)
    }

    pub fn at(url: &str, what: &str) -> Queue {
        Queue {
            name: unique(what),
            side: Side::connect(url),
        }
    }

    pub fn stream(&self) -> String {
        self.side.stream_of(&self.name).expect("a stream")
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.side.delete_stream_of(&self.name);
    }
}

/// A nats-server of the test's own, on a free port, with JetStream storing in a folder
/// of its own; killed when dropped.
pub struct Server {
    pub port: u16,
    pub dir: tempfile::TempDir,
    config: Option<PathBuf>,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Server {
    /// A server with JetStream and nothing else.
    pub fn start() -> Server {
        let mut server = Server {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            config: None,
            child: None,
        };
        server.start_again();
        server
    }

    /// A server with this configuration file; `{port}` and `{dir}` in it become the port
    /// and the storage folder.
    pub fn with_config(text: &str) -> Server {
        let port = free_port();
        let dir = tempfile::tempdir().expect("temp dir");
        let text = text
            .replace("{port}", &port.to_string())
            .replace("{dir}", &dir.path().join("js").display().to_string());
        let path = dir.path().join("nats.conf");
        std::fs::write(&path, text).expect("config written");
        let mut server = Server {
            port,
            dir,
            config: Some(path),
            child: None,
        };
        server.start_again();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again), on the same port and storage, and waits until it listens.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("log file");
        let mut command = Command::new("nats-server");
        match &self.config {
            Some(path) => {
                command.arg("-c").arg(path);
            }
            None => {
                command
                    .args([
                        "-a",
                        "127.0.0.1",
                        "-p",
                        &self.port.to_string(),
                        "-js",
                        "-sd",
                    ])
                    .arg(self.dir.path().join("js"));
            }
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server starts (is it installed?)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen in time"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL) and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server's log so far, to explain a failure.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

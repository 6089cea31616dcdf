//! What every test of the plugin needs: the plugin built through its ABI constructor, as
//! the host builds it; unique queue and connection names; a direct lapin connection to
//! set up and check the broker's side; and a way to cut the plugin's own connections.
//!
//! Tests run against the RabbitMQ on 127.0.0.1:5672 (guest/guest), in parallel with other
//! people's tests: every queue is unique and deleted by its [`TestQueue`] guard, and only
//! connections carrying this test's unique name are ever closed.

#![allow(dead_code)]

pub mod raw;

use std::{
    process::Command,
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RArc, RSlice, RStr, RString},
};
use golconde_amqp::AmqpTransport;
use golconde_plugin_api::{
    abi::{Constructor, ConsumerBox, HostContext, TransportBox},
    log::{FfiLogSink, FfiLogSink_TO, LogLevel, LogRecord},
    sdk::transport_entry,
    AckMode, ConsumeOptions, Delivery, Message, PluginError,
};
use lapin::{
    options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::FieldTable,
    BasicProperties, Connection, ConnectionProperties,
};

pub const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A name no other test, process or run uses.
pub fn unique(what: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "golconde-amqp-test-{what}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Prints the plugin's log lines, so a failing test shows what the plugin said.
#[derive(Clone)]
struct StderrSink;

impl FfiLogSink for StderrSink {
    fn max_level(&self) -> LogLevel {
        LogLevel::Info
    }

    fn log(&self, record: &LogRecord<'_>) {
        eprintln!("[plugin {:?}] {}", record.level, record.message);
    }
}

/// Prints the plugin's log lines too, and keeps them for the test to read.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<String>>>);

impl Captured {
    /// The lines logged so far, as `LEVEL message`.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl FfiLogSink for Captured {
    fn max_level(&self) -> LogLevel {
        LogLevel::Info
    }

    fn log(&self, record: &LogRecord<'_>) {
        eprintln!("[plugin {:?}] {}", record.level, record.message);
        self.0
            .lock()
            .unwrap()
            .push(format!("{:?} {}", record.level, record.message));
    }
}

/// Builds the plugin from a JSON configuration section, as the host does.
pub fn build(config: &serde_json::Value) -> Result<TransportBox, PluginError> {
    build_with_sink(
        config,
        FfiLogSink_TO::from_ptr(RArc::new(StderrSink), TD_Opaque),
    )
}

/// Builds the plugin as [`build`] does, keeping what it logs.
pub fn build_capturing(
    config: &serde_json::Value,
) -> Result<(TransportBox, Captured), PluginError> {
    let captured = Captured::default();
    let sink = FfiLogSink_TO::from_ptr(RArc::new(captured.clone()), TD_Opaque);
    Ok((build_with_sink(config, sink)?, captured))
}

fn build_with_sink(
    config: &serde_json::Value,
    log: golconde_plugin_api::log::LogSinkBox,
) -> Result<TransportBox, PluginError> {
    let Constructor::Transport(construct) = transport_entry::<AmqpTransport>().constructor else {
        panic!("the amqp plugin is a transport");
    };
    let context = HostContext {
        instance: RString::from("test"),
        log,
    };
    construct(RStr::from_str(&config.to_string()), context).into_result()
}

/// A transport on the local broker whose connections are named `name`.
pub fn transport_named(name: &str) -> TransportBox {
    build(&serde_json::json!({
        "url": URL,
        "connection_name": name,
        "reconnect_initial_ms": 50,
        "reconnect_max_ms": 1000,
    }))
    .expect("a valid configuration")
}

pub fn transport() -> TransportBox {
    transport_named(&unique("conn"))
}

pub fn consume(transport: &TransportBox, queue: &str, prefetch: u32) -> ConsumerBox {
    transport
        .consume(
            RStr::from_str(queue),
            ConsumeOptions {
                prefetch,
                ack_mode: AckMode::Cumulative,
            },
        )
        .into_result()
        .unwrap_or_else(|e| panic!("consuming {queue}: {e}"))
}

pub fn publish(transport: &TransportBox, queue: &str, messages: &[Message]) {
    transport
        .publish(RStr::from_str(queue), RSlice::from_slice(messages))
        .into_result()
        .unwrap_or_else(|e| panic!("publishing to {queue}: {e}"))
}

/// Messages `prefix-0`, `prefix-1`, ... with their body as `message-id`.
pub fn numbered(prefix: &str, range: std::ops::Range<usize>) -> Vec<Message> {
    range
        .map(|i| {
            let id = format!("{prefix}-{i}");
            Message::new(id.clone()).with_header("message-id", id)
        })
        .collect()
}

/// Receives until `count` deliveries came, without acknowledging. Gives up (failing the
/// test) after a minute, so that a bug hangs nothing.
pub fn receive_exactly(consumer: &ConsumerBox, count: usize) -> Vec<Delivery> {
    let give_up = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    while out.len() < count {
        assert!(
            Instant::now() < give_up,
            "received {} of {count} deliveries",
            out.len()
        );
        let batch = consumer
            .receive((count - out.len()) as u32, 500)
            .into_result()
            .expect("receive");
        out.extend(batch);
    }
    out
}

pub fn body(delivery: &Delivery) -> String {
    String::from_utf8(delivery.message.body.to_vec()).unwrap()
}

/// A queue on the broker, deleted when the test ends, whichever way it ends.
pub struct TestQueue {
    pub name: String,
}

impl TestQueue {
    pub fn new(what: &str) -> TestQueue {
        TestQueue { name: unique(what) }
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        broker().delete(&self.name);
    }
}

/// The broker as seen by lapin directly, for setting up and checking.
pub struct Broker {
    runtime: tokio::runtime::Runtime,
    connection: Connection,
}

pub fn broker() -> &'static Broker {
    static BROKER: OnceLock<Broker> = OnceLock::new();
    BROKER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        let connection = runtime
            .block_on(Connection::connect_with_runtime(
                URL,
                ConnectionProperties::default().with_connection_name(unique("checker").into()),
                async_rs::Runtime::tokio_with_handle(handle),
            ))
            .expect("RabbitMQ on 127.0.0.1:5672");
        Broker {
            runtime,
            connection,
        }
    })
}

impl Broker {
    /// Messages ready in `queue`, or `None` if it does not exist.
    pub fn ready(&self, queue: &str) -> Option<u32> {
        self.runtime.block_on(async {
            // A failed passive declare closes its channel: use a fresh one.
            let channel = self.connection.create_channel().await.unwrap();
            let options = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            let found = channel
                .queue_declare(queue.into(), options, FieldTable::default())
                .await
                .ok()
                .map(|q| q.message_count());
            let _ = channel.close(200, "done".into()).await;
            found
        })
    }

    pub fn declare(&self, queue: &str, options: QueueDeclareOptions) {
        self.runtime.block_on(async {
            let channel = self.connection.create_channel().await.unwrap();
            channel
                .queue_declare(queue.into(), options, FieldTable::default())
                .await
                .unwrap();
            let _ = channel.close(200, "done".into()).await;
        })
    }

    /// Publishes as a client other than Golconde would, with any properties.
    pub fn publish(&self, queue: &str, body: &[u8], properties: BasicProperties) {
        self.runtime.block_on(async {
            let channel = self.connection.create_channel().await.unwrap();
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .unwrap();
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    body,
                    properties,
                )
                .await
                .unwrap()
                .await
                .unwrap();
            assert!(confirm.is_ack());
            let _ = channel.close(200, "done".into()).await;
        })
    }

    pub fn delete(&self, queue: &str) {
        self.runtime.block_on(async {
            if let Ok(channel) = self.connection.create_channel().await {
                let _ = channel
                    .queue_delete(queue.into(), QueueDeleteOptions::default())
                    .await;
                let _ = channel.close(200, "done".into()).await;
            }
        })
    }
}

/// The broker's ids (Erlang pids) of the connections whose client properties mention
/// `name`.
pub fn connection_pids(name: &str) -> Vec<String> {
    let listing = Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "client_properties"])
        .output()
        .expect("rabbitmqctl");
    assert!(listing.status.success(), "{listing:?}");
    String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter(|line| line.contains(name))
        .map(|line| {
            line.split_whitespace()
                .next()
                .expect("a pid column")
                .to_string()
        })
        .collect()
}

/// Closes, through `rabbitmqctl`, the broker connections whose client properties mention
/// `name` (and only those: other people's tests share the broker). Returns how many.
pub fn close_connections(name: &str) -> usize {
    let mut closed = 0;
    for pid in connection_pids(name) {
        let status = Command::new("rabbitmqctl")
            .args([
                "-q",
                "close_connection",
                &pid,
                "golconde connection-loss test",
            ])
            .status()
            .expect("rabbitmqctl");
        if status.success() {
            closed += 1;
        }
    }
    closed
}

/// The names of the broker's connections that contain `part`, as the broker shows them.
pub fn connection_names(part: &str) -> Vec<String> {
    let listing = Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "client_properties"])
        .output()
        .expect("rabbitmqctl");
    assert!(listing.status.success(), "{listing:?}");
    let text = String::from_utf8_lossy(&listing.stdout);
    let key = "{\"connection_name\",\"";
    text.lines()
        .filter_map(|line| {
            let start = line.find(key)? + key.len();
            let name = &line[start..start + line[start..].find('"')?];
            name.contains(part).then(|| name.to_string())
        })
        .collect()
}

/// Waits (up to 20 s) until the broker shows exactly one connection whose name contains
/// `part`, and returns its name.
pub fn the_connection(part: &str) -> String {
    let give_up = Instant::now() + Duration::from_secs(20);
    loop {
        let names = connection_names(part);
        if names.len() == 1 {
            return names.into_iter().next().unwrap();
        }
        assert!(
            Instant::now() < give_up,
            "connections named like `{part}`: {names:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `rabbitmqctl list_queues name type arguments` for `queue`: its type and its arguments
/// as the broker prints them, or `None` if it does not exist.
pub fn queue_row(queue: &str) -> Option<(String, String)> {
    let listing = Command::new("rabbitmqctl")
        .args(["-q", "list_queues", "name", "type", "arguments"])
        .output()
        .expect("rabbitmqctl");
    assert!(listing.status.success(), "{listing:?}");
    String::from_utf8_lossy(&listing.stdout)
        .lines()
        .find_map(|line| {
            let mut columns = line.splitn(3, '\t');
            if columns.next()? != queue {
                return None;
            }
            Some((columns.next()?.to_string(), columns.next()?.to_string()))
        })
}

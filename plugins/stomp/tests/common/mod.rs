//! Helpers for the tests against the real RabbitMQ on this machine (STOMP on 61613, AMQP
//! on 5672): unique queues that delete themselves, a transport built from JSON, an AMQP
//! side door (lapin) to look into queues, a TCP proxy that can freeze a connection,
//! the broker-side close of one STOMP connection, and brokers that are down (for the
//! tests with several brokers).
//!
//! Other engineers use the same broker at the same time, so everything here touches only
//! what this test created: its own queues, and connections picked by their local port.

#![allow(dead_code)]

use std::{
    collections::HashSet,
    io::{Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use golconde_plugin_api::{
    sdk::parse_config, AckMode, ConsumeOptions, Consumer, Delivery, Message, Transport,
};
use golconde_stomp::{Config, Stomp, StompConsumer};
use lapin::{
    options::{
        BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::FieldTable,
    BasicProperties,
};

pub const STOMP: &str = "127.0.0.1:61613";
pub const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A queue name no other test (or engineer) uses.
pub fn unique(what: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "golconde-stomp-test-{what}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A transport for the local RabbitMQ; `extra` is JSON members added to (or replacing)
/// the defaults, e.g. `"heartbeat_ms": [500, 500]`.
pub fn transport_at(address: &str, extra: &str) -> Stomp {
    let mut json = format!(
        r#"{{"address": "{address}", "login": "guest", "passcode": "guest", "receipt_timeout_ms": 20000, "reconnect_initial_ms": 50, "reconnect_max_ms": 1000"#
    );
    if !extra.trim().is_empty() {
        // Later members win in serde_json's map, so `extra` overrides the defaults.
        let value: serde_json::Value =
            serde_json::from_str(&format!("{json}, {extra}}}")).expect("valid test JSON");
        json = value.to_string();
    } else {
        json.push('}');
    }
    Stomp::from_config(parse_config::<Config>(&json).expect("valid config")).expect("transport")
}

pub fn transport(extra: &str) -> Stomp {
    transport_at(STOMP, extra)
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

/// Receives until `n` deliveries came, failing the test after `limit`.
pub fn receive_n(consumer: &StompConsumer, n: usize, limit: Duration) -> Vec<Delivery> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} deliveries within {limit:?}",
            got.len()
        );
        got.extend(
            consumer
                .receive(n - got.len(), Duration::from_millis(500))
                .expect("receive"),
        );
    }
    got
}

/// The AMQP side of the same broker, to look into and clean up queues.
pub struct Amqp {
    runtime: tokio::runtime::Runtime,
    connection: lapin::Connection,
    channel: lapin::Channel,
}

impl Amqp {
    pub fn connect() -> Amqp {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (connection, channel) = runtime.block_on(async {
            let connection = lapin::Connection::connect(AMQP, Default::default())
                .await
                .expect("AMQP connection to the local RabbitMQ");
            let channel = connection.create_channel().await.expect("channel");
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .expect("confirms");
            (connection, channel)
        });
        Amqp {
            runtime,
            connection,
            channel,
        }
    }

    /// Declares a durable queue, as STOMP's `/queue/` destinations are.
    pub fn declare(&self, queue: &str) {
        self.runtime
            .block_on(self.channel.queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ))
            .expect("queue declared");
    }

    /// Declares a queue that disappears with the broker, unlike STOMP's `/queue/` ones.
    pub fn runtime_declare_transient(&self, queue: &str) {
        self.runtime
            .block_on(self.channel.queue_declare(
                queue.into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            ))
            .expect("queue declared");
    }

    /// Messages ready in `queue` (unacknowledged ones are not counted).
    pub fn ready(&self, queue: &str) -> u32 {
        self.runtime
            .block_on(self.channel.queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ))
            .expect("queue exists")
            .message_count()
    }

    pub fn delete(&self, queue: &str) {
        let _ = self.runtime.block_on(
            self.channel
                .queue_delete(queue.into(), QueueDeleteOptions::default()),
        );
    }

    pub fn publish(&self, queue: &str, body: &[u8], properties: BasicProperties) {
        self.runtime.block_on(async {
            self.channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    body,
                    properties,
                )
                .await
                .expect("published")
                .await
                .expect("confirmed");
        });
    }

    /// Takes one message off `queue` (auto-acknowledged).
    pub fn get(&self, queue: &str) -> Option<lapin::message::Delivery> {
        self.runtime
            .block_on(
                self.channel
                    .basic_get(queue.into(), BasicGetOptions { no_ack: true }),
            )
            .expect("basic.get")
            .map(|m| m.delivery)
    }
}

impl Drop for Amqp {
    fn drop(&mut self) {
        let _ = self
            .runtime
            .block_on(self.connection.close(200, "test done".into()));
    }
}

/// A durable queue of this test, deleted when the test ends, failed or not.
pub struct Queue {
    pub name: String,
    pub amqp: Amqp,
}

impl Queue {
    pub fn new(what: &str) -> Queue {
        let amqp = Amqp::connect();
        let name = unique(what);
        amqp.declare(&name);
        Queue { name, amqp }
    }

    pub fn ready(&self) -> u32 {
        self.amqp.ready(&self.name)
    }

    /// Asserts that `expected` messages end up ready. The broker requeues a closed
    /// consumer's unacknowledged messages just after it confirmed the DISCONNECT, so the
    /// count may take a moment to get there.
    #[track_caller]
    pub fn assert_ready(&self, expected: u32) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut ready = self.ready();
        while ready != expected && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            ready = self.ready();
        }
        assert_eq!(ready, expected, "messages ready in {}", self.name);
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.amqp.delete(&self.name);
    }
}

/// Publishes `n` messages with ids `prefix-0` ... through the plugin, in batches.
pub fn fill(transport: &Stomp, queue: &str, prefix: &str, n: usize) {
    let mut next = 0;
    while next < n {
        let batch: Vec<Message> = (next..n.min(next + 1000))
            .map(|i| message(&format!("{prefix}-{i}"), format!("body {i}").as_bytes()))
            .collect();
        transport.publish(queue, &batch).expect("published");
        next += batch.len();
    }
}

/// Closes, from the broker's side, the STOMP connection whose client port is `port`.
/// `rabbitmqctl close_connection` cannot reach STOMP connections (they are not listed by
/// `list_connections`), so this asks the STOMP adapter itself. Returns whether a
/// connection was closed.
///
/// Other tests open and close STOMP connections all the while: a reader listed a moment
/// ago may be gone when asked its port, so the question is caught per reader (one dead
/// reader must not fail the lookup of the live one), and a lookup that found nothing,
/// or that `rabbitmqctl` itself failed, is tried again for a few seconds.
pub fn close_from_broker(port: u16) -> bool {
    let code = format!(
        "[rabbit_stomp_reader:close_connection(P, \"golconde test\") || P <- rabbit_stomp:list(), \
         (catch rabbit_stomp_reader:info(P, [peer_port])) =:= [{{peer_port,{port}}}]]."
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let output = Command::new("rabbitmqctl")
            .args(["eval", &code])
            .output()
            .expect("rabbitmqctl runs");
        if String::from_utf8_lossy(&output.stdout).contains("ok") {
            return true;
        }
        if Instant::now() > deadline {
            eprintln!(
                "no STOMP connection from port {port} was closed: rabbitmqctl eval said {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A TCP proxy in front of the broker. It knows the local port of each of its
/// connections to the broker (to close them broker-side), and can go deaf: stop passing
/// the broker's bytes to the client on the connections open at that moment, while still
/// passing the client's, so that only the client can notice.
pub struct Proxy {
    pub address: String,
    state: Arc<ProxyState>,
}

#[derive(Default)]
struct ProxyState {
    accepted: AtomicUsize,
    /// Connections with an index below this no longer pass the broker's bytes on.
    deaf_below: AtomicUsize,
    upstream_ports: Mutex<Vec<u16>>,
    stopped: AtomicBool,
}

impl Proxy {
    pub fn start(target: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy port");
        let address = listener.local_addr().unwrap().to_string();
        let state = Arc::new(ProxyState::default());
        let target = target.to_string();
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if shared.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(upstream) = TcpStream::connect(&target) else {
                    continue;
                };
                let index = shared.accepted.fetch_add(1, Ordering::SeqCst);
                shared
                    .upstream_ports
                    .lock()
                    .unwrap()
                    .push(upstream.local_addr().unwrap().port());
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let (c2, u2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
                let s = shared.clone();
                std::thread::spawn(move || pump(client, upstream, None, s));
                let s = shared.clone();
                std::thread::spawn(move || pump(u2, c2, Some(index), s));
            }
        });
        Proxy { address, state }
    }

    pub fn connections(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// The broker-side local ports of every connection so far, oldest first.
    pub fn upstream_ports(&self) -> Vec<u16> {
        self.state.upstream_ports.lock().unwrap().clone()
    }

    /// From now on the broker seems silent on every connection open now.
    pub fn deafen_existing(&self) {
        self.state
            .deaf_below
            .store(self.state.accepted.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.address);
    }
}

/// Copies `from` to `to` until either ends, then closes both. With `deaf` set, bytes of
/// that connection are dropped once it is deafened.
fn pump(mut from: TcpStream, mut to: TcpStream, deaf: Option<usize>, state: Arc<ProxyState>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if deaf.is_some_and(|i| i < state.deaf_below.load(Ordering::SeqCst)) {
            continue;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Distinct message ids of `deliveries`.
pub fn ids(deliveries: &[Delivery]) -> HashSet<String> {
    deliveries.iter().map(id).collect()
}

/// Consumes with `transport` until nothing comes for a while, acknowledging everything:
/// used to prove a queue holds no more messages than expected.
pub fn consume_all(transport: &Stomp, queue: &str) -> Vec<Delivery> {
    let consumer = transport
        .consume(queue, options(100, AckMode::Cumulative))
        .expect("consumer");
    let mut all = Vec::new();
    loop {
        let got = consumer
            .receive(100, Duration::from_millis(1500))
            .expect("receive");
        let Some(last) = got.last() else { break };
        consumer.ack(last.tag, true).expect("ack");
        all.extend(got);
    }
    consumer.close().expect("close");
    all
}

/// A transport for the local RabbitMQ (guest/guest) that tries `addresses` in the order
/// given (`shuffle_addresses = false`); `extra` as for [`transport_at`].
pub fn transport_in_order(addresses: &[&str], extra: &str) -> Stomp {
    let mut config = serde_json::json!({
        "addresses": addresses,
        "login": "guest",
        "passcode": "guest",
        "receipt_timeout_ms": 20000,
        "connect_timeout_ms": 2000,
        "reconnect_initial_ms": 50,
        "reconnect_max_ms": 1000,
        "shuffle_addresses": false,
    });
    if !extra.trim().is_empty() {
        let extra: serde_json::Value =
            serde_json::from_str(&format!("{{{extra}}}")).expect("valid test JSON");
        for (key, value) in extra.as_object().expect("members") {
            config[key] = value.clone();
        }
    }
    Stomp::from_config(parse_config::<Config>(&config.to_string()).expect("valid config"))
        .expect("transport")
}

/// An address nothing listens on: connecting is refused at once.
pub fn closed_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let address = listener.local_addr().unwrap().to_string();
    drop(listener);
    address
}

/// A broker that is down behind its address: it takes TCP connections and then either
/// closes them at once or never says a word. Counts the connections it took.
pub struct DeadBroker {
    pub address: String,
    accepted: Arc<AtomicUsize>,
    stopped: Arc<AtomicBool>,
}

impl DeadBroker {
    /// Closes every connection as soon as it is made, before CONNECTED.
    pub fn closing() -> DeadBroker {
        DeadBroker::start(false)
    }

    /// Holds every connection open and silent, so that the client's timeout ends it.
    pub fn silent() -> DeadBroker {
        DeadBroker::start(true)
    }

    fn start(hold: bool) -> DeadBroker {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let address = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stopped = Arc::new(AtomicBool::new(false));
        let (count, stop) = (accepted.clone(), stopped.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                if hold {
                    held.push(client);
                } else {
                    let _ = client.shutdown(Shutdown::Both);
                }
            }
        });
        DeadBroker {
            address,
            accepted,
            stopped,
        }
    }

    /// How many connections were made to it.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for DeadBroker {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.address);
    }
}

//! The real services the end-to-end tests run against: a PostgreSQL database of the test's
//! own, and RabbitMQ queues of its own, both removed when the test ends.
//!
//! Test data goes onto the broker and comes back off it through the `amqp` plugin itself,
//! called in-process through its ABI constructor as the host would, so the tests need no
//! second AMQP client.

use std::{
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RArc, RSlice, RStr, RString},
};
use golconde_plugin_api::{
    abi::{Constructor, HostContext, TransportBox},
    log::{FfiLogSink, FfiLogSink_TO, LogLevel, LogRecord},
    sdk::{transport_entry, Transport},
    AckMode, ConsumeOptions, Message, PluginError,
};

use crate::broker::CONFIRM_LIMIT;

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub const PG: &str = "host=127.0.0.1 user=postgres";

/// A name unique to this test run: `golconde_e2e_{what}_{pid}_{n}`.
pub fn unique(what: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "golconde_e2e_{what}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A database of the test's own, dropped at the end.
pub struct Database {
    pub name: String,
    pub client: postgres::Client,
}

impl Database {
    /// Creates the database and runs `schema` in it.
    pub fn create(what: &str, schema: &str) -> Database {
        let name = unique(what);
        let mut admin = admin();
        admin
            .batch_execute(&format!("create database {name}"))
            .expect("create database");
        let mut client = postgres::Client::connect(&format!("{PG} dbname={name}"), postgres::NoTls)
            .expect("connect to the test database");
        client.batch_execute(schema).expect("schema");
        Database { name, client }
    }

    pub fn dsn(&self) -> String {
        format!("{PG} dbname={}", self.name)
    }

    /// Every row of `query`, each rendered as text columns joined by `|`.
    pub fn rows(&mut self, query: &str) -> Vec<String> {
        self.client
            .simple_query(query)
            .expect("query")
            .into_iter()
            .filter_map(|m| match m {
                postgres::SimpleQueryMessage::Row(row) => Some(
                    (0..row.len())
                        .map(|i| row.get(i).unwrap_or("NULL").to_string())
                        .collect::<Vec<_>>()
                        .join("|"),
                ),
                _ => None,
            })
            .collect()
    }

    pub fn count(&mut self, table: &str) -> i64 {
        self.rows(&format!("select count(*) from {table}"))[0]
            .parse()
            .expect("a count")
    }

    /// Ends every connection Golconde has open to this database.
    pub fn terminate_golconde_connections(&mut self) -> usize {
        // The timeout makes the call wait until each backend has ended, so none of them
        // commits anything once this returns.
        self.rows(&format!(
            "select pg_terminate_backend(pid, 10000) from pg_stat_activity \
             where datname = '{}' and pid <> pg_backend_pid()",
            self.name
        ))
        .len()
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = admin().batch_execute(&format!(
            "drop database if exists {} with (force)",
            self.name
        ));
    }
}

fn admin() -> postgres::Client {
    postgres::Client::connect(&format!("{PG} dbname=postgres"), postgres::NoTls)
        .expect("PostgreSQL on 127.0.0.1:5432 (scripts/test starts it)")
}

/// Prints what the in-process plugin logs, so a failing test shows it.
#[derive(Clone)]
struct StderrSink;

impl FfiLogSink for StderrSink {
    fn max_level(&self) -> LogLevel {
        LogLevel::Warn
    }

    fn log(&self, record: &LogRecord<'_>) {
        eprintln!("[test amqp client] {}", record.message);
    }
}

/// How to run `rabbitmqctl` against one node: the shared broker's by default.
#[derive(Clone)]
pub struct Rabbitmqctl {
    pub program: std::path::PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Rabbitmqctl {
    /// The local broker every other test shares, through the system's `rabbitmqctl`.
    pub fn shared() -> Rabbitmqctl {
        Rabbitmqctl {
            program: "rabbitmqctl".into(),
            args: vec!["-q".into()],
            env: Vec::new(),
        }
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args).envs(self.env.iter().cloned());
        command
    }
}

/// Builds transport `T` from its section (JSON) through its ABI constructor, as the host
/// does, logging to stderr.
pub fn construct_transport<T: Transport>(config: &str) -> Result<TransportBox, PluginError> {
    let Constructor::Transport(construct) = transport_entry::<T>().constructor else {
        unreachable!("a transport's entry has a transport's constructor");
    };
    construct_with(construct, config)
}

/// Builds transport `name` from its section (JSON) out of the build's plugin library
/// `file` (`libgolconde_nats.so`), loaded as the host loads it: plugin crates cannot be
/// linked into one binary, each exporting the symbols the host finds a library by.
pub fn load_transport(file: &str, name: &str, config: &str) -> Result<TransportBox, PluginError> {
    let path = crate::build_dir().join(file);
    let header = abi_stable::library::lib_header_from_path(&path)
        .unwrap_or_else(|e| panic!("{} does not load: {e}", path.display()));
    let module = header
        .init_root_module::<golconde_plugin_api::abi::PluginLibRef>()
        .unwrap_or_else(|e| panic!("{} is not a plugin library: {e}", path.display()));
    let entry = (module.plugins())()
        .into_iter()
        .find(|e| e.name.as_str() == name)
        .unwrap_or_else(|| panic!("{} has no plugin `{name}`", path.display()));
    let Constructor::Transport(construct) = entry.constructor else {
        panic!("`{name}` in {} is not a transport", path.display());
    };
    construct_with(construct, config)
}

fn construct_with(
    construct: extern "C" fn(
        RStr<'_>,
        HostContext,
    ) -> abi_stable::std_types::RResult<TransportBox, PluginError>,
    config: &str,
) -> Result<TransportBox, PluginError> {
    construct(
        RStr::from_str(config),
        HostContext {
            instance: RString::from("e2e"),
            log: FfiLogSink_TO::from_ptr(RArc::new(StderrSink), TD_Opaque),
        },
    )
    .into_result()
}

/// Queues of the test's own on the local RabbitMQ, deleted at the end.
pub struct Queues {
    transport: TransportBox,
    names: Vec<String>,
    ctl: Rabbitmqctl,
}

impl Queues {
    /// Queues the client declares durable before publishing, as Golconde does by default.
    pub fn new() -> Queues {
        Self::declaring(AMQP_URL, Rabbitmqctl::shared(), "durable")
    }

    /// Queues someone else declared, with arguments of their own: only checked for.
    pub fn passive() -> Queues {
        Self::declaring(AMQP_URL, Rabbitmqctl::shared(), "passive")
    }

    /// Durable queues on the test's own node.
    pub fn on(broker: &crate::broker::PrivateBroker) -> Queues {
        Self::declaring(&broker.url(), broker.rabbitmqctl(), "durable")
    }

    fn declaring(url: &str, ctl: Rabbitmqctl, declare: &str) -> Queues {
        let config = serde_json::json!({
            "url": url,
            "connection_name": unique("client"),
            "declare": declare,
        });
        let transport = construct_transport::<golconde_amqp::AmqpTransport>(&config.to_string())
            .expect("the amqp plugin builds");
        Queues {
            transport,
            names: Vec::new(),
            ctl,
        }
    }

    /// A new queue name, deleted with the others at the end.
    pub fn name(&mut self, what: &str) -> String {
        let name = unique(what).replace('_', ".");
        self.names.push(name.clone());
        name
    }

    /// Publishes each body as a persistent message, confirmed.
    pub fn publish(&self, queue: &str, bodies: &[String]) {
        for chunk in bodies.chunks(1000) {
            let messages: Vec<Message> = chunk.iter().map(|b| Message::new(b.as_bytes())).collect();
            self.transport
                .publish(RStr::from_str(queue), RSlice::from_slice(&messages))
                .into_result()
                .expect("publish");
        }
    }

    /// Publishes messages with their headers, confirmed.
    pub fn publish_messages(&self, queue: &str, messages: &[Message]) {
        self.transport
            .publish(RStr::from_str(queue), RSlice::from_slice(messages))
            .into_result()
            .expect("publish");
    }

    /// Publishes one message with a header table built by hand, through lapin itself: what
    /// the `amqp` plugin would never send (nested tables, any AMQP type).
    pub fn publish_with_headers(
        &self,
        queue: &str,
        body: &[u8],
        headers: lapin::types::FieldTable,
    ) {
        // lapin encodes, and Rust drops, a nested table by recursion.
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .stack_size(256 << 20)
                .spawn_scoped(scope, move || {
                    with_channel(|channel| async move {
                        // Declared as Golconde declares it: publishing to a queue that does
                        // not exist yet would drop the message, confirmed.
                        channel
                            .queue_declare(
                                queue.into(),
                                lapin::options::QueueDeclareOptions {
                                    durable: true,
                                    ..Default::default()
                                },
                                Default::default(),
                            )
                            .await
                            .expect("declare");
                        let confirm = channel
                            .basic_publish(
                                "".into(),
                                queue.into(),
                                lapin::options::BasicPublishOptions::default(),
                                body,
                                lapin::BasicProperties::default()
                                    .with_delivery_mode(2)
                                    .with_headers(headers),
                            )
                            .await
                            .expect("publish");
                        // lapin has been seen to drop its connection once a message with a
                        // header table thousands deep was out, the message delivered, and
                        // leave the confirmation pending for ever. What the caller checks
                        // next tells whether the message arrived.
                        match tokio::time::timeout(CONFIRM_LIMIT, confirm).await {
                            Ok(confirmed) => {
                                confirmed.expect("confirm");
                            }
                            Err(_) => eprintln!(
                                "no confirmation of the message to `{queue}` within \
                                 {CONFIRM_LIMIT:?}; going on"
                            ),
                        }
                    })
                })
                .expect("a publishing thread")
                .join()
                .expect("published");
        });
    }

    /// Takes every message now on `queue` (waiting `quiet` for stragglers) and acks them.
    pub fn drain(&self, queue: &str, quiet: Duration) -> Vec<Message> {
        let consumer = self
            .transport
            .consume(
                RStr::from_str(queue),
                ConsumeOptions {
                    prefetch: 1000,
                    ack_mode: AckMode::Cumulative,
                },
            )
            .into_result()
            .expect("consume");
        let mut out = Vec::new();
        loop {
            let batch = consumer
                .receive(1000, quiet.as_millis() as u64)
                .into_result()
                .expect("receive");
            let Some(last) = batch.last() else { break };
            consumer.ack(last.tag, true).into_result().expect("ack");
            out.extend(batch.into_iter().map(|d| d.message));
        }
        let _ = consumer.close();
        out
    }

    /// Declares `queue` durable with `x-single-active-consumer`: the broker delivers it to one
    /// consumer at a time and fails over to the next when that one goes away.
    pub fn declare_single_active_consumer(&mut self, queue: &str) {
        use lapin::types::{AMQPValue, FieldTable};
        with_channel(|channel| async move {
            let mut arguments = FieldTable::default();
            arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
            channel
                .queue_declare(
                    queue.into(),
                    lapin::options::QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    arguments,
                )
                .await
                .expect("declare");
        });
    }

    /// How many messages `queue` holds, ready and unacknowledged, per the broker.
    pub fn depth(&self, queue: &str) -> (u64, u64) {
        let output = self
            .ctl
            .command()
            .args([
                "list_queues",
                "name",
                "messages_ready",
                "messages_unacknowledged",
            ])
            .output()
            .expect("rabbitmqctl runs");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|line| {
                let mut fields = line.split_whitespace();
                (fields.next() == Some(queue)).then(|| {
                    let ready = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
                    let unacked = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
                    (ready, unacked)
                })
            })
            .unwrap_or((0, 0))
    }

    /// The pids of the broker connections whose client-provided name contains `name`
    /// (make it unique: other tests share the broker).
    pub fn connections_named(name: &str) -> Vec<String> {
        let output = Command::new("rabbitmqctl")
            .args(["-q", "list_connections", "pid", "client_properties"])
            .output()
            .expect("rabbitmqctl runs");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| line.contains(name))
            .filter_map(|line| line.split_whitespace().next().map(str::to_string))
            .collect()
    }

    /// The channel of the consumer on `queue`, if there is one: a consumer opened again
    /// gets another.
    pub fn consumer_channel(queue: &str) -> Option<String> {
        let output = Command::new("rabbitmqctl")
            .args(["-q", "list_consumers", "queue_name", "channel_pid"])
            .output()
            .expect("rabbitmqctl runs");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|line| {
                let mut fields = line.split_whitespace();
                (fields.next() == Some(queue))
                    .then(|| fields.next().unwrap_or_default().to_string())
            })
    }

    /// Closes every broker connection whose client-provided name contains `name`.
    pub fn close_connections(name: &str) -> usize {
        let mut closed = 0;
        for pid in Queues::connections_named(name) {
            let status = Command::new("rabbitmqctl")
                .args(["-q", "close_connection", &pid, "golconde end-to-end test"])
                .status()
                .expect("rabbitmqctl runs");
            if status.success() {
                closed += 1;
            }
        }
        closed
    }
}

/// A header table holding `name`, a table nested `depth` levels deep: what a hostile
/// producer could send. Dropping it recurses: hand it to [`Queues::publish_with_headers`],
/// which drops it on a thread with a large stack.
pub fn nested_header_table(name: &str, depth: usize) -> lapin::types::FieldTable {
    use lapin::types::{AMQPValue, FieldTable};
    let mut inner = FieldTable::default();
    for _ in 0..depth {
        let mut outer = FieldTable::default();
        outer.insert("a".into(), AMQPValue::FieldTable(inner));
        inner = outer;
    }
    let mut table = FieldTable::default();
    table.insert(name.into(), AMQPValue::FieldTable(inner));
    table
}

/// A header table of long strings.
pub fn flat_header_table(headers: &[(&str, &str)]) -> lapin::types::FieldTable {
    use lapin::types::{AMQPValue, FieldTable, LongString};
    let mut table = FieldTable::default();
    for (name, value) in headers {
        table.insert(
            (*name).into(),
            AMQPValue::LongString(LongString::from(*value)),
        );
    }
    table
}

/// Runs `work` on a channel of a connection of its own to the shared broker, with publisher
/// confirms on, and closes the connection after.
fn with_channel<F, W>(work: W)
where
    W: FnOnce(lapin::Channel) -> F,
    F: std::future::Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        // lapin's parser recurses on nested header tables.
        .thread_stack_size(64 << 20)
        .enable_all()
        .build()
        .expect("a runtime");
    let handle = runtime.handle().clone();
    runtime.block_on(async {
        let connection = lapin::Connection::connect_with_runtime(
            AMQP_URL,
            lapin::ConnectionProperties::default(),
            async_rs::Runtime::tokio_with_handle(handle),
        )
        .await
        .expect("RabbitMQ on 127.0.0.1:5672");
        let channel = connection.create_channel().await.expect("a channel");
        channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        work(channel).await;
        // Bounded, as the confirmation above: the connection may be gone unnoticed.
        let _ = tokio::time::timeout(CONFIRM_LIMIT, connection.close(200, "done".into())).await;
    });
}

impl Default for Queues {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Queues {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = self.ctl.command().args(["delete_queue", name]).output();
        }
    }
}

/// A configuration for real services: transports `rabbit` (AMQP, its connections named
/// `connection_name` so a test can cut exactly them) and `rabbit-stomp`, the given
/// databases (`[databases.NAME]` with `dsn` and any extra lines), and `pipelines` appended
/// as written.
pub fn real_config(
    connection_name: &str,
    databases: &[(&str, &Database, &str)],
    pipelines: &str,
) -> String {
    real_config_at(AMQP_URL, connection_name, databases, pipelines)
}

/// [`real_config`] with the `rabbit` transport pointed at `amqp_url`.
pub fn real_config_at(
    amqp_url: &str,
    connection_name: &str,
    databases: &[(&str, &Database, &str)],
    pipelines: &str,
) -> String {
    let mut text = format!(
        r#"
plugin_dirs = ["{{plugins}}"]
shutdown_grace_ms = 20000
[log]
level = "info"

[transports.rabbit]
plugin = "amqp"
url = "{amqp_url}"
connection_name = "{connection_name}"

[transports.rabbit-stomp]
plugin = "stomp"
address = "127.0.0.1:61613"
login = "guest"
passcode = "guest"
"#
    );
    for (name, database, extra) in databases {
        text.push_str(&format!(
            "\n[databases.{name}]\nplugin = \"postgres\"\ndsn = \"{}\"\n{extra}\n",
            database.dsn()
        ));
    }
    text.push_str(pipelines);
    text
}

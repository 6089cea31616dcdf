//! Faults in the middle of a stream of 20,000 messages, on RabbitMQ, NATS JetStream and
//! Redis Streams. Each test ends with the exact expected table and nothing left on the
//! queue: at-least-once, in order, nothing lost.

use std::time::Duration;

use golconde_e2e::{
    broker::PrivateBroker,
    eventually,
    services::{real_config, real_config_at, unique, Database, Queues, AMQP_URL},
    streams::{transport_section, Kind, PrivateServer, Streams},
    Daemon, Scratch,
};

const ITEMS: &str = "create table items (id bigint primary key, version int not null)";
const KEYS: u64 = 5_000;
const MESSAGES: u64 = 20_000;

/// How a test's pipeline is set up.
struct Setup<'a> {
    what: &'a str,
    /// The table, created with this statement.
    table: &'a str,
    schema: &'a str,
    /// The processor's inline table, after `plugin = `.
    processor: &'a str,
    database_extra: &'a str,
    dead_letter: bool,
    /// A node of the test's own instead of the shared broker.
    broker: Option<&'a PrivateBroker>,
    /// The pipeline's `batch` table.
    batch: &'a str,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            what: "stream",
            table: "items",
            schema: ITEMS,
            processor: "\"autosql\"",
            database_extra: "",
            dead_letter: false,
            broker: None,
            batch: "{ max_messages = 200, max_wait_ms = 10 }",
        }
    }
}

/// A stream of messages and the pipeline that replicates it.
struct Stream {
    queues: Queues,
    queue: String,
    dead: String,
    db: Database,
    config: std::path::PathBuf,
    connection_name: String,
    _scratch: Scratch,
}

impl Stream {
    fn new(setup: Setup<'_>) -> Stream {
        let what = setup.what;
        let (mut queues, url) = match setup.broker {
            Some(broker) => (Queues::on(broker), broker.url()),
            None => (Queues::new(), AMQP_URL.to_string()),
        };
        let queue = queues.name(what);
        let dead = queues.name(&format!("{what}-dead"));
        let db = Database::create(what, setup.schema);
        let scratch = Scratch::new();
        let connection_name = unique(what);
        let dead_letter = if setup.dead_letter {
            format!(r#"dead_letter = {{ transport = "rabbit", queue = "{dead}" }}"#)
        } else {
            String::new()
        };
        let config = scratch.config(&real_config_at(
            &url,
            &connection_name,
            &[("db", &db, setup.database_extra)],
            &format!(
                r#"
[[pipelines]]
name = "{what}"
transport = "rabbit"
queue = "{queue}"
processor = {{ plugin = {} }}
database = "db"
table = "{}"
workers = 2
batch = {}
retry = {{ initial_backoff_ms = 50, max_backoff_ms = 500 }}
{dead_letter}
"#,
                setup.processor, setup.table, setup.batch
            ),
        ));
        Stream {
            queues,
            queue,
            dead,
            db,
            config,
            connection_name,
            _scratch: scratch,
        }
    }

    fn publish_versions(&self) {
        let messages: Vec<String> = (0..MESSAGES)
            .map(|i| {
                format!(
                    r#"{{"action": "set", "data": {{"id": {}, "version": {i}}}}}"#,
                    i % KEYS
                )
            })
            .collect();
        self.queues.publish(&self.queue, &messages);
    }

    /// Waits until the daemon is part-way through the stream.
    fn wait_mid_stream(&self, daemon: &Daemon) {
        let started = eventually(Duration::from_secs(60), || {
            let (ready, _) = self.queues.depth(&self.queue);
            ready < MESSAGES * 3 / 4
        });
        assert!(started, "never got going; log:\n{}", daemon.log());
    }

    fn wait_drained(&self, daemon: &Daemon) {
        let drained = eventually(Duration::from_secs(120), || {
            self.queues.depth(&self.queue) == (0, 0)
        });
        assert!(
            drained,
            "queue not drained: {:?}; log:\n{}",
            self.queues.depth(&self.queue),
            daemon.log()
        );
    }

    fn at_last_versions(&mut self) -> bool {
        let at_last = self.db.rows(&format!(
            "select count(*) from items where version = id + {}",
            MESSAGES - KEYS
        ));
        at_last == [KEYS.to_string()]
    }

    fn assert_last_versions(&mut self) {
        let expected: Vec<String> = (0..KEYS)
            .map(|id| format!("{id}|{}", MESSAGES - KEYS + id))
            .collect();
        assert_eq!(
            self.db.rows("select id, version from items order by id"),
            expected
        );
    }
}

#[test]
fn database_connections_killed_mid_stream() {
    let mut s = Stream::new(Setup {
        what: "pgkill",
        ..Setup::default()
    });
    s.publish_versions();
    let daemon = Daemon::start(&s.config);
    s.wait_mid_stream(&daemon);
    let (mut killed, mut mid_stream) = (0, false);
    for _ in 0..3 {
        let n = s.db.terminate_golconde_connections();
        killed += n;
        // On a loaded machine the stream may be done before a kill lands (messages
        // applied but not yet acknowledged still count on the queue): only when the
        // table is short of its last versions after every session was ended must a batch
        // have been retried.
        mid_stream |= n > 0 && !s.at_last_versions();
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(killed > 0, "no Golconde connection to kill");
    s.wait_drained(&daemon);
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    if mid_stream {
        assert!(log.contains("retrying the batch"), "{log}");
    }
    s.assert_last_versions();
}

#[test]
fn broker_connections_closed_mid_stream() {
    let mut s = Stream::new(Setup {
        what: "amqpclose",
        ..Setup::default()
    });
    s.publish_versions();
    let daemon = Daemon::start(&s.config);
    s.wait_mid_stream(&daemon);
    let closed = Queues::close_connections(&s.connection_name);
    assert!(closed > 0, "no Golconde connection to close");
    s.wait_drained(&daemon);
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    s.assert_last_versions();
}

#[test]
fn broker_restarted_mid_stream() {
    let mut broker = PrivateBroker::start("restart");
    let mut s = Stream::new(Setup {
        what: "restart",
        broker: Some(&broker),
        // Small batches keep the stream going for seconds, so the node goes down while
        // messages are ready and in flight.
        batch: "{ max_messages = 5, max_wait_ms = 10 }",
        ..Setup::default()
    });
    s.publish_versions();
    let daemon = Daemon::start(&s.config);
    s.wait_mid_stream(&daemon);
    // Down for as long as a node takes to stop and boot: the consumer's reconnect attempts
    // are refused meanwhile, and the batches in flight cannot be acknowledged.
    let (ready, unacked) = s.queues.depth(&s.queue);
    assert!(
        ready + unacked > 0,
        "drained before the restart; nothing was under test"
    );
    eprintln!("restarting the broker with {ready} ready and {unacked} unacknowledged");
    broker.restart();
    s.wait_drained(&daemon);
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("consuming queue"), "{log}");
    assert!(
        log.contains("trying again in"),
        "no reconnect attempt logged:\n{log}"
    );
    s.assert_last_versions();
}

#[test]
fn kill_9_then_restart() {
    let mut s = Stream::new(Setup {
        what: "kill9",
        ..Setup::default()
    });
    s.publish_versions();
    let daemon = Daemon::start(&s.config);
    s.wait_mid_stream(&daemon);
    daemon.kill();
    let daemon = Daemon::start(&s.config);
    s.wait_drained(&daemon);
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    s.assert_last_versions();
}

#[test]
fn a_processor_panicking_on_one_message_dead_letters_it_and_applies_the_rest() {
    // fixture-rows turns {"key", "value"} into an upsert of (key, value): here into
    // PostgreSQL, with the real broker.
    let mut s = Stream::new(Setup {
        what: "panic",
        table: "rows",
        schema: "create table rows (key text primary key, value text not null)",
        processor: r#""fixture-rows", panic_always_on = "poison""#,
        dead_letter: true,
        ..Setup::default()
    });
    let mut messages: Vec<String> = (0..MESSAGES)
        .map(|i| format!(r#"{{"key": "k{}", "value": "{i}"}}"#, i % KEYS))
        .collect();
    messages.insert(
        12_345,
        r#"{"key": "poisoned", "value": "poison"}"#.to_string(),
    );
    s.queues.publish(&s.queue, &messages);

    let daemon = Daemon::start(&s.config);
    s.wait_drained(&daemon);
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("always panics on value poison"), "{log}");
    let expected: std::collections::BTreeSet<String> = (0..KEYS)
        .map(|k| format!("k{k}|{}", MESSAGES - KEYS + k))
        .collect();
    let rows: std::collections::BTreeSet<String> =
        s.db.rows("select key, value from rows")
            .into_iter()
            .collect();
    assert_eq!(rows, expected);
    let letters = s.queues.drain(&s.dead, Duration::from_millis(500));
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].header("x-golconde-error-kind"), Some("panic"));
    assert_eq!(letters[0].header("x-golconde-attempts"), Some("3"));
}

#[test]
fn sigterm_under_load_then_restart_loses_and_doubles_nothing() {
    let mut s = Stream::new(Setup {
        what: "sigterm",
        table: "events",
        schema: "create table events (serial bigserial primary key, ref text not null)",
        database_extra: "dedupe = true",
        ..Setup::default()
    });
    let messages: Vec<String> = (0..MESSAGES)
        .map(|i| {
            format!(r#"{{"action": "add", "id": "event-{i}", "data": {{"ref": "event-{i}"}}}}"#)
        })
        .collect();
    s.queues.publish(&s.queue, &messages);

    let daemon = Daemon::start(&s.config);
    s.wait_mid_stream(&daemon);
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    let applied = s.db.count("events");
    assert!(
        applied > 0 && applied < MESSAGES as i64,
        "stopped at {applied}"
    );

    let daemon = Daemon::start(&s.config);
    s.wait_drained(&daemon);
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert_eq!(
        s.db.rows("select count(*), count(distinct ref) from events"),
        [format!("{MESSAGES}|{MESSAGES}")]
    );
}

/// What goes wrong in the middle of a stream on NATS or Redis.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StreamFault {
    /// The server is stopped and started again.
    ServerRestart,
    /// The daemon is killed with SIGKILL and started again: its unacknowledged messages
    /// must come back, and apply before newer ones.
    Kill9,
}

/// A stream of versions on a NATS or Redis server of the test's own, hit by `fault` while
/// the daemon is part-way through it: the final table is exact (every key at its last
/// version, so nothing applied out of order), nothing is left unacknowledged.
fn stream_fault_mid_stream(kind: Kind, fault: StreamFault) {
    let what = match fault {
        StreamFault::ServerRestart => "restart",
        StreamFault::Kill9 => "kill9",
    };
    let mut server = PrivateServer::start(kind);
    let mut streams = Streams::at(kind, &server.url());
    let queue = streams.name(what);
    let pipeline = unique(&format!("{}-{what}", kind.plugin()));
    let mut db = Database::create(&format!("{}_{what}", kind.plugin()), ITEMS);
    let scratch = Scratch::new();
    let mut text = real_config(&unique(what), &[("db", &db, "")], "");
    text.push_str(&transport_section("stream", kind, &server.url()));
    // What a killed process held comes back after these: short, so the test is quick, and
    // longer than the rest of the stream takes.
    text.push_str(match kind {
        Kind::Nats => "ack_wait_ms = 5000\n",
        Kind::Redis => "claim_idle_ms = 5000\n",
    });
    text.push_str(&format!(
        r#"
[[pipelines]]
name = "{pipeline}"
transport = "stream"
queue = "{queue}"
processor = {{ plugin = "autosql" }}
database = "db"
table = "items"
workers = 2
batch = {{ max_messages = 5, max_wait_ms = 10 }}
retry = {{ initial_backoff_ms = 50, max_backoff_ms = 500 }}
"#
    ));
    let config = scratch.config(&text);
    let messages: Vec<String> = (0..MESSAGES)
        .map(|i| {
            format!(
                r#"{{"action": "set", "data": {{"id": {}, "version": {i}}}}}"#,
                i % KEYS
            )
        })
        .collect();
    streams.publish(&queue, &messages);

    let mut daemon = Daemon::start(&config);
    // A kill late in the stream, while what the daemon holds are not yet its keys' last
    // versions: the daemon that follows would reach those last versions before the held
    // messages come back (after ack_wait_ms / claim_idle_ms), so applying the held ones
    // after newer ones would show in the final table.
    let threshold = match fault {
        StreamFault::ServerRestart => MESSAGES * 3 / 4,
        StreamFault::Kill9 => MESSAGES * 2 / 5,
    };
    let started = eventually(Duration::from_secs(60), || {
        streams
            .unacked(&queue, &pipeline)
            .is_some_and(|left| left < threshold)
    });
    assert!(started, "never got going; log:\n{}", daemon.log());
    let left = streams.unacked(&queue, &pipeline).unwrap_or(0);
    assert!(left > 0, "drained before the fault; nothing was under test");
    match fault {
        StreamFault::ServerRestart => {
            eprintln!(
                "restarting {}-server with {left} unacknowledged",
                kind.plugin()
            );
            server.restart();
        }
        StreamFault::Kill9 => {
            eprintln!("killing the daemon with {left} unacknowledged");
            daemon.kill();
            daemon = Daemon::start(&config);
        }
    }
    let drained = eventually(Duration::from_secs(120), || {
        streams.unacked(&queue, &pipeline) == Some(0)
    });
    assert!(
        drained,
        "not drained: {:?} left; log:\n{}",
        streams.unacked(&queue, &pipeline),
        daemon.log()
    );
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    let expected: Vec<String> = (0..KEYS)
        .map(|id| format!("{id}|{}", MESSAGES - KEYS + id))
        .collect();
    let rows = db.rows("select id, version from items order by id");
    let wrong: Vec<String> = expected
        .iter()
        .zip(&rows)
        .filter(|(want, got)| want != got)
        .take(10)
        .map(|(want, got)| format!("{got} (expected {want})"))
        .collect();
    assert!(
        rows.len() == expected.len() && wrong.is_empty(),
        "{} rows for {} keys; rows not at their last version (the first ten): {wrong:?}; the \
         log ends:\n{}",
        rows.len(),
        expected.len(),
        {
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        }
    );
}

#[test]
fn nats_server_restarted_mid_stream() {
    stream_fault_mid_stream(Kind::Nats, StreamFault::ServerRestart);
}

#[test]
fn redis_server_restarted_mid_stream() {
    stream_fault_mid_stream(Kind::Redis, StreamFault::ServerRestart);
}

#[test]
fn nats_kill_9_then_restart() {
    stream_fault_mid_stream(Kind::Nats, StreamFault::Kill9);
}

#[test]
fn redis_kill_9_then_restart() {
    stream_fault_mid_stream(Kind::Redis, StreamFault::Kill9);
}

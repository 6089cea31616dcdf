//! Golconde on a three-node RabbitMQ cluster of the test's own (docs/operations.md, "High
//! availability"): a node lost under a stream costs a pause of seconds and not a row, and
//! two processes on single-active-consumer partitions behind a consistent-hash exchange
//! keep every row's order when one of them is killed.
//!
//! Every row applied is recorded, with the server's clock, by a trigger on the table
//! (`history`): the pauses are read from it (the longest stretch with no row applied around
//! each fault), and so is every version each row went through, in the order applied.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime},
};

use golconde_e2e::{
    broker::{Cluster, Producer},
    eventually,
    services::{unique, Database},
    with_stats, Daemon, Scratch,
};
use lapin::types::AMQPValue;

/// The replicated table, and `history`, one row per row written, in the order written.
const SCHEMA: &str = r#"
create table items (id bigint primary key, version int not null);
create table history (
    seq bigserial primary key,
    id bigint not null,
    version int not null,
    at timestamptz not null default clock_timestamp()
);
create function record() returns trigger language plpgsql as $$
begin
    insert into history (id, version) values (new.id, new.version);
    return null;
end $$;
create trigger record after insert or update on items
    for each row execute function record();
"#;

const KEYS: u64 = 250;
/// The stream publishes at least this many messages, and goes on until the faults are over.
const MESSAGES: u64 = 20_000;
/// Each round publishes the next `ROUND` messages, every `PACE` until the faults are over
/// (however long a loaded machine takes to lose and start nodes: a stream that ended
/// before a fault would leave nothing to tell whether Golconde went on), then as fast as
/// the broker takes them. The pace is the resolution of the pauses measured: Golconde keeps
/// up, so a stretch with no row applied longer than `PACE` is a fault's. A round never
/// holds a row twice (`ROUND` <= `KEYS`), so one published again after a lost connection
/// never puts a row back on the queue.
const ROUND: u64 = 10;
const PACE: Duration = Duration::from_millis(40);

/// Message `i` of the stream: row `i % KEYS` at version `i`, with its own id.
fn change(i: u64) -> String {
    format!(
        r#"{{"action": "set", "id": "change-{i}", "data": {{"id": {}, "version": {i}}}}}"#,
        i % KEYS
    )
}

/// Every row at its last version, once messages `0..published` are applied (`published`
/// is a multiple of `KEYS`).
fn last_versions(published: u64) -> Vec<String> {
    (0..KEYS)
        .map(|id| format!("{id}|{}", published - KEYS + id))
        .collect()
}

/// A configuration with one transport `rabbit` on every node of `cluster` and one database
/// `db`; `transport_extra` and `database_extra` are lines added to their sections.
fn config(
    cluster: &Cluster,
    connection_name: &str,
    transport_extra: &str,
    db: &Database,
    database_extra: &str,
    pipelines: &str,
) -> String {
    let urls: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        r#"
plugin_dirs = ["{{plugins}}"]
shutdown_grace_ms = 20000
[log]
level = "info"

[transports.rabbit]
plugin = "amqp"
url = [{}]
connection_name = "{connection_name}"
reconnect_initial_ms = 100
reconnect_max_ms = 1000
{transport_extra}

[databases.db]
plugin = "postgres"
dsn = "{}"
{database_extra}
{pipelines}
"#,
        urls.join(", "),
        db.dsn()
    )
}

/// Now, in seconds since 1970, as the database's `clock_timestamp()` counts (same host).
fn now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64()
}

/// Messages `0, 1, 2, ...` published from a thread of its own in paced rounds until told
/// to finish, through any node that answers.
struct Stream {
    thread: std::thread::JoinHandle<u64>,
    finishing: Arc<AtomicBool>,
    /// How many messages the broker confirmed so far: a failure says whether the stream
    /// or Golconde stopped.
    published: Arc<AtomicU64>,
}

impl Stream {
    /// Publishes the (routing key, body) `message` makes of each number to `exchange`.
    fn start(
        cluster: &Cluster,
        exchange: &str,
        message: impl Fn(u64) -> (String, String) + Send + 'static,
    ) -> Stream {
        let finishing = Arc::new(AtomicBool::new(false));
        let published = Arc::new(AtomicU64::new(0));
        let mut producer = Producer::new(cluster.urls(), &unique("producer"));
        let exchange = exchange.to_string();
        let thread = std::thread::spawn({
            let finishing = finishing.clone();
            let published = published.clone();
            move || {
                let mut next = 0;
                // Once finishing, up to a whole number of passes over the rows, so that
                // every row's last version is known.
                while !(finishing.load(Ordering::SeqCst) && next >= MESSAGES && next % KEYS == 0) {
                    let round: Vec<(String, String)> = (next..next + ROUND).map(&message).collect();
                    let due = Instant::now() + PACE;
                    producer.publish(&exchange, &round, Duration::from_secs(60));
                    next += ROUND;
                    published.store(next, Ordering::SeqCst);
                    if !finishing.load(Ordering::SeqCst) {
                        std::thread::sleep(due.saturating_duration_since(Instant::now()));
                    }
                }
                next
            }
        });
        Stream {
            thread,
            finishing,
            published,
        }
    }

    /// Publishes the rest without pauses, waits until it is all on the broker, and says how
    /// many messages were published in all.
    fn finish(self) -> u64 {
        self.finishing.store(true, Ordering::SeqCst);
        self.thread
            .join()
            .expect("the producer published everything")
    }
}

/// The longest stretch with no row applied that ends after `from` and by `to` (seconds
/// since 1970): (when the last row before it was applied, when the next one was).
fn longest_stall(db: &mut Database, from: f64, to: f64) -> (f64, f64) {
    let times: Vec<f64> = db
        .rows(&format!(
            "select extract(epoch from at) from history \
             where at between to_timestamp({}) and to_timestamp({to}) order by at",
            from - 30.0
        ))
        .iter()
        .map(|t| t.parse().expect("a time"))
        .collect();
    times
        .windows(2)
        .map(|w| (w[0], w[1]))
        .filter(|&(_, next)| next > from)
        .max_by(|a, b| (a.1 - a.0).total_cmp(&(b.1 - b.0)))
        .unwrap_or((from, to))
}

/// Waits until a row is applied after `after` (seconds since 1970); fails the test with
/// `state` (what the stream and the broker had then) and the daemon's log if none is
/// within `limit`.
fn wait_for_rows_after(
    db: &mut Database,
    after: f64,
    limit: Duration,
    daemon: &Daemon,
    state: impl Fn() -> String,
) {
    let flowing = eventually(limit, || {
        db.rows(&format!(
            "select count(*) from history where at > to_timestamp({after})"
        ))[0]
            != "0"
    });
    assert!(
        flowing,
        "no row applied within {limit:?} of the fault; {}; log:\n{}",
        state(),
        daemon.log()
    );
}

/// The sum over a daemon's pipelines of `counter` (`received`, `dead_lettered`, ...), from
/// its `/stats` at `address`.
fn counter(address: &str, counter: &str) -> u64 {
    golconde_e2e::stats(address)["pipelines"]
        .as_array()
        .expect("pipelines")
        .iter()
        .map(|p| p[counter].as_u64().unwrap_or(0))
        .sum()
}

/// Rows whose version went down from one write to the next: (row, from, to).
fn versions_gone_back(db: &mut Database) -> Vec<String> {
    db.rows(
        "select id, previous, version from ( \
             select id, version, lag(version) over (partition by id order by seq) as previous \
             from history) h \
         where version < previous order by id limit 20",
    )
}

/// How a node is lost.
#[derive(Clone, Copy, PartialEq)]
enum Loss {
    /// `rabbitmqctl stop`, as an operator's restart.
    Stop,
    /// SIGKILL to its VM, as a crash.
    Kill,
}

/// The first test's cluster, queue, daemon and table, and what each fault cost.
struct Ha {
    cluster: Cluster,
    queue: String,
    /// What Golconde's consumer connection is named, for `rabbitmqctl list_connections`.
    consumer: String,
    db: Database,
    daemon: Daemon,
    /// The daemon's `/stats` address.
    stats: String,
    /// Each fault, with the longest stretch with no row applied around it, in seconds.
    pauses: Vec<(&'static str, f64)>,
}

impl Ha {
    /// Loses node `node` while the stream runs, waits for rows to be applied again, and
    /// measures and prints the pause, from the rows applied and from the daemon's log.
    fn lose(&mut self, what: &'static str, node: usize, how: Loss, stream: &Stream) {
        let was_leader = self.cluster.leader(&self.queue) == Some(node);
        let logged = self.daemon.log().len();
        let issued = now();
        match how {
            Loss::Stop => self.cluster.stop_node(node),
            Loss::Kill => self.cluster.kill_node(node),
        }
        // The stream goes on until the faults are over: rows applied after the loss tell
        // that Golconde went on.
        let published = stream.published.load(Ordering::SeqCst);
        wait_for_rows_after(
            &mut self.db,
            now(),
            Duration::from_secs(60),
            &self.daemon,
            || {
                format!(
                    "the stream had published {published} messages at the fault and {} now; \
                     `{}` holds {:?} (ready, unacknowledged), led by node {:?}; \
                     Golconde consumes through nodes {:?}",
                    stream.published.load(Ordering::SeqCst),
                    self.queue,
                    self.cluster.depth(&self.queue),
                    self.cluster.leader(&self.queue),
                    self.cluster.nodes_with_connections(&self.consumer),
                )
            },
        );
        let moved = eventually(Duration::from_secs(60), || {
            let on = self.cluster.nodes_with_connections(&self.consumer);
            !on.is_empty() && !on.contains(&node)
        });
        assert!(
            moved,
            "consuming through {:?} after node {node} was lost",
            self.cluster.nodes_with_connections(&self.consumer)
        );
        if was_leader {
            let elected = eventually(Duration::from_secs(30), || {
                self.cluster
                    .leader(&self.queue)
                    .is_some_and(|leader| leader != node)
            });
            assert!(elected, "no new leader for `{}`", self.queue);
        }
        let (last, next) = longest_stall(&mut self.db, issued, now());
        let pause = next - last;
        eprintln!(
            "{what} (node {node}): no row applied for {pause:.2} s, from {:+.2} s to {:+.2} s \
             after the {} was issued",
            last - issued,
            next - issued,
            if how == Loss::Stop { "stop" } else { "kill" }
        );
        let log = self.daemon.log();
        for line in log.get(logged..).unwrap_or_default().lines() {
            if line.contains(&self.queue) || line.contains("broker") {
                let after = seconds_of_day(line).map(|at| {
                    // Both are UTC: the difference, wrapped across midnight.
                    (at - issued.rem_euclid(86_400.0) + 43_200.0).rem_euclid(86_400.0) - 43_200.0
                });
                let line = line.get(28..).unwrap_or(line).trim();
                match after {
                    Some(after) => eprintln!("    {after:+.2} s {line}"),
                    None => eprintln!("    {line}"),
                }
            }
        }
        self.pauses.push((what, pause));
    }

    /// Starts `node` again and waits until it is back in the cluster.
    fn bring_back(&mut self, node: usize) {
        self.cluster.start_node(node);
        let cluster = &self.cluster;
        assert!(
            eventually(Duration::from_secs(60), || cluster.running_nodes().len()
                == cluster.len()),
            "node {node} did not rejoin"
        );
        // The next loss may take another node: the queue keeps a majority only if this
        // node's replica runs again first.
        let queue = &self.queue;
        assert!(
            eventually(Duration::from_secs(60), || cluster.online(queue).len()
                == cluster.len()),
            "the replica of `{queue}` on node {node} did not come back: online {:?}",
            cluster.online(queue)
        );
    }

    /// The queue's leader, after moving Golconde's consumer off its node.
    fn leader_apart_from_golconde(&self) -> usize {
        let leader = self
            .cluster
            .leader(&self.queue)
            .expect("the queue has a leader");
        move_consumer_off(&self.cluster, &self.consumer, leader);
        leader
    }

    /// The node Golconde consumes through, after moving it off the leader's node.
    fn golconde_apart_from_leader(&self) -> usize {
        let leader = self
            .cluster
            .leader(&self.queue)
            .expect("the queue has a leader");
        move_consumer_off(&self.cluster, &self.consumer, leader)
    }
}

/// When a log line was written, in seconds since midnight UTC: each starts with the time
/// in RFC 3339 (`2026-05-09T07:32:38.123456Z`).
fn seconds_of_day(line: &str) -> Option<f64> {
    let field = |range: std::ops::Range<usize>| line.get(range)?.parse::<f64>().ok();
    Some(field(11..13)? * 3600.0 + field(14..16)? * 60.0 + field(17..26)?)
}

/// Closes the daemon's consumer connection until it consumes through a node other than
/// `node`; returns the node it consumes through then. Golconde reconnects to the next
/// node of its list, so this takes at most as many closes as there are nodes.
fn move_consumer_off(cluster: &Cluster, consumer: &str, node: usize) -> usize {
    for _ in 0..cluster.len() * 2 {
        match cluster.nodes_with_connections(consumer)[..] {
            [on] if on != node => return on,
            [_] => {
                cluster.close_connections(consumer);
            }
            // Reconnecting.
            _ => {}
        }
        eventually(
            Duration::from_secs(10),
            || matches!(cluster.nodes_with_connections(consumer)[..], [on] if on != node),
        );
    }
    panic!("Golconde's consumer stays on node {node}");
}

/// A three-node cluster, a quorum queue with a replica on each node, and a stream of changes
/// published while Golconde consumes with the three nodes' URLs. Mid-stream the node
/// Golconde consumes through is stopped; once it is back, the node leading the queue is
/// stopped; once that one is back, the new leader is killed. Each time Golconde carries on
/// within seconds (through another node, or with the queue's new leader), and every row
/// ends at its last version, nothing dead-lettered, nothing left on the queue.
#[test]
fn losing_a_node_costs_a_pause_of_seconds_and_no_row() {
    let cluster = Cluster::start("ha", 3);
    eprintln!(
        "a 3-node cluster started in {:.1} s",
        cluster.started_in.as_secs_f64()
    );
    let queue = unique("ha").replace('_', ".");
    let dead = format!("{queue}.dead");
    cluster.declare_quorum_queue(&queue, &[]);
    assert_eq!(cluster.members(&queue), [0, 1, 2], "a replica on each node");
    let db = Database::create("ha", SCHEMA);
    let scratch = Scratch::new();
    let connection_name = unique("ha");
    let mut daemon = Daemon::start(&scratch.config(&with_stats(&config(
        &cluster,
        &connection_name,
        // Quorum queues with a replica on every node: the source queue as the test
        // declared it, and the dead-letter queue, which Golconde declares.
        r#"queue_type = "quorum"
arguments = { "x-quorum-initial-group-size" = 3 }"#,
        &db,
        "",
        &format!(
            r#"
[[pipelines]]
name = "ha"
transport = "rabbit"
queue = "{queue}"
processor = "autosql"
database = "db"
table = "items"
workers = 2
batch = {{ max_messages = 200, max_wait_ms = 10 }}
retry = {{ initial_backoff_ms = 50, max_backoff_ms = 500 }}
dead_letter = {{ transport = "rabbit", queue = "{dead}" }}
"#
        ),
    ))));
    daemon.wait_for_log("pipeline(s) running", Duration::from_secs(60));
    let stats = daemon.stats_address();
    let mut ha = Ha {
        cluster,
        queue: queue.clone(),
        consumer: format!("{connection_name} consumer"),
        db,
        daemon,
        stats,
        pauses: Vec::new(),
    };

    let stream = Stream::start(&ha.cluster, "", move |i| (queue.clone(), change(i)));
    assert!(
        eventually(Duration::from_secs(60), || ha.db.count("items")
            == KEYS as i64),
        "the stream never got going; log:\n{}",
        ha.daemon.log()
    );
    let node = ha.golconde_apart_from_leader();
    ha.lose(
        "the node Golconde consumed through",
        node,
        Loss::Stop,
        &stream,
    );
    // Two of three replicas are a majority, one is not: each node lost comes back before
    // the next is.
    ha.bring_back(node);
    let node = ha.leader_apart_from_golconde();
    ha.lose("the queue's leader", node, Loss::Stop, &stream);
    ha.bring_back(node);
    let node = ha.leader_apart_from_golconde();
    ha.lose("the queue's leader, killed", node, Loss::Kill, &stream);
    let published = stream.finish();

    let Ha {
        cluster,
        queue,
        mut db,
        daemon,
        stats,
        pauses,
        ..
    } = ha;
    let drained = eventually(Duration::from_secs(120), || cluster.depth(&queue) == (0, 0));
    let dead_lettered = counter(&stats, "dead_lettered");
    let (status, log) = daemon.stop();
    assert!(
        drained,
        "queue not drained: {:?}; log:\n{log}",
        cluster.depth(&queue)
    );
    assert!(status.success(), "{log}");
    assert!(
        log.contains(&format!("consuming queue `{queue}` again, on")),
        "{log}"
    );
    assert_eq!(
        db.rows("select id, version from items order by id"),
        last_versions(published)
    );
    assert_eq!(dead_lettered, 0, "nothing dead-lettered; log:\n{log}");
    assert_eq!(cluster.depth(&dead), (0, 0), "log:\n{log}");
    for (what, pause) in pauses {
        // Seconds, not the reconnect backoff's ceiling or a heartbeat timeout.
        assert!(
            pause < 30.0,
            "losing {what} stalled Golconde for {pause:.1} s; log:\n{log}"
        );
    }
}

const PARTITIONS: usize = 4;

/// Partitioned scale-out on the cluster: a consistent-hash exchange over four
/// single-active-consumer quorum queues, two Golconde processes each with a pipeline per
/// queue, and a producer routing each change by its row. The process that holds the
/// queues is killed (SIGKILL) mid-stream; the other takes them over. Every row ends at its
/// last version, and none ever went back to an older one on the way: with `dedupe` a
/// replayed change is skipped, and the single active consumer keeps the processes from
/// applying one partition side by side.
#[test]
fn two_processes_on_partitions_keep_each_rows_order_when_one_is_killed() {
    let cluster = Cluster::start("parts", 3);
    eprintln!(
        "a 3-node cluster started in {:.1} s",
        cluster.started_in.as_secs_f64()
    );
    let base = unique("parts").replace('_', ".");
    let exchange = format!("{base}.changes");
    let partitions: Vec<String> = (0..PARTITIONS).map(|p| format!("{base}.{p}")).collect();
    for queue in &partitions {
        cluster.declare_quorum_queue(
            queue,
            &[("x-single-active-consumer", AMQPValue::Boolean(true))],
        );
    }
    cluster.declare_consistent_hash_exchange(&exchange, &partitions);
    let mut db = Database::create("parts", SCHEMA);
    let pipelines: String = partitions
        .iter()
        .enumerate()
        .map(|(p, queue)| {
            format!(
                r#"
[[pipelines]]
name = "part{p}"
transport = "rabbit"
queue = "{queue}"
processor = "autosql"
database = "db"
table = "items"
workers = 2
batch = {{ max_messages = 100, max_wait_ms = 5 }}
retry = {{ initial_backoff_ms = 50, max_backoff_ms = 500 }}
"#
            )
        })
        .collect();
    let scratches: Vec<Scratch> = (0..2).map(|_| Scratch::new()).collect();
    let mut daemons: Vec<(Daemon, String)> = scratches
        .iter()
        .map(|scratch| {
            // Each process declares the partitions as the test did, through the keys an
            // operator would write.
            let text = config(
                &cluster,
                &unique("parts"),
                r#"queue_type = "quorum"
arguments = { "x-single-active-consumer" = true, "x-quorum-initial-group-size" = 3 }"#,
                &db,
                "dedupe = true",
                &pipelines,
            );
            let mut daemon = Daemon::start(&scratch.config(&with_stats(&text)));
            // The first to subscribe is each queue's active consumer.
            daemon.wait_for_log("pipeline(s) running", Duration::from_secs(60));
            let stats = daemon.stats_address();
            (daemon, stats)
        })
        .collect();

    // The row is the routing key: the exchange sends all of a row's changes to one queue.
    let stream = Stream::start(&cluster, &exchange, |i| ((i % KEYS).to_string(), change(i)));
    assert!(
        eventually(Duration::from_secs(60), || db.count("items") == KEYS as i64),
        "the stream never got going; log:\n{}",
        daemons[0].0.log()
    );
    let (first, first_stats) = daemons.remove(0);
    let (survivor, survivor_stats) = daemons.remove(0);
    assert!(
        counter(&first_stats, "received") > 0,
        "the first process is each partition's consumer"
    );
    assert_eq!(
        counter(&survivor_stats, "received"),
        0,
        "the second waits, receiving nothing"
    );
    let killed_at = now();
    first.kill();
    let published = stream.published.load(Ordering::SeqCst);
    wait_for_rows_after(&mut db, now(), Duration::from_secs(60), &survivor, || {
        format!(
            "the stream had published {published} messages at the kill and {} now",
            stream.published.load(Ordering::SeqCst)
        )
    });
    assert!(
        counter(&survivor_stats, "received") > 0,
        "the second took the partitions over"
    );
    let (last, next) = longest_stall(&mut db, killed_at, now());
    eprintln!(
        "the process holding the partitions was killed: the other took them over, no row \
         applied for {:.2} s",
        next - last
    );

    let published = stream.finish();
    let drained = eventually(Duration::from_secs(120), || {
        partitions.iter().all(|q| cluster.depth(q) == (0, 0))
    });
    let (status, log) = survivor.stop();
    assert!(drained, "partitions not drained; log:\n{log}");
    assert!(status.success(), "{log}");
    assert_eq!(
        db.rows("select id, version from items order by id"),
        last_versions(published)
    );
    assert_eq!(
        versions_gone_back(&mut db),
        Vec::<String>::new(),
        "rows went back to an older version (row|from|to)"
    );
    eprintln!(
        "{} writes, every row's versions in the order published",
        db.count("history")
    );
}

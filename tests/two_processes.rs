//! Two Golconde processes on the same partitioned queues keep per-row order, also when one
//! of them dies: each partition is a single-active-consumer queue, the producer routes by
//! key, and the broker fails a partition over to the surviving process (docs/operations.md).

use std::time::Duration;

use golconde_e2e::{
    eventually,
    services::{real_config, unique, Database, Queues},
    Daemon, Scratch,
};

const PARTITIONS: u64 = 2;
const KEYS: u64 = 200;
const MESSAGES: u64 = 40_000;

#[test]
fn two_processes_on_single_active_consumer_partitions_keep_row_order() {
    let mut queues = Queues::passive();
    let partitions: Vec<String> = (0..PARTITIONS)
        .map(|p| queues.name(&format!("part{p}")))
        .collect();
    for queue in &partitions {
        queues.declare_single_active_consumer(queue);
    }
    let mut db = Database::create(
        "partitions",
        "create table items (id bigint primary key, version int not null)",
    );
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
processor = {{ plugin = "autosql" }}
database = "db"
table = "items"
workers = 2
batch = {{ max_messages = 100, max_wait_ms = 5 }}
retry = {{ initial_backoff_ms = 50, max_backoff_ms = 500 }}
"#
            )
        })
        .collect();
    let mut daemons = Vec::new();
    let scratches: Vec<Scratch> = (0..2).map(|_| Scratch::new()).collect();
    for scratch in &scratches {
        // The queues carry arguments of their own: only check that they exist.
        let text = real_config(&unique("partitions"), &[("db", &db, "")], &pipelines).replace(
            "connection_name =",
            "declare = \"passive\"\nconnection_name =",
        );
        daemons.push(Daemon::start(&scratch.config(&text)));
    }
    for daemon in &mut daemons {
        daemon.wait_for_log("pipeline(s) running", Duration::from_secs(30));
    }

    // The producer routes every change of a row to the row's partition, while the first
    // process (the active consumer of both partitions: it subscribed first) works.
    let producer = {
        let partitions = partitions.clone();
        std::thread::spawn(move || {
            let client = Queues::passive();
            for i in (0..MESSAGES).step_by(1000) {
                for (p, queue) in partitions.iter().enumerate() {
                    let messages: Vec<String> = (i..i + 1000)
                        .filter(|i| (i % KEYS) % PARTITIONS == p as u64)
                        .map(|i| {
                            format!(
                                r#"{{"action": "set", "data": {{"id": {}, "version": {i}}}}}"#,
                                i % KEYS
                            )
                        })
                        .collect();
                    client.publish(queue, &messages);
                }
            }
        })
    };
    assert!(eventually(Duration::from_secs(60), || db.count("items") > 0));
    let first = daemons.remove(0);
    first.kill();
    let still_publishing = !producer.is_finished();
    let left: u64 = partitions
        .iter()
        .map(|q| {
            let (ready, unacked) = queues.depth(q);
            ready + unacked
        })
        .sum();
    producer.join().expect("the producer published everything");
    // The survivor must have work to take over: messages the first left behind, or those
    // the producer (slower than the consumers when the machine is busy) had yet to publish.
    assert!(
        left > 0 || still_publishing,
        "the first process finished everything before it was killed"
    );
    let drained = eventually(Duration::from_secs(120), || {
        partitions.iter().all(|q| queues.depth(q) == (0, 0))
    });
    let survivor = daemons.remove(0);
    let (status, log) = survivor.stop();
    assert!(drained, "partitions not drained; log:\n{log}");
    assert!(status.success(), "{log}");
    let expected: Vec<String> = (0..KEYS)
        .map(|id| format!("{id}|{}", MESSAGES - KEYS + id))
        .collect();
    assert_eq!(
        db.rows("select id, version from items order by id"),
        expected
    );
}

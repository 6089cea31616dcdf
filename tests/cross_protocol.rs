//! A pipeline switches protocol by changing one line: messages published over AMQP are
//! consumed over STOMP from the same RabbitMQ queue, fanned out over STOMP, and consumed
//! back over AMQP, and both databases end identical.

use std::time::Duration;

use golconde_e2e::{
    eventually,
    services::{real_config, unique, Database, Queues},
    Daemon, Scratch,
};

const SCHEMA: &str = "create table users (id bigserial primary key, name text not null, score int)";

#[test]
fn amqp_to_stomp_and_back() {
    let mut queues = Queues::new();
    let source = queues.name("source");
    let replica_queue = queues.name("replica");
    let mut primary = Database::create("xp_primary", SCHEMA);
    let mut replica = Database::create("xp_replica", SCHEMA);
    let scratch = Scratch::new();
    let config = scratch.config(&real_config(
        &unique("xp"),
        &[("primary", &primary, ""), ("replica", &replica, "")],
        &format!(
            r#"
[[pipelines]]
name = "primary"
transport = "rabbit-stomp"
queue = "{source}"
processor = {{ plugin = "autosql" }}
database = "primary"
table = "users"
fan_out = [ {{ transport = "rabbit-stomp", queue = "{replica_queue}" }} ]

[[pipelines]]
name = "replica"
transport = "rabbit"
queue = "{replica_queue}"
processor = {{ plugin = "autosql" }}
database = "replica"
table = "users"
"#
        ),
    ));
    let mut daemon = Daemon::start(&config);
    daemon.wait_for_log("pipeline(s) running", Duration::from_secs(30));

    let adds: Vec<String> = (0..500)
        .map(|i| format!(r#"{{"action": "add", "data": {{"name": "user {i}", "score": {i}}}}}"#))
        .collect();
    queues.publish(&source, &adds);
    let query = "select id, name, score from users order by id";
    let arrived = eventually(Duration::from_secs(60), || replica.count("users") == 500);
    let (status, log) = daemon.stop();
    assert!(
        arrived,
        "replica has {} rows; log:\n{log}",
        replica.count("users")
    );
    assert!(status.success(), "{log}");
    let rows = primary.rows(query);
    assert_eq!(rows.len(), 500);
    // Generated keys travelled with the fan-out copies: the replica has the same ids.
    assert_eq!(rows, replica.rows(query));
    assert_eq!(queues.depth(&source), (0, 0));
    assert_eq!(queues.depth(&replica_queue), (0, 0));
}

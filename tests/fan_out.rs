//! Fan-out across protocols: a primary fed over AMQP fans every committed change out to
//! replicas consumed over AMQP and STOMP (the same RabbitMQ), and over NATS JetStream and
//! Redis Streams. All databases end identical, generated keys included.

use std::time::Duration;

use golconde_e2e::{
    eventually,
    services::{real_config, unique, Database, Queues},
    streams::{transport_section, Kind, Streams, NATS_URL, REDIS_URL},
    Daemon, Scratch,
};

const SCHEMA: &str = "create table users (id bigserial primary key, name text not null, score int)";

fn pipeline(name: &str, transport: &str, queue: &str, database: &str, fan_out: &str) -> String {
    format!(
        r#"
[[pipelines]]
name = "{name}"
transport = "{transport}"
queue = "{queue}"
processor = {{ plugin = "autosql" }}
database = "{database}"
table = "users"
fan_out = [ {fan_out} ]
"#
    )
}

#[test]
fn a_primary_and_two_replicas_over_amqp_and_stomp_end_identical() {
    let mut queues = Queues::new();
    let source = queues.name("source");
    let to_amqp = queues.name("replica-amqp");
    let to_stomp = queues.name("replica-stomp");
    let mut primary = Database::create("fan_primary", SCHEMA);
    let mut amqp_replica = Database::create("fan_amqp", SCHEMA);
    let mut stomp_replica = Database::create("fan_stomp", SCHEMA);
    let scratch = Scratch::new();
    let mut pipelines = pipeline(
        "primary",
        "rabbit",
        &source,
        "primary",
        &format!(
            r#"{{ transport = "rabbit", queue = "{to_amqp}" }}, {{ transport = "rabbit-stomp", queue = "{to_stomp}" }}"#
        ),
    );
    pipelines.push_str(&pipeline(
        "replica-amqp",
        "rabbit",
        &to_amqp,
        "amqp_replica",
        "",
    ));
    pipelines.push_str(&pipeline(
        "replica-stomp",
        "rabbit-stomp",
        &to_stomp,
        "stomp_replica",
        "",
    ));
    let config = scratch.config(&real_config(
        &unique("fan"),
        &[
            ("primary", &primary, ""),
            ("amqp_replica", &amqp_replica, ""),
            ("stomp_replica", &stomp_replica, ""),
        ],
        &pipelines,
    ));
    let mut daemon = Daemon::start(&config);
    daemon.wait_for_log("pipeline(s) running", Duration::from_secs(30));

    // New rows over AMQP, then updates of some of them sent over STOMP to the same queue.
    let adds: Vec<String> = (0..500)
        .map(|i| format!(r#"{{"action": "add", "data": {{"name": "user {i}", "score": {i}}}}}"#))
        .collect();
    queues.publish(&source, &adds);
    let updates = scratch.path("updates.jsonl");
    let lines: String = (0..100)
        .map(|i| {
            format!(
                "{{\"action\": \"update\", \"data\": {{\"score\": {}}}, \"restriction\": {{\"name\": \"user {i}\"}}}}\n",
                i + 1000
            )
        })
        .collect();
    std::fs::write(&updates, lines).unwrap();
    let sent = golconde_e2e::golconde()
        .args([
            "send",
            "--config",
            config.to_str().unwrap(),
            "--transport",
            "rabbit-stomp",
        ])
        .args(["--queue", &source, updates.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );

    let query = "select id, name, score from users order by id";
    let settled = |db: &mut Database| {
        db.rows("select count(*), coalesce(sum(score), 0) from users") == ["500|224750"]
    };
    let arrived = eventually(Duration::from_secs(60), || {
        settled(&mut primary) && settled(&mut amqp_replica) && settled(&mut stomp_replica)
    });
    let (status, log) = daemon.stop();
    assert!(arrived, "log:\n{log}");
    assert!(status.success(), "{log}");
    let rows = primary.rows(query);
    assert_eq!(rows.len(), 500);
    assert_eq!(rows, amqp_replica.rows(query));
    assert_eq!(rows, stomp_replica.rows(query));
    for queue in [&source, &to_amqp, &to_stomp] {
        assert_eq!(queues.depth(queue), (0, 0), "{queue}");
    }
}

#[test]
fn a_primary_fed_over_amqp_fans_out_to_replicas_over_nats_and_redis() {
    let mut queues = Queues::new();
    let mut nats = Streams::new(Kind::Nats);
    let mut redis = Streams::new(Kind::Redis);
    let source = queues.name("source");
    let to_nats = nats.name("replica-nats");
    let to_redis = redis.name("replica-redis");
    let mut primary = Database::create("fan_primary", SCHEMA);
    let mut nats_replica = Database::create("fan_nats", SCHEMA);
    let mut redis_replica = Database::create("fan_redis", SCHEMA);
    let scratch = Scratch::new();
    // Pipeline names unique to the run: the broker names its consumers after them.
    let (nats_pipeline, redis_pipeline) = (unique("nats-replica"), unique("redis-replica"));
    let mut pipelines = pipeline(
        "primary",
        "rabbit",
        &source,
        "primary",
        &format!(
            r#"{{ transport = "nats", queue = "{to_nats}" }}, {{ transport = "redis", queue = "{to_redis}" }}"#
        ),
    );
    pipelines.push_str(&pipeline(
        &nats_pipeline,
        "nats",
        &to_nats,
        "nats_replica",
        "",
    ));
    pipelines.push_str(&pipeline(
        &redis_pipeline,
        "redis",
        &to_redis,
        "redis_replica",
        "",
    ));
    let mut text = real_config(
        &unique("fan"),
        &[
            ("primary", &primary, ""),
            ("nats_replica", &nats_replica, ""),
            ("redis_replica", &redis_replica, ""),
        ],
        "",
    );
    text.push_str(&transport_section("nats", Kind::Nats, NATS_URL));
    text.push_str(&transport_section("redis", Kind::Redis, REDIS_URL));
    text.push_str(&pipelines);
    let config = scratch.config(&text);
    let mut daemon = Daemon::start(&config);
    daemon.wait_for_log("pipeline(s) running", Duration::from_secs(30));

    // Adds with ids (their copies carry the change id, which JetStream deduplicates on),
    // then updates and deletes of some of them, in order.
    let mut messages: Vec<String> = (0..500)
        .map(|i| {
            format!(
                r#"{{"action": "add", "id": "add-{i}", "data": {{"name": "user {i}", "score": {i}}}}}"#
            )
        })
        .collect();
    messages.extend((0..100).map(|i| {
        format!(
            r#"{{"action": "update", "data": {{"score": {}}}, "restriction": {{"name": "user {i}"}}}}"#,
            i + 1000
        )
    }));
    messages.extend(
        (400..450)
            .map(|i| format!(r#"{{"action": "delete", "restriction": {{"name": "user {i}"}}}}"#)),
    );
    queues.publish(&source, &messages);

    let query = "select id, name, score from users order by id";
    let expected_sum: i64 = (0..500).sum::<i64>() + 100 * 1000 - (400..450).sum::<i64>();
    let expected = [format!("450|{expected_sum}")];
    let settled = |db: &mut Database| {
        db.rows("select count(*), coalesce(sum(score), 0) from users") == expected
    };
    let arrived = eventually(Duration::from_secs(60), || {
        settled(&mut primary) && settled(&mut nats_replica) && settled(&mut redis_replica)
    });
    let (status, log) = daemon.stop();
    assert!(arrived, "log:\n{log}");
    assert!(status.success(), "{log}");
    let rows = primary.rows(query);
    assert_eq!(rows.len(), 450);
    assert_eq!(rows, nats_replica.rows(query), "NATS replica");
    assert_eq!(rows, redis_replica.rows(query), "Redis replica");
    assert_eq!(queues.depth(&source), (0, 0));
    // Each replica's consumer is the pipeline's, and has nothing left.
    assert_eq!(nats.unacked(&to_nats, &nats_pipeline), Some(0));
    assert_eq!(redis.unacked(&to_redis, &redis_pipeline), Some(0));
    assert_eq!(redis.len(&to_redis), 650, "every copy was added once");
}

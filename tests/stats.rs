//! `[stats] listen` serves each pipeline's counters as JSON and in the Prometheus format.

use std::time::Duration;

use golconde_e2e::{
    body, eventually, fixture_config, http_get as get,
    services::{real_config, unique, Database, Queues},
    with_stats, Daemon, Scratch,
};

#[test]
fn counters_are_served_over_http() {
    let scratch = Scratch::new();
    scratch.enqueue("counted", &[("a", "1"), ("b", "2"), ("c", "3")]);
    scratch.enqueue_raw("counted", "not JSON");
    scratch.enqueue("counted", &[("d", "s3cret-value")]);
    let text = with_stats(&fixture_config(
        "counted",
        "rows.jsonl",
        "",
        r#"dead_letter = { transport = "files", queue = "counted-dead" }"#,
    ))
    .replace(
        "path = \"{dir}/rows.jsonl\"",
        "path = \"{dir}/rows.jsonl\"\nreject_value = \"s3cret-value\"",
    );
    let config = scratch.config(&text);
    let mut daemon = Daemon::start(&config);
    let address = daemon.stats_address();
    assert!(eventually(Duration::from_secs(20), || scratch
        .acked("counted")
        == 5));

    let response = get(&address, "/stats");
    assert!(
        response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"),
        "{response}"
    );
    let stats: serde_json::Value = serde_json::from_str(body(&response)).expect("JSON");
    let pipeline = &stats["pipelines"][0];
    assert_eq!(pipeline["name"], "counted");
    assert_eq!(pipeline["received"], 5, "{stats}");
    assert_eq!(pipeline["applied"], 3, "{stats}");
    assert_eq!(pipeline["dead_lettered"], 2, "{stats}");
    assert_eq!(pipeline["acknowledged"], 5, "{stats}");
    let last_error = pipeline["last_error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        last_error.contains("dead-lettered message") && last_error.contains("permanent"),
        "{stats}"
    );
    // The reason quotes the row; it is in the dead letter and the log, never over HTTP.
    assert!(!response.contains("s3cret-value"), "{response}");
    assert!(!get(&address, "/metrics").contains("s3cret-value"));
    assert!(daemon.log().contains("Key (value)=(s3cret-value)"));

    let metrics = get(&address, "/metrics");
    assert!(
        body(&metrics).contains("golconde_applied_total{pipeline=\"counted\"} 3"),
        "{metrics}"
    );
    assert_eq!(body(&get(&address, "/health")), "ok\n");
    assert!(get(&address, "/nope").contains(" 404"));
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

/// The lag of a pipeline on RabbitMQ is what waits on its queue, as the broker counts it.
#[test]
fn lag_is_what_waits_on_the_queue() {
    let mut queues = Queues::new();
    let queue = queues.name("lag");
    let mut db = Database::create(
        "lag",
        "create table items (id bigint primary key, version int not null)",
    );
    // A pipeline that takes at most 10 messages off the queue and cannot commit them
    // while the test holds the table locked: everything else waits on the queue. (A
    // table that does not exist would stop the pipeline, and with it the daemon, before
    // the lag is read.)
    db.client
        .batch_execute("begin; lock table items in access exclusive mode")
        .expect("lock");
    let scratch = Scratch::new();
    let config = scratch.config(&with_stats(&real_config(
        &unique("lag"),
        &[("db", &db, "")],
        &format!(
            r#"
[[pipelines]]
name = "stalled"
transport = "rabbit"
queue = "{queue}"
processor = "autosql"
database = "db"
table = "items"
prefetch = 10
batch = {{ max_messages = 10, max_wait_ms = 5 }}
"#
        ),
    )));
    let messages: Vec<String> = (0..200)
        .map(|i| format!(r#"{{"action": "set", "data": {{"id": {i}, "version": 1}}}}"#))
        .collect();
    queues.publish(&queue, &messages);
    let mut daemon = Daemon::start(&config);
    let address = daemon.stats_address();
    let lag = || {
        let stats: serde_json::Value =
            serde_json::from_str(body(&get(&address, "/stats"))).expect("JSON");
        stats["pipelines"][0]["lag"].as_u64()
    };
    let told = eventually(Duration::from_secs(30), || lag() == Some(190));
    assert!(told, "lag {:?}; log:\n{}", lag(), daemon.log());
    let metrics = get(&address, "/metrics");
    assert!(
        body(&metrics).contains(&format!(
            "golconde_lag_messages{{pipeline=\"stalled\",queue=\"{queue}\"}} 190"
        )),
        "{metrics}"
    );
    db.client.batch_execute("rollback").expect("unlock");
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

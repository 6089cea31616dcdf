//! `/metrics` after real messages went through RabbitMQ into PostgreSQL: the histograms of
//! a pipeline in the daemon's threads and of one in a process of its own hold the real
//! counts, and `[stats] token` guards every route but `/health`.

use std::time::{Duration, SystemTime};

use golconde_e2e::{
    body, eventually, http_get, http_get_with,
    services::{real_config, unique, Database, Queues},
    Daemon, Scratch,
};
use golconde_plugin_api::Message;

const ITEMS: &str = "create table items (id bigint primary key, note text)";
const TOKEN: &str = "e2e-t0ken/with+signs";
/// Messages per pipeline with a `timestamp` (the AMQP property), and without one.
const STAMPED: u64 = 300;
const UNSTAMPED: u64 = 20;

fn pipeline(name: &str, queue: &str, extra: &str) -> String {
    format!(
        r#"
[[pipelines]]
name = "{name}"
transport = "rabbit"
queue = "{queue}"
processor = {{ plugin = "autosql" }}
database = "db"
table = "items"
workers = 2
batch = {{ max_messages = 50, max_wait_ms = 20 }}
retry = {{ initial_backoff_ms = 50, max_backoff_ms = 1000 }}
{extra}
"#
    )
}

/// The value of the sample `series` (name and labels, as exposed), if there is one.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split(' ').next()?.parse().ok()
    })
}

#[track_caller]
fn value(metrics: &str, series: &str) -> f64 {
    sample(metrics, series).unwrap_or_else(|| panic!("no `{series}` in:\n{metrics}"))
}

fn status(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[test]
fn histograms_hold_real_counts_and_the_token_guards_every_route_but_health() {
    let mut queues = Queues::new();
    let in_threads = queues.name("metrics-threads");
    let in_process = queues.name("metrics-process");
    let mut db = Database::create("metrics", ITEMS);
    let scratch = Scratch::new();
    let pipelines = pipeline("threads", &in_threads, "")
        + &pipeline("process", &in_process, "isolation = \"process\"");
    let text = real_config(&unique("metrics"), &[("db", &db, "")], &pipelines).replacen(
        "[log]",
        &format!("[stats]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\n[log]"),
        1,
    );
    let config = scratch.config(&text);

    // Stamped a thousand seconds ago: their ages fall between 600 and 1800 seconds.
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1000;
    for (offset, queue) in [(0, &in_threads), (100_000, &in_process)] {
        let stamped: Vec<Message> = (0..STAMPED)
            .map(|i| {
                let body = format!(r#"{{"action": "set", "data": {{"id": {}}}}}"#, offset + i);
                Message::new(body).with_header("timestamp", stamp.to_string())
            })
            .collect();
        queues.publish_messages(queue, &stamped);
        let bare: Vec<String> = (STAMPED..STAMPED + UNSTAMPED)
            .map(|i| format!(r#"{{"action": "set", "data": {{"id": {}}}}}"#, offset + i))
            .collect();
        queues.publish(queue, &bare);
    }

    let mut daemon = Daemon::start(&config);
    let address = daemon.stats_address();
    let total = 2 * (STAMPED + UNSTAMPED);
    let drained = eventually(Duration::from_secs(120), || {
        db.count("items") as u64 == total
            && queues.depth(&in_threads) == (0, 0)
            && queues.depth(&in_process) == (0, 0)
    });
    assert!(drained, "not all applied; log:\n{}", daemon.log());

    let bearer = format!("Bearer {TOKEN}");
    let authorized = [("Authorization", bearer.as_str())];
    // The process reports after each batch; wait for its last report.
    let settled = eventually(Duration::from_secs(20), || {
        let metrics = http_get_with(&address, "/metrics", &authorized);
        sample(
            &metrics,
            "golconde_acknowledged_total{pipeline=\"process\"}",
        ) == Some((STAMPED + UNSTAMPED) as f64)
            && sample(
                &metrics,
                "golconde_in_flight_messages{pipeline=\"process\"}",
            ) == Some(0.0)
    });
    let response = http_get_with(&address, "/metrics", &authorized);
    assert!(settled, "{response}");
    assert_eq!(status(&response), 200, "{response}");
    assert!(
        response.contains("Content-Type: application/openmetrics-text"),
        "{response}"
    );
    let metrics = body(&response);
    for name in ["threads", "process"] {
        let label = format!("{{pipeline=\"{name}\"}}");
        let le = |bound: &str| format!("{{le=\"{bound}\",pipeline=\"{name}\"}}");
        let messages = (STAMPED + UNSTAMPED) as f64;
        assert_eq!(
            value(metrics, &format!("golconde_received_total{label}")),
            messages
        );
        // Every message was in some batch, and no batch was larger than the limit.
        let batches = value(
            metrics,
            &format!("golconde_batch_size_messages_count{label}"),
        );
        assert!(batches >= messages / 50.0, "{name}: {batches} batches");
        assert_eq!(
            value(metrics, &format!("golconde_batch_size_messages_sum{label}")),
            messages
        );
        assert_eq!(
            value(
                metrics,
                &format!("golconde_batch_size_messages_bucket{}", le("50.0"))
            ),
            batches,
        );
        // Each batch was applied by one or both workers, in one transaction each.
        let applies = value(
            metrics,
            &format!("golconde_batch_apply_seconds_count{label}"),
        );
        assert!(
            applies >= batches && applies <= 2.0 * batches,
            "{name}: {applies} applies for {batches} batches"
        );
        assert!(value(metrics, &format!("golconde_batch_apply_seconds_sum{label}")) > 0.0);
        assert_eq!(
            value(
                metrics,
                &format!("golconde_batch_apply_seconds_bucket{}", le("+Inf"))
            ),
            applies
        );
        // Only the stamped messages have an age, all of them about a thousand seconds.
        let ages = "golconde_message_age_seconds";
        assert_eq!(
            value(metrics, &format!("{ages}_count{label}")),
            STAMPED as f64
        );
        assert_eq!(
            value(metrics, &format!("{ages}_bucket{}", le("600.0"))),
            0.0
        );
        assert_eq!(
            value(metrics, &format!("{ages}_bucket{}", le("1800.0"))),
            STAMPED as f64
        );
        let mean_age = value(metrics, &format!("{ages}_sum{label}")) / STAMPED as f64;
        assert!((1000.0..1800.0).contains(&mean_age), "{name}: {mean_age}");
        // Nothing in flight now, and both workers alive.
        assert_eq!(
            value(metrics, &format!("golconde_in_flight_messages{label}")),
            0.0
        );
        assert_eq!(
            value(metrics, &format!("golconde_workers_alive{label}")),
            2.0
        );
        assert_eq!(
            value(
                metrics,
                &format!("golconde_pipeline_state{{pipeline=\"{name}\",state=\"running\"}}")
            ),
            1.0
        );
    }
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");

    // The token: every route but /health wants it.
    for path in [
        "/",
        "/stats",
        "/metrics",
        "/api/series",
        "/assets/dashboard.js",
    ] {
        let refused = http_get(&address, path);
        assert_eq!(status(&refused), 401, "{path}: {refused}");
        assert!(refused.contains("Authorization: Bearer"), "{refused}");
        assert!(!refused.contains("golconde_"), "{refused}");
        let wrong = http_get_with(&address, path, &[("Authorization", "Bearer nope")]);
        assert_eq!(status(&wrong), 401, "{path}: {wrong}");
        let allowed = http_get_with(&address, path, &authorized);
        assert_eq!(status(&allowed), 200, "{path}: {allowed}");
    }
    assert_eq!(body(&http_get(&address, "/health")), "ok\n");
    // A browser signs in once with the token in the address, and then goes by cookie.
    let signed_in = http_get(&address, "/?token=e2e-t0ken%2Fwith%2Bsigns");
    assert_eq!(status(&signed_in), 303, "{signed_in}");
    let cookie = signed_in
        .lines()
        .find_map(|l| l.strip_prefix("Set-Cookie: "))
        .unwrap_or_else(|| panic!("no cookie: {signed_in}"));
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    // The series are sampled once a second: a daemon this young may not have both yet.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let series = http_get_with(&address, "/api/series", &[("Cookie", pair)]);
        assert_eq!(status(&series), 200, "{series}");
        let series: serde_json::Value = serde_json::from_str(body(&series)).expect("JSON");
        let count = series["pipelines"].as_array().map(Vec::len);
        if count == Some(2) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{count:?} pipelines in the series"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        status(&http_get(&address, "/?token=wrong")),
        401,
        "a wrong token signs nobody in"
    );

    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

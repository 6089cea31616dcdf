//! Process isolation: a pipeline in a process of its own survives a plugin that crashes
//! natively (a segmentation fault, an abort, a stack overflow, running out of memory),
//! which no `catch_unwind` can stop. The crash costs that pipeline a restart; the other
//! pipelines go on; the message that keeps crashing it is set aside after three crashes.

use std::time::Duration;

use golconde_e2e::{alive, children_of, eventually, with_stats, Daemon, Scratch};

/// A configuration with the file-backed fixtures and one pipeline per `(queue, extra)`.
fn config(pipelines: &[(&str, &str)], top: &str) -> String {
    let mut text = format!(
        r#"
plugin_dirs = ["{{plugins}}"]
shutdown_grace_ms = 5000
{top}
[log]
level = "info"

[transports.files]
plugin = "fixture-queue"
dir = "{{dir}}"

[databases.table]
plugin = "fixture-table"
path = "{{dir}}/rows.jsonl"
"#
    );
    for (queue, extra) in pipelines {
        text.push_str(&format!(
            r#"
[[pipelines]]
name = "{queue}"
transport = "files"
queue = "{queue}"
processor = {{ plugin = "fixture-rows", crashes = true, table = "{queue}" }}
database = "table"
table = "{queue}"
batch = {{ max_messages = 50, max_wait_ms = 5 }}
retry = {{ initial_backoff_ms = 10, max_backoff_ms = 200 }}
dead_letter = {{ transport = "files", queue = "{queue}-dead" }}
{extra}
"#
        ));
    }
    text
}

fn header(message: &serde_json::Value, name: &str) -> String {
    message["headers"]
        .as_array()
        .and_then(|h| h.iter().find(|h| h[0] == name))
        .and_then(|h| h[1].as_str())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_native_crash_costs_one_pipeline_a_restart_and_the_message_is_set_aside() {
    let scratch = Scratch::new();
    let modes = [
        ("segfault", "died of SIGSEGV"),
        ("abort", "died of SIGABRT"),
        ("overflow", "died of SIGABRT"),
        ("oom", "died of SIGABRT"),
    ];
    let steady: Vec<(String, String)> = (0..2000)
        .map(|i| (format!("k{i}"), format!("{i}")))
        .collect();
    let steady: Vec<(&str, &str)> = steady
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    scratch.enqueue("steady", &steady);
    let mut pipelines = vec![("steady", "")];
    for (mode, _) in modes {
        scratch.enqueue(
            mode,
            &[("a", "1"), ("b", "2"), ("x", mode), ("c", "3"), ("d", "4")],
        );
        pipelines.push((
            mode,
            if mode == "oom" {
                "memory_limit_mb = 256"
            } else {
                ""
            },
        ));
    }
    let text = with_stats(&config(&pipelines, "isolation = \"process\""));
    let daemon = Daemon::start(&scratch.config(&text));
    let done = eventually(Duration::from_secs(120), || {
        scratch.acked("steady") == 2000 && modes.iter().all(|(mode, _)| scratch.acked(mode) == 5)
    });
    let log = daemon.log();
    assert!(done, "not everything was acknowledged; log:\n{log}");
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");

    let writes = scratch.writes("rows.jsonl");
    for (mode, died) in modes {
        assert!(
            log.contains(&format!("pipeline `{mode}` {died}")),
            "no crash of `{mode}` logged:\n{log}"
        );
        let dead = scratch.published(&format!("{mode}-dead"));
        assert_eq!(dead.len(), 1, "{mode}: {dead:?}");
        assert!(dead[0]["body"].as_str().unwrap().contains(mode));
        let reason = header(&dead[0], "x-golconde-error");
        assert!(reason.contains("crashed 3 times"), "{mode}: {reason}");
        assert!(reason.contains(&format!("(it {died})")), "{reason}");
        assert_eq!(header(&dead[0], "x-golconde-attempts"), "3");
    }
    // The steady pipeline lost nothing, and its rows end at their values. The crashing
    // ones applied their other messages, in order per row (an upsert applied again after a
    // crash leaves the same row).
    let rows = scratch.rows("rows.jsonl");
    for i in [0, 999, 1999] {
        assert_eq!(rows.get(&format!("k{i}")), Some(&i.to_string()));
    }
    for key in ["a", "b", "c", "d"] {
        assert!(writes.iter().any(|(k, _)| k == key), "{key} never written");
    }
    assert!(!writes
        .iter()
        .any(|(_, v)| modes.iter().any(|(m, _)| v == m)));
}

#[test]
fn stats_show_each_process_its_restarts_and_how_it_ended() {
    let scratch = Scratch::new();
    scratch.enqueue("shaky", &[("a", "1"), ("x", "abort"), ("b", "2")]);
    let text = with_stats(&config(&[("shaky", "isolation = \"process\"")], ""));
    let mut daemon = Daemon::start(&scratch.config(&text));
    let address = daemon.stats_address();
    assert!(eventually(Duration::from_secs(60), || scratch
        .acked("shaky")
        == 3));
    // Counters travel from the child every quarter second.
    let mut stats = serde_json::Value::Null;
    assert!(
        eventually(Duration::from_secs(10), || {
            stats = golconde_e2e::stats(&address);
            stats["pipelines"][0]["acknowledged"] == 3
        }),
        "{stats}"
    );
    let pipeline = &stats["pipelines"][0];
    assert_eq!(pipeline["applied"], 2, "{stats}");
    assert_eq!(pipeline["dead_lettered"], 1, "{stats}");
    let process = &pipeline["process"];
    assert_eq!(process["restarts"], 3, "{stats}");
    assert_eq!(process["last_exit"], "died of SIGABRT", "{stats}");
    let pid = process["pid"].as_u64().expect("a running child") as u32;
    assert!(children_of(daemon.pid()).contains(&pid), "{stats}");
    let metrics = golconde_e2e::http_get(&address, "/metrics");
    assert!(
        metrics.contains("golconde_restarts_total{pipeline=\"shaky\"} 3"),
        "{metrics}"
    );
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn sigterm_under_load_drains_every_child_and_loses_nothing() {
    let scratch = Scratch::new();
    let rows: Vec<(String, String)> = (0..3000)
        .map(|i| (format!("k{}", i % 300), format!("{i}")))
        .collect();
    let rows: Vec<(&str, &str)> = rows.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    scratch.enqueue("busy", &rows);
    let text = config(&[("busy", "workers = 2")], "isolation = \"process\"").replace(
        "path = \"{dir}/rows.jsonl\"",
        "path = \"{dir}/rows.jsonl\"\napply_delay_ms = 20",
    );
    let config = scratch.config(&text);
    let daemon = Daemon::start(&config);
    assert!(eventually(Duration::from_secs(30), || scratch
        .acked("busy")
        > 0));
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    let acked = scratch.acked("busy");
    assert!(acked < 3000, "the stop came too late to test anything");
    // Whatever was acknowledged is applied; the rest is still queued and comes next time.
    let daemon = Daemon::start(&config);
    assert!(eventually(Duration::from_secs(120), || scratch
        .acked("busy")
        == 3000));
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    let rows = scratch.rows("rows.jsonl");
    for k in 0..300 {
        assert_eq!(
            rows.get(&format!("k{k}")),
            Some(&(2700 + k).to_string()),
            "k{k}"
        );
    }
}

#[test]
fn no_child_outlives_a_daemon_killed_with_sigkill() {
    let scratch = Scratch::new();
    let text = config(&[("one", ""), ("two", "")], "isolation = \"process\"");
    let mut daemon = Daemon::start(&scratch.config(&text));
    daemon.wait_for_log("2 pipeline(s) running", Duration::from_secs(20));
    let parent = daemon.pid();
    let mut children = Vec::new();
    assert!(
        eventually(Duration::from_secs(20), || {
            children = children_of(parent);
            children.len() == 2
        }),
        "children: {children:?}"
    );
    daemon.kill();
    assert!(
        eventually(Duration::from_secs(10), || !children
            .iter()
            .any(|c| alive(*c))),
        "children outlived the daemon: {children:?}"
    );
}

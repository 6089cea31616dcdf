//! A plugin that panics inside a call: the host logs it, restarts the worker with a fresh
//! instance, and loses nothing.

use std::time::Duration;

use golconde_e2e::{eventually, fixture_config, Daemon, Scratch};

#[test]
fn a_panic_restarts_the_worker_and_the_message_is_applied_after_all() {
    let scratch = Scratch::new();
    scratch.enqueue("panicky", &[("a", "1"), ("b", "panic"), ("c", "3")]);
    let config = scratch.config(&fixture_config(
        "panicky",
        "rows.jsonl",
        r#", panic_marker = "{dir}/panicked""#,
        "",
    ));
    let daemon = Daemon::start(&config);
    let applied = eventually(Duration::from_secs(20), || scratch.acked("panicky") == 3);
    let (status, log) = daemon.stop();
    assert!(applied, "not all acknowledged; log:\n{log}");
    assert!(status.success(), "{log}");
    assert!(
        scratch.path("panicked").exists(),
        "the fixture never panicked"
    );
    assert!(
        log.contains("plugin panicked while processing a message")
            && log.contains("fixture-rows was told to panic on key b"),
        "{log}"
    );
    assert!(log.contains("worker failed, restarting it"), "{log}");
    let rows = scratch.rows("rows.jsonl");
    assert_eq!(rows.get("b").map(String::as_str), Some("panic"), "{rows:?}");
    assert_eq!(rows.len(), 3, "{rows:?}");
}

#[test]
fn a_message_that_always_panics_is_dead_lettered_with_the_reason() {
    let scratch = Scratch::new();
    scratch.enqueue("poison", &[("a", "1"), ("b", "poison"), ("c", "3")]);
    let config = scratch.config(&fixture_config(
        "poison",
        "rows.jsonl",
        r#", panic_always_on = "poison""#,
        r#"dead_letter = { transport = "files", queue = "poison-dead" }"#,
    ));
    let daemon = Daemon::start(&config);
    let done = eventually(Duration::from_secs(30), || scratch.acked("poison") == 3);
    let (status, log) = daemon.stop();
    assert!(done, "not all acknowledged; log:\n{log}");
    assert!(status.success(), "{log}");
    let rows = scratch.rows("rows.jsonl");
    assert_eq!(rows.keys().collect::<Vec<_>>(), ["a", "c"], "{rows:?}");
    let dead = scratch.published("poison-dead");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0]["body"].as_str().unwrap().contains("poison"));
    let header = |name: &str| {
        dead[0]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h[0] == name)
            .map(|h| h[1].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no {name} header: {dead:?}"))
    };
    assert_eq!(header("x-golconde-error-kind"), "panic");
    assert!(header("x-golconde-error").contains("always panics on value poison"));
    assert_eq!(header("x-golconde-pipeline"), "poison");
    assert_eq!(header("x-golconde-source-queue"), "poison");
    assert_eq!(header("x-golconde-attempts"), "3");
    assert!(header("x-golconde-failed-at").starts_with("20"));
}

#[test]
fn without_a_dead_letter_queue_a_bad_message_stops_the_pipeline_and_stays_queued() {
    let scratch = Scratch::new();
    scratch.enqueue("strict", &[("a", "1"), ("b", "2")]);
    scratch.enqueue_raw("strict", "this is not JSON");
    scratch.enqueue("strict", &[("c", "3")]);
    let config = scratch.config(&fixture_config("strict", "rows.jsonl", "", ""));
    let mut daemon = Daemon::start(&config);
    let (status, log) = daemon.wait(Duration::from_secs(30));
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("cannot be applied, and the pipeline has no `dead_letter` queue"),
        "{log}"
    );
    assert!(log.contains("not a fixture row"), "{log}");
    // Everything before the bad message is done; it and what follows stay on the queue.
    assert_eq!(scratch.acked("strict"), 2);
    let rows = scratch.rows("rows.jsonl");
    assert_eq!(rows.get("a").map(String::as_str), Some("1"), "{rows:?}");
}

#[test]
fn a_change_the_database_rejects_is_dead_lettered_alone() {
    let scratch = Scratch::new();
    let rows: Vec<(String, String)> = (0..20)
        .map(|i| {
            (
                format!("k{i}"),
                if i == 7 { "bad".into() } else { format!("{i}") },
            )
        })
        .collect();
    let borrowed: Vec<(&str, &str)> = rows.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    scratch.enqueue("checked", &borrowed);
    let mut text = fixture_config(
        "checked",
        "rows.jsonl",
        "",
        r#"dead_letter = { transport = "files", queue = "checked-dead" }"#,
    );
    text = text.replace(
        "path = \"{dir}/rows.jsonl\"",
        "path = \"{dir}/rows.jsonl\"\nreject_value = \"bad\"",
    );
    let config = scratch.config(&text);
    let daemon = Daemon::start(&config);
    let done = eventually(Duration::from_secs(20), || scratch.acked("checked") == 20);
    let (_, log) = daemon.stop();
    assert!(done, "{log}");
    let applied = scratch.rows("rows.jsonl");
    assert_eq!(applied.len(), 19, "{applied:?}");
    assert!(!applied.contains_key("k7"));
    let dead = scratch.published("checked-dead");
    assert_eq!(dead.len(), 1);
    assert!(dead[0]["body"].as_str().unwrap().contains("k7"));
}

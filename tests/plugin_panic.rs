//! A plugin that panics inside a call: the host logs it, builds a fresh instance, tries
//! again, and loses nothing.

use std::time::Duration;

use golconde_e2e::{eventually, fixture_config, Daemon, Scratch};

#[test]
fn a_panic_rebuilds_the_processor_and_the_message_is_applied_after_all() {
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
    assert!(log.contains("building it anew and trying message"), "{log}");
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

/// The value of header `name` of a message a `fixture-queue` recorded.
fn header(message: &serde_json::Value, name: &str) -> Option<String> {
    message["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0] == name)
        .map(|h| h[1].as_str().unwrap_or_default().to_string())
}

#[test]
fn a_panic_making_a_fan_out_copy_never_applies_the_batch_twice() {
    let scratch = Scratch::new();
    scratch.enqueue("enrich", &[("a", "1"), ("b", "bomb"), ("c", "3")]);
    let config = scratch.config(&fixture_config(
        "enrich",
        "rows.jsonl",
        r#", panic_in_enrich_on = "bomb""#,
        r#"dead_letter = { transport = "files", queue = "enrich-dead" }
fan_out = [ { transport = "files", queue = "enrich-replica" } ]"#,
    ));
    let daemon = Daemon::start(&config);
    let done = eventually(Duration::from_secs(20), || scratch.acked("enrich") == 3);
    // Long enough for a redelivery, had there been one, to be applied again.
    std::thread::sleep(Duration::from_millis(500));
    let (status, log) = daemon.stop();
    assert!(done, "not all acknowledged; log:\n{log}");
    assert!(status.success(), "{log}");
    // Applied once each: the committed batch was never sent back to the broker.
    let writes = scratch.writes("rows.jsonl");
    assert_eq!(writes.len(), 3, "{writes:?}\n{log}");
    let replica: Vec<String> = scratch
        .published("enrich-replica")
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(replica.len(), 2, "{replica:?}");
    assert!(!replica.iter().any(|b| b.contains("bomb")));
    let dead = scratch.published("enrich-dead");
    assert_eq!(dead.len(), 1, "{dead:?}");
    let error = header(&dead[0], "x-golconde-error").unwrap();
    assert!(
        error.contains("applied, but its fan-out copy could not be made"),
        "{error}"
    );
    assert!(error.contains("panics enriching value bomb"), "{error}");
    assert_eq!(
        header(&dead[0], "x-golconde-attempts").as_deref(),
        Some("3")
    );
}

#[test]
fn a_database_that_panics_connecting_or_naming_keys_costs_no_message() {
    let scratch = Scratch::new();
    let rows: Vec<(String, String)> = (0..30).map(|i| (format!("k{i}"), format!("{i}"))).collect();
    let borrowed: Vec<(&str, &str)> = rows.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    scratch.enqueue("shaky", &borrowed);
    let text = fixture_config(
        "shaky",
        "rows.jsonl",
        "",
        r#"dead_letter = { transport = "files", queue = "shaky-dead" }
workers = 2"#,
    )
    .replace(
        "path = \"{dir}/rows.jsonl\"",
        "path = \"{dir}/rows.jsonl\"\npanic_in_connect = 4\npanic_in_key_columns = 3",
    );
    let config = scratch.config(&text);
    let daemon = Daemon::start(&config);
    let done = eventually(Duration::from_secs(30), || scratch.acked("shaky") == 30);
    let (status, log) = daemon.stop();
    assert!(done, "not all acknowledged; log:\n{log}");
    assert!(status.success(), "{log}");
    assert!(log.contains("fixture told to panic in connect"), "{log}");
    assert!(
        log.contains("fixture told to panic in key_columns"),
        "{log}"
    );
    assert!(log.contains("its instance was built anew"), "{log}");
    assert!(scratch.published("shaky-dead").is_empty(), "{log}");
    assert_eq!(scratch.rows("rows.jsonl").len(), 30);
}

#[test]
fn a_publish_refused_for_one_message_sets_aside_that_message_only() {
    let scratch = Scratch::new();
    let line = |key: &str, refuse: bool| {
        let body = serde_json::json!({"key": key, "value": "v"}).to_string();
        let headers: Vec<(&str, &str)> = if refuse {
            vec![("x-refuse", "yes")]
        } else {
            vec![("x-keep", "yes")]
        };
        serde_json::json!({"body": body, "headers": headers}).to_string()
    };
    let text: String = [
        line("a", false),
        line("b", true),
        line("c", false),
        line("d", false),
    ]
    .iter()
    .map(|l| format!("{l}\n"))
    .collect();
    std::fs::write(scratch.path("picky.jsonl"), text).unwrap();
    let config = scratch.config(
        &fixture_config(
            "picky",
            "rows.jsonl",
            "",
            r#"dead_letter = { transport = "dead", queue = "picky-dead" }
fan_out = [ { transport = "files", queue = "picky-replica" } ]"#,
        )
        .replace(
            "dir = \"{dir}\"",
            "dir = \"{dir}\"\nrefuse_header = \"x-refuse\"\npanic_in_publish = 2\n\n\
             [transports.dead]\nplugin = \"fixture-queue\"\ndir = \"{dir}\"",
        ),
    );
    let daemon = Daemon::start(&config);
    let done = eventually(Duration::from_secs(20), || scratch.acked("picky") == 4);
    let (status, log) = daemon.stop();
    assert!(done, "not all acknowledged; log:\n{log}");
    assert!(status.success(), "{log}");
    assert!(log.contains("fixture told to panic in publish"), "{log}");
    let replica: Vec<String> = scratch
        .published("picky-replica")
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(replica.len(), 3, "{replica:?}");
    assert!(!replica.iter().any(|b| b.contains("\"b\"")), "{replica:?}");
    let dead = scratch.published("picky-dead");
    assert_eq!(dead.len(), 1, "{dead:?}");
    let error = header(&dead[0], "x-golconde-error").unwrap();
    assert!(error.contains("fan-out copy was refused"), "{error}");
    assert!(error.contains("x-refuse"), "{error}");
    assert_eq!(scratch.rows("rows.jsonl").len(), 4);
}

//! A plugin's `tracing` events reach the host's log, tagged with the plugin's name.

use std::time::Duration;

use golconde_e2e::{fixture_config, Daemon, Scratch};

#[test]
fn a_plugin_info_event_appears_in_the_host_log_with_the_plugin_name() {
    let scratch = Scratch::new();
    let config = scratch.config(&fixture_config("logged", "rows.jsonl", "", ""));
    let mut daemon = Daemon::start(&config);
    let log = daemon.wait_for_log("fixture-queue ready", Duration::from_secs(20));
    let line = log
        .lines()
        .find(|l| l.contains("fixture-queue ready"))
        .expect("found above");
    assert!(line.contains("INFO"), "{line}");
    assert!(line.contains("plugin=\"fixture-queue\""), "{line}");
    assert!(line.contains("instance=\"files\""), "{line}");
    drop(daemon.stop());
}

#[test]
fn the_host_level_is_honoured_by_plugins_and_json_works() {
    let scratch = Scratch::new();
    scratch.enqueue("leveled", &[("a", "1")]);
    let text = fixture_config("leveled", "rows.jsonl", "", "")
        .replace("level = \"info\"", "level = \"debug\"\nformat = \"json\"");
    let config = scratch.config(&text);
    let mut daemon = Daemon::start(&config);
    // `processed` is a debug event inside the processor plugin.
    let log = daemon.wait_for_log("processed", Duration::from_secs(20));
    let line = log
        .lines()
        .find(|l| l.contains("processed"))
        .expect("found above");
    let event: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    assert_eq!(event["level"], "DEBUG", "{line}");
    assert_eq!(event["fields"]["plugin"], "fixture-rows", "{line}");
    assert_eq!(event["fields"]["instance"], "leveled", "{line}");
    drop(daemon.stop());

    // At info, the same debug event is not even sent across.
    let scratch = Scratch::new();
    scratch.enqueue("quiet", &[("a", "1")]);
    let config = scratch.config(&fixture_config("quiet", "rows.jsonl", "", ""));
    let mut daemon = Daemon::start(&config);
    daemon.wait_for_log("pipeline(s) running", Duration::from_secs(20));
    assert!(golconde_e2e::eventually(
        Duration::from_secs(20),
        || scratch.acked("quiet") == 1
    ));
    let (_, log) = daemon.stop();
    assert!(!log.contains("processed"), "{log}");
}

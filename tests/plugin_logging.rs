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

/// Events keep their own target, so the host's filter applies per target, and plugins are
/// asked about each target rather than given the most verbose level of any.
#[test]
fn plugin_events_are_filtered_by_their_own_target() {
    let scratch = Scratch::new();
    scratch.enqueue("targets", &[("a", "1")]);
    let text = fixture_config("targets", "rows.jsonl", "", "").replace(
        "level = \"info\"",
        "level = \"info,golconde_fixture_plugins=debug\"\nformat = \"json\"",
    );
    let config = scratch.config(&text);
    let daemon = Daemon::start(&config);
    assert!(golconde_e2e::eventually(
        std::time::Duration::from_secs(20),
        || scratch.acked("targets") == 1
    ));
    let (_, log) = daemon.stop();
    let line = log
        .lines()
        .find(|l| l.contains("processed"))
        .unwrap_or_else(|| panic!("the plugin's debug event is missing:\n{log}"));
    let event: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(event["target"], "golconde_fixture_plugins", "{line}");
    assert_eq!(event["fields"]["plugin"], "fixture-rows", "{line}");

    // Debug for a module of the host only: the plugin's debug events stay out.
    let scratch = Scratch::new();
    scratch.enqueue("hostonly", &[("a", "1")]);
    let text = fixture_config("hostonly", "rows.jsonl", "", "").replace(
        "level = \"info\"",
        "level = \"info,golconde::loader=debug\"",
    );
    let daemon = Daemon::start(&scratch.config(&text));
    assert!(golconde_e2e::eventually(
        std::time::Duration::from_secs(20),
        || scratch.acked("hostonly") == 1
    ));
    let (_, log) = daemon.stop();
    assert!(
        log.contains("abi_stable's report"),
        "the host's debug events are missing:\n{log}"
    );
    assert!(!log.contains("processed"), "{log}");
}

/// A thread a plugin starts itself logs as the library, never as whichever instance was
/// built first; one that enters its instance's dispatcher logs as that instance.
#[test]
fn threads_of_a_plugin_are_tagged_with_the_right_instance() {
    let scratch = Scratch::new();
    let text = fixture_config("tagged", "rows.jsonl", "", "").replace(
        "[databases.table]",
        "[transports.second]\nplugin = \"fixture-queue\"\ndir = \"{dir}\"\n\n[databases.table]",
    );
    let mut daemon = Daemon::start(&scratch.config(&text));
    let log = daemon.wait_for_log(
        "a thread entered as instance second",
        std::time::Duration::from_secs(20),
    );
    let (_, log) = (daemon.stop(), log);
    for instance in ["files", "second"] {
        let library = log
            .lines()
            .find(|l| l.contains(&format!("a thread of the library, for {instance}")))
            .unwrap_or_else(|| panic!("no library thread line for {instance}:\n{log}"));
        assert!(library.contains("plugin=\"fixture-queue\""), "{library}");
        assert!(!library.contains("instance="), "{library}");
        let entered = log
            .lines()
            .find(|l| l.contains(&format!("a thread entered as instance {instance}")))
            .unwrap_or_else(|| panic!("no entered thread line for {instance}:\n{log}"));
        assert!(
            entered.contains(&format!("instance=\"{instance}\"")),
            "{entered}"
        );
    }
}

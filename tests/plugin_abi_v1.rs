//! Plugins and hosts of different 1.x ABIs work together. A plugin built against the first
//! released ABI (1.0) keeps loading and working in today's host; a plugin built with today's
//! SDK works in a host of ABI 1.0, without what later minors added. Both old sides are built
//! from a frozen copy of plugin-api 1.0.0 in `tests/fixtures/abi-v1`, outside the workspace,
//! every time the tests run.

use std::time::Duration;

use golconde_e2e::{build_dir, eventually, fixture_config, run, Daemon, Scratch};

#[test]
fn a_plugin_built_for_abi_1_0_loads_and_works() {
    let library = build_dir().join("libgolconde_fixture_abi_v1.so");
    assert!(
        library.exists(),
        "{} is missing: build tests/fixtures/abi-v1 (scripts/test does)",
        library.display()
    );
    let (output, text) = run(&["plugins"]);
    assert!(output.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("abi-v1-rows"))
        .unwrap_or_else(|| panic!("abi-v1-rows not listed:\n{text}"));
    assert!(
        line.starts_with("processor") && line.contains(" 1.0 "),
        "{line}"
    );

    let scratch = Scratch::new();
    scratch.enqueue("old", &[("a", "1"), ("b", "2")]);
    let text = fixture_config("old", "rows.jsonl", "", "")
        .replace("plugin = \"fixture-rows\"", "plugin = \"abi-v1-rows\"");
    let config = scratch.config(&text);
    let daemon = Daemon::start(&config);
    let done = eventually(Duration::from_secs(20), || scratch.acked("old") == 2);
    let (status, log) = daemon.stop();
    assert!(done && status.success(), "{log}");
    let rows = scratch.rows("rows.jsonl");
    assert_eq!(
        rows.get("a").map(String::as_str),
        Some("1 (abi 1.0)"),
        "{rows:?}"
    );
}

/// The 1.0 host: `tests/fixtures/abi-v1/host`, built against the frozen plugin-api 1.0.0.
fn host_v1(args: &[&str]) -> (bool, String) {
    let host = build_dir().join("golconde-host-v1");
    assert!(
        host.exists(),
        "{} is missing: build tests/fixtures/abi-v1 (scripts/test does)",
        host.display()
    );
    let output = std::process::Command::new(host)
        .args(args)
        .output()
        .expect("the 1.0 host runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// A plugin built with today's SDK (ABI 1.1 or later) in a host of ABI 1.0: it loads and works
/// without what 1.1 added, and where it needs it, refuses with a message that says so.
#[test]
fn a_plugin_of_abi_1_1_works_in_a_host_of_abi_1_0_without_the_new_services() {
    let library = build_dir().join("libgolconde_fixture_plugins.so");
    let library = library.to_str().unwrap();
    let scratch = Scratch::new();

    let (ok, text) = host_v1(&[
        library,
        "processor",
        "fixture-rows",
        "{}",
        r#"{"key": "a", "value": "1"}"#,
    ]);
    assert!(ok, "{text}");
    assert!(text.contains("Upsert"), "{text}");

    let absolute = scratch.path("rows.jsonl");
    let config = serde_json::json!({ "path": absolute }).to_string();
    let (ok, text) = host_v1(&[library, "database", "fixture-table", &config, "k", "v"]);
    assert!(ok, "{text}");
    assert_eq!(
        scratch.rows("rows.jsonl").get("k").map(String::as_str),
        Some("v")
    );

    // A relative path needs to know the configuration's folder, which only 1.1 tells.
    let (ok, text) = host_v1(&[
        library,
        "database",
        "fixture-table",
        r#"{"path": "rows.jsonl"}"#,
        "k",
        "v",
    ]);
    assert!(!ok, "{text}");
    assert!(text.contains("`path`"), "{text}");
    assert!(text.contains("older than plugin ABI 1.1"), "{text}");
    assert!(text.contains("golconde 1.1 or newer"), "{text}");
}

/// In today's host the same plugin gets the configuration's folder (ABI 1.1).
#[test]
fn a_plugin_of_abi_1_1_resolves_paths_against_the_configuration_folder() {
    let scratch = Scratch::new();
    scratch.enqueue("relative", &[("a", "1")]);
    let text = fixture_config("relative", "rows.jsonl", "", "").replace(
        "path = \"{dir}/rows.jsonl\"",
        "path = \"relative-rows.jsonl\"",
    );
    let config = scratch.config(&text);
    // The daemon runs in the tests' folder: the path must not be taken relative to that.
    let daemon = Daemon::start(&config);
    let done = eventually(Duration::from_secs(20), || scratch.acked("relative") == 1);
    let (status, log) = daemon.stop();
    assert!(done && status.success(), "{log}");
    assert_eq!(
        scratch
            .rows("relative-rows.jsonl")
            .get("a")
            .map(String::as_str),
        Some("1")
    );
}

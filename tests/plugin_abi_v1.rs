//! A plugin built against the first released ABI (1.0) keeps loading and working after
//! later changes to plugin-api. The fixture is built from a frozen copy of plugin-api
//! 1.0.0 in `tests/fixtures/abi-v1`, outside the workspace, every time the tests run.

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

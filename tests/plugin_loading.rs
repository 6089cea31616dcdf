//! Several plugin libraries loaded at once, each answering as itself.

use std::time::Duration;

use golconde_e2e::{eventually, run, Daemon, Scratch};

#[test]
fn plugins_lists_every_plugin_with_its_file_version_and_abi() {
    let (output, text) = run(&["plugins"]);
    assert!(output.status.success(), "{text}");
    let line = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("`{name}` not listed:\n{text}"))
            .to_string()
    };
    let queue = line("fixture-queue");
    assert!(queue.starts_with("transport"), "{queue}");
    let abi = golconde_plugin_api::AbiVersion::current();
    assert!(
        queue.contains(" 0.1.0 ") && queue.contains(&format!(" {}.{} ", abi.major, abi.minor)),
        "{queue}"
    );
    assert!(queue.contains("libgolconde_fixture_plugins.so"), "{queue}");
    assert!(queue.contains("one JSON-lines file per queue"), "{queue}");
    let counter = line("fixture-counter");
    assert!(counter.starts_with("transport"), "{counter}");
    assert!(counter.contains(" 0.2.0 "), "{counter}");
    assert!(
        counter.contains("libgolconde_fixture_second.so"),
        "{counter}"
    );
    assert!(line("fixture-rows").starts_with("processor"));
    assert!(line("fixture-table").starts_with("database"));
}

#[test]
fn two_transport_libraries_run_side_by_side() {
    let scratch = Scratch::new();
    scratch.enqueue("from-files", &[("a", "1"), ("b", "2")]);
    let config = scratch.config(
        r#"
plugin_dirs = ["{plugins}"]
[transports.files]
plugin = "fixture-queue"
dir = "{dir}"
[transports.counter]
plugin = "fixture-counter"
count = 3
prefix = "gen"
[databases.table]
plugin = "fixture-table"
path = "{dir}/rows.jsonl"
[[pipelines]]
name = "files"
transport = "files"
queue = "from-files"
processor = { plugin = "fixture-rows" }
database = "table"
table = "rows"
[[pipelines]]
name = "counter"
transport = "counter"
queue = "generated"
processor = { plugin = "fixture-rows" }
database = "table"
table = "rows"
"#,
    );
    let daemon = Daemon::start(&config);
    let expected = [
        ("a", "1"),
        ("b", "2"),
        ("gen-0", "0"),
        ("gen-1", "1"),
        ("gen-2", "2"),
    ];
    let arrived = eventually(Duration::from_secs(20), || {
        scratch.rows("rows.jsonl").len() == 5
    });
    let (status, log) = daemon.stop();
    assert!(
        arrived,
        "rows: {:?}\nlog:\n{log}",
        scratch.rows("rows.jsonl")
    );
    assert!(status.success(), "{log}");
    let rows = scratch.rows("rows.jsonl");
    for (key, value) in expected {
        assert_eq!(rows.get(key).map(String::as_str), Some(value), "{rows:?}");
    }
    assert_eq!(scratch.acked("from-files"), 2);
}

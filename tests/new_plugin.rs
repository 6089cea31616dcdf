//! `golconde new-plugin` writes a plugin crate of each kind that builds out of tree, passes
//! its own conformance suite, is listed by `golconde plugins`, and replicates in the real
//! daemon beside the fixture plugins for the other two roles, dead letters included; and it
//! refuses what it cannot write without touching anything.
//!
//! The crates build offline with the workspace's lock file (the versions already
//! downloaded) into one target folder shared by every run, `target/new-plugin`, so that
//! their dependencies build once.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use golconde_e2e::{eventually, run, Daemon, Scratch};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_path_buf()
}

/// Where every generated crate builds; `debug/` holds their libraries.
fn target_dir() -> PathBuf {
    workspace().join("target/new-plugin")
}

fn plugin_dir() -> PathBuf {
    target_dir().join("debug")
}

/// Has the real binary write a `kind` plugin called `name`, then builds it and runs its
/// tests (its conformance suite); returns the folder it was written in, and its own.
///
/// The crate is written inside this workspace (under its target folder), where it must
/// still build as a workspace of its own.
fn new_plugin(kind: &str, name: &str) -> (tempfile::TempDir, PathBuf) {
    fs::create_dir_all(target_dir()).unwrap();
    let parent = tempfile::Builder::new()
        .prefix("crates-")
        .tempdir_in(target_dir())
        .unwrap();
    let (output, text) = run(&["new-plugin", kind, name, "--path", path(parent.path())]);
    assert!(output.status.success(), "{text}");
    let dir = parent.path().join(name);
    assert!(text.contains(path(&dir)), "{text}");
    for file in [
        "Cargo.toml",
        "README.md",
        "src/lib.rs",
        "tests/conformance.rs",
    ] {
        assert!(dir.join(file).is_file(), "{file} was not written");
    }
    vendored_copy_is_the_workspaces(&dir);
    fs::copy(workspace().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    // One crate at a time in the shared target folder, across test processes too. Every
    // crate's vendored plugin-api lands under the same file name, and cargo holds its own
    // lock only while it compiles: another crate's build could replace that library while
    // this crate's doctests were being linked against it.
    let lock = fs::File::create(target_dir().join("building.lock")).unwrap();
    lock.lock()
        .expect("a lock on target/new-plugin/building.lock");
    cargo(&dir, &["build"]);
    let tests = cargo(&dir, &["test"]);
    drop(lock);
    assert!(tests.contains("test conforms ... ok"), "{tests}");
    (parent, dir)
}

/// Checks that `vendor/golconde-plugin-api` holds every file of the workspace's
/// `plugin-api`, as it is. Each copy then gets its original's modification time, so that
/// cargo, which rebuilds a path dependency whose files are newer than its last build,
/// reuses the build of an earlier run.
fn vendored_copy_is_the_workspaces(dir: &Path) {
    let copy = dir.join("vendor/golconde-plugin-api");
    let original = workspace().join("plugin-api");
    let mut files = vec![PathBuf::new()];
    let mut seen = 0;
    while let Some(relative) = files.pop() {
        let here = original.join(&relative);
        if here.is_dir() {
            if relative.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            for entry in fs::read_dir(&here).unwrap() {
                files.push(relative.join(entry.unwrap().file_name()));
            }
            continue;
        }
        let copied = copy.join(&relative);
        let contents = fs::read(&copied)
            .unwrap_or_else(|e| panic!("{} was not vendored: {e}", relative.display()));
        assert!(
            contents == fs::read(&here).unwrap(),
            "vendor/golconde-plugin-api/{} differs from plugin-api's: is golconde older than \
             plugin-api? run `cargo build --workspace`",
            relative.display()
        );
        let modified: SystemTime = fs::metadata(&here).unwrap().modified().unwrap();
        fs::File::options()
            .write(true)
            .open(&copied)
            .and_then(|f| f.set_modified(modified))
            .unwrap();
        seen += 1;
    }
    assert!(seen >= 8, "only {seen} files in plugin-api?");
}

/// Runs `cargo ARGS --offline` in `dir`; returns its output, failing the test with it if
/// cargo failed.
fn cargo(dir: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO"))
        .args(args)
        .arg("--offline")
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cargo runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "cargo {args:?} in {}:\n{text}",
        dir.display()
    );
    text
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// `golconde plugins` finds the plugin in the crates' target folder, as a `kind`.
fn listed(kind: &str, name: &str) {
    let (output, text) = run(&["plugins", "--plugin-dir", path(&plugin_dir())]);
    assert!(output.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("`{name}` is not listed:\n{text}"));
    assert!(line.starts_with(kind), "{line}");
    let library = format!("libgolconde_{}.so", name.replace('-', "_"));
    assert!(line.contains(&library), "{line}");
}

/// The configuration's plugin folders: the fixtures', and one holding only the library of
/// plugin `name`, so that the daemon loads none of the other tests' crates.
fn plugin_dirs(scratch: &Scratch, name: &str) -> String {
    let library = format!("libgolconde_{}.so", name.replace('-', "_"));
    let own = scratch.path("plugins");
    fs::create_dir(&own).unwrap();
    fs::copy(plugin_dir().join(&library), own.join(&library)).unwrap();
    format!(r#"plugin_dirs = ["{{plugins}}", "{}"]"#, own.display())
}

const PIPELINE: &str = r#"
[[pipelines]]
name = "rows"
queue = "rows"
table = "rows"
batch = { max_messages = 50, max_wait_ms = 5 }
retry = { initial_backoff_ms = 10, max_backoff_ms = 100 }
"#;

fn wait(what: &str, daemon: &Daemon, condition: impl FnMut() -> bool) {
    assert!(
        eventually(Duration::from_secs(30), condition),
        "{what} did not happen; log:\n{}",
        daemon.log()
    );
}

#[test]
fn a_new_processor_turns_fixture_queue_messages_into_fixture_table_rows() {
    const NAME: &str = "e2e-processor";
    let scratch = Scratch::new();
    let _crate = new_plugin("processor", NAME);
    listed("processor", NAME);
    let config = scratch.config(&format!(
        r#"{}
[transports.files]
plugin = "fixture-queue"
dir = "{{dir}}"
[databases.table]
plugin = "fixture-table"
path = "{{dir}}/table.jsonl"
{PIPELINE}transport = "files"
processor = {{ plugin = "{NAME}" }}
database = "table"
dead_letter = {{ transport = "files", queue = "dead" }}
"#,
        plugin_dirs(&scratch, NAME)
    ));
    scratch.enqueue("rows", &[("a", "1"), ("b", "2")]);
    scratch.enqueue_raw("rows", r#"{"key": "c"}"#);
    scratch.enqueue("rows", &[("a", "3")]);
    let daemon = Daemon::start(&config);
    wait("acknowledging all four", &daemon, || {
        scratch.acked("rows") == 4
    });
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    let expected: BTreeMap<String, String> = [("a", "3"), ("b", "2")]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
    assert_eq!(scratch.rows("table.jsonl"), expected, "{log}");
    let dead = scratch.published("dead");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["body"], r#"{"key": "c"}"#);
    let reason = dead_letter_reason(&dead[0]);
    assert!(reason.contains("missing field `value`"), "{reason}");
}

#[test]
fn a_new_database_stores_what_fixture_rows_makes_of_fixture_queue_messages() {
    const NAME: &str = "e2e-database";
    let scratch = Scratch::new();
    let _crate = new_plugin("database", NAME);
    listed("database", NAME);
    fs::create_dir(scratch.path("data")).unwrap();
    let config = scratch.config(&format!(
        r#"{}
[transports.files]
plugin = "fixture-queue"
dir = "{{dir}}"
[databases.files]
plugin = "{NAME}"
dir = "data"
tables.rows = {{ key = "key", columns = ["key", "value"] }}
{PIPELINE}transport = "files"
processor = {{ plugin = "fixture-rows" }}
database = "files"
tables = ["rows", "nowhere"]
workers = 2
dead_letter = {{ transport = "files", queue = "dead" }}
"#,
        plugin_dirs(&scratch, NAME)
    ));
    scratch.enqueue("rows", &[("a", "1"), ("b", "2"), ("c", "3")]);
    scratch.enqueue_raw("rows", r#"{"key": "x", "value": "y", "table": "nowhere"}"#);
    scratch.enqueue("rows", &[("a", "4")]);
    let daemon = Daemon::start(&config);
    wait("acknowledging all five", &daemon, || {
        scratch.acked("rows") == 5
    });
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    // `dir = "data"` is the folder beside the configuration file.
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&fs::read(scratch.path("data/rows.json")).unwrap()).unwrap();
    let rows: BTreeMap<&str, &str> = rows
        .iter()
        .map(|r| (r["key"].as_str().unwrap(), r["value"].as_str().unwrap()))
        .collect();
    assert_eq!(
        rows,
        BTreeMap::from([("a", "4"), ("b", "2"), ("c", "3")]),
        "{log}"
    );
    let dead = scratch.published("dead");
    assert_eq!(dead.len(), 1, "{dead:?}");
    let reason = dead_letter_reason(&dead[0]);
    assert!(reason.contains("no table `nowhere`"), "{reason}");
}

#[test]
fn a_new_transport_feeds_fixture_rows_and_fixture_table() {
    const NAME: &str = "e2e-transport";
    let scratch = Scratch::new();
    let _crate = new_plugin("transport", NAME);
    listed("transport", NAME);
    fs::create_dir(scratch.path("queues")).unwrap();
    let config = scratch.config(&format!(
        r#"{}
[transports.files]
plugin = "{NAME}"
dir = "queues"
[databases.table]
plugin = "fixture-table"
path = "{{dir}}/table.jsonl"
{PIPELINE}transport = "files"
processor = {{ plugin = "fixture-rows" }}
database = "table"
dead_letter = {{ transport = "files", queue = "dead" }}
"#,
        plugin_dirs(&scratch, NAME)
    ));
    // Published through the plugin, by the real binary.
    let input = scratch.path("input.jsonl");
    fs::write(
        &input,
        concat!(
            "{\"key\": \"a\", \"value\": \"1\"}\n",
            "{\"key\": \"b\", \"value\": \"2\"}\n",
            "{\"nope\": true}\n",
            "{\"key\": \"a\", \"value\": \"3\"}\n",
        ),
    )
    .unwrap();
    let (output, text) = run(&[
        "send",
        "--config",
        path(&config),
        "--transport",
        "files",
        "--queue",
        "rows",
        path(&input),
    ]);
    assert!(output.status.success(), "{text}");
    let queue = |name: &str| -> Vec<serde_json::Value> {
        fs::read_to_string(scratch.path(&format!("queues/{name}.queue")))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    assert_eq!(queue("rows").len(), 4);
    let acked = || -> u64 {
        fs::read(scratch.path("queues/rows.state"))
            .ok()
            .and_then(|s| serde_json::from_slice::<serde_json::Value>(&s).ok())
            .and_then(|s| s["acked"].as_u64())
            .unwrap_or(0)
    };
    let daemon = Daemon::start(&config);
    wait("acknowledging all four", &daemon, || acked() == 4);
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert_eq!(
        scratch.writes("table.jsonl"),
        [("a", "1"), ("b", "2"), ("a", "3")].map(|(k, v)| (k.to_string(), v.to_string())),
        "{log}"
    );
    // The dead letter went out through the plugin too.
    let dead = queue("dead");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["body"], "{\"nope\": true}");
    let reason = dead_letter_reason(&dead[0]);
    assert!(reason.contains("not a fixture row"), "{reason}");
}

/// The `x-golconde-error` header of a dead letter, headers being `[name, value]` pairs.
fn dead_letter_reason(letter: &serde_json::Value) -> String {
    letter["headers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|h| h[0] == "x-golconde-error")
        .and_then(|h| h[1].as_str())
        .unwrap_or_else(|| panic!("no x-golconde-error header: {letter}"))
        .to_string()
}

#[test]
fn refusals_name_the_problem_and_write_nothing() {
    let parent = tempfile::tempdir().unwrap();
    let taken = parent.path().join("taken");
    fs::create_dir(&taken).unwrap();
    fs::write(taken.join("mine.txt"), "keep me").unwrap();
    let refused = |args: &[&str], expected: &str| {
        let mut all = vec!["new-plugin"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--path", path(parent.path())]);
        let (output, text) = run(&all);
        assert!(!output.status.success(), "{args:?} was accepted: {text}");
        assert!(text.contains(expected), "{args:?}: {text}");
    };
    refused(
        &["processor", "taken"],
        "taken already exists; nothing was written",
    );
    assert_eq!(fs::read_dir(&taken).unwrap().count(), 1);
    assert_eq!(
        fs::read_to_string(taken.join("mine.txt")).unwrap(),
        "keep me"
    );
    for (name, why) in [
        ("My-Plugin", "starts with `M`, not a lowercase letter"),
        ("my_plugin", "holds `_`"),
        ("9lives", "starts with `9`"),
        ("../escape", "starts with `.`"),
    ] {
        refused(&["database", name], why);
        refused(
            &["database", name],
            "lowercase ASCII letters, digits and `-`",
        );
    }
    refused(
        &["sink", "fine-name"],
        "unknown plugin kind `sink`: say `transport`, `processor` or `database`",
    );
    let left: Vec<_> = fs::read_dir(parent.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["taken"]);
}

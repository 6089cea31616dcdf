//! A bad configuration is refused by `check` and `run` with an error that names the file,
//! the line or section, and the key.

use golconde_e2e::{fixture_config, run, Scratch};

fn check(scratch: &Scratch, text: &str) -> (bool, String) {
    let config = scratch.config(text);
    let (output, text) = run(&["check", "--config", config.to_str().unwrap()]);
    (output.status.success(), text)
}

#[test]
fn a_good_file_checks_out_with_a_summary() {
    let scratch = Scratch::new();
    let (ok, text) = check(
        &scratch,
        &fixture_config("q", "rows.jsonl", "", "workers = 3"),
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("transport files: fixture-queue 0.1.0"),
        "{text}"
    );
    assert!(text.contains("database table: fixture-table"), "{text}");
    assert!(
        text.contains("pipeline q: files:q -> fixture-rows -> table (rows), 3 worker(s)"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("ok"), "{text}");
}

#[test]
fn connect_tries_every_connection() {
    let scratch = Scratch::new();
    let config = scratch.config(&fixture_config("q", "rows.jsonl", "", ""));
    let (output, text) = run(&["check", "--connect", "--config", config.to_str().unwrap()]);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains("fixture-queue 0.1.0") && text.contains(", connected"),
        "{text}"
    );
}

#[test]
fn an_unknown_key_names_the_file_line_and_key() {
    let scratch = Scratch::new();
    let text = fixture_config("q", "rows.jsonl", "", "wrokers = 2");
    let (ok, out) = check(&scratch, &text);
    assert!(!ok);
    let config = scratch.path("golconde.toml").display().to_string();
    assert!(out.contains(&config), "{out}");
    assert!(out.contains("unknown field `wrokers`"), "{out}");
    let line = text.lines().position(|l| l.starts_with("wrokers")).unwrap() + 1;
    assert!(out.contains(&format!("line {line}")), "{out}");
}

#[test]
fn a_missing_required_key_is_named() {
    let scratch = Scratch::new();
    let text = fixture_config("q", "rows.jsonl", "", "").replace("queue = \"q\"\n", "");
    let (ok, out) = check(&scratch, &text);
    assert!(!ok);
    assert!(
        out.contains("golconde.toml") && out.contains("missing field `queue`"),
        "{out}"
    );
}

#[test]
fn an_unknown_plugin_lists_what_was_found() {
    let scratch = Scratch::new();
    let text = fixture_config("q", "rows.jsonl", "", "")
        .replace("plugin = \"fixture-table\"", "plugin = \"postgress\"");
    let (ok, out) = check(&scratch, &text);
    assert!(!ok, "{out}");
    assert!(out.contains("golconde.toml:"), "{out}");
    assert!(
        out.contains("[databases.table] (plugin `postgress`)"),
        "{out}"
    );
    assert!(
        out.contains("no database plugin named `postgress` was found"),
        "{out}"
    );
    // Every database plugin of the folder is listed (the build's folder holds others too).
    assert!(out.contains("database plugins found: "), "{out}");
    assert!(out.contains("fixture-table ("), "{out}");
    assert!(
        out.contains("pipeline `q`: not started because database `table`"),
        "{out}"
    );
}

#[test]
fn a_plugin_rejects_a_bad_key_in_its_own_section_by_name() {
    let scratch = Scratch::new();
    let text = fixture_config("q", "rows.jsonl", "", "")
        .replace("dir = \"{dir}\"", "dir = \"{dir}\"\ndri = \"typo\"");
    let (ok, out) = check(&scratch, &text);
    assert!(!ok, "{out}");
    assert!(
        out.contains("[transports.files] (plugin `fixture-queue`)"),
        "{out}"
    );
    assert!(
        out.contains("refused its configuration: unknown field `dri`"),
        "{out}"
    );
}

#[test]
fn an_unset_variable_names_the_file_line_key_and_variable() {
    let scratch = Scratch::new();
    let text = fixture_config("q", "rows.jsonl", "", "")
        .replace("dir = \"{dir}\"", "dir = \"${GOLCONDE_TEST_UNSET_DIR}\"");
    let (ok, out) = check(&scratch, &text);
    assert!(!ok);
    let line = text
        .lines()
        .position(|l| l.contains("GOLCONDE_TEST_UNSET_DIR"))
        .unwrap()
        + 1;
    assert!(
        out.contains(&format!("golconde.toml:{line}: `transports.files.dir`")),
        "{out}"
    );
    assert!(
        out.contains("`GOLCONDE_TEST_UNSET_DIR`, which is not set"),
        "{out}"
    );
}

#[test]
fn a_set_variable_is_expanded() {
    let scratch = Scratch::new();
    let text = fixture_config("q", "rows.jsonl", "", "")
        .replace("dir = \"{dir}\"", "dir = \"${GOLCONDE_TEST_DIR}\"");
    let config = scratch.config(&text);
    let output = golconde_e2e::golconde()
        .args(["check", "--config", config.to_str().unwrap()])
        .env("GOLCONDE_TEST_DIR", scratch.dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn a_missing_file_is_named() {
    let (output, text) = run(&["check", "--config", "/nonexistent/golconde.toml"]);
    assert!(!output.status.success());
    assert!(
        text.contains("cannot read configuration file /nonexistent/golconde.toml"),
        "{text}"
    );
}

#[test]
fn help_explains_each_command() {
    for command in ["run", "check", "plugins"] {
        let (output, text) = run(&[command, "--help"]);
        assert!(output.status.success(), "{text}");
        assert!(text.contains("Usage: golconde"), "{text}");
    }
    let (_, text) = run(&["--help"]);
    assert!(
        text.contains("moves data changes from message queues into databases"),
        "{text}"
    );
}

#[test]
fn a_misspelt_log_level_is_a_problem() {
    let scratch = Scratch::new();
    let text =
        fixture_config("q", "rows.jsonl", "", "").replace("level = \"info\"", "level = \"inf\"");
    let (ok, out) = check(&scratch, &text);
    assert!(!ok, "{out}");
    assert!(
        out.contains("[log] level = `inf` is not a valid level"),
        "{out}"
    );
}

/// Every configuration under examples/ is one `golconde check` accepts with the plugins of
/// this build, as the documentation promises.
#[test]
fn every_example_configuration_checks_out() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let build = golconde_e2e::build_dir();
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let output = golconde_e2e::golconde()
            .args(["check", "--config", path.to_str().unwrap()])
            .args(["--plugin-dir", build.to_str().unwrap()])
            .env("MARIADB_PASSWORD", "unused offline")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{}:\n{text}", path.display());
        assert!(!text.contains("problem"), "{}:\n{text}", path.display());
        checked += 1;
    }
    assert!(
        checked >= 3,
        "only {checked} examples found in {}",
        examples.display()
    );
}

#[test]
fn a_transport_that_cannot_be_built_is_named_once_per_pipeline() {
    let scratch = Scratch::new();
    let text = fixture_config("q", "rows.jsonl", "", "")
        .replace("[databases.table]", "wrong = 1\n\n[databases.table]")
        + "dead_letter = { transport = \"files\", queue = \"dead\" }\n";
    let (ok, out) = check(&scratch, &text);
    assert!(!ok, "{out}");
    assert!(
        out.contains("not started because transport `files` could not be built"),
        "{out}"
    );
    assert!(!out.contains("`files` and transport `files`"), "{out}");
}

//! Libraries built for another ABI are refused with a one-paragraph reason, and the host
//! keeps running everything that does not need them.

use std::time::Duration;

use golconde_e2e::{eventually, fixture_config, run, Daemon, Scratch};

#[test]
fn plugins_names_the_file_and_both_abis_of_a_refused_library() {
    let (output, text) = run(&["plugins"]);
    assert!(output.status.success(), "{text}");
    let refused = text
        .lines()
        .find(|l| l.contains("libgolconde_fixture_abi2.so"))
        .unwrap_or_else(|| panic!("abi2 fixture not listed:\n{text}"));
    assert!(refused.contains("incompatible:"), "{refused}");
    assert!(
        refused.contains("built for Golconde plugin ABI 2.0"),
        "{refused}"
    );
    let host = golconde_plugin_api::AbiVersion::current();
    assert!(
        refused.contains(&format!(
            "this host speaks ABI {}.{}",
            host.major, host.minor
        )),
        "{refused}"
    );
    assert!(
        refused.contains("the plugin is newer than this golconde"),
        "{refused}"
    );

    let skewed = text
        .lines()
        .find(|l| l.contains("libgolconde_fixture_skewed.so"))
        .unwrap_or_else(|| panic!("skewed fixture not listed:\n{text}"));
    assert!(skewed.contains("incompatible:"), "{skewed}");
    assert!(skewed.contains("its types differ"), "{skewed}");
    // The layout report is for the debug log, not for this listing.
    assert!(!text.contains("Error at"), "{text}");
}

#[test]
fn the_host_runs_its_other_pipelines_and_reports_the_refusal() {
    let scratch = Scratch::new();
    scratch.enqueue("good", &[("k", "v")]);
    let config = scratch.config(&fixture_config("good", "rows.jsonl", "", ""));
    let mut daemon = Daemon::start(&config);
    let log = daemon.wait_for_log("pipeline(s) running", Duration::from_secs(20));
    let warning = log
        .lines()
        .find(|l| l.contains("libgolconde_fixture_abi2.so"))
        .unwrap_or_else(|| panic!("no warning about the abi2 fixture:\n{log}"));
    assert!(
        warning.contains("WARN") && warning.contains("ABI 2.0"),
        "{warning}"
    );
    assert!(eventually(Duration::from_secs(20), || !scratch
        .rows("rows.jsonl")
        .is_empty()));
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert!(
        !log.contains("abi_stable's report"),
        "layout report outside debug:\n{log}"
    );
}

#[test]
fn the_layout_report_is_logged_at_debug_level() {
    let scratch = Scratch::new();
    let config = scratch.config(&fixture_config("quiet", "rows.jsonl", "", ""));
    let mut daemon = Daemon::start_with(&config, &[("RUST_LOG", "golconde=debug,info")]);
    let log = daemon.wait_for_log("abi_stable's report", Duration::from_secs(20));
    assert!(
        log.contains("libgolconde_fixture_skewed.so: abi_stable's report"),
        "{log}"
    );
    drop(daemon.stop());
}

#[test]
fn a_pipeline_needing_a_refused_plugin_says_why_and_the_others_run() {
    let scratch = Scratch::new();
    scratch.enqueue("good", &[("k", "v")]);
    let mut text = fixture_config("good", "rows.jsonl", "", "");
    text.push_str(
        r#"
[transports.future]
plugin = "from-the-future"

[[pipelines]]
name = "needs-future"
transport = "future"
queue = "q"
processor = { plugin = "fixture-rows" }
database = "table"
table = "rows"
"#,
    );
    let config = scratch.config(&text);
    let mut daemon = Daemon::start(&config);
    let log = daemon.wait_for_log("pipeline(s) running", Duration::from_secs(20));
    assert!(
        log.contains("no transport plugin named `from-the-future`"),
        "{log}"
    );
    assert!(log.contains("refused"), "{log}");
    assert!(
        log.contains("pipeline `needs-future`: not started"),
        "{log}"
    );
    assert!(eventually(Duration::from_secs(20), || !scratch
        .rows("rows.jsonl")
        .is_empty()));
    let (status, _) = daemon.stop();
    assert!(status.success());
}

//! SIGTERM stops consuming, finishes the batches in flight, and exits 0; what was not
//! acknowledged is consumed again by the next run, and nothing is lost.

use std::time::Duration;

use golconde_e2e::{eventually, fixture_config, Daemon, Scratch};

#[test]
fn sigterm_under_load_loses_nothing_across_a_restart() {
    let scratch = Scratch::new();
    let rows: Vec<(String, String)> = (0..3000)
        .map(|i| (format!("k{}", i % 500), format!("{i}")))
        .collect();
    let borrowed: Vec<(&str, &str)> = rows.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    scratch.enqueue("load", &borrowed);
    // A slow table keeps batches in flight when the signal arrives: 60 batches of 50 at
    // 25 ms each take over a second even split over four workers.
    let text = fixture_config("load", "rows.jsonl", "", "workers = 4").replace(
        "path = \"{dir}/rows.jsonl\"",
        "path = \"{dir}/rows.jsonl\"\napply_delay_ms = 25",
    );
    let config = scratch.config(&text);

    let daemon = Daemon::start(&config);
    assert!(eventually(Duration::from_secs(20), || scratch
        .acked("load")
        > 0));
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("finishing batches in flight"), "{log}");
    let first_run = scratch.acked("load");
    assert!(
        first_run < 3000,
        "the first run drained the queue before the signal; nothing was under test"
    );

    let daemon = Daemon::start(&config);
    let done = eventually(Duration::from_secs(60), || scratch.acked("load") == 3000);
    let (status, log) = daemon.stop();
    assert!(done, "acked {}; log:\n{log}", scratch.acked("load"));
    assert!(status.success(), "{log}");

    // Each key ends at its last value in queue order, whatever was replayed.
    let expected: std::collections::BTreeMap<String, String> = rows.into_iter().collect();
    assert_eq!(scratch.rows("rows.jsonl"), expected);
}

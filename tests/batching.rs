//! A batch waits to fill only while the batch before it is committing: on an idle pipeline a
//! message goes to the database at once, however long `batch.max_wait_ms` is.

use std::time::Duration;

use golconde_e2e::{eventually, fixture_config, Daemon, Scratch};

#[test]
fn an_idle_pipeline_applies_a_lone_message_without_waiting_for_the_batch_to_fill() {
    let scratch = Scratch::new();
    // Ten minutes: were the batch held until full or timed out, the test would fail.
    let text = fixture_config("lone", "rows.jsonl", "", "")
        .replace("max_wait_ms = 5", "max_wait_ms = 600000");
    let config = scratch.config(&text);
    let mut daemon = Daemon::start(&config);
    daemon.wait_for_log("pipeline(s) running", Duration::from_secs(20));

    for (round, key) in ["a", "b", "c"].into_iter().enumerate() {
        scratch.enqueue("lone", &[(key, "1")]);
        let applied = eventually(Duration::from_secs(20), || {
            scratch.acked("lone") == round as u64 + 1
        });
        assert!(
            applied,
            "message {key} was held back; log:\n{}",
            daemon.log()
        );
    }
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert_eq!(scratch.rows("rows.jsonl").len(), 3);
}

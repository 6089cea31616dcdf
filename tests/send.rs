//! `golconde send` publishes one message per JSON line, each with its own `message-id`, and
//! reports the lines it could not send by number.

use std::process::Command;

use golconde_e2e::{fixture_config, golconde, Scratch};

/// `golconde send` through `transport` of a fixture configuration, to `queue`, reading `input`.
fn send(config: &std::path::Path, transport: &str, queue: &str, input: &str) -> Command {
    let mut command = golconde();
    command
        .args(["send", "--config", config.to_str().unwrap()])
        .args(["--transport", transport, "--queue", queue, input]);
    command
}

#[test]
fn every_json_line_is_published_once_with_a_unique_id() {
    let scratch = Scratch::new();
    let config = scratch.config(&fixture_config("unused", "rows.jsonl", "", ""));
    let input = scratch.path("changes.jsonl");
    let mut text = String::new();
    for i in 0..1200 {
        text.push_str(&format!(
            "{{\"action\": \"set\", \"data\": {{\"id\": {i}}}}}\n"
        ));
    }
    text.push('\n');
    std::fs::write(&input, text).unwrap();
    let output = send(&config, "files", "outbox", input.to_str().unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("1200 message(s) confirmed by transport `files` on queue `outbox`"),
        "{stdout}"
    );
    let published = scratch.published("outbox");
    assert_eq!(published.len(), 1200);
    let ids: std::collections::BTreeSet<String> = published
        .iter()
        .map(|m| {
            m["headers"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h[0] == "message-id")
                .map(|h| h[1].as_str().unwrap().to_string())
                .expect("message-id header")
        })
        .collect();
    assert_eq!(ids.len(), 1200, "message ids are not unique");
    assert_eq!(
        published[5]["body"],
        "{\"action\": \"set\", \"data\": {\"id\": 5}}"
    );
}

#[test]
fn bad_lines_are_reported_by_number_and_not_sent() {
    use std::io::Write;
    use std::process::Stdio;
    let scratch = Scratch::new();
    let config = scratch.config(&fixture_config("unused", "rows.jsonl", "", ""));
    let mut child = send(&config, "files", "outbox", "-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"a\": 1}\n{not json\n{\"b\": 2}\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success());
    assert!(stderr.contains("line 2: not sent: not JSON"), "{stderr}");
    assert!(
        stdout.contains("2 message(s) confirmed") && stdout.contains("1 line(s) not sent"),
        "{stdout}"
    );
    assert_eq!(scratch.published("outbox").len(), 2);
}

#[test]
fn an_undeclared_transport_lists_the_declared_ones() {
    let scratch = Scratch::new();
    let config = scratch.config(&fixture_config("unused", "rows.jsonl", "", ""));
    let output = send(&config, "rabbit", "q", "/dev/null").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("transport `rabbit`: not declared; declared transports: [files]"),
        "{stderr}"
    );
}

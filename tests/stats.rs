//! `[stats] listen` serves each pipeline's counters as JSON and in the Prometheus format.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use golconde_e2e::{eventually, fixture_config, Daemon, Scratch};

fn get(address: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(address).expect("the stats endpoint accepts");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

#[test]
fn counters_are_served_over_http() {
    let scratch = Scratch::new();
    scratch.enqueue("counted", &[("a", "1"), ("b", "2"), ("c", "3")]);
    scratch.enqueue_raw("counted", "not JSON");
    scratch.enqueue("counted", &[("d", "s3cret-value")]);
    let text = fixture_config(
        "counted",
        "rows.jsonl",
        "",
        r#"dead_letter = { transport = "files", queue = "counted-dead" }"#,
    )
    .replacen("[log]", "[stats]\nlisten = \"127.0.0.1:0\"\n\n[log]", 1)
    .replace(
        "path = \"{dir}/rows.jsonl\"",
        "path = \"{dir}/rows.jsonl\"\nreject_value = \"s3cret-value\"",
    );
    let config = scratch.config(&text);
    let mut daemon = Daemon::start(&config);
    let log = daemon.wait_for_log("serving counters on http://", Duration::from_secs(20));
    let address = log
        .split("serving counters on http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("an address")
        .to_string();
    assert!(eventually(Duration::from_secs(20), || scratch
        .acked("counted")
        == 5));

    let response = get(&address, "/stats");
    assert!(
        response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200"),
        "{response}"
    );
    let stats: serde_json::Value = serde_json::from_str(body(&response)).expect("JSON");
    let pipeline = &stats["pipelines"][0];
    assert_eq!(pipeline["name"], "counted");
    assert_eq!(pipeline["received"], 5, "{stats}");
    assert_eq!(pipeline["applied"], 3, "{stats}");
    assert_eq!(pipeline["dead_lettered"], 2, "{stats}");
    assert_eq!(pipeline["acknowledged"], 5, "{stats}");
    let last_error = pipeline["last_error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        last_error.contains("dead-lettered message") && last_error.contains("permanent"),
        "{stats}"
    );
    // The reason quotes the row; it is in the dead letter and the log, never over HTTP.
    assert!(!response.contains("s3cret-value"), "{response}");
    assert!(!get(&address, "/metrics").contains("s3cret-value"));
    assert!(daemon.log().contains("Key (value)=(s3cret-value)"));

    let metrics = get(&address, "/metrics");
    assert!(
        body(&metrics).contains("golconde_applied_total{pipeline=\"counted\"} 3"),
        "{metrics}"
    );
    assert_eq!(body(&get(&address, "/health")), "ok\n");
    assert!(get(&address, "/nope").contains(" 404"));
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

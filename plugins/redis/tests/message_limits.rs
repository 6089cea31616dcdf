//! A 100 MB entry, over `max_entry_bytes` (16 MiB by default), is never held: its body is
//! skipped as it arrives, the delivery says so, and the process's peak memory grows by far
//! less than the entry. Alone in its test binary, so that the peak is this test's.
//!
//! The entry is built by the server (a Lua `string.rep`), on a server of the test's own,
//! so that neither this process nor the shared server holds it otherwise.

mod common;

use std::time::Duration;

use common::*;
use golconde_plugin_api::{AckMode, Consumer, Transport, TRANSPORT_ERROR_HEADER};

/// The process's peak resident memory, in kB.
fn peak_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[test]
fn a_huge_entry_is_delivered_without_its_body_and_never_held() {
    const MB: usize = 1024 * 1024;
    let server = Server::start(&[]);
    let stream = Stream::on(server.port, "huge");
    let mut cli = server.cli();
    cli.run(&[
        "XADD",
        &stream.key,
        "*",
        "body",
        "before",
        "message-id",
        "before",
    ]);
    let reply = cli.run(&[
        "EVAL",
        "return redis.call('XADD', KEYS[1], '*', 'message-id', 'huge', 'body', \
         string.rep('x', tonumber(ARGV[1])))",
        "1",
        &stream.key,
        &(100 * MB).to_string(),
    ]);
    assert!(matches!(reply, V::Str(_)), "{reply:?}");
    cli.run(&[
        "XADD",
        &stream.key,
        "*",
        "body",
        "after",
        "message-id",
        "after",
    ]);

    let transport = transport_at(&server.url(), "");
    let consumer = transport
        .consume(&stream.key, options(10, AckMode::Cumulative))
        .expect("consumer");
    let before = peak_kb();
    let got = receive_n(&consumer, 3, Duration::from_secs(20));
    let grown_kb = peak_kb().saturating_sub(before);

    assert_eq!(ids(&got), ["before", "huge", "after"]);
    assert_eq!(got[0].message.body.as_slice(), b"before");
    assert_eq!(got[2].message.body.as_slice(), b"after");
    let huge = &got[1].message;
    assert!(huge.body.is_empty());
    let why = huge.header(TRANSPORT_ERROR_HEADER).expect("marked");
    assert!(
        why.contains(&format!("its {}-byte body was dropped", 100 * MB))
            && why.contains("`max_entry_bytes` (16777216)"),
        "{why}"
    );
    println!("reading a 100 MB entry grew the peak resident memory by {grown_kb} kB");
    assert!(
        grown_kb < 16 * 1024,
        "the peak grew by {grown_kb} kB while a 100 MB entry was read"
    );
    consumer.ack(got[2].tag, true).expect("ack");
    consumer.close().unwrap();
}

//! Entries another consumer of the group held when a consumer starts come before anything
//! newer: what a dead consumer held is claimed after `claim_idle_ms`, in order, flagged
//! redelivered, and only then are new entries read; what a live consumer holds is never
//! claimed, however long it holds it, and is waited for until acknowledged; what another
//! consumer takes after the start is not waited for.

mod common;

use std::time::{Duration, Instant};

use common::*;
use golconde_plugin_api::{AckMode, Consumer, Delivery, Transport};
use golconde_redis::RedisConsumer;

fn named(name: &str, claim_idle_ms: u64) -> golconde_redis::Redis {
    transport(&format!(
        r#""consumer_name": "{name}", "claim_idle_ms": {claim_idle_ms}"#
    ))
}

/// Receives for `how_long`, expecting nothing.
fn receive_nothing(consumer: &RedisConsumer, how_long: Duration, why: &str) {
    let until = Instant::now() + how_long;
    while Instant::now() < until {
        let got = consumer
            .receive(20, Duration::from_millis(100))
            .expect("receive");
        assert!(got.is_empty(), "{why}, but got {:?}", ids(&got));
    }
}

#[test]
fn what_a_dead_consumer_held_comes_before_anything_newer() {
    const N: usize = 20;
    const CLAIM_IDLE_MS: u64 = 1000;
    let stream = Stream::new("dead-consumer");
    let dead = named(&unique("a"), CLAIM_IDLE_MS);
    let dead_name = dead.settings().consumer_name.clone();
    fill(&dead, &stream.key, "d", 0..N);
    let consumer = dead
        .consume(&stream.key, options(N as u32, AckMode::Cumulative))
        .expect("consumer");
    let held = receive_n(&consumer, N, Duration::from_secs(5));
    let received_at = Instant::now();
    assert_eq!(ids(&held), names("d", 0..N));
    // The process holding them goes away without a word: closing sends nothing, and
    // dropping the transport stops the task that kept them fresh.
    drop(consumer);
    drop(dead);
    let mut cli = Cli::local();
    assert_eq!(
        cli.pending(&stream.key, &stream.key),
        [(dead_name, N as i64)],
        "a consumer going away acknowledges nothing"
    );
    // The pipeline goes on being fed while no process consumes.
    let publisher = transport("");
    fill(&publisher, &stream.key, "d", N..2 * N);

    // A prefetch that does not divide N: the claimed entries come in several rounds,
    // each acknowledged before the next.
    let survivor = named(&unique("b"), CLAIM_IDLE_MS);
    let ((consumer, got, waited, idle), logged) = logged_info(|| {
        let consumer = survivor
            .consume(&stream.key, options(7, AckMode::Cumulative))
            .expect("consumer");
        let started = Instant::now();
        let mut got: Vec<Delivery> = Vec::new();
        let mut first_after = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < 2 * N {
            assert!(
                Instant::now() < deadline,
                "only {:?} within 10 s",
                ids(&got)
            );
            let batch = consumer
                .receive(7, Duration::from_millis(200))
                .expect("receive");
            if batch.is_empty() {
                continue;
            }
            first_after.get_or_insert_with(|| (started.elapsed(), received_at.elapsed()));
            ack_all(&consumer, &batch);
            got.extend(batch);
        }
        let (waited, idle) = first_after.expect("deliveries");
        (consumer, got, waited, idle)
    });
    let waiting = format!(
        "waiting up to 1 s for {N} entries another consumer of group `{}` left pending on `{}`",
        stream.key, stream.key
    );
    assert_eq!(
        logged.matches(&waiting).count(),
        1,
        "said once what it waits for: {logged}"
    );
    eprintln!(
        "the survivor delivered its first entry {waited:?} after it started, {idle:?} after \
         the dead consumer received them (claim_idle_ms {CLAIM_IDLE_MS})"
    );
    assert_eq!(
        ids(&got),
        names("d", 0..2 * N),
        "what the dead consumer held first, then the newer entries, all in id order"
    );
    let flags: Vec<bool> = got.iter().map(|d| d.redelivered).collect();
    assert_eq!(flags, [vec![true; N], vec![false; N]].concat());
    assert!(
        idle >= Duration::from_millis(CLAIM_IDLE_MS),
        "claimed only once idle for `claim_idle_ms`: after {idle:?}"
    );
    assert!(cli.pending(&stream.key, &stream.key).is_empty());
    consumer.close().unwrap();
}

#[test]
fn what_a_live_consumer_holds_is_waited_for_and_never_claimed() {
    const CLAIM_IDLE_MS: u64 = 300;
    let stream = Stream::new("live-consumer");
    let holder_transport = named(&unique("holder"), CLAIM_IDLE_MS);
    fill(&holder_transport, &stream.key, "l", 0..8);
    let holder = holder_transport
        .consume(&stream.key, options(4, AckMode::Cumulative))
        .expect("holder");
    let held = receive_n(&holder, 4, Duration::from_secs(5));
    assert_eq!(ids(&held), names("l", 0..4));

    // Another process of the pipeline starts while the holder's batch is in flight, and
    // keeps asking for several claim periods: it neither claims the batch (kept fresh by
    // the holder) nor reads past it.
    let other_transport = named(&unique("other"), CLAIM_IDLE_MS);
    let other = other_transport
        .consume(&stream.key, options(20, AckMode::Cumulative))
        .expect("other");
    receive_nothing(
        &other,
        Duration::from_millis(CLAIM_IDLE_MS * 4),
        "the holder's batch is in flight",
    );
    holder
        .ack(held[3].tag, true)
        .expect("the holder still owns its batch");
    let acked_at = Instant::now();
    let got = receive_n(&other, 4, Duration::from_secs(5));
    let waited = acked_at.elapsed();
    eprintln!("the other consumer read new entries {waited:?} after the holder's ack");
    assert_eq!(ids(&got), names("l", 4..8), "only what nobody held");
    assert!(got.iter().all(|d| !d.redelivered));
    assert!(
        waited < Duration::from_secs(2),
        "reading resumes soon after the ack: {waited:?}"
    );
    other.ack(got[3].tag, true).expect("ack");
    let mut cli = Cli::local();
    assert!(cli.pending(&stream.key, &stream.key).is_empty());
    holder.close().unwrap();
    other.close().unwrap();
}

#[test]
fn what_another_consumer_takes_after_the_start_is_not_waited_for() {
    const CLAIM_IDLE_MS: u64 = 300;
    let stream = Stream::new("competing-consumer");
    let first_transport = named(&unique("first"), CLAIM_IDLE_MS);
    fill(&first_transport, &stream.key, "c", 0..20);
    let first = first_transport
        .consume(&stream.key, options(10, AckMode::Cumulative))
        .expect("first");
    let before = receive_n(&first, 5, Duration::from_secs(5));
    assert_eq!(ids(&before), names("c", 0..5));

    let second_transport = named(&unique("second"), CLAIM_IDLE_MS);
    let second = second_transport
        .consume(&stream.key, options(5, AckMode::Cumulative))
        .expect("second");
    // Taken after the second consumer started: not its to wait for.
    let after = receive_n(&first, 5, Duration::from_secs(5));
    assert_eq!(ids(&after), names("c", 5..10));
    receive_nothing(
        &second,
        Duration::from_millis(500),
        "what the first consumer held at the start is unsettled",
    );
    first.ack(before[4].tag, true).expect("ack the first five");
    let got = receive_n(&second, 5, Duration::from_secs(2));
    assert_eq!(ids(&got), names("c", 10..15));
    first.ack(after[4].tag, true).expect("ack the next five");
    second.ack(got[4].tag, true).expect("ack");
    first.close().unwrap();
    second.close().unwrap();
}

#[test]
fn after_a_reconnection_what_others_hold_is_waited_for_again() {
    const CLAIM_IDLE_MS: u64 = 300;
    // A server of the test's own: `CLIENT KILL` must reach no one else.
    let server = Server::start(&[]);
    let stream = Stream::on(server.port, "reconnected");
    let at = |name: &str| {
        transport_at(
            &server.url(),
            &format!(r#""consumer_name": "{name}", "claim_idle_ms": {CLAIM_IDLE_MS}"#),
        )
    };
    let second_transport = at("second");
    fill(&second_transport, &stream.key, "r", 0..20);
    let second = second_transport
        .consume(&stream.key, options(5, AckMode::Cumulative))
        .expect("second");
    let first_transport = at("first");
    let first = first_transport
        .consume(&stream.key, options(5, AckMode::Cumulative))
        .expect("first");
    // Taken after the second consumer started: it reads on without waiting.
    let held = receive_n(&first, 5, Duration::from_secs(5));
    assert_eq!(ids(&held), names("r", 0..5));
    let got = receive_n(&second, 5, Duration::from_secs(2));
    assert_eq!(ids(&got), names("r", 5..10));
    second.ack(got[4].tag, true).expect("ack");

    let mut cli = server.cli();
    cli.run(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
    // Reconnected, it looks again at what others hold, and waits for it.
    receive_nothing(
        &second,
        Duration::from_millis(800),
        "the first consumer still holds entries older than the next ones",
    );
    first
        .ack(held[4].tag, true)
        .expect("ack on a new connection");
    let got = receive_n(&second, 5, Duration::from_secs(2));
    assert_eq!(ids(&got), names("r", 10..15));
    second.ack(got[4].tag, true).expect("ack");
    first.close().unwrap();
    second.close().unwrap();
}

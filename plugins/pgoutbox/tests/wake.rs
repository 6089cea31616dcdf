//! How a consumer is woken: writers notify only a consumer that said it waits, so a busy
//! consumer costs them no `NOTIFY` (which serialises their commits), and a waiting one
//! is woken at once, not at its next poll.

use std::{
    sync::mpsc,
    time::{Duration, Instant},
};

use golconde_pgoutbox::PgOutbox;
use golconde_plugin_api::{testing, AckMode, ConsumeOptions, Consumer, Plugin, Transport};
use postgres::fallible_iterator::FallibleIterator;

const PG: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";

fn admin() -> postgres::Client {
    postgres::Client::connect(PG, postgres::NoTls).expect("PostgreSQL on 127.0.0.1:5432")
}

/// Whether `client` got a notification on its channels within `limit`.
fn notified(client: &mut postgres::Client, limit: Duration) -> bool {
    client
        .notifications()
        .timeout_iter(limit)
        .next()
        .expect("notifications readable")
        .is_some()
}

fn waiting(client: &mut postgres::Client, delivered: &str) -> bool {
    client
        .query_one(&format!("select waiting from {delivered}"), &[])
        .expect("the outbox's _delivered row")
        .get(0)
}

/// Polls `f` until it holds or `limit` passes.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

#[test]
fn only_a_waiting_consumer_is_notified_and_it_wakes_at_once() {
    let schema = format!("golconde_wake_{}", std::process::id());
    let queue = format!("{schema}.q");
    let (outbox, delivered) = (format!("{schema}.q"), format!("{schema}.q_delivered"));
    // A poll far longer than the test: only a notification can wake the consumer in time.
    let config = serde_json::json!({ "dsn": PG, "poll_interval_ms": 600_000 });
    let transport = PgOutbox::new(
        serde_json::from_value(config).expect("a pgoutbox configuration"),
        &testing::host("wake"),
    )
    .expect("pgoutbox");
    let consumer = transport
        .consume(
            &queue,
            ConsumeOptions {
                prefetch: 100,
                ack_mode: AckMode::Cumulative,
            },
        )
        .expect("consuming the outbox");
    let mut writer = admin();
    let mut listener = admin();
    listener
        .batch_execute(&format!("listen \"golconde:{queue}\""))
        .expect("listen");

    // Busy: rows are waiting when the consumer reads, so it never says it waits, and a
    // writer sends no notification.
    let insert = format!("insert into {outbox} (body) values ('{{}}')");
    writer.batch_execute(&insert).expect("a row");
    let got = consumer
        .receive(10, Duration::from_secs(5))
        .expect("receive");
    assert_eq!(got.len(), 1);
    assert!(!waiting(&mut writer, &delivered));
    writer.batch_execute(&insert).expect("a row");
    assert!(
        !notified(&mut listener, Duration::from_millis(500)),
        "a writer notified a consumer that did not wait"
    );
    let got = consumer
        .receive(10, Duration::from_secs(5))
        .expect("receive");
    assert_eq!(got.len(), 1);
    consumer.ack(got[0].tag, true).expect("ack");

    // Idle: an empty read says it waits, and the next writer wakes it at once.
    std::thread::scope(|scope| {
        let (sent, woke) = mpsc::channel();
        let consumer = &consumer;
        scope.spawn(move || {
            let got = consumer
                .receive(10, Duration::from_secs(60))
                .expect("receive");
            sent.send((got, Instant::now())).expect("the test waits");
        });
        assert!(
            eventually(Duration::from_secs(10), || waiting(
                &mut admin(),
                &delivered
            )),
            "an idle consumer did not say it waits"
        );
        std::thread::sleep(Duration::from_millis(300));
        let written = Instant::now();
        writer.batch_execute(&insert).expect("a row");
        let (got, at) = woke
            .recv_timeout(Duration::from_secs(30))
            .expect("the waiting consumer was woken by the write, not by its poll");
        assert_eq!(got.len(), 1);
        assert!(at - written < Duration::from_secs(10));
    });
    assert!(notified(&mut listener, Duration::from_secs(1)));
    assert!(
        !waiting(&mut writer, &delivered),
        "the read that found rows clears the flag"
    );

    // A transaction's notification goes at commit: one that wrote while the consumer was
    // busy and commits once it waits still wakes it.
    let mut long = admin();
    let mut tx = long.transaction().expect("begin");
    tx.batch_execute(&insert).expect("a row");
    let got = consumer
        .receive(10, Duration::from_secs(1))
        .expect("receive");
    assert!(got.is_empty(), "uncommitted rows are not read");
    assert!(waiting(&mut writer, &delivered));
    std::thread::scope(|scope| {
        let (sent, woke) = mpsc::channel();
        let consumer = &consumer;
        scope.spawn(move || {
            let got = consumer
                .receive(10, Duration::from_secs(60))
                .expect("receive");
            sent.send(got).expect("the test waits");
        });
        std::thread::sleep(Duration::from_millis(300));
        tx.commit().expect("commit");
        let got = woke
            .recv_timeout(Duration::from_secs(30))
            .expect("woken by the commit");
        assert_eq!(got.len(), 1);
    });

    // Closing clears the flag: with no consumer, writers need not notify.
    let got = consumer
        .receive(10, Duration::from_millis(300))
        .expect("receive");
    assert!(got.is_empty());
    assert!(waiting(&mut writer, &delivered));
    consumer.close().expect("close");
    assert!(!waiting(&mut writer, &delivered));
    drop(consumer);
    drop(transport);
    let _ = writer.batch_execute(&format!("drop schema if exists {schema} cascade"));
}

//! What comes again, and in which order: a consumer's own pending list first after a
//! restart of its dispatcher, deliveries given back with `nack`, one delivery settled
//! alone, and the consumer names and group names a process uses.

mod common;

use std::time::Duration;

use common::*;
use golconde_plugin_api::{AckMode, Consumer, ErrorKind, Transport};

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn a_restarted_consumer_takes_its_own_pending_entries_first_in_order() {
    let stream = Stream::new("own-pending");
    let transport = transport("");
    fill(&transport, &stream.key, "m", 0..10);
    let first = transport
        .consume(&stream.key, options(10, AckMode::Cumulative))
        .expect("consumer");
    let got = receive_n(&first, 6, WAIT);
    assert_eq!(ids(&got), names("m", 0..6));
    first.ack(got[1].tag, true).expect("ack of the first two");
    // The dispatcher restarts: the consumer is closed with four entries held.
    first.close().expect("close");
    fill(&transport, &stream.key, "m", 10..15);

    let second = transport
        .consume(&stream.key, options(20, AckMode::Cumulative))
        .expect("consumer");
    assert_eq!(second.consumer_name(), transport.settings().consumer_name);
    let got = receive_n(&second, 13, WAIT);
    assert_eq!(
        ids(&got),
        names("m", 2..15),
        "held ones first, then the rest"
    );
    let flags: Vec<bool> = got.iter().map(|d| d.redelivered).collect();
    assert_eq!(flags, [vec![true; 4], vec![false; 9]].concat());
    for pair in got.windows(2) {
        assert!(pair[0].tag < pair[1].tag, "tags increase");
    }
    second.ack(got[12].tag, true).expect("ack");
    second.close().expect("close");
    let mut cli = Cli::local();
    assert!(
        cli.pending(&stream.key, &stream.key).is_empty(),
        "nothing pending"
    );
}

#[test]
fn nack_with_requeue_gives_back_in_order_and_without_requeue_drops() {
    let stream = Stream::new("nack");
    let transport = transport("");
    fill(&transport, &stream.key, "n", 0..6);
    let consumer = transport
        .consume(&stream.key, options(10, AckMode::Individual))
        .expect("consumer");
    let got = receive_n(&consumer, 6, WAIT);
    // The first three come back, first and in order; the others stay held.
    consumer.nack(got[2].tag, true, true).expect("nack");
    let again = receive_n(&consumer, 3, WAIT);
    assert_eq!(ids(&again), names("n", 0..3));
    assert!(again.iter().all(|d| d.redelivered));
    assert!(again[0].tag > got[5].tag, "new tags");
    let err = consumer.ack(got[0].tag, false).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
    assert!(
        err.message.contains("already acknowledged or rejected"),
        "{err}"
    );

    // Settled alone, out of order: only that one.
    consumer.ack(got[4].tag, false).expect("ack of one");
    // Dropped: acknowledged without being processed, never delivered again.
    consumer
        .nack(got[3].tag, false, false)
        .expect("nack without requeue");
    let mut cli = Cli::local();
    let pending = cli.pending(&stream.key, &stream.key);
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].1, 4, "n-0..2 and n-5 still pending: {pending:?}");
    assert!(consumer
        .receive(10, Duration::from_millis(300))
        .unwrap()
        .is_empty());
    consumer.close().expect("close");

    let next = transport
        .consume(&stream.key, options(10, AckMode::Cumulative))
        .expect("consumer");
    let rest = receive_n(&next, 4, WAIT);
    assert_eq!(ids(&rest), ["n-0", "n-1", "n-2", "n-5"]);
    next.ack(rest[3].tag, true).expect("ack");
    assert!(next
        .receive(10, Duration::from_millis(300))
        .unwrap()
        .is_empty());
    let err = next.ack(999, true).unwrap_err();
    assert!(err.message.contains("never handed out"), "{err}");
    next.close().expect("close");
}

#[test]
fn a_consumer_never_holds_more_than_its_prefetch() {
    let stream = Stream::new("prefetch");
    let transport = transport("");
    fill(&transport, &stream.key, "p", 0..10);
    let consumer = transport
        .consume(&stream.key, options(3, AckMode::Cumulative))
        .expect("consumer");
    let got = receive_n(&consumer, 3, WAIT);
    assert!(consumer
        .receive(10, Duration::from_millis(200))
        .unwrap()
        .is_empty());
    assert_eq!(consumer.held(), 3);
    consumer.ack(got[0].tag, true).expect("ack");
    let next = consumer.receive(10, Duration::from_secs(2)).unwrap();
    assert_eq!(ids(&next), ["p-3"]);
    consumer.close().expect("close");
}

#[test]
fn consumers_open_at_once_in_one_process_get_names_of_their_own() {
    let stream = Stream::new("names");
    let transport = transport(r#""consumer_name": "worker""#);
    fill(&transport, &stream.key, "c", 0..4);
    let a = transport
        .consume(&stream.key, options(2, AckMode::Cumulative))
        .expect("a");
    let b = transport
        .consume(&stream.key, options(2, AckMode::Cumulative))
        .expect("b");
    assert_eq!(a.consumer_name(), "worker");
    assert_eq!(b.consumer_name(), "worker-1");
    let from_a = receive_n(&a, 2, WAIT);
    let from_b = receive_n(&b, 2, WAIT);
    assert_eq!(ids(&from_a), ["c-0", "c-1"]);
    assert_eq!(ids(&from_b), ["c-2", "c-3"]);
    let mut cli = Cli::local();
    let mut pending = cli.pending(&stream.key, &stream.key);
    pending.sort();
    assert_eq!(
        pending,
        [("worker".to_string(), 2), ("worker-1".to_string(), 2)]
    );
    // Closing the first frees its name: the next consumer takes it, with its entries.
    a.close().expect("close");
    let c = transport
        .consume(&stream.key, options(2, AckMode::Cumulative))
        .expect("c");
    assert_eq!(c.consumer_name(), "worker");
    assert_eq!(ids(&receive_n(&c, 2, WAIT)), ["c-0", "c-1"]);
    b.close().unwrap();
    c.close().unwrap();
}

#[test]
fn the_group_is_named_after_the_pipeline_and_gets_every_entry() {
    let stream = Stream::new("groups");
    let transport = transport("");
    fill(&transport, &stream.key, "g", 0..3);
    let orders = transport
        .consume_as(&stream.key, options(10, AckMode::Cumulative), "orders")
        .expect("orders");
    let audit = transport
        .consume_as(&stream.key, options(10, AckMode::Cumulative), "audit log")
        .expect("audit");
    assert_eq!(ids(&receive_n(&orders, 3, WAIT)), names("g", 0..3));
    assert_eq!(ids(&receive_n(&audit, 3, WAIT)), names("g", 0..3));
    let mut cli = Cli::local();
    let mut groups: Vec<String> = cli
        .run(&["XINFO", "GROUPS", &stream.key])
        .items()
        .iter()
        .map(|g| g.items()[1].text())
        .collect();
    groups.sort();
    assert_eq!(groups, ["audit log", "orders"]);
    orders.close().unwrap();
    audit.close().unwrap();
}

#[test]
fn entries_trimmed_away_while_pending_are_reported_and_acknowledged() {
    let stream = Stream::new("trimmed-pending");
    let transport = transport("");
    fill(&transport, &stream.key, "t", 0..4);
    let first = transport
        .consume(&stream.key, options(10, AckMode::Cumulative))
        .expect("consumer");
    assert_eq!(receive_n(&first, 4, WAIT).len(), 4);
    first.close().unwrap();
    let mut cli = Cli::local();
    // Trimmed by someone while they were pending: only the last one is left.
    assert_eq!(cli.run(&["XTRIM", &stream.key, "MAXLEN", "1"]).int(), 3);

    let (got, logged) = golconde_plugin_api::testing::logged(|| {
        let second = transport
            .consume(&stream.key, options(10, AckMode::Cumulative))
            .expect("consumer");
        let got = receive_n(&second, 1, WAIT);
        second.ack(got[0].tag, true).expect("ack");
        second.close().unwrap();
        got
    });
    assert_eq!(ids(&got), ["t-3"]);
    assert!(got[0].redelivered);
    assert!(
        logged.contains("are gone from the stream") && logged.contains("cannot be delivered"),
        "{logged}"
    );
    assert!(
        cli.pending(&stream.key, &stream.key).is_empty(),
        "all acknowledged"
    );
}

//! The consumer holds at most `prefetch` deliveries the host has not taken, whatever the
//! broker sends: without a prefetch header RabbitMQ sends the whole queue at once, and the
//! rest must wait in TCP buffers, not in memory. A prefetch of 0 (no limit) is refused.

mod common;

use std::time::Duration;

use common::*;
use golconde_plugin_api::{AckMode, Consumer, ErrorKind, Transport};

#[test]
fn the_inbox_never_holds_more_than_the_prefetch() {
    const N: usize = 3000;
    let queue = Queue::new("inbox");
    // No prefetch header: the broker does not limit what it sends.
    let transport = transport(r#""prefetch_header": """#);
    fill(&transport, &queue.name, "p", N);
    let consumer = transport
        .consume(&queue.name, options(10, AckMode::Cumulative))
        .expect("consumer");
    // Time for the broker to send all it would.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(consumer.waiting(), 10, "the inbox is full, and no fuller");

    // Taken slowly, everything still comes, in order, without the inbox growing.
    let mut next = 0;
    while next < N {
        let got = consumer
            .receive(7, Duration::from_secs(10))
            .expect("receive");
        assert!(!got.is_empty(), "stalled after {next}");
        assert!(consumer.waiting() <= 10, "{} waiting", consumer.waiting());
        for delivery in &got {
            assert_eq!(id(delivery), format!("p-{next}"));
            next += 1;
        }
        consumer.ack(got.last().unwrap().tag, true).expect("ack");
    }
    consumer.close().expect("close");
    queue.assert_ready(0);
}

#[test]
fn a_consumer_with_a_full_inbox_still_closes() {
    let queue = Queue::new("inbox-close");
    let transport = transport(r#""prefetch_header": """#);
    fill(&transport, &queue.name, "c", 200);
    let consumer = transport
        .consume(&queue.name, options(5, AckMode::Cumulative))
        .expect("consumer");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(consumer.waiting(), 5);
    // The reader waits for room; closing must not wait for it (DISCONNECT's receipt comes
    // behind the deliveries that do not fit).
    consumer.close().expect("closed, DISCONNECT confirmed");
    queue.assert_ready(200);
}

#[test]
fn a_prefetch_of_zero_is_refused_naming_it() {
    let transport = transport("");
    let err = transport
        .consume(&unique("zero"), options(0, AckMode::Cumulative))
        .err()
        .expect("refused");
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert!(err.message.contains("a `prefetch` of 0"), "{err}");
    assert!(
        err.message.contains("set the pipeline's `prefetch`"),
        "{err}"
    );
}

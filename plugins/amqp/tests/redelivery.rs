//! Messages come back when the host rejects them or goes away without acknowledging, and
//! acknowledgements the plugin cannot honour are refused rather than sent.

mod common;

use common::*;
use golconde_plugin_api::ErrorKind;

#[test]
fn a_nack_with_requeue_comes_back_redelivered() {
    let queue = TestQueue::new("nack");
    let transport = transport();
    publish(&transport, &queue.name, &numbered("n", 0..1));
    let consumer = consume(&transport, &queue.name, 10);
    let first = receive_exactly(&consumer, 1);
    assert!(!first[0].redelivered);
    consumer
        .nack(first[0].tag, false, true)
        .into_result()
        .unwrap();

    let again = receive_exactly(&consumer, 1);
    assert_eq!(body(&again[0]), "n-0");
    assert!(again[0].redelivered);
    assert!(again[0].tag > first[0].tag);
    consumer.ack(again[0].tag, false).into_result().unwrap();
    consumer.close().into_result().unwrap();
    assert_eq!(broker().ready(&queue.name), Some(0));
}

#[test]
fn a_nack_without_requeue_drops_the_messages() {
    let queue = TestQueue::new("drop");
    let transport = transport();
    publish(&transport, &queue.name, &numbered("d", 0..3));
    let consumer = consume(&transport, &queue.name, 10);
    let deliveries = receive_exactly(&consumer, 3);
    consumer
        .nack(deliveries[2].tag, true, false)
        .into_result()
        .unwrap();
    assert!(consumer.receive(10, 300).into_result().unwrap().is_empty());
    consumer.close().into_result().unwrap();
    assert_eq!(broker().ready(&queue.name), Some(0));
}

#[test]
fn a_consumer_dropped_without_acknowledging_gives_its_deliveries_back() {
    let queue = TestQueue::new("dropped");
    let transport = transport();
    publish(&transport, &queue.name, &numbered("r", 0..3));
    let consumer = consume(&transport, &queue.name, 10);
    let first = receive_exactly(&consumer, 3);
    assert!(first.iter().all(|d| !d.redelivered));
    drop(consumer);

    let next = consume(&transport, &queue.name, 10);
    let again = receive_exactly(&next, 3);
    assert_eq!(
        again.iter().map(body).collect::<Vec<_>>(),
        vec!["r-0", "r-1", "r-2"]
    );
    assert!(again.iter().all(|d| d.redelivered));
    next.ack(again[2].tag, true).into_result().unwrap();
    next.close().into_result().unwrap();
    assert_eq!(broker().ready(&queue.name), Some(0));
}

#[test]
fn prefetch_limits_what_one_consumer_holds() {
    let queue = TestQueue::new("prefetch");
    let transport = transport();
    publish(&transport, &queue.name, &numbered("p", 0..10));
    let consumer = consume(&transport, &queue.name, 3);
    let held = receive_exactly(&consumer, 3);
    // Nothing acknowledged: the broker must not hand over a fourth.
    assert!(consumer.receive(10, 500).into_result().unwrap().is_empty());
    assert_eq!(broker().ready(&queue.name), Some(7));
    consumer.ack(held[2].tag, true).into_result().unwrap();
    let more = receive_exactly(&consumer, 3);
    assert_eq!(body(&more[0]), "p-3");
    consumer.close().into_result().unwrap();
    assert_eq!(broker().ready(&queue.name), Some(7), "p-3..p-5 went back");
}

#[test]
fn tags_never_handed_out_are_refused_and_repeated_acks_are_harmless() {
    let queue = TestQueue::new("tags");
    let transport = transport();
    publish(&transport, &queue.name, &numbered("u", 0..4));
    // Prefetch 4: all four sit in the plugin while the host has taken only two.
    let consumer = consume(&transport, &queue.name, 4);
    let two = receive_exactly(&consumer, 2);

    let err = consumer
        .ack(two[1].tag + 1, true)
        .into_result()
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
    assert!(err.message.contains("never handed out"), "{err}");
    for bogus in [0, 1, u64::MAX] {
        let err = consumer.ack(bogus, false).into_result().unwrap_err();
        assert_eq!(err.kind, ErrorKind::Permanent, "{bogus}: {err}");
    }

    consumer.ack(two[1].tag, true).into_result().unwrap();
    // Acknowledging the same deliveries again would make RabbitMQ close the channel.
    consumer.ack(two[1].tag, true).into_result().unwrap();
    consumer.ack(two[0].tag, false).into_result().unwrap();
    let rest = receive_exactly(&consumer, 2);
    assert_eq!(
        rest.iter().map(body).collect::<Vec<_>>(),
        vec!["u-2", "u-3"]
    );
    assert!(
        rest.iter().all(|d| !d.redelivered),
        "the channel survived the repeated acks"
    );
    consumer.ack(rest[1].tag, true).into_result().unwrap();
    consumer.close().into_result().unwrap();
    assert_eq!(broker().ready(&queue.name), Some(0));
}

#[test]
fn a_closed_consumer_says_so() {
    let queue = TestQueue::new("closed");
    let transport = transport();
    let consumer = consume(&transport, &queue.name, 1);
    consumer.close().into_result().unwrap();
    consumer.close().into_result().unwrap();
    let err = consumer.receive(1, 10).into_result().unwrap_err();
    assert!(err.message.contains("closed"), "{err}");
    assert!(err.message.contains(&queue.name), "{err}");
}

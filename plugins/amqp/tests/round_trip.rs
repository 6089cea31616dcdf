//! Publish, consume and acknowledge against the real broker.

mod common;

use common::*;

#[test]
fn published_messages_are_consumed_in_order_and_acknowledged() {
    let queue = TestQueue::new("order");
    let transport = transport();
    publish(&transport, &queue.name, &numbered("m", 0..50));
    assert_eq!(
        broker().ready(&queue.name),
        Some(50),
        "published = confirmed"
    );

    let consumer = consume(&transport, &queue.name, 10);
    let mut bodies = Vec::new();
    while bodies.len() < 50 {
        let batch = receive_exactly(&consumer, 1);
        let more = consumer.receive(100, 0).into_result().unwrap();
        let last = more.last().unwrap_or(&batch[0]).tag;
        for delivery in batch.iter().chain(&more) {
            assert!(!delivery.redelivered);
            bodies.push(body(delivery));
        }
        consumer.ack(last, true).into_result().unwrap();
    }
    let expected: Vec<String> = (0..50).map(|i| format!("m-{i}")).collect();
    assert_eq!(bodies, expected);
    assert!(
        consumer.receive(10, 200).into_result().unwrap().is_empty(),
        "nothing more than was published"
    );
    consumer.close().into_result().unwrap();
    assert_eq!(broker().ready(&queue.name), Some(0), "every message acked");
}

#[test]
fn tags_increase_in_delivery_order() {
    let queue = TestQueue::new("tags");
    let transport = transport();
    publish(&transport, &queue.name, &numbered("t", 0..20));
    let consumer = consume(&transport, &queue.name, 20);
    let deliveries = receive_exactly(&consumer, 20);
    assert!(deliveries.windows(2).all(|w| w[0].tag < w[1].tag));
    consumer
        .ack(deliveries[19].tag, true)
        .into_result()
        .unwrap();
    consumer.close().into_result().unwrap();
    assert_eq!(broker().ready(&queue.name), Some(0));
}

#[test]
fn individual_acks_leave_only_the_others_on_the_queue() {
    let queue = TestQueue::new("individual");
    let transport = transport();
    publish(&transport, &queue.name, &numbered("i", 0..5));
    let consumer = consume(&transport, &queue.name, 10);
    let deliveries = receive_exactly(&consumer, 5);
    for index in [0, 2, 4] {
        consumer
            .ack(deliveries[index].tag, false)
            .into_result()
            .unwrap();
    }
    consumer.close().into_result().unwrap();
    assert_eq!(broker().ready(&queue.name), Some(2));

    let again = consume(&transport, &queue.name, 10);
    let back = receive_exactly(&again, 2);
    assert_eq!(
        back.iter().map(body).collect::<Vec<_>>(),
        vec!["i-1".to_string(), "i-3".to_string()]
    );
    assert!(back.iter().all(|d| d.redelivered));
    again.ack(back[1].tag, true).into_result().unwrap();
    again.close().into_result().unwrap();
    assert_eq!(broker().ready(&queue.name), Some(0));
}

#[test]
fn receive_returns_nothing_when_the_time_runs_out() {
    let queue = TestQueue::new("empty");
    let transport = transport();
    let consumer = consume(&transport, &queue.name, 10);
    assert!(consumer.receive(10, 100).into_result().unwrap().is_empty());
    // And still delivers what comes later.
    publish(&transport, &queue.name, &numbered("late", 0..1));
    let late = receive_exactly(&consumer, 1);
    assert_eq!(body(&late[0]), "late-0");
    consumer.ack(late[0].tag, false).into_result().unwrap();
    consumer.close().into_result().unwrap();
}

#[test]
fn receive_takes_what_is_there_up_to_max() {
    let queue = TestQueue::new("max");
    let transport = transport();
    publish(&transport, &queue.name, &numbered("x", 0..30));
    let consumer = consume(&transport, &queue.name, 30);
    let mut total = 0;
    while total < 30 {
        let batch = consumer.receive(7, 2000).into_result().unwrap();
        assert!(!batch.is_empty() && batch.len() <= 7, "{}", batch.len());
        total += batch.len();
        consumer
            .ack(batch.last().unwrap().tag, true)
            .into_result()
            .unwrap();
    }
    consumer.close().into_result().unwrap();
    assert_eq!(broker().ready(&queue.name), Some(0));
}

#[test]
fn ping_connects_and_an_empty_publish_needs_no_broker() {
    let transport = transport();
    transport.ping().into_result().unwrap();
    let nowhere = build(&serde_json::json!({"url": "amqp://guest:guest@127.0.0.1:1/%2f"})).unwrap();
    nowhere
        .publish(
            abi_stable::std_types::RStr::from_str("q"),
            abi_stable::std_types::RSlice::from_slice(&[]),
        )
        .into_result()
        .unwrap();
}

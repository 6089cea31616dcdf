//! Publishing with receipts and consuming with acknowledgements on RabbitMQ's STOMP
//! adapter: what is published arrives whole and in order, tags grow, acknowledged
//! messages leave the queue and the rest stay.

mod common;

use std::time::Duration;

use common::*;
use golconde_plugin_api::{AckMode, Consumer, ErrorKind, Message, Transport};

#[test]
fn published_messages_are_consumed_in_order_and_acknowledged() {
    let queue = Queue::new("order");
    let transport = transport("");
    // Binary bodies with NUL bytes: content-length must carry them.
    let sent: Vec<Message> = (0..50u8)
        .map(|i| message(&format!("m-{i}"), &[i, 0, 255, b'\n', 0, i]))
        .collect();
    transport.publish(&queue.name, &sent).expect("published");
    assert_eq!(
        queue.ready(),
        50,
        "every receipt means a message on the queue"
    );

    let consumer = transport
        .consume(&queue.name, options(50, AckMode::Cumulative))
        .expect("consumer");
    let got = receive_n(&consumer, 50, Duration::from_secs(20));
    for (i, delivery) in got.iter().enumerate() {
        assert_eq!(id(delivery), format!("m-{i}"));
        assert_eq!(&delivery.message.body[..], &sent[i].body[..]);
        assert!(!delivery.redelivered);
        assert_eq!(
            delivery.message.header("destination"),
            Some(format!("/queue/{}", queue.name).as_str())
        );
    }
    assert!(
        got.windows(2).all(|w| w[0].tag < w[1].tag),
        "tags increase in delivery order"
    );
    // Acknowledge the first 30 cumulatively, in two steps, and leave 20.
    consumer.ack(got[9].tag, true).expect("ack up to 10");
    consumer.ack(got[29].tag, true).expect("ack up to 30");
    consumer.close().expect("close");
    queue.assert_ready(20);

    let consumer = transport
        .consume(&queue.name, options(100, AckMode::Cumulative))
        .expect("second consumer");
    let rest = receive_n(&consumer, 20, Duration::from_secs(20));
    assert_eq!(id(&rest[0]), "m-30");
    assert!(rest.iter().all(|d| d.redelivered));
    consumer.ack(rest[19].tag, true).expect("ack the rest");
    consumer.close().expect("close");
    assert_eq!(queue.ready(), 0);
}

#[test]
fn the_prefetch_bounds_what_is_unacknowledged() {
    let queue = Queue::new("prefetch");
    let transport = transport("");
    fill(&transport, &queue.name, "p", 25);
    let consumer = transport
        .consume(&queue.name, options(10, AckMode::Cumulative))
        .expect("consumer");
    let first = receive_n(&consumer, 10, Duration::from_secs(10));
    let more = consumer
        .receive(100, Duration::from_millis(500))
        .expect("receive");
    assert!(more.is_empty(), "{} beyond the prefetch of 10", more.len());
    consumer.ack(first[9].tag, true).expect("ack");
    let second = receive_n(&consumer, 10, Duration::from_secs(10));
    assert_eq!(id(&second[0]), "p-10");
    consumer.ack(second[9].tag, true).expect("ack");
    consumer.close().expect("close");
    queue.assert_ready(5);
}

#[test]
fn receive_returns_what_is_there_and_waits_only_when_nothing_is() {
    let queue = Queue::new("receive");
    let transport = transport("");
    let consumer = transport
        .consume(&queue.name, options(100, AckMode::Cumulative))
        .expect("consumer");
    assert!(consumer
        .receive(10, Duration::from_millis(200))
        .expect("receive")
        .is_empty());
    fill(&transport, &queue.name, "r", 5);
    let first = receive_n(&consumer, 1, Duration::from_secs(10));
    let more = receive_n(&consumer, 4, Duration::from_secs(10));
    assert!(more.len() == 4 && more[0].tag == first[0].tag + 1);
    assert!(consumer
        .receive(0, Duration::from_secs(5))
        .unwrap()
        .is_empty());
    consumer.ack(more[3].tag, true).expect("ack");
    consumer.close().expect("close");
    assert_eq!(queue.ready(), 0);
}

#[test]
fn individual_acknowledgement_settles_only_the_named_delivery() {
    let queue = Queue::new("individual");
    let transport = transport("");
    fill(&transport, &queue.name, "i", 4);
    let consumer = transport
        .consume(&queue.name, options(10, AckMode::Individual))
        .expect("consumer");
    let got = receive_n(&consumer, 4, Duration::from_secs(10));
    consumer
        .ack(got[1].tag, false)
        .expect("ack the second alone");
    consumer
        .ack(got[3].tag, false)
        .expect("ack the fourth alone");
    let err = consumer.ack(got[1].tag, false).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
    assert!(err.message.contains("already"), "{err}");
    consumer.close().expect("close");
    let left = consume_all(&transport, &queue.name);
    let mut left: Vec<String> = left.iter().map(id).collect();
    left.sort();
    assert_eq!(left, ["i-0", "i-2"]);
}

#[test]
fn individual_mode_settles_everything_up_to_a_tag_with_multiple() {
    let queue = Queue::new("individual-multiple");
    let transport = transport("");
    fill(&transport, &queue.name, "im", 5);
    let consumer = transport
        .consume(&queue.name, options(10, AckMode::Individual))
        .expect("consumer");
    let got = receive_n(&consumer, 5, Duration::from_secs(10));
    consumer.ack(got[3].tag, true).expect("ack the first four");
    consumer.close().expect("close");
    queue.assert_ready(1);
}

#[test]
fn cumulative_mode_refuses_to_settle_a_delivery_on_its_own_out_of_order() {
    let queue = Queue::new("cumulative-single");
    let transport = transport("");
    fill(&transport, &queue.name, "c", 3);
    let consumer = transport
        .consume(&queue.name, options(10, AckMode::Cumulative))
        .expect("consumer");
    let got = receive_n(&consumer, 3, Duration::from_secs(10));
    let err = consumer.ack(got[1].tag, false).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
    assert!(err.message.contains("cumulatively"), "{err}");
    consumer
        .ack(got[0].tag, false)
        .expect("the oldest alone is fine");
    consumer
        .ack(got[1].tag, false)
        .expect("now it is the oldest");
    let err = consumer.ack(got[2].tag + 100, true).unwrap_err();
    assert!(err.message.contains("never handed out"), "{err}");
    // Settling again is harmless with `multiple`: nothing is pending up to there.
    consumer
        .ack(got[1].tag, true)
        .expect("nothing left up to it");
    consumer.close().expect("close");
    queue.assert_ready(1);
}

#[test]
fn a_plain_name_and_its_queue_destination_are_the_same_queue() {
    let queue = Queue::new("naming");
    let transport = transport("");
    transport
        .publish(&format!("/queue/{}", queue.name), &[message("n-1", b"x")])
        .expect("published by destination");
    transport
        .publish(&queue.name, &[message("n-2", b"y")])
        .expect("published by name");
    assert_eq!(queue.ready(), 2);
    let got = queue
        .amqp
        .get(&queue.name)
        .expect("first message over AMQP");
    assert_eq!(got.data, b"x");
    assert_eq!(queue.amqp.get(&queue.name).expect("second").data, b"y");
}

#[test]
fn ping_connects_and_says_goodbye() {
    transport("").ping().expect("ping");
}

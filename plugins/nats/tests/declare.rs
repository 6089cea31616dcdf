//! What the plugin makes, what it uses as it finds it, and what it refuses: streams and
//! durable consumers with `declare = "create"` and `"passive"`, a consumer made outside
//! with ack policy `explicit`, one with `none`, a second pipeline on a work queue.

mod common;

use std::time::Duration;

use common::*;
use golconde_plugin_api::{Consumer, ErrorKind, Transport};
use serde_json::json;

#[test]
fn create_makes_a_work_queue_stream_and_a_consumer_named_after_the_pipeline() {
    let queue = Queue::new("defaults");
    let transport = transport(r#""ack_wait_ms": 4000"#);
    let consumer = transport
        .consume_as(&queue.name, options(2000), "users sync")
        .expect("consumer");

    let stream = queue.stream();
    assert_eq!(
        stream,
        queue.name.replace('.', "_"),
        "named after the subject"
    );
    let config = &queue.side.stream_info(&stream)["config"];
    assert_eq!(config["subjects"], json!([queue.name]));
    assert_eq!(config["retention"], "workqueue");
    assert_eq!(config["storage"], "file");
    assert_eq!(config["num_replicas"], 1);
    assert_eq!(config["duplicate_window"], 120_000_000_000u64);
    assert_eq!(config["discard"], "old");

    let info = queue
        .side
        .consumer_info(&stream, "users_sync")
        .expect("a durable consumer named after the pipeline, made acceptable");
    let c = &info["config"];
    assert_eq!(c["durable_name"], "users_sync");
    assert_eq!(c["filter_subject"], json!(queue.name));
    assert_eq!(c["deliver_policy"], "all");
    assert_eq!(
        c["ack_policy"], "explicit",
        "JetStream refuses `all` on a work queue"
    );
    assert_eq!(c["ack_wait"], 4_000_000_000u64);
    assert_eq!(c["max_deliver"], -1);
    assert_eq!(c["max_ack_pending"], 2000, "raised to the prefetch");
    assert!(c.get("deliver_subject").is_none(), "a pull consumer");
    consumer.close().expect("close");
}

#[test]
fn create_with_limits_and_a_named_stream_takes_several_queues() {
    let first = Queue::new("named-a");
    let second = Queue::new("named-b");
    let name = format!("GOLCONDE_TEST_{}", std::process::id());
    let transport = transport(&format!(
        r#""stream": "{name}", "retention": "limits", "max_bytes": 1048576, "max_age_s": 3600,
            "duplicate_window_s": 60, "max_ack_pending": 5"#
    ));
    fill(&transport, &first.name, "a", 0..2);
    fill(&transport, &second.name, "b", 0..3);
    assert_eq!(first.stream(), name);
    assert_eq!(second.stream(), name);
    let config = &first.side.stream_info(&name)["config"];
    assert_eq!(config["subjects"], json!([first.name, second.name]));
    assert_eq!(config["retention"], "limits");
    assert_eq!(config["max_bytes"], 1_048_576);
    assert_eq!(config["max_age"], 3_600_000_000_000u64);
    assert_eq!(config["duplicate_window"], 60_000_000_000u64);
    assert_eq!(
        config["discard"], "new",
        "a full queue refuses, never drops"
    );

    let consumer = transport
        .consume_as(&second.name, options(10), "b-pipeline")
        .expect("consumer");
    let c = &first
        .side
        .consumer_info(&name, "b-pipeline")
        .expect("consumer")["config"];
    assert_eq!(
        c["ack_policy"], "all",
        "cumulative where JetStream allows it"
    );
    assert_eq!(
        c["max_ack_pending"], 10,
        "`max_ack_pending`, raised to the prefetch"
    );
    let got = receive_n(&consumer, 3, Duration::from_secs(10));
    assert_eq!(ids(&got), names("b", 0..3), "only its own subject");
    consumer.ack(got[2].tag, true).expect("ack");
    consumer.close().expect("close");
    let info = first
        .side
        .consumer_info(&name, "b-pipeline")
        .expect("consumer");
    assert_eq!(info["ack_floor"]["stream_seq"], 5, "one cumulative ack");
    assert_eq!(info["num_ack_pending"], 0);
}

#[test]
fn passive_refuses_what_is_missing_and_says_what_to_create() {
    let queue = Queue::new("passive");
    let transport = transport(r#""declare": "passive""#);

    let err = transport
        .publish(&queue.name, &[message("p-0", b"x")])
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert!(err.message.contains(&queue.name), "{err}");
    assert!(err.message.contains("nats stream add"), "{err}");
    let err = transport
        .consume_as(&queue.name, options(10), "passive")
        .err()
        .expect("refused");
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert!(err.message.contains("nats stream add"), "{err}");
    assert!(queue.side.stream_of(&queue.name).is_none(), "nothing made");

    let stream = queue.name.replace('.', "_");
    queue.side.create_stream(&stream, &queue.name, json!({}));
    transport
        .publish(&queue.name, &[message("p-0", b"x")])
        .expect("the stream exists now");
    let err = transport
        .consume_as(&queue.name, options(10), "passive")
        .err()
        .expect("refused");
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert!(err.message.contains("nats consumer add"), "{err}");
    assert!(
        err.message.contains("`passive`"),
        "names the consumer: {err}"
    );
    assert!(queue.side.consumer_info(&stream, "passive").is_none());
}

#[test]
fn an_explicit_ack_consumer_made_outside_is_acknowledged_one_by_one() {
    let queue = Queue::new("explicit");
    let stream = queue.name.replace('.', "_");
    queue.side.create_stream(&stream, &queue.name, json!({}));
    queue.side.create_consumer(
        &stream,
        "outside",
        json!({"durable_name": "outside", "ack_policy": "explicit", "deliver_policy": "all",
               "filter_subject": queue.name, "ack_wait": 10_000_000_000u64}),
    );
    let transport = transport(r#""declare": "passive""#);
    fill(&transport, &queue.name, "e", 0..5);
    let consumer = transport
        .consume_as(&queue.name, options(10), "outside")
        .expect("consumer");
    let got = receive_n(&consumer, 5, Duration::from_secs(10));
    assert_eq!(ids(&got), names("e", 0..5));

    consumer.ack(got[2].tag, true).expect("ack");
    let side = &queue.side;
    let settled = || side.consumer_info(&stream, "outside").expect("consumer");
    wait_for(|| settled()["ack_floor"]["stream_seq"] == 3);
    assert_eq!(
        settled()["num_ack_pending"],
        2,
        "the other two still pending"
    );
    consumer.ack(got[4].tag, true).expect("ack");
    wait_for(|| settled()["num_ack_pending"] == 0);
    consumer.close().expect("close");
    assert_eq!(
        settled()["config"]["ack_policy"],
        "explicit",
        "left as it was"
    );
}

#[test]
fn a_consumer_that_takes_no_acknowledgement_is_refused() {
    let queue = Queue::new("ack-none");
    let stream = queue.name.replace('.', "_");
    queue.side.create_stream(&stream, &queue.name, json!({}));
    queue.side.create_consumer(
        &stream,
        "none",
        json!({"durable_name": "none", "ack_policy": "none", "deliver_policy": "all"}),
    );
    let err = transport("")
        .consume_as(&queue.name, options(10), "none")
        .err()
        .expect("refused");
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert!(err.message.contains("ack policy `none`"), "{err}");
}

#[test]
fn a_second_pipeline_on_a_work_queue_is_told_what_to_do() {
    let queue = Queue::new("second");
    let transport = transport("");
    let first = transport
        .consume_as(&queue.name, options(10), "first")
        .expect("consumer");
    let err = transport
        .consume_as(&queue.name, options(10), "second")
        .err()
        .expect("refused");
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    for words in ["workqueue", "\"limits\"", "\"interest\"", "its own queue"] {
        assert!(err.message.contains(words), "`{words}` not in: {err}");
    }
    first.close().expect("close");
}

#[test]
fn two_processes_on_one_cumulative_consumer_are_refused() {
    let queue = Queue::new("shared");
    let transport = transport(r#""retention": "limits""#);
    let first = transport
        .consume_as(&queue.name, options(10), "shared")
        .expect("consumer");
    // The first one waits on a pull request: another client pulls from the consumer.
    std::thread::sleep(Duration::from_millis(300));
    let err = transport
        .consume_as(&queue.name, options(10), "shared")
        .err()
        .expect("refused");
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
    assert!(err.message.contains("one process"), "{err}");
    first.close().expect("close");
    // Once closed, the next one is welcome.
    let second = transport
        .consume_as(&queue.name, options(10), "shared")
        .expect("consumer after close");
    second.close().expect("close");
}

fn wait_for(condition: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "not within 5 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_consumer_deleted_under_the_pipeline_is_reported_then_made_again() {
    let queue = Queue::new("deleted");
    let transport = transport("");
    let consumer = transport
        .consume_as(&queue.name, options(10), "deleted")
        .expect("consumer");
    // The consumer waits on a pull request when its durable consumer goes.
    std::thread::sleep(Duration::from_millis(200));
    let stream = queue.stream();
    queue
        .side
        .block_on(
            queue
                .side
                .js
                .delete_consumer_from_stream("deleted", &stream),
        )
        .expect("deleted");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let err = loop {
        assert!(std::time::Instant::now() < deadline, "not reported");
        match consumer.receive(10, Duration::from_millis(200)) {
            Ok(got) => assert!(got.is_empty()),
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert!(err.message.contains("deleted"), "{err}");
    let _ = consumer.close();
    // What the host does next: consume again, which makes the consumer again.
    fill(&transport, &queue.name, "d", 0..1);
    let again = transport
        .consume_as(&queue.name, options(10), "deleted")
        .expect("consumer made again");
    let got = receive_n(&again, 1, Duration::from_secs(10));
    again.ack(got[0].tag, true).expect("ack");
    again.close().expect("close");
}

#[test]
fn two_processes_share_an_explicit_consumer() {
    let queue = Queue::new("shared-explicit");
    let transport = transport(r#""ack_wait_ms": 30000"#);
    fill(&transport, &queue.name, "s", 0..5);
    let first = transport
        .consume_as(&queue.name, options(100), "shared")
        .expect("consumer");
    let held = receive_n(&first, 5, Duration::from_secs(10));
    // The first one holds 5 and waits for more; the second one starts beside it.
    std::thread::sleep(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let second = transport
        .consume_as(&queue.name, options(100), "shared")
        .expect("a second process on a work queue's consumer");
    fill(&transport, &queue.name, "s", 5..25);
    let mut got = Vec::new();
    while got.len() < 20 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "only {} of 20: the second one waited for the first one's deliveries",
            got.len()
        );
        for consumer in [&first, &second] {
            let batch = consumer
                .receive(100, Duration::from_millis(100))
                .expect("receive");
            if let Some(last) = batch.last() {
                consumer.ack(last.tag, true).expect("ack");
            }
            got.extend(ids(&batch));
        }
    }
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 20, "each message once");
    first.ack(held[4].tag, true).expect("ack");
    first.close().expect("close");
    second.close().expect("close");
}

//! Connections lost mid-stream: killed by the server (`CLIENT KILL`), also while a read
//! waits, and the server itself killed and restarted (with an append-only file, so that
//! what it confirmed survives). The consumer is driven as the host's dispatcher drives it
//! (an error closes it and opens another); nothing may be lost, every entry is
//! acknowledged, first deliveries come in stream order, and a publish during the outage
//! fails as transient, then succeeds.
//!
//! Each test runs a Redis server of its own: `CLIENT KILL TYPE normal` and SIGKILL must
//! not reach anyone else.

mod common;

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use common::*;
use golconde_plugin_api::{testing, AckMode, Consumer, Delivery, ErrorKind, Transport};
use golconde_redis::{Redis, RedisConsumer};

/// Drives a consumer as the host's dispatcher does.
struct Dispatcher<'a> {
    transport: &'a Redis,
    key: String,
    consumer: Option<RedisConsumer>,
    acked: HashSet<String>,
    /// Ids in the order they were first handed over.
    first_seen: Vec<String>,
    seen: HashSet<String>,
    redelivered: usize,
    restarts: usize,
    errors: Vec<String>,
}

impl<'a> Dispatcher<'a> {
    fn new(transport: &'a Redis, key: &str) -> Dispatcher<'a> {
        Dispatcher {
            transport,
            key: key.to_string(),
            consumer: None,
            acked: HashSet::new(),
            first_seen: Vec::new(),
            seen: HashSet::new(),
            redelivered: 0,
            restarts: 0,
            errors: Vec::new(),
        }
    }

    /// An error: transient, as the host expects of a lost server; the dispatcher closes
    /// its consumer and opens another.
    fn failed(&mut self, what: &str, error: golconde_plugin_api::PluginError) {
        assert_eq!(error.kind, ErrorKind::Transient, "{what}: {error}");
        self.errors.push(format!("{what}: {error}"));
        if let Some(consumer) = self.consumer.take() {
            let _ = consumer.close();
            self.restarts += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    /// One receive, `between` the receive and the ack, and the ack.
    fn step(&mut self, between: impl FnOnce(&[Delivery])) {
        if self.consumer.is_none() {
            match self
                .transport
                .consume(&self.key, options(200, AckMode::Cumulative))
            {
                Ok(consumer) => self.consumer = Some(consumer),
                Err(e) => return self.failed("consume", e),
            }
        }
        let Some(consumer) = self.consumer.as_ref() else {
            return;
        };
        let batch = match consumer.receive(100, Duration::from_millis(300)) {
            Ok(batch) => batch,
            Err(e) => return self.failed("receive", e),
        };
        let Some(last) = batch.last() else { return };
        for delivery in &batch {
            let id = id(delivery);
            self.redelivered += usize::from(delivery.redelivered);
            if self.seen.insert(id.clone()) {
                self.first_seen.push(id);
            }
        }
        between(&batch);
        let tag = last.tag;
        match self.consumer.as_ref().map(|c| c.ack(tag, true)) {
            Some(Ok(())) => self.acked.extend(batch.iter().map(id)),
            Some(Err(e)) => self.failed("ack", e),
            None => {}
        }
    }

    fn run_until(&mut self, total: usize, limit: Duration, mut between: impl FnMut(&mut Self)) {
        let deadline = Instant::now() + limit;
        while self.acked.len() < total {
            assert!(
                Instant::now() < deadline,
                "only {} of {total} acknowledged in time; errors: {:?}",
                self.acked.len(),
                self.errors
            );
            between(self);
            self.step(|_| {});
        }
    }
}

#[test]
fn connections_killed_by_the_server_lose_nothing() {
    const N: usize = 3000;
    let server = Server::start(&[]);
    let stream = Stream::on(server.port, "killed");
    let transport = transport_at(&server.url(), "");
    fill(&transport, &stream.key, "k", 0..N);
    let mut cli = server.cli();
    let mut dispatcher = Dispatcher::new(&transport, &stream.key);
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while dispatcher.acked.len() < N {
        assert!(Instant::now() < deadline, "errors: {:?}", dispatcher.errors);
        let due = dispatcher.acked.len() >= 700 * (kills + 1);
        // Between handing a batch over and acknowledging it: the worst moment.
        dispatcher.step(|_| {
            if due {
                let killed = cli.run(&["CLIENT", "KILL", "TYPE", "normal"]).int();
                assert!(killed >= 1, "the consumer's connection was there to kill");
                kills += 1;
            }
        });
    }
    assert_eq!(kills, 4);
    // A publish on a pooled connection the server killed is tried again on a new one.
    cli.run(&["CLIENT", "KILL", "TYPE", "normal"]);
    fill(&transport, &stream.key, "k", N..N + 10);

    // Killed while a read waits for new entries: the entries written meanwhile come.
    let consumer = dispatcher.consumer.take().expect("a consumer");
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        cli.run(&["CLIENT", "KILL", "TYPE", "normal"]).int()
    });
    let (mut late, logged) = testing::logged(|| {
        let mut late = Vec::new();
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            late.extend(
                consumer
                    .receive(100, Duration::from_millis(400))
                    .expect("receive"),
            );
        }
        late
    });
    assert!(killer.join().unwrap() >= 1);
    assert!(logged.contains("reconnecting"), "{logged}");
    fill(&transport, &stream.key, "k", N + 10..N + 20);
    late.extend(receive_n(
        &consumer,
        20 - late.len(),
        Duration::from_secs(5),
    ));
    assert_eq!(ids(&late), names("k", N..N + 20));
    consumer.ack(late[19].tag, true).expect("ack");
    consumer.close().unwrap();

    assert_eq!(
        dispatcher.first_seen,
        names("k", 0..N),
        "first deliveries in order"
    );
    assert_eq!(dispatcher.acked.len(), N);
    let mut check = server.cli();
    assert!(check.pending(&stream.key, &stream.key).is_empty());
    assert_eq!(check.xlen(&stream.key), (N + 20) as i64);
    println!(
        "{N} entries, {kills} kills: {} redelivered, {} dispatcher restarts, errors: {:?}",
        dispatcher.redelivered, dispatcher.restarts, dispatcher.errors
    );
}

#[test]
fn a_server_restarted_mid_stream_loses_nothing_it_confirmed() {
    const N: usize = 2000;
    let mut server = Server::start(&["--appendonly", "yes", "--appendfsync", "always"]);
    let stream = Stream::on(server.port, "restart");
    let transport = transport_at(&server.url(), r#""connect_timeout_ms": 1000"#);
    fill(&transport, &stream.key, "r", 0..N);
    let mut dispatcher = Dispatcher::new(&transport, &stream.key);
    dispatcher.run_until(600, Duration::from_secs(20), |_| {});

    // The server dies while a batch is held.
    let mut outage_checked = false;
    dispatcher.step(|_| {
        server.kill();
        let late: Vec<_> = (N..N + 100)
            .map(|i| message(&format!("r-{i}"), b"late"))
            .collect();
        let started = Instant::now();
        let error = transport
            .publish(&stream.key, &late)
            .expect_err("published with the server down");
        assert_eq!(error.kind, ErrorKind::Transient, "{error}");
        assert!(error.message.contains("cannot connect"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(3));
        outage_checked = true;
    });
    assert!(outage_checked);
    // The ack of the held batch failed; the dispatcher keeps failing while Redis is down.
    for _ in 0..3 {
        dispatcher.step(|_| {});
    }
    assert!(dispatcher.restarts >= 1, "errors: {:?}", dispatcher.errors);
    let errors_while_down = dispatcher.errors.len();
    assert!(errors_while_down >= 3, "{:?}", dispatcher.errors);

    server.restart();
    fill(&transport, &stream.key, "r", N..N + 100);
    dispatcher.run_until(N + 100, Duration::from_secs(20), |_| {});

    assert_eq!(
        dispatcher.first_seen,
        names("r", 0..N + 100),
        "first deliveries in order"
    );
    assert!(dispatcher.redelivered >= 1, "the held batch came again");
    let mut cli = server.cli();
    assert!(cli.pending(&stream.key, &stream.key).is_empty());
    assert_eq!(
        cli.xlen(&stream.key),
        (N + 100) as i64,
        "nothing published twice"
    );
    println!(
        "{} entries across a restart: {} redelivered, {} dispatcher restarts, {} errors \
         while down",
        N + 100,
        dispatcher.redelivered,
        dispatcher.restarts,
        errors_while_down
    );
}

//! `golconde replay` end to end, with the real binary, RabbitMQ and PostgreSQL: a daemon
//! dead-letters messages that cannot apply yet, the table is fixed, the replay moves them
//! back to their source queue, and a second daemon applies them. Also what the replay
//! leaves where it is (`--where-error`, `--limit`, `--dry-run`, an unreachable source),
//! and that a daemon dead-lettering replayed messages again cannot make it loop.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use golconde_e2e::{
    broker::free_port,
    eventually, golconde, run,
    services::{real_config, unique, Database, Queues},
    streams::{transport_section, Kind, Streams},
    Daemon, Scratch,
};
use golconde_plugin_api::Message;

const ITEMS: &str = "create table items (id bigint primary key, version int not null)";

/// A change that applies to `items` as it is.
fn good(id: u64) -> String {
    format!(r#"{{"action": "set", "data": {{"id": {id}, "version": 1}}}}"#)
}

/// A change that writes column `note`, which `items` does not have yet.
fn with_note(id: u64) -> String {
    format!(r#"{{"action": "set", "data": {{"id": {id}, "version": 2, "note": "n{id}"}}}}"#)
}

/// A change that breaks `version`'s NOT NULL.
fn without_version(id: u64) -> String {
    format!(r#"{{"action": "set", "data": {{"id": {id}, "version": null}}}}"#)
}

/// `body` as a producer sends it: with a `message-id` and a header of its own.
fn produced(id: &str, body: &str) -> Message {
    Message::new(body.as_bytes().to_vec())
        .with_header("message-id", id)
        .with_header("x-trace", format!("trace-{id}"))
}

/// A pipeline `name` from `queue` on `transport` into `items`, its dead letters going to
/// `dead` on `dead_transport`.
fn pipeline(name: &str, transport: &str, queue: &str, dead_transport: &str, dead: &str) -> String {
    format!(
        r#"
[[pipelines]]
name = "{name}"
transport = "{transport}"
queue = "{queue}"
processor = {{ plugin = "autosql" }}
database = "db"
table = "items"
batch = {{ max_messages = 50, max_wait_ms = 10 }}
retry = {{ initial_backoff_ms = 50, max_backoff_ms = 500 }}
dead_letter = {{ transport = "{dead_transport}", queue = "{dead}" }}
"#
    )
}

/// A pipeline on RabbitMQ with a dead-letter queue, and the means to fill it.
struct Setup {
    name: String,
    queues: Queues,
    queue: String,
    dead: String,
    db: Database,
    connection_name: String,
    config: PathBuf,
    scratch: Scratch,
}

impl Setup {
    fn new(what: &str) -> Setup {
        let mut queues = Queues::new();
        let queue = queues.name(what);
        let dead = queues.name(&format!("{what}-dead"));
        let db = Database::create(what, ITEMS);
        let scratch = Scratch::new();
        let connection_name = unique(what);
        let name = what.to_string();
        let config = scratch.config(&real_config(
            &connection_name,
            &[("db", &db, "")],
            &pipeline(&name, "rabbit", &queue, "rabbit", &dead),
        ));
        Setup {
            name,
            queues,
            queue,
            dead,
            db,
            connection_name,
            config,
            scratch,
        }
    }

    /// Publishes `messages` to the source queue and runs the daemon until it has applied
    /// them or dead-lettered them (`failing` of them).
    fn dead_letter(&self, messages: &[Message], failing: u64) {
        self.queues.publish_messages(&self.queue, messages);
        let daemon = Daemon::start(&self.config);
        let done = eventually(Duration::from_secs(60), || {
            self.queues.depth(&self.queue) == (0, 0)
                && self.queues.depth(&self.dead) == (failing, 0)
        });
        let (status, log) = daemon.stop();
        assert!(
            done,
            "not dead-lettered: source {:?}, dead {:?}; log:\n{log}",
            self.queues.depth(&self.queue),
            self.queues.depth(&self.dead)
        );
        assert!(status.success(), "{log}");
    }

    /// `golconde replay --config CONFIG --pipeline NAME ARGS`; its status and output.
    fn replay(&self, args: &[&str]) -> (bool, String) {
        replay_with(&self.config, &self.name, args)
    }
}

fn replay_with(config: &Path, pipeline: &str, args: &[&str]) -> (bool, String) {
    let mut all = vec![
        "replay",
        "--config",
        config.to_str().unwrap(),
        "--pipeline",
        pipeline,
    ];
    all.extend_from_slice(args);
    let (output, text) = run(&all);
    (output.status.success(), text)
}

/// The message ids of the lines starting with `verb #` (`moved`, `would move`), in order.
fn ids(output: &str, verb: &str) -> Vec<String> {
    output
        .lines()
        .filter(|line| line.starts_with(&format!("{verb} #")))
        .map(|line| {
            line.split("(message-id ")
                .nth(1)
                .and_then(|rest| rest.split(')').next())
                .unwrap_or_else(|| panic!("no message-id in {line:?}"))
                .to_string()
        })
        .collect()
}

fn message_ids(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m.header("message-id").unwrap_or_default().to_string())
        .collect()
}

#[test]
fn dead_letters_replayed_after_the_fix_are_applied() {
    let mut s = Setup::new("replay_fix");
    let mut messages = Vec::new();
    for i in 1..=10 {
        messages.push(produced(&format!("good-{i}"), &good(i)));
        if i % 2 == 0 {
            messages.push(produced(&format!("note-{i}"), &with_note(100 + i)));
        }
    }
    s.dead_letter(&messages, 5);
    assert_eq!(s.db.count("items"), 10);

    s.db.client
        .batch_execute("alter table items add column note text")
        .unwrap();
    let (ok, output) = s.replay(&[]);
    assert!(ok, "{output}");
    let moved = ids(&output, "moved");
    assert_eq!(
        moved.iter().cloned().collect::<BTreeSet<_>>(),
        (1..=5)
            .map(|i| format!("note-{}", 2 * i))
            .collect::<BTreeSet<_>>(),
        "{output}"
    );
    assert!(
        output
            .lines()
            .filter(|l| l.starts_with("moved #"))
            .all(|l| l.contains("note")),
        "each line shows the error, which names the column:\n{output}"
    );
    assert!(output.contains("moved 5 of 5 message(s)"), "{output}");
    assert_eq!(s.queues.depth(&s.dead), (0, 0), "{output}");
    assert_eq!(s.queues.depth(&s.queue), (5, 0), "{output}");

    // The pipeline now applies them, and nothing goes back to the dead-letter queue.
    s.dead_letter(&[], 0);
    assert_eq!(
        s.db.rows("select id, version, note from items where id > 100 order by id"),
        [
            "102|2|n102",
            "104|2|n104",
            "106|2|n106",
            "108|2|n108",
            "110|2|n110"
        ]
    );
    assert_eq!(s.db.count("items"), 15);
}

#[test]
fn dry_run_moves_nothing_and_limit_moves_the_first_ones_with_their_own_headers() {
    let s = Setup::new("replay_limit");
    let messages: Vec<Message> = (1..=5)
        .map(|i| produced(&format!("note-{i}"), &with_note(i)))
        .collect();
    s.dead_letter(&messages, 5);

    let (ok, output) = s.replay(&["--dry-run"]);
    assert!(ok, "{output}");
    // The dead-letter queue's order, as the dry run saw it.
    let order = ids(&output, "would move");
    assert_eq!(order.len(), 5, "{output}");
    assert!(ids(&output, "moved").is_empty(), "{output}");
    assert!(
        output.contains("nothing was moved or acknowledged"),
        "{output}"
    );
    assert_eq!(s.queues.depth(&s.dead), (5, 0), "{output}");
    assert_eq!(s.queues.depth(&s.queue), (0, 0), "{output}");

    let (ok, output) = s.replay(&["--limit", "2"]);
    assert!(ok, "{output}");
    assert_eq!(ids(&output, "moved"), order[..2], "{output}");
    assert!(output.contains("stopped at --limit 2"), "{output}");
    assert_eq!(s.queues.depth(&s.dead), (3, 0), "{output}");

    let replayed = s.queues.drain(&s.queue, Duration::from_millis(500));
    assert_eq!(message_ids(&replayed), order[..2]);
    for message in &replayed {
        let id = message.header("message-id").unwrap();
        let original = messages
            .iter()
            .find(|m| m.header("message-id") == Some(id))
            .unwrap();
        assert_eq!(message.body, original.body);
        assert_eq!(
            message.header("x-trace"),
            Some(format!("trace-{id}").as_str()),
            "the producer's own header is kept"
        );
        let stamp = message
            .header("x-golconde-replayed")
            .expect("marked replayed");
        assert!(
            stamp.len() > 20 && stamp.as_bytes()[10] == b'T' && stamp.ends_with('Z'),
            "an RFC 3339 time: {stamp}"
        );
        let golconde: Vec<&str> = message
            .headers
            .iter()
            .map(|h| h.name.as_str())
            .filter(|n| n.starts_with("x-golconde-"))
            .collect();
        assert_eq!(golconde, ["x-golconde-replayed"], "{:?}", message.headers);
    }

    // The rest is still there, in order, with the reasons.
    let left = s.queues.drain(&s.dead, Duration::from_millis(500));
    assert_eq!(message_ids(&left), order[2..]);
    assert!(left.iter().all(|m| m
        .header("x-golconde-error")
        .is_some_and(|e| e.contains("note"))));
}

#[test]
fn where_error_moves_only_the_matching_ones_and_leaves_the_rest_in_order() {
    let s = Setup::new("replay_where");
    let messages: Vec<Message> = (1..=8)
        .map(|i| {
            if i % 2 == 1 {
                produced(&format!("note-{i}"), &with_note(i))
            } else {
                produced(&format!("null-{i}"), &without_version(i))
            }
        })
        .collect();
    s.dead_letter(&messages, 8);
    let (ok, output) = s.replay(&["--dry-run"]);
    assert!(ok, "{output}");
    let order = ids(&output, "would move");
    assert_eq!(order.len(), 8, "{output}");

    // The error names the column `note`; the case of TEXT does not matter.
    let (ok, output) = s.replay(&["--where-error", "NOTE"]);
    assert!(ok, "{output}");
    let notes: Vec<String> = order
        .iter()
        .filter(|id| id.starts_with("note-"))
        .cloned()
        .collect();
    let nulls: Vec<String> = order
        .iter()
        .filter(|id| id.starts_with("null-"))
        .cloned()
        .collect();
    assert_eq!(ids(&output, "moved"), notes, "{output}");
    assert!(
        output.contains("4 not matching --where-error \"NOTE\""),
        "{output}"
    );
    assert_eq!(s.queues.depth(&s.queue), (4, 0), "{output}");
    assert_eq!(s.queues.depth(&s.dead), (4, 0), "{output}");
    let left = s.queues.drain(&s.dead, Duration::from_millis(500));
    assert_eq!(message_ids(&left), nulls, "untouched and in order");
    let moved = s.queues.drain(&s.queue, Duration::from_millis(500));
    assert_eq!(message_ids(&moved), notes);
}

#[test]
fn messages_dead_lettered_again_during_the_replay_are_not_moved_twice() {
    let s = Setup::new("replay_loop");
    let messages: Vec<Message> = (1..=20)
        .map(|i| produced(&format!("note-{i}"), &with_note(i)))
        .collect();
    s.dead_letter(&messages, 20);

    // The cause is not fixed and the daemon runs: each replayed message comes back.
    let mut daemon = Daemon::start(&s.config);
    daemon.wait_for_log("pipeline(s) running", Duration::from_secs(30));
    let mut child = golconde()
        .args(["replay", "--config", s.config.to_str().unwrap()])
        .args(["--pipeline", &s.name])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "the replay did not end:\n{}",
                String::from_utf8_lossy(&output.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    let moved = ids(&text, "moved");
    assert_eq!(moved.len(), 20, "{text}");
    assert_eq!(moved.iter().collect::<BTreeSet<_>>().len(), 20, "{text}");

    let back = eventually(Duration::from_secs(60), || {
        s.queues.depth(&s.queue) == (0, 0) && s.queues.depth(&s.dead) == (20, 0)
    });
    let (status, log) = daemon.stop();
    assert!(back, "{text}\n{log}");
    assert!(status.success(), "{log}");
}

#[test]
fn an_unreachable_source_leaves_every_dead_letter_where_it_is() {
    let s = Setup::new("replay_gone");
    let messages: Vec<Message> = (1..=3)
        .map(|i| produced(&format!("note-{i}"), &with_note(i)))
        .collect();
    s.dead_letter(&messages, 3);

    // The same pipeline, its source on a broker that is not there.
    let port = free_port();
    let text = real_config(
        &s.connection_name,
        &[("db", &s.db, "")],
        &format!(
            "\n[transports.gone]\nplugin = \"amqp\"\nurl = \"amqp://guest:guest@127.0.0.1:{port}/%2f\"\n{}",
            pipeline(&s.name, "gone", &s.queue, "rabbit", &s.dead)
        ),
    )
    .replace("{plugins}", &golconde_e2e::build_dir().display().to_string());
    let config = s.scratch.path("gone.toml");
    std::fs::write(&config, text).unwrap();

    let (ok, output) = replay_with(&config, &s.name, &[]);
    assert!(!ok, "{output}");
    assert!(
        output.contains("cannot connect to transport `gone`"),
        "{output}"
    );
    assert!(output.contains("nothing was moved"), "{output}");
    assert_eq!(s.queues.depth(&s.dead), (3, 0), "{output}");
    assert_eq!(
        message_ids(&s.queues.drain(&s.dead, Duration::from_millis(500)))
            .into_iter()
            .collect::<BTreeSet<_>>(),
        message_ids(&messages).into_iter().collect::<BTreeSet<_>>()
    );
}

#[test]
fn an_unknown_pipeline_or_one_without_dead_letters_is_a_clear_error() {
    let db = Database::create("replay_errors", ITEMS);
    let scratch = Scratch::new();
    let config = scratch.config(&real_config(
        &unique("replay_errors"),
        &[("db", &db, "")],
        &format!(
            "{}\n[[pipelines]]\nname = \"plain\"\ntransport = \"rabbit\"\nqueue = \"q\"\n\
             processor = {{ plugin = \"autosql\" }}\ndatabase = \"db\"\ntable = \"items\"\n",
            pipeline("kept", "rabbit", "q-kept", "rabbit", "q-kept-dead")
        ),
    ));

    let (ok, output) = replay_with(&config, "nope", &[]);
    assert!(!ok, "{output}");
    assert!(output.contains("no pipeline named `nope`"), "{output}");
    assert!(output.contains("`kept`, `plain`"), "{output}");

    let (ok, output) = replay_with(&config, "plain", &[]);
    assert!(!ok, "{output}");
    assert!(
        output.contains("pipeline `plain` has no dead-letter queue"),
        "{output}"
    );
    assert!(output.contains("dead_letter = {"), "{output}");
    assert!(
        output.contains("golconde.toml:"),
        "names the file and line: {output}"
    );

    let (ok, help) = replay_with(&config, "kept", &["--help"]);
    assert!(ok, "{help}");
    for flag in [
        "--config",
        "--pipeline",
        "--limit",
        "--where-error",
        "--dry-run",
        "--plugin-dir",
    ] {
        assert!(help.contains(flag), "{flag} in:\n{help}");
    }
}

#[test]
fn dead_letters_on_nats_go_back_to_their_subject() {
    let mut streams = Streams::new(Kind::Nats);
    let queue = streams.name("replay-nats");
    let dead = streams.name("replay-nats-dead");
    let mut db = Database::create("replay_nats", ITEMS);
    let scratch = Scratch::new();
    let config = scratch.config(
        &(real_config(&unique("replay-nats"), &[("db", &db, "")], "")
            + &transport_section("nats", Kind::Nats, Kind::Nats.shared_url())
            + &pipeline("replay-nats", "nats", &queue, "nats", &dead)),
    );
    let bodies: Vec<String> = (1..=4).map(with_note).collect();
    streams.publish(&queue, &bodies);
    let daemon = Daemon::start(&config);
    let dead_lettered = eventually(Duration::from_secs(60), || {
        streams.unacked(&queue, "replay-nats") == Some(0) && streams.len(&dead) == 4
    });
    let (status, log) = daemon.stop();
    assert!(dead_lettered, "{log}");
    assert!(status.success(), "{log}");

    db.client
        .batch_execute("alter table items add column note text")
        .unwrap();
    let (ok, output) = replay_with(&config, "replay-nats", &[]);
    assert!(ok, "{output}");
    assert!(output.contains("moved 4 of 4 message(s)"), "{output}");
    assert!(
        eventually(Duration::from_secs(10), || streams.len(&dead) == 0),
        "acknowledged messages leave the work-queue stream: {output}"
    );

    let daemon = Daemon::start(&config);
    let applied = eventually(Duration::from_secs(60), || db.count("items") == 4);
    let (status, log) = daemon.stop();
    assert!(applied, "{output}\n{log}");
    assert!(status.success(), "{log}");
    assert_eq!(
        db.rows("select id, note from items order by id"),
        ["1|n1", "2|n2", "3|n3", "4|n4"]
    );
}

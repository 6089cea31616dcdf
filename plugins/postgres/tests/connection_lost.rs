//! The plugin's connection is terminated in the middle of a batch: the batch reports a
//! transient error with nothing committed, and a new session applies it exactly once.

mod common;

use std::{thread, time::Duration};

use common::*;
use golconde_plugin_api::{Database, ErrorKind, Session};

/// A row named `gate` waits for an advisory lock the test holds, so the test knows the
/// batch is half-way when it terminates the connection.
const TABLE: &str = "
CREATE TABLE {s}.items (id bigserial PRIMARY KEY, name text NOT NULL, n int);
CREATE FUNCTION {s}.gate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.name = 'gate' THEN
        PERFORM pg_advisory_xact_lock_shared(GATE_LOCK);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER gate BEFORE INSERT OR UPDATE ON {s}.items
    FOR EACH ROW EXECUTE FUNCTION {s}.gate();";

fn batch(db: &Db) -> Vec<golconde_plugin_api::Change> {
    let mut messages = Vec::new();
    for i in 0..300 {
        let name = if i == 150 {
            "gate".to_string()
        } else {
            format!("n{i}")
        };
        // Inserts would be doubled by a retry after a partial commit; upserts and updates
        // of the same rows make the end state depend on the order.
        messages.push(format!(
            r#"{{"action": "add", "data": {{"name": "{name}", "n": {i}}}}}"#
        ));
        messages.push(format!(
            r#"{{"action": "set", "data": {{"id": {}, "name": "s{i}", "n": 0}}}}"#,
            100_000 + i
        ));
        messages.push(format!(
            r#"{{"action": "update", "data": {{"n": {i}}}, "restriction": {{"id": {}}}}}"#,
            100_000 + i
        ));
    }
    changes(&db.processor("items"), &messages)
}

#[test]
fn a_terminated_connection_fails_the_batch_and_a_new_session_applies_it_once() {
    let db = Db::new("terminated");
    let key = 0x601c_0de0_0000_0000_i64 + std::process::id() as i64;
    db.exec(&TABLE.replace("GATE_LOCK", &key.to_string()));
    let pg = db.plugin(r#", "dedupe": false"#);
    let changes = batch(&db);

    db.query("SELECT pg_advisory_lock($1)", &[&key]);
    let mut session = pg.connect().unwrap();
    let pid = session.backend_pid().unwrap();
    let applying = {
        let changes = changes.clone();
        thread::spawn(move || session.apply(&changes).map(|r| r.len()))
    };
    // Wait (bounded) until the batch is stuck at the gate, then cut its connection.
    let mut waiting = false;
    for _ in 0..600 {
        let rows = db.query(
            "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'",
            &[&pid],
        );
        if !rows.is_empty() {
            waiting = true;
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert!(waiting, "the batch never reached the gate");
    db.terminate(pid);
    let error = applying.join().unwrap().unwrap_err();
    assert_eq!(error.kind, ErrorKind::Transient, "{error}");
    assert!(
        error.message.contains("nothing of the batch was committed"),
        "{error}"
    );
    assert_eq!(db.count("SELECT count(*) FROM {s}.items"), 0);

    // The host's retry: a new session, the same batch.
    db.query("SELECT pg_advisory_unlock($1)", &[&key]);
    let results = apply(&pg, &changes);
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(db.count("SELECT count(*) FROM {s}.items"), 600);
    assert_eq!(
        db.count("SELECT count(*) FROM {s}.items WHERE id < 100000"),
        300
    );
    assert_eq!(
        db.count("SELECT count(*) FROM {s}.items WHERE id >= 100000 AND n = id - 100000"),
        300
    );
}

#[test]
fn a_session_whose_connection_is_gone_says_so_as_transient() {
    let db = Db::new("gone");
    db.exec(&TABLE.replace("GATE_LOCK", "1"));
    let pg = db.plugin("");
    let mut session = pg.connect().unwrap();
    let pid = session.backend_pid().unwrap();
    db.terminate(pid);
    let changes = batch(&db);
    // However many calls it takes for the client to notice, none of them commits.
    for _ in 0..2 {
        let error = session.apply(&changes[..3]).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Transient, "{error}");
    }
    assert_eq!(db.count("SELECT count(*) FROM {s}.items"), 0);
}

#[test]
fn an_unreachable_server_is_a_transient_connect_error() {
    let pg = golconde_postgres::Postgres::from_config(
        golconde_plugin_api::sdk::parse_config(
            r#"{"dsn": "host=127.0.0.1 port=1 user=postgres password=s3cr3t",
                "connect_timeout_ms": 2000}"#,
        )
        .unwrap(),
    )
    .unwrap();
    let error = match pg.connect() {
        Err(e) => e,
        Ok(_) => panic!("connected to port 1"),
    };
    assert_eq!(error.kind, ErrorKind::Transient, "{error}");
    assert!(error.message.contains("127.0.0.1:1"), "{error}");
    assert!(!error.message.contains("s3cr3t"), "{error}");
}

#[test]
fn a_statement_timeout_is_transient_and_commits_nothing() {
    let db = Db::new("timeout");
    db.exec(
        "CREATE TABLE {s}.slow (id int PRIMARY KEY, pause float8);
         CREATE FUNCTION {s}.pause() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(NEW.pause); RETURN NEW; END $$;
         CREATE TRIGGER pause BEFORE INSERT ON {s}.slow
             FOR EACH ROW EXECUTE FUNCTION {s}.pause();",
    );
    let pg = db.plugin(r#", "statement_timeout_ms": 200"#);
    let p = db.processor("slow");
    let batch = changes(
        &p,
        &[
            r#"{"action": "add", "data": {"id": 1, "pause": 0}}"#.into(),
            r#"{"action": "add", "data": {"id": 2, "pause": 5}}"#.into(),
        ],
    );
    let mut session = pg.connect().unwrap();
    let error = session.apply(&batch).unwrap_err();
    assert_eq!(error.kind, ErrorKind::Transient, "{error}");
    assert!(error.message.contains("statement timeout"), "{error}");
    assert_eq!(db.count("SELECT count(*) FROM {s}.slow"), 0);
}

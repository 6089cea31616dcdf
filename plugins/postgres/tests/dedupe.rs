//! `dedupe = true`: a replayed change id is skipped, also for inserts, and reports the
//! keys its first application generated.

mod common;

use common::*;
use golconde_plugin_api::{Database, Session, Value};

const TABLE: &str = "CREATE TABLE {s}.users (id bigserial PRIMARY KEY, name text NOT NULL)";

fn adds(db: &Db, names: &[&str]) -> Vec<golconde_plugin_api::Change> {
    let messages: Vec<String> = names
        .iter()
        .map(|name| {
            format!(
                r#"{{"action": "add", "id": "{}-{name}", "data": {{"name": "{name}"}}}}"#,
                db.schema
            )
        })
        .collect();
    changes(&db.processor("users"), &messages)
}

#[test]
fn a_replayed_batch_is_skipped_and_returns_the_first_keys() {
    let db = Db::new("dedupe_replay");
    db.exec(TABLE);
    let pg = db.plugin(r#", "dedupe": true"#);
    let batch = adds(&db, &["a", "b", "c"]);

    let first = apply(&pg, &batch);
    let again = apply(&pg, &batch);
    assert_eq!(db.count("SELECT count(*) FROM {s}.users"), 3);
    for (first, again) in first.iter().zip(&again) {
        let (first, again) = (first.as_ref().unwrap(), again.as_ref().unwrap());
        assert!(!first.duplicate);
        assert!(again.duplicate);
        assert!(matches!(first.returned[0][0].value, Value::Int(_)));
        assert_eq!(first.returned, again.returned);
    }
    // The ids were recorded in the same transaction as the rows.
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM {{s}}.applied WHERE id LIKE '{}-%'",
            db.schema
        )),
        3
    );
}

#[test]
fn an_id_repeated_within_one_batch_applies_once() {
    let db = Db::new("dedupe_repeat");
    db.exec(TABLE);
    let pg = db.plugin(r#", "dedupe": true"#);
    let batch = adds(&db, &["a", "b", "a", "a"]);
    let results = apply(&pg, &batch);
    assert_eq!(db.count("SELECT count(*) FROM {s}.users"), 2);
    let duplicates: Vec<bool> = results
        .iter()
        .map(|r| r.as_ref().unwrap().duplicate)
        .collect();
    assert_eq!(duplicates, [false, false, true, true]);
    assert_eq!(
        results[0].as_ref().unwrap().returned,
        results[3].as_ref().unwrap().returned
    );
}

#[test]
fn a_failed_change_is_not_recorded_so_a_fixed_database_applies_it() {
    let db = Db::new("dedupe_failed");
    db.exec(TABLE);
    db.exec("ALTER TABLE {s}.users ADD CONSTRAINT short CHECK (length(name) < 5)");
    let pg = db.plugin(r#", "dedupe": true"#);
    let batch = adds(&db, &["ok", "toolong"]);
    let results = apply(&pg, &batch);
    assert!(results[0].is_ok());
    assert!(permanent(&results[1]).contains("short"));

    db.exec("ALTER TABLE {s}.users DROP CONSTRAINT short");
    let results = apply(&pg, &batch);
    assert!(results[0].as_ref().unwrap().duplicate);
    assert!(!results[1].as_ref().unwrap().duplicate);
    assert_eq!(db.count("SELECT count(*) FROM {s}.users"), 2);
}

#[test]
fn changes_without_id_are_applied_every_time() {
    let db = Db::new("dedupe_noid");
    db.exec(TABLE);
    let pg = db.plugin(r#", "dedupe": true"#);
    let batch = changes(
        &db.processor("users"),
        &[r#"{"action": "add", "data": {"name": "anonymous"}}"#.into()],
    );
    apply(&pg, &batch);
    apply(&pg, &batch);
    assert_eq!(db.count("SELECT count(*) FROM {s}.users"), 2);
}

#[test]
fn old_entries_are_pruned() {
    let db = Db::new("dedupe_prune");
    db.exec(TABLE);
    let pg = db.plugin(r#", "dedupe": true, "dedupe_retention_s": 3600"#);
    // Creates the applied-change table if this is the first test to need it.
    drop(pg.connect().unwrap());
    db.exec(&format!(
        "INSERT INTO {{s}}.applied (id, applied_at) VALUES
             ('{0}-old', now() - interval '2 hours'), ('{0}-recent', now() - interval '1 minute')",
        db.schema
    ));
    // The first batch of a new instance prunes.
    apply(&pg, &adds(&db, &["x"]));
    let left: Vec<String> = db
        .query(
            &format!(
                "SELECT id FROM {{s}}.applied WHERE id LIKE '{}-%' ORDER BY id",
                db.schema
            ),
            &[],
        )
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        left,
        [format!("{}-recent", db.schema), format!("{}-x", db.schema)]
    );
}

/// Two sessions (two hosts, say) apply the same id at once: the one that commits second
/// notices, rolls back, and on retry reports a duplicate. The row exists once.
#[test]
fn the_same_id_applied_by_two_sessions_at_once_commits_once() {
    let db = Db::new("dedupe_race");
    let key = 0x601c_0de1_0000_0000_i64 + std::process::id() as i64;
    db.exec(TABLE);
    db.exec(&format!(
        "CREATE FUNCTION {{s}}.gate() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_advisory_xact_lock_shared({key}); RETURN NEW; END $$;
         CREATE TRIGGER gate BEFORE INSERT ON {{s}}.users
             FOR EACH ROW WHEN (NEW.name = 'first') EXECUTE FUNCTION {{s}}.gate();"
    ));
    let pg = db.plugin(r#", "dedupe": true"#);
    let p = db.processor("users");
    let message = |name: &str| {
        format!(
            r#"{{"action": "add", "id": "{}-race", "data": {{"name": "{name}"}}}}"#,
            db.schema
        )
    };
    let first = changes(&p, &[message("first")]);

    // The first session stops at the gate: it has checked that the id is new, and has
    // not recorded it yet.
    db.query("SELECT pg_advisory_lock($1)", &[&key]);
    let mut a = pg.connect().unwrap();
    let a_pid = a.backend_pid().unwrap();
    let a = std::thread::spawn(move || {
        let result = a.apply(&first);
        (a, result)
    });
    wait_for(&db, a_pid, "Lock");

    // Meanwhile a second session applies the same id, and commits.
    let results = apply(&pg, &changes(&p, &[message("second")]));
    assert!(!results[0].as_ref().unwrap().duplicate);

    // The first one finds the id recorded when it records it: it rolls back.
    db.query("SELECT pg_advisory_unlock($1)", &[&key]);
    let (mut a, result) = a.join().unwrap();
    let error = result.unwrap_err();
    assert_eq!(
        error.kind,
        golconde_plugin_api::ErrorKind::Transient,
        "{error}"
    );
    assert!(error.message.contains("another session"), "{error}");
    // The host's retry.
    let retried = a.apply(&changes(&p, &[message("first")])).unwrap();
    assert!(retried[0].as_ref().unwrap().duplicate);
    assert_eq!(
        db.text("SELECT string_agg(name, ',') FROM {s}.users"),
        "second"
    );
}

/// Waits (bounded) until server process `pid` waits for `event_type`.
fn wait_for(db: &Db, pid: i32, event_type: &str) {
    for _ in 0..600 {
        let rows = db.query(
            "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = $2",
            &[&pid, &event_type],
        );
        if !rows.is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("server process {pid} never waited for a {event_type}");
}

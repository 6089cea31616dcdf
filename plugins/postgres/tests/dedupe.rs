//! `dedupe = true`: a replayed change id is skipped, also for inserts, and reports the
//! keys its first application generated.

mod common;

use common::*;
use golconde_plugin_api::{testing::logged, Database, Session, Value};

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
            "SELECT count(*) FROM {{d}}.applied WHERE id LIKE '{}-%'",
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
        "INSERT INTO {{d}}.applied (id, applied_at) VALUES
             ('{0}-old', now() - interval '2 hours'), ('{0}-recent', now() - interval '1 minute')",
        db.schema
    ));
    // The first batch of a new instance prunes.
    apply(&pg, &adds(&db, &["x"]));
    let left: Vec<String> = db
        .query(
            &format!(
                "SELECT id FROM {{d}}.applied WHERE id LIKE '{}-%' ORDER BY id",
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

/// Two sessions (two hosts, say) apply the same change at once: the one that commits
/// second notices, rolls back, and on retry reports a duplicate. The row exists once.
#[test]
fn the_same_change_applied_by_two_sessions_at_once_commits_once() {
    let db = Db::new("dedupe_race");
    let key = 0x601c_0de1_0000_0000_i64 + std::process::id() as i64;
    db.exec(TABLE);
    let pg = db.plugin(r#", "dedupe": true"#);
    let p = db.processor("users");
    let change = || {
        changes(
            &p,
            &[format!(
                r#"{{"action": "add", "id": "{}-race", "data": {{"name": "once"}}}}"#,
                db.schema
            )],
        )
    };

    // The first session stops at a gate of its own: it has checked that the id is new,
    // and has not recorded it yet.
    let mut a = pg.connect().unwrap();
    let a_pid = a.backend_pid().unwrap();
    db.exec(&format!(
        "CREATE FUNCTION {{s}}.gate() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF pg_backend_pid() = {a_pid} THEN PERFORM pg_advisory_xact_lock_shared({key});
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER gate BEFORE INSERT ON {{s}}.users
             FOR EACH ROW EXECUTE FUNCTION {{s}}.gate();"
    ));
    db.query("SELECT pg_advisory_lock($1)", &[&key]);
    let first = change();
    let a = std::thread::spawn(move || {
        let result = a.apply(&first);
        (a, result)
    });
    wait_for(&db, a_pid, "Lock");

    // Meanwhile a second session applies the same change, and commits.
    let results = apply(&pg, &change());
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
    let retried = a.apply(&change()).unwrap();
    assert!(retried[0].as_ref().unwrap().duplicate);
    assert_eq!(db.count("SELECT count(*) FROM {s}.users"), 1);
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

/// Messages for `table` carrying `id`, with these names.
fn adds_to(db: &Db, table: &str, id: &str, names: &[&str]) -> Vec<golconde_plugin_api::Change> {
    let messages: Vec<String> = names
        .iter()
        .map(|name| format!(r#"{{"action": "add", "id": "{id}", "data": {{"name": "{name}"}}}}"#))
        .collect();
    changes(&db.processor(table), &messages)
}

/// Two producers (or two pipelines) that happen to use the same ids for changes to
/// different tables do not skip each other's changes.
#[test]
fn the_same_id_for_changes_to_two_tables_applies_both() {
    let db = Db::new("dedupe_scope");
    db.exec(TABLE);
    db.exec("CREATE TABLE {s}.orders (id bigserial PRIMARY KEY, name text NOT NULL)");
    let pg = db.plugin(r#", "dedupe": true"#);
    let users = adds_to(&db, "users", "42", &["ann"]);
    let orders = adds_to(&db, "orders", "42", &["book"]);
    // In one batch, and in two.
    let results = apply(&pg, &[users[0].clone(), orders[0].clone()]);
    assert!(
        results.iter().all(|r| !r.as_ref().unwrap().duplicate),
        "{results:?}"
    );
    let results = apply(&pg, &adds_to(&db, "orders", "43", &["pen"]));
    assert!(!results[0].as_ref().unwrap().duplicate);
    let results = apply(&pg, &adds_to(&db, "users", "43", &["bob"]));
    assert!(!results[0].as_ref().unwrap().duplicate);
    assert_eq!(db.count("SELECT count(*) FROM {s}.users"), 2);
    assert_eq!(db.count("SELECT count(*) FROM {s}.orders"), 2);
    // And each is still a duplicate of itself.
    let results = apply(&pg, &[orders[0].clone(), users[0].clone()]);
    assert!(
        results.iter().all(|r| r.as_ref().unwrap().duplicate),
        "{results:?}"
    );
    assert_eq!(db.count("SELECT count(*) FROM {s}.users"), 2);
}

/// A change whose id was applied before with other content is not a replay: it applies,
/// and the reuse of the id is logged (id and table, never the row's values).
#[test]
fn the_same_id_with_other_content_applies_with_a_warning() {
    let db = Db::new("dedupe_reuse");
    db.exec(TABLE);
    let pg = db.plugin(r#", "dedupe": true"#);
    let first = apply(&pg, &adds_to(&db, "users", "7", &["secret-ann"]));
    assert!(!first[0].as_ref().unwrap().duplicate);

    let (second, log) = logged(|| apply(&pg, &adds_to(&db, "users", "7", &["secret-bob"])));
    assert!(!second[0].as_ref().unwrap().duplicate, "{second:?}");
    assert!(log.contains("WARN"), "{log}");
    assert!(log.contains("`7`") && log.contains("users"), "{log}");
    assert!(!log.contains("secret"), "{log}");
    assert_eq!(
        db.text("SELECT string_agg(name, ',' ORDER BY id) FROM {s}.users"),
        "secret-ann,secret-bob"
    );

    // Within one batch too; and the latest content is the one replays are compared with.
    let (third, log) =
        logged(|| apply(&pg, &adds_to(&db, "users", "8", &["carl", "dora", "dora"])));
    let duplicates: Vec<bool> = third
        .iter()
        .map(|r| r.as_ref().unwrap().duplicate)
        .collect();
    assert_eq!(duplicates, [false, false, true]);
    assert!(log.contains("`8`"), "{log}");
    let replay = apply(&pg, &adds_to(&db, "users", "8", &["dora"]));
    assert!(replay[0].as_ref().unwrap().duplicate);
    let replay = apply(&pg, &adds_to(&db, "users", "7", &["secret-bob"]));
    assert!(replay[0].as_ref().unwrap().duplicate);
    assert_eq!(db.count("SELECT count(*) FROM {s}.users"), 4);
}

/// An applied-change table made by an earlier version (ids alone, global) is migrated in
/// place, by many sessions starting at once, and its entries keep skipping replays.
#[test]
fn an_applied_table_of_the_old_shape_is_migrated_and_keeps_deduping() {
    let db = Db::new("dedupe_migrate");
    db.exec(TABLE);
    db.exec(
        "CREATE SCHEMA {d};
         CREATE TABLE {d}.applied (
             id text PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now(),
             returned text
         );
         CREATE INDEX applied_applied_at ON {d}.applied (applied_at);
         INSERT INTO {d}.applied (id, returned) VALUES ('old-1', '[[[\"id\",[\"i\",\"41\"]]]]');",
    );
    let pg = std::sync::Arc::new(db.plugin(r#", "dedupe": true"#));
    let sessions: Vec<_> = (0..8)
        .map(|_| {
            let pg = pg.clone();
            std::thread::spawn(move || pg.connect().map(drop))
        })
        .collect();
    for session in sessions {
        session.join().unwrap().expect("every session starts");
    }
    // Twice more, as after a restart: nothing left to do.
    drop(pg.connect().unwrap());
    drop(db.plugin(r#", "dedupe": true"#).connect().unwrap());
    assert_eq!(
        db.text(
            "SELECT string_agg(a.attname, ',' ORDER BY k.ord)
             FROM pg_index i, unnest(i.indkey) WITH ORDINALITY k(attnum, ord), pg_attribute a
             WHERE i.indrelid = '{d}.applied'::regclass AND i.indisprimary
               AND a.attrelid = i.indrelid AND a.attnum = k.attnum"
        ),
        "scope,id"
    );

    let replay = apply(&pg, &adds_to(&db, "users", "old-1", &["ann"]));
    let replay = replay[0].as_ref().unwrap();
    assert!(replay.duplicate);
    assert_eq!(
        replay.returned[0][0].value,
        golconde_plugin_api::Value::Int(41)
    );
    assert!(
        !apply(&pg, &adds_to(&db, "users", "new-1", &["bob"]))[0]
            .as_ref()
            .unwrap()
            .duplicate
    );
    assert!(
        apply(&pg, &adds_to(&db, "users", "new-1", &["bob"]))[0]
            .as_ref()
            .unwrap()
            .duplicate
    );
    assert_eq!(db.count("SELECT count(*) FROM {s}.users"), 1);
}

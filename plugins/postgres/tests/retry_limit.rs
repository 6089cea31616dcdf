//! Errors that may or may not pass on a retry (a missing privilege, a row-level security
//! policy, `statement_timeout`) hold a batch back only `max_attempts` times: then the
//! change that keeps failing is isolated and reported as permanent, saying how often it
//! failed, why, and what to do, and the rest of its batch commits. Errors of the
//! infrastructure (a terminated connection) stay transient however often they happen.

mod common;

use common::*;
use golconde_plugin_api::{Applied, Change, Database, ErrorKind, PluginError, Session};
use golconde_postgres::Postgres;

/// Applies `batch` through a new session, as the host's retry does.
fn attempt(
    pg: &Postgres,
    batch: &[Change],
) -> Result<Vec<Result<Applied, PluginError>>, PluginError> {
    pg.connect().unwrap().apply(batch)
}

/// `attempts - 1` transient failures, then the batch commits; answers its results.
fn fail_then_commit(
    pg: &Postgres,
    batch: &[Change],
    attempts: usize,
    still_empty: impl Fn(),
) -> Vec<Result<Applied, PluginError>> {
    for n in 1..attempts {
        let error = attempt(pg, batch).expect_err("a transient failure");
        assert_eq!(error.kind, ErrorKind::Transient, "attempt {n}: {error}");
        still_empty();
    }
    attempt(pg, batch).expect("the batch commits at the last attempt")
}

#[test]
fn a_missing_privilege_is_retried_max_attempts_times_then_dead_lettered() {
    let db = Db::new("retry_privilege");
    db.exec(
        "CREATE TABLE {s}.open (id int PRIMARY KEY);
         CREATE TABLE {s}.closed (id int PRIMARY KEY);",
    );
    let role = db.role(
        "writer",
        "GRANT USAGE ON SCHEMA {s} TO {r}; GRANT SELECT, INSERT ON {s}.open TO {r};",
    );
    let pg = db.plugin_at(
        &format!("host=127.0.0.1 port=5432 user={role} dbname=postgres"),
        r#", "max_attempts": 3"#,
    );
    let write = |table: &str, id: i64| {
        changes(
            &db.processor(table),
            &[format!(
                r#"{{"action": "add", "id": "m{id}", "data": {{"id": {id}}}}}"#
            )],
        )
        .pop()
        .unwrap()
    };
    let batch = vec![write("open", 1), write("closed", 2), write("open", 3)];

    let results = fail_then_commit(&pg, &batch, 3, || {
        assert_eq!(db.count("SELECT count(*) FROM {s}.open"), 0)
    });
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    let error = permanent(&results[1]);
    for needed in [
        "change `m2`",
        "closed",
        "failed 3 times",
        "42501",
        "permission denied",
        "grant",
        "dead-letter",
    ] {
        assert!(error.contains(needed), "`{needed}` in: {error}");
    }
    assert_eq!(db.count("SELECT count(*) FROM {s}.open"), 2);

    // Once the privilege is there, the replayed change applies at once.
    db.exec(&format!("GRANT SELECT, INSERT ON {{s}}.closed TO {role}"));
    let results = attempt(&pg, &batch[1..2]).unwrap();
    assert!(results[0].is_ok(), "{results:?}");
}

#[test]
fn a_row_level_security_violation_is_retried_max_attempts_times_then_dead_lettered() {
    let db = Db::new("retry_rls");
    db.exec(
        "CREATE TABLE {s}.guarded (id int PRIMARY KEY, amount int);
         ALTER TABLE {s}.guarded ENABLE ROW LEVEL SECURITY;",
    );
    let role = db.role(
        "clerk",
        "GRANT USAGE ON SCHEMA {s} TO {r};
         GRANT SELECT, INSERT, UPDATE ON {s}.guarded TO {r};
         CREATE POLICY small ON {s}.guarded TO {r} USING (true) WITH CHECK (amount < 100);",
    );
    let pg = db.plugin_at(
        &format!("host=127.0.0.1 port=5432 user={role} dbname=postgres"),
        r#", "max_attempts": 2"#,
    );
    let batch = changes(
        &db.processor("guarded"),
        &[
            r#"{"action": "set", "data": {"id": 1, "amount": 10}}"#.into(),
            r#"{"action": "set", "data": {"id": 2, "amount": 1000}}"#.into(),
        ],
    );
    let results = fail_then_commit(&pg, &batch, 2, || {
        assert_eq!(db.count("SELECT count(*) FROM {s}.guarded"), 0)
    });
    assert!(results[0].is_ok(), "{results:?}");
    let error = permanent(&results[1]);
    for needed in ["failed 2 times", "42501", "row-level security", "guarded"] {
        assert!(error.contains(needed), "`{needed}` in: {error}");
    }
    assert_eq!(
        db.text("SELECT string_agg(id::text, ',') FROM {s}.guarded"),
        "1"
    );
}

#[test]
fn a_statement_timeout_is_retried_max_attempts_times_then_dead_lettered() {
    let db = Db::new("retry_timeout");
    db.exec(
        "CREATE TABLE {s}.slow (id int PRIMARY KEY, pause float8);
         CREATE FUNCTION {s}.pause() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_sleep(NEW.pause); RETURN NEW; END $$;
         CREATE TRIGGER pause BEFORE INSERT ON {s}.slow
             FOR EACH ROW EXECUTE FUNCTION {s}.pause();",
    );
    let pg = db.plugin(r#", "statement_timeout_ms": 200, "max_attempts": 2"#);
    let batch = changes(
        &db.processor("slow"),
        &[
            r#"{"action": "add", "data": {"id": 1, "pause": 0}}"#.into(),
            r#"{"action": "add", "data": {"id": 2, "pause": 5}}"#.into(),
            r#"{"action": "add", "data": {"id": 3, "pause": 0}}"#.into(),
        ],
    );
    let results = fail_then_commit(&pg, &batch, 2, || {
        assert_eq!(db.count("SELECT count(*) FROM {s}.slow"), 0)
    });
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    let error = permanent(&results[1]);
    for needed in ["failed 2 times", "57014", "statement_timeout", "slow"] {
        assert!(error.contains(needed), "`{needed}` in: {error}");
    }
    assert_eq!(db.count("SELECT count(*) FROM {s}.slow"), 2);
}

#[test]
fn a_terminated_connection_stays_transient_however_often() {
    let db = Db::new("retry_terminated");
    db.exec("CREATE TABLE {s}.t (id int PRIMARY KEY)");
    let pg = db.plugin(r#", "max_attempts": 1"#);
    let batch = changes(
        &db.processor("t"),
        &[r#"{"action": "add", "data": {"id": 1}}"#.into()],
    );
    for _ in 0..3 {
        let mut session = pg.connect().unwrap();
        db.terminate(session.backend_pid().unwrap());
        let error = session.apply(&batch).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Transient, "{error}");
    }
    assert!(apply(&pg, &batch)[0].is_ok());
}

//! What a message may name: never a table of the system catalogs or of Golconde's own
//! dedupe schema, however it is spelled; a malformed table name is refused, never a
//! panic; a missing table costs neither a connection nor a catalog query per message.

mod common;

use std::time::{Duration, Instant};

use common::*;
use golconde_plugin_api::{Action, Database, ErrorKind, Session, Value};

#[test]
fn system_and_dedupe_tables_are_refused_however_they_resolve() {
    let db = Db::new("reach_system");
    let pg = db.plugin(r#", "dedupe": true"#);
    // Creates the applied-change table.
    drop(pg.connect().unwrap());
    let dedupe_table = format!("{}.applied", db.dedupe_schema());
    let names = [
        // Unqualified, found through the search_path in pg_catalog.
        "pg_authid",
        "pg_class",
        "pg_catalog.pg_database",
        "\"pg_catalog\".\"pg_proc\"",
        "information_schema.sql_features",
        "pg_stat_activity",
        dedupe_table.as_str(),
    ];
    let mut session = pg.connect().unwrap();
    for name in names {
        for action in [
            Action::Insert,
            Action::Upsert,
            Action::Update,
            Action::Delete,
        ] {
            let (data, restriction) = match action {
                Action::Insert | Action::Upsert => (vec![col("oid", Value::Int(1))], vec![]),
                Action::Update => (
                    vec![col("oid", Value::Int(1))],
                    vec![col("oid", Value::Int(2))],
                ),
                Action::Delete => (vec![], vec![col("id", text("x"))]),
            };
            let results = apply_in(&mut session, &[op(action, name, data, restriction)]);
            let error = permanent(&results[0]);
            assert!(error.contains("refused"), "{name} {action:?}: {error}");
        }
        let error = pg.key_columns(name).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Permanent, "{name}: {error}");
        assert!(error.message.contains("refused"), "{name}: {error}");
    }
    assert_eq!(db.count("SELECT count(*) FROM {d}.applied"), 0);
}

#[test]
fn malformed_table_names_are_refused_not_a_panic() {
    let db = Db::new("reach_names");
    let pg = db.plugin("");
    let mut session = pg.connect().unwrap();
    for name in [
        "a.\"b\".c",
        "\"a\".\"b\".\"c\"",
        "a.\"b\"c",
        "\"a\"b.c",
        "a.",
        ".a",
        "",
        "\"",
        "a\0b",
        "x".repeat(64).as_str(),
    ] {
        let results = apply_in(
            &mut session,
            &[op(
                Action::Insert,
                name,
                vec![col("id", Value::Int(1))],
                vec![],
            )],
        );
        permanent(&results[0]);
        let error = pg.key_columns(name).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Permanent, "{name:?}: {error}");
    }
}

/// Sessions opened and transactions run in `database`, as the statistics say once every
/// server process that had been there has ended.
fn activity(db: &Db, database: &str) -> (i64, i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let others: i64 = db.query(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1",
            &[&database],
        )[0]
        .get(0);
        if others == 0 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    db.exec("SELECT pg_stat_clear_snapshot()");
    let row = &db.query(
        "SELECT sessions, xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1",
        &[&database],
    )[0];
    (row.get(0), row.get(1))
}

#[test]
fn a_thousand_messages_for_a_missing_table_cost_a_few_connections_and_queries() {
    let db = Db::new("reach_missing");
    let database = db.database("missing");
    let dsn = format!("host=127.0.0.1 port=5432 user=postgres dbname={database}");
    let pg = db.plugin_at(&dsn, "");
    let (sessions_before, transactions_before) = activity(&db, &database);
    {
        let mut session = pg.connect().unwrap();
        for i in 0..1000 {
            // The host asks for the key columns of each message's table, to route it.
            let error = pg.key_columns("public.nowhere").unwrap_err();
            assert_eq!(error.kind, ErrorKind::Permanent, "{error}");
            let results = apply_in(
                &mut session,
                &[op(
                    Action::Insert,
                    "public.nowhere",
                    vec![col("id", Value::Int(i))],
                    vec![],
                )],
            );
            assert!(permanent(&results[0]).contains("does not exist"));
        }
    }
    let (sessions, transactions) = activity(&db, &database);
    let (sessions, transactions) = (
        sessions - sessions_before,
        transactions - transactions_before,
    );
    assert!(sessions < 20, "{sessions} sessions for 1,000 messages");
    assert!(
        transactions < 100,
        "{transactions} transactions for 1,000 messages"
    );

    // A table created meanwhile is found within a few seconds.
    db.exec_in(
        &database,
        "CREATE TABLE public.nowhere (id int PRIMARY KEY)",
    );
    let mut session = pg.connect().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let change = op(
            Action::Insert,
            "public.nowhere",
            vec![col("id", Value::Int(1))],
            vec![],
        );
        let applied = session.apply(&[change]).unwrap().remove(0).is_ok();
        if let (true, Ok(keys)) = (applied, pg.key_columns("public.nowhere")) {
            assert_eq!(keys, ["id"]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new table was not found in 10 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

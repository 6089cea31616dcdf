//! A batch with bad changes among good ones: exactly the bad ones are reported, as
//! permanent errors saying why, and everything else commits.

mod common;

use common::*;
use golconde_plugin_api::{Action, Database, Value};

const TABLES: &str = "
CREATE TABLE {s}.parent (id int PRIMARY KEY);
INSERT INTO {s}.parent SELECT generate_series(1, 10);
CREATE TABLE {s}.child (
    id bigint PRIMARY KEY,
    email text UNIQUE,
    name text NOT NULL,
    parent int REFERENCES {s}.parent (id),
    qty int CHECK (qty >= 0),
    born date
);";

/// What is wrong with message `i`, if anything, and a word its error must contain.
fn flaw(i: usize) -> Option<&'static str> {
    match i % 50 {
        7 => Some("child_email_key"),
        13 => Some("not-null"),
        21 => Some("child_parent_fkey"),
        33 => Some("child_qty_check"),
        42 => Some("column `born`"),
        45 if i < 500 => Some("child_pkey"),
        _ => None,
    }
}

#[test]
fn a_mixed_batch_of_1000_reports_exactly_the_bad_changes() {
    let db = Db::new("isolated");
    db.exec(TABLES);
    let pg = db.plugin("");
    let mut messages = Vec::new();
    for i in 0..1000usize {
        // The first half inserts, the second upserts (and rewrites rows of the first).
        let (action, id) = if i < 500 {
            ("add", i)
        } else {
            ("set", i - 500)
        };
        let mut email = format!("\"e{id}\"");
        let mut name = format!("\"n{i}\"");
        let mut parent = 1 + i % 10;
        let mut qty = (i % 7) as i64;
        let mut born = "\"2000-01-01\"".to_string();
        let mut key = id;
        match i % 50 {
            7 => email = format!("\"e{}\"", id - 1),
            13 => name = "null".into(),
            21 => parent = 999,
            33 => qty = -1,
            42 => born = "\"2023-13-01\"".into(),
            45 if i < 500 => key = id - 1,
            _ => {}
        }
        messages.push(format!(
            r#"{{"action": "{action}", "id": "{}-{i}", "data": {{"id": {key}, "email": {email},
               "name": {name}, "parent": {parent}, "qty": {qty}, "born": {born}}}}}"#,
            db.schema
        ));
    }
    let results = apply(&pg, &changes(&db.processor("child"), &messages));

    let mut bad = 0;
    for (i, result) in results.iter().enumerate() {
        match flaw(i) {
            Some(word) => {
                bad += 1;
                let error = permanent(result);
                assert!(error.contains(word), "message {i}: {error}");
                assert!(
                    error.contains(&format!("change `{}-{i}`", db.schema)),
                    "message {i}: {error}"
                );
            }
            None => assert!(result.is_ok(), "message {i}: {result:?}"),
        }
    }
    assert_eq!(bad, 110);

    // Every row but the bad inserts' exists, and carries the last good write to it.
    for id in 0..500usize {
        let rows = db.query(
            "SELECT name, qty FROM {s}.child WHERE id = $1",
            &[&(id as i64)],
        );
        let insert_bad = flaw(id).is_some();
        let upsert = id + 500;
        let expected = match (insert_bad, flaw(upsert).is_some()) {
            (_, false) => Some(format!("n{upsert}")),
            (false, true) => Some(format!("n{id}")),
            (true, true) => None,
        };
        let actual = rows.first().map(|r| r.get::<_, String>(0));
        assert_eq!(actual, expected, "row {id}");
    }
}

#[test]
fn a_missing_table_fails_only_its_own_changes() {
    let db = Db::new("missing_table");
    db.exec(TABLES);
    let pg = db.plugin("");
    let child = db.table("child");
    let missing = db.table("nowhere");
    let row = |id: i64| vec![col("id", Value::Int(id)), col("name", text("x"))];
    let results = apply(
        &pg,
        &[
            op(Action::Upsert, &child, row(1), vec![]),
            op(Action::Upsert, &missing, row(2), vec![]),
            op(Action::Upsert, &child, row(3), vec![]),
        ],
    );
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    let error = permanent(&results[1]);
    assert!(
        error.contains(&format!("table `{missing}` does not exist")),
        "{error}"
    );
    assert_eq!(db.count("SELECT count(*) FROM {s}.child"), 2);

    // Once the table exists, the same change applies: the absence is remembered for a
    // few seconds only.
    db.exec("CREATE TABLE {s}.nowhere (id bigint PRIMARY KEY, name text)");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let results = apply(&pg, &[op(Action::Upsert, &missing, row(2), vec![])]);
        if results[0].is_ok() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{results:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn unknown_columns_are_an_error_by_default() {
    let db = Db::new("unknown_error");
    db.exec(TABLES);
    let pg = db.plugin("");
    let p = db.processor("child");
    let results = apply(
        &pg,
        &changes(
            &p,
            &[
                r#"{"action": "set", "data": {"id": 1, "name": "a", "colour": "red"}}"#.into(),
                r#"{"action": "set", "data": {"id": 2, "name": "b"}}"#.into(),
            ],
        ),
    );
    let error = permanent(&results[0]);
    assert!(
        error.contains(&format!(
            "table `{}` has no column `colour`",
            db.table("child")
        )),
        "{error}"
    );
    assert!(error.contains("unknown_columns"), "{error}");
    assert!(results[1].is_ok());
    assert_eq!(db.count("SELECT count(*) FROM {s}.child"), 1);
}

#[test]
fn unknown_columns_can_be_ignored_in_data_but_never_in_a_restriction() {
    let db = Db::new("unknown_ignore");
    db.exec(TABLES);
    let pg = db.plugin(r#", "unknown_columns": "ignore""#);
    let p = db.processor("child");
    let results = apply(
        &pg,
        &changes(
            &p,
            &[
                r#"{"action": "set", "data": {"id": 1, "name": "a", "colour": "red"}}"#.into(),
                r#"{"action": "update", "data": {"colour": "blue"}, "restriction": {"id": 1}}"#
                    .into(),
                r#"{"action": "delete", "restriction": {"id": 1, "colour": "red"}}"#.into(),
            ],
        ),
    );
    assert!(results[0].is_ok(), "{results:?}");
    // Nothing left to update is nothing to do.
    assert!(results[1].is_ok(), "{results:?}");
    let error = permanent(&results[2]);
    assert!(error.contains("no column `colour`"), "{error}");
    assert_eq!(db.text("SELECT name FROM {s}.child WHERE id = 1"), "a");
}

#[test]
fn an_update_without_restriction_is_refused_and_a_delete_without_one_empties_the_table() {
    let db = Db::new("no_restriction");
    db.exec(TABLES);
    db.exec("INSERT INTO {s}.child (id, name) VALUES (1, 'keep'), (2, 'keep')");
    let pg = db.plugin("");
    let child = db.table("child");
    let results = apply(
        &pg,
        &[
            op(
                Action::Update,
                &child,
                vec![col("name", text("gone"))],
                vec![],
            ),
            // A truncate, which the host passes since the plugin offers
            // `golconde.delete_all`; the insert after it stays.
            op(Action::Delete, &child, vec![], vec![]),
            op(
                Action::Insert,
                &child,
                vec![col("id", Value::Int(3)), col("name", text("after"))],
                vec![],
            ),
        ],
    );
    assert!(permanent(&results[0]).contains("every row"), "{results:?}");
    assert!(results[1].is_ok() && results[2].is_ok(), "{results:?}");
    assert_eq!(db.count("SELECT count(*) FROM {s}.child"), 1);
    assert_eq!(
        db.count("SELECT count(*) FROM {s}.child WHERE name = 'after'"),
        1
    );
}

/// Upserts of the `child` table as messages: (id, parent, qty) each.
fn upserts(db: &Db, action: &str, rows: &[(i64, i64, i64)]) -> Vec<String> {
    rows.iter()
        .map(|(id, parent, qty)| {
            format!(
                r#"{{"action": "{action}", "id": "{}-{id}", "data": {{"id": {id},
                   "email": "e{id}", "name": "n{id}", "parent": {parent}, "qty": {qty}}}}}"#,
                db.schema
            )
        })
        .collect()
}

fn child_ids(db: &Db) -> Vec<i64> {
    db.query("SELECT id FROM {s}.child ORDER BY id", &[])
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// A batch that is one statement is sent without a transaction around it. A deferred
/// foreign key is then checked only as that statement ends, and still pins the change at
/// fault. The session goes on with real transactions afterwards: a later batch of two
/// statements whose last fails commits nothing of the first.
#[test]
fn a_single_statement_batch_fails_whole_and_leaves_no_transaction_behind() {
    let db = Db::new("single_statement");
    db.exec(
        "CREATE TABLE {s}.parent (id int PRIMARY KEY);
         INSERT INTO {s}.parent SELECT generate_series(1, 10);
         CREATE TABLE {s}.child (
             id bigint PRIMARY KEY,
             email text,
             name text NOT NULL,
             parent int REFERENCES {s}.parent (id) DEFERRABLE INITIALLY DEFERRED,
             qty int CHECK (qty >= 0)
         );",
    );
    let pg = db.plugin("");
    let processor = db.processor("child");
    let mut session = pg.connect().unwrap();
    let batch = upserts(&db, "set", &[(1, 1, 1), (2, 99, 1), (3, 2, 1)]);
    let results = apply_in(&mut session, &changes(&processor, &batch));
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(permanent(&results[1]).contains("child_parent_fkey"));
    assert_eq!(child_ids(&db), [1, 3]);

    let mut batch = upserts(&db, "add", &[(4, 1, 1), (5, 1, 1)]);
    batch.extend(upserts(&db, "set", &[(6, 1, 1), (7, 1, -1)]));
    let results = apply_in(&mut session, &changes(&processor, &batch));
    for (i, result) in results.iter().take(3).enumerate() {
        assert!(result.is_ok(), "message {i}: {result:?}");
    }
    assert!(permanent(&results[3]).contains("child_qty_check"));
    assert_eq!(child_ids(&db), [1, 3, 4, 5, 6]);

    // And a single statement that works commits by itself.
    let batch = upserts(&db, "set", &[(8, 3, 1), (9, 3, 1)]);
    let results = apply_in(&mut session, &changes(&processor, &batch));
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    drop(session);
    assert_eq!(child_ids(&db), [1, 3, 4, 5, 6, 8, 9]);
}

/// The batch's last statement goes out with the COMMIT right behind it. When that statement
/// fails, nothing before it may have committed: the batch is then applied again change by
/// change, which would find its own inserts and refuse them.
#[test]
fn a_failing_last_statement_commits_nothing_before_it() {
    let db = Db::new("last_fails");
    db.exec(TABLES);
    let pg = db.plugin("");
    // Two statements: the inserts, then the upserts, the last of which breaks a check.
    let mut messages = upserts(&db, "add", &[(1, 1, 1), (2, 1, 1)]);
    messages.extend(upserts(&db, "set", &[(3, 1, 1), (4, 1, -1)]));
    let results = apply(&pg, &changes(&db.processor("child"), &messages));
    for (i, result) in results.iter().take(3).enumerate() {
        assert!(result.is_ok(), "message {i}: {result:?}");
    }
    assert!(permanent(&results[3]).contains("child_qty_check"));
    assert_eq!(child_ids(&db), [1, 2, 3]);
}

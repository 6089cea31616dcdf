//! How a batch is applied: upserts by primary or unique key, one row's changes in queue
//! order (also when several land in one statement), generated keys matched to their rows,
//! and table definitions re-read when a table changes.

mod common;

use common::*;
use golconde_plugin_api::{Action, Database, Value};

const USERS: &str = "
CREATE TABLE {s}.users (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    name text,
    score int
);";

#[test]
fn set_upserts_by_the_primary_key_or_else_a_unique_key() {
    let db = Db::new("upsert_keys");
    db.exec(USERS);
    let pg = db.plugin("");
    let p = db.processor("users");
    let results = apply(
        &pg,
        &changes(
            &p,
            &[
                r#"{"action": "set", "data": {"email": "a@x", "name": "first"}}"#.into(),
                r#"{"action": "set", "data": {"email": "a@x", "name": "second"}}"#.into(),
                r#"{"action": "set", "data": {"id": 50, "email": "b@x", "name": "b"}}"#.into(),
                r#"{"action": "set", "data": {"id": 50, "email": "b2@x"}}"#.into(),
                r#"{"action": "set", "data": {"name": "no key"}}"#.into(),
            ],
        ),
    );
    assert!(results[..4].iter().all(|r| r.is_ok()), "{results:?}");
    let error = permanent(&results[4]);
    assert!(
        error.contains("primary key (id) or unique key (email)"),
        "{error}"
    );
    assert_eq!(db.count("SELECT count(*) FROM {s}.users"), 2);
    assert_eq!(
        db.text("SELECT name FROM {s}.users WHERE email = 'a@x'"),
        "second"
    );
    assert_eq!(
        db.text("SELECT email || ' ' || name FROM {s}.users WHERE id = 50"),
        "b2@x b"
    );
}

#[test]
fn one_rows_changes_apply_in_queue_order_within_a_batch() {
    let db = Db::new("order");
    db.exec(USERS);
    let pg = db.plugin("");
    let p = db.processor("users");
    let mut messages = Vec::new();
    // Many upserts of few keys in one statement: the last of each key wins.
    for i in 0..200 {
        messages.push(format!(
            r#"{{"action": "set", "data": {{"id": {}, "email": "u{}@x", "score": {i}}}}}"#,
            i % 7,
            i % 7
        ));
    }
    // Then updates of the same keys by restriction, several per key, and a delete and
    // re-insert of one of them.
    for i in 0..50 {
        messages.push(format!(
            r#"{{"action": "update", "data": {{"name": "v{i}"}}, "restriction": {{"id": {}}}}}"#,
            i % 7
        ));
    }
    messages.push(r#"{"action": "delete", "restriction": {"id": 3}}"#.into());
    messages.push(r#"{"action": "add", "data": {"id": 3, "email": "again@x"}}"#.into());
    messages.push(
        r#"{"action": "update", "data": {"score": -1}, "restriction": {"email": "again@x"}}"#
            .into(),
    );
    let results = apply(&pg, &changes(&p, &messages));
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    for key in 0..7i64 {
        let last_set = (0..200).filter(|i| i % 7 == key).max().unwrap();
        let last_update = (0..50).filter(|i| i % 7 == key).max().unwrap();
        let row = db.query(
            "SELECT score, name, email FROM {s}.users WHERE id = $1",
            &[&key],
        );
        let (score, name, email): (i32, Option<String>, String) =
            (row[0].get(0), row[0].get(1), row[0].get(2));
        if key == 3 {
            assert_eq!((score, name, email.as_str()), (-1, None, "again@x"));
        } else {
            assert_eq!(score, last_set as i32, "key {key}");
            assert_eq!(name, Some(format!("v{last_update}")), "key {key}");
        }
    }
}

#[test]
fn generated_keys_are_matched_to_their_rows() {
    let db = Db::new("generated");
    db.exec(USERS);
    db.exec("SELECT setval('{s}.users_id_seq', 1000)");
    let pg = db.plugin("");
    let messages: Vec<String> = (0..300)
        .map(|i| format!(r#"{{"action": "add", "data": {{"email": "g{i}@x", "score": {i}}}}}"#))
        .collect();
    let results = apply(&pg, &changes(&db.processor("users"), &messages));
    for (i, result) in results.iter().enumerate() {
        let returned = &result.as_ref().unwrap().returned;
        let Value::Int(id) = returned[0][0].value else {
            panic!("{returned:?}")
        };
        assert!(id > 1000);
        let rows = db.query("SELECT score FROM {s}.users WHERE id = $1", &[&id]);
        assert_eq!(rows[0].get::<_, i32>(0) as usize, i, "row {i}");
    }
}

#[test]
fn a_table_without_primary_key_returns_nothing_and_upserts_by_unique_key() {
    let db = Db::new("no_pk");
    db.exec("CREATE TABLE {s}.log (code text UNIQUE, note text)");
    let pg = db.plugin("");
    assert_eq!(
        pg.key_columns(&db.table("log")).unwrap(),
        Vec::<String>::new()
    );
    let p = db.processor("log");
    let results = apply(
        &pg,
        &changes(
            &p,
            &[
                r#"{"action": "add", "data": {"code": "a", "note": "x"}}"#.into(),
                r#"{"action": "set", "data": {"code": "a", "note": "y"}}"#.into(),
            ],
        ),
    );
    assert_eq!(results[0].as_ref().unwrap().returned[0].len(), 0);
    assert!(results[1].is_ok());
    assert_eq!(db.text("SELECT note FROM {s}.log"), "y");
}

#[test]
fn key_columns_are_the_primary_key() {
    let db = Db::new("key_columns");
    db.exec("CREATE TABLE {s}.pairs (b int, a text, v text, PRIMARY KEY (a, b))");
    let pg = db.plugin("");
    assert_eq!(pg.key_columns(&db.table("pairs")).unwrap(), ["a", "b"]);
    let error = pg.key_columns(&db.table("nothing")).unwrap_err();
    assert!(error.message.contains("does not exist"), "{error}");
}

#[test]
fn a_changed_table_is_read_again() {
    let db = Db::new("schema_change");
    db.exec(USERS);
    let pg = db.plugin("");
    let p = db.processor("users");
    let mut session = pg.connect().unwrap();
    let set = |name: &str, extra: &str| {
        format!(
            r#"{{"action": "set", "data": {{"id": 1, "email": "a@x", "name": "{name}"{extra}}}}}"#
        )
    };
    apply_in(&mut session, &changes(&p, &[set("one", "")]));

    // A column added after the table was read is found.
    db.exec("ALTER TABLE {s}.users ADD COLUMN nick text");
    let results = apply_in(
        &mut session,
        &changes(&p, &[set("two", r#", "nick": "n""#)]),
    );
    assert!(results[0].is_ok(), "{results:?}");
    assert_eq!(db.text("SELECT nick FROM {s}.users"), "n");

    // A dropped column fails the statement built for it; the table is read again and the
    // change that still names it is refused, the others apply.
    db.exec("ALTER TABLE {s}.users DROP COLUMN name");
    let results = apply_in(
        &mut session,
        &changes(
            &p,
            &[
                set("three", ""),
                r#"{"action": "set", "data": {"id": 2, "email": "b@x"}}"#.into(),
            ],
        ),
    );
    assert!(permanent(&results[0]).contains("no column `name`"));
    assert!(results[1].is_ok(), "{results:?}");

    // A re-created table (new type for a column) is read again too.
    db.exec(
        "DROP TABLE {s}.users;
         CREATE TABLE {s}.users (id text PRIMARY KEY, email text, name text)",
    );
    let results = apply_in(
        &mut session,
        &changes(
            &p,
            &[r#"{"action": "set", "data": {"id": "abc", "email": "c@x", "name": "n"}}"#.into()],
        ),
    );
    assert!(results[0].is_ok(), "{results:?}");
    assert_eq!(db.text("SELECT id FROM {s}.users"), "abc");
}

#[test]
fn a_change_of_several_operations_applies_all_or_nothing() {
    let db = Db::new("multi_op");
    db.exec(USERS);
    let pg = db.plugin("");
    let users = db.table("users");
    let change = |email: &str| {
        let mut change = op(
            Action::Insert,
            &users,
            vec![col("email", text(email))],
            vec![],
        );
        change.operations.push(golconde_plugin_api::Operation {
            action: Action::Update,
            table: users.clone().into(),
            data: vec![col("score", Value::Int(1))].into(),
            restriction: vec![col("email", text(email))].into(),
        });
        change
    };
    let mut bad = change("dup@x");
    bad.operations.push(golconde_plugin_api::Operation {
        action: Action::Insert,
        table: users.clone().into(),
        data: vec![col("email", text("dup@x"))].into(),
        restriction: Vec::new().into(),
    });
    let results = apply(&pg, &[change("a@x"), bad, change("b@x")]);
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(permanent(&results[1]).contains("users_email_key"));
    let applied = results[0].as_ref().unwrap();
    assert_eq!(applied.returned.len(), 2);
    assert_eq!(applied.returned[1].len(), 0);
    assert_eq!(
        db.count("SELECT count(*) FROM {s}.users WHERE score = 1"),
        2
    );
    assert_eq!(db.count("SELECT count(*) FROM {s}.users"), 2);
}

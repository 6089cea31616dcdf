//! How a batch is applied: generated keys returned in order (by `RETURNING`, and by
//! `LAST_INSERT_ID()` as on MySQL), upserts by primary or unique key, updates and
//! deletes batched by the primary key, one row's changes in queue order, a batch longer
//! than one statement's placeholders, and table definitions re-read when a table changes.

mod common;

use common::*;
use golconde_plugin_api::{Action, Database, Value};

const USERS: &str = "
CREATE TABLE `{s}`.users (
    id bigint AUTO_INCREMENT PRIMARY KEY,
    email varchar(100) NOT NULL UNIQUE,
    name text,
    score int
)";

fn returned_ids(
    results: &[Result<golconde_plugin_api::Applied, golconde_plugin_api::PluginError>],
) -> Vec<i64> {
    results
        .iter()
        .map(|r| {
            let applied = r.as_ref().expect("applied");
            let columns = &applied.returned[0];
            assert_eq!(columns.len(), 1, "{columns:?}");
            assert_eq!(columns[0].name.as_str(), "id");
            match columns[0].value {
                Value::Int(id) => id,
                ref other => panic!("{other:?}"),
            }
        })
        .collect()
}

#[test]
fn inserts_return_their_generated_keys_in_order() {
    let db = Db::new("returning");
    db.exec(USERS);
    db.exec("ALTER TABLE `{s}`.users AUTO_INCREMENT = 1000");
    let my = db.plugin("");
    let p = db.processor("users");
    let messages: Vec<String> = (0..50)
        .map(|i| format!(r#"{{"action": "add", "data": {{"email": "u{i}@x"}}}}"#))
        .collect();
    let results = apply(&my, &changes(&p, &messages));
    let ids = returned_ids(&results);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            db.text(&format!("SELECT email FROM `{{s}}`.users WHERE id = {id}")),
            format!("u{i}@x")
        );
    }
    assert_eq!(ids[0], 1000);
}

#[test]
fn without_returning_keys_come_from_last_insert_id_or_row_by_row() {
    let db = Db::new("last_insert_id");
    db.exec(USERS);
    // Keys that are not 1, 2, 3...: a step of 1 is not what is checked.
    db.exec("ALTER TABLE `{s}`.users AUTO_INCREMENT = 77");
    let my = db.plugin("");
    let p = db.processor("users");
    for consecutive in [true, false] {
        let mut session = my.connect().unwrap();
        session.without_returning(consecutive);
        let messages: Vec<String> = (0..20)
            .map(|i| format!(r#"{{"action": "add", "data": {{"email": "{consecutive}{i}@x"}}}}"#))
            .collect();
        let results = apply_in(&mut session, &changes(&p, &messages));
        for (i, id) in returned_ids(&results).into_iter().enumerate() {
            assert_eq!(
                db.text(&format!("SELECT email FROM `{{s}}`.users WHERE id = {id}")),
                format!("{consecutive}{i}@x")
            );
        }
    }
    assert_eq!(db.count("SELECT count(*) FROM `{s}`.users"), 40);
}

#[test]
fn set_upserts_by_the_primary_key_or_else_a_unique_key() {
    let db = Db::new("upsert_keys");
    db.exec(USERS);
    let my = db.plugin("");
    let p = db.processor("users");
    let results = apply(
        &my,
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
    assert!(error.contains(&db.table("users")), "{error}");
    assert_eq!(db.count("SELECT count(*) FROM `{s}`.users"), 2);
    assert_eq!(
        db.text("SELECT name FROM `{s}`.users WHERE email = 'a@x'"),
        "second"
    );
    assert_eq!(
        db.text("SELECT concat(email, ' ', name) FROM `{s}`.users WHERE id = 50"),
        "b2@x b"
    );
}

#[test]
fn one_rows_changes_apply_in_queue_order_within_a_batch() {
    let db = Db::new("order");
    db.exec(USERS);
    let my = db.plugin("");
    let p = db.processor("users");
    let mut messages = Vec::new();
    for i in 0..200 {
        messages.push(format!(
            r#"{{"action": "set", "data": {{"id": {}, "email": "u{}@x", "score": {i}}}}}"#,
            i % 7,
            i % 7
        ));
    }
    // Updates by the primary key, several per key (batched, a key coming again starting
    // a new statement), then a delete and re-insert, then an update by another column.
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
    let results = apply(&my, &changes(&p, &messages));
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let rows = db.rows("SELECT id, score, name FROM `{s}`.users ORDER BY id");
    assert_eq!(rows.len(), 7);
    for row in &rows {
        let id: i64 = row[0].as_deref().unwrap().parse().unwrap();
        if id == 3 {
            assert_eq!(row[1].as_deref(), Some("-1"));
            assert_eq!(row[2], None);
            continue;
        }
        // The last upsert of key k is 196 + k or 189 + k; the last update 42 + k or 49 + k.
        let last_set = (0..200).filter(|i| i % 7 == id).max().unwrap();
        let last_update = (0..50).filter(|i| i % 7 == id).max().unwrap();
        assert_eq!(row[1].as_deref(), Some(last_set.to_string().as_str()));
        assert_eq!(row[2].as_deref(), Some(format!("v{last_update}").as_str()));
    }
}

#[test]
fn deletes_by_a_composite_key_go_together() {
    let db = Db::new("composite");
    db.exec("CREATE TABLE `{s}`.pairs (a int, b varchar(10), v int, PRIMARY KEY (a, b))");
    db.exec("INSERT INTO `{s}`.pairs VALUES (1, 'x', 1), (1, 'y', 2), (2, 'x', 3), (2, 'y', 4)");
    let my = db.plugin("");
    let t = db.table("pairs");
    let delete = |a: i64, b: &str| {
        op(
            Action::Delete,
            &t,
            vec![],
            vec![col("a", Value::Int(a)), col("b", text(b))],
        )
    };
    let results = apply(&my, &[delete(1, "x"), delete(2, "y"), delete(9, "z")]);
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(
        db.rows("SELECT v FROM `{s}`.pairs ORDER BY v"),
        [[Some("2".to_string())], [Some("3".to_string())]]
    );
}

#[test]
fn a_batch_beyond_the_placeholder_limit_is_cut_into_statements() {
    let db = Db::new("big");
    db.exec("CREATE TABLE `{s}`.items (id int PRIMARY KEY, v varchar(20))");
    let my = db.plugin("");
    let t = db.table("items");
    let rows = 70_000;
    let batch: Vec<_> = (0..rows)
        .map(|i| {
            op(
                Action::Upsert,
                &t,
                vec![col("id", Value::Int(i)), col("v", text(&format!("v{i}")))],
                vec![],
            )
        })
        .collect();
    let results = apply(&my, &batch);
    assert!(results.iter().all(|r| r.is_ok()));
    assert_eq!(db.count("SELECT count(*) FROM `{s}`.items"), rows);
    assert_eq!(
        db.text("SELECT v FROM `{s}`.items WHERE id = 69999"),
        "v69999"
    );
    let deletes: Vec<_> = (0..rows)
        .map(|i| op(Action::Delete, &t, vec![], vec![col("id", Value::Int(i))]))
        .collect();
    let results = apply(&my, &deletes);
    assert!(results.iter().all(|r| r.is_ok()));
    assert_eq!(db.count("SELECT count(*) FROM `{s}`.items"), 0);
}

#[test]
fn a_changed_table_is_read_again() {
    let db = Db::new("changed");
    db.exec("CREATE TABLE `{s}`.t (id int PRIMARY KEY)");
    let my = db.plugin("");
    let t = db.table("t");
    let mut session = my.connect().unwrap();
    apply_in(
        &mut session,
        &[op(
            Action::Insert,
            &t,
            vec![col("id", Value::Int(1))],
            vec![],
        )],
    );
    db.exec("ALTER TABLE `{s}`.t ADD COLUMN note varchar(10)");
    let results = apply_in(
        &mut session,
        &[op(
            Action::Insert,
            &t,
            vec![col("id", Value::Int(2)), col("note", text("new"))],
            vec![],
        )],
    );
    assert!(results[0].is_ok(), "{results:?}");
    // A column dropped under the cache: the statement fails with 1054, the table is read
    // again, and the change is then refused for what it is.
    db.exec("ALTER TABLE `{s}`.t DROP COLUMN note");
    let results = apply_in(
        &mut session,
        &[op(
            Action::Insert,
            &t,
            vec![col("id", Value::Int(3)), col("note", text("gone"))],
            vec![],
        )],
    );
    let error = permanent(&results[0]);
    assert!(error.contains("has no column `note`"), "{error}");
    assert_eq!(my.key_columns(&t).unwrap(), ["id"]);
}

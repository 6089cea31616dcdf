//! Values, column names and table names made to break out of SQL change nothing but the
//! intended row, or are refused.

mod common;

use common::*;
use golconde_plugin_api::{Action, Value};

const NASTY: &[&str] = &[
    r#"x"; DROP TABLE t; --"#,
    "$GOLCONDE$",
    "'); DROP TABLE victim; --",
    r#"\"; DELETE FROM victim; --"#,
    "$$; DROP TABLE victim; $$",
    "NULL",
    "{1,2}",
];

/// A table and columns named like attacks, and a victim table that must survive.
fn setup(db: &Db) {
    db.exec(
        r#"
CREATE TABLE {s}.victim (id int PRIMARY KEY);
INSERT INTO {s}.victim VALUES (1), (2), (3);
CREATE TABLE {s}."x""; DROP TABLE {s}.victim; --" (
    "id""; DROP TABLE t; --" int PRIMARY KEY,
    "$GOLCONDE$" text,
    "'); DELETE FROM victim; --" text,
    tags text[]
);"#,
    );
}

fn victim_intact(db: &Db) {
    assert_eq!(db.count("SELECT count(*) FROM {s}.victim"), 3);
}

#[test]
fn nasty_names_and_values_write_only_the_intended_rows() {
    let db = Db::new("injection_names");
    setup(&db);
    let pg = db.plugin("");
    let table = db.table(&format!(r#"x"; DROP TABLE {}.victim; --"#, db.schema));
    let key = r#"id"; DROP TABLE t; --"#;
    let mut changes = Vec::new();
    for (i, nasty) in NASTY.iter().enumerate() {
        changes.push(op(
            Action::Upsert,
            &table,
            vec![
                col(key, Value::Int(i as i64)),
                col("$GOLCONDE$", text(nasty)),
                col("'); DELETE FROM victim; --", text(nasty)),
                col("tags", Value::Array(vec![text(nasty), Value::Null].into())),
            ],
            vec![],
        ));
    }
    // An update and a delete selecting by a nasty value touch only the row holding it.
    changes.push(op(
        Action::Update,
        &table,
        vec![col("$GOLCONDE$", text("updated"))],
        vec![col("'); DELETE FROM victim; --", text("$GOLCONDE$"))],
    ));
    changes.push(op(
        Action::Delete,
        &table,
        vec![],
        vec![col("$GOLCONDE$", text(NASTY[2]))],
    ));
    let results = apply(&pg, &changes);
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    victim_intact(&db);

    let rows = db.query(
        r#"SELECT "id""; DROP TABLE t; --", "$GOLCONDE$", "'); DELETE FROM victim; --", tags
           FROM {s}."x""; DROP TABLE {s}.victim; --" ORDER BY 1"#,
        &[],
    );
    assert_eq!(rows.len(), NASTY.len() - 1);
    for row in rows {
        let i: i32 = row.get(0);
        let nasty = NASTY[i as usize];
        let first: String = row.get(1);
        let second: String = row.get(2);
        let tags: Vec<Option<String>> = row.get(3);
        assert_ne!(i, 2, "the deleted row is gone");
        if nasty == "$GOLCONDE$" {
            assert_eq!(first, "updated");
        } else {
            assert_eq!(first, nasty);
        }
        assert_eq!(second, nasty);
        assert_eq!(tags, vec![Some(nasty.to_string()), None]);
    }
}

#[test]
fn nasty_table_and_column_names_that_do_not_exist_are_refused() {
    let db = Db::new("injection_refused");
    setup(&db);
    let pg = db.plugin("");
    let victim = db.table("victim");
    let tables = [
        format!(
            r#"{}.victim"; DROP TABLE {}.victim; --"#,
            db.schema, db.schema
        ),
        format!(r#"{}.victim; DROP TABLE {}.victim"#, db.schema, db.schema),
        format!("{}.$GOLCONDE$", db.schema),
        r#"x"; DROP TABLE t; --"#.to_string(),
    ];
    let mut changes: Vec<_> = tables
        .iter()
        .map(|t| op(Action::Insert, t, vec![col("id", Value::Int(9))], vec![]))
        .collect();
    for column in NASTY {
        changes.push(op(
            Action::Upsert,
            &victim,
            vec![col("id", Value::Int(4)), col(column, Value::Int(1))],
            vec![],
        ));
        changes.push(op(
            Action::Delete,
            &victim,
            vec![],
            vec![col(column, Value::Int(1))],
        ));
    }
    let results = apply(&pg, &changes);
    for (i, table) in tables.iter().enumerate() {
        let error = permanent(&results[i]);
        assert!(error.contains("does not exist"), "{table}: {error}");
    }
    for (i, column) in NASTY.iter().enumerate() {
        for result in &results[tables.len() + 2 * i..tables.len() + 2 * i + 2] {
            let error = permanent(result);
            assert!(error.contains(&format!("no column `{column}`")), "{error}");
        }
    }
    victim_intact(&db);

    // A restriction value built to match everything matches nothing.
    let results = apply(
        &pg,
        &[op(
            Action::Delete,
            &victim,
            vec![],
            vec![col("id", text("1 OR 1=1"))],
        )],
    );
    assert!(permanent(&results[0]).contains("not an integer"));
    victim_intact(&db);
}

//! Hostile identifiers and values: every value travels as a bound parameter and every
//! identifier quoted, so neither can end a statement or start another; a table name
//! that tries to leave its database, or reaches a system one, is refused.

mod common;

use common::*;
use golconde_plugin_api::{Action, Database, Value};

#[test]
fn hostile_values_are_stored_as_they_are() {
    let db = Db::new("values");
    db.exec("CREATE TABLE `{s}`.t (id int PRIMARY KEY, v text)");
    let my = db.plugin("");
    let t = db.table("t");
    let hostile = [
        "'; DROP TABLE t; --",
        "\\'; DROP TABLE t; --",
        "`; DROP DATABASE mysql; --",
        "\0\n\r\u{1a}\\",
        "?",
        "' OR '1'='1",
    ];
    let batch: Vec<_> = hostile
        .iter()
        .enumerate()
        .map(|(i, v)| {
            op(
                Action::Upsert,
                &t,
                vec![col("id", Value::Int(i as i64)), col("v", text(v))],
                vec![],
            )
        })
        .collect();
    assert!(apply(&my, &batch).iter().all(|r| r.is_ok()));
    // Restricted by a hostile value, an update touches only the row holding it.
    let results = apply(
        &my,
        &[op(
            Action::Update,
            &t,
            vec![col("v", text("found"))],
            vec![col("v", text("' OR '1'='1"))],
        )],
    );
    assert!(results[0].is_ok(), "{results:?}");
    for (i, v) in hostile.iter().enumerate() {
        let expected = if i == 5 { "found" } else { v };
        assert_eq!(
            db.text(&format!("SELECT v FROM `{{s}}`.t WHERE id = {i}")),
            expected
        );
    }
}

#[test]
fn hostile_identifiers_are_quoted() {
    let db = Db::new("idents");
    db.exec(
        "CREATE TABLE `{s}`.`we``ird; DROP TABLE x` (`id``; --` int PRIMARY KEY, \
         `sp ace.dot` varchar(10))",
    );
    let my = db.plugin("");
    let table = format!("{}.we`ird; DROP TABLE x", db.name);
    let results = apply(
        &my,
        &[
            op(
                Action::Insert,
                &table,
                vec![col("id`; --", Value::Int(1)), col("sp ace.dot", text("a"))],
                vec![],
            ),
            op(
                Action::Update,
                &table,
                vec![col("sp ace.dot", text("b"))],
                vec![col("id`; --", Value::Int(1))],
            ),
        ],
    );
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(
        db.text("SELECT `sp ace.dot` FROM `{s}`.`we``ird; DROP TABLE x`"),
        "b"
    );
    assert_eq!(my.key_columns(&table).unwrap(), ["id`; --"]);
    // A column name that is SQL is just a column the table lacks.
    let results = apply(
        &my,
        &[op(
            Action::Insert,
            &table,
            vec![col("id`) VALUES (9); DROP TABLE x; --", Value::Int(2))],
            vec![],
        )],
    );
    assert!(permanent(&results[0]).contains("has no column"));
}

#[test]
fn system_and_dedupe_databases_are_refused_however_named() {
    let db = Db::new("system");
    db.exec("CREATE TABLE `{s}`.t (id int PRIMARY KEY)");
    db.exec("CREATE DATABASE `{d}`; CREATE TABLE `{d}`.applied (id int PRIMARY KEY)");
    let my = db.plugin("");
    for table in [
        "mysql.user".to_string(),
        "MySQL.user".to_string(),
        "information_schema.TABLES".to_string(),
        "performance_schema.threads".to_string(),
        format!("{}.applied", db.dedupe_database()),
    ] {
        let results = apply(
            &my,
            &[op(
                Action::Delete,
                &table,
                vec![],
                vec![col("id", Value::Int(1))],
            )],
        );
        let error = permanent(&results[0]);
        assert!(
            error.contains("is refused") || error.contains("does not exist"),
            "{table}: {error}"
        );
    }
    let error = my.key_columns("mysql.user").unwrap_err();
    assert!(error.message.contains("is refused"), "{error}");
    for bad in ["`a`.`b`.c", "`a", ""] {
        let results = apply(
            &my,
            &[op(
                Action::Delete,
                bad,
                vec![],
                vec![col("id", Value::Int(1))],
            )],
        );
        assert!(permanent(&results[0]).contains("table name"), "{bad}");
    }
}

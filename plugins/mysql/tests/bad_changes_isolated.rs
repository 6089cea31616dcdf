//! A batch with bad changes among good ones: exactly the bad ones are reported, as
//! permanent errors saying why and where, and everything else commits.

mod common;

use common::*;
use golconde_plugin_api::{Action, Value};

const TABLES: &str = "
CREATE TABLE `{s}`.parent (id int PRIMARY KEY) ENGINE = InnoDB;
INSERT INTO `{s}`.parent VALUES (1), (2), (3), (4), (5), (6), (7), (8), (9), (10);
CREATE TABLE `{s}`.child (
    id bigint PRIMARY KEY,
    email varchar(50) UNIQUE,
    name varchar(50) NOT NULL,
    parent int,
    qty int CHECK (qty >= 0),
    born date,
    FOREIGN KEY (parent) REFERENCES `{s}`.parent (id)
) ENGINE = InnoDB";

/// What is wrong with message `i`, if anything, and a word its error must contain.
fn flaw(i: usize) -> Option<&'static str> {
    match i % 50 {
        7 if i < 500 => Some("Duplicate entry"),
        // An upsert by the primary key whose email is another row's.
        7 => Some("collides with another row on another unique key"),
        13 => Some("column `name`"),
        21 => Some("foreign key constraint fails"),
        33 => Some("CONSTRAINT"),
        42 => Some("column `born`"),
        45 if i < 500 => Some("Duplicate entry"),
        _ => None,
    }
}

#[test]
fn a_mixed_batch_of_1000_reports_exactly_the_bad_changes() {
    let db = Db::new("isolated");
    db.exec(TABLES);
    let my = db.plugin("");
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
            r#"{{"action": "{action}", "data": {{"id": {key}, "email": {email}, "name": {name},
                "parent": {parent}, "qty": {qty}, "born": {born}}}}}"#
        ));
    }
    let p = db.processor("child");
    let results = apply(&my, &changes(&p, &messages));
    let mut bad = 0;
    for (i, result) in results.iter().enumerate() {
        match flaw(i) {
            Some(word) => {
                bad += 1;
                assert!(
                    result.is_err(),
                    "message {i} should fail ({word}): {result:?}"
                );
                let error = permanent(result);
                assert!(error.contains(word), "message {i}: {error}");
                assert!(error.contains("child"), "message {i}: {error}");
            }
            None => assert!(result.is_ok(), "message {i}: {result:?}"),
        }
    }
    assert_eq!(bad, 110);
    // Every good change is there, as its last good change left it.
    for i in 500..1000usize {
        if flaw(i).is_some() {
            continue;
        }
        let id = i - 500;
        assert_eq!(
            db.text(&format!("SELECT name FROM `{{s}}`.child WHERE id = {id}")),
            format!("n{i}"),
            "row {id}"
        );
    }
}

#[test]
fn a_value_that_does_not_fit_fails_alone_naming_table_column_and_value() {
    let db = Db::new("misfit");
    db.exec("CREATE TABLE `{s}`.t (id int PRIMARY KEY, small tinyint)");
    let my = db.plugin("");
    let p = db.processor("t");
    let results = apply(
        &my,
        &changes(
            &p,
            &[
                r#"{"action": "add", "data": {"id": 1, "small": 1}}"#.into(),
                r#"{"action": "add", "data": {"id": 2, "small": 300}}"#.into(),
                r#"{"action": "add", "data": {"id": 3, "small": 3}}"#.into(),
            ],
        ),
    );
    let error = permanent(&results[1]);
    assert!(
        error.contains(&format!("column `small` of `{}` (tinyint", db.table("t"))),
        "{error}"
    );
    assert!(error.contains("300"), "{error}");
    assert!(error.contains("-128 to 127"), "{error}");
    assert_eq!(db.count("SELECT count(*) FROM `{s}`.t"), 2);
}

/// One change whose values are more than the server takes in one packet
/// (`max_allowed_packet`): it alone is refused, as its own fault, naming the setting; the
/// others commit and the session goes on. Sent, it would make the server drop the
/// connection, which looks transient and would hold the queue back for ever.
#[test]
fn a_change_larger_than_the_servers_packet_is_refused_alone() {
    let db = Db::new("huge_change");
    db.exec("CREATE TABLE `{s}`.docs (id bigint PRIMARY KEY, body longtext)");
    let plugin = db.plugin("");
    let docs = db.table("docs");
    let huge = "x".repeat(17 << 20);
    let results = apply(
        &plugin,
        &[
            op(
                Action::Upsert,
                &docs,
                vec![col("id", Value::Int(1)), col("body", text("small"))],
                vec![],
            ),
            op(
                Action::Upsert,
                &docs,
                vec![col("id", Value::Int(2)), col("body", text(&huge))],
                vec![],
            ),
            op(
                Action::Upsert,
                &docs,
                vec![col("id", Value::Int(3)), col("body", text("small"))],
                vec![],
            ),
        ],
    );
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    let error = permanent(&results[1]);
    assert!(error.contains("max_allowed_packet"), "{error}");
    assert_eq!(db.count("SELECT count(*) FROM `{s}`.docs"), 2);
}

//! `dedupe = true`: a replayed change (same id, same tables, same content) is skipped and
//! reported as a duplicate with the keys its first application returned; the same id
//! with other content, or for other tables, is applied.

mod common;

use common::*;
use golconde_plugin_api::{Action, Change, ROption, Value};

fn with_id(id: &str, mut change: Change) -> Change {
    change.id = ROption::RSome(id.into());
    change
}

#[test]
fn replays_are_skipped_and_keep_their_returned_keys() {
    let db = Db::new("dedupe");
    db.exec("CREATE TABLE `{s}`.t (id bigint AUTO_INCREMENT PRIMARY KEY, v varchar(20))");
    db.exec("CREATE TABLE `{s}`.u (id bigint AUTO_INCREMENT PRIMARY KEY, v varchar(20))");
    let my = db.plugin(r#", "dedupe": true"#);
    let t = db.table("t");
    let add = |table: &str, v: &str| op(Action::Insert, table, vec![col("v", text(v))], vec![]);
    let first = apply(
        &my,
        &[with_id("m1", add(&t, "a")), with_id("m2", add(&t, "b"))],
    );
    assert!(first.iter().all(|r| r.as_ref().is_ok_and(|a| !a.duplicate)));
    // The same two again, one twice within the batch, and m1 for another table.
    let again = apply(
        &my,
        &[
            with_id("m1", add(&t, "a")),
            with_id("m2", add(&t, "b")),
            with_id("m2", add(&t, "b")),
            with_id("m1", add(&db.table("u"), "a")),
        ],
    );
    for i in 0..3 {
        let applied = again[i].as_ref().unwrap();
        assert!(applied.duplicate, "{i}: {applied:?}");
        assert_eq!(
            applied.returned,
            first[i.min(1)].as_ref().unwrap().returned,
            "{i}"
        );
    }
    assert!(!again[3].as_ref().unwrap().duplicate);
    assert_eq!(db.count("SELECT count(*) FROM `{s}`.t"), 2);
    assert_eq!(db.count("SELECT count(*) FROM `{s}`.u"), 1);
    // The same id with other content is no replay.
    let other = apply(&my, &[with_id("m1", add(&t, "changed"))]);
    assert!(!other[0].as_ref().unwrap().duplicate);
    assert_eq!(db.count("SELECT count(*) FROM `{s}`.t"), 3);
    assert_eq!(db.count("SELECT count(*) FROM `{d}`.applied"), 3);
}

#[test]
fn a_bad_change_is_not_recorded_and_the_good_ones_are() {
    let db = Db::new("dedupe_bad");
    db.exec("CREATE TABLE `{s}`.t (id int PRIMARY KEY, v varchar(3))");
    let my = db.plugin(r#", "dedupe": true"#);
    let t = db.table("t");
    let add = |id: i64| op(Action::Insert, &t, vec![col("id", Value::Int(id))], vec![]);
    let results = apply(
        &my,
        &[
            with_id("a", add(1)),
            with_id("b", add(1)),
            with_id("c", add(2)),
        ],
    );
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(permanent(&results[1]).contains("Duplicate entry"));
    assert_eq!(db.count("SELECT count(*) FROM `{d}`.applied"), 2);
    // Replayed, the good ones are duplicates; the bad one fails again.
    let results = apply(
        &my,
        &[
            with_id("a", add(1)),
            with_id("b", add(1)),
            with_id("c", add(2)),
        ],
    );
    assert!(results[0].as_ref().unwrap().duplicate);
    assert!(results[1].is_err());
    assert!(results[2].as_ref().unwrap().duplicate);
}

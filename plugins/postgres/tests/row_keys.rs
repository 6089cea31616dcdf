//! One row named by keys spelled differently (`uuid` in upper and lower case, `numeric`
//! `1.0` and `1.00`, one instant at two offsets, `-0` and `0`, text under a
//! case-insensitive collation): within one batch the last change by position wins, and
//! the table ends exactly as if the changes had been applied one by one.

mod common;

use common::*;
use golconde_plugin_api::{Change, Database};

/// A key column type, and two spellings the server takes as one value.
struct Key {
    tag: &'static str,
    column: &'static str,
    first: &'static str,
    second: &'static str,
    /// A third value, another row.
    other: &'static str,
}

const KEYS: &[Key] = &[
    Key {
        tag: "uuid",
        column: "uuid",
        first: r#""A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11""#,
        second: r#""{a0eebc999c0b4ef8bb6d6bb9bd380a11}""#,
        other: r#""a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12""#,
    },
    Key {
        tag: "numeric",
        column: "numeric",
        first: r#""1.0""#,
        second: r#""1.00""#,
        other: "2",
    },
    Key {
        tag: "numeric_int",
        column: "numeric",
        first: "1",
        second: r#""1.000""#,
        other: "2",
    },
    Key {
        tag: "tstz",
        column: "timestamptz",
        // Zone names: the server's parser, so the text travels as it is.
        first: r#""2024-01-01 00:00:00 UTC""#,
        second: r#""2024-01-01 01:00:00 CET""#,
        other: r#""2024-01-02 00:00:00 UTC""#,
    },
    Key {
        tag: "float",
        column: "float8",
        first: "0.0",
        second: "-0.0",
        other: "1.5",
    },
    Key {
        tag: "ci",
        column: "text COLLATE {s}.ci",
        first: r#""Straße""#,
        second: r#""STRASSE""#,
        other: r#""weg""#,
    },
];

/// The messages of one scenario, `K1`/`K2` standing for the two spellings of one key and
/// `K3` for another key.
const SCENARIOS: &[(&str, &[&str])] = &[
    (
        "two sets",
        &[
            r#"{"action": "set", "data": {"k": K1, "v": "a", "w": 1}}"#,
            r#"{"action": "set", "data": {"k": K2, "v": "b", "w": 2}}"#,
        ],
    ),
    (
        "sets among other keys",
        &[
            r#"{"action": "set", "data": {"k": K1, "v": "a", "w": 1}}"#,
            r#"{"action": "set", "data": {"k": K3, "v": "x", "w": 9}}"#,
            r#"{"action": "set", "data": {"k": K2, "v": "b", "w": 2}}"#,
            r#"{"action": "set", "data": {"k": K1, "v": "c", "w": 3}}"#,
        ],
    ),
    (
        "sets of the key alone",
        &[
            r#"{"action": "set", "data": {"k": K1}}"#,
            r#"{"action": "set", "data": {"k": K2}}"#,
        ],
    ),
    (
        "two updates",
        &[
            r#"{"action": "set", "data": {"k": K1, "v": "a", "w": 1}}"#,
            r#"{"action": "update", "data": {"v": "b"}, "restriction": {"k": K2}}"#,
            r#"{"action": "update", "data": {"v": "c"}, "restriction": {"k": K1}}"#,
            r#"{"action": "update", "data": {"v": "d"}, "restriction": {"k": K2}}"#,
        ],
    ),
    (
        "updates that move the key",
        &[
            r#"{"action": "set", "data": {"k": K1, "v": "a", "w": 1}}"#,
            r#"{"action": "update", "data": {"k": K3}, "restriction": {"k": K2}}"#,
            r#"{"action": "update", "data": {"k": K1}, "restriction": {"k": K3}}"#,
        ],
    ),
    (
        "two deletes",
        &[
            r#"{"action": "set", "data": {"k": K1, "v": "a", "w": 1}}"#,
            r#"{"action": "delete", "restriction": {"k": K2}}"#,
            r#"{"action": "delete", "restriction": {"k": K1}}"#,
        ],
    ),
    (
        "a mixture",
        &[
            r#"{"action": "set", "data": {"k": K1, "v": "a", "w": 1}}"#,
            r#"{"action": "update", "data": {"w": 5}, "restriction": {"k": K2}}"#,
            r#"{"action": "set", "data": {"k": K2, "v": "c", "w": 3}}"#,
            r#"{"action": "delete", "restriction": {"k": K2}}"#,
            r#"{"action": "set", "data": {"k": K2, "v": "d", "w": 4}}"#,
            r#"{"action": "set", "data": {"k": K1, "v": "e", "w": 6}}"#,
            r#"{"action": "update", "data": {"v": "f"}, "restriction": {"k": K1}}"#,
            r#"{"action": "update", "data": {"v": "g"}, "restriction": {"k": K2}}"#,
        ],
    ),
];

/// The table as text, row by row in a stable order.
fn contents(db: &Db, table: &str) -> Vec<String> {
    db.query(
        &format!("SELECT t::text FROM {{s}}.{table} AS t ORDER BY t::text COLLATE \"C\""),
        &[],
    )
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[test]
fn the_last_spelling_by_position_wins_as_if_applied_one_by_one() {
    let db = Db::new("row_keys");
    db.exec(
        "CREATE COLLATION {s}.ci (provider = icu, locale = 'und-u-ks-level2', \
         deterministic = false)",
    );
    let pg = db.plugin("");
    let mut failures = Vec::new();
    for key in KEYS {
        for (n, (scenario, messages)) in SCENARIOS.iter().enumerate() {
            for existing in [false, true] {
                let tables: Vec<String> = ["batch", "alone"]
                    .iter()
                    .map(|way| format!("{}_{n}_{existing}_{way}", key.tag))
                    .collect();
                for table in &tables {
                    db.exec(&format!(
                        "CREATE TABLE {{s}}.{table} (k {} PRIMARY KEY, v text, w int)",
                        key.column
                    ));
                    if existing {
                        let first = key.first.trim_matches('"');
                        db.exec(&format!(
                            "INSERT INTO {{s}}.{table} VALUES ('{first}', 'old', 0)"
                        ));
                    }
                }
                let batch = |table: &str| -> Vec<Change> {
                    let messages: Vec<String> = messages
                        .iter()
                        .map(|m| {
                            m.replace("K1", key.first)
                                .replace("K2", key.second)
                                .replace("K3", key.other)
                        })
                        .collect();
                    changes(&db.processor(table), &messages)
                };
                let together = apply(&pg, &batch(&tables[0]));
                let mut session = pg.connect().unwrap();
                let alone: Vec<_> = batch(&tables[1])
                    .into_iter()
                    .flat_map(|change| apply_in(&mut session, &[change]))
                    .collect();
                let ok = |results: &[Result<_, _>]| results.iter().all(Result::is_ok);
                let (batched, one_by_one) = (contents(&db, &tables[0]), contents(&db, &tables[1]));
                if !ok(&together) || !ok(&alone) || batched != one_by_one {
                    failures.push(format!(
                        "{} / {scenario} / existing row {existing}: batched {batched:?} \
                         ({together:?}), one by one {one_by_one:?}",
                        key.tag
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn one_change_setting_one_row_under_two_spellings_applies() {
    let db = Db::new("row_keys_one_change");
    db.exec("CREATE TABLE {s}.t (k uuid PRIMARY KEY, v text)");
    let pg = db.plugin("");
    let p = db.processor("t");
    // Two operations of one change go into one statement; the server must not be asked
    // to upsert one row twice in it.
    let mut batch = changes(
        &p,
        &[
            r#"{"action": "set", "data": {"k": "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "v": "a"}}"#
                .into(),
            r#"{"action": "set", "data": {"k": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "v": "b"}}"#
                .into(),
        ],
    );
    let second = batch.pop().unwrap();
    let mut operations = batch[0].operations.to_vec();
    operations.extend(second.operations.iter().cloned());
    batch[0].operations = operations.into();
    let results = apply(&pg, &batch);
    assert!(results[0].is_ok(), "{results:?}");
    assert_eq!(db.text("SELECT v FROM {s}.t"), "b");
}

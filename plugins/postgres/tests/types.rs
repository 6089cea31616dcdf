//! Every action on every column type the plugin lists, and values that do not fit.

mod common;

use common::*;
use golconde_plugin_api::{Action, Database, Value};

const TABLE: &str = "
CREATE TYPE {s}.mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE {s}.everything (
    id bigserial PRIMARY KEY,
    code text UNIQUE,
    i2 smallint, i4 integer, i8 bigint,
    f4 real, f8 double precision, num numeric(30,10),
    flag boolean,
    t text, vc varchar(10), ch char(4),
    u uuid, d date, tm time, ts timestamp, tstz timestamptz,
    j json, jb jsonb, b bytea, m {s}.mood,
    ai integer[], ai2 integer[], at text[], am {s}.mood[], an numeric[]
);";

/// Every column of the row with `code`, as the server prints it.
fn row(db: &Db, code: &str) -> Vec<(String, String)> {
    let columns = [
        "i2", "i4", "i8", "f4", "f8", "num", "flag", "t", "vc", "ch", "u", "d", "tm", "ts", "j",
        "jb", "b", "m", "ai", "ai2", "at", "am", "an",
    ];
    let select: Vec<String> = columns.iter().map(|c| format!("{c}::text")).collect();
    let rows = db.query(
        &format!(
            "SELECT {} FROM {{s}}.everything WHERE code = $1",
            select.join(", ")
        ),
        &[&code],
    );
    assert_eq!(rows.len(), 1, "one row with code {code}");
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                c.to_string(),
                rows[0]
                    .get::<_, Option<String>>(i)
                    .unwrap_or_else(|| "NULL".into()),
            )
        })
        .collect()
}

fn expect(db: &Db, code: &str, expected: &[(&str, &str)]) {
    let actual = row(db, code);
    for (column, value) in expected {
        let got = &actual.iter().find(|(c, _)| c == column).unwrap().1;
        assert_eq!(got, value, "column {column}");
    }
}

const FULL: &str = r#"{
    "code": "full",
    "i2": -32768, "i4": 2147483647, "i8": 9223372036854775807,
    "f4": 1.5, "f8": 0.1, "num": 12345678901234567890.0123456789,
    "flag": true,
    "t": "héllo \"world\"\n", "vc": "short", "ch": "ab",
    "u": "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "d": "2024-02-29", "tm": "13:14:15.5",
    "ts": "2024-02-29 13:14:15", "tstz": "2024-02-29T13:14:15Z",
    "j": {"b": [1, 2.5, "x"]}, "jb": {"z": 1, "a": null},
    "b": "AAEC/w==", "m": "happy",
    "ai": [1, null, 3], "ai2": [[1, 2], [3, 4]], "at": ["a\"b", "c,d", null, "NULL"],
    "am": ["sad", "ok"], "an": [1.5, 12345678901234567890123]
}"#;

const FULL_EXPECTED: &[(&str, &str)] = &[
    ("i2", "-32768"),
    ("i4", "2147483647"),
    ("i8", "9223372036854775807"),
    ("f4", "1.5"),
    ("f8", "0.1"),
    ("num", "12345678901234567890.0123456789"),
    ("flag", "true"),
    ("t", "héllo \"world\"\n"),
    ("vc", "short"),
    ("ch", "ab"),
    ("u", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    ("d", "2024-02-29"),
    ("tm", "13:14:15.5"),
    ("ts", "2024-02-29 13:14:15"),
    ("j", r#"{"b": [1, 2.5, "x"]}"#),
    ("jb", r#"{"a": null, "z": 1}"#),
    ("b", "\\x000102ff"),
    ("m", "happy"),
    ("ai", "{1,NULL,3}"),
    ("ai2", "{{1,2},{3,4}}"),
    ("at", r#"{"a\"b","c,d",NULL,"NULL"}"#),
    ("am", "{sad,ok}"),
    ("an", "{1.5,12345678901234567890123}"),
];

#[test]
fn add_writes_every_type_and_returns_the_generated_key() {
    let db = Db::new("types_add");
    db.exec(TABLE);
    let pg = db.plugin("");
    let changes = changes(
        &db.processor("everything"),
        &[format!(r#"{{"action": "add", "data": {FULL}}}"#)],
    );
    let results = apply(&pg, &changes);
    let applied = results[0].as_ref().unwrap();
    let id = db.count("SELECT id FROM {s}.everything WHERE code = 'full'");
    assert_eq!(applied.returned.len(), 1);
    assert_eq!(applied.returned[0].len(), 1);
    assert_eq!(applied.returned[0][0].name.as_str(), "id");
    assert_eq!(applied.returned[0][0].value, Value::Int(id));
    expect(&db, "full", FULL_EXPECTED);
    assert_eq!(
        db.text("SELECT (tstz = '2024-02-29T13:14:15Z'::timestamptz)::text FROM {s}.everything"),
        "true"
    );
}

#[test]
fn set_update_and_delete_work_on_every_type() {
    let db = Db::new("types_actions");
    db.exec(TABLE);
    let pg = db.plugin("");
    let p = db.processor("everything");
    let mut session = pg.connect().unwrap();
    let results = apply_in(
        &mut session,
        &changes(
            &p,
            &[
                // Upsert by the unique key `code`: first an insert, then an update of it.
                format!(r#"{{"action": "set", "data": {FULL}}}"#),
                r#"{"action": "set", "data": {"code": "full", "i4": 1, "t": "second",
                   "m": "sad", "ai": [], "jb": [1, "two"], "vc": null}}"#
                    .into(),
            ],
        ),
    );
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    expect(
        &db,
        "full",
        &[
            ("i2", "-32768"),
            ("i4", "1"),
            ("t", "second"),
            ("m", "sad"),
            ("ai", "{}"),
            ("jb", r#"[1, "two"]"#),
            ("vc", "NULL"),
            ("u", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        ],
    );

    // Update by a restriction on several typed columns at once.
    let results = apply_in(
        &mut session,
        &changes(
            &p,
            &[r#"{"action": "update",
                 "data": {"f8": -2.25, "d": "1999-12-31", "flag": false, "b": "",
                          "am": ["happy"], "tstz": "2000-01-01 00:00:00+02"},
                 "restriction": {"u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                                 "i8": 9223372036854775807, "m": "sad", "ch": "ab"}}"#
                .into()],
        ),
    );
    assert!(results[0].is_ok(), "{results:?}");
    expect(
        &db,
        "full",
        &[
            ("f8", "-2.25"),
            ("d", "1999-12-31"),
            ("flag", "false"),
            ("b", "\\x"),
            ("am", "{happy}"),
        ],
    );
    assert_eq!(
        db.text("SELECT (tstz = '1999-12-31 22:00:00Z')::text FROM {s}.everything"),
        "true"
    );

    // An update whose restriction matches nothing is no error: it changes nothing.
    let results = apply_in(
        &mut session,
        &changes(
            &p,
            &[
                r#"{"action": "update", "data": {"t": "never"}, "restriction": {"m": "happy"}}"#
                    .into(),
            ],
        ),
    );
    assert!(results[0].is_ok());
    expect(&db, "full", &[("t", "second")]);

    // Delete by a restriction on a date, a boolean and a NULL (matched with IS NULL).
    let results = apply_in(
        &mut session,
        &changes(
            &p,
            &[r#"{"action": "delete",
                 "restriction": {"d": "1999-12-31", "flag": false, "vc": null}}"#
                .into()],
        ),
    );
    assert!(results[0].is_ok());
    assert_eq!(db.count("SELECT count(*) FROM {s}.everything"), 0);
}

#[test]
fn null_goes_into_every_nullable_column() {
    let db = Db::new("types_null");
    db.exec(TABLE);
    let pg = db.plugin("");
    let columns = [
        "i2", "i4", "i8", "f4", "f8", "num", "flag", "t", "vc", "ch", "u", "d", "tm", "ts", "tstz",
        "j", "jb", "b", "m", "ai", "ai2", "at", "am", "an",
    ];
    let data: Vec<String> = columns.iter().map(|c| format!(r#""{c}": null"#)).collect();
    let message = format!(
        r#"{{"action": "add", "data": {{"code": "nulls", {}}}}}"#,
        data.join(", ")
    );
    let results = apply(&pg, &changes(&db.processor("everything"), &[message]));
    assert!(results[0].is_ok(), "{results:?}");
    for (column, value) in row(&db, "nulls") {
        assert_eq!(value, "NULL", "column {column}");
    }
}

#[test]
fn raw_values_not_from_json_convert_too() {
    let db = Db::new("types_raw");
    db.exec(TABLE);
    let pg = db.plugin("");
    let table = db.table("everything");
    let results = apply(
        &pg,
        &[op(
            Action::Insert,
            &table,
            vec![
                col("code", text("raw")),
                col("b", Value::Bytes(vec![0xde, 0xad, 0xbe, 0xef].into())),
                col("num", Value::Float(f64::NAN)),
                col("i4", text(" 12 ")),
                col("flag", text("yes")),
                col("t", Value::Int(5)),
            ],
            vec![],
        )],
    );
    assert!(results[0].is_ok(), "{results:?}");
    expect(
        &db,
        "raw",
        &[
            ("b", "\\xdeadbeef"),
            ("num", "NaN"),
            ("i4", "12"),
            ("flag", "true"),
            ("t", "5"),
        ],
    );
}

/// Each value that does not fit is a permanent error naming the column, its type and the
/// value, and only its own change fails.
#[test]
fn values_that_do_not_fit_name_column_type_and_value() {
    let db = Db::new("types_misfit");
    db.exec(TABLE);
    let pg = db.plugin("");
    let cases: &[(&str, &str, &str, &str)] = &[
        // column, JSON value, type as reported, a word of the reason
        ("i2", "70000", "smallint", "out of range"),
        ("i4", "\"seven\"", "integer", "not an integer"),
        ("i8", "1.5", "bigint", "not an integer"),
        ("i8", "92233720368547758070", "bigint", "out of range"),
        ("i8", "1e19", "bigint", "out of range"),
        ("f8", "1e400", "double precision", "out of range"),
        ("f4", "1e-46", "real", "out of range"),
        ("f8", "true", "double precision", "boolean"),
        ("f4", "1e300", "real", "out of range"),
        ("num", "\"12abc\"", "numeric(30,10)", "not a number"),
        ("num", "1e25", "numeric(30,10)", "overflow"),
        ("flag", "\"perhaps\"", "boolean", "not a boolean"),
        (
            "vc",
            "\"eleven char\"",
            "character varying(10)",
            "longer than 10",
        ),
        ("t", "{\"a\": 1}", "text", "JSON object"),
        ("u", "\"not-a-uuid\"", "uuid", "invalid input syntax"),
        ("d", "\"2023-02-29\"", "date", "out of range"),
        ("tm", "\"25:61\"", "time without time zone", "out of range"),
        (
            "ts",
            "\"yesterday-ish\"",
            "timestamp without time zone",
            "invalid input",
        ),
        ("tstz", "[1]", "timestamp with time zone", "an array"),
        ("jb", "\"\\u0000\"", "jsonb", "unsupported Unicode escape"),
        ("b", "\"!!not base64\"", "bytea", "base64"),
        ("m", "\"angry\"", "mood", "invalid input value for enum"),
        ("ai", "[1, \"x\"]", "integer[]", "element"),
        ("ai", "5", "integer[]", "JSON array"),
        (
            "ai2",
            "[[1, 2], [3]]",
            "integer[]",
            "Multidimensional arrays",
        ),
        (
            "am",
            "[\"angry\"]",
            "mood[]",
            "invalid input value for enum",
        ),
    ];
    let mut messages = Vec::new();
    for (i, (column, value, _, _)) in cases.iter().enumerate() {
        messages.push(format!(
            r#"{{"action": "add", "data": {{"code": "good{i}", "i4": {i}}}}}"#
        ));
        messages.push(format!(
            r#"{{"action": "add", "id": "{}-{i}", "data": {{"code": "bad{i}", "{column}": {value}}}}}"#,
            db.schema
        ));
    }
    let results = apply(&pg, &changes(&db.processor("everything"), &messages));
    for (i, (column, value, type_name, reason)) in cases.iter().enumerate() {
        assert!(results[2 * i].is_ok(), "good{i}: {:?}", results[2 * i]);
        let error = permanent(&results[2 * i + 1]);
        assert!(
            error.contains(&format!("column `{column}`")),
            "{column} = {value}: {error}"
        );
        assert!(error.contains(type_name), "{column} = {value}: {error}");
        assert!(error.contains(reason), "{column} = {value}: {error}");
        assert!(
            error.contains(&format!("change `{}-{i}`", db.schema)),
            "{column} = {value}: {error}"
        );
    }
    assert_eq!(
        db.count("SELECT count(*) FROM {s}.everything"),
        cases.len() as i64
    );
    assert_eq!(
        db.count("SELECT count(*) FROM {s}.everything WHERE code LIKE 'bad%'"),
        0
    );
}

/// Timestamps in RFC 3339 travel binary, every other spelling as text for the server: in
/// one batch, each must store exactly what the server makes of the same text, whichever
/// way it went (and runs of both kinds must keep queue order).
#[test]
fn timestamps_store_what_the_server_would_parse_however_they_travel() {
    let db = Db::new("types_timestamps");
    db.exec(
        "CREATE TABLE {s}.times (id int PRIMARY KEY, tstz timestamptz, ts timestamp, \
         ts0 timestamptz(0), at timestamptz[]);",
    );
    let pg = db.plugin("");
    let spellings = [
        "2024-02-29T13:14:15Z",
        "2024-02-29T13:14:15.123456+05:30",
        "2024-02-29 13:14:15-0800",
        "2024-02-29t13:14:15.5z",
        "1999-12-31T23:59:59.999999+14",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999Z",
        // Left to the server: its TimeZone, rounding, its own words and forms.
        "2024-02-29T13:14:15",
        "2024-02-29T13:14:15.1234567Z",
        "infinity",
        "-infinity",
        "2024-02-29 13:14:15 Europe/Paris",
        "2024-02-29T24:00:00Z",
        "Feb 29 2024 13:14:15 UTC",
    ];
    let messages: Vec<String> = spellings
        .iter()
        .enumerate()
        .map(|(id, text)| {
            format!(
                r#"{{"action": "set", "data": {{"id": {id}, "tstz": "{text}", "ts": "{text}", "ts0": "{text}", "at": ["{text}", null]}}}}"#
            )
        })
        .chain(std::iter::once(
            r#"{"action": "set", "data": {"id": 99, "tstz": null, "ts": null, "ts0": null, "at": null}}"#.to_string(),
        ))
        .collect();
    let results = apply(&pg, &changes(&db.processor("times"), &messages));
    for (result, text) in results.iter().zip(&spellings) {
        assert!(result.is_ok(), "{text}: {result:?}");
    }
    for (id, text) in spellings.iter().enumerate() {
        let same = db.text(&format!(
            "SELECT (tstz IS NOT DISTINCT FROM $${text}$$::timestamptz \
                 AND ts IS NOT DISTINCT FROM $${text}$$::timestamp \
                 AND ts0 IS NOT DISTINCT FROM $${text}$$::timestamptz(0) \
                 AND at IS NOT DISTINCT FROM ARRAY[$${text}$$::timestamptz, NULL])::text \
             FROM {{s}}.times WHERE id = {id}"
        ));
        assert_eq!(
            same, "true",
            "{text} was stored differently from the server's reading"
        );
    }
    assert_eq!(
        db.text("SELECT (tstz IS NULL AND ts IS NULL AND at IS NULL)::text FROM {s}.times WHERE id = 99"),
        "true"
    );
}

/// An error about bad data names the table and the column, also when the server's own
/// message does not: a check constraint, a domain's check on a value sent binary, a
/// unique or foreign key.
#[test]
fn errors_about_bad_data_name_table_and_column() {
    let db = Db::new("types_columns");
    db.exec(
        "CREATE DOMAIN {s}.positive AS integer CHECK (VALUE > 0);
         CREATE TABLE {s}.parent (id int PRIMARY KEY);
         INSERT INTO {s}.parent VALUES (1);
         CREATE TABLE {s}.t (
             id int PRIMARY KEY,
             amount int CHECK (amount >= 0),
             p {s}.positive,
             code text UNIQUE,
             nn text NOT NULL DEFAULT 'x',
             parent int REFERENCES {s}.parent,
             lo int, hi int, CONSTRAINT ordered CHECK (lo <= hi)
         );
         INSERT INTO {s}.t (id, code) VALUES (0, 'taken');",
    );
    let pg = db.plugin("");
    let table = db.table("t");
    let cases: &[(&str, &str)] = &[
        (r#""amount": -1"#, "column `amount`"),
        (r#""p": -1"#, "column `p`"),
        (r#""p": "-1""#, "column `p`"),
        (r#""code": "taken""#, "column `code`"),
        (r#""nn": null"#, "column `nn`"),
        (r#""parent": 2"#, "column `parent`"),
        (r#""lo": 2, "hi": 1"#, "columns `lo`, `hi`"),
    ];
    let messages: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(i, (data, _))| {
            format!(
                r#"{{"action": "add", "data": {{"id": {}, {data}}}}}"#,
                i + 1
            )
        })
        .collect();
    let results = apply(&pg, &changes(&db.processor("t"), &messages));
    for ((data, expected), result) in cases.iter().zip(&results) {
        let error = permanent(result);
        assert!(
            error.contains(&format!("{expected} of `{table}`")),
            "{data}: {error}"
        );
    }
}

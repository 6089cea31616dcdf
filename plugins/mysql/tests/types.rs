//! Every column type MariaDB and MySQL share: each value written reads back as it was
//! given, and a value that does not fit (out of range, too long, malformed, more digits
//! than the column keeps) is refused naming the table, the column and the value, with
//! nothing truncated or rounded into the table.

mod common;

use common::*;
use golconde_plugin_api::{Action, Value};

const TYPES: &str = "
CREATE TABLE `{s}`.t (
    id int PRIMARY KEY,
    i8 tinyint, u8 tinyint unsigned, i16 smallint, i24 mediumint, i32 int, i64 bigint,
    u64 bigint unsigned,
    dec_ decimal(10, 3), big_dec decimal(38, 9),
    f float, d double,
    b bit(5), flag boolean,
    c char(3), vc varchar(5), tt tinytext, txt text, latin varchar(10) CHARACTER SET latin1,
    mb3 varchar(10) CHARACTER SET utf8mb3,
    bin binary(4), vb varbinary(4), bl blob,
    dt date, dtm datetime(6), dt0 datetime, ts timestamp(3) NULL, tm time(2), yr year,
    en enum('small', 'Large'), st set('a', 'b', 'c'),
    js json
)";

/// Writes `value` into `column` of row `id`.
fn write(db: &Db, id: i64, column: &str, value: Value) -> Result<(), String> {
    let my = db.plugin("");
    let results = apply(
        &my,
        &[op(
            Action::Upsert,
            &db.table("t"),
            vec![col("id", Value::Int(id)), col(column, value)],
            vec![],
        )],
    );
    results[0]
        .clone()
        .map(|_| ())
        .map_err(|e| e.message.to_string())
}

fn read(db: &Db, id: i64, expr: &str) -> String {
    db.text(&format!("SELECT {expr} FROM `{{s}}`.t WHERE id = {id}"))
}

#[test]
fn values_of_every_type_read_back_as_given() {
    let db = Db::new("types");
    db.exec(TYPES);
    let cases: Vec<(&str, Value, &str, &str)> = vec![
        ("i8", Value::Int(-128), "i8", "-128"),
        ("u8", Value::Int(255), "u8", "255"),
        ("i16", Value::Text("-32768".into()), "i16", "-32768"),
        ("i24", Value::Float(8_388_607.0), "i24", "8388607"),
        (
            "i32",
            Value::Numeric("2147483647".into()),
            "i32",
            "2147483647",
        ),
        ("i64", Value::Int(i64::MIN), "i64", "-9223372036854775808"),
        (
            "u64",
            Value::Numeric("18446744073709551615".into()),
            "u64",
            "18446744073709551615",
        ),
        (
            "dec_",
            Value::Numeric("1234567.125".into()),
            "dec_",
            "1234567.125",
        ),
        ("dec_", Value::Float(2.5), "dec_", "2.500"),
        (
            "big_dec",
            Value::Numeric("12345678901234567890123456789.123456789".into()),
            "big_dec",
            "12345678901234567890123456789.123456789",
        ),
        ("f", Value::Float(1.5), "f", "1.5"),
        ("d", Value::Float(0.1), "d", "0.1"),
        ("d", Value::Text("1e300".into()), "d", "1e300"),
        ("b", Value::Int(21), "b + 0", "21"),
        ("flag", Value::Bool(true), "flag", "1"),
        ("c", text("äöü"), "c", "äöü"),
        ("vc", text("🦀🦀🦀🦀🦀"), "vc", "🦀🦀🦀🦀🦀"),
        ("tt", text(&"x".repeat(255)), "length(tt)", "255"),
        ("latin", text("café"), "latin", "café"),
        ("mb3", text("日本"), "mb3", "日本"),
        ("bin", text("AAEC/w=="), "hex(bin)", "000102FF"),
        ("vb", Value::Bytes(vec![0, 1].into()), "hex(vb)", "0001"),
        ("bl", text(""), "length(bl)", "0"),
        ("dt", text("2024-02-29"), "dt", "2024-02-29"),
        (
            "dtm",
            text("2024-02-29T13:14:15.123456"),
            "dtm",
            "2024-02-29 13:14:15.123456",
        ),
        // An offset is converted to UTC, for a DATETIME too.
        (
            "dt0",
            text("2024-02-29T13:14:15+02:00"),
            "dt0",
            "2024-02-29 11:14:15",
        ),
        // TIMESTAMP values are written and read in UTC.
        (
            "ts",
            text("2024-02-29 13:14:15.5Z"),
            "ts",
            "2024-02-29 13:14:15.500",
        ),
        (
            "ts",
            text("2024-02-29T13:14:15.25-05:00"),
            "ts",
            "2024-02-29 18:14:15.250",
        ),
        ("tm", text("-838:59:58.99"), "tm", "-838:59:58.99"),
        ("tm", text("100:00:00"), "tm", "100:00:00.00"),
        ("yr", Value::Int(2024), "yr", "2024"),
        ("en", text("large"), "en", "Large"),
        ("st", text("c,a"), "st", "a,c"),
        ("st", Value::Array(vec![text("b")].into()), "st", "b"),
        (
            "js",
            Value::Json(r#"{"a": [1, 2]}"#.into()),
            "js",
            r#"{"a": [1, 2]}"#,
        ),
        (
            "js",
            Value::Array(vec![Value::Int(1), text("x")].into()),
            "js",
            r#"[1,"x"]"#,
        ),
        ("i32", Value::Null, "coalesce(i32, 'NULL')", "NULL"),
    ];
    for (n, (column, value, expr, expected)) in cases.into_iter().enumerate() {
        let id = n as i64;
        write(&db, id, column, value.clone())
            .unwrap_or_else(|e| panic!("{column} = {value:?}: {e}"));
        assert_eq!(read(&db, id, expr), expected, "{column} = {value:?}");
    }
}

#[test]
fn values_that_do_not_fit_are_refused_naming_the_column_and_nothing_is_truncated() {
    let db = Db::new("misfits");
    db.exec(TYPES);
    let t = db.table("t");
    let cases: Vec<(&str, Value, &str)> = vec![
        ("i8", Value::Int(128), "out of range (-128 to 127)"),
        ("u8", Value::Int(-1), "out of range (0 to 255)"),
        (
            "i64",
            Value::Numeric("9223372036854775808".into()),
            "out of range",
        ),
        (
            "u64",
            Value::Numeric("18446744073709551616".into()),
            "out of range",
        ),
        ("i32", Value::Float(1.5), "not an integer"),
        ("i32", text("12abc"), "not an integer"),
        ("i32", Value::Bool(true), "cannot take a boolean"),
        (
            "dec_",
            Value::Numeric("1.2345".into()),
            "more than 3 digits after the point",
        ),
        ("dec_", Value::Numeric("12345678".into()), "out of range"),
        ("f", Value::Float(1e39), "out of range"),
        ("d", text("NaN"), "not a number"),
        ("b", Value::Int(32), "out of range (0 to 31)"),
        ("c", text("abcd"), "longer than 3 characters"),
        ("vc", text("🦀🦀🦀🦀🦀🦀"), "longer than 5 characters"),
        ("tt", text(&"é".repeat(128)), "256 bytes"),
        ("mb3", text("🦀"), "utf8mb4"),
        ("bin", text("AAECAwQ="), "5 bytes long"),
        ("bin", text("not base64!"), "base64"),
        ("dt", text("2023-02-29"), "not a valid date"),
        ("dt", text("2024-2-3"), "YYYY-MM-DD"),
        (
            "dtm",
            text("2024-02-29 24:00:00"),
            "not a valid time of day",
        ),
        ("dt0", text("2024-02-29 10:00:00.5"), "would round it"),
        ("ts", text("2024-02-29 10:00:00.1234"), "would round it"),
        ("tm", text("839:00:00"), "out of range"),
        ("yr", Value::Int(1900), "1901 to 2155"),
        ("en", text("huge"), "not one of 'small', 'Large'"),
        ("st", text("a,z"), "not one of 'a', 'b', 'c'"),
        (
            "vc",
            Value::Array(vec![Value::Int(1)].into()),
            "only to a JSON column",
        ),
        ("vc", Value::Json("{}".into()), "a JSON object"),
    ];
    for (column, value, reason) in cases {
        let error = write(&db, 1, column, value.clone()).unwrap_err();
        assert!(
            error.contains(&format!("column `{column}` of `{t}` (")),
            "{column} = {value:?}: {error}"
        );
        assert!(error.contains(reason), "{column} = {value:?}: {error}");
    }
    assert_eq!(db.count("SELECT count(*) FROM `{s}`.t"), 0);
}

#[test]
fn what_only_the_server_can_judge_is_refused_by_strict_mode() {
    let db = Db::new("strict");
    db.exec(TYPES);
    let t = db.table("t");
    for (column, value, word) in [
        // Before 1970 and after 2038: out of a TIMESTAMP's range.
        ("ts", text("1969-12-31 23:59:59Z"), "ts"),
        ("ts", text("2040-01-01 00:00:00Z"), "ts"),
        // A character latin1 lacks.
        ("latin", text("日本"), "latin"),
        // Malformed JSON.
        ("js", Value::Json("{not json".into()), "js"),
    ] {
        let error = write(&db, 1, column, value.clone()).unwrap_err();
        assert!(error.contains(&t), "{column} = {value:?}: {error}");
        assert!(error.contains(word), "{column} = {value:?}: {error}");
    }
    assert_eq!(db.count("SELECT count(*) FROM `{s}`.t"), 0);
}

//! A number its column cannot hold is the message's fault: refused with an error naming
//! table, column and type, never stored as another value (infinity, zero, the largest
//! integer), whichever `Value` it comes as and whether alone or in an array.

mod common;

use common::*;
use golconde_plugin_api::{Action, Value};

const TABLE: &str = "CREATE TABLE {s}.n (
    id int PRIMARY KEY,
    i2 smallint, i4 integer, i8 bigint, f4 real, f8 double precision, num numeric,
    ai8 bigint[], af4 real[], af8 double precision[], j jsonb
)";

fn numeric(t: &str) -> Value {
    Value::Numeric(t.into())
}

#[test]
fn numbers_out_of_range_are_refused_naming_table_column_and_type() {
    let db = Db::new("out_of_range");
    db.exec(TABLE);
    let pg = db.plugin("");
    let table = db.table("n");
    let array = |v: Value| Value::Array(vec![v].into());
    let cases: Vec<(&str, Value, &str)> = vec![
        ("f8", numeric("1e400"), "double precision"),
        ("f8", numeric("-1e400"), "double precision"),
        ("f8", numeric("1e-400"), "double precision"),
        ("f8", text("1e400"), "double precision"),
        ("f4", numeric("1e39"), "real"),
        ("f4", Value::Float(1e39), "real"),
        ("f4", Value::Float(1e-46), "real"),
        ("f4", text("1e-46"), "real"),
        ("i8", Value::Float(9.25e18), "bigint"),
        ("i8", Value::Float(-9.25e18), "bigint"),
        ("i8", Value::Float(1e300), "bigint"),
        ("i8", numeric("9223372036854775808"), "bigint"),
        ("i4", Value::Float(3e9), "integer"),
        ("i4", numeric("2147483648"), "integer"),
        ("i2", Value::Float(40000.0), "smallint"),
        ("i2", numeric("-32769"), "smallint"),
        ("ai8", array(Value::Float(9.25e18)), "bigint[]"),
        ("af4", array(Value::Float(1e-46)), "real[]"),
        ("af8", array(numeric("1e400")), "double precision[]"),
        ("j", Value::Float(f64::INFINITY), "jsonb"),
        ("j", array(Value::Float(f64::NAN)), "jsonb"),
    ];
    let batch: Vec<_> = cases
        .iter()
        .enumerate()
        .map(|(i, (column, value, _))| {
            op(
                Action::Insert,
                &table,
                vec![col("id", Value::Int(i as i64)), col(column, value.clone())],
                vec![],
            )
        })
        .collect();
    let results = apply(&pg, &batch);
    for ((column, value, type_name), result) in cases.iter().zip(&results) {
        let error = permanent(result);
        assert!(
            error.contains(&format!("column `{column}` of `{table}` ({type_name})")),
            "{column} = {value:?}: {error}"
        );
    }
    assert_eq!(db.count("SELECT count(*) FROM {s}.n"), 0);
}

#[test]
fn numbers_in_range_are_stored_exactly() {
    let db = Db::new("in_range");
    db.exec(TABLE);
    let pg = db.plugin("");
    let table = db.table("n");
    let googol_cubed_and_more = format!("1{}", "0".repeat(400));
    let cases: Vec<(&str, Value, &str)> = vec![
        ("f8", numeric("1e-310"), "1e-310"),
        (
            "f8",
            numeric("1.7976931348623157e308"),
            "1.7976931348623157e+308",
        ),
        ("f8", text("-Infinity"), "-Infinity"),
        ("f4", Value::Float(3.4e38), "3.4e+38"),
        ("f4", numeric("1e-45"), "1e-45"),
        ("i8", Value::Float(i64::MIN as f64), "-9223372036854775808"),
        ("i8", numeric("9223372036854775807"), "9223372036854775807"),
        ("i8", numeric("1.5e3"), "1500"),
        ("i4", numeric("2147483647.000"), "2147483647"),
        ("i2", Value::Float(-32768.0), "-32768"),
        ("num", numeric("1e400"), &googol_cubed_and_more),
        ("num", Value::Float(0.1), "0.1"),
    ];
    let batch: Vec<_> = cases
        .iter()
        .enumerate()
        .map(|(i, (column, value, _))| {
            op(
                Action::Insert,
                &table,
                vec![col("id", Value::Int(i as i64)), col(column, value.clone())],
                vec![],
            )
        })
        .collect();
    let results = apply(&pg, &batch);
    for (i, ((column, value, stored), result)) in cases.iter().zip(&results).enumerate() {
        assert!(result.is_ok(), "{column} = {value:?}: {result:?}");
        assert_eq!(
            db.text(&format!(
                "SELECT {column}::text FROM {{s}}.n WHERE id = {i}"
            )),
            *stored,
            "{column} = {value:?}"
        );
    }
}

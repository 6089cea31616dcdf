//! From Golconde's database-neutral [`Value`] to what SQLite stores, and back.
//!
//! SQLite keeps any value in any column, converting by the column's affinity. That is
//! mostly right, and where it is the conversion is left to SQLite. This module steps in
//! only where SQLite would store something other than what the message said:
//! - a `Numeric` (a number kept as exact decimal text) that a numeric column cannot hold:
//!   past the range of a 64-bit integer or of a double, or so small it would become 0,
//!   is refused rather than stored rounded to something else;
//! - NaN is refused (SQLite would store NULL), and so are arrays (SQLite has none).
//!
//! Every refusal is a sentence the caller puts after the column's name.

use golconde_plugin_api::Value;
use rusqlite::types::{Value as Sql, ValueRef};

use crate::schema::Affinity;

/// The value to bind for a column of `affinity`, or why it cannot be stored.
pub fn to_sql(value: &Value, affinity: Affinity) -> Result<Sql, String> {
    Ok(match value {
        Value::Null => Sql::Null,
        // SQLite has no boolean type; 0 and 1 are what its own TRUE and FALSE are.
        Value::Bool(b) => Sql::Integer(i64::from(*b)),
        Value::Int(i) => Sql::Integer(*i),
        Value::Float(f) if f.is_nan() => {
            return Err("NaN is not a number SQLite can store (it would become NULL)".into())
        }
        Value::Float(f) => Sql::Real(*f),
        Value::Numeric(text) => numeric(text, affinity)?,
        Value::Text(text) => Sql::Text(text.to_string()),
        Value::Bytes(bytes) => Sql::Blob(bytes.to_vec()),
        Value::Json(text) => Sql::Text(text.to_string()),
        Value::Array(_) => {
            return Err(
                "SQLite has no array type; send the array as a JSON object or \
                        string, which is stored as text"
                    .into(),
            )
        }
    })
}

/// A number given as exact decimal text. Text and untyped columns keep the text itself;
/// numeric ones take it as an integer when it is one that fits, else as a double.
fn numeric(text: &str, affinity: Affinity) -> Result<Sql, String> {
    if matches!(affinity, Affinity::Text | Affinity::Blob) {
        return Ok(Sql::Text(text.to_string()));
    }
    let well_formed = text.bytes().any(|b| b.is_ascii_digit())
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E'));
    if !well_formed {
        return Err(format!("{text:?} is not a decimal number"));
    }
    if affinity != Affinity::Real {
        if let Ok(i) = text.parse::<i64>() {
            return Ok(Sql::Integer(i));
        }
        // A double would keep only its first 15 to 17 digits.
        if !text.contains(['.', 'e', 'E']) {
            return Err(format!(
                "{text} is out of range for a 64-bit integer, the largest SQLite stores as a \
                 number; store it in a TEXT column to keep it exactly"
            ));
        }
    }
    let double: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a decimal number"))?;
    if double.is_infinite() {
        return Err(format!(
            "{text} is out of range for SQLite's REAL (about ±1.8e308); store it in a TEXT \
             column to keep it exactly"
        ));
    }
    let mantissa = text.split(['e', 'E']).next().unwrap_or_default();
    if double == 0.0 && mantissa.bytes().any(|b| matches!(b, b'1'..=b'9')) {
        return Err(format!(
            "{text} is too small for SQLite's REAL: it would be stored as 0; store it in a \
             TEXT column to keep it exactly"
        ));
    }
    Ok(Sql::Real(double))
}

/// A value SQLite returned (a generated key), as a [`Value`].
pub fn from_sql(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Float(f),
        // SQLite does not check that text is UTF-8; whatever it holds is reported, not lost.
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned().into()),
        ValueRef::Blob(b) => Value::Bytes(b.to_vec().into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use golconde_plugin_api::RString;

    fn numeric_in(text: &str, affinity: Affinity) -> Result<Sql, String> {
        to_sql(&Value::Numeric(RString::from(text)), affinity)
    }

    #[test]
    fn plain_values_map_to_sqlites_storage_classes() {
        let cases = [
            (Value::Null, Sql::Null),
            (Value::Bool(true), Sql::Integer(1)),
            (Value::Bool(false), Sql::Integer(0)),
            (Value::Int(i64::MIN), Sql::Integer(i64::MIN)),
            (Value::Float(1.5), Sql::Real(1.5)),
            (Value::Text("é".into()), Sql::Text("é".into())),
            (Value::Bytes(vec![0, 255].into()), Sql::Blob(vec![0, 255])),
            (
                Value::Json(r#"{"a":1}"#.into()),
                Sql::Text(r#"{"a":1}"#.into()),
            ),
        ];
        for (value, sql) in cases {
            assert_eq!(to_sql(&value, Affinity::Numeric).unwrap(), sql, "{value:?}");
        }
    }

    #[test]
    fn nan_and_arrays_are_refused() {
        let err = to_sql(&Value::Float(f64::NAN), Affinity::Real).unwrap_err();
        assert!(err.contains("NaN"), "{err}");
        let err = to_sql(&Value::Array(vec![Value::Int(1)].into()), Affinity::Text).unwrap_err();
        assert!(err.contains("no array type"), "{err}");
    }

    #[test]
    fn numeric_text_is_kept_exactly_in_text_columns() {
        let big = "123456789012345678901234567890.000000000000000000001";
        for affinity in [Affinity::Text, Affinity::Blob] {
            assert_eq!(numeric_in(big, affinity).unwrap(), Sql::Text(big.into()));
        }
    }

    #[test]
    fn numeric_text_becomes_a_number_in_numeric_columns() {
        for affinity in [Affinity::Integer, Affinity::Numeric] {
            assert_eq!(
                numeric_in("-9223372036854775808", affinity).unwrap(),
                Sql::Integer(i64::MIN)
            );
            assert_eq!(numeric_in("2.5", affinity).unwrap(), Sql::Real(2.5));
        }
        assert_eq!(numeric_in("7", Affinity::Real).unwrap(), Sql::Real(7.0));
        // A REAL column is approximate by its nature: many digits are rounded, as a double.
        assert_eq!(
            numeric_in("123456789012345678901234567890", Affinity::Real).unwrap(),
            Sql::Real(1.2345678901234568e29)
        );
        assert_eq!(
            numeric_in("1e308", Affinity::Real).unwrap(),
            Sql::Real(1e308)
        );
    }

    #[test]
    fn numbers_a_column_cannot_hold_are_refused_not_rounded() {
        for (text, affinity, reason) in [
            ("9223372036854775808", Affinity::Integer, "64-bit integer"),
            ("-9223372036854775809", Affinity::Numeric, "64-bit integer"),
            ("1e400", Affinity::Real, "out of range for SQLite's REAL"),
            (
                "-1e400",
                Affinity::Integer,
                "out of range for SQLite's REAL",
            ),
            ("1e-400", Affinity::Real, "would be stored as 0"),
            ("12abc", Affinity::Real, "not a decimal number"),
            ("inf", Affinity::Real, "not a decimal number"),
            ("NaN", Affinity::Numeric, "not a decimal number"),
        ] {
            let err = numeric_in(text, affinity).unwrap_err();
            assert!(err.contains(reason), "{text} in {affinity:?}: {err}");
        }
        // Zero itself is no underflow.
        assert_eq!(
            numeric_in("0.000e-400", Affinity::Real).unwrap(),
            Sql::Real(0.0)
        );
    }

    #[test]
    fn returned_values_come_back_by_storage_class() {
        assert_eq!(from_sql(ValueRef::Integer(7)), Value::Int(7));
        assert_eq!(from_sql(ValueRef::Text(b"k")), Value::Text("k".into()));
        assert_eq!(from_sql(ValueRef::Blob(&[1])), Value::Bytes(vec![1].into()));
        assert_eq!(from_sql(ValueRef::Null), Value::Null);
    }
}

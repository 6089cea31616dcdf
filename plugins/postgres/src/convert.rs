//! Values to column types: checks a [`Value`] against the column it is for and turns it
//! into the [`Cell`] that is sent.
//!
//! Integers, floats and booleans travel binary (an `int8[]`, `float8[]` or `bool[]` array
//! parameter per column), everything else as text that the server casts to the column's
//! type. What can be checked here is, so that the error names the column; what only the
//! server can judge (a date, a uuid, an enum label) fails there and is pinned to its
//! column afterwards (see `session`'s `describe`). A number is taken exactly or refused
//! (`number`), whichever `Value` it comes as: no saturating cast, no float that overflows
//! to infinity or underflows to zero, no JSON string standing in for an infinite float.

use std::borrow::Cow;

use base64::Engine;
use golconde_plugin_api::Value;
use golconde_plugin_support::shown::{json_text, noun};

use crate::{
    number::{self, Refusal},
    schema::Kind,
    timestamp::{self, Micros},
};

/// A value ready to be sent; text borrows from the change where it can.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    Null,
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(Cow<'a, str>),
    /// A `timestamp` or `timestamptz` read here (see `timestamp`).
    Micros(Micros),
}

/// The parameter type a column's values travel as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wire {
    Int,
    Float,
    Bool,
    Text,
    Timestamp { tz: bool },
}

impl Wire {
    /// How `cell` of a column of `kind` travels. Timestamps go binary unless this one had
    /// to be left to the server as text; NULL goes either way and is counted as binary.
    pub fn of(kind: &Kind, cell: &Cell<'_>) -> Wire {
        match kind {
            Kind::Int { .. } => Wire::Int,
            Kind::Float { .. } => Wire::Float,
            Kind::Bool => Wire::Bool,
            Kind::Timestamp { tz } if !matches!(cell, Cell::Text(_)) => Wire::Timestamp { tz: *tz },
            _ => Wire::Text,
        }
    }

    /// The array type of the parameter in SQL.
    pub fn array_type(self) -> &'static str {
        match self {
            Wire::Int => "pg_catalog.int8[]",
            Wire::Float => "pg_catalog.float8[]",
            Wire::Bool => "pg_catalog.bool[]",
            Wire::Text => "pg_catalog.text[]",
            Wire::Timestamp { tz: true } => "pg_catalog.timestamptz[]",
            Wire::Timestamp { tz: false } => "pg_catalog.timestamp[]",
        }
    }
}

/// Converts `value` for a column of `kind`; the error says why it does not fit.
pub fn convert<'a>(kind: &Kind, value: &'a Value) -> Result<Cell<'a>, String> {
    match cell(kind, value)? {
        // No text PostgreSQL takes can hold a NUL, whatever the type it is read as.
        Cell::Text(text) => no_nul(text).map(Cell::Text),
        cell => Ok(cell),
    }
}

fn cell<'a>(kind: &Kind, value: &'a Value) -> Result<Cell<'a>, String> {
    if let Value::Null = value {
        return Ok(Cell::Null);
    }
    match kind {
        Kind::Int { min, max } => {
            let i = match value {
                Value::Int(i) => Ok(*i),
                Value::Float(f) => number::integral(*f),
                Value::Numeric(t) | Value::Text(t) => number::integer(t),
                _ => return Err(format!("an integer column cannot take {}", noun(value))),
            }
            .map_err(|refusal| match refusal {
                Refusal::OutOfRange => format!("it is out of range ({min} to {max})"),
                _ => "it is not an integer".to_string(),
            })?;
            if i < *min || i > *max {
                return Err(format!("it is out of range ({min} to {max})"));
            }
            Ok(Cell::Int(i))
        }
        Kind::Float { single } => {
            let range = if *single {
                "a `real` holds magnitudes from about 1e-45 to 3.4e38"
            } else {
                "a `double precision` holds magnitudes from about 1e-324 to 1.8e308"
            };
            let f = match value {
                // Rounding to the nearest float is what a float column is for; only a
                // value that would turn into infinity or zero is wrong.
                Value::Int(i) if *single => Ok(*i as f32 as f64),
                Value::Int(i) => Ok(*i as f64),
                Value::Float(f) if *single => number::single(*f),
                Value::Float(f) => Ok(*f),
                Value::Numeric(t) | Value::Text(t) => number::float(t, *single),
                _ => {
                    return Err(format!(
                        "a floating-point column cannot take {}",
                        noun(value)
                    ))
                }
            }
            .map_err(|refusal| match refusal {
                Refusal::OutOfRange => format!("it is out of range ({range})"),
                _ => "it is not a number".to_string(),
            })?;
            Ok(Cell::Float(f))
        }
        Kind::Numeric => match value {
            Value::Int(i) => Ok(Cell::Text(i.to_string().into())),
            Value::Float(f) => Ok(Cell::Text(float_text(*f).into())),
            Value::Numeric(t) | Value::Text(t) => {
                if !number::is_numeric(t) {
                    return Err("it is not a number".into());
                }
                Ok(Cell::Text(t.trim().into()))
            }
            _ => Err(format!("a numeric column cannot take {}", noun(value))),
        },
        Kind::Bool => match value {
            Value::Bool(b) => Ok(Cell::Bool(*b)),
            Value::Int(0) => Ok(Cell::Bool(false)),
            Value::Int(1) => Ok(Cell::Bool(true)),
            Value::Text(t) => match t.trim().to_ascii_lowercase().as_str() {
                "t" | "true" | "y" | "yes" | "on" | "1" => Ok(Cell::Bool(true)),
                "f" | "false" | "n" | "no" | "off" | "0" => Ok(Cell::Bool(false)),
                _ => Err("it is not a boolean".into()),
            },
            _ => Err(format!("a boolean column cannot take {}", noun(value))),
        },
        Kind::Text { .. } | Kind::Other => {
            let text: Cow<'a, str> = match value {
                Value::Text(t) | Value::Numeric(t) => t.as_str().into(),
                Value::Int(i) => i.to_string().into(),
                Value::Float(f) => float_text(*f).into(),
                Value::Bool(b) => b.to_string().into(),
                _ => return Err(format!("this column cannot take {}", noun(value))),
            };
            if let Kind::Text { max: Some(max) } = kind {
                // The server allows excess characters only if they are all spaces.
                if text.trim_end_matches(' ').chars().count() > *max {
                    return Err(format!("it is longer than {max} characters"));
                }
            }
            Ok(Cell::Text(text))
        }
        Kind::Timestamp { tz } => {
            if let Value::Text(t) = value {
                if let Some(micros) = timestamp::parse(t, *tz) {
                    return Ok(Cell::Micros(micros));
                }
            }
            convert(&Kind::Other, value)
        }
        Kind::Json => {
            if let Value::Json(t) = value {
                return Ok(Cell::Text(t.as_str().into()));
            }
            let mut text = String::new();
            json_text(value, &mut text, float_text)?;
            Ok(Cell::Text(text.into()))
        }
        Kind::Bytea => match value {
            Value::Text(t) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(t.trim())
                    .map_err(|e| {
                        format!("a bytea column takes base64 text, and this is not: {e}")
                    })?;
                Ok(Cell::Text(hex(&bytes).into()))
            }
            Value::Bytes(b) => Ok(Cell::Text(hex(b).into())),
            _ => Err(format!(
                "a bytea column takes base64 text, not {}",
                noun(value)
            )),
        },
        Kind::Array(element) => match value {
            Value::Array(_) => {
                let mut literal = String::new();
                array_literal(element, value, &mut literal)?;
                Ok(Cell::Text(literal.into()))
            }
            _ => Err(format!(
                "an array column takes a JSON array, not {}",
                noun(value)
            )),
        },
    }
}

/// An array value as a PostgreSQL array literal (`{1,2,NULL}`, `{"a\"b"}`), nested
/// arrays as more dimensions.
fn array_literal(element: &Kind, value: &Value, out: &mut String) -> Result<(), String> {
    let Value::Array(items) = value else {
        let cell = convert(element, value).map_err(|e| format!("an element does not fit: {e}"))?;
        match cell {
            Cell::Null => out.push_str("NULL"),
            Cell::Int(i) => out.push_str(&i.to_string()),
            Cell::Float(f) => out.push_str(&float_text(f)),
            Cell::Bool(b) => out.push_str(if b { "t" } else { "f" }),
            Cell::Micros(m) => {
                let tz = matches!(element, Kind::Timestamp { tz: true });
                out.push('"');
                out.push_str(&timestamp::format(m, tz));
                out.push('"');
            }
            Cell::Text(t) => {
                out.push('"');
                for c in t.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
        return Ok(());
    };
    out.push('{');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        array_literal(element, item, out)?;
    }
    out.push('}');
    Ok(())
}

/// A float as PostgreSQL reads it back exactly.
pub fn float_text(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        f.to_string()
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 + bytes.len() * 2);
    out.push_str("\\x");
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

fn no_nul(text: Cow<'_, str>) -> Result<Cow<'_, str>, String> {
    if text.contains('\0') {
        return Err("it contains a NUL character, which PostgreSQL cannot take in text".into());
    }
    Ok(text)
}

/// A value as quoted in an error message, cut short.
pub fn show(value: &Value) -> String {
    golconde_plugin_support::shown::show(value, float_text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INT4: Kind = Kind::Int {
        min: i32::MIN as i64,
        max: i32::MAX as i64,
    };

    fn text(t: &str) -> Value {
        Value::Text(t.into())
    }

    #[test]
    fn integers_are_range_checked_and_read_from_text() {
        assert_eq!(convert(&INT4, &Value::Int(7)), Ok(Cell::Int(7)));
        assert_eq!(convert(&INT4, &Value::Float(7.0)), Ok(Cell::Int(7)));
        assert_eq!(convert(&INT4, &text(" 42 ")), Ok(Cell::Int(42)));
        assert!(convert(&INT4, &Value::Int(1 << 40))
            .unwrap_err()
            .contains("out of range"));
        assert!(convert(&INT4, &Value::Float(7.5))
            .unwrap_err()
            .contains("not an integer"));
        assert!(convert(&INT4, &text("seven"))
            .unwrap_err()
            .contains("not an integer"));
        assert!(convert(&INT4, &Value::Bool(true))
            .unwrap_err()
            .contains("a boolean"));
        assert_eq!(convert(&INT4, &Value::Null), Ok(Cell::Null));
    }

    #[test]
    fn arrays_become_literals_with_quoted_elements() {
        let value =
            Value::Array(vec![text("a\"b"), text("c\\d"), Value::Null, text("NULL")].into());
        assert_eq!(
            convert(&Kind::Array(Box::new(Kind::Text { max: None })), &value),
            Ok(Cell::Text(r#"{"a\"b","c\\d",NULL,"NULL"}"#.into()))
        );
        let nested = Value::Array(
            vec![
                Value::Array(vec![Value::Int(1), Value::Int(2)].into()),
                Value::Array(vec![Value::Int(3), Value::Null].into()),
            ]
            .into(),
        );
        assert_eq!(
            convert(&Kind::Array(Box::new(INT4)), &nested),
            Ok(Cell::Text("{{1,2},{3,NULL}}".into()))
        );
        let bad = Value::Array(vec![text("x")].into());
        assert!(convert(&Kind::Array(Box::new(INT4)), &bad)
            .unwrap_err()
            .contains("element"));
    }

    #[test]
    fn json_columns_take_any_value_as_json() {
        assert_eq!(
            convert(&Kind::Json, &text("plain")),
            Ok(Cell::Text("\"plain\"".into()))
        );
        assert_eq!(
            convert(&Kind::Json, &Value::Json(r#"{"a": 1}"#.into())),
            Ok(Cell::Text(r#"{"a": 1}"#.into()))
        );
        assert_eq!(
            convert(
                &Kind::Json,
                &Value::Array(vec![Value::Int(1), Value::Bool(false)].into())
            ),
            Ok(Cell::Text("[1,false]".into()))
        );
    }

    #[test]
    fn bytea_takes_base64() {
        assert_eq!(
            convert(&Kind::Bytea, &text("AAEC/w==")),
            Ok(Cell::Text("\\x000102ff".into()))
        );
        assert!(convert(&Kind::Bytea, &text("not base64!"))
            .unwrap_err()
            .contains("base64"));
    }

    #[test]
    fn text_refuses_nul_and_structures() {
        assert!(convert(&Kind::Text { max: None }, &text("a\0b"))
            .unwrap_err()
            .contains("NUL"));
        assert!(
            convert(&Kind::Text { max: None }, &Value::Json("{}".into()))
                .unwrap_err()
                .contains("JSON object")
        );
        assert_eq!(
            convert(&Kind::Text { max: None }, &Value::Int(3)),
            Ok(Cell::Text("3".into()))
        );
        let varchar3 = Kind::Text { max: Some(3) };
        assert_eq!(
            convert(&varchar3, &text("äbc  ")),
            Ok(Cell::Text("äbc  ".into()))
        );
        assert!(convert(&varchar3, &text("abcd"))
            .unwrap_err()
            .contains("longer than 3"));
    }

    #[test]
    fn floats_and_numerics() {
        assert_eq!(
            convert(
                &Kind::Numeric,
                &Value::Numeric("1.000000000000000000001".into())
            ),
            Ok(Cell::Text("1.000000000000000000001".into()))
        );
        assert!(convert(&Kind::Numeric, &text("12abc")).is_err());
        assert_eq!(
            convert(&Kind::Float { single: false }, &text("NaN"))
                .map(|c| matches!(c, Cell::Float(f) if f.is_nan())),
            Ok(true)
        );
        assert!(convert(&Kind::Float { single: true }, &Value::Float(1e300)).is_err());
        assert_eq!(convert(&Kind::Bool, &text("Yes")), Ok(Cell::Bool(true)));
        assert!(convert(&Kind::Bool, &Value::Int(2)).is_err());
    }
}

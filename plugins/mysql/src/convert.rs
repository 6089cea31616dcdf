//! Values checked against their column and turned into what is bound: integers as
//! integers (UNSIGNED ones beyond `i64` as such), floats as doubles, bytes as bytes, and
//! everything else as text the server reads back the same (DECIMAL, dates and times,
//! ENUM, SET, JSON). A value that does not fit is refused with the reason; the caller
//! names table, column and type.

use std::borrow::Cow;

use base64::Engine;
use golconde_plugin_api::Value;
use golconde_plugin_support::shown::{json_text, noun};
use mysql_async::Value as MyValue;

use crate::{
    number::{self, Refusal},
    schema::Kind,
    temporal,
};

/// A checked value, as it is bound.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    Null,
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(Cow<'a, str>),
    Bytes(Cow<'a, [u8]>),
}

impl Cell<'_> {
    /// The bound parameter.
    pub fn to_value(&self) -> MyValue {
        match self {
            Cell::Null => MyValue::NULL,
            Cell::Int(i) => MyValue::Int(*i),
            Cell::UInt(u) => MyValue::UInt(*u),
            Cell::Float(f) => MyValue::Double(*f),
            Cell::Text(t) => MyValue::Bytes(t.as_bytes().to_vec()),
            Cell::Bytes(b) => MyValue::Bytes(b.to_vec()),
        }
    }

    /// Roughly how many bytes it takes in a statement.
    pub fn size(&self) -> usize {
        match self {
            Cell::Null => 1,
            Cell::Int(_) | Cell::UInt(_) | Cell::Float(_) => 9,
            Cell::Text(t) => t.len() + 9,
            Cell::Bytes(b) => b.len() + 9,
        }
    }
}

/// `value` for a column of `kind`, or why it does not fit.
pub fn convert<'a>(kind: &Kind, value: &'a Value) -> Result<Cell<'a>, String> {
    if let Value::Null = value {
        return Ok(Cell::Null);
    }
    if let (Value::Array(_), false) = (value, matches!(kind, Kind::Json | Kind::Set(_))) {
        return Err("an array can go only to a JSON column (or a SET, as its members)".into());
    }
    match kind {
        Kind::Int { min, max, boolean } => {
            let i = match value {
                Value::Bool(b) if *boolean => Ok(i128::from(*b)),
                Value::Int(i) => Ok(i128::from(*i)),
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
            Ok(match i64::try_from(i) {
                Ok(i) => Cell::Int(i),
                Err(_) => Cell::UInt(u64::try_from(i).expect("in an integer column's range")),
            })
        }
        Kind::Bit { bits } => {
            let max = (1i128 << bits) - 1;
            let i = match value {
                Value::Bool(b) if *bits == 1 => Ok(i128::from(*b)),
                Value::Int(i) => Ok(i128::from(*i)),
                Value::Numeric(t) | Value::Text(t) => number::integer(t),
                _ => {
                    return Err(format!(
                        "a BIT column takes an integer (its bits), not {}",
                        noun(value)
                    ))
                }
            }
            .map_err(|_| format!("it is not an integer from 0 to {max}"))?;
            if !(0..=max).contains(&i) {
                return Err(format!("it is out of range (0 to {max})"));
            }
            Ok(Cell::UInt(i as u64))
        }
        Kind::Float { single } => {
            let range = if *single {
                "a FLOAT holds finite magnitudes from about 1e-45 to 3.4e38"
            } else {
                "a DOUBLE holds finite magnitudes from about 1e-324 to 1.8e308"
            };
            let f = match value {
                Value::Int(i) if *single => Ok(*i as f32 as f64),
                Value::Int(i) => Ok(*i as f64),
                Value::Float(f) => number::finite(*f, *single),
                Value::Numeric(t) | Value::Text(t) => number::float(t, *single),
                _ => {
                    return Err(format!(
                        "a floating-point column cannot take {}",
                        noun(value)
                    ))
                }
            }
            .map_err(|refusal| match refusal {
                Refusal::OutOfRange | Refusal::NotANumber if matches!(value, Value::Float(_)) => {
                    format!("it is out of range ({range}; no NaN, no infinity)")
                }
                Refusal::OutOfRange => format!("it is out of range ({range})"),
                _ => "it is not a number".to_string(),
            })?;
            Ok(Cell::Float(f))
        }
        Kind::Decimal { precision, scale } => {
            let text: Cow<'_, str> = match value {
                Value::Int(i) => i.to_string().into(),
                Value::Float(f) if f.is_finite() => f.to_string().into(),
                Value::Numeric(t) | Value::Text(t) => t.as_str().into(),
                _ => return Err(format!("a DECIMAL column cannot take {}", noun(value))),
            };
            number::fixed(&text, *precision, *scale).map(|t| Cell::Text(t.into()))
        }
        Kind::Text {
            max_chars,
            max_bytes,
            charset,
        } => {
            let text: Cow<'a, str> = match value {
                Value::Text(t) | Value::Numeric(t) => t.as_str().into(),
                Value::Int(i) => i.to_string().into(),
                Value::Float(f) => f.to_string().into(),
                Value::Bool(b) => b.to_string().into(),
                _ => return Err(format!("a text column cannot take {}", noun(value))),
            };
            if let Some(max) = max_chars {
                // The server drops excess trailing spaces (with a note); anything else
                // would be cut, so it is refused.
                if text.trim_end_matches(' ').chars().count() as u64 > *max {
                    return Err(format!("it is longer than {max} characters"));
                }
            }
            let utf8mb3 = matches!(charset.as_str(), "utf8" | "utf8mb3");
            if utf8mb3 && text.chars().any(|c| c.len_utf8() == 4) {
                return Err(format!(
                    "it has characters outside the Basic Multilingual Plane (emoji, ...), \
                     which the column's character set {charset} cannot hold; make the column \
                     utf8mb4"
                ));
            }
            if let Some(max) = max_bytes {
                let bytes = encoded_length(&text, charset);
                if bytes > *max {
                    return Err(format!(
                        "it takes {bytes} bytes in {charset}, more than the column's {max}"
                    ));
                }
            }
            Ok(Cell::Text(text))
        }
        Kind::Binary { max_bytes } => {
            let bytes: Cow<'a, [u8]> = match value {
                Value::Text(t) => base64::engine::general_purpose::STANDARD
                    .decode(t.trim())
                    .map_err(|e| {
                        format!("a binary column takes base64 text, and this is not: {e}")
                    })?
                    .into(),
                Value::Bytes(b) => b.as_slice().into(),
                _ => {
                    return Err(format!(
                        "a binary column takes base64 text or bytes, not {}",
                        noun(value)
                    ))
                }
            };
            if bytes.len() as u64 > *max_bytes {
                return Err(format!(
                    "it is {} bytes long, more than the column's {max_bytes}",
                    bytes.len()
                ));
            }
            Ok(Cell::Bytes(bytes))
        }
        Kind::Date => temporal::date(text_of(value, "a DATE")?).map(|t| Cell::Text(t.into())),
        Kind::DateTime { fsp, .. } => {
            temporal::datetime(text_of(value, "a DATETIME or TIMESTAMP")?, *fsp)
                .map(|t| Cell::Text(t.into()))
        }
        Kind::Time { fsp } => {
            temporal::time(text_of(value, "a TIME")?, *fsp).map(|t| Cell::Text(t.into()))
        }
        Kind::Year => {
            let year = match value {
                Value::Int(i) => i128::from(*i),
                Value::Numeric(t) | Value::Text(t) => {
                    number::integer(t).map_err(|_| "it is not a year".to_string())?
                }
                _ => return Err(format!("a YEAR column cannot take {}", noun(value))),
            };
            temporal::year(year).map(Cell::UInt)
        }
        Kind::Enum(members) => {
            let text = text_of(value, "an ENUM")?;
            member(members, text).map(|m| Cell::Text(m.to_string().into()))
        }
        Kind::Set(members) => {
            let given: Vec<&str> = match value {
                Value::Text(t) if t.is_empty() => Vec::new(),
                Value::Text(t) => t.split(',').collect(),
                Value::Array(items) => items
                    .iter()
                    .map(|item| match item {
                        Value::Text(t) => Ok(t.as_str()),
                        other => Err(format!("a SET's members are strings, not {}", noun(other))),
                    })
                    .collect::<Result<_, _>>()?,
                _ => {
                    return Err(format!(
                        "a SET column takes its members as comma-separated text or an array, \
                         not {}",
                        noun(value)
                    ))
                }
            };
            let chosen: Vec<&str> = given
                .into_iter()
                .map(|m| member(members, m))
                .collect::<Result<_, _>>()?;
            Ok(Cell::Text(chosen.join(",").into()))
        }
        Kind::Json => {
            if let Value::Json(t) = value {
                return Ok(Cell::Text(t.as_str().into()));
            }
            let mut text = String::new();
            json_text(value, &mut text, float_text)?;
            Ok(Cell::Text(text.into()))
        }
        Kind::Other => match value {
            Value::Text(t) | Value::Numeric(t) => Ok(Cell::Text(t.as_str().into())),
            Value::Int(i) => Ok(Cell::Int(*i)),
            Value::Float(f) => Ok(Cell::Float(*f)),
            Value::Bytes(b) => Ok(Cell::Bytes(b.as_slice().into())),
            _ => Err(format!("this column cannot take {}", noun(value))),
        },
    }
}

/// The text a temporal or ENUM column takes.
fn text_of<'a>(value: &'a Value, what: &str) -> Result<&'a str, String> {
    match value {
        Value::Text(t) => Ok(t.as_str()),
        _ => Err(format!("{what} column takes text, not {}", noun(value))),
    }
}

/// The member of an ENUM or SET that `given` names: exactly, or else without regard to
/// ASCII case (as the server's default collations compare), in the member's spelling.
fn member<'m>(members: &'m [String], given: &str) -> Result<&'m str, String> {
    members
        .iter()
        .find(|m| *m == given)
        .or_else(|| members.iter().find(|m| m.eq_ignore_ascii_case(given)))
        .map(String::as_str)
        .ok_or_else(|| {
            let list: Vec<String> = members.iter().map(|m| format!("'{m}'")).collect();
            format!("it is not one of {}", list.join(", "))
        })
}

/// How many bytes `text` takes in `charset`.
fn encoded_length(text: &str, charset: &str) -> u64 {
    match charset {
        "utf8mb4" | "utf8mb3" | "utf8" => text.len() as u64,
        "ucs2" => 2 * text.chars().count() as u64,
        "utf16" | "utf16le" => text.chars().map(|c| c.len_utf16() as u64 * 2).sum(),
        "utf32" => 4 * text.chars().count() as u64,
        // Single-byte character sets; a character they lack is the server's to refuse.
        _ => text.chars().count() as u64,
    }
}

/// A float as shown in errors: MySQL has no infinity or NaN to spell them its way.
fn float_text(f: f64) -> String {
    f.to_string()
}

/// A value as quoted in an error message, cut short.
pub fn show(value: &Value) -> String {
    golconde_plugin_support::shown::show(value, float_text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str) -> Value {
        Value::Text(t.into())
    }

    const UBIG: Kind = Kind::Int {
        min: 0,
        max: u64::MAX as i128,
        boolean: false,
    };

    #[test]
    fn unsigned_bigints_go_beyond_i64() {
        assert_eq!(
            convert(&UBIG, &Value::Numeric("18446744073709551615".into())),
            Ok(Cell::UInt(u64::MAX))
        );
        assert_eq!(convert(&UBIG, &Value::Int(7)), Ok(Cell::Int(7)));
        assert!(convert(&UBIG, &Value::Int(-1))
            .unwrap_err()
            .contains("out of range (0 to 18446744073709551615)"));
        assert!(convert(&UBIG, &Value::Bool(true)).is_err());
    }

    #[test]
    fn booleans_go_to_tinyint_1_only() {
        let boolean = Kind::Int {
            min: -128,
            max: 127,
            boolean: true,
        };
        assert_eq!(convert(&boolean, &Value::Bool(true)), Ok(Cell::Int(1)));
        assert!(convert(&boolean, &Value::Int(128)).is_err());
    }

    #[test]
    fn texts_are_measured_in_characters_or_bytes() {
        let varchar = Kind::Text {
            max_chars: Some(3),
            max_bytes: None,
            charset: "utf8mb4".into(),
        };
        assert_eq!(
            convert(&varchar, &text("äbc  ")),
            Ok(Cell::Text("äbc  ".into()))
        );
        assert!(convert(&varchar, &text("abcd"))
            .unwrap_err()
            .contains("longer than 3"));
        let tinytext = Kind::Text {
            max_chars: None,
            max_bytes: Some(255),
            charset: "utf8mb4".into(),
        };
        assert!(convert(&tinytext, &text(&"é".repeat(128)))
            .unwrap_err()
            .contains("256 bytes"));
        let mb3 = Kind::Text {
            max_chars: None,
            max_bytes: None,
            charset: "utf8mb3".into(),
        };
        assert!(convert(&mb3, &text("🦀")).unwrap_err().contains("utf8mb4"));
    }

    #[test]
    fn enums_and_sets_take_their_members() {
        let e = Kind::Enum(vec!["small".into(), "Large".into()]);
        assert_eq!(convert(&e, &text("large")), Ok(Cell::Text("Large".into())));
        assert!(convert(&e, &text("huge"))
            .unwrap_err()
            .contains("not one of 'small', 'Large'"));
        let s = Kind::Set(vec!["a".into(), "b".into()]);
        assert_eq!(convert(&s, &text("b,a")), Ok(Cell::Text("b,a".into())));
        assert_eq!(
            convert(&s, &Value::Array(vec![text("a")].into())),
            Ok(Cell::Text("a".into()))
        );
        assert!(convert(&s, &text("a,c")).is_err());
    }

    #[test]
    fn arrays_go_only_to_json() {
        let array = Value::Array(vec![Value::Int(1), text("x")].into());
        assert_eq!(
            convert(&Kind::Json, &array),
            Ok(Cell::Text(r#"[1,"x"]"#.into()))
        );
        let varchar = Kind::Text {
            max_chars: None,
            max_bytes: None,
            charset: "utf8mb4".into(),
        };
        assert!(convert(&varchar, &array).unwrap_err().contains("JSON"));
    }

    #[test]
    fn bits_take_integers_in_range() {
        let bit = Kind::Bit { bits: 4 };
        assert_eq!(convert(&bit, &Value::Int(15)), Ok(Cell::UInt(15)));
        assert!(convert(&bit, &Value::Int(16)).is_err());
        assert!(convert(&bit, &text("b'101'")).is_err());
    }
}

//! One column's JSON value as a database-neutral [`Value`], by its Kafka Connect schema
//! when the event has one, as plain JSON when it has none.
//!
//! With a schema, the logical type (the schema's `name`) decides first: decimals become
//! exact `Numeric` text, Debezium's numeric dates, times and timestamps become the text a
//! database reads ([`crate::temporal`]), `io.debezium.data.Json` becomes `Json`,
//! `io.debezium.data.Bits` a bit string (`"1011"`); then the type: integers `Int` (checked
//! against their width), floats `Float` or exact `Numeric` text, `bytes` (base64) `Bytes`,
//! arrays `Array` of their elements, maps and structs `Json` text as written. Without a
//! schema, values pass as the `autosql` processor reads the Golconde format: numbers
//! exactly, strings as `Text`, objects as `Json`, arrays as `Array`.
//!
//! Nested arrays are converted with a stack of their own, not by recursion, so the
//! dispatcher's stack does not grow with the event's nesting.

use base64::Engine;
use golconde_plugin_api::Value;
use golconde_plugin_support::{json::excerpt, number};
use serde_json::value::RawValue;
use thiserror::Error;

use crate::{
    decimal,
    schema::Schema,
    temporal::{self, MICROS, MILLIS, NANOS},
};

/// The widest bit string a `length` parameter alone may ask for; longer ones must come with
/// the bytes to fill them. PostgreSQL's `bit(n)` columns are rarely wider, MySQL's `BIT`
/// holds 64, and it bounds what a few bytes of an event can make the processor allocate.
pub const MAX_PADDED_BITS: u64 = 4096;

/// Why a column's value does not fit its schema.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Malformed {
    /// The JSON is of another kind than the schema says.
    #[error("expected {expected}, found {found}")]
    WrongType {
        expected: &'static str,
        found: String,
    },
    /// A number outside what its type holds.
    #[error("{value} is out of range for {kind}")]
    OutOfRange { value: String, kind: &'static str },
    /// A `bytes` value that is not base64.
    #[error("is not valid base64 ({0})")]
    Base64(String),
    /// Anything else, said in full.
    #[error("{0}")]
    Invalid(String),
}

/// Decodes `raw` by `schema` (`None`: the event has no schema).
pub fn decode(raw: &RawValue, schema: Option<&Schema>) -> Result<Value, Malformed> {
    let mut open: Vec<OpenArray> = Vec::new();
    let mut next = start(raw, schema, &mut open)?;
    loop {
        if let Some(value) = next {
            match open.last_mut() {
                None => return Ok(value),
                Some(array) => array.done.push(value),
            }
        }
        let array = open.last_mut().expect("an array is open");
        next = match array.rest.next() {
            Some(item) => {
                let items = array.items;
                start(item, items, &mut open)?
            }
            None => {
                let array = open.pop().expect("an array is open");
                Some(Value::Array(array.done.into()))
            }
        };
    }
}

/// An array being converted: the elements still to go, those done, and their schema.
struct OpenArray<'a, 's> {
    rest: std::vec::IntoIter<&'a RawValue>,
    done: Vec<Value>,
    items: Option<&'s Schema>,
}

/// The value of a scalar, struct or map; for an array, `None` after opening it on `open`.
fn start<'a, 's>(
    raw: &'a RawValue,
    schema: Option<&'s Schema>,
    open: &mut Vec<OpenArray<'a, 's>>,
) -> Result<Option<Value>, Malformed> {
    let text = raw.get();
    if text == "null" {
        return Ok(Some(Value::Null));
    }
    let Some(schema) = schema else {
        return schemaless(raw, open);
    };
    if let Some(value) = logical(text, schema)? {
        return Ok(Some(value));
    }
    let value = match schema.kind.as_str() {
        "int8" => Value::Int(integer(
            text,
            "int8",
            i64::from(i8::MIN),
            i64::from(i8::MAX),
        )?),
        "int16" => Value::Int(integer(
            text,
            "int16",
            i64::from(i16::MIN),
            i64::from(i16::MAX),
        )?),
        "int32" => Value::Int(integer(
            text,
            "int32",
            i64::from(i32::MIN),
            i64::from(i32::MAX),
        )?),
        "int64" => Value::Int(integer(text, "int64", i64::MIN, i64::MAX)?),
        "float32" | "float64" => float(text)?,
        "boolean" => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(wrong("a boolean", text)),
        },
        "string" => Value::Text(string(text, "a string")?.into()),
        "bytes" => Value::Bytes(bytes(text)?.into()),
        "array" => {
            open_array(raw, schema.items.as_deref(), open)?;
            return Ok(None);
        }
        "struct" if text.starts_with('{') => Value::Json(text.into()),
        "map" if text.starts_with(['{', '[']) => Value::Json(text.into()),
        "struct" => return Err(wrong("a struct (a JSON object)", text)),
        "map" => return Err(wrong("a map (a JSON object or array of pairs)", text)),
        other => {
            return Err(Malformed::Invalid(format!(
                "its schema has the type `{other}`, which Kafka Connect does not define"
            )))
        }
    };
    Ok(Some(value))
}

/// The value of a logical type this processor decodes; `None` for any other (the type
/// then decides).
fn logical(text: &str, schema: &Schema) -> Result<Option<Value>, Malformed> {
    let Some(name) = schema.logical() else {
        return Ok(None);
    };
    let value = match name {
        "org.apache.kafka.connect.data.Decimal" => {
            let scale = schema
                .integer_parameter("scale")
                .map_err(Malformed::Invalid)?
                .ok_or_else(|| {
                    Malformed::Invalid("its decimal schema has no `scale` parameter".into())
                })?;
            decimal_value(text, scale)?
        }
        "io.debezium.data.VariableScaleDecimal" => variable_scale(text)?,
        "io.debezium.time.Date" | "org.apache.kafka.connect.data.Date" => {
            Value::Text(temporal::date(integer(text, "a date", i64::MIN, i64::MAX)?).into())
        }
        "io.debezium.time.Time" | "org.apache.kafka.connect.data.Time" => time(text, MILLIS)?,
        "io.debezium.time.MicroTime" => time(text, MICROS)?,
        "io.debezium.time.NanoTime" => time(text, NANOS)?,
        "io.debezium.time.Timestamp" | "org.apache.kafka.connect.data.Timestamp" => {
            timestamp(text, MILLIS)?
        }
        "io.debezium.time.MicroTimestamp" => timestamp(text, MICROS)?,
        "io.debezium.time.NanoTimestamp" => timestamp(text, NANOS)?,
        // An interval as a number of microseconds: as text with its unit, so that an
        // `interval` column cannot take it for seconds.
        "io.debezium.time.MicroDuration" => {
            let micros = integer(text, "a duration", i64::MIN, i64::MAX)?;
            Value::Text(format!("{micros} microseconds").into())
        }
        "io.debezium.data.Json" => Value::Json(string(text, "JSON text in a string")?.into()),
        "io.debezium.data.Bits" => {
            let length = schema
                .integer_parameter("length")
                .map_err(Malformed::Invalid)?;
            Value::Text(bit_string(&bytes(text)?, length)?.into())
        }
        _ => return Ok(None),
    };
    Ok(Some(value))
}

/// A `Decimal`: base64 of the unscaled bytes, or a JSON number when the converter was set
/// to `decimal.format=NUMERIC`.
fn decimal_value(text: &str, scale: i64) -> Result<Value, Malformed> {
    if text.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) {
        return Ok(Value::Numeric(text.into()));
    }
    if !text.starts_with('"') {
        return Err(wrong("a decimal (base64 of its unscaled bytes)", text));
    }
    decimal::text(&bytes(text)?, scale)
        .map(|t| Value::Numeric(t.into()))
        .map_err(|e| Malformed::Invalid(e.to_string()))
}

/// Debezium's `VariableScaleDecimal`: `{"scale": 2, "value": "<base64>"}`.
fn variable_scale(text: &str) -> Result<Value, Malformed> {
    #[derive(serde::Deserialize)]
    struct Parts<'a> {
        scale: i64,
        #[serde(borrow)]
        value: &'a RawValue,
    }
    let parts: Parts = serde_json::from_str(text).map_err(|_| {
        wrong(
            "a variable-scale decimal ({\"scale\": integer, \"value\": base64})",
            text,
        )
    })?;
    if !(i64::from(i32::MIN)..=i64::from(i32::MAX)).contains(&parts.scale) {
        return Err(Malformed::OutOfRange {
            value: parts.scale.to_string(),
            kind: "a decimal's scale (int32)",
        });
    }
    decimal_value(parts.value.get(), parts.scale)
}

fn time(text: &str, per_second: i64) -> Result<Value, Malformed> {
    let units = integer(text, "a time", i64::MIN, i64::MAX)?;
    Ok(Value::Text(temporal::time(units, per_second).into()))
}

fn timestamp(text: &str, per_second: i64) -> Result<Value, Malformed> {
    let units = integer(text, "a timestamp", i64::MIN, i64::MAX)?;
    Ok(Value::Text(temporal::timestamp(units, per_second).into()))
}

/// A JSON integer within `min..=max`.
fn integer(text: &str, kind: &'static str, min: i64, max: i64) -> Result<i64, Malformed> {
    let is_number = text.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
    if !is_number || text.contains(['.', 'e', 'E']) {
        return Err(Malformed::WrongType {
            expected: match kind {
                "int8" | "int16" | "int32" | "int64" => "an integer",
                _ => "an integer count",
            },
            found: found(text),
        });
    }
    match text.parse::<i64>() {
        Ok(i) if (min..=max).contains(&i) => Ok(i),
        _ => Err(Malformed::OutOfRange {
            value: excerpt(text),
            kind,
        }),
    }
}

/// A float: exact as [`number::to_value`] keeps numbers; Java's non-finite values, which
/// its JSON writer spells as strings, as themselves.
fn float(text: &str) -> Result<Value, Malformed> {
    match text {
        "\"NaN\"" => Ok(Value::Float(f64::NAN)),
        "\"Infinity\"" => Ok(Value::Float(f64::INFINITY)),
        "\"-Infinity\"" => Ok(Value::Float(f64::NEG_INFINITY)),
        _ if text.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) => {
            Ok(number::to_value(text))
        }
        _ => Err(wrong("a number", text)),
    }
}

/// The text of a JSON string.
fn string(text: &str, expected: &'static str) -> Result<String, Malformed> {
    if !text.starts_with('"') {
        return Err(wrong(expected, text));
    }
    // Without escapes, the string is the text between the quotes.
    if !text.contains('\\') {
        return Ok(text[1..text.len() - 1].to_string());
    }
    serde_json::from_str(text).map_err(|e| Malformed::Invalid(e.to_string()))
}

/// The bytes of a base64 JSON string.
fn bytes(text: &str) -> Result<Vec<u8>, Malformed> {
    let encoded = string(text, "bytes (a base64 string)")?;
    base64::engine::general_purpose::STANDARD
        .decode(encoded.as_bytes())
        .map_err(|e| Malformed::Base64(e.to_string()))
}

fn open_array<'a, 's>(
    raw: &'a RawValue,
    items: Option<&'s Schema>,
    open: &mut Vec<OpenArray<'a, 's>>,
) -> Result<(), Malformed> {
    if !raw.get().starts_with('[') {
        return Err(wrong("an array", raw.get()));
    }
    let elements: Vec<&RawValue> =
        serde_json::from_str(raw.get()).map_err(|e| Malformed::Invalid(e.to_string()))?;
    open.push(OpenArray {
        done: Vec::with_capacity(elements.len()),
        rest: elements.into_iter(),
        items,
    });
    Ok(())
}

/// A value of an event without schema, read as plain JSON.
fn schemaless<'a>(
    raw: &'a RawValue,
    open: &mut Vec<OpenArray<'a, '_>>,
) -> Result<Option<Value>, Malformed> {
    let text = raw.get();
    Ok(Some(match text.as_bytes().first() {
        Some(b't') => Value::Bool(true),
        Some(b'f') => Value::Bool(false),
        Some(b'"') => Value::Text(string(text, "a string")?.into()),
        Some(b'{') => Value::Json(text.into()),
        Some(b'[') => {
            open_array(raw, None, open)?;
            return Ok(None);
        }
        _ => number::to_value(text),
    }))
}

/// `io.debezium.data.Bits`: bytes holding bit `i` of the value in bit `i % 8` of byte
/// `i / 8` (little-endian), as the bit string a `bit(n)` column reads, most significant
/// first: `length` bits when the schema gives a length (Debezium's `2^31 - 1` for an
/// unbounded `bit varying` gives none), else up to the highest bit set.
pub fn bit_string(bytes: &[u8], length: Option<i64>) -> Result<String, Malformed> {
    let highest = bytes
        .iter()
        .enumerate()
        .rev()
        .find(|(_, b)| **b != 0)
        .map_or(0, |(i, b)| 8 * i as u64 + u64::from(8 - b.leading_zeros()));
    let width = match length {
        Some(n) if n == i64::from(i32::MAX) => highest,
        Some(n) if n < 0 => {
            return Err(Malformed::Invalid(format!(
                "its schema's `length` parameter is {n}"
            )))
        }
        Some(n) => n.unsigned_abs(),
        None => highest,
    };
    if width > MAX_PADDED_BITS && width > 8 * bytes.len() as u64 {
        return Err(Malformed::Invalid(format!(
            "its schema's `length` of {width} bits is more than the {MAX_PADDED_BITS} this \
             processor pads a bit string to"
        )));
    }
    if highest > width {
        return Err(Malformed::Invalid(format!(
            "it has bit {} set, past its length of {width} bits",
            highest - 1
        )));
    }
    Ok((0..width)
        .rev()
        .map(|i| {
            let byte = bytes.get((i / 8) as usize).copied().unwrap_or(0);
            if byte >> (i % 8) & 1 == 1 {
                '1'
            } else {
                '0'
            }
        })
        .collect())
}

fn wrong(expected: &'static str, text: &str) -> Malformed {
    Malformed::WrongType {
        expected,
        found: found(text),
    }
}

/// What a JSON value is, for an error: "the string \"abc\"", "an object", "the number 1".
fn found(text: &str) -> String {
    match text.as_bytes().first() {
        Some(b'"') => format!("the string {}", excerpt(text)),
        Some(b'{') => "an object".into(),
        Some(b'[') => "an array".into(),
        Some(b't' | b'f') => excerpt(text),
        _ => format!("the number {}", excerpt(text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(json: &str) -> Schema {
        Schema::parse(json).unwrap()
    }

    fn with(json: &str, value: &str) -> Result<Value, Malformed> {
        let raw: &RawValue = serde_json::from_str(value).unwrap();
        decode(raw, Some(&schema(json)))
    }

    fn without(value: &str) -> Result<Value, Malformed> {
        let raw: &RawValue = serde_json::from_str(value).unwrap();
        decode(raw, None)
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    fn numeric(s: &str) -> Value {
        Value::Numeric(s.into())
    }

    const DECIMAL: &str = r#"{"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal",
        "parameters": {"scale": "2", "connect.decimal.precision": "10"}}"#;

    #[test]
    fn decimals_are_exact_text() {
        // 0x3039 = 12345; 0xcfc7 = -12345; 0x00 = 0.
        assert_eq!(with(DECIMAL, r#""MDk=""#), Ok(numeric("123.45")));
        assert_eq!(with(DECIMAL, r#""z8c=""#), Ok(numeric("-123.45")));
        assert_eq!(with(DECIMAL, r#""AA==""#), Ok(numeric("0.00")));
        let scale_zero = DECIMAL.replace(r#""scale": "2""#, r#""scale": "0""#);
        assert_eq!(with(&scale_zero, r#""z8c=""#), Ok(numeric("-12345")));
        // 2^127 - 1 as 16 bytes: 0x7fff…ff.
        assert_eq!(
            with(&scale_zero, r#""f////////////////////w==""#),
            Ok(numeric("170141183460469231731687303715884105727"))
        );
        // The converter's `decimal.format=NUMERIC` writes the number itself.
        assert_eq!(with(DECIMAL, "-123.45"), Ok(numeric("-123.45")));
        assert_eq!(with(DECIMAL, "null"), Ok(Value::Null));
        assert!(matches!(
            with(DECIMAL, r#""MDk""#),
            Err(Malformed::Base64(_))
        ));
        assert!(matches!(
            with(DECIMAL, r#""!!!!""#),
            Err(Malformed::Base64(_))
        ));
        assert_eq!(
            with(DECIMAL, r#""""#),
            Err(Malformed::Invalid("the unscaled value has no bytes".into()))
        );
        assert!(matches!(
            with(DECIMAL, "true"),
            Err(Malformed::WrongType { .. })
        ));
        let no_scale = r#"{"type": "bytes", "name": "org.apache.kafka.connect.data.Decimal"}"#;
        assert_eq!(
            with(no_scale, r#""MDk=""#),
            Err(Malformed::Invalid(
                "its decimal schema has no `scale` parameter".into()
            ))
        );
    }

    #[test]
    fn variable_scale_decimals_carry_their_scale() {
        let vsd = r#"{"type": "struct", "name": "io.debezium.data.VariableScaleDecimal",
            "fields": [{"type": "int32", "field": "scale"}, {"type": "bytes", "field": "value"}]}"#;
        assert_eq!(
            with(vsd, r#"{"scale": 3, "value": "MDk="}"#),
            Ok(numeric("12.345"))
        );
        assert_eq!(
            with(vsd, r#"{"scale": 0, "value": "z8c="}"#),
            Ok(numeric("-12345"))
        );
        assert!(matches!(
            with(vsd, r#"{"value": "MDk="}"#),
            Err(Malformed::WrongType { .. })
        ));
        assert!(matches!(
            with(vsd, r#"{"scale": 9999999999, "value": "MDk="}"#),
            Err(Malformed::OutOfRange { .. })
        ));
        assert!(matches!(
            with(vsd, r#""MDk=""#),
            Err(Malformed::WrongType { .. })
        ));
    }

    #[test]
    fn temporal_types_become_local_text() {
        let named = |name: &str, kind: &str| format!(r#"{{"type": "{kind}", "name": "{name}"}}"#);
        for (name, kind, value, expected) in [
            ("io.debezium.time.Date", "int32", "17760", "2018-08-17"),
            (
                "org.apache.kafka.connect.data.Date",
                "int32",
                "-1",
                "1969-12-31",
            ),
            ("io.debezium.time.Time", "int32", "45296789", "12:34:56.789"),
            (
                "org.apache.kafka.connect.data.Time",
                "int32",
                "45296000",
                "12:34:56",
            ),
            (
                "io.debezium.time.MicroTime",
                "int64",
                "45296000001",
                "12:34:56.000001",
            ),
            (
                "io.debezium.time.NanoTime",
                "int64",
                "45296123456789",
                "12:34:56.123456789",
            ),
            (
                "io.debezium.time.Timestamp",
                "int64",
                "1529507596945",
                "2018-06-20T15:13:16.945",
            ),
            (
                "org.apache.kafka.connect.data.Timestamp",
                "int64",
                "-1",
                "1969-12-31T23:59:59.999",
            ),
            (
                "io.debezium.time.MicroTimestamp",
                "int64",
                "1529507596945104",
                "2018-06-20T15:13:16.945104",
            ),
            (
                "io.debezium.time.MicroTimestamp",
                "int64",
                "-2208988800000001",
                "1899-12-31T23:59:59.999999",
            ),
            (
                "io.debezium.time.NanoTimestamp",
                "int64",
                "1529507596945104001",
                "2018-06-20T15:13:16.945104001",
            ),
            (
                "io.debezium.time.ZonedTimestamp",
                "string",
                r#""2018-06-20T13:13:16.945104Z""#,
                "2018-06-20T13:13:16.945104Z",
            ),
            (
                "io.debezium.time.ZonedTime",
                "string",
                r#""13:13:16Z""#,
                "13:13:16Z",
            ),
            (
                "io.debezium.time.MicroDuration",
                "int64",
                "-1500000",
                "-1500000 microseconds",
            ),
        ] {
            assert_eq!(
                with(&named(name, kind), value),
                Ok(text(expected)),
                "{name} {value}"
            );
        }
        let date = named("io.debezium.time.Date", "int32");
        assert!(matches!(
            with(&date, "1.5"),
            Err(Malformed::WrongType { .. })
        ));
        assert!(matches!(
            with(&date, r#""2018-01-01""#),
            Err(Malformed::WrongType { .. })
        ));
        let micros = named("io.debezium.time.MicroTimestamp", "int64");
        assert!(matches!(
            with(&micros, "9223372036854775808"),
            Err(Malformed::OutOfRange { .. })
        ));
    }

    #[test]
    fn integers_are_checked_against_their_width() {
        let int = |kind: &str| format!(r#"{{"type": "{kind}"}}"#);
        assert_eq!(with(&int("int8"), "-128"), Ok(Value::Int(-128)));
        assert_eq!(
            with(&int("int8"), "128"),
            Err(Malformed::OutOfRange {
                value: "128".into(),
                kind: "int8"
            })
        );
        assert!(with(&int("int16"), "32768").is_err());
        assert!(with(&int("int32"), "-2147483649").is_err());
        assert_eq!(
            with(&int("int64"), "-9223372036854775808"),
            Ok(Value::Int(i64::MIN))
        );
        assert!(with(&int("int64"), "9223372036854775808").is_err());
        assert!(matches!(
            with(&int("int32"), "1.0"),
            Err(Malformed::WrongType { .. })
        ));
        assert!(matches!(
            with(&int("int32"), r#""1""#),
            Err(Malformed::WrongType { .. })
        ));
        // Debezium's Year is an int32 with a name: decoded by its type.
        assert_eq!(
            with(
                r#"{"type": "int32", "name": "io.debezium.time.Year"}"#,
                "2024"
            ),
            Ok(Value::Int(2024))
        );
    }

    #[test]
    fn floats_booleans_strings_and_bytes() {
        let f = r#"{"type": "float64"}"#;
        assert_eq!(with(f, "1.5"), Ok(Value::Float(1.5)));
        assert_eq!(with(f, "3"), Ok(Value::Int(3)));
        assert_eq!(
            with(f, "0.30000000000000004"),
            Ok(numeric("0.30000000000000004"))
        );
        assert!(matches!(with(f, r#""NaN""#), Ok(Value::Float(x)) if x.is_nan()));
        assert_eq!(
            with(f, r#""-Infinity""#),
            Ok(Value::Float(f64::NEG_INFINITY))
        );
        assert!(matches!(
            with(f, r#""1.5""#),
            Err(Malformed::WrongType { .. })
        ));
        let b = r#"{"type": "boolean"}"#;
        assert_eq!(with(b, "false"), Ok(Value::Bool(false)));
        assert!(with(b, "0").is_err());
        let s = r#"{"type": "string", "name": "io.debezium.data.Uuid"}"#;
        assert_eq!(
            with(s, r#""a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11""#),
            Ok(text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"))
        );
        assert_eq!(
            with(r#"{"type": "string"}"#, r#""\"é\u00e9\"""#),
            Ok(text("\"éé\""))
        );
        assert!(with(s, "12").is_err());
        let by = r#"{"type": "bytes"}"#;
        assert_eq!(
            with(by, r#""AAEC/w==""#),
            Ok(Value::Bytes(vec![0, 1, 2, 255].into()))
        );
        assert!(matches!(
            with(by, r#""AAEC/w=""#),
            Err(Malformed::Base64(_))
        ));
        assert!(matches!(
            with(by, "[0, 1]"),
            Err(Malformed::WrongType { .. })
        ));
    }

    #[test]
    fn json_enum_and_bits() {
        let json = r#"{"type": "string", "name": "io.debezium.data.Json"}"#;
        assert_eq!(
            with(json, r#""{\"a\": [1, 2]}""#),
            Ok(Value::Json(r#"{"a": [1, 2]}"#.into()))
        );
        let set = r#"{"type": "string", "name": "io.debezium.data.EnumSet",
            "parameters": {"allowed": "a,b,c"}}"#;
        assert_eq!(with(set, r#""a,c""#), Ok(text("a,c")));
        let bits = |length: &str| {
            format!(
                r#"{{"type": "bytes", "name": "io.debezium.data.Bits",
                    "parameters": {{"length": "{length}"}}}}"#
            )
        };
        // B'1011' is 11: one byte, 0x0b.
        assert_eq!(with(&bits("4"), r#""Cw==""#), Ok(text("1011")));
        assert_eq!(with(&bits("8"), r#""Cw==""#), Ok(text("00001011")));
        // Little-endian: 0x01 0x02 is 0x0201.
        assert_eq!(with(&bits("10"), r#""AQI=""#), Ok(text("1000000001")));
        // Debezium sends only the bytes the bits set need.
        assert_eq!(with(&bits("12"), r#""AQ==""#), Ok(text("000000000001")));
        assert_eq!(with(&bits("2147483647"), r#""Cw==""#), Ok(text("1011")));
        assert_eq!(with(&bits("3"), r#""""#), Ok(text("000")));
        assert!(with(&bits("3"), r#""Cw==""#)
            .unwrap_err()
            .to_string()
            .contains("bit 3 set, past its length of 3 bits"));
        assert!(with(&bits("1000000000"), r#""Cw==""#)
            .unwrap_err()
            .to_string()
            .contains("more than the 4096"));
        assert!(matches!(
            with(&bits("4"), r#""C""#),
            Err(Malformed::Base64(_))
        ));
    }

    #[test]
    fn arrays_structs_and_maps() {
        let ints = r#"{"type": "array", "items": {"type": "int32"}}"#;
        assert_eq!(
            with(ints, "[1, null, -3]"),
            Ok(Value::Array(
                vec![Value::Int(1), Value::Null, Value::Int(-3)].into()
            ))
        );
        assert!(with(ints, "[1, 2147483648]").is_err());
        assert!(with(ints, r#"{"a": 1}"#).is_err());
        let dates = r#"{"type": "array", "items": {"type": "array",
            "items": {"type": "int32", "name": "io.debezium.time.Date"}}}"#;
        assert_eq!(
            with(dates, "[[0], []]"),
            Ok(Value::Array(
                vec![
                    Value::Array(vec![text("1970-01-01")].into()),
                    Value::Array(vec![].into())
                ]
                .into()
            ))
        );
        let point = r#"{"type": "struct", "name": "io.debezium.data.geometry.Point",
            "fields": [{"type": "float64", "field": "x"}, {"type": "float64", "field": "y"}]}"#;
        assert_eq!(
            with(point, r#"{"x": 1.5, "y": 2}"#),
            Ok(Value::Json(r#"{"x": 1.5, "y": 2}"#.into()))
        );
        assert!(with(point, "[1.5, 2]").is_err());
        let map = r#"{"type": "map", "keys": {"type": "string"}, "values": {"type": "string"}}"#;
        assert_eq!(
            with(map, r#"{"k": "v"}"#),
            Ok(Value::Json(r#"{"k": "v"}"#.into()))
        );
        assert!(with(r#"{"type": "decimal"}"#, "1")
            .unwrap_err()
            .to_string()
            .contains("type `decimal`"));
    }

    #[test]
    fn without_a_schema_values_pass_as_plain_json() {
        assert_eq!(without("null"), Ok(Value::Null));
        assert_eq!(without("true"), Ok(Value::Bool(true)));
        assert_eq!(without("-7"), Ok(Value::Int(-7)));
        assert_eq!(without("1.25"), Ok(Value::Float(1.25)));
        assert_eq!(
            without("123456789012345678901234567890"),
            Ok(numeric("123456789012345678901234567890"))
        );
        assert_eq!(without(r#""MDk=""#), Ok(text("MDk=")));
        assert_eq!(
            without(r#"{"a": [1]}"#),
            Ok(Value::Json(r#"{"a": [1]}"#.into()))
        );
        assert_eq!(
            without(r#"[1, "two", [3.5], {"b": null}]"#),
            Ok(Value::Array(
                vec![
                    Value::Int(1),
                    text("two"),
                    Value::Array(vec![Value::Float(3.5)].into()),
                    Value::Json(r#"{"b": null}"#.into()),
                ]
                .into()
            ))
        );
    }

    #[test]
    fn deep_arrays_do_not_recurse() {
        // Far deeper than serde_json parses in one go, converted level by level on a
        // stack a tenth of the host's.
        let depth = 100;
        let nested = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let value = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || {
                let raw: &RawValue = serde_json::from_str(&nested).unwrap();
                decode(raw, None).map(|v| matches!(v, Value::Array(_)))
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(value, Ok(true));
    }
}

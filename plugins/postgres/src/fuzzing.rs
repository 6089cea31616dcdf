//! For the `postgres_convert` fuzz target and the crate's own property test: conversion
//! of any [`Value`] for every kind of column `convert` knows, checked against what it
//! must do. Not part of the plugin's interface.
//!
//! What is checked, beyond never panicking: a number that is taken is taken exactly
//! (an integer column gets the integer the value is, never a rounded or saturated one;
//! a float column gets the nearest float, never infinity or zero for a finite, non-zero
//! number; a `numeric` column gets the value's own digits), and a value is refused with
//! a reason. The checks are written independently of `convert` and `number`: decimal
//! text is compared by moving its point by hand.

use golconde_plugin_api::Value;

use crate::{
    convert::{convert, Cell},
    schema::Kind,
};

/// The column types checked, as PostgreSQL names them.
pub const COLUMN_TYPES: &[&str] = &[
    "smallint",
    "integer",
    "bigint",
    "real",
    "double precision",
    "numeric",
    "boolean",
    "text",
    "character varying(3)",
    "jsonb",
    "bytea",
    "timestamp",
    "timestamptz",
    "uuid",
    "smallint[]",
    "bigint[]",
    "real[]",
    "double precision[]",
    "numeric[]",
    "text[]",
    "jsonb[]",
];

fn kind(column_type: &str) -> Kind {
    if let Some(element) = column_type.strip_suffix("[]") {
        return Kind::Array(Box::new(kind(element)));
    }
    let int = |min: i64, max: i64| Kind::Int { min, max };
    match column_type {
        "smallint" => int(i16::MIN.into(), i16::MAX.into()),
        "integer" => int(i32::MIN.into(), i32::MAX.into()),
        "bigint" => int(i64::MIN, i64::MAX),
        "real" => Kind::Float { single: true },
        "double precision" => Kind::Float { single: false },
        "numeric" => Kind::Numeric,
        "boolean" => Kind::Bool,
        "text" => Kind::Text { max: None },
        "character varying(3)" => Kind::Text { max: Some(3) },
        "jsonb" => Kind::Json,
        "bytea" => Kind::Bytea,
        "timestamp" => Kind::Timestamp { tz: false },
        "timestamptz" => Kind::Timestamp { tz: true },
        _ => Kind::Other,
    }
}

/// Converts `value` for a column of `column_type` (one of [`COLUMN_TYPES`]) and panics
/// if what comes out is not what must.
pub fn check(column_type: &str, value: &Value) {
    let kind = kind(column_type);
    let cell = match convert(&kind, value) {
        Ok(cell) => cell,
        Err(reason) => {
            assert!(
                !reason.is_empty(),
                "{column_type} refused {value:?} without a reason"
            );
            return;
        }
    };
    let taken = |what: &str| format!("{column_type} took {value:?} as {what}");
    match (&kind, &cell) {
        (_, Cell::Null) => assert_eq!(*value, Value::Null, "{}", taken("NULL")),
        (Kind::Int { min, max }, Cell::Int(i)) => {
            assert!(min <= i && i <= max, "{}", taken(&i.to_string()));
            let exact = match value {
                Value::Int(v) => v == i,
                Value::Float(f) => f.fract() == 0.0 && *f as i128 == *i as i128,
                Value::Numeric(t) | Value::Text(t) => decimal_is(t, *i),
                _ => false,
            };
            assert!(exact, "{}", taken(&i.to_string()));
        }
        (Kind::Float { single }, Cell::Float(g)) => {
            let nearest = |f: f64| if *single { f as f32 as f64 } else { f };
            let expected = match value {
                Value::Int(v) if *single => Some(*v as f32 as f64),
                Value::Int(v) => Some(*v as f64),
                Value::Float(f) => Some(nearest(*f)),
                Value::Numeric(t) | Value::Text(t) => {
                    let t = t.trim();
                    let parsed = if *single {
                        t.parse::<f32>().map(f64::from)
                    } else {
                        t.parse::<f64>()
                    };
                    let parsed = parsed.expect("taken text parses");
                    let word = t.trim_start_matches(['+', '-']).to_ascii_lowercase();
                    let words = ["inf", "infinity", "nan"].contains(&word.as_str());
                    let mantissa = t.split(['e', 'E']).next().unwrap_or_default();
                    let nonzero = mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b));
                    assert!(
                        words || (parsed.is_finite() && (parsed != 0.0 || !nonzero)),
                        "{}",
                        taken(&g.to_string())
                    );
                    Some(parsed)
                }
                _ => None,
            };
            let same =
                expected.is_some_and(|e| e.to_bits() == g.to_bits() || e.is_nan() && g.is_nan());
            assert!(same, "{}", taken(&g.to_string()));
            if let Value::Float(f) = value {
                assert!(
                    g.is_finite() == f.is_finite() && (*g == 0.0) == (*f == 0.0),
                    "{}",
                    taken(&g.to_string())
                );
            }
        }
        (Kind::Numeric, Cell::Text(s)) => {
            let exact = match value {
                Value::Int(v) => *s == v.to_string(),
                Value::Float(f) => s
                    .parse::<f64>()
                    .is_ok_and(|p| p == *f || p.is_nan() && f.is_nan()),
                Value::Numeric(t) | Value::Text(t) => s == t.trim(),
                _ => false,
            };
            assert!(exact, "{}", taken(s));
        }
        // Text the processor did not give as JSON must come out as valid JSON (its syntax:
        // serde_json would refuse a number past `f64` that PostgreSQL takes).
        (Kind::Json, Cell::Text(s)) if !has_raw_json(value) => {
            assert!(
                serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok(),
                "{}",
                taken(s)
            );
        }
        (Kind::Text { max: Some(max) }, Cell::Text(s)) => {
            assert!(
                s.trim_end_matches(' ').chars().count() <= *max,
                "{}",
                taken(s)
            );
        }
        (Kind::Array(element), Cell::Text(_)) => {
            // Every element on its own must be taken as well.
            let mut items = vec![value];
            while let Some(item) = items.pop() {
                match item {
                    Value::Array(inner) => items.extend(inner.iter()),
                    element_value => assert!(
                        convert(element, element_value).is_ok(),
                        "{}",
                        taken("an array with an element its column refuses")
                    ),
                }
            }
        }
        _ => {}
    }
    if let Cell::Text(s) = &cell {
        assert!(!s.contains('\0'), "{}", taken(s));
    }
}

/// Whether `value` holds text a processor gave as JSON or as a number, which is passed on
/// as it is (the server judges it).
fn has_raw_json(value: &Value) -> bool {
    match value {
        Value::Json(_) | Value::Numeric(_) => true,
        Value::Array(items) => items.iter().any(has_raw_json),
        _ => false,
    }
}

/// Whether decimal `text` (`-1.50e2`) is exactly `i`: its digits, the point moved by the
/// exponent, must be those of `i` followed by nothing but zeros.
fn decimal_is(text: &str, i: i64) -> bool {
    let text = text.trim();
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i64>().ok()),
        None => (text, Some(0)),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    if digits.bytes().all(|b| b == b'0') {
        return i == 0;
    }
    // Leading zeros say nothing (`0007` is 7, `0.07e2` is 7), however many there are:
    // the point moves left with each one dropped.
    let lead = digits.len() - digits.trim_start_matches('0').len();
    let digits = &digits[lead..];
    // The point sits after `point` digits; beyond 40 the value has too many digits for
    // an i64, and an exponent that does not parse is far beyond that.
    let Some(point) = exponent.map(|e| whole.len() as i64 - lead as i64 + e) else {
        return false;
    };
    if !(0..=40).contains(&point) {
        return false;
    }
    let point = point as usize;
    let padded = format!("{digits:0<point$}");
    let (integer, rest) = padded.split_at(point);
    if rest.bytes().any(|b| b != b'0') {
        return false;
    }
    let integer = integer.trim_start_matches('0');
    integer == i.unsigned_abs().to_string() && (negative == (i < 0))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_decimal_oracle_moves_the_point() {
        assert!(decimal_is("15", 15));
        assert!(decimal_is(" 1.5e1 ", 15));
        assert!(decimal_is("1500e-2", 15));
        assert!(decimal_is("-0.0", 0));
        assert!(decimal_is("-9.223372036854775808e18", i64::MIN));
        assert!(!decimal_is("1.5", 1));
        assert!(!decimal_is("15", -15));
        assert!(!decimal_is("1e19", i64::MAX));
        assert!(!decimal_is("1e99999999999999999999", 0));
        // However many leading zeros, and with the point among them.
        let zeros = "0".repeat(200);
        assert!(decimal_is(&format!("  {zeros}1"), 1));
        assert!(decimal_is(&format!("{zeros}.{zeros}1e201"), 1));
        assert!(!decimal_is(&format!("{zeros}1.5"), 1));
    }

    /// Numbers as text the way they come: JSON numbers, edges, junk.
    fn number_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[+-]?[0-9]{0,25}(\\.[0-9]{0,25})?([eE][+-]?[0-9]{1,4})?",
            any::<f64>().prop_map(|f| format!("{f:e}")),
            any::<i64>().prop_map(|i| i.to_string()),
            "[ 0-9.eE+-]{0,8}|inf|-Infinity|NaN|1e400|1e-400|9223372036854775808",
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            prop_oneof![
                Just(9.25e18),
                Just(-9.25e18),
                Just(1e39),
                Just(1e-46),
                Just(-0.0)
            ]
            .prop_map(Value::Float),
            number_text().prop_map(|t| Value::Numeric(t.into())),
            number_text().prop_map(|t| Value::Text(t.into())),
            ".{0,6}".prop_map(|t| Value::Text(t.into())),
            proptest::collection::vec(any::<u8>(), 0..6).prop_map(|b| Value::Bytes(b.into())),
            Just(Value::Json("{\"a\": 1}".into())),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            proptest::collection::vec(inner, 0..3).prop_map(|items| Value::Array(items.into()))
        })
    }

    /// Numbers of every representation, most of them near an edge.
    fn number() -> impl Strategy<Value = Value> {
        let edges = prop_oneof![
            Just(9.25e18),
            Just(-9.25e18),
            Just(i64::MAX as f64),
            Just(3e9),
            Just(40000.0),
            Just(1e39),
            Just(3.5e38),
            Just(1e-46),
            Just(1e-320),
            Just(-0.0),
            Just(f64::INFINITY),
        ];
        prop_oneof![
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            edges.prop_map(Value::Float),
            number_text().prop_map(|t| Value::Numeric(t.into())),
            number_text().prop_map(|t| Value::Text(t.into())),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        #[test]
        fn every_number_converts_exactly_or_is_refused(
            column in proptest::sample::select(&COLUMN_TYPES[..6]),
            value in number(),
        ) {
            check(column, &value);
        }
    }

    proptest! {
        #[test]
        fn every_value_converts_exactly_or_is_refused(
            column in proptest::sample::select(COLUMN_TYPES),
            value in value(),
        ) {
            check(column, &value);
        }
    }
}

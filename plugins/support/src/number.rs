//! JSON number text to [`Value`]: the narrowest representation that keeps the number
//! exact. The processors share it, so that one number means the same whichever of them
//! read it.

use golconde_plugin_api::Value;

/// The most significant decimal digits an `f64` carries through a decimal → binary →
/// decimal round trip (`DBL_DIG`).
const F64_DIGITS: usize = 15;

/// `text` is a JSON number as written in the input (serde_json has validated its syntax):
/// an `Int` when it is an integer that fits 64 bits, a `Float` when it has at most 15
/// significant digits and neither overflows nor underflows, its exact text otherwise.
pub fn to_value(text: &str) -> Value {
    if !text.contains(['.', 'e', 'E']) {
        return match text.parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Numeric(text.into()),
        };
    }
    let digits = significant_digits(text);
    if digits <= F64_DIGITS {
        if let Ok(f) = text.parse::<f64>() {
            if f.is_normal() || (f == 0.0 && digits == 0) {
                return Value::Float(f);
            }
        }
    }
    Value::Numeric(text.into())
}

/// The digits of the mantissa from the first to the last non-zero one, counted in place:
/// the text may be megabytes of zeros.
fn significant_digits(text: &str) -> usize {
    let mantissa = text.split(['e', 'E']).next().unwrap_or("");
    let mut span: Option<(usize, usize)> = None;
    for (i, digit) in mantissa.bytes().filter(u8::is_ascii_digit).enumerate() {
        if digit != b'0' {
            span = Some(span.map_or((i, i), |(first, _)| (first, i)));
        }
    }
    span.map_or(0, |(first, last)| last - first + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_that_fit_are_ints_and_the_rest_keep_their_text() {
        assert_eq!(to_value("0"), Value::Int(0));
        assert_eq!(to_value("-7"), Value::Int(-7));
        assert_eq!(to_value("9223372036854775807"), Value::Int(i64::MAX));
        assert_eq!(to_value("-9223372036854775808"), Value::Int(i64::MIN));
        assert_eq!(
            to_value("9223372036854775808"),
            Value::Numeric("9223372036854775808".into())
        );
        assert_eq!(
            to_value("18446744073709551616000"),
            Value::Numeric("18446744073709551616000".into())
        );
    }

    #[test]
    fn decimals_an_f64_holds_are_floats() {
        assert_eq!(to_value("1.5"), Value::Float(1.5));
        assert_eq!(to_value("-0.25"), Value::Float(-0.25));
        assert_eq!(to_value("0.1"), Value::Float(0.1));
        assert_eq!(to_value("1e3"), Value::Float(1000.0));
        assert_eq!(to_value("1.50"), Value::Float(1.5));
        assert_eq!(to_value("0.0"), Value::Float(0.0));
        assert_eq!(
            to_value("123456789012345.0"),
            Value::Float(123456789012345.0)
        );
    }

    #[test]
    fn all_seventeen_digits_of_a_float64_keep_their_text() {
        // A float64 written with all 17 digits Java gives it.
        assert_eq!(
            to_value("0.30000000000000004"),
            Value::Numeric("0.30000000000000004".into())
        );
    }

    #[test]
    fn decimals_an_f64_would_round_keep_their_text() {
        for text in [
            "3.14159265358979323846264338327950288",
            "1234567890123456.7",
            "0.1234567890123456",
            "1e400",
            "-1e400",
            "1e-400",
            "-1e-400",
            "-2.5E-330",
            // Subnormal: fewer bits than 15 digits need.
            "1e-310",
            // Exponents far past any f64, which must not be expanded.
            "1e999999999",
            "-1e-999999999",
            "1.5e99999999999999999999999",
        ] {
            assert_eq!(to_value(text), Value::Numeric(text.into()), "{text}");
        }
        let tiny = format!("0.{}1", "0".repeat(1_000_000));
        assert_eq!(to_value(&tiny), Value::Numeric(tiny.clone().into()));
        let huge = format!("1{}", "0".repeat(1_000_000));
        assert_eq!(to_value(&huge), Value::Numeric(huge.clone().into()));
    }

    #[test]
    fn zeros_stay_zero_and_keep_their_sign() {
        assert_eq!(to_value("-0"), Value::Int(0));
        for (text, negative) in [
            ("0.0", false),
            ("-0.0", true),
            ("0e999999999", false),
            ("-0E-5", true),
        ] {
            match to_value(text) {
                Value::Float(f) => {
                    assert_eq!(f, 0.0, "{text}");
                    assert_eq!(f.is_sign_negative(), negative, "{text}");
                }
                other => panic!("{text} became {other:?}"),
            }
        }
    }

    #[test]
    fn trailing_zeros_are_not_significant() {
        let text = format!("1{}.0", "0".repeat(300));
        assert_eq!(to_value(&text), Value::Float(1e300));
        assert_eq!(to_value("100e-2"), Value::Float(1.0));
        assert_eq!(significant_digits("-00012.3400e7"), 4);
        assert_eq!(significant_digits("0.000"), 0);
    }
}

//! Numbers written as decimal text, read for a column exactly or not at all.
//!
//! A message's number that does not fit its column is the message's fault: it is refused
//! with a reason, never stored as something else. Rust's own parsers are close to that
//! but not quite: `"1e400".parse::<f64>()` is infinity and `"1e-400"` zero, where
//! PostgreSQL says "out of range"; and `"1.0"` or `"1e3"` are integers that
//! `parse::<i64>` refuses. This module keeps PostgreSQL's judgement: an integer column
//! takes a decimal whose value is an integer in range, a floating-point column takes the
//! nearest float unless that overflows to infinity or underflows to zero.

/// Why a number does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotANumber,
    NotAnInteger,
    /// Too large, or for a float also too close to zero.
    OutOfRange,
}

/// A decimal split into its parts: `-12.50e3` is negative, integer digits `12`,
/// fraction digits `50`, exponent 3.
struct Decimal<'t> {
    negative: bool,
    integer: &'t str,
    fraction: &'t str,
    /// Saturated far beyond any exponent that can matter.
    exponent: i64,
}

/// Reads `[+-]digits[.digits][(e|E)[+-]digits]`, with at least one digit before the
/// exponent and surrounding white space allowed; `None` for anything else.
fn decimal(text: &str) -> Option<Decimal<'_>> {
    let text = text.trim();
    let (negative, rest) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    let (integer, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if integer.len() + fraction.len() == 0 || !all_digits(integer) || !all_digits(fraction) {
        return None;
    }
    let exponent = match exponent {
        None => 0,
        Some(e) => {
            let (sign, digits) = match e.as_bytes().first()? {
                b'-' => (-1, &e[1..]),
                b'+' => (1, &e[1..]),
                _ => (1, e),
            };
            if digits.is_empty() || !all_digits(digits) {
                return None;
            }
            // Past a billion the exact value no longer matters, only its direction.
            let magnitude = digits.bytes().fold(0i64, |n, d| {
                (n * 10 + i64::from(d - b'0')).min(1_000_000_000)
            });
            sign * magnitude
        }
    };
    Some(Decimal {
        negative,
        integer,
        fraction,
        exponent,
    })
}

/// `text` as an integer: its value must be one (`7`, `7.0`, `7e0`, `70e-1`) and fit an
/// `i64`; the column's narrower range is the caller's to check.
pub fn integer(text: &str) -> Result<i64, Refusal> {
    let d = decimal(text).ok_or(Refusal::NotAnInteger)?;
    // The significant digits, and the power of ten they are multiplied by.
    let digits = format!("{}{}", d.integer, d.fraction);
    let digits = digits.trim_start_matches('0');
    let significant = digits.trim_end_matches('0');
    if significant.is_empty() {
        return Ok(0);
    }
    let trailing_zeros = (digits.len() - significant.len()) as i64;
    let scale = d.exponent - d.fraction.len() as i64 + trailing_zeros;
    if scale < 0 {
        return Err(Refusal::NotAnInteger);
    }
    // i64 has 19 digits; anything longer is out of range whatever its digits.
    if significant.len() as i64 + scale > 19 {
        return Err(Refusal::OutOfRange);
    }
    let mut value: i128 = significant.parse().expect("at most 19 digits");
    value *= 10i128.pow(scale as u32);
    if d.negative {
        value = -value;
    }
    i64::try_from(value).map_err(|_| Refusal::OutOfRange)
}

/// `text` as a `double precision` (`single`: a `real`), rounded to the nearest; the
/// words PostgreSQL takes (`Infinity`, `-inf`, `NaN`) are those values. A finite
/// number whose nearest float is infinite or zero is out of range, as on the server.
pub fn float(text: &str, single: bool) -> Result<f64, Refusal> {
    let text = text.trim();
    let word = text.trim_start_matches(['+', '-']).to_ascii_lowercase();
    if matches!(word.as_str(), "inf" | "infinity" | "nan") {
        return text
            .parse::<f64>()
            .map(|f| if single { f as f32 as f64 } else { f })
            .map_err(|_| Refusal::NotANumber);
    }
    let d = decimal(text).ok_or(Refusal::NotANumber)?;
    // Parsing straight to the width of the column rounds once, not twice.
    let value = if single {
        text.parse::<f32>().map(f64::from)
    } else {
        text.parse::<f64>()
    }
    .map_err(|_| Refusal::NotANumber)?;
    let nonzero = d
        .integer
        .bytes()
        .chain(d.fraction.bytes())
        .any(|b| b != b'0');
    if value.is_infinite() || (value == 0.0 && nonzero) {
        return Err(Refusal::OutOfRange);
    }
    Ok(value)
}

/// `f` as a `real`: the nearest `f32`, unless a finite `f` overflows or a non-zero one
/// underflows to zero.
pub fn single(f: f64) -> Result<f64, Refusal> {
    let narrowed = f as f32;
    if (narrowed.is_infinite() && f.is_finite()) || (narrowed == 0.0 && f != 0.0) {
        return Err(Refusal::OutOfRange);
    }
    Ok(f64::from(narrowed))
}

/// `f` as an integer, when it is one that fits an `i64`.
pub fn integral(f: f64) -> Result<i64, Refusal> {
    if !f.is_finite() || f.fract() != 0.0 {
        return Err(Refusal::NotAnInteger);
    }
    // 2^63 is exact as an f64; every integral f64 below it converts exactly.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if !(-LIMIT..LIMIT).contains(&f) {
        return Err(Refusal::OutOfRange);
    }
    Ok(f as i64)
}

/// Whether `text` is something a `numeric` column may be given: a decimal, or one of
/// the words PostgreSQL's `numeric` takes.
pub fn is_numeric(text: &str) -> bool {
    let word = text
        .trim()
        .trim_start_matches(['+', '-'])
        .to_ascii_lowercase();
    decimal(text).is_some() || matches!(word.as_str(), "inf" | "infinity" | "nan")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_read_exactly_in_any_decimal_spelling() {
        assert_eq!(integer("42"), Ok(42));
        assert_eq!(integer(" -7 "), Ok(-7));
        assert_eq!(integer("+7"), Ok(7));
        assert_eq!(integer("7.000"), Ok(7));
        assert_eq!(integer("1e3"), Ok(1000));
        assert_eq!(integer("1.5E1"), Ok(15));
        assert_eq!(integer("1500e-2"), Ok(15));
        assert_eq!(integer("-0.0"), Ok(0));
        assert_eq!(integer("0e999999999999999999"), Ok(0));
        assert_eq!(integer("9223372036854775807"), Ok(i64::MAX));
        assert_eq!(integer("-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(integer("-9.223372036854775808e18"), Ok(i64::MIN));
        assert_eq!(integer("9223372036854775808"), Err(Refusal::OutOfRange));
        assert_eq!(integer("1e19"), Err(Refusal::OutOfRange));
        assert_eq!(integer("1e999999999999999999"), Err(Refusal::OutOfRange));
        assert_eq!(
            integer("99999999999999999999999999"),
            Err(Refusal::OutOfRange)
        );
        assert_eq!(integer("1.5"), Err(Refusal::NotAnInteger));
        assert_eq!(integer("1e-1"), Err(Refusal::NotAnInteger));
        assert_eq!(
            integer("1.0000000000000000000001"),
            Err(Refusal::NotAnInteger)
        );
        for bad in [
            "", " ", "-", ".", "1e", "e1", "1..0", "0x10", "1_000", "inf", "NaN",
        ] {
            assert_eq!(integer(bad), Err(Refusal::NotAnInteger), "{bad:?}");
        }
    }

    #[test]
    fn floats_refuse_overflow_and_underflow_but_take_the_words() {
        assert_eq!(float("0.1", false), Ok(0.1));
        assert_eq!(float("0.1", true), Ok(f64::from(0.1f32)));
        assert_eq!(float("-0", false), Ok(-0.0));
        assert_eq!(float("0e-999", false), Ok(0.0));
        assert_eq!(float("1e-310", false), Ok(1e-310));
        assert_eq!(float("1e400", false), Err(Refusal::OutOfRange));
        assert_eq!(float("-1e400", false), Err(Refusal::OutOfRange));
        assert_eq!(float("1e-400", false), Err(Refusal::OutOfRange));
        assert_eq!(float("1e39", true), Err(Refusal::OutOfRange));
        assert_eq!(float("1e-46", true), Err(Refusal::OutOfRange));
        assert_eq!(float("Infinity", false), Ok(f64::INFINITY));
        assert_eq!(float("-inf", true), Ok(f64::NEG_INFINITY));
        assert!(float("NaN", false).unwrap().is_nan());
        assert_eq!(float("twelve", false), Err(Refusal::NotANumber));
        assert_eq!(float("1e", false), Err(Refusal::NotANumber));
    }

    #[test]
    fn floats_narrow_to_real_or_are_refused() {
        assert_eq!(single(1.5), Ok(1.5));
        assert_eq!(single(1e39), Err(Refusal::OutOfRange));
        assert_eq!(single(1e-50), Err(Refusal::OutOfRange));
        assert_eq!(single(f64::INFINITY), Ok(f64::INFINITY));
        assert!(single(f64::NAN).unwrap().is_nan());
        assert_eq!(integral(7.0), Ok(7));
        assert_eq!(integral(i64::MIN as f64), Ok(i64::MIN));
        assert_eq!(integral(2f64.powi(63)), Err(Refusal::OutOfRange));
        assert_eq!(integral(9.25e18), Err(Refusal::OutOfRange));
        assert_eq!(integral(7.5), Err(Refusal::NotAnInteger));
        assert_eq!(integral(f64::NAN), Err(Refusal::NotAnInteger));
    }
}

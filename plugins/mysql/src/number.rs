//! Numbers written as decimal text, read for a column exactly or not at all.
//!
//! A message's number that does not fit its column is the message's fault: it is refused
//! with a reason, never stored as something else. MySQL in strict mode refuses an integer
//! out of range, but rounds a DECIMAL given more fractional digits than its scale (with a
//! note, not an error) and turns `1e400` into an error only sometimes; so every number is
//! judged here: an integer column takes a decimal whose value is an integer in range
//! (`7`, `7.0`, `7e0`; up to 2⁶⁴-1 for BIGINT UNSIGNED), a DECIMAL one whose digits fit
//! its precision and scale exactly, a FLOAT or DOUBLE the nearest float unless that is
//! infinite or zero for a non-zero number. MySQL has no NaN and no infinity.
//!
//! Reading the decimal text, and the integer and float rules every column shares, are
//! `golconde_plugin_support::decimal`'s, as they are for `postgres`; a column's range
//! (the caller's), FLOAT and DOUBLE's refusal of what is not finite, and DECIMAL's exact
//! fit are MySQL's, here.

use golconde_plugin_support::decimal;
pub use golconde_plugin_support::decimal::{float, integer, integral, Refusal};

/// `f` for a DOUBLE (`single`: a FLOAT): finite, and for a FLOAT neither overflowing nor
/// underflowing to zero.
pub fn finite(f: f64, single: bool) -> Result<f64, Refusal> {
    if !f.is_finite() {
        return Err(Refusal::NotANumber);
    }
    if !single {
        return Ok(f);
    }
    let narrowed = f as f32;
    if narrowed.is_infinite() || (narrowed == 0.0 && f != 0.0) {
        return Err(Refusal::OutOfRange);
    }
    Ok(f64::from(narrowed))
}

/// `text` as the plain decimal text of a DECIMAL(`precision`, `scale`) value, when its
/// value fits exactly: at most `precision - scale` integer digits and `scale` fractional
/// ones (trailing zeros do not count). The reason otherwise.
pub fn fixed(text: &str, precision: u32, scale: u32) -> Result<String, String> {
    let d = decimal::parse(text).ok_or_else(|| "it is not a number".to_string())?;
    let (digits, power) = d.significant();
    if digits.is_empty() {
        return Ok("0".into());
    }
    let fraction_digits = (-power).max(0);
    if fraction_digits > i64::from(scale) {
        return Err(format!(
            "it has more than {scale} digits after the point, which the column would round"
        ));
    }
    let integer_digits = digits.len() as i64 + power;
    if integer_digits > i64::from(precision - scale) {
        return Err(format!(
            "it is out of range (at most {} digits before the point)",
            precision - scale
        ));
    }
    let mut plain = String::new();
    if d.negative {
        plain.push('-');
    }
    if power >= 0 {
        plain.push_str(&digits);
        plain.extend(std::iter::repeat_n('0', power as usize));
    } else {
        let point = digits.len() as i64 + power;
        if point <= 0 {
            plain.push_str("0.");
            plain.extend(std::iter::repeat_n('0', (-point) as usize));
            plain.push_str(&digits);
        } else {
            plain.push_str(&digits[..point as usize]);
            plain.push('.');
            plain.push_str(&digits[point as usize..]);
        }
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_refuse_what_mysql_cannot_hold() {
        assert_eq!(float("0.1", false), Ok(0.1));
        assert_eq!(float("1e400", false), Err(Refusal::OutOfRange));
        assert_eq!(float("1e39", true), Err(Refusal::OutOfRange));
        assert_eq!(float("NaN", false), Err(Refusal::NotANumber));
        assert_eq!(finite(f64::INFINITY, false), Err(Refusal::NotANumber));
        assert_eq!(finite(1e39, true), Err(Refusal::OutOfRange));
        assert_eq!(finite(1.5, true), Ok(1.5));
    }

    #[test]
    fn decimals_fit_exactly_or_are_refused() {
        assert_eq!(fixed("123.45", 5, 2), Ok("123.45".into()));
        assert_eq!(fixed("123.450", 5, 2), Ok("123.45".into()));
        assert_eq!(fixed("-0.5", 5, 2), Ok("-0.5".into()));
        assert_eq!(fixed("1.5e2", 5, 2), Ok("150".into()));
        assert_eq!(fixed("5e-3", 5, 3), Ok("0.005".into()));
        assert_eq!(fixed("0.000", 5, 2), Ok("0".into()));
        assert!(fixed("123.456", 5, 2).unwrap_err().contains("round"));
        assert!(fixed("1234", 5, 2).unwrap_err().contains("out of range"));
        assert!(fixed("12abc", 5, 2).is_err());
        assert_eq!(
            fixed("12345678901234567890123456789.123456789", 38, 9),
            Ok("12345678901234567890123456789.123456789".into())
        );
    }
}

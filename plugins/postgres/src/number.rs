//! Numbers written as decimal text, read for a column exactly or not at all, with
//! PostgreSQL's judgement: an integer column takes a decimal whose value is an integer
//! that fits an `i64`, a floating-point column the nearest float unless that overflows to
//! infinity or underflows to zero, and the words `Infinity` and `NaN` where PostgreSQL
//! takes them. Reading the decimal text is `golconde_plugin_support::decimal`'s, as it is
//! for `mysql`; the ranges and the words are PostgreSQL's, here.

use golconde_plugin_support::decimal;
pub use golconde_plugin_support::decimal::Refusal;

/// `text` as an integer: its value must be one (`7`, `7.0`, `7e0`, `70e-1`) and fit an
/// `i64`; the column's narrower range is the caller's to check.
pub fn integer(text: &str) -> Result<i64, Refusal> {
    i64::try_from(decimal::integer(text)?).map_err(|_| Refusal::OutOfRange)
}

/// `text` as a `double precision` (`single`: a `real`), rounded to the nearest; the
/// words PostgreSQL takes (`Infinity`, `-inf`, `NaN`) are those values. A finite
/// number whose nearest float is infinite or zero is out of range, as on the server.
pub fn float(text: &str, single: bool) -> Result<f64, Refusal> {
    let text = text.trim();
    if is_word(text) {
        return text
            .parse::<f64>()
            .map(|f| if single { f as f32 as f64 } else { f })
            .map_err(|_| Refusal::NotANumber);
    }
    decimal::float(text, single)
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
    i64::try_from(decimal::integral(f)?).map_err(|_| Refusal::OutOfRange)
}

/// Whether `text` is something a `numeric` column may be given: a decimal, or one of
/// the words PostgreSQL's `numeric` takes.
pub fn is_numeric(text: &str) -> bool {
    decimal::parse(text).is_some() || is_word(text.trim())
}

/// Whether `text` (trimmed) is one of the words for infinity and NaN PostgreSQL takes.
fn is_word(text: &str) -> bool {
    let word = text.trim_start_matches(['+', '-']).to_ascii_lowercase();
    matches!(word.as_str(), "inf" | "infinity" | "nan")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_fit_an_i64_or_are_out_of_range() {
        assert_eq!(integer(" -7 "), Ok(-7));
        assert_eq!(integer("9223372036854775807"), Ok(i64::MAX));
        assert_eq!(integer("-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(integer("-9.223372036854775808e18"), Ok(i64::MIN));
        assert_eq!(integer("9223372036854775808"), Err(Refusal::OutOfRange));
        assert_eq!(integer("-9223372036854775809"), Err(Refusal::OutOfRange));
        assert_eq!(integer("1e19"), Err(Refusal::OutOfRange));
        assert_eq!(integer("1e999999999999999999"), Err(Refusal::OutOfRange));
        assert_eq!(integer("1.5"), Err(Refusal::NotAnInteger));
        for bad in ["", "1e", "0x10", "inf", "NaN"] {
            assert_eq!(integer(bad), Err(Refusal::NotAnInteger), "{bad:?}");
        }
    }

    #[test]
    fn floats_refuse_overflow_and_underflow_but_take_the_words() {
        assert_eq!(float("0.1", false), Ok(0.1));
        assert_eq!(float("0.1", true), Ok(f64::from(0.1f32)));
        assert_eq!(float("-0", false), Ok(-0.0));
        assert_eq!(float("1e400", false), Err(Refusal::OutOfRange));
        assert_eq!(float("1e-400", false), Err(Refusal::OutOfRange));
        assert_eq!(float("1e39", true), Err(Refusal::OutOfRange));
        assert_eq!(float("Infinity", false), Ok(f64::INFINITY));
        assert_eq!(float(" -inf ", true), Ok(f64::NEG_INFINITY));
        assert!(float("NaN", false).unwrap().is_nan());
        assert_eq!(float("twelve", false), Err(Refusal::NotANumber));
        assert_eq!(float("1e", false), Err(Refusal::NotANumber));
        assert!(is_numeric(" -Infinity"));
        assert!(is_numeric("1.5e3"));
        assert!(!is_numeric("1.5.3"));
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
        assert_eq!(integral(1e30), Err(Refusal::OutOfRange));
        assert_eq!(integral(7.5), Err(Refusal::NotAnInteger));
        assert_eq!(integral(f64::NAN), Err(Refusal::NotAnInteger));
    }
}

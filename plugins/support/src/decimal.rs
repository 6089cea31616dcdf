//! Numbers written as decimal text, read exactly or not at all: the reading the database
//! plugins share, before each checks the value against its own column types.
//!
//! A message's number that does not fit its column is the message's fault: it is refused
//! with a reason, never stored as something else. Rust's own parsers are close to that
//! but not quite: `"1e400".parse::<f64>()` is infinity and `"1e-400"` zero, where a
//! database says "out of range"; and `"1.0"` or `"1e3"` are integers that `parse::<i64>`
//! refuses. Here an integer is any decimal whose value is one, and a float is the nearest
//! one unless that overflows to infinity or underflows to zero. Ranges narrower than
//! these (an `i64`, a `smallint`, a `DECIMAL(5,2)`) are the caller's to check.

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decimal<'t> {
    pub negative: bool,
    pub integer: &'t str,
    pub fraction: &'t str,
    /// Saturated far beyond any exponent that can matter.
    pub exponent: i64,
}

impl Decimal<'_> {
    /// The significant digits (no leading or trailing zeros) and the power of ten they
    /// are multiplied by; empty digits for zero.
    pub fn significant(&self) -> (String, i64) {
        let digits = format!("{}{}", self.integer, self.fraction);
        let digits = digits.trim_start_matches('0');
        let kept = digits.trim_end_matches('0');
        let trailing_zeros = (digits.len() - kept.len()) as i64;
        (
            kept.to_string(),
            self.exponent - self.fraction.len() as i64 + trailing_zeros,
        )
    }

    /// Whether any digit is not zero.
    fn is_nonzero(&self) -> bool {
        self.integer
            .bytes()
            .chain(self.fraction.bytes())
            .any(|b| b != b'0')
    }
}

/// Reads `[+-]digits[.digits][(e|E)[+-]digits]`, with at least one digit before the
/// exponent and surrounding white space allowed; `None` for anything else.
pub fn parse(text: &str) -> Option<Decimal<'_>> {
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

/// `text` as an integer: its value must be one (`7`, `7.0`, `7e0`, `70e-1`) of at most
/// 20 digits, which holds every `i64` and `u64`; the column's range is the caller's to
/// check.
pub fn integer(text: &str) -> Result<i128, Refusal> {
    let d = parse(text).ok_or(Refusal::NotAnInteger)?;
    let (digits, scale) = d.significant();
    if digits.is_empty() {
        return Ok(0);
    }
    if scale < 0 {
        return Err(Refusal::NotAnInteger);
    }
    // 2⁶⁴ has 20 digits; anything longer is out of every integer column's range.
    if digits.len() as i64 + scale > 20 {
        return Err(Refusal::OutOfRange);
    }
    let value: i128 = digits.parse::<i128>().expect("at most 20 digits") * 10i128.pow(scale as u32);
    Ok(if d.negative { -value } else { value })
}

/// `f` as an integer, when it is one below 2⁶⁵ in magnitude (past every integer column);
/// the column's range is the caller's to check.
pub fn integral(f: f64) -> Result<i128, Refusal> {
    if !f.is_finite() || f.fract() != 0.0 {
        return Err(Refusal::NotAnInteger);
    }
    // Every integral f64 below 2⁶⁵ converts exactly.
    if f.abs() >= 36_893_488_147_419_103_232.0 {
        return Err(Refusal::OutOfRange);
    }
    Ok(f as i128)
}

/// Decimal `text` as a double (`single`: a single-precision float), rounded to the
/// nearest; a finite number whose nearest float is infinite or zero is out of range.
/// Words (`NaN`, `Infinity`) are not decimals: a database that takes them says so
/// before calling this.
pub fn float(text: &str, single: bool) -> Result<f64, Refusal> {
    let d = parse(text).ok_or(Refusal::NotANumber)?;
    let text = text.trim();
    // Parsing straight to the width of the column rounds once, not twice.
    let value = if single {
        text.parse::<f32>().map(f64::from)
    } else {
        text.parse::<f64>()
    }
    .map_err(|_| Refusal::NotANumber)?;
    if value.is_infinite() || (value == 0.0 && d.is_nonzero()) {
        return Err(Refusal::OutOfRange);
    }
    Ok(value)
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
        assert_eq!(integer("-9.223372036854775808e18"), Ok(i64::MIN.into()));
        assert_eq!(integer("18446744073709551615"), Ok(u64::MAX.into()));
        assert_eq!(integer("99999999999999999999"), Ok(10i128.pow(20) - 1));
        assert_eq!(integer("1e20"), Err(Refusal::OutOfRange));
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
    fn integral_floats_are_integers_below_two_to_the_sixty_fifth() {
        assert_eq!(integral(7.0), Ok(7));
        assert_eq!(integral(-0.0), Ok(0));
        assert_eq!(integral(2f64.powi(64)), Ok(1 << 64));
        assert_eq!(integral(-(2f64.powi(65))), Err(Refusal::OutOfRange));
        assert_eq!(integral(7.5), Err(Refusal::NotAnInteger));
        assert_eq!(integral(f64::NAN), Err(Refusal::NotAnInteger));
        assert_eq!(integral(f64::INFINITY), Err(Refusal::NotAnInteger));
    }

    #[test]
    fn floats_refuse_overflow_and_underflow() {
        assert_eq!(float("0.1", false), Ok(0.1));
        assert_eq!(float(" 0.1 ", true), Ok(f64::from(0.1f32)));
        assert_eq!(float("-0", false), Ok(-0.0));
        assert_eq!(float("0e-999", false), Ok(0.0));
        assert_eq!(float("1e-310", false), Ok(1e-310));
        assert_eq!(float("1e400", false), Err(Refusal::OutOfRange));
        assert_eq!(float("-1e400", false), Err(Refusal::OutOfRange));
        assert_eq!(float("1e-400", false), Err(Refusal::OutOfRange));
        assert_eq!(float("1e39", true), Err(Refusal::OutOfRange));
        assert_eq!(float("1e-46", true), Err(Refusal::OutOfRange));
        for bad in ["twelve", "1e", "NaN", "Infinity", "-inf"] {
            assert_eq!(float(bad, false), Err(Refusal::NotANumber), "{bad}");
        }
    }

    #[test]
    fn significant_digits_drop_zeros_into_the_power() {
        let of = |text: &str| parse(text).unwrap().significant();
        assert_eq!(of("123.450"), ("12345".into(), -2));
        assert_eq!(of("-001500e-2"), ("15".into(), 0));
        assert_eq!(of("5e-3"), ("5".into(), -3));
        assert_eq!(of("0.000"), (String::new(), -3));
        assert!(parse("-12.50e3").unwrap().negative);
    }
}

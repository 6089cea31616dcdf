//! Kafka Connect decimals as exact decimal text.
//!
//! `org.apache.kafka.connect.data.Decimal` (and the `value` of Debezium's
//! `VariableScaleDecimal`) is an unscaled integer, big-endian two's complement bytes as
//! Java's `BigInteger.toByteArray` writes them, and a scale: the number is
//! `unscaled × 10^-scale`. The text keeps every digit and the scale's trailing zeros
//! (`1.50` stays `1.50`: a `numeric` column keeps that scale).
//!
//! Cost: converting n bytes to decimal takes time in n², so the unscaled value is bounded
//! ([`MAX_UNSCALED_BYTES`], far above any database's decimal), and so is the padding a
//! scale adds: past [`MAX_PADDING`] zeros the text is written with an exponent
//! (`123e-400`), which PostgreSQL and MariaDB read exactly as well.

use thiserror::Error;

/// The longest unscaled value taken: about 19,700 decimal digits, beyond PostgreSQL's
/// `numeric` with a declared precision (1,000 digits) and any MariaDB `DECIMAL` (65).
pub const MAX_UNSCALED_BYTES: usize = 8 * 1024;

/// The most zeros a scale may add around the digits before the text takes an exponent.
const MAX_PADDING: u64 = 64;

/// Why bytes and a scale are no decimal.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecimalError {
    /// No bytes at all: Java never writes an integer so.
    #[error("the unscaled value has no bytes")]
    Empty,
    /// More than [`MAX_UNSCALED_BYTES`].
    #[error(
        "the unscaled value has {0} bytes, more than the {MAX_UNSCALED_BYTES} (about 19,700 \
         digits) this processor takes"
    )]
    TooLong(usize),
}

/// The decimal text of `unscaled × 10^-scale`.
pub fn text(unscaled: &[u8], scale: i64) -> Result<String, DecimalError> {
    if unscaled.is_empty() {
        return Err(DecimalError::Empty);
    }
    if unscaled.len() > MAX_UNSCALED_BYTES {
        return Err(DecimalError::TooLong(unscaled.len()));
    }
    let negative = unscaled[0] & 0x80 != 0;
    let magnitude = if negative {
        negate(unscaled)
    } else {
        unscaled.to_vec()
    };
    let digits = digits(&magnitude);
    let zero = digits == "0";
    let mut out = String::with_capacity(digits.len() + 8);
    if negative && !zero {
        out.push('-');
    }
    let len = digits.len() as u64;
    let magnitude_scale = scale.unsigned_abs();
    if scale == 0 {
        out.push_str(&digits);
    } else if scale < 0 {
        // Trailing zeros: `unscaled` followed by -scale zeros.
        out.push_str(&digits);
        if magnitude_scale <= MAX_PADDING {
            out.extend(std::iter::repeat_n('0', magnitude_scale as usize));
        } else {
            out.push_str(&format!("e{magnitude_scale}"));
        }
    } else if magnitude_scale < len {
        let point = (len - magnitude_scale) as usize;
        out.push_str(&digits[..point]);
        out.push('.');
        out.push_str(&digits[point..]);
    } else if magnitude_scale - len <= MAX_PADDING {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (magnitude_scale - len) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits);
        out.push_str(&format!("e-{magnitude_scale}"));
    }
    Ok(out)
}

/// The magnitude of a negative two's complement number: its bits inverted, plus one. The
/// result may need one byte more than the input (`0x80` is -128, magnitude `0x0080`).
fn negate(bytes: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = bytes.iter().map(|b| !b).collect();
    for byte in out.iter_mut().rev() {
        let (sum, carry) = byte.overflowing_add(1);
        *byte = sum;
        if !carry {
            return out;
        }
    }
    // Every byte carried: only possible for an input of all zero bits, which is not
    // negative; kept total anyway.
    out.insert(0, 1);
    out
}

/// The decimal digits of an unsigned big-endian integer, without leading zeros ("0" for
/// zero). Limbs of nine decimal digits, least significant first; the bytes are folded in
/// four at a time.
fn digits(bytes: &[u8]) -> String {
    const BASE: u64 = 1_000_000_000;
    let mut limbs: Vec<u32> = Vec::with_capacity(bytes.len() / 3 + 1);
    let head = bytes.len() % 4;
    let chunks = std::iter::once(&bytes[..head])
        .filter(|c| !c.is_empty())
        .chain(bytes[head..].chunks(4));
    for chunk in chunks {
        let shift = 8 * chunk.len() as u32;
        let mut carry = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        for limb in limbs.iter_mut() {
            // At most (1e9 - 1) * 2^32 + carry, well inside u64.
            let value = (u64::from(*limb) << shift) + carry;
            *limb = (value % BASE) as u32;
            carry = value / BASE;
        }
        while carry > 0 {
            limbs.push((carry % BASE) as u32);
            carry /= BASE;
        }
    }
    let Some((last, rest)) = limbs.split_last() else {
        return "0".into();
    };
    let mut out = last.to_string();
    for limb in rest.iter().rev() {
        out.push_str(&format!("{limb:09}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Java's `BigInteger.toByteArray` of `n`: the shortest two's complement bytes.
    fn java_bytes(n: i128) -> Vec<u8> {
        let all = n.to_be_bytes();
        let mut start = 0;
        while start < all.len() - 1 {
            let redundant = (all[start] == 0x00 && all[start + 1] & 0x80 == 0)
                || (all[start] == 0xff && all[start + 1] & 0x80 != 0);
            if !redundant {
                break;
            }
            start += 1;
        }
        all[start..].to_vec()
    }

    #[test]
    fn positive_and_negative_values_keep_every_digit_and_their_scale() {
        for (n, scale, expected) in [
            (0i128, 0, "0"),
            (0, 2, "0.00"),
            (1, 0, "1"),
            (-1, 0, "-1"),
            (150, 2, "1.50"),
            (-150, 2, "-1.50"),
            (5, 3, "0.005"),
            (-5, 3, "-0.005"),
            (127, 0, "127"),
            (128, 0, "128"),
            (-128, 0, "-128"),
            (-129, 0, "-129"),
            (255, 1, "25.5"),
            (256, 0, "256"),
            (-32768, 0, "-32768"),
            (1234567890123, 4, "123456789.0123"),
            (i64::MAX as i128, 0, "9223372036854775807"),
            (i64::MIN as i128, 0, "-9223372036854775808"),
            (i128::MAX, 10, "17014118346046923173168730371.5884105727"),
            (i128::MIN, 0, "-170141183460469231731687303715884105728"),
            (12, -3, "12000"),
            (-12, -2, "-1200"),
        ] {
            assert_eq!(
                text(&java_bytes(n), scale).as_deref(),
                Ok(expected),
                "{n} scale {scale}"
            );
        }
    }

    #[test]
    fn the_bytes_java_writes_are_read_as_java_means_them() {
        // From Kafka Connect's documentation of `Decimal`: 1.00 is unscaled 100.
        assert_eq!(text(&[0x64], 2).as_deref(), Ok("1.00"));
        // A leading sign byte of zero keeps a high bit from making the value negative.
        assert_eq!(text(&[0x00, 0xff], 0).as_deref(), Ok("255"));
        assert_eq!(text(&[0xff], 0).as_deref(), Ok("-1"));
        assert_eq!(text(&[0x80], 0).as_deref(), Ok("-128"));
        // Redundant sign bytes change nothing.
        assert_eq!(text(&[0xff, 0xff, 0xff, 0x80], 0).as_deref(), Ok("-128"));
        assert_eq!(text(&[0x00, 0x00, 0x00, 0x00, 0x01], 0).as_deref(), Ok("1"));
    }

    #[test]
    fn huge_values_are_exact() {
        // 2^(8*100) - 1 has 241 digits; written as 0x00 followed by 100 bytes of 0xff.
        let mut bytes = vec![0u8];
        bytes.extend(std::iter::repeat_n(0xff, 100));
        let expected = {
            // 256^100 - 1 by repeated doubling in decimal text.
            let mut digits = vec![1u8];
            for _ in 0..800 {
                let mut carry = 0;
                for d in digits.iter_mut() {
                    let v = *d * 2 + carry;
                    *d = v % 10;
                    carry = v / 10;
                }
                if carry > 0 {
                    digits.push(carry);
                }
            }
            digits[0] -= 1; // 2^800 ends in 6: no borrow.
            digits
                .iter()
                .rev()
                .map(|d| (b'0' + d) as char)
                .collect::<String>()
        };
        assert_eq!(expected.len(), 241);
        assert_eq!(text(&bytes, 0).as_deref(), Ok(expected.as_str()));
        let negative: Vec<u8> = std::iter::once(0xff)
            .chain(std::iter::repeat_n(0x00, 100))
            .collect();
        // -(2^800).
        let mut power = expected.clone().into_bytes();
        *power.last_mut().unwrap() += 1;
        let power = String::from_utf8(power).unwrap();
        assert_eq!(text(&negative, 0), Ok(format!("-{power}")));
    }

    #[test]
    fn far_scales_take_an_exponent_and_oversized_values_are_refused() {
        assert_eq!(text(&[0x7b], 70).as_deref(), Ok("123e-70"));
        assert_eq!(text(&[0x7b], -70).as_deref(), Ok("123e70"));
        assert_eq!(
            text(&[0x7b], 66).as_deref(),
            Ok(format!("0.{}123", "0".repeat(63)).as_str())
        );
        assert_eq!(
            text(&[0x7b], i64::from(i32::MIN)).as_deref(),
            Ok("123e2147483648")
        );
        assert_eq!(text(&[], 0), Err(DecimalError::Empty));
        assert_eq!(
            text(&vec![1u8; MAX_UNSCALED_BYTES + 1], 0),
            Err(DecimalError::TooLong(MAX_UNSCALED_BYTES + 1))
        );
        let longest = vec![0x7fu8; MAX_UNSCALED_BYTES];
        let started = std::time::Instant::now();
        let digits = text(&longest, 0).unwrap();
        assert!(digits.len() > 19_000, "{}", digits.len());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}

//! Dates and times, checked here and sent as the plain text MySQL reads back the same.
//!
//! The server parses temporal text leniently (`2024-2-3`, `20240203`, a fraction with
//! more digits than the column keeps, which it rounds or cuts), so one spelling is taken
//! and judged here: `YYYY-MM-DD` for a DATE; that, or it followed by `T`, `t` or a space
//! and `HH:MM:SS` with up to six fractional digits, for a DATETIME or TIMESTAMP, with an
//! optional offset (`Z`, `±HH`, `±HHMM`, `±HH:MM`); `[-]H:MM:SS[.ffffff]` for a TIME,
//! -838:59:59 to 838:59:59. A fraction with more digits than the column's fractional
//! precision is refused, not rounded.
//!
//! Sessions run with `time_zone = '+00:00'`: a value with an offset is converted to UTC
//! here (for a DATETIME too, as MySQL 8 does itself), one without is taken as written
//! (for a TIMESTAMP: as UTC).

/// A date as days since 1970-01-01 (proleptic Gregorian).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// `YYYY-MM-DD` at the start of `b`, checked.
fn date_part(b: &[u8]) -> Result<(i64, i64, i64), String> {
    let bad = || "it is not a date written YYYY-MM-DD".to_string();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let (year, month, day) = (
        digits(&b[0..4]).ok_or_else(bad)?,
        digits(&b[5..7]).ok_or_else(bad)?,
        digits(&b[8..10]).ok_or_else(bad)?,
    );
    if year == 0 || !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err("it is not a valid date".into());
    }
    Ok((year, month, day))
}

/// A fraction of a second (`.ddd`, up to six digits) for a column keeping `fsp` digits:
/// its microseconds, or why not. Trailing zeros do not count against `fsp`.
fn fraction(b: &[u8], fsp: u32) -> Result<i64, String> {
    let digits_part = &b[1..];
    if digits_part.is_empty()
        || digits_part.len() > 6
        || !digits_part.iter().all(u8::is_ascii_digit)
    {
        return Err("its fraction of a second must be 1 to 6 digits".into());
    }
    let kept = digits_part
        .iter()
        .rposition(|&d| d != b'0')
        .map_or(0, |i| i + 1);
    if kept > fsp as usize {
        return Err(format!(
            "it has more fractional digits than the column keeps ({fsp}), which would round it"
        ));
    }
    let mut micros = digits(digits_part).expect("checked digits");
    for _ in digits_part.len()..6 {
        micros *= 10;
    }
    Ok(micros)
}

fn format_fraction(micros: i64) -> String {
    if micros == 0 {
        return String::new();
    }
    let text = format!(".{micros:06}");
    text.trim_end_matches('0').to_string()
}

/// A DATE value, as sent.
pub fn date(text: &str) -> Result<String, String> {
    let b = text.trim().as_bytes();
    if b.len() != 10 {
        return Err("it is not a date written YYYY-MM-DD".into());
    }
    let (year, month, day) = date_part(b)?;
    Ok(format!("{year:04}-{month:02}-{day:02}"))
}

/// A DATETIME or TIMESTAMP value for a column keeping `fsp` fractional digits, as sent:
/// in UTC if it had an offset.
pub fn datetime(text: &str, fsp: u32) -> Result<String, String> {
    let b = text.trim().as_bytes();
    let (year, month, day) = date_part(b)?;
    if b.len() == 10 {
        return Ok(format!("{year:04}-{month:02}-{day:02} 00:00:00"));
    }
    let bad =
        || "it is not a date and time written YYYY-MM-DD HH:MM:SS[.ffffff][offset]".to_string();
    if b.len() < 19 || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let hour = digits(&b[11..13]).ok_or_else(bad)?;
    let minute = digits(&b[14..16]).ok_or_else(bad)?;
    let second = digits(&b[17..19]).ok_or_else(bad)?;
    if hour > 23 || minute > 59 || second > 59 {
        return Err("it is not a valid time of day".into());
    }
    let mut rest = &b[19..];
    let mut micros = 0;
    if rest.first() == Some(&b'.') {
        let end = rest[1..]
            .iter()
            .position(|c| !c.is_ascii_digit())
            .map_or(rest.len(), |i| i + 1);
        micros = fraction(&rest[..end], fsp)?;
        rest = &rest[end..];
    }
    let offset_minutes = match rest {
        [] => None,
        [b'Z' | b'z'] => Some(0),
        [sign @ (b'+' | b'-'), tail @ ..] => {
            let (h, m) = match tail {
                [h1, h2] => (digits(&[*h1, *h2]), Some(0)),
                [h1, h2, m1, m2] => (digits(&[*h1, *h2]), digits(&[*m1, *m2])),
                [h1, h2, b':', m1, m2] => (digits(&[*h1, *h2]), digits(&[*m1, *m2])),
                _ => (None, None),
            };
            let (Some(h), Some(m)) = (h, m) else {
                return Err(bad());
            };
            if h > 23 || m > 59 {
                return Err("its offset is not valid".into());
            }
            Some(if *sign == b'-' {
                -(h * 60 + m)
            } else {
                h * 60 + m
            })
        }
        _ => return Err(bad()),
    };
    let mut seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    if let Some(offset) = offset_minutes {
        seconds -= offset * 60;
    }
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    if !(1..=9999).contains(&year) {
        return Err("it is out of range in UTC (years 1 to 9999)".into());
    }
    let of_day = seconds.rem_euclid(86_400);
    Ok(format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}{}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        format_fraction(micros)
    ))
}

/// A TIME value for a column keeping `fsp` fractional digits, as sent.
pub fn time(text: &str, fsp: u32) -> Result<String, String> {
    let text = text.trim();
    let bad = || "it is not a time written [-]H:MM:SS[.ffffff]".to_string();
    let (negative, rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (clock, micros) = match rest.find('.') {
        Some(at) => (&rest[..at], fraction(&rest.as_bytes()[at..], fsp)?),
        None => (rest, 0),
    };
    let parts: Vec<&str> = clock.split(':').collect();
    let [h, m, s] = parts.as_slice() else {
        return Err(bad());
    };
    if h.len() > 3 || m.len() != 2 || s.len() != 2 {
        return Err(bad());
    }
    let (hours, minutes, seconds) = (
        digits(h.as_bytes()).ok_or_else(bad)?,
        digits(m.as_bytes()).ok_or_else(bad)?,
        digits(s.as_bytes()).ok_or_else(bad)?,
    );
    if minutes > 59 || seconds > 59 {
        return Err(bad());
    }
    let total = (hours * 3600 + minutes * 60 + seconds) * 1_000_000 + micros;
    if total > 838 * 3_600_000_000 + 59 * 60_000_000 + 59_000_000 {
        return Err("it is out of range (-838:59:59 to 838:59:59)".into());
    }
    Ok(format!(
        "{}{hours:02}:{minutes:02}:{seconds:02}{}",
        if negative && total != 0 { "-" } else { "" },
        format_fraction(micros)
    ))
}

/// A YEAR: 1901 to 2155, or 0.
pub fn year(value: i128) -> Result<u64, String> {
    if value == 0 || (1901..=2155).contains(&value) {
        Ok(value as u64)
    } else {
        Err("it is out of range (1901 to 2155, or 0)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_checked() {
        assert_eq!(date("2024-02-29"), Ok("2024-02-29".into()));
        assert!(date("2023-02-29").is_err());
        assert!(date("2024-2-3").is_err());
        assert!(date("0000-00-00").is_err());
        assert!(date("2024-02-29 10:00:00").is_err());
    }

    #[test]
    fn datetimes_with_an_offset_become_utc() {
        assert_eq!(
            datetime("2024-02-29T13:14:15.5+01:00", 6),
            Ok("2024-02-29 12:14:15.5".into())
        );
        assert_eq!(
            datetime("2024-03-01 00:30:00-01", 0),
            Ok("2024-03-01 01:30:00".into())
        );
        assert_eq!(
            datetime("2024-01-01T00:30:00+0100", 0),
            Ok("2023-12-31 23:30:00".into())
        );
        assert_eq!(
            datetime("2024-01-01 10:00:00", 0),
            Ok("2024-01-01 10:00:00".into())
        );
        assert_eq!(datetime("2024-01-01", 0), Ok("2024-01-01 00:00:00".into()));
        assert_eq!(
            datetime("2024-01-01 10:00:00.100", 1),
            Ok("2024-01-01 10:00:00.1".into())
        );
        assert!(datetime("2024-01-01 10:00:00.12", 1)
            .unwrap_err()
            .contains("round"));
        assert!(datetime("2024-01-01 24:00:00", 0).is_err());
        assert!(datetime("2024-01-01 10:00:60", 0).is_err());
        assert!(datetime("2024-01-01 10:00:00 Europe/Paris", 0).is_err());
        assert!(datetime("0001-01-01 00:30:00+01:00", 0).is_err());
    }

    #[test]
    fn times_go_beyond_a_day_and_below_zero() {
        assert_eq!(time("838:59:59", 0), Ok("838:59:59".into()));
        assert_eq!(time("-12:00:01.25", 2), Ok("-12:00:01.25".into()));
        assert_eq!(time("1:02:03", 0), Ok("01:02:03".into()));
        assert!(time("839:00:00", 0).is_err());
        assert!(time("838:59:59.5", 1).is_err());
        assert!(time("10:61:00", 0).is_err());
        assert!(time("10:00:00.5", 0).unwrap_err().contains("round"));
    }

    #[test]
    fn civil_days_round_trip() {
        for days in [-719_162, -1, 0, 1, 11_016, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
    }
}

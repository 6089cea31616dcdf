//! Timestamps sent binary: the common, unambiguous spelling (RFC 3339, as producers
//! write it) is turned into PostgreSQL's own representation here, so the server does not
//! parse text for every row. Anything else travels as text and the server parses it with
//! its own rules, so no input means something different from what PostgreSQL would make
//! of it.
//!
//! What is taken: `YYYY-MM-DD`, `T`, `t` or a space, `HH:MM:SS`, up to six fractional
//! digits, then for `timestamptz` an offset (`Z`, `±HH`, `±HHMM`, `±HH:MM`) and for
//! `timestamp` none (PostgreSQL ignores an offset given to a `timestamp`; the text path
//! keeps that). Out of it: years outside 1-9999, hour 24, leap second 60, more than six
//! fractional digits (the server rounds), `infinity`, BC dates, zone names, and a
//! `timestamptz` without an offset (the server applies its `TimeZone`).
//!
//! May depend on: tokio-postgres' `ToSql`.

use std::error::Error;

use bytes::BytesMut;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

/// Microseconds since 2000-01-01 00:00:00 (UTC for `timestamptz`, wall clock for
/// `timestamp`): PostgreSQL's binary form of both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Micros(pub i64);

impl ToSql for Micros {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.extend_from_slice(&self.0.to_be_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TIMESTAMPTZ || *ty == Type::TIMESTAMP
    }

    to_sql_checked!();
}

/// `text` as a timestamp of a `timestamptz` (`tz`) or `timestamp` column, when it is
/// spelled in the one way read here; `None` leaves it to the server.
pub fn parse(text: &str, tz: bool) -> Option<Micros> {
    let b = text.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    if year == 0 || !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut rest = &b[19..];
    let mut fraction = 0;
    if let [b'.', tail @ ..] = rest {
        let count = tail.iter().take_while(|c| c.is_ascii_digit()).count();
        if count == 0 || count > 6 {
            return None;
        }
        fraction = digits(&tail[..count])? * 10i64.pow(6 - count as u32);
        rest = &tail[count..];
    }
    let offset_seconds = match (tz, rest) {
        (false, []) => 0,
        (true, [b'Z' | b'z']) => 0,
        (true, [sign @ (b'+' | b'-'), zone @ ..]) => {
            let (hours, minutes) = match zone {
                [h1, h2] => (digits(&[*h1, *h2])?, 0),
                [h1, h2, m1, m2] | [h1, h2, b':', m1, m2] => {
                    (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?)
                }
                _ => return None,
            };
            if hours > 15 || minutes > 59 {
                return None;
            }
            let seconds = hours * 3600 + minutes * 60;
            if *sign == b'-' {
                -seconds
            } else {
                seconds
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day) - days_from_civil(2000, 1, 1);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    Some(Micros(seconds * 1_000_000 + fraction))
}

/// The value back as RFC 3339 text (UTC with `Z` for `timestamptz`), for messages and
/// array literals.
pub fn format(micros: Micros, tz: bool) -> String {
    let total_seconds = micros.0.div_euclid(1_000_000);
    let fraction = micros.0.rem_euclid(1_000_000);
    let days = total_seconds.div_euclid(86_400) + days_from_civil(2000, 1, 1);
    let in_day = total_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let mut text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        in_day / 3600,
        in_day / 60 % 60,
        in_day % 60
    );
    if fraction != 0 {
        text.push_str(&format!(".{fraction:06}"));
    }
    if tz {
        text.push('Z');
    }
    text
}

fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0i64, |n, c| {
        c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
    })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epochs_and_offsets_come_out_right() {
        assert_eq!(parse("2000-01-01T00:00:00Z", true), Some(Micros(0)));
        assert_eq!(parse("2000-01-01 00:00:00", false), Some(Micros(0)));
        assert_eq!(
            parse("1970-01-01T00:00:00Z", true),
            Some(Micros(-946_684_800_000_000))
        );
        assert_eq!(parse("2000-01-01T01:00:00+01:00", true), Some(Micros(0)));
        assert_eq!(parse("2000-01-01T01:00:00+0100", true), Some(Micros(0)));
        assert_eq!(parse("2000-01-01T01:00:00+01", true), Some(Micros(0)));
        assert_eq!(parse("1999-12-31T19:30:00-04:30", true), Some(Micros(0)));
        assert_eq!(parse("2000-01-01t00:00:00.5z", true), Some(Micros(500_000)));
        assert_eq!(parse("2000-01-01T00:00:00.000001Z", true), Some(Micros(1)));
        assert_eq!(
            parse("2024-02-29T12:00:00Z", true)
                .map(|m| format(m, true))
                .as_deref(),
            Some("2024-02-29T12:00:00Z")
        );
    }

    #[test]
    fn what_only_the_server_can_judge_is_left_to_it() {
        for (text, tz) in [
            ("2000-01-01T00:00:00", true),   // the server's TimeZone applies
            ("2000-01-01T00:00:00Z", false), // a timestamp ignores the offset
            ("2000-01-01T24:00:00Z", true),
            ("2000-01-01T23:59:60Z", true),
            ("2000-01-01T00:00:00.1234567Z", true), // rounded by the server
            ("2023-02-29T00:00:00Z", true),
            ("0000-01-01T00:00:00Z", true),
            ("12000-01-01T00:00:00Z", true),
            ("2000-01-01T00:00:00 Europe/Paris", true),
            ("2000-01-01T00:00:00+16:00", true),
            ("infinity", true),
            ("2000-01-01", false),
            ("2000-01-01T00:00:00.Z", true),
            (" 2000-01-01T00:00:00Z", true),
            ("2000-01-01T00:00:00Z ", true),
            ("２000-01-01T00:00:00Z", true),
        ] {
            assert_eq!(parse(text, tz), None, "{text}");
        }
    }

    #[test]
    fn format_inverts_parse_across_the_range() {
        let mut day = days_from_civil(1, 1, 1);
        while day < days_from_civil(9999, 12, 31) {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
            let text = format!("{y:04}-{m:02}-{d:02}T13:14:15.000016Z");
            let parsed = parse(&text, true).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(format(parsed, true), text);
            day += 97;
        }
    }
}

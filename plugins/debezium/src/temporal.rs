//! Debezium's numeric dates, times and timestamps as the text databases read.
//!
//! Debezium writes a `DATE` as days since 1970-01-01, a `TIME` as the time since midnight
//! and a `TIMESTAMP` (without time zone) as the time since 1970-01-01T00:00:00, each
//! counted in the unit its schema names (milliseconds, microseconds, nanoseconds). These
//! are local dates and times, not instants: the text carries no offset, and is read by the
//! database as the same wall-clock value. Negative values are before 1970 (or, for a
//! time, before midnight: MySQL's `TIME` is a duration and may be negative or past 24 h,
//! so hours are not wrapped). Years before 1 AD are written with PostgreSQL's ` BC` suffix
//! (year 0 is 1 BC); years past 9999 with as many digits as they need.
//!
//! The calendar arithmetic is the proleptic Gregorian one on whole days (the
//! days-from-civil algorithm published by Howard Hinnant), exact over the whole range an
//! `i64` count can reach.

/// Units per second of each precision Debezium uses.
pub const MILLIS: i64 = 1_000;
pub const MICROS: i64 = 1_000_000;
pub const NANOS: i64 = 1_000_000_000;

/// `days` since 1970-01-01 as `YYYY-MM-DD`.
pub fn date(days: i64) -> String {
    let (year, month, day) = civil(days);
    let mut out = String::with_capacity(13);
    push_date(&mut out, year, month, day);
    if year <= 0 {
        out.push_str(" BC");
    }
    out
}

/// `units` (`per_second` to a second) since midnight as `HH:MM:SS`, with the fraction of a
/// second when there is one (`HH:MM:SS.ffffff`, trailing zeros dropped).
pub fn time(units: i64, per_second: i64) -> String {
    let magnitude = units.unsigned_abs();
    let per_second = per_second.unsigned_abs();
    let (seconds, fraction) = (magnitude / per_second, magnitude % per_second);
    let mut out = String::with_capacity(24);
    if units < 0 {
        out.push('-');
    }
    out.push_str(&format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    ));
    push_fraction(&mut out, fraction, per_second);
    out
}

/// `units` (`per_second` to a second) since 1970-01-01T00:00:00 as
/// `YYYY-MM-DDTHH:MM:SS[.ffffff]`.
pub fn timestamp(units: i64, per_second: i64) -> String {
    let (seconds, fraction) = (units.div_euclid(per_second), units.rem_euclid(per_second));
    let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil(days);
    let mut out = String::with_capacity(40);
    push_date(&mut out, year, month, day);
    out.push_str(&format!(
        "T{:02}:{:02}:{:02}",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    ));
    push_fraction(&mut out, fraction.unsigned_abs(), per_second.unsigned_abs());
    if year <= 0 {
        out.push_str(" BC");
    }
    out
}

/// The year (astronomical: 0 is 1 BC), month and day of `days` since 1970-01-01.
fn civil(days: i64) -> (i64, u32, u32) {
    // Counted from 0000-03-01, so that the leap day ends each 400-year era and each year.
    let shifted = i128::from(days) + 719_468;
    let era = shifted.div_euclid(146_097);
    let of_era = shifted.rem_euclid(146_097);
    let year_of_era = (of_era - of_era / 1_460 + of_era / 36_524 - of_era / 146_096) / 365;
    let day_of_year = of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i128::from(month <= 2);
    // |days| < 2^63 keeps the year far inside an i64.
    (year as i64, month, day)
}

fn push_date(out: &mut String, year: i64, month: u32, day: u32) {
    let shown = if year <= 0 { 1 - year } else { year };
    out.push_str(&format!("{shown:04}-{month:02}-{day:02}"));
}

/// `.fff…` for a non-zero `fraction` of `per_second`, without trailing zeros.
fn push_fraction(out: &mut String, fraction: u64, per_second: u64) {
    if fraction == 0 {
        return;
    }
    let width = per_second.ilog10() as usize;
    let digits = format!("{fraction:0width$}");
    out.push('.');
    out.push_str(digits.trim_end_matches('0'));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_either_side_of_the_epoch() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(-1), "1969-12-31");
        assert_eq!(date(17_760), "2018-08-17");
        // 2000 is a leap year, 1900 is not, 2100 is not.
        assert_eq!(date(11_016), "2000-02-29");
        assert_eq!(date(11_017), "2000-03-01");
        assert_eq!(date(-25_508), "1900-03-01");
        assert_eq!(date(-25_509), "1900-02-28");
        assert_eq!(date(47_541), "2100-03-01");
        assert_eq!(date(-719_162), "0001-01-01");
        assert_eq!(date(-719_163), "0001-12-31 BC");
        // Year 0 (1 BC) is a leap year.
        assert_eq!(date(-719_528), "0001-01-01 BC");
        assert_eq!(date(-719_529), "0002-12-31 BC");
        assert_eq!(date(2_932_896), "9999-12-31");
        assert_eq!(date(2_932_897), "10000-01-01");
        // i32's range, as a Kafka Connect date may hold.
        assert_eq!(date(i64::from(i32::MAX)), "5881580-07-11");
        assert_eq!(date(i64::from(i32::MIN)), "5877642-06-23 BC");
    }

    #[test]
    fn times_of_each_precision() {
        assert_eq!(time(0, MILLIS), "00:00:00");
        assert_eq!(time(45_296_789, MILLIS), "12:34:56.789");
        assert_eq!(time(45_296_000_001, MICROS), "12:34:56.000001");
        assert_eq!(time(45_296_100_000, MICROS), "12:34:56.1");
        assert_eq!(time(45_296_123_456_789, NANOS), "12:34:56.123456789");
        assert_eq!(time(86_399_999_999, MICROS), "23:59:59.999999");
        // PostgreSQL's 24:00:00 and MySQL's durations are not wrapped.
        assert_eq!(time(86_400_000_000, MICROS), "24:00:00");
        assert_eq!(time(3_020_399_000_000, MICROS), "838:59:59");
        assert_eq!(time(-3_020_399_000_000, MICROS), "-838:59:59");
        assert_eq!(time(-1_500, MILLIS), "-00:00:01.5");
        assert_eq!(time(i64::MIN, NANOS), "-2562047:47:16.854775808");
    }

    #[test]
    fn timestamps_before_and_after_the_epoch() {
        assert_eq!(timestamp(0, MILLIS), "1970-01-01T00:00:00");
        assert_eq!(
            timestamp(1_529_507_596_945_104, MICROS),
            "2018-06-20T15:13:16.945104"
        );
        assert_eq!(
            timestamp(1_529_507_596_945, MILLIS),
            "2018-06-20T15:13:16.945"
        );
        assert_eq!(
            timestamp(1_529_507_596_945_104_001, NANOS),
            "2018-06-20T15:13:16.945104001"
        );
        // Before 1970 the fraction still counts forward from the whole second before.
        assert_eq!(timestamp(-1, MICROS), "1969-12-31T23:59:59.999999");
        assert_eq!(timestamp(-1_000_000, MICROS), "1969-12-31T23:59:59");
        assert_eq!(timestamp(-86_400_001, MILLIS), "1969-12-30T23:59:59.999");
        assert_eq!(
            timestamp(-2_208_988_800_000_000, MICROS),
            "1900-01-01T00:00:00"
        );
        assert_eq!(
            timestamp(-62_135_596_800_000_001, MICROS),
            "0001-12-31T23:59:59.999999 BC"
        );
        assert_eq!(timestamp(i64::MAX, NANOS), "2262-04-11T23:47:16.854775807");
        assert_eq!(timestamp(i64::MIN, NANOS), "1677-09-21T00:12:43.145224192");
        assert_eq!(timestamp(i64::MAX, MILLIS), "292278994-08-17T07:12:55.807");
        assert_eq!(
            timestamp(i64::MIN, MILLIS),
            "292275056-05-16T16:47:04.192 BC"
        );
    }
}

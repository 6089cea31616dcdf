//! Which partition of its batch a change goes to: the one its row hashes to, one partition
//! per database worker, so that one row's changes keep queue order while different rows go
//! in parallel ([`crate::place`] gives each partition its worker).
//!
//! A row is named by its table and primary-key values, and one row can be spelled many ways
//! in messages: `7`, `7.0`, `"7"` and `7e0`; a uuid in upper or lower case, with or without
//! braces and hyphens; a timestamp with another offset. Two spellings of one row that
//! hashed apart would go to two partitions and could commit out of order. The host does not
//! know column types, so [`hash_value`] hashes a value's *canonical* form, chosen so that
//! values the database could take as equal always hash alike. It may also put different
//! rows together (`"ABC"` and `"abc"`, every timestamp of a table), which costs nothing but
//! a little spread: erring that way is always safe.
//!
//! A change whose row cannot be told (no primary key, a key value missing, several rows, an
//! update that moves its row to another key) makes its batch go to one worker whole, with
//! nothing else in flight beside it.
//!
//! Depends on `golconde-plugin-api`'s data types only.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
};

use golconde_plugin_api::{Action, Change, Column, Operation, Value};

/// Where each change goes.
pub struct Routes {
    /// The partition of each change, `None` for a position with no change.
    pub partitions: Vec<Option<usize>>,
    /// Some row could not be told: everything went to partition 0 and must run alone.
    pub alone: bool,
}

/// Routes changes to one partition per worker, caching each table's key columns.
pub struct Router {
    workers: usize,
    key_columns: HashMap<String, Vec<String>>,
}

impl Router {
    pub fn new(workers: usize) -> Router {
        Router {
            workers,
            key_columns: HashMap::new(),
        }
    }

    /// Routes a batch. `lookup` asks the database for a table's key columns; `None` (it
    /// failed) is not cached, and makes the batch run alone.
    pub fn route<'c>(
        &mut self,
        changes: impl Iterator<Item = Option<&'c Change>>,
        lookup: &mut dyn FnMut(&str) -> Option<Vec<String>>,
    ) -> Routes {
        let mut partitions = Vec::new();
        let mut serial = self.workers == 1;
        for change in changes {
            let Some(change) = change else {
                partitions.push(None);
                continue;
            };
            if !serial {
                match self.row_hash(change, lookup) {
                    Some(hash) => {
                        partitions.push(Some((hash % self.workers as u64) as usize));
                        continue;
                    }
                    None => serial = true,
                }
            }
            partitions.push(Some(0));
        }
        if serial {
            for partition in partitions.iter_mut().flatten() {
                *partition = 0;
            }
        }
        Routes {
            partitions,
            alone: serial && self.workers > 1,
        }
    }

    /// The hash of the one row `change` touches, if it touches exactly one that can be told.
    fn row_hash(
        &mut self,
        change: &Change,
        lookup: &mut dyn FnMut(&str) -> Option<Vec<String>>,
    ) -> Option<u64> {
        let mut row = None;
        for op in change.operations.iter() {
            let table = op.table.as_str();
            if !self.key_columns.contains_key(table) {
                let columns = lookup(table)?;
                self.key_columns.insert(table.to_string(), columns);
            }
            let hash = op_hash(op, &self.key_columns[table])?;
            if *row.get_or_insert(hash) != hash {
                return None;
            }
        }
        Some(row.unwrap_or(0))
    }
}

/// The row one operation touches: an insert's or upsert's by its data, an update's or
/// delete's by its restriction. An update that writes key columns moves its row: unless
/// the new key is the old one, the operation touches two rows.
fn op_hash(op: &Operation, key: &[String]) -> Option<u64> {
    if key.is_empty() {
        return None;
    }
    let table = op.table.as_str();
    match op.action {
        Action::Insert | Action::Upsert => key_hash(table, key, &op.data),
        Action::Delete => key_hash(table, key, &op.restriction),
        Action::Update => {
            let old = key_hash(table, key, &op.restriction)?;
            let writes_key = op.data.iter().any(|c| key.iter().any(|k| *k == c.name));
            if writes_key && key_hash(table, key, &op.data)? != old {
                return None;
            }
            Some(old)
        }
    }
}

/// The hash of `table` and the values `columns` give the key, if they give all of it.
fn key_hash(table: &str, key: &[String], columns: &[Column]) -> Option<u64> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    table.hash(&mut hasher);
    for name in key {
        let column = columns.iter().find(|c| c.name.as_str() == name)?;
        hash_value(&column.value, &mut hasher);
    }
    Some(hasher.finish())
}

/// Hashes the canonical form of a key value: every spelling the database could take as
/// the same value hashes alike (see the module's documentation).
pub fn hash_value(value: &Value, hasher: &mut impl Hasher) {
    match value {
        Value::Null => 0u8.hash(hasher),
        Value::Bool(b) => {
            1u8.hash(hasher);
            b.hash(hasher);
        }
        Value::Int(i) => {
            let mut buffer = itoa::Buffer::new();
            let text = buffer.format(*i);
            Decimal::parse(text)
                .expect("an integer's decimal text is a number")
                .hash(hasher);
        }
        Value::Float(f) if f.is_finite() => {
            // `{:e}` is the shortest text that reads back as this float, as the database
            // would read `0.1` into a numeric column.
            match Decimal::parse(&format!("{f:e}")) {
                Some(decimal) => decimal.hash(hasher),
                None => f.to_bits().hash(hasher),
            }
        }
        Value::Float(f) => f.to_bits().hash(hasher),
        Value::Numeric(text) | Value::Text(text) => hash_text(text, hasher),
        Value::Bytes(bytes) => {
            6u8.hash(hasher);
            bytes.as_slice().hash(hasher);
        }
        // jsonb ignores whitespace and key order: every JSON key falls in one bucket.
        Value::Json(_) => 7u8.hash(hasher),
        Value::Array(items) => {
            8u8.hash(hasher);
            items.len().hash(hasher);
            for item in items.iter() {
                hash_value(item, hasher);
            }
        }
    }
}

/// Text as a uuid, a number, a point in time or text, in that order of trial. Whitespace
/// around it is dropped and case folded: the database trims it for numbers, uuids and
/// times, and a case-insensitive column (`citext`) folds it.
fn hash_text(text: &str, hasher: &mut impl Hasher) {
    let text = text.trim();
    if let Some(uuid) = uuid_digits(text) {
        2u8.hash(hasher);
        uuid.hash(hasher);
    } else if let Some(decimal) = Decimal::parse(text) {
        decimal.hash(hasher);
    } else if is_temporal(text) {
        // `2024-01-01 00:00+02` and `2023-12-31 22:00Z` are one instant to `timestamptz`
        // but two rows to `timestamp`, which drops the offset; only one bucket for every
        // time of a table is right for both.
        3u8.hash(hasher);
    } else {
        4u8.hash(hasher);
        if text.bytes().any(|b| b.is_ascii_uppercase()) || !text.is_ascii() {
            text.to_lowercase().hash(hasher);
        } else {
            text.hash(hasher);
        }
    }
}

/// The 32 hex digits of a uuid in any spelling PostgreSQL accepts (any case, braces,
/// hyphens between groups of four), lower-cased.
fn uuid_digits(text: &str) -> Option<[u8; 32]> {
    let inner = match text.strip_prefix('{') {
        Some(rest) => rest.strip_suffix('}')?,
        None => text,
    };
    let mut digits = [0u8; 32];
    let mut n = 0;
    for b in inner.bytes() {
        if b == b'-' {
            continue;
        }
        if !b.is_ascii_hexdigit() || n == 32 {
            return None;
        }
        digits[n] = b.to_ascii_lowercase();
        n += 1;
    }
    (n == 32).then_some(digits)
}

/// Looks like a date, a time or a timestamp: digits with date and time separators only.
fn is_temporal(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_digit())
        && text.bytes().any(|b| matches!(b, b'-' | b':' | b'/'))
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || b" -:/.+tTzZ".contains(&b))
}

/// A decimal number reduced to sign, significant digits and exponent, so that `1`,
/// `1.0`, `+1`, `0001` and `10e-1` are the same value. Never expands an exponent, so
/// `1e999999999` costs what its text costs.
#[derive(Debug, PartialEq, Eq)]
struct Decimal<'t> {
    negative: bool,
    /// The digits of `text` from the first to the last significant one; may include the
    /// decimal point, which hashing skips.
    digits: &'t str,
    /// The power of ten of the first significant digit.
    exponent: i64,
}

impl<'t> Decimal<'t> {
    fn parse(text: &'t str) -> Option<Decimal<'t>> {
        let (negative, rest) = match text.as_bytes().first()? {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let (mantissa, exponent) = match rest.find(['e', 'E']) {
            Some(at) => (&rest[..at], parse_exponent(&rest[at + 1..])?),
            None => (rest, 0),
        };
        let point = mantissa.find('.');
        let (whole, fraction) = match point {
            Some(at) => (&mantissa[..at], &mantissa[at + 1..]),
            None => (mantissa, ""),
        };
        if whole.is_empty() && fraction.is_empty()
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !fraction.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let Some(first) = mantissa.bytes().position(|b| matches!(b, b'1'..=b'9')) else {
            return Some(Decimal {
                negative: false,
                digits: "0",
                exponent: 0,
            });
        };
        let last = mantissa
            .bytes()
            .rposition(|b| matches!(b, b'1'..=b'9'))
            .expect("there is a first");
        let point = point.unwrap_or(mantissa.len()) as i64;
        let first_power = if (first as i64) < point {
            point - first as i64 - 1
        } else {
            point - first as i64
        };
        Some(Decimal {
            negative,
            digits: &mantissa[first..=last],
            exponent: first_power.saturating_add(exponent),
        })
    }
}

impl Hash for Decimal<'_> {
    fn hash<H: Hasher>(&self, hasher: &mut H) {
        5u8.hash(hasher);
        self.negative.hash(hasher);
        // The digits without the point, in as few writes as the hasher can take: this runs
        // for every message of a pipeline with several workers.
        match self.digits.split_once('.') {
            Some((whole, fraction)) => {
                hasher.write(whole.as_bytes());
                hasher.write(fraction.as_bytes());
            }
            None => hasher.write(self.digits.as_bytes()),
        }
        self.exponent.hash(hasher);
    }
}

/// An exponent's digits, saturating: beyond `i64` no number is a key anyway.
fn parse_exponent(text: &str) -> Option<i64> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude = digits.bytes().fold(0i64, |n, b| {
        n.saturating_mul(10).saturating_add(i64::from(b - b'0'))
    });
    Some(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;
    use golconde_plugin_api::RVec;

    fn hash(v: &Value) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        hash_value(v, &mut h);
        h.finish()
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn every_spelling_of_a_number_hashes_alike() {
        let seven = hash(&Value::Int(7));
        for v in [
            Value::Float(7.0),
            Value::Numeric("7".into()),
            Value::Numeric("7.000".into()),
            Value::Numeric("0.7e1".into()),
            Value::Numeric("70E-1".into()),
            text("7"),
            text(" +007 "),
        ] {
            assert_eq!(hash(&v), seven, "{v:?}");
        }
        assert_eq!(hash(&Value::Int(100)), hash(&Value::Numeric("1e2".into())));
        assert_eq!(
            hash(&Value::Float(0.1)),
            hash(&Value::Numeric("0.10".into()))
        );
        assert_eq!(hash(&Value::Int(0)), hash(&Value::Numeric("-0.0e5".into())));
        assert_eq!(
            hash(&Value::Numeric("123.45".into())),
            hash(&Value::Numeric("12345e-2".into()))
        );
        assert_ne!(hash(&Value::Int(7)), hash(&Value::Int(8)));
        assert_ne!(hash(&Value::Int(7)), hash(&Value::Int(-7)));
        assert_ne!(hash(&Value::Int(7)), hash(&Value::Int(70)));
        assert_ne!(
            hash(&Value::Numeric("1.5".into())),
            hash(&Value::Numeric("15".into()))
        );
    }

    #[test]
    fn huge_exponents_are_not_expanded() {
        let a = Decimal::parse("1e999999999999999999999").unwrap();
        assert_eq!(a.exponent, i64::MAX);
        assert_eq!(Decimal::parse("12.5e3").unwrap().exponent, 4);
        assert_eq!(Decimal::parse("0.0125").unwrap().exponent, -2);
        for bad in ["", "-", ".", "e5", "1e", "1.2.3", "1e+", "0x10", "1_000"] {
            assert_eq!(Decimal::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_spelling_of_a_uuid_hashes_alike() {
        let lower = hash(&text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"));
        for spelling in [
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
        ] {
            assert_eq!(hash(&text(spelling)), lower, "{spelling}");
        }
        assert_ne!(hash(&text("b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")), lower);
    }

    #[test]
    fn times_share_a_bucket_and_text_folds_case() {
        assert_eq!(
            hash(&text("2024-01-01T00:00:00+02:00")),
            hash(&text("2023-12-31 22:00:00Z"))
        );
        assert_eq!(hash(&text("Alice")), hash(&text("alice")));
        assert_eq!(hash(&text("ÉTÉ")), hash(&text("été")));
        assert_ne!(hash(&text("alice")), hash(&text("bob")));
        assert_ne!(hash(&text("7")), hash(&text("seven")));
    }

    fn op(action: Action, data: &[(&str, i64)], restriction: &[(&str, i64)]) -> Operation {
        let columns = |pairs: &[(&str, i64)]| -> RVec<Column> {
            pairs
                .iter()
                .map(|(n, v)| Column::new(*n, Value::Int(*v)))
                .collect()
        };
        Operation {
            action,
            table: "t".into(),
            data: columns(data),
            restriction: columns(restriction),
        }
    }

    fn change(ops: Vec<Operation>) -> Change {
        Change {
            id: None.into(),
            operations: ops.into(),
        }
    }

    fn route(changes: &[Change]) -> Routes {
        let mut router = Router::new(4);
        router.route(changes.iter().map(Some), &mut |_| {
            Some(vec!["id".to_string()])
        })
    }

    #[test]
    fn a_row_is_told_by_its_data_or_its_restriction() {
        let routes = route(&[
            change(vec![op(Action::Upsert, &[("id", 1), ("v", 1)], &[])]),
            change(vec![op(Action::Update, &[("v", 2)], &[("id", 1)])]),
            change(vec![op(Action::Delete, &[], &[("id", 1)])]),
        ]);
        assert!(!routes.alone);
        assert_eq!(routes.partitions[0], routes.partitions[1]);
        assert_eq!(routes.partitions[1], routes.partitions[2]);
    }

    #[test]
    fn an_update_that_moves_its_row_runs_alone() {
        let routes = route(&[change(vec![op(Action::Update, &[("id", 2)], &[("id", 1)])])]);
        assert!(routes.alone);
        let routes = route(&[change(vec![op(
            Action::Update,
            &[("id", 1), ("v", 3)],
            &[("id", 1)],
        )])]);
        assert!(!routes.alone);
    }

    #[test]
    fn an_update_by_another_column_runs_alone() {
        // Routed by `id` in its data, it would go where row 5 lives, yet it changes whichever
        // row has v = 9 into row 5.
        let routes = route(&[change(vec![op(Action::Update, &[("id", 5)], &[("v", 9)])])]);
        assert!(routes.alone);
    }

    #[test]
    fn a_failed_lookup_is_not_cached() {
        let mut router = Router::new(2);
        let c = change(vec![op(Action::Upsert, &[("id", 1)], &[])]);
        let mut calls = 0;
        let routes = router.route(std::iter::once(Some(&c)), &mut |_| {
            calls += 1;
            None
        });
        assert!(routes.alone);
        let routes = router.route(std::iter::once(Some(&c)), &mut |_| {
            calls += 1;
            Some(vec!["id".into()])
        });
        assert!(!routes.alone);
        assert_eq!(calls, 2);
    }
}

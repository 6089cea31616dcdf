//! A change's fingerprint: SHA-256 over a canonical encoding of its operations, so that
//! "the same change" means the same content on every host and in every version: a
//! database plugin's dedupe table stores it beside an id to tell a replay from a reused
//! id, and the retry limit counts failures per fingerprint ([`crate::doubt`]). Never
//! `DefaultHasher`, whose output may change with the Rust version and which is not meant
//! to resist collisions.
//!
//! The encoding is unambiguous: every variable part is preceded by its length and every
//! value by a tag, so no two different changes encode alike. The change's id is not part
//! of it: the id is what the content is compared under.

use golconde_plugin_api::{Action, Change, Column, Value};
use sha2::{Digest, Sha256};

/// SHA-256 of a change's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of `change`'s operations (its id left out).
    pub fn of(change: &Change) -> Fingerprint {
        let mut hash = Sha256::new();
        length(&mut hash, change.operations.len());
        for op in change.operations.iter() {
            hash.update([match op.action {
                Action::Insert => b'I',
                Action::Upsert => b'U',
                Action::Update => b'u',
                Action::Delete => b'D',
            }]);
            bytes(&mut hash, op.table.as_bytes());
            columns(&mut hash, &op.data);
            columns(&mut hash, &op.restriction);
        }
        Fingerprint(hash.finalize().into())
    }

    /// Lower-case hexadecimal, as stored.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn length(hash: &mut Sha256, n: usize) {
    hash.update((n as u64).to_be_bytes());
}

fn bytes(hash: &mut Sha256, b: &[u8]) {
    length(hash, b.len());
    hash.update(b);
}

fn columns(hash: &mut Sha256, columns: &[Column]) {
    length(hash, columns.len());
    for column in columns {
        bytes(hash, column.name.as_bytes());
        value(hash, &column.value);
    }
}

fn value(hash: &mut Sha256, value: &Value) {
    match value {
        Value::Null => hash.update(b"n"),
        Value::Bool(b) => hash.update([b'b', u8::from(*b)]),
        Value::Int(i) => {
            hash.update(b"i");
            hash.update(i.to_be_bytes());
        }
        Value::Float(f) => {
            hash.update(b"f");
            hash.update(f.to_bits().to_be_bytes());
        }
        Value::Numeric(t) => {
            hash.update(b"d");
            bytes(hash, t.as_bytes());
        }
        Value::Text(t) => {
            hash.update(b"s");
            bytes(hash, t.as_bytes());
        }
        Value::Json(t) => {
            hash.update(b"j");
            bytes(hash, t.as_bytes());
        }
        Value::Bytes(b) => {
            hash.update(b"x");
            bytes(hash, b);
        }
        Value::Array(items) => {
            hash.update(b"a");
            length(hash, items.len());
            for item in items.iter() {
                self::value(hash, item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use golconde_plugin_api::{Operation, ROption, RVec};

    use super::*;

    fn change(table: &str, data: Vec<Column>) -> Change {
        Change {
            id: ROption::RSome("same".into()),
            operations: RVec::from(vec![Operation {
                action: Action::Upsert,
                table: table.into(),
                data: data.into(),
                restriction: RVec::new(),
            }]),
        }
    }

    #[test]
    fn equal_content_hashes_alike_and_any_difference_differently() {
        let a = change("t", vec![Column::new("a", Value::Text("bc".into()))]);
        assert_eq!(Fingerprint::of(&a), Fingerprint::of(&a.clone()));
        // Pinned, so that a change of encoding (which would make every stored hash
        // differ, and every replay apply again) cannot pass unnoticed.
        assert_eq!(
            Fingerprint::of(&a).hex(),
            "957e9559bb7e2ad55933d119d16ad7ff4656615afbbed3addf1d56558654582e"
        );
        let others = [
            change("t", vec![Column::new("ab", Value::Text("c".into()))]),
            change("t", vec![Column::new("a", Value::Numeric("bc".into()))]),
            change("u", vec![Column::new("a", Value::Text("bc".into()))]),
            change("t", vec![Column::new("a", Value::Array(vec![].into()))]),
            change("t", vec![Column::new("a", Value::Float(0.0))]),
            change("t", vec![Column::new("a", Value::Float(-0.0))]),
            change("t", vec![]),
        ];
        for (i, x) in others.iter().enumerate() {
            assert_ne!(Fingerprint::of(&a), Fingerprint::of(x), "{i}");
            for y in &others[i + 1..] {
                assert_ne!(Fingerprint::of(x), Fingerprint::of(y));
            }
        }
    }
}

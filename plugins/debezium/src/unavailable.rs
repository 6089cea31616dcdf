//! Debezium's placeholder for a value it does not have.
//!
//! PostgreSQL leaves an unchanged TOASTed value (a large text, bytea, array, jsonb…) out of
//! the WAL record of an `UPDATE`, and every TOASTed value out of a `DELETE`'s, unless the
//! table has `REPLICA IDENTITY FULL`; MySQL with `binlog_row_image=NOBLOB` leaves out
//! unchanged BLOB and TEXT columns. Debezium writes a placeholder in their place (the
//! connector's `unavailable.value.placeholder`, `__debezium_unavailable_value` unless set),
//! spelled after the column's type. Written to a replica, it would replace the real value
//! with the placeholder; so a column holding it is left out of the operation, and the
//! replica keeps what it has.

use base64::Engine;
use golconde_plugin_api::Value;
use md5::{Digest, Md5};

/// Every spelling of one placeholder.
#[derive(Debug)]
pub struct Placeholder {
    /// Text, `json`, `xml`, `enum` columns; also what a hstore map holds as key and value.
    text: String,
    /// A `bytes` column, decoded; an event without schema keeps it in base64.
    base64: String,
    /// A `uuid[]` column: the name-based (MD5, version 3) uuid of the placeholder's bytes,
    /// as Java's `UUID.nameUUIDFromBytes` makes it.
    uuid: String,
}

impl Placeholder {
    pub fn new(text: &str) -> Placeholder {
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&Md5::digest(text.as_bytes()));
        digest[6] = (digest[6] & 0x0f) | 0x30;
        digest[8] = (digest[8] & 0x3f) | 0x80;
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let uuid = format!(
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        );
        Placeholder {
            text: text.to_string(),
            base64: base64::engine::general_purpose::STANDARD.encode(text.as_bytes()),
            uuid,
        }
    }

    /// Whether `value` is the placeholder in one of the forms Debezium gives it: the text
    /// (or its base64, or a hstore/JSON map of it to itself), the bytes, or an array of one
    /// of those, of its uuid, or of its bytes as numbers (`int[]`, `bigint[]`).
    pub fn is(&self, value: &Value) -> bool {
        match value {
            Value::Text(t) | Value::Numeric(t) => self.is_text(t),
            Value::Json(j) => self.is_text(j) || self.is_map(j),
            Value::Bytes(b) => b.as_slice() == self.text.as_bytes(),
            Value::Array(items) => match items.as_slice() {
                [Value::Text(t)] => self.is_text(t) || t.as_str() == self.uuid,
                [Value::Bytes(b)] => b.as_slice() == self.text.as_bytes(),
                numbers => {
                    numbers.len() == self.text.len()
                        && numbers.iter().zip(self.text.bytes()).all(|(n, b)| {
                            // Java's bytes are signed; the placeholder is ASCII anyway.
                            *n == Value::Int(i64::from(b as i8))
                        })
                }
            },
            _ => false,
        }
    }

    fn is_text(&self, text: &str) -> bool {
        text == self.text || text == self.base64
    }

    /// `{"<placeholder>": "<placeholder>"}`, however it is spaced.
    fn is_map(&self, json: &str) -> bool {
        // Cheap test first: only a short text can be that map.
        if json.len() > 2 * self.text.len() + 16 || !json.contains(self.text.as_str()) {
            return false;
        }
        match serde_json::from_str::<std::collections::BTreeMap<String, String>>(json) {
            Ok(map) => map.len() == 1 && map.get(&self.text) == Some(&self.text),
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = "__debezium_unavailable_value";

    #[test]
    fn every_form_debezium_writes_is_recognised() {
        let p = Placeholder::new(DEFAULT);
        let text = |s: &str| Value::Text(s.into());
        assert!(p.is(&text(DEFAULT)));
        assert!(p.is(&Value::Json(DEFAULT.into())));
        assert!(p.is(&Value::Json(
            r#"{"__debezium_unavailable_value": "__debezium_unavailable_value"}"#.into()
        )));
        assert!(p.is(&Value::Bytes(DEFAULT.as_bytes().to_vec().into())));
        assert!(p.is(&text("X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ==")));
        assert!(p.is(&Value::Array(vec![text(DEFAULT)].into())));
        assert!(p.is(&Value::Array(
            vec![text("b68a35a7-17ad-35b3-af2a-ae46edb4545a")].into()
        )));
        let numbers: Vec<Value> = DEFAULT.bytes().map(|b| Value::Int(i64::from(b))).collect();
        assert!(p.is(&Value::Array(numbers.into())));
    }

    #[test]
    fn real_values_are_not_taken_for_it() {
        let p = Placeholder::new(DEFAULT);
        for value in [
            Value::Null,
            Value::Text("".into()),
            Value::Text("__debezium_unavailable_valu".into()),
            Value::Array(vec![].into()),
            Value::Array(vec![Value::Text(DEFAULT.into()), Value::Null].into()),
            Value::Json(r#"{"__debezium_unavailable_value": "x"}"#.into()),
            Value::Array(vec![Value::Int(95)].into()),
        ] {
            assert!(!p.is(&value), "{value:?}");
        }
        let custom = Placeholder::new("<missing>");
        assert!(custom.is(&Value::Text("<missing>".into())));
        assert!(!custom.is(&Value::Text(DEFAULT.into())));
    }
}

//! What a database plugin's applied-change table holds besides SQL: the stored form of
//! what a change returned (an insert's generated keys), so that the fan-out copy of a
//! replayed `add` still carries the keys the first delivery got, and when to prune the
//! table. The form is stored: changing it would make every stored entry unreadable.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use base64::Engine;
use golconde_plugin_api::{Column, RVec, Value};
use serde_json::{json, Value as Json};

/// Whose turn it is to prune the table, among the sessions of one database instance.
#[derive(Debug, Default)]
pub struct Pruning {
    last: Mutex<Option<Instant>>,
}

impl Pruning {
    /// Whether it is time to prune entries kept for `retention`; claims the turn if so.
    /// Pruning runs ten times per retention period, and at least every ten minutes.
    pub fn due(&self, retention: Duration) -> bool {
        let interval = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(600));
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match *last {
            Some(at) if at.elapsed() < interval => false,
            _ => {
                *last = Some(Instant::now());
                true
            }
        }
    }
}

/// What a change returned, as stored: `None` when it returned nothing.
pub fn encode(returned: &[RVec<Column>]) -> Option<String> {
    if returned.iter().all(|r| r.is_empty()) {
        return None;
    }
    let ops: Vec<Json> = returned
        .iter()
        .map(|columns| {
            Json::Array(
                columns
                    .iter()
                    .map(|c| json!([c.name.as_str(), encode_value(&c.value)]))
                    .collect(),
            )
        })
        .collect();
    Some(Json::Array(ops).to_string())
}

/// The inverse of [`encode`]; anything unreadable counts as nothing returned.
pub fn decode(stored: Option<&str>, operations: usize) -> RVec<RVec<Column>> {
    let mut returned: Vec<RVec<Column>> = stored
        .and_then(|s| serde_json::from_str::<Vec<Vec<(String, Json)>>>(s).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|columns| {
            columns
                .into_iter()
                .map(|(name, value)| Column::new(name, decode_value(&value)))
                .collect()
        })
        .collect();
    returned.resize(operations, RVec::new());
    returned.into()
}

/// A value as `[tag, text]`, so that no number goes through an `f64`.
fn encode_value(value: &Value) -> Json {
    match value {
        Value::Null => json!(["n"]),
        Value::Bool(b) => json!(["b", b.to_string()]),
        Value::Int(i) => json!(["i", i.to_string()]),
        Value::Float(f) => json!(["f", f.to_string()]),
        Value::Numeric(t) => json!(["d", t.as_str()]),
        Value::Text(t) => json!(["s", t.as_str()]),
        Value::Json(t) => json!(["j", t.as_str()]),
        Value::Bytes(b) => json!([
            "x",
            base64::engine::general_purpose::STANDARD.encode(b.as_slice())
        ]),
        Value::Array(items) => json!(["a", items.iter().map(encode_value).collect::<Vec<_>>()]),
    }
}

fn decode_value(json: &Json) -> Value {
    let tag = json.get(0).and_then(Json::as_str).unwrap_or("n");
    let item = json.get(1);
    let text = item.and_then(Json::as_str).unwrap_or_default();
    match tag {
        "b" => Value::Bool(text == "true"),
        "i" => text.parse().map(Value::Int).unwrap_or(Value::Null),
        "f" => text.parse().map(Value::Float).unwrap_or(Value::Null),
        "d" => Value::Numeric(text.into()),
        "s" => Value::Text(text.into()),
        "j" => Value::Json(text.into()),
        "x" => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(|b| Value::Bytes(b.into()))
            .unwrap_or(Value::Null),
        "a" => Value::Array(
            item.and_then(Json::as_array)
                .map(|items| items.iter().map(decode_value).collect())
                .unwrap_or_default(),
        ),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returned_columns_survive_the_round_trip() {
        let returned = vec![
            RVec::from(vec![
                Column::new("id", Value::Int(i64::MAX)),
                Column::new("code", Value::Text("a\"b".into())),
                Column::new(
                    "big",
                    Value::Numeric("123456789012345678901234567890".into()),
                ),
            ]),
            RVec::new(),
        ];
        let stored = encode(&returned).unwrap();
        assert_eq!(decode(Some(&stored), 2).into_vec(), returned);
        assert_eq!(encode(&[RVec::new()]), None);
        assert_eq!(decode(None, 1).into_vec(), vec![RVec::new()]);
    }

    #[test]
    fn every_kind_of_value_survives_the_round_trip() {
        let values = vec![
            Value::Null,
            Value::Bool(true),
            Value::Int(i64::MIN),
            Value::Float(0.1),
            Value::Numeric("1e400".into()),
            Value::Text("é\0".into()),
            Value::Json(r#"{"a": [1]}"#.into()),
            Value::Bytes(vec![0, 255].into()),
            Value::Array(vec![Value::Int(1), Value::Array(vec![Value::Null].into())].into()),
        ];
        let returned: Vec<RVec<Column>> = values
            .into_iter()
            .map(|v| RVec::from(vec![Column::new("c", v)]))
            .collect();
        let stored = encode(&returned).unwrap();
        assert_eq!(decode(Some(&stored), returned.len()).into_vec(), returned);
        // Pinned: entries already stored must stay readable.
        assert_eq!(
            encode(&[RVec::from(vec![Column::new("id", Value::Int(7))])]).unwrap(),
            r#"[[["id",["i","7"]]]]"#
        );
        assert_eq!(decode(Some("not json"), 1).into_vec(), vec![RVec::new()]);
    }

    #[test]
    fn one_session_at_a_time_gets_the_turn_to_prune() {
        let pruning = Pruning::default();
        assert!(pruning.due(Duration::from_secs(3600)));
        assert!(!pruning.due(Duration::from_secs(3600)));
        *pruning.last.lock().unwrap() = Instant::now().checked_sub(Duration::from_secs(601));
        assert!(pruning.due(Duration::from_secs(86_400)));
    }
}

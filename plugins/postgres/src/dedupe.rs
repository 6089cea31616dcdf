//! The applied-change table, `SCHEMA.applied` (`golconde.applied` unless `dedupe_schema`
//! says otherwise): the ids of committed changes, written in the same transaction as the
//! changes, so a replayed id is recognised and skipped.
//!
//! Each entry also keeps what its change returned (an insert's generated keys), so the
//! fan-out copy of a replayed `add` still carries the keys the first delivery got.

use std::collections::HashMap;

use base64::Engine;
use golconde_plugin_api::{Column, RVec, Value};
use serde_json::{json, Value as Json};
use tokio_postgres::Client;

use crate::schema::quote_ident;

/// The table's name, quoted, in `schema`.
fn table(schema: &str) -> String {
    format!("{}.applied", quote_ident(schema))
}

/// Creates the table if missing. Serialised by an advisory lock, so that sessions (and
/// hosts) starting together do not trip over each other's `CREATE`.
pub async fn ensure_table(client: &Client, schema: &str) -> Result<(), tokio_postgres::Error> {
    let table = table(schema);
    client
        .batch_execute(&format!(
            "BEGIN;
             SELECT pg_catalog.pg_advisory_xact_lock(7310418265513690131);
             CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {table} (
                 id text PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now(),
                 returned text
             );
             ALTER TABLE {table} ADD COLUMN IF NOT EXISTS returned text;
             CREATE INDEX IF NOT EXISTS applied_applied_at ON {table} (applied_at);
             COMMIT;",
            schema = quote_ident(schema),
        ))
        .await
}

/// The ids among `ids` applied before, with what their change returned.
pub async fn seen(
    client: &Client,
    schema: &str,
    ids: &[&str],
) -> Result<HashMap<String, Option<String>>, tokio_postgres::Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = client
        .query(
            &format!(
                "SELECT id, returned FROM {} WHERE id = ANY($1::text[])",
                table(schema)
            ),
            &[&ids],
        )
        .await?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Records `entries` (id, returned); answers how many were new. Fewer than given means
/// another session committed one of the same ids meanwhile.
pub async fn record(
    client: &Client,
    schema: &str,
    entries: &[(String, Option<String>)],
) -> Result<usize, tokio_postgres::Error> {
    if entries.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
    let returned: Vec<Option<&str>> = entries.iter().map(|(_, r)| r.as_deref()).collect();
    let rows = client
        .query(
            &format!(
                "INSERT INTO {} (id, returned)
                 SELECT * FROM unnest($1::text[], $2::text[])
                 ON CONFLICT (id) DO NOTHING RETURNING 1",
                table(schema)
            ),
            &[&ids, &returned],
        )
        .await?;
    Ok(rows.len())
}

/// Forgets entries older than `retention_s` seconds.
pub async fn prune(
    client: &Client,
    schema: &str,
    retention_s: f64,
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute(
            &format!(
                "DELETE FROM {} WHERE applied_at < now() - $1::float8 * interval '1 second'",
                table(schema)
            ),
            &[&retention_s],
        )
        .await
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
}

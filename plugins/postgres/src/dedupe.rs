//! The applied-change table, `SCHEMA.applied` (`golconde.applied` unless `dedupe_schema`
//! says otherwise): the ids of committed changes, written in the same transaction as the
//! changes, so a replayed id is recognised and skipped.
//!
//! An id is scoped by the tables its change writes (`scope`: their resolved, quoted names,
//! sorted, joined by commas): two producers or pipelines that happen to use the same ids
//! for different tables never skip each other's changes. Beside it is the change's
//! [`Fingerprint`] (`hash`): a change whose id and scope were applied with the same
//! content is a replay; with other content it is not (a producer reusing ids), so it
//! applies, with a warning, and its content becomes the one later replays are compared
//! with.
//!
//! Each entry also keeps what its change returned (an insert's generated keys), so the
//! fan-out copy of a replayed `add` still carries the keys the first delivery got.
//!
//! Entries written before scopes existed (an `applied` table whose key is the id alone)
//! are migrated in place: they get the scope `''`, no hash, and keep skipping any change
//! with their id until they are pruned, as they did.
//!
//! [`Fingerprint`]: golconde_plugin_support::fingerprint::Fingerprint

use std::collections::HashMap;

pub use golconde_plugin_support::applied::{decode, encode};
use tokio_postgres::Client;

use crate::schema::quote_ident;

/// The scope of entries written before scopes existed: they match an id in any scope.
pub const LEGACY_SCOPE: &str = "";

/// The table's name, quoted, in `schema`.
fn table(schema: &str) -> String {
    format!("{}.applied", quote_ident(schema))
}

/// Creates the table if missing, and brings one of an earlier shape to this one.
/// Serialised by an advisory lock (the one earlier versions took too), so that sessions
/// and hosts starting together do not trip over each other's `CREATE` or `ALTER`; each
/// step is idempotent, so whoever comes second finds nothing left to do.
pub async fn ensure_table(client: &Client, schema: &str) -> Result<(), tokio_postgres::Error> {
    let result = migrate(client, schema).await;
    if result.is_err() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    result
}

async fn migrate(client: &Client, schema: &str) -> Result<(), tokio_postgres::Error> {
    let table = table(schema);
    client
        .batch_execute(&format!(
            "BEGIN;
             SELECT pg_catalog.pg_advisory_xact_lock(7310418265513690131);
             CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {table} (
                 scope text NOT NULL DEFAULT '',
                 id text NOT NULL,
                 hash text,
                 applied_at timestamptz NOT NULL DEFAULT now(),
                 returned text,
                 PRIMARY KEY (scope, id)
             );
             ALTER TABLE {table} ADD COLUMN IF NOT EXISTS returned text;
             ALTER TABLE {table} ADD COLUMN IF NOT EXISTS scope text NOT NULL DEFAULT '';
             ALTER TABLE {table} ADD COLUMN IF NOT EXISTS hash text;
             CREATE INDEX IF NOT EXISTS applied_applied_at ON {table} (applied_at);",
            schema = quote_ident(schema),
        ))
        .await?;
    // A table of the first shape has its primary key on `id` alone.
    let key = client
        .query_opt(
            "SELECT c.conname::text,
                    ARRAY(SELECT a.attname::text
                          FROM unnest(c.conkey) WITH ORDINALITY k(attnum, ord)
                          JOIN pg_catalog.pg_attribute a
                            ON a.attrelid = c.conrelid AND a.attnum = k.attnum
                          ORDER BY k.ord)
             FROM pg_catalog.pg_constraint c
             WHERE c.conrelid = pg_catalog.to_regclass($1) AND c.contype = 'p'",
            &[&table],
        )
        .await?;
    if let Some(row) = key {
        let (name, columns): (String, Vec<String>) = (row.get(0), row.get(1));
        if columns != ["scope", "id"] {
            tracing::info!(
                "migrating {table}: its key becomes (scope, id); the entries it holds keep \
                 skipping their ids until pruned"
            );
            client
                .batch_execute(&format!(
                    "ALTER TABLE {table} DROP CONSTRAINT {}, ADD PRIMARY KEY (scope, id)",
                    quote_ident(&name)
                ))
                .await?;
        }
    }
    client.batch_execute("COMMIT").await
}

/// One entry of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub scope: String,
    pub id: String,
    /// The fingerprint of the change applied under this id; `None` in entries written
    /// before fingerprints were.
    pub hash: Option<String>,
    /// What the change returned, as [`encode`]d.
    pub returned: Option<String>,
}

/// The entries for `ids` in any of `scopes` (and in [`LEGACY_SCOPE`]), by scope and id.
pub async fn seen(
    client: &Client,
    schema: &str,
    ids: &[&str],
    scopes: &[&str],
) -> Result<HashMap<(String, String), Entry>, tokio_postgres::Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut scopes = scopes.to_vec();
    scopes.push(LEGACY_SCOPE);
    let rows = client
        .query(
            &format!(
                "SELECT scope, id, hash, returned FROM {}
                 WHERE id = ANY($1::text[]) AND scope = ANY($2::text[])",
                table(schema)
            ),
            &[&ids, &scopes],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let entry = Entry {
                scope: r.get(0),
                id: r.get(1),
                hash: r.get(2),
                returned: r.get(3),
            };
            ((entry.scope.clone(), entry.id.clone()), entry)
        })
        .collect())
}

/// Records `entries`, each (scope, id) at most once: a new one is inserted, one there
/// with another hash takes this one's. Answers how many were written; fewer than given
/// means another session committed one of them, with the same content, meanwhile.
pub async fn record(
    client: &Client,
    schema: &str,
    entries: &[Entry],
) -> Result<usize, tokio_postgres::Error> {
    if entries.is_empty() {
        return Ok(0);
    }
    let column =
        |f: fn(&Entry) -> Option<&str>| -> Vec<Option<&str>> { entries.iter().map(f).collect() };
    let scopes = column(|e| Some(e.scope.as_str()));
    let ids = column(|e| Some(e.id.as_str()));
    let hashes = column(|e| e.hash.as_deref());
    let returned = column(|e| e.returned.as_deref());
    let rows = client
        .query(
            &format!(
                "INSERT INTO {} AS a (scope, id, hash, returned)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
                 ON CONFLICT (scope, id) DO UPDATE
                 SET hash = EXCLUDED.hash, returned = EXCLUDED.returned, applied_at = now()
                 WHERE a.hash IS DISTINCT FROM EXCLUDED.hash
                 RETURNING 1",
                table(schema)
            ),
            &[&scopes, &ids, &hashes, &returned],
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

//! The applied-change table, `DATABASE.applied` (`golconde.applied` unless
//! `dedupe_database` says otherwise): the ids of committed changes, written in the same
//! transaction as the changes, so a replayed id is recognised and skipped.
//!
//! An id is scoped by the tables its change writes (`scope`: their resolved, quoted names,
//! sorted, joined by commas): two producers or pipelines that happen to use the same ids
//! for different tables never skip each other's changes. Beside it is the change's
//! [`Fingerprint`] (`hash`): a change whose id and scope were applied with the same
//! content is a replay; with other content it is not (a producer reusing ids), so it
//! applies, with a warning, and its content becomes the one later replays are compared
//! with. Each entry also keeps what its change returned (an insert's generated keys), so
//! the fan-out copy of a replayed `add` still carries the keys the first delivery got.
//!
//! Scopes and ids may be long, longer than an InnoDB key may be, so the table is keyed by
//! `k`, the SHA-256 of scope and id. Entries are read with `FOR UPDATE`: two sessions
//! applying the same id at once lock the same key (or the gap where it would be), so one
//! of them waits or fails with a deadlock, is retried, and then finds the other's entry.
//!
//! [`Fingerprint`]: golconde_plugin_support::fingerprint::Fingerprint

use std::collections::HashMap;

pub use golconde_plugin_support::applied::{decode, encode};
use mysql_async::{prelude::Queryable, Conn, Value as MyValue};
use sha2::{Digest, Sha256};

use crate::{plan::MAX_PLACEHOLDERS, schema::quote_ident};

/// The table's name, quoted, in `database`.
fn table(database: &str) -> String {
    format!("{}.`applied`", quote_ident(database))
}

/// Creates the database and the table if missing.
pub async fn ensure_table(conn: &mut Conn, database: &str) -> Result<(), mysql_async::Error> {
    conn.query_drop(format!(
        "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET utf8mb4",
        quote_ident(database)
    ))
    .await?;
    conn.query_drop(format!(
        "CREATE TABLE IF NOT EXISTS {} (
             k BINARY(32) NOT NULL PRIMARY KEY,
             scope TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
             id TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
             hash CHAR(64) CHARACTER SET ascii,
             applied_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
             returned LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
             INDEX applied_at (applied_at)
         ) ENGINE = InnoDB",
        table(database)
    ))
    .await
}

/// One entry of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub scope: String,
    pub id: String,
    /// The fingerprint of the change applied under this id.
    pub hash: Option<String>,
    /// What the change returned, as [`encode`]d.
    pub returned: Option<String>,
}

impl Entry {
    /// The table's key for this entry's scope and id.
    fn key(&self) -> Vec<u8> {
        key(&self.scope, &self.id)
    }
}

fn key(scope: &str, id: &str) -> Vec<u8> {
    let mut hash = Sha256::new();
    hash.update((scope.len() as u64).to_be_bytes());
    hash.update(scope.as_bytes());
    hash.update(id.as_bytes());
    hash.finalize().to_vec()
}

/// The entries for these (scope, id) pairs, by scope and id, locked until the
/// transaction ends.
pub async fn seen(
    conn: &mut Conn,
    database: &str,
    entries: &[&Entry],
) -> Result<HashMap<(String, String), Entry>, mysql_async::Error> {
    let mut found = HashMap::new();
    for chunk in entries.chunks(MAX_PLACEHOLDERS) {
        if chunk.is_empty() {
            continue;
        }
        let sql = format!(
            "SELECT scope, id, hash, returned FROM {} WHERE k IN ({}) FOR UPDATE",
            table(database),
            vec!["?"; chunk.len()].join(", ")
        );
        let keys: Vec<MyValue> = chunk.iter().map(|e| MyValue::Bytes(e.key())).collect();
        let rows: Vec<(String, String, Option<String>, Option<String>)> =
            conn.exec(sql, keys).await?;
        for (scope, id, hash, returned) in rows {
            found.insert(
                (scope.clone(), id.clone()),
                Entry {
                    scope,
                    id,
                    hash,
                    returned,
                },
            );
        }
    }
    Ok(found)
}

/// Records `entries`, each (scope, id) at most once: a new one is inserted, one there
/// with another hash takes this one's.
pub async fn record(
    conn: &mut Conn,
    database: &str,
    entries: &[Entry],
) -> Result<(), mysql_async::Error> {
    for chunk in entries.chunks(MAX_PLACEHOLDERS / 5) {
        if chunk.is_empty() {
            continue;
        }
        let sql = format!(
            "INSERT INTO {} (k, scope, id, hash, returned) VALUES {}
             ON DUPLICATE KEY UPDATE
                 applied_at = IF(hash <=> VALUES(hash), applied_at, CURRENT_TIMESTAMP(6)),
                 returned = IF(hash <=> VALUES(hash), returned, VALUES(returned)),
                 hash = VALUES(hash)",
            table(database),
            vec!["(?, ?, ?, ?, ?)"; chunk.len()].join(", ")
        );
        let text = |t: &Option<String>| match t {
            Some(t) => MyValue::Bytes(t.as_bytes().to_vec()),
            None => MyValue::NULL,
        };
        let params: Vec<MyValue> = chunk
            .iter()
            .flat_map(|e| {
                [
                    MyValue::Bytes(e.key()),
                    MyValue::Bytes(e.scope.as_bytes().to_vec()),
                    MyValue::Bytes(e.id.as_bytes().to_vec()),
                    text(&e.hash),
                    text(&e.returned),
                ]
            })
            .collect();
        conn.exec_drop(sql, params).await?;
    }
    Ok(())
}

/// Forgets entries older than `retention_s` seconds; answers how many.
pub async fn prune(
    conn: &mut Conn,
    database: &str,
    retention_s: u64,
) -> Result<u64, mysql_async::Error> {
    conn.exec_drop(
        format!(
            "DELETE FROM {} WHERE applied_at < CURRENT_TIMESTAMP(6) - INTERVAL ? SECOND",
            table(database)
        ),
        (retention_s,),
    )
    .await?;
    Ok(conn.affected_rows())
}

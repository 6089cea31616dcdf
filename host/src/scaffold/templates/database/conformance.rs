//! The database conformance suite of `golconde_plugin_api::testing`, run against
//! `{{name}}` through the same ABI the host uses: what the host relies on (a bad key in the
//! configuration is named, upserts, updates and deletes read back, a bad change fails alone
//! as a permanent error while the rest of its batch commits, an insert returns its
//! generated key). Add your own tests beside it.

use std::{fs, path::Path};

use golconde_plugin_api::testing::{
    self,
    conformance::{self, KeyKind},
};
use serde_json::{json, Value as Json};

// The plugin under test: this crate, linked as an rlib.
use {{lib}}::Files;

#[test]
fn conforms() {
    let dir = tempfile::tempdir().unwrap();
    let config = |dir: &Path| {
        json!({
            "dir": dir,
            "tables": {"items": {"key": "id", "columns": ["id", "value"]}},
        })
        .to_string()
    };
    let table = dir.path().join("items.json");
    let missing = dir.path().join("missing");
    conformance::database::<Files>(conformance::DatabaseSuite {
        config: config(dir.path()),
        table: "items".into(),
        key_column: "id".into(),
        key_kind: KeyKind::Integer,
        value_column: "value".into(),
        read: Box::new(move |key| read(&table, key)),
        generated_key: true,
        // Files have no server: a folder that does not exist stands for one that cannot be
        // reached, which `connect` must answer with a transient error.
        config_at: Some(Box::new(move |_, _| config(&missing))),
        library: Some(testing::library!({{lib}})),
        ..Default::default()
    });
}

/// The `value` of the row whose `id` is `key`, read from the table's file, outside the
/// plugin.
fn read(table: &Path, key: &str) -> Option<String> {
    let rows: Vec<Json> = serde_json::from_slice(&fs::read(table).ok()?).unwrap();
    let row = rows.iter().find(|row| match &row["id"] {
        Json::String(text) => text == key,
        Json::Number(number) => number.to_string() == key,
        _ => false,
    })?;
    row["value"].as_str().map(str::to_string)
}

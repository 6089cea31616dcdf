//! `memory`: a database of text-keyed tables in memory, each batch applied to a copy and
//! swapped in whole, with a `flaw` to switch on one broken rule at a time.

use std::{
    collections::BTreeMap,
    sync::{Mutex, MutexGuard},
};

use abi_stable::std_types::RVec;
use serde::Deserialize;

use super::{failures, reach};
use crate::{
    testing::{conformance, library},
    Action, Applied, Change, Column, Database, ErrorKind, Host, Plugin, PluginError, Session,
    Value,
};

/// Table → key → value column.
type Tables = BTreeMap<String, BTreeMap<String, Option<String>>>;

static TABLES: Mutex<Tables> = Mutex::new(BTreeMap::new());
/// How often each instance `tag`'s connections were cut.
static CUTS: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
static GENERATED: Mutex<u64> = Mutex::new(0);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// Names the instance, so that cutting one test's connections leaves the others'.
    tag: String,
    #[serde(default)]
    flaw: String,
    /// A server to reach before connecting (never one that answers).
    #[serde(default)]
    address: Option<String>,
}

pub struct Memory {
    tag: String,
    flaw: String,
    address: Option<String>,
}

impl Plugin for Memory {
    const NAME: &'static str = "memory";
    const VERSION: &'static str = "1.0.0";
    const DESCRIPTION: &'static str = "tables in memory";
    type Config = MemoryConfig;

    fn new(config: MemoryConfig, _host: &Host) -> Result<Self, PluginError> {
        Ok(Memory {
            tag: config.tag,
            flaw: config.flaw,
            address: config.address,
        })
    }
}

impl Database for Memory {
    type Session = MemorySession;

    fn connect(&self) -> Result<MemorySession, PluginError> {
        if let Some(address) = &self.address {
            reach(address)?;
        }
        Ok(MemorySession {
            tag: self.tag.clone(),
            flaw: self.flaw.clone(),
            cuts: lock(&CUTS).get(&self.tag).copied().unwrap_or(0),
        })
    }

    fn key_columns(&self, table: &str) -> Result<Vec<String>, PluginError> {
        match lock(&TABLES).contains_key(table) {
            true => Ok(vec!["id".into()]),
            false => Err(PluginError::permanent(format!("no table `{table}`"))),
        }
    }
}

pub struct MemorySession {
    tag: String,
    flaw: String,
    /// The instance's cuts when the session was opened: any later one closed it.
    cuts: u64,
}

fn as_text(column: &Column) -> Result<String, PluginError> {
    match &column.value {
        Value::Text(t) => Ok(t.to_string()),
        Value::Int(n) => Ok(n.to_string()),
        other => Err(PluginError::permanent(format!(
            "column `{}`: {other:?} is not text",
            column.name
        ))),
    }
}

impl MemorySession {
    fn apply_one(&self, tables: &mut Tables, change: &Change) -> Result<Applied, PluginError> {
        let mut returned = RVec::new();
        for op in change.operations.iter() {
            let Some(table) = tables.get_mut(op.table.as_str()) else {
                let message = format!("no table `{}`", op.table);
                return Err(match self.flaw.as_str() {
                    "missing_is_transient" => PluginError::transient(message),
                    _ => PluginError::permanent(message),
                });
            };
            let (mut key, mut value) = (None, None);
            for column in op.data.iter().chain(op.restriction.iter()) {
                match column.name.as_str() {
                    "id" => key = Some(as_text(column)?),
                    "value" => value = Some(as_text(column)?),
                    other => {
                        return Err(PluginError::permanent(format!(
                            "table `{}` has no column `{other}`",
                            op.table
                        )))
                    }
                }
            }
            let mut columns = RVec::new();
            match op.action {
                Action::Insert => {
                    let key = key.unwrap_or_else(|| {
                        let mut next = lock(&GENERATED);
                        *next += 1;
                        format!("gen-{}", *next)
                    });
                    if self.flaw != "no_returned" {
                        columns.push(Column::new("id", Value::Text(key.as_str().into())));
                    }
                    table.insert(key, value);
                }
                Action::Upsert => {
                    let key = key.ok_or_else(|| PluginError::permanent("an upsert needs `id`"))?;
                    table.insert(key, value);
                }
                Action::Update => {
                    if let Some(row) = key.and_then(|key| table.get_mut(&key)) {
                        *row = value;
                    }
                }
                Action::Delete => {
                    if let Some(key) = key {
                        table.remove(&key);
                    }
                }
            }
            returned.push(columns);
        }
        Ok(Applied {
            returned,
            duplicate: false,
        })
    }
}

impl Session for MemorySession {
    fn apply(
        &mut self,
        changes: &[Change],
    ) -> Result<Vec<Result<Applied, PluginError>>, PluginError> {
        let mut tables = lock(&TABLES);
        if lock(&CUTS).get(&self.tag).copied().unwrap_or(0) > self.cuts {
            if self.flaw == "partial_on_cut" {
                if let Some(first) = changes.first() {
                    let _ = self.apply_one(&mut tables, first);
                }
            }
            return Err(PluginError::transient("the connection was cut"));
        }
        let mut working = tables.clone();
        let mut results = Vec::new();
        for change in changes {
            let mut attempt = working.clone();
            match self.apply_one(&mut attempt, change) {
                Ok(applied) => {
                    working = attempt;
                    results.push(Ok(applied));
                }
                Err(e) if self.flaw == "whole_batch" => {
                    return Err(PluginError::new(
                        ErrorKind::Permanent,
                        e.message.to_string(),
                    ))
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if self.flaw == "short_results" {
            results.pop();
        }
        *tables = working;
        Ok(results)
    }
}

/// The suite for a table of its own, with `flaw`.
fn suite(table: &str, flaw: &str) -> conformance::DatabaseSuite {
    lock(&TABLES).insert(table.to_string(), BTreeMap::new());
    let tag = table.to_string();
    let read = {
        let table = table.to_string();
        Box::new(move |key: &str| {
            lock(&TABLES)
                .get(&table)
                .and_then(|rows| rows.get(key).cloned())
                .map(|value| value.unwrap_or_else(|| "NULL".into()))
        })
    };
    let disconnect = {
        let tag = tag.clone();
        Box::new(move || *lock(&CUTS).entry(tag.clone()).or_default() += 1)
    };
    conformance::DatabaseSuite {
        config: serde_json::json!({"tag": tag, "flaw": flaw}).to_string(),
        table: table.into(),
        key_column: "id".into(),
        value_column: "value".into(),
        read,
        generated_key: true,
        disconnect: Some(disconnect),
        config_at: Some(Box::new(move |host, port| {
            serde_json::json!({"tag": "unreachable", "address": format!("{host}:{port}")})
                .to_string()
        })),
        library: Some(library!(crate::testing::conformance::tests)),
        ..Default::default()
    }
}

/// The checks that failed, after the table is dropped.
fn run(table: &str, flaw: &str) -> Vec<String> {
    let failed = failures(|| conformance::database::<Memory>(suite(table, flaw)));
    lock(&TABLES).remove(table);
    failed
}

#[test]
fn a_database_that_keeps_the_contract_passes_and_is_left_as_it_was() {
    let failed = failures(|| conformance::database::<Memory>(suite("s.kept", "")));
    assert_eq!(failed, Vec::<String>::new());
    let left = lock(&TABLES).remove("s.kept").unwrap_or_default();
    assert!(left.is_empty(), "the suite left rows behind: {left:?}");
}

#[test]
fn a_batch_failed_whole_for_one_bad_change_is_reported() {
    assert_eq!(
        run("s.whole", "whole_batch"),
        [
            "a change naming a column the table lacks fails alone, as a permanent error \
             naming the column; the rest of its batch applies",
            "a change to a missing table fails alone, as a permanent error",
        ]
    );
}

#[test]
fn a_missing_table_taken_for_transient_is_reported() {
    assert_eq!(
        run("s.missing", "missing_is_transient"),
        ["a change to a missing table fails alone, as a permanent error"]
    );
}

#[test]
fn a_failed_batch_left_half_applied_is_reported() {
    assert_eq!(
        run("s.partial", "partial_on_cut"),
        [
            "a batch after the connection was cut is a transient error that leaves \
             nothing, or applies whole"
        ]
    );
}

#[test]
fn an_insert_that_returns_no_key_is_reported() {
    assert_eq!(
        run("s.returned", "no_returned"),
        ["an insert returns its generated key, under which the row is"]
    );
}

#[test]
fn fewer_results_than_changes_are_reported() {
    let failed = run("s.short", "short_results");
    assert!(
        failed.contains(&"an upsert inserts a new row".to_string()),
        "{failed:#?}"
    );
    assert!(
        failed.contains(&"a new instance, built after the errors, works".to_string()),
        "{failed:#?}"
    );
}

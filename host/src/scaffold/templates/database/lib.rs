//! `{{name}}`: a Golconde database plugin, which applies batches of changes to a database,
//! each batch in one transaction.
//!
//! This is the starting point `golconde new-plugin` wrote: a database of JSON files, one
//! per table, in the folder `dir`. It is small, but it keeps every promise the host relies
//! on, so you can keep its shape when you put a real database behind it:
//! - a batch is applied all or nothing: changed tables are written to new files, which a
//!   commit record then makes current ([`commit`], [`recover`]);
//! - a change that can never apply (a table or column that does not exist, a duplicate
//!   key) is reported alone, as a permanent error, and the batch's other changes commit;
//! - an insert without its key gets the next integer, reported back to the host
//!   ([`Applied::returned`]) so that the copies fanned out to replicas carry it.
//!
//! To keep it short, tables are declared in the configuration, each with one key column;
//! a real database has a catalogue to ask instead.
//!
//! How the host uses a database: one instance per `[databases.NAME]` section, shared by
//! every pipeline that names it; each database worker opens a [`Session`] of its own with
//! `connect`, then hands it one batch at a time. Every call is blocking and plain Rust: a
//! client library that is async runs its own runtime inside the plugin.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::{self, File, TryLockError},
    io::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use golconde_plugin_api::{
    export_plugins, Action, Applied, Change, Column, Database, Host, Operation, Plugin,
    PluginError, RVec, Session, Value,
};
use serde::Deserialize;
use serde_json::Value as Json;

/// The database's section of the configuration file:
///
/// ```toml
/// [databases.files]
/// plugin = "{{name}}"
/// dir = "data"
/// tables.users = { key = "id", columns = ["id", "name", "email"] }
/// ```
///
/// `deny_unknown_fields` makes a misspelt key an error that names it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The folder of the table files, relative to the configuration file's folder.
    dir: PathBuf,
    /// Every table, by name.
    tables: BTreeMap<String, Table>,
}

/// What the plugin knows of a table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    /// The primary key: one column.
    key: String,
    /// Every column, the key among them.
    columns: Vec<String>,
}

/// The validated configuration, shared by the database and its sessions.
struct Schema {
    dir: PathBuf,
    tables: BTreeMap<String, Table>,
}

/// The plugin: what `new` validated, and nothing open. Sessions hold the connections.
pub struct Files {
    schema: Arc<Schema>,
}

impl Plugin for Files {
    /// What configuration files say: `plugin = "{{name}}"`.
    const NAME: &'static str = "{{name}}";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    /// One line for `golconde plugins`.
    const DESCRIPTION: &'static str = "a database of JSON files, one per table";
    type Config = Config;

    /// Validates the configuration. Never connect or open anything here: `golconde check`
    /// builds every plugin to validate a configuration, on a machine that may reach
    /// nothing. A bad value is a config error that names its key and says what to do.
    fn new(config: Config, host: &Host) -> Result<Self, PluginError> {
        // Relative paths mean relative to the configuration file, not to wherever the
        // daemon was started.
        let dir = host.resolve("dir", &config.dir)?;
        for (name, table) in &config.tables {
            if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\']) {
                return Err(PluginError::config(format!(
                    "`tables.{name}`: a table's name is its file's name, so it may not be \
                     empty, start with `.` or hold a `/`"
                )));
            }
            if !table.columns.contains(&table.key) {
                return Err(PluginError::config(format!(
                    "`tables.{name}.key` = {:?} is not among its `columns`: add it there",
                    table.key
                )));
            }
        }
        Ok(Files {
            schema: Arc::new(Schema {
                dir,
                tables: config.tables,
            }),
        })
    }
}

impl Database for Files {
    type Session = FileSession;

    /// Opens a session: for a real database, a connection, with a timeout (a worker waits
    /// on it). The host takes any error here for the database's, never a message's: it
    /// backs off and tries again while the pipeline waits. So a missing folder is a
    /// transient error, which says what to do.
    fn connect(&self) -> Result<FileSession, PluginError> {
        if !self.schema.dir.is_dir() {
            return Err(PluginError::transient(format!(
                "the folder {} (`dir`) does not exist: create it",
                self.schema.dir.display()
            )));
        }
        Ok(FileSession {
            schema: self.schema.clone(),
        })
    }

    /// The primary key of `table`, which the host uses to send every change of one row to
    /// the same worker, in queue order. An error only makes the batch run alone.
    fn key_columns(&self, table: &str) -> Result<Vec<String>, PluginError> {
        match self.schema.tables.get(table) {
            Some(t) => Ok(vec![t.key.clone()]),
            None => Err(no_table(table)),
        }
    }
}

/// One session. Files need no connection; a real database's session owns one.
pub struct FileSession {
    schema: Arc<Schema>,
}

impl Session for FileSession {
    /// Applies a batch in one transaction: all of each change or none of it, and one result
    /// per change, in order.
    ///
    /// `Err` means nothing was committed, and must be *transient* (the database is gone,
    /// a lock timed out): the host retries the whole batch on a new session, as long as
    /// it takes. A change that can never apply is a *permanent* error in its own slot of
    /// `Ok`, naming table and column: the host dead-letters that message alone. A panic is
    /// caught by the SDK; the host drops the session and tries again on a new one.
    fn apply(
        &mut self,
        changes: &[Change],
    ) -> Result<Vec<Result<Applied, PluginError>>, PluginError> {
        let dir = &self.schema.dir;
        let _lock = lock(dir)?;
        recover(dir)?;
        let mut batch = Batch {
            schema: &self.schema,
            tables: BTreeMap::new(),
            written: BTreeSet::new(),
        };
        let mut results = Vec::with_capacity(changes.len());
        for change in changes {
            match batch.change(change) {
                // The database's trouble, not the change's: commit nothing.
                Err(e) if e.is_transient() => return Err(e),
                result => results.push(result),
            }
        }
        commit(dir, &batch.tables, &batch.written)?;
        Ok(results)
    }
}

/// A row, by column.
type Row = serde_json::Map<String, Json>;

/// A table's rows, by the JSON text of their key (`7` and `"7"` are different keys).
type Rows = BTreeMap<String, Row>;

/// What a change overwrote (table, key, the row before), to put back if it fails.
type Undo = Vec<(String, String, Option<Row>)>;

/// A batch being applied: the tables it read, as it leaves them.
struct Batch<'a> {
    schema: &'a Schema,
    tables: BTreeMap<String, Rows>,
    written: BTreeSet<String>,
}

impl Batch<'_> {
    /// Applies one change, all of it or (on error) none of it.
    fn change(&mut self, change: &Change) -> Result<Applied, PluginError> {
        // `change.id` is an idempotency key; a database that records the ids it applied can
        // skip a redelivered change (and say `duplicate: true`). This one does not.
        let mut undo = Undo::new();
        let mut returned = Vec::new();
        for op in change.operations.iter() {
            match self.operation(op, &mut undo) {
                Ok(columns) => returned.push(RVec::from(columns)),
                Err(e) => {
                    for (table, key, row) in undo.into_iter().rev() {
                        let rows = self.tables.get_mut(&table).expect("a table it wrote");
                        match row {
                            Some(row) => rows.insert(key, row),
                            None => rows.remove(&key),
                        };
                    }
                    return Err(e);
                }
            }
        }
        Ok(Applied {
            returned: RVec::from(returned),
            duplicate: false,
        })
    }

    /// Applies one operation; returns the columns the database made (an insert's key).
    fn operation(&mut self, op: &Operation, undo: &mut Undo) -> Result<Vec<Column>, PluginError> {
        let name = op.table.as_str();
        let table = self.schema.tables.get(name).ok_or_else(|| no_table(name))?;
        let key_column = table.key.as_str();
        let data = row(name, table, &op.data)?;
        let restriction = row(name, table, &op.restriction)?;
        let rows = load(&self.schema.dir, &mut self.tables, name, key_column)?;
        self.written.insert(name.to_string());
        let mut set = |rows: &mut Rows, key: String, row: Option<Row>| {
            let before = match row {
                Some(row) => rows.insert(key.clone(), row),
                None => rows.remove(&key),
            };
            undo.push((name.to_string(), key, before));
        };
        let duplicate = |key: &str| {
            PluginError::permanent(format!(
                "duplicate key: table `{name}` already has a row with `{key_column}` = {key}"
            ))
        };
        match op.action {
            Action::Insert => {
                let (key, value) = match data.get(key_column) {
                    Some(key) if !key.is_null() => (key.clone(), given(&op.data, key_column)),
                    _ => {
                        let next = next_key(rows);
                        (Json::from(next), Value::Int(next))
                    }
                };
                if rows.contains_key(&key.to_string()) {
                    return Err(duplicate(&key.to_string()));
                }
                let mut row = data;
                row.insert(key_column.to_string(), key.clone());
                set(rows, key.to_string(), Some(row));
                Ok(vec![Column::new(key_column, value)])
            }
            Action::Upsert => {
                let key = match data.get(key_column) {
                    Some(key) if !key.is_null() => key.to_string(),
                    _ => {
                        return Err(PluginError::permanent(format!(
                            "an upsert into `{name}` needs a value for its key `{key_column}`"
                        )))
                    }
                };
                let mut row = rows.get(&key).cloned().unwrap_or_default();
                row.extend(data);
                set(rows, key, Some(row));
                Ok(Vec::new())
            }
            Action::Update | Action::Delete => {
                if restriction.is_empty() {
                    return Err(PluginError::permanent(format!(
                        "an update or delete of `{name}` without a restriction would touch \
                         every row: refused"
                    )));
                }
                let matching: Vec<String> = rows
                    .iter()
                    .filter(|(_, row)| {
                        restriction
                            .iter()
                            .all(|(column, value)| row.get(column).unwrap_or(&Json::Null) == value)
                    })
                    .map(|(key, _)| key.clone())
                    .collect();
                for key in matching {
                    let old = rows.get(&key).cloned();
                    set(rows, key, None);
                    if op.action == Action::Update {
                        // An update may change the key: the row moves.
                        let mut row = old.unwrap_or_default();
                        row.extend(data.clone());
                        let key = row.get(key_column).cloned().unwrap_or(Json::Null);
                        if key.is_null() {
                            return Err(PluginError::permanent(format!(
                                "an update of `{name}` would set its key `{key_column}` to null"
                            )));
                        }
                        if rows.contains_key(&key.to_string()) {
                            return Err(duplicate(&key.to_string()));
                        }
                        set(rows, key.to_string(), Some(row));
                    }
                }
                Ok(Vec::new())
            }
        }
    }
}

/// The rows of table `name`, read from its file the first time the batch needs them.
fn load<'a>(
    dir: &Path,
    tables: &'a mut BTreeMap<String, Rows>,
    name: &str,
    key_column: &str,
) -> Result<&'a mut Rows, PluginError> {
    if !tables.contains_key(name) {
        let path = dir.join(format!("{name}.json"));
        let rows: Vec<Row> = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                PluginError::transient(format!(
                    "{}: not a table file of {{name}} ({e}); restore it from a backup",
                    path.display()
                ))
            })?,
            // A table nothing was written to yet.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_error(&path, e)),
        };
        let rows = rows
            .into_iter()
            .map(|row| (row.get(key_column).unwrap_or(&Json::Null).to_string(), row))
            .collect();
        tables.insert(name.to_string(), rows);
    }
    Ok(tables.get_mut(name).expect("inserted above"))
}

/// An operation's columns as JSON, refusing a column the table does not have, or a value
/// no JSON file can hold.
fn row(name: &str, table: &Table, columns: &[Column]) -> Result<Row, PluginError> {
    columns
        .iter()
        .map(|column| {
            let column_name = column.name.as_str();
            if !table.columns.iter().any(|c| c == column_name) {
                return Err(PluginError::permanent(format!(
                    "table `{name}` has no column `{column_name}`"
                )));
            }
            let value = json(&column.value).map_err(|why| {
                PluginError::permanent(format!("column `{column_name}` of `{name}`: {why}"))
            })?;
            Ok((column_name.to_string(), value))
        })
        .collect()
}

/// A value as JSON. Converting values to the column's type is the database plugin's job;
/// one that does not fit is a permanent error naming the column (see [`row`]).
fn json(value: &Value) -> Result<Json, String> {
    Ok(match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::from(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(Json::Number)
            .ok_or_else(|| format!("{f} is not a finite number"))?,
        // Kept as text: a JSON number would round it.
        Value::Numeric(text) => Json::from(text.as_str()),
        Value::Text(text) => Json::from(text.as_str()),
        Value::Bytes(bytes) => Json::from(bytes.as_slice()),
        Value::Json(text) => {
            serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?
        }
        Value::Array(items) => Json::Array(items.iter().map(json).collect::<Result<_, _>>()?),
    })
}

/// The value an insert gave its key column, to report back as it came.
fn given(data: &[Column], key_column: &str) -> Value {
    data.iter()
        .find(|c| c.name.as_str() == key_column)
        .map_or(Value::Null, |c| c.value.clone())
}

/// The key for an insert that gave none: one more than the largest integer key.
fn next_key(rows: &Rows) -> i64 {
    rows.keys()
        .filter_map(|k| k.parse::<i64>().ok())
        .max()
        .unwrap_or(0)
        + 1
}

/// The name of the commit record: present, it lists the tables whose `.json.new` files
/// belong to a committed batch.
const COMMIT: &str = "batch.commit";

/// Makes a batch durable, all or nothing. Each table it wrote goes to `TABLE.json.new`;
/// then the commit record lists them, appearing at once (written aside, then renamed).
/// That rename is the commit: before it the batch never happened, after it [`recover`]
/// renames the new files over the old, now or after a crash.
fn commit(
    dir: &Path,
    tables: &BTreeMap<String, Rows>,
    written: &BTreeSet<String>,
) -> Result<(), PluginError> {
    if written.is_empty() {
        return Ok(());
    }
    for name in written {
        let rows: Vec<&Row> = tables[name].values().collect();
        let text = serde_json::to_vec_pretty(&rows).expect("JSON values serialize");
        write_durably(&dir.join(format!("{name}.json.new")), &text)?;
    }
    let record = serde_json::to_vec(written).expect("names serialize");
    let aside = dir.join(format!("{COMMIT}.new"));
    write_durably(&aside, &record)?;
    fs::rename(&aside, dir.join(COMMIT)).map_err(|e| io_error(&aside, e))?;
    sync_dir(dir)?;
    // Committed. If finishing fails now, the next batch finishes it first.
    if let Err(e) = recover(dir) {
        tracing::warn!("a committed batch is not in place yet, the next one will do it: {e}");
    }
    Ok(())
}

/// Finishes a committed batch: renames the files its commit record lists over their
/// tables, then removes the record. Without a record there is nothing to do: new files
/// left by a batch that did not commit are overwritten by the next.
fn recover(dir: &Path) -> Result<(), PluginError> {
    let record = dir.join(COMMIT);
    let names: Vec<String> = match fs::read(&record) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| PluginError::transient(format!("{}: {e}", record.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(&record, e)),
    };
    for name in names {
        let new = dir.join(format!("{name}.json.new"));
        // Renamed already, by an earlier attempt that stopped half-way.
        if new.exists() {
            fs::rename(&new, dir.join(format!("{name}.json"))).map_err(|e| io_error(&new, e))?;
        }
    }
    sync_dir(dir)?;
    fs::remove_file(&record).map_err(|e| io_error(&record, e))
}

/// How long a session waits for another to finish its batch.
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Takes the folder's lock, so that sessions apply batches one at a time, whether they are
/// threads of one daemon or other processes. Released when the file is dropped. Waiting
/// is bounded, as every wait in a plugin must be: a call that never returns stalls its
/// pipeline with nothing in the log.
fn lock(dir: &Path) -> Result<File, PluginError> {
    let path = dir.join(".lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io_error(&path, e))?;
    let deadline = Instant::now() + LOCK_TIMEOUT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(TryLockError::WouldBlock) => {
                return Err(PluginError::transient(format!(
                    "{} stayed locked for {LOCK_TIMEOUT:?}: another session is stuck",
                    path.display()
                )))
            }
            Err(TryLockError::Error(e)) => return Err(io_error(&path, e)),
        }
    }
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), PluginError> {
    let mut file = File::create(path).map_err(|e| io_error(path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error(path, e))
}

/// Makes the renames in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), PluginError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

/// A file that cannot be read or written is the database's trouble: transient.
fn io_error(path: &Path, e: std::io::Error) -> PluginError {
    PluginError::transient(format!("{}: {e}", path.display()))
}

fn no_table(name: &str) -> PluginError {
    PluginError::permanent(format!(
        "there is no table `{name}`: declare it under `tables` in the database's section"
    ))
}

// Makes this library loadable by the host. One library may export several plugins, of any
// kinds: `export_plugins! { database: A, processor: B }`.
export_plugins! {
    database: Files,
}

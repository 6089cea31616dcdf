//! One connection, and applying a batch of changes through it.
//!
//! A batch is one transaction, begun `IMMEDIATE`. Each change runs under a savepoint: a
//! change that fails because of its own data is rolled back to its savepoint and reported
//! alone, and the others commit together. A failure that is not the data's fault (the
//! database busy, the disk full) abandons the whole transaction and is returned as
//! transient, so the host retries the batch later.
//!
//! **Invariant:** nothing is decided until `COMMIT` succeeded: before that any failure is
//! transient and nothing of the batch is kept.

use std::collections::HashMap;

use golconde_plugin_api::{Applied, Change, Column, PluginError, RVec};
use rusqlite::{ffi, params_from_iter, Connection, ErrorCode, OpenFlags, TransactionBehavior};

use crate::{
    config::{Settings, UnknownColumns},
    convert::from_sql,
    schema::{self, Table},
    statement::{self, Statement},
};

/// Why a change did not apply.
enum Failure {
    /// Not the change's fault: abandon the batch; the host retries it.
    Transient(String),
    /// The change can never apply as it is: report it; the host dead-letters it.
    Permanent(String),
}

/// Opens the database file, without creating it.
///
/// A missing file means a wrong `path` or a database not set up yet. Created empty, it
/// would have every change dead-lettered for want of its table; refused, the pipeline
/// waits (a transient error) and the log says why.
pub fn open(settings: &Settings) -> Result<Connection, PluginError> {
    let path = settings.path.display();
    let conn = Connection::open_with_flags(
        &settings.path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| {
        PluginError::transient(format!(
            "cannot open the SQLite database {path}: {e}; create it with its tables, or fix \
             `path`"
        ))
    })?;
    // Another connection's write lock (another worker, another program) is waited for, up
    // to the timeout, rather than failing at once.
    conn.busy_timeout(settings.busy_timeout)
        .map_err(|e| PluginError::transient(format!("setting busy_timeout on {path}: {e}")))?;
    Ok(conn)
}

/// A connection of one host worker.
pub struct SqliteSession {
    conn: Connection,
    settings: Settings,
}

impl SqliteSession {
    pub fn open(settings: &Settings) -> Result<SqliteSession, PluginError> {
        let conn = open(settings)?;
        let path = settings.path.display();
        // WAL lets readers of the file carry on while a batch is written, and each worker's
        // transaction waits for the others' instead of failing. It is a property of the
        // file, kept once set. `synchronous` stays FULL: a batch is acknowledged to the
        // broker once committed, so its commit must survive a power cut.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|e| PluginError::transient(format!("setting WAL mode on {path}: {e}")))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!("{path} stays in journal mode {mode}: SQLite refused WAL here");
        }
        // Enforced as the schema declares them (the bundled SQLite's default, made explicit:
        // a system SQLite's default is off).
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(|e| PluginError::transient(format!("enabling foreign keys on {path}: {e}")))?;
        // Statements are cached by their text, which depends only on the table and the
        // columns named: a handful of shapes per table.
        conn.set_prepared_statement_cache_capacity(64);
        tracing::debug!("opened {path}");
        Ok(SqliteSession {
            conn,
            settings: settings.clone(),
        })
    }

    /// One transaction over the batch, skipping the changes already `refused`. `None`: a
    /// change that failed took the whole transaction with it (see below), and was added
    /// to `refused`; the batch must be tried again.
    #[allow(clippy::type_complexity)]
    fn attempt(
        &mut self,
        changes: &[Change],
        refused: &mut [Option<PluginError>],
    ) -> Result<Option<Vec<Result<Applied, PluginError>>>, PluginError> {
        let path = self.settings.path.display().to_string();
        let unknown = self.settings.unknown_columns;
        let transient = |what: &str, e: rusqlite::Error| {
            PluginError::transient(format!(
                "{what} on {path}: {e}; nothing of the batch was committed"
            ))
        };
        // IMMEDIATE takes the write lock now, waiting for it up to `busy_timeout`. A
        // deferred transaction would take it at its first write, and there SQLite may
        // answer "busy" at once instead of waiting (to avoid a deadlock).
        let mut tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| transient("starting a transaction", e))?;
        // Read inside the transaction, so no other connection can change a table between
        // reading its columns and writing to it.
        let mut tables: HashMap<String, Option<Table>> = HashMap::new();
        let mut results = Vec::with_capacity(changes.len());
        for (change, refusal) in changes.iter().zip(refused.iter_mut()) {
            if let Some(error) = refusal {
                results.push(Err(error.clone()));
                continue;
            }
            let savepoint = tx
                .savepoint()
                .map_err(|e| transient("opening a savepoint", e))?;
            match apply_change(&savepoint, change, &mut tables, unknown, &path) {
                Ok(applied) => {
                    savepoint
                        .commit()
                        .map_err(|e| transient("releasing a savepoint", e))?;
                    results.push(Ok(applied));
                }
                Err(Failure::Transient(reason)) => {
                    return Err(PluginError::transient(format!(
                        "{reason}; nothing of the batch was committed"
                    )))
                }
                Err(Failure::Permanent(reason)) => {
                    let error = PluginError::permanent(with_id(change, reason));
                    *refusal = Some(error.clone());
                    // A trigger's RAISE(ROLLBACK), or a constraint declared ON CONFLICT
                    // ROLLBACK, ends the whole transaction, and with it the changes before
                    // this one: start again without this one.
                    if savepoint.is_autocommit() {
                        return Ok(None);
                    }
                    // Rolls back to the savepoint and releases it.
                    savepoint
                        .finish()
                        .map_err(|e| transient("rolling back to a savepoint", e))?;
                    results.push(Err(error));
                }
            }
        }
        tx.commit().map_err(|e| transient("committing", e))?;
        Ok(Some(results))
    }
}

impl golconde_plugin_api::Session for SqliteSession {
    fn apply(
        &mut self,
        changes: &[Change],
    ) -> Result<Vec<Result<Applied, PluginError>>, PluginError> {
        let mut refused = vec![None; changes.len()];
        // Each new attempt has one more change refused, so this ends.
        loop {
            if let Some(results) = self.attempt(changes, &mut refused)? {
                return Ok(results);
            }
        }
    }
}

/// Applies every operation of one change; what each returned.
fn apply_change(
    conn: &Connection,
    change: &Change,
    tables: &mut HashMap<String, Option<Table>>,
    unknown: UnknownColumns,
    path: &str,
) -> Result<Applied, Failure> {
    let mut returned = Vec::with_capacity(change.operations.len());
    for op in change.operations.iter() {
        let name = op.table.as_str();
        if !tables.contains_key(name) {
            let table = schema::read_table(conn, name)
                .map_err(|e| failure(e, &format!("reading the columns of `{name}`")))?;
            tables.insert(name.to_string(), table);
        }
        let Some(table) = &tables[name] else {
            return Err(Failure::Permanent(format!(
                "table `{name}` does not exist in {path}; create it, or fix the message's table"
            )));
        };
        returned.push(
            match statement::build(table, op, unknown).map_err(Failure::Permanent)? {
                Some(statement) => run(conn, table, &statement)
                    .map_err(|e| failure(e, &format!("{} `{name}`", statement::verb(op.action))))?,
                None => RVec::new(),
            },
        );
    }
    // A foreign key declared DEFERRABLE INITIALLY DEFERRED is checked only at COMMIT, where
    // a violation could not be pinned on its change: check that this change left none.
    if unresolved_foreign_keys(conn) {
        return Err(Failure::Permanent(
            "FOREIGN KEY constraint failed (a deferred one): the change leaves a row that \
             refers to a missing one"
                .into(),
        ));
    }
    Ok(Applied {
        returned: returned.into(),
        duplicate: false,
    })
}

/// Runs one statement; the key columns it returned, if it returns any.
fn run(conn: &Connection, table: &Table, statement: &Statement) -> rusqlite::Result<RVec<Column>> {
    let mut prepared = conn.prepare_cached(&statement.sql)?;
    let params = params_from_iter(&statement.params);
    if !statement.returns {
        prepared.execute(params)?;
        return Ok(RVec::new());
    }
    let mut rows = prepared.query(params)?;
    // No row: a trigger's RAISE(IGNORE) skipped the insert, so there is no key to return.
    let Some(row) = rows.next()? else {
        return Ok(RVec::new());
    };
    table
        .primary_key
        .iter()
        .enumerate()
        .map(|(n, &i)| {
            Ok(Column::new(
                table.columns[i].name.clone(),
                from_sql(row.get_ref(n)?),
            ))
        })
        .collect()
}

/// Whether the open transaction holds foreign-key violations still to be resolved.
fn unresolved_foreign_keys(conn: &Connection) -> bool {
    let (mut current, mut highwater) = (0, 0);
    // SAFETY: the handle is the live connection `conn` borrows, used on this thread only,
    // and `sqlite3_db_status` only reads one of its counters into the two integers given.
    // rusqlite has no safe wrapper for this counter.
    let rc = unsafe {
        ffi::sqlite3_db_status(
            conn.handle(),
            ffi::SQLITE_DBSTATUS_DEFERRED_FKS,
            &mut current,
            &mut highwater,
            0,
        )
    };
    rc == ffi::SQLITE_OK && current > 0
}

/// What a failed statement means: SQLite's result code says whether the file or the
/// change is at fault.
fn failure(e: rusqlite::Error, what: &str) -> Failure {
    let message = format!("{what}: {e}");
    match e.sqlite_error_code() {
        // The database or its file: locked by another connection, out of space, unreadable.
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::OutOfMemory
            | ErrorCode::ReadOnly
            | ErrorCode::OperationInterrupted
            | ErrorCode::SystemIoFailure
            | ErrorCode::DatabaseCorrupt
            | ErrorCode::DiskFull
            | ErrorCode::CannotOpen
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::NoLargeFileSupport
            | ErrorCode::NotADatabase
            | ErrorCode::PermissionDenied
            | ErrorCode::SchemaChanged,
        ) => Failure::Transient(message),
        // The statement itself: a constraint (also a trigger's RAISE(ABORT)), a datatype
        // mismatch, a value too big, an SQL error such as writing to a view. Retrying the
        // same change would fail the same way.
        _ => Failure::Permanent(message),
    }
}

/// [`failure`], for a call outside any batch.
pub fn error(e: rusqlite::Error, what: &str) -> PluginError {
    match failure(e, what) {
        Failure::Transient(message) => PluginError::transient(message),
        Failure::Permanent(message) => PluginError::permanent(message),
    }
}

fn with_id(change: &Change, message: String) -> String {
    match change.id.as_ref().into_option() {
        Some(id) => format!("change `{id}`: {message}"),
        None => message,
    }
}

//! One connection, and applying a batch of changes through it.
//!
//! A batch is one transaction. The fast path sends the few statements of
//! `plan::statements`. When a statement fails because of some change's data, the
//! transaction is rolled back and the batch is applied again by bisection under
//! savepoints: a range that fails is split in two until each bad change stands alone and
//! is reported; every range that works is kept, and all of it commits together. A failure
//! that is not the data's fault (connection lost, deadlock, lock wait timeout, shutdown)
//! rolls back everything and is returned as transient, so the host reconnects and
//! retries the batch.
//!
//! Between the two are errors that may or may not pass on a retry: a missing privilege
//! (errors 1142, 1143) and a statement timeout (MariaDB 1969, MySQL 3024). They are
//! transient at first; each change's failures are counted (`Doubts`) and a change that
//! reaches `max_attempts` is isolated like bad data and reported as permanent.
//!
//! **Invariant:** the results are decided only once `COMMIT` succeeded; before that any
//! failure is transient and nothing of the batch is kept.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use golconde_plugin_api::{Action, Applied, Change, Column, PluginError, RVec, Value};
use golconde_plugin_support::{
    batch,
    bisect::Bisection,
    doubt::Verdict,
    errors::{chain, with_id},
    fingerprint::Fingerprint,
};
use mysql_async::{prelude::Queryable, Conn, Opts, Params, Value as MyValue};
use tokio::runtime::Runtime;

use crate::{
    convert::Cell,
    dedupe,
    plan::{self, Prepared, Returning, Server},
    schema::{self, Introspection, Kind, Table},
    Shared,
};

/// The SQL mode of every session: values that do not fit are errors, never silently
/// changed (STRICT_ALL_TABLES, also for non-transactional tables), no zero dates, a
/// division by zero is an error, and a 0 given for an AUTO_INCREMENT column is stored as
/// 0 rather than taken for "generate one" (what a message gives is what is stored).
pub const SQL_MODE: &str = "STRICT_ALL_TABLES,NO_ZERO_DATE,NO_ZERO_IN_DATE,\
ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION,NO_AUTO_VALUE_ON_ZERO";

/// A statement failed; what that means for the batch.
#[derive(Debug)]
enum Failure {
    /// Not the data's fault: roll back, report, let the host retry.
    Transient(PluginError),
    /// May or may not pass on a retry: transient until the change at fault has failed
    /// `max_attempts` times, then that change's fault.
    Doubtful(mysql_async::ServerError),
    /// A table changed under the cached definition: read it again and retry once.
    Schema(mysql_async::ServerError),
    /// Some change's data cannot apply: find it.
    Data(DataError),
}

/// Why a statement refused the data.
#[derive(Debug)]
enum DataError {
    Server(mysql_async::ServerError),
    /// An insert returned fewer keys than it had rows, so the keys cannot be matched to
    /// their rows; applied one by one they can.
    Unmatched,
}

/// What became of one attempt at the batch.
enum Attempt {
    Done(Vec<Result<Applied, PluginError>>),
    /// A cached table definition was stale: the tables must be read again.
    Stale,
}

/// What a connection learnt about its server.
#[derive(Debug, Clone, Copy)]
pub struct Flavour {
    pub mariadb: bool,
    pub server: Server,
    /// `auto_increment_increment`: the step between the keys of one multi-row insert.
    pub increment: u64,
}

/// A session: a connection with its own single-threaded runtime, which runs only while a
/// call of the host is in it. Nothing async is visible outside.
pub struct MySession {
    inner: Option<Inner>,
    runtime: Runtime,
}

struct Inner {
    conn: Conn,
    shared: Arc<Shared>,
    flavour: Flavour,
    /// A statement failed in a way that leaves the connection unusable.
    broken: bool,
}

/// Table definitions by the name operations use, or why a table cannot be used.
type Tables = HashMap<String, Result<Arc<Table>, String>>;

/// Why a change could not be planned, and the table whose stale definition might be
/// the reason.
type Unplanned<'c> = (PluginError, Option<&'c str>);

/// A runtime for one connection: single-threaded, driven by whoever blocks on it.
pub fn runtime() -> Result<Runtime, PluginError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| PluginError::transient(format!("cannot start the plugin's runtime: {e}")))
}

/// Opens a connection within `connect_timeout_ms`, sets the session up and learns what
/// the server can do; must run inside `runtime`.
pub async fn open(shared: &Shared) -> Result<(Conn, Flavour), PluginError> {
    let settings = &shared.settings;
    let mut conn = match connect_one(shared, &settings.connect).await {
        Err(Some(mysql_async::Error::Driver(
            mysql_async::DriverError::NoClientSslFlagFromServer,
        ))) if settings.plain.is_some() => {
            tracing::debug!("{} offers no TLS; connecting without", settings.target);
            let plain = settings.plain.as_ref().expect("checked");
            connect_one(shared, plain)
                .await
                .map_err(|e| connect_error(shared, e))?
        }
        other => other.map_err(|e| connect_error(shared, e))?,
    };
    let setup = async {
        conn.query_drop(format!(
            "SET NAMES utf8mb4, SESSION sql_mode = '{SQL_MODE}', SESSION time_zone = '+00:00'"
        ))
        .await?;
        let (version, packet): (String, u64) = conn
            .query_first("SELECT VERSION(), @@max_allowed_packet")
            .await?
            .unwrap_or_default();
        let increment: u64 = conn
            .query_first("SELECT @@auto_increment_increment")
            .await?
            .unwrap_or(1);
        // Absent when InnoDB is; then nothing says generated keys are consecutive.
        let lock_mode: Option<u64> = conn
            .query_first("SELECT @@innodb_autoinc_lock_mode")
            .await
            .ok()
            .flatten();
        let mariadb = version.to_ascii_lowercase().contains("mariadb");
        if let Some(ms) = settings.statement_timeout_ms {
            conn.query_drop(if mariadb {
                format!("SET SESSION max_statement_time = {}", ms as f64 / 1000.0)
            } else {
                format!("SET SESSION max_execution_time = {ms}")
            })
            .await?;
        }
        if let Some(s) = settings.lock_wait_timeout_s {
            conn.query_drop(format!("SET SESSION innodb_lock_wait_timeout = {s}"))
                .await?;
        }
        let (major, minor, _) = conn.server_version();
        Ok::<_, mysql_async::Error>(Flavour {
            mariadb,
            server: Server {
                returning: mariadb && (major, minor) >= (10, 5),
                consecutive_ids: matches!(lock_mode, Some(0 | 1)),
                max_bytes: (packet as usize / 2).clamp(1 << 16, 16 << 20),
                // Room for the statement's text and each parameter's header.
                max_row_bytes: (packet as usize).saturating_sub(1 << 16),
                max_packet: packet,
            },
            increment: increment.max(1),
        })
    };
    match setup.await {
        Ok(flavour) => Ok((conn, flavour)),
        Err(e) => Err(PluginError::transient(format!(
            "setting up the session on {}: {}",
            settings.target,
            message(&e)
        ))),
    }
}

/// Connects with `opts` within `connect_timeout_ms`; `None` for a timeout.
async fn connect_one(shared: &Shared, opts: &Opts) -> Result<Conn, Option<mysql_async::Error>> {
    match tokio::time::timeout(shared.settings.connect_timeout, Conn::new(opts.clone())).await {
        Err(_) => Err(None),
        Ok(result) => result.map_err(Some),
    }
}

fn connect_error(shared: &Shared, e: Option<mysql_async::Error>) -> PluginError {
    let settings = &shared.settings;
    let target = &settings.target;
    let Some(e) = e else {
        return PluginError::transient(format!(
            "cannot connect to {target}: timed out after {} ms (`connect_timeout_ms`)",
            settings.connect_timeout.as_millis()
        ));
    };
    let hint = match (&e, settings.ssl_mode) {
        (mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer), mode) => {
            format!(
                "; the server does not offer TLS, and `ssl_mode` = \"{mode}\" requires it: \
             enable TLS on the server, or set `ssl_mode` to \"preferred\" or \"disabled\""
            )
        }
        // rustls's refusal arrives as a TLS error or wrapped in an I/O one, by platform.
        (mysql_async::Error::Io(_), _) if chain(&e).contains("certificate") => {
            "; the server's certificate was not accepted: check that `ssl_ca` names the \
             authority that signed it (and, with `ssl_mode` = \"verify_identity\", that it \
             names the DSN's host)"
                .to_string()
        }
        (mysql_async::Error::Server(server), _)
            if server.code == 1045 && !settings.client_certificate =>
        {
            "; if the account requires a client certificate (`REQUIRE X509`, `SUBJECT`, \
             `ISSUER`), give `ssl_cert` and `ssl_key`"
                .to_string()
        }
        _ => String::new(),
    };
    PluginError::transient(format!("cannot connect to {target}: {}{hint}", chain(&e)))
}

impl MySession {
    pub fn connect(shared: Arc<Shared>) -> Result<MySession, PluginError> {
        let runtime = runtime()?;
        let (conn, flavour) = runtime.block_on(async {
            let (mut conn, flavour) = open(&shared).await?;
            if shared.settings.dedupe && !shared.dedupe_ready() {
                let database = &shared.settings.dedupe_database;
                dedupe::ensure_table(&mut conn, database)
                    .await
                    .map_err(|e| {
                        PluginError::transient(format!(
                            "cannot create {database}.applied on {} for `dedupe`: {}",
                            shared.settings.target,
                            message(&e)
                        ))
                    })?;
                shared.set_dedupe_ready();
            }
            Ok::<_, PluginError>((conn, flavour))
        })?;
        tracing::debug!("connected to {}", shared.settings.target);
        Ok(MySession {
            inner: Some(Inner {
                conn,
                shared,
                flavour,
                broken: false,
            }),
            runtime,
        })
    }

    /// The server's id of this session's connection (what `KILL` takes).
    pub fn connection_id(&self) -> u32 {
        self.inner.as_ref().expect("present until drop").conn.id()
    }

    /// What the session learnt about its server.
    pub fn flavour(&self) -> Flavour {
        self.inner.as_ref().expect("present until drop").flavour
    }

    /// Applies as a MySQL server without `RETURNING` would (generated keys from
    /// `LAST_INSERT_ID()`), so that path can be tested on MariaDB too.
    #[doc(hidden)]
    pub fn without_returning(&mut self, consecutive_ids: bool) {
        let flavour = &mut self.inner.as_mut().expect("present until drop").flavour;
        flavour.server.returning = false;
        flavour.server.consecutive_ids = consecutive_ids;
    }
}

impl Drop for MySession {
    fn drop(&mut self) {
        // Say goodbye to the server rather than cutting the socket, but not for long.
        if let Some(inner) = self.inner.take() {
            let _ = self.runtime.block_on(async move {
                tokio::time::timeout(Duration::from_secs(1), inner.conn.disconnect()).await
            });
        }
    }
}

impl golconde_plugin_api::Session for MySession {
    fn apply(
        &mut self,
        changes: &[Change],
    ) -> Result<Vec<Result<Applied, PluginError>>, PluginError> {
        let inner = self.inner.as_mut().expect("present until drop");
        if inner.broken {
            return Err(PluginError::transient(format!(
                "the connection to {} is broken; reconnecting",
                inner.shared.settings.target
            )));
        }
        let result = self.runtime.block_on(inner.apply(changes));
        if result.is_err() {
            // Whatever the error, the transaction must not stay open on this connection.
            let _ = self.runtime.block_on(inner.conn.query_drop("ROLLBACK"));
        }
        result
    }
}

impl Inner {
    async fn apply(
        &mut self,
        changes: &[Change],
    ) -> Result<Vec<Result<Applied, PluginError>>, PluginError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let mut refreshed = false;
        loop {
            let (tables, cached) = self.tables(changes).await?;
            let plans = self.plan(changes, &tables);
            // A change that does not fit a table read earlier may fit it as it is now (a
            // column added, a type changed): read such tables again, once, before saying so.
            let suspect: Vec<&str> = plans
                .iter()
                .filter_map(|p| p.as_ref().err().and_then(|(_, table)| *table))
                .filter(|table| cached.contains(table))
                .collect();
            if !refreshed && !suspect.is_empty() {
                self.refresh(suspect);
                refreshed = true;
                continue;
            }
            let plans: Vec<Result<Vec<Prepared>, PluginError>> =
                plans.into_iter().map(|p| p.map_err(|(e, _)| e)).collect();
            match self.attempt(changes, &plans, !refreshed).await? {
                Attempt::Done(results) => {
                    self.prune().await;
                    return Ok(results);
                }
                Attempt::Stale => {
                    self.refresh(
                        changes
                            .iter()
                            .flat_map(|c| c.operations.iter().map(|o| o.table.as_str()))
                            .collect(),
                    );
                    refreshed = true;
                }
            }
        }
    }

    /// Forgets what we know of `tables`.
    fn refresh(&mut self, tables: Vec<&str>) {
        tracing::info!(
            "reading the definition of {} again: it changed",
            tables.join(", ")
        );
        self.shared.catalog.forget(tables);
    }

    /// The definition of every table the batch names, read if not cached. Also answers
    /// which of them came from the cache.
    async fn tables<'c>(
        &mut self,
        changes: &'c [Change],
    ) -> Result<(Tables, Vec<&'c str>), PluginError> {
        let mut tables = HashMap::new();
        let mut cached = Vec::new();
        for op in changes.iter().flat_map(|c| c.operations.iter()) {
            let name = op.table.as_str();
            if tables.contains_key(name) {
                continue;
            }
            let target = self.shared.settings.target.clone();
            let missing = || {
                format!(
                    "table `{name}` does not exist in {target} (or the user cannot see it); \
                     create it, or fix the message's table"
                )
            };
            let table = match self.shared.catalog.get(name) {
                Some(table) => {
                    cached.push(name);
                    Ok(table)
                }
                None if self.shared.catalog.is_missing(name) => Err(missing()),
                None => {
                    let database = self.shared.settings.database.clone();
                    match schema::introspect(
                        &mut self.conn,
                        name,
                        database.as_deref(),
                        self.flavour.mariadb,
                    )
                    .await
                    {
                        Ok(Some(table)) => {
                            let table = Arc::new(table);
                            self.shared.catalog.insert(name, table.clone());
                            Ok(table)
                        }
                        Ok(None) => {
                            self.shared.catalog.insert_missing(name);
                            Err(missing())
                        }
                        Err(Introspection::BadName(e)) => Err(e),
                        Err(Introspection::Database(e)) => match self.classify(e) {
                            Failure::Transient(e) => return Err(e),
                            Failure::Doubtful(e) => {
                                return Err(self.doubtful(
                                    &format!("reading the definition of table `{name}`"),
                                    &e,
                                    0,
                                ))
                            }
                            Failure::Schema(e) | Failure::Data(DataError::Server(e)) => {
                                Err(format!("cannot read the definition of table `{name}`: {e}"))
                            }
                            Failure::Data(DataError::Unmatched) => unreachable!("no insert"),
                        },
                    }
                }
            };
            let dedupe_database = &self.shared.settings.dedupe_database;
            let table = table.and_then(|table| match schema::refusal(&table, dedupe_database) {
                Some(refusal) => Err(refusal),
                None => Ok(table),
            });
            tables.insert(name.to_string(), table);
        }
        Ok((tables, cached))
    }

    /// Each change's operations, checked; a failure names the table when a stale
    /// definition of it might explain the failure.
    fn plan<'c>(
        &self,
        changes: &'c [Change],
        tables: &Tables,
    ) -> Vec<Result<Vec<Prepared<'c>>, Unplanned<'c>>> {
        let unknown = self.shared.settings.unknown_columns;
        let server = self.flavour.server;
        changes
            .iter()
            .map(|change| {
                change
                    .operations
                    .iter()
                    .map(|op| {
                        let table = tables[op.table.as_str()].as_ref().map_err(|e| {
                            (PluginError::permanent(with_id(change, e.clone())), None)
                        })?;
                        let prepared = plan::prepare(table, op, unknown).map_err(|misfit| {
                            let error = PluginError::permanent(with_id(change, misfit.message));
                            (error, misfit.stale_suspect.then_some(op.table.as_str()))
                        })?;
                        if prepared.size() > server.max_row_bytes {
                            let message = format!(
                                "the change's values for `{}` are {} bytes, more than the \
                                 server takes in one statement (`max_allowed_packet` = {}): \
                                 raise `max_allowed_packet` on the server, then replay it",
                                table.display,
                                prepared.size(),
                                server.max_packet
                            );
                            return Err((PluginError::permanent(with_id(change, message)), None));
                        }
                        Ok(prepared)
                    })
                    .collect()
            })
            .collect()
    }

    /// One transaction over the batch. `may_refresh`: a stale table definition answers
    /// [`Attempt::Stale`] rather than counting as bad data.
    async fn attempt(
        &mut self,
        changes: &[Change],
        plans: &[Result<Vec<Prepared<'_>>, PluginError>],
        may_refresh: bool,
    ) -> Result<Attempt, PluginError> {
        let mut results: Vec<Option<Result<Applied, PluginError>>> = plans
            .iter()
            .map(|p| p.as_ref().err().map(|e| Err(e.clone())))
            .collect();
        if results.iter().all(Option::is_some) {
            // Nothing can apply (a missing table, say): no need for a transaction.
            return Ok(Attempt::Done(results.into_iter().flatten().collect()));
        }
        self.begin().await?;
        let mut repeats = Vec::new();
        let mut records = Vec::new();
        if self.shared.settings.dedupe {
            let (r, entries) = self.skip_seen(changes, plans, &mut results).await?;
            repeats = r;
            records = entries;
        }
        let candidates: Vec<usize> = (0..changes.len())
            .filter(|&i| results[i].is_none() && !repeats.iter().any(|(later, _)| *later == i))
            .collect();

        let isolation = match self.run(plans, &candidates).await {
            Ok(applied) => {
                for (i, applied) in candidates.iter().zip(applied) {
                    results[*i] = Some(Ok(applied));
                }
                None
            }
            Err(Failure::Transient(e)) => {
                self.rollback().await;
                return Err(e);
            }
            Err(Failure::Doubtful(e)) => {
                self.rollback().await;
                let failures = self
                    .shared
                    .doubts
                    .failed_together(candidates.iter().map(|&i| &changes[i]));
                if failures < self.shared.settings.max_attempts {
                    return Err(self.doubtful("applying the batch", &e, failures));
                }
                Some(true)
            }
            Err(Failure::Schema(_)) if may_refresh => {
                self.rollback().await;
                return Ok(Attempt::Stale);
            }
            Err(Failure::Schema(_) | Failure::Data(_)) => {
                self.rollback().await;
                Some(false)
            }
        };
        if let Some(counted) = isolation {
            self.begin().await?;
            if self.shared.settings.dedupe {
                // The rollback released the entries' locks: take them again.
                let mut again: Vec<Option<Result<Applied, PluginError>>> = plans
                    .iter()
                    .map(|p| p.as_ref().err().map(|e| Err(e.clone())))
                    .collect();
                let _ = self.skip_seen(changes, plans, &mut again).await?;
            }
            self.isolate(changes, plans, &candidates, &mut results, counted)
                .await?;
        }
        for (later, earlier) in repeats {
            results[later] = Some(match &results[earlier] {
                Some(Ok(applied)) => Ok(Applied {
                    returned: applied.returned.clone(),
                    duplicate: true,
                }),
                Some(Err(e)) => Err(e.clone()),
                None => unreachable!("every earlier change has a result"),
            });
        }
        let results: Vec<Result<Applied, PluginError>> = results
            .into_iter()
            .map(|r| r.expect("every change has a result"))
            .collect();
        if self.shared.settings.dedupe {
            self.record(&results, records).await?;
        }
        self.execute("COMMIT").await?;
        self.shared.doubts.forget_changes(
            candidates
                .iter()
                .filter(|&&i| results[i].is_ok())
                .map(|&i| &changes[i]),
        );
        Ok(Attempt::Done(results))
    }

    async fn begin(&mut self) -> Result<(), PluginError> {
        self.execute("START TRANSACTION").await
    }

    async fn rollback(&mut self) {
        if let Err(e) = self.conn.query_drop("ROLLBACK").await {
            tracing::debug!("rolling back: {e}");
        }
    }

    /// Runs a statement of the plugin's own; any failure is transient.
    async fn execute(&mut self, sql: &str) -> Result<(), PluginError> {
        match self.conn.query_drop(sql).await {
            Ok(()) => Ok(()),
            Err(e) => Err(match self.classify(e) {
                Failure::Transient(e) => e,
                Failure::Doubtful(e) | Failure::Schema(e) | Failure::Data(DataError::Server(e)) => {
                    self.transient(sql, &e)
                }
                Failure::Data(DataError::Unmatched) => unreachable!("no insert"),
            }),
        }
    }

    /// A failure that may pass on a retry, while the changes in it have failed fewer
    /// than `max_attempts` times (the most any of them has: `failures`).
    fn doubtful(&self, what: &str, e: &mysql_async::ServerError, failures: u32) -> PluginError {
        let max = self.shared.settings.max_attempts;
        PluginError::transient(format!(
            "{what} on {}: {}; nothing of the batch was committed. Retrying: this may pass \
             (attempt {failures} of `max_attempts` = {max}; then the change that keeps \
             failing is dead-lettered)",
            self.shared.settings.target,
            server_message(e)
        ))
    }

    fn transient(&self, what: &str, e: &mysql_async::ServerError) -> PluginError {
        PluginError::transient(format!(
            "{what} on {}: {}; nothing of the batch was committed",
            self.shared.settings.target,
            server_message(e)
        ))
    }

    /// What a failed statement means, by error number. Anything but a server's error
    /// (the connection broke, the protocol did) is transient and breaks the connection.
    fn classify(&mut self, e: mysql_async::Error) -> Failure {
        let mysql_async::Error::Server(e) = e else {
            self.broken = true;
            return Failure::Transient(PluginError::transient(format!(
                "the connection to {} failed: {}; nothing of the batch was committed",
                self.shared.settings.target,
                chain(&e)
            )));
        };
        match e.code {
            // No privilege on a table or a column; a statement timeout.
            1142 | 1143 | 1969 | 3024 => Failure::Doubtful(e),
            // Deadlock, lock wait timeout, interrupted, too many connections, shutdown,
            // read-only server, out of memory or disk, storage engine trouble, connection
            // killed or aborted.
            1213 | 1205 | 1317 | 1040 | 1203 | 1053 | 1077 | 1078 | 1079 | 1080 | 1152 | 1153
            | 1154 | 1155 | 1156 | 1157 | 1158 | 1159 | 1160 | 1161 | 1180 | 1181 | 1290 | 1792
            | 1836 | 1637 | 1614 | 3572 | 1021 | 1037 | 1038 | 1041 | 1030 | 1114 | 1927 | 4031
            | 1047 | 1105 => Failure::Transient(self.transient("applying the batch", &e)),
            // Unknown column, table or database; a view or table changed.
            1054 | 1146 | 1049 | 1109 | 1356 | 1412 => Failure::Schema(e),
            _ => Failure::Data(DataError::Server(e)),
        }
    }

    /// Marks the changes that replay one applied before (same id, same tables, same
    /// content) as duplicates. Answers the later changes of this batch that replay an
    /// earlier one of it, (later, earlier), and the entries to record for the others.
    #[allow(clippy::type_complexity)]
    async fn skip_seen(
        &mut self,
        changes: &[Change],
        plans: &[Result<Vec<Prepared<'_>>, PluginError>],
        results: &mut [Option<Result<Applied, PluginError>>],
    ) -> Result<(Vec<(usize, usize)>, Vec<(usize, dedupe::Entry)>), PluginError> {
        let mut entries: Vec<(usize, dedupe::Entry)> = Vec::new();
        for (i, change) in changes.iter().enumerate() {
            let (Some(id), Ok(ops)) = (change.id.as_ref().into_option(), &plans[i]) else {
                continue;
            };
            if results[i].is_some() || ops.is_empty() {
                continue;
            }
            let mut tables: Vec<&str> = ops.iter().map(|op| op.table.quoted.as_str()).collect();
            tables.sort_unstable();
            tables.dedup();
            entries.push((
                i,
                dedupe::Entry {
                    scope: tables.join(","),
                    id: id.to_string(),
                    hash: Some(Fingerprint::of(change).hex()),
                    returned: None,
                },
            ));
        }
        let database = self.shared.settings.dedupe_database.clone();
        let wanted: Vec<&dedupe::Entry> = entries.iter().map(|(_, e)| e).collect();
        let seen = match dedupe::seen(&mut self.conn, &database, &wanted).await {
            Ok(seen) => seen,
            Err(e) => {
                return Err(match self.classify(e) {
                    Failure::Transient(e) => e,
                    Failure::Doubtful(e)
                    | Failure::Schema(e)
                    | Failure::Data(DataError::Server(e)) => {
                        self.transient(&format!("reading {database}.applied"), &e)
                    }
                    Failure::Data(DataError::Unmatched) => unreachable!("no insert"),
                })
            }
        };

        // The latest content applied under each (scope, id): this batch's, else the table's.
        let mut latest: HashMap<(&str, &str), (usize, &str)> = HashMap::new();
        let mut repeats = Vec::new();
        let mut to_record = Vec::new();
        for (i, entry) in &entries {
            let key = (entry.scope.as_str(), entry.id.as_str());
            let hash = entry.hash.as_deref().expect("computed above");
            let stored = seen.get(&(entry.scope.clone(), entry.id.clone()));
            if let Some(&(earlier, earlier_hash)) = latest.get(&key) {
                if earlier_hash == hash {
                    repeats.push((*i, earlier));
                    continue;
                }
            } else if let Some(applied) = stored {
                if applied.hash.as_deref() == Some(hash) {
                    results[*i] = Some(Ok(Applied {
                        returned: dedupe::decode(
                            applied.returned.as_deref(),
                            changes[*i].operations.len(),
                        ),
                        duplicate: true,
                    }));
                    continue;
                }
            }
            if latest.contains_key(&key) || stored.is_some() {
                tracing::warn!(
                    "change id `{}` was applied to {} before with other content: this is no \
                     replay, so it is applied too (does a producer reuse ids?)",
                    entry.id,
                    entry.scope
                );
            }
            latest.insert(key, (*i, hash));
            to_record.push((*i, entry.clone()));
        }
        Ok((repeats, to_record))
    }

    /// Records the ids of the changes this batch applied, with what they returned.
    async fn record(
        &mut self,
        results: &[Result<Applied, PluginError>],
        candidates: Vec<(usize, dedupe::Entry)>,
    ) -> Result<(), PluginError> {
        // One entry per (scope, id): the last applied content is the one to compare with.
        let mut entries: Vec<dedupe::Entry> = Vec::new();
        let mut at: HashMap<(String, String), usize> = HashMap::new();
        for (i, mut entry) in candidates {
            let Ok(applied) = &results[i] else { continue };
            entry.returned = dedupe::encode(&applied.returned);
            match at.get(&(entry.scope.clone(), entry.id.clone())) {
                Some(&earlier) => entries[earlier] = entry,
                None => {
                    at.insert((entry.scope.clone(), entry.id.clone()), entries.len());
                    entries.push(entry);
                }
            }
        }
        let database = self.shared.settings.dedupe_database.clone();
        match dedupe::record(&mut self.conn, &database, &entries).await {
            Ok(()) => Ok(()),
            Err(e) => Err(match self.classify(e) {
                Failure::Transient(e) => e,
                Failure::Doubtful(e) | Failure::Schema(e) | Failure::Data(DataError::Server(e)) => {
                    self.transient(&format!("writing {database}.applied"), &e)
                }
                Failure::Data(DataError::Unmatched) => unreachable!("no insert"),
            }),
        }
    }

    /// Removes old entries of the applied-change table, now and then, outside any batch.
    async fn prune(&mut self) {
        if !self.shared.settings.dedupe || !self.shared.prune_due() {
            return;
        }
        let retention = self.shared.settings.dedupe_retention.as_secs();
        let database = self.shared.settings.dedupe_database.clone();
        match dedupe::prune(&mut self.conn, &database, retention).await {
            Ok(n) if n > 0 => tracing::debug!("pruned {n} entries of {database}.applied"),
            Ok(_) => {}
            Err(e) => tracing::warn!("pruning {database}.applied: {}", message(&e)),
        }
    }

    /// Applies the changes `candidates` (positions in `plans`) set-based; what each
    /// returned, in the order of `candidates`.
    async fn run(
        &mut self,
        plans: &[Result<Vec<Prepared<'_>>, PluginError>],
        candidates: &[usize],
    ) -> Result<Vec<Applied>, Failure> {
        let ops = |k: usize| {
            plans[candidates[k]]
                .as_ref()
                .expect("candidates are planned")
        };
        let mut applied: Vec<Applied> = (0..candidates.len())
            .map(|k| Applied {
                returned: vec![RVec::new(); ops(k).len()].into(),
                duplicate: false,
            })
            .collect();
        let statements = plan::statements(
            batch::operations((0..candidates.len()).map(|k| ops(k).as_slice())),
            self.flavour.server,
        );
        for statement in statements {
            let params = Params::Positional(statement.params);
            match statement.returning {
                Returning::Rows => {
                    let rows: Vec<mysql_async::Row> =
                        match self.conn.exec(statement.sql.as_str(), params).await {
                            Ok(rows) => rows,
                            Err(e) => return Err(self.classify(e)),
                        };
                    if rows.len() != statement.rows.len() {
                        if statement.rows.len() > 1 {
                            return Err(Failure::Data(DataError::Unmatched));
                        }
                        continue;
                    }
                    for ((origin, op), row) in statement.rows.iter().zip(rows) {
                        let table = &op.table;
                        let values = row.unwrap();
                        let columns: Vec<Column> = plan::returned_columns(table)
                            .into_iter()
                            .zip(values)
                            .map(|(p, value)| {
                                let column = &table.columns[p];
                                Column::new(
                                    column.name.clone(),
                                    returned_value(&column.kind, value),
                                )
                            })
                            .collect();
                        applied[origin.change].returned[origin.operation] = columns.into();
                    }
                }
                returning => {
                    if let Err(e) = self.conn.exec_drop(statement.sql.as_str(), params).await {
                        return Err(self.classify(e));
                    }
                    if statement.rows[0].1.action != Action::Insert {
                        continue;
                    }
                    let first = self.conn.last_insert_id().unwrap_or(0);
                    let increment = self.flavour.increment;
                    for (n, (origin, op)) in statement.rows.iter().enumerate() {
                        let table = &op.table;
                        let columns: Vec<Column> = plan::returned_columns(table)
                            .into_iter()
                            .map(|p| {
                                let column = &table.columns[p];
                                let given = op.data.iter().find(|(c, _)| *c == p);
                                let value = match (given, returning) {
                                    (Some((_, cell)), _) => cell_value(cell),
                                    (None, Returning::LastInsertId)
                                        if table.auto_increment == Some(p) =>
                                    {
                                        let id = first + n as u64 * increment;
                                        match i64::try_from(id) {
                                            Ok(id) => Value::Int(id),
                                            Err(_) => Value::Numeric(id.to_string().into()),
                                        }
                                    }
                                    // A key column with a default: not known here.
                                    (None, _) => Value::Null,
                                };
                                Column::new(column.name.clone(), value)
                            })
                            .collect();
                        applied[origin.change].returned[origin.operation] = columns.into();
                    }
                }
            }
        }
        Ok(applied)
    }

    /// The slow path, inside the open transaction: bisects `candidates` under savepoints
    /// until every change that cannot apply stands alone. `counted`: this attempt's
    /// failure was already counted against every candidate (see `Doubts::judge`).
    async fn isolate(
        &mut self,
        changes: &[Change],
        plans: &[Result<Vec<Prepared<'_>>, PluginError>],
        candidates: &[usize],
        results: &mut [Option<Result<Applied, PluginError>>],
        counted: bool,
    ) -> Result<(), PluginError> {
        let started = Instant::now();
        let mut bad = 0;
        // Positions in `candidates`, handed out in order, so each row's changes keep theirs.
        let mut bisection = Bisection::new(candidates.len());
        while let Some(range) = bisection.next_range() {
            self.execute("SAVEPOINT golconde").await?;
            let (error, doubtful) = match self.run(plans, &candidates[range.clone()]).await {
                Ok(applied) => {
                    self.execute("RELEASE SAVEPOINT golconde").await?;
                    for (i, applied) in candidates[range].iter().zip(applied) {
                        results[*i] = Some(Ok(applied));
                    }
                    continue;
                }
                Err(Failure::Transient(e)) => return Err(e),
                Err(Failure::Doubtful(e)) => (Some(e), true),
                Err(Failure::Schema(e) | Failure::Data(DataError::Server(e))) => (Some(e), false),
                Err(Failure::Data(DataError::Unmatched)) => (None, false),
            };
            self.execute("ROLLBACK TO SAVEPOINT golconde").await?;
            let Some(at) = bisection.failed(range) else {
                continue;
            };
            let i = candidates[at];
            let ops = plans[i].as_ref().expect("candidates are planned");
            let error = error.expect("a single change always matches its keys");
            let mut message = describe(&error, ops);
            if doubtful {
                let max_attempts = self.shared.settings.max_attempts;
                match self.shared.doubts.judge(&changes[i], counted, max_attempts) {
                    // It may pass yet: the whole batch waits for the retry.
                    Verdict::Retry(failures) => {
                        return Err(self.doubtful("applying the batch", &error, failures))
                    }
                    Verdict::AtFault(failures) => message = given_up(&error, failures, &message),
                }
            }
            bad += 1;
            results[i] = Some(Err(PluginError::permanent(with_id(&changes[i], message))));
        }
        tracing::debug!(
            "isolated {bad} of {} changes in {:?}",
            candidates.len(),
            started.elapsed()
        );
        Ok(())
    }
}

/// Says why one change failed: the server's message, with the table it is about (the
/// one the server names, if the change writes several) and the column, where the server
/// names one.
fn describe(error: &mysql_async::ServerError, ops: &[Prepared<'_>]) -> String {
    let reason = server_message(error);
    let table = ops
        .iter()
        .map(|op| &op.table)
        .find(|t| {
            error.message.contains(&format!("`{}`.`", t.database))
                && error.message.contains(&format!("`{}`", display_name(t)))
        })
        .or(ops.first().map(|op| &op.table));
    let Some(table) = table else {
        return reason;
    };
    // The guard of an upsert (see `plan`): the row collides with another on another key.
    if error.code == 1365 {
        if let Some(op) = ops.iter().find(|op| op.action == Action::Upsert) {
            return format!(
                "an upsert into `{}` by ({}) collides with another row on another unique key \
                 of the table; that row was left as it is [error 1365]",
                op.table.display,
                op.table.column_names(&op.conflict)
            );
        }
    }
    match column_named(&error.message).filter(|c| table.column(c).is_some()) {
        Some(column) => format!("column `{column}` of `{}`: {reason}", table.display),
        None => format!("`{}`: {reason}", table.display),
    }
}

/// The table's own name, unqualified.
fn display_name(table: &Table) -> &str {
    &table.display[table.database.len() + 1..]
}

/// The column a server message names: `column 'c'`, `Column 'c'`, or the last part of
/// `` column `db`.`t`.`c` ``.
fn column_named(message: &str) -> Option<String> {
    let at = message.find("olumn ")? + "olumn ".len();
    let rest = &message[at..];
    match rest.chars().next()? {
        '\'' => rest[1..].split('\'').next().map(str::to_string),
        '`' => {
            let mut parts = Vec::new();
            let mut chars = rest.chars().peekable();
            while chars.peek() == Some(&'`') {
                chars.next();
                let mut part = String::new();
                loop {
                    match chars.next() {
                        Some('`') if chars.peek() == Some(&'`') => {
                            chars.next();
                            part.push('`');
                        }
                        Some('`') | None => break,
                        Some(c) => part.push(c),
                    }
                }
                parts.push(part);
                if chars.peek() == Some(&'.') {
                    chars.next();
                }
            }
            parts.pop()
        }
        _ => None,
    }
}

/// The message of a change that failed `failures` times with an error that may or may
/// not pass, now dead-lettered: what happened, and what to do.
fn given_up(error: &mysql_async::ServerError, failures: u32, described: &str) -> String {
    let fix = match error.code {
        1969 | 3024 => {
            "it ran longer than the server's statement time limit (`statement_timeout_ms`): \
             raise it or find what slows or blocks the statement"
        }
        _ => "the database user lacks a privilege on the table or a column: grant it",
    };
    format!(
        "failed {failures} times, each time: {described}; {fix}, then replay the change from \
         the dead-letter queue"
    )
}

/// A returned key column as a value of its kind.
fn returned_value(kind: &Kind, value: MyValue) -> Value {
    match value {
        MyValue::NULL => Value::Null,
        MyValue::Int(i) => Value::Int(i),
        MyValue::UInt(u) => match i64::try_from(u) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Numeric(u.to_string().into()),
        },
        MyValue::Float(f) => Value::Float(f64::from(f)),
        MyValue::Double(f) => Value::Float(f),
        MyValue::Bytes(b) => match kind {
            Kind::Binary { .. } => Value::Bytes(b.into()),
            Kind::Int { .. } | Kind::Bit { .. } | Kind::Year => {
                let text = String::from_utf8_lossy(&b).into_owned();
                match text.parse::<i64>() {
                    Ok(i) => Value::Int(i),
                    Err(_) => Value::Numeric(text.into()),
                }
            }
            Kind::Decimal { .. } => Value::Numeric(String::from_utf8_lossy(&b).into_owned().into()),
            _ => Value::Text(String::from_utf8_lossy(&b).into_owned().into()),
        },
        other => Value::Text(other.as_sql(true).trim_matches('\'').to_string().into()),
    }
}

/// A value given in the data, as the message would carry it back.
fn cell_value(cell: &Cell<'_>) -> Value {
    match cell {
        Cell::Null => Value::Null,
        Cell::Int(i) => Value::Int(*i),
        Cell::UInt(u) => match i64::try_from(*u) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::Numeric(u.to_string().into()),
        },
        Cell::Float(f) => Value::Float(*f),
        Cell::Text(t) => Value::Text(t.to_string().into()),
        Cell::Bytes(b) => Value::Bytes(b.to_vec().into()),
    }
}

/// The server's message with its error number.
fn server_message(e: &mysql_async::ServerError) -> String {
    format!("{} [error {}]", e.message, e.code)
}

/// Any error of the driver, as shown: a server's with its number, others with causes.
pub fn message(e: &mysql_async::Error) -> String {
    match e {
        mysql_async::Error::Server(e) => server_message(e),
        other => chain(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_found_in_server_messages() {
        for (message, column) in [
            ("Column 'name' cannot be null", Some("name")),
            ("Out of range value for column 'n' at row 1", Some("n")),
            ("Data too long for column 'a''b' at row 3", Some("a")),
            (
                "Incorrect datetime value: 'x' for column `db`.`t`.`at` at row 1",
                Some("at"),
            ),
            (
                "Incorrect string value: '\\xF0' for column `x``y` at row 1",
                Some("x`y"),
            ),
            ("Duplicate entry '1' for key 'PRIMARY'", None),
        ] {
            assert_eq!(column_named(message).as_deref(), column, "{message}");
        }
    }
}

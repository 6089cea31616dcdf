//! One connection, and applying a batch of changes through it.
//!
//! A batch is one transaction. The fast path sends one set-based statement per run of
//! like operations, the last with the COMMIT right behind it ([`execute_then_commit`]); a
//! batch that is a single statement goes alone, its own transaction (see [`Inner::run`]).
//! When a statement fails because of some change's data, the transaction
//! is rolled back and the batch is applied again by bisection under savepoints: a range
//! that fails is split in two until each bad change stands alone and is reported; every
//! range that works is kept, and all of it commits together. A failure that is not the
//! data's fault (connection lost, serialization failure, deadlock, shutdown) rolls back
//! everything and is returned as transient, so the host reconnects and retries the batch.
//!
//! Between the two are errors that may or may not pass on a retry: a missing privilege or
//! a row-level security policy (SQLSTATE 42501) and `statement_timeout` (57014). A grant
//! or a quieter server may fix them, so they are transient at first; but one message
//! must not hold its queue back forever, so each change's failures are counted (`Doubts`)
//! and a change that reaches `max_attempts` is isolated like bad data and reported as
//! permanent, saying how often it failed, why, and what to do.
//!
//! **Invariant:** the results are decided only once `COMMIT` succeeded; before that any
//! failure is transient and nothing of the batch is kept.

use std::{
    collections::HashMap,
    future::Future,
    pin::pin,
    sync::Arc,
    task::Poll,
    time::{Duration, Instant},
};

use golconde_plugin_api::{Applied, Change, Column, PluginError, RVec, Value};
use golconde_plugin_support::{
    batch, bisect::Bisection, doubt::Verdict, errors::with_id, fingerprint::Fingerprint,
};
use tokio::{runtime::Runtime, task::JoinHandle};
use tokio_postgres::{error::SqlState, types::ToSql, Client, Statement};

use crate::{
    convert::{float_text, Cell},
    dedupe,
    plan::{self, Prepared},
    schema::{self, Introspection, Kind, Table},
    timestamp, Shared,
};

/// A statement failed; what that means for the batch.
#[derive(Debug)]
enum Failure {
    /// Not the data's fault: roll back, report, let the host retry.
    Transient(PluginError),
    /// May or may not pass on a retry (42501, 57014): transient until the change at fault
    /// has failed `max_attempts` times, then that change's fault.
    Doubtful(tokio_postgres::Error),
    /// A table changed under the cached definition: read it again and retry once.
    Schema(tokio_postgres::Error),
    /// Some change's data cannot apply: find it.
    Data(DataError),
}

/// Why a statement refused the data.
#[derive(Debug)]
enum DataError {
    Database(tokio_postgres::Error),
    /// An insert returned fewer keys than it had rows (a trigger skipped some), so the
    /// keys cannot be matched to their rows; applied one by one they can.
    Unmatched,
}

/// What became of one attempt at the batch.
enum Attempt {
    Done(Vec<Result<Applied, PluginError>>),
    /// A cached table definition was stale: the tables must be read again.
    Stale,
}

/// A session: a connection with its own single-threaded runtime, which runs only while a
/// call of the host is in it. Nothing async is visible outside.
pub struct PgSession {
    inner: Option<Inner>,
    connection: Option<JoinHandle<()>>,
    runtime: Runtime,
}

struct Inner {
    client: Client,
    shared: Arc<Shared>,
    /// A transaction is open on the connection: BEGIN went out, and neither COMMIT nor
    /// ROLLBACK since.
    open: bool,
    /// Prepared statements by SQL text; cleared when a table changes.
    statements: HashMap<String, Statement>,
}

/// The most prepared statements a session keeps.
const MAX_STATEMENTS: usize = 256;

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

/// Opens a connection to the first host of the DSN that takes it (see
/// `golconde_pg::connect::open`); must run inside `runtime`, which then drives it.
pub async fn open(shared: &Shared) -> Result<(Client, JoinHandle<()>), PluginError> {
    let settings = &shared.settings;
    let (client, connection, label) = golconde_pg::connect::open(&settings.pg)
        .await
        .map_err(PluginError::transient)?;
    let connection = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("connection to {label} ended: {e}");
        }
    });
    if let Some(ms) = settings.statement_timeout_ms {
        client
            .batch_execute(&format!("SET statement_timeout = {ms}"))
            .await
            .map_err(|e| {
                PluginError::transient(format!(
                    "setting statement_timeout on {}: {e}",
                    settings.pg.target
                ))
            })?;
    }
    Ok((client, connection))
}

impl PgSession {
    pub fn connect(shared: Arc<Shared>) -> Result<PgSession, PluginError> {
        let runtime = runtime()?;
        let (client, connection) = runtime.block_on(async {
            let (client, connection) = open(&shared).await?;
            if shared.settings.dedupe && !shared.dedupe_ready() {
                let schema = &shared.settings.dedupe_schema;
                dedupe::ensure_table(&client, schema).await.map_err(|e| {
                    PluginError::transient(format!(
                        "cannot create {schema}.applied on {} for `dedupe`: {e}",
                        shared.settings.pg.target
                    ))
                })?;
                shared.set_dedupe_ready();
            }
            Ok::<_, PluginError>((client, connection))
        })?;
        tracing::debug!("connected to {}", shared.settings.pg.target);
        Ok(PgSession {
            inner: Some(Inner {
                client,
                shared,
                statements: HashMap::new(),
                open: false,
            }),
            connection: Some(connection),
            runtime,
        })
    }

    /// The server process serving this session (what `pg_terminate_backend` takes).
    pub fn backend_pid(&mut self) -> Result<i32, PluginError> {
        let inner = self.inner.as_ref().expect("present until drop");
        self.runtime.block_on(async {
            let row = inner
                .client
                .query_one("SELECT pg_catalog.pg_backend_pid()", &[])
                .await
                .map_err(|e| PluginError::transient(e.to_string()))?;
            Ok(row.get(0))
        })
    }
}

impl Drop for PgSession {
    fn drop(&mut self) {
        // Dropping the client asks the connection to say goodbye to the server; give it a
        // moment to do so rather than cutting the socket.
        drop(self.inner.take());
        if let Some(connection) = self.connection.take() {
            let _ = self.runtime.block_on(async move {
                tokio::time::timeout(Duration::from_secs(1), connection).await
            });
        }
    }
}

impl golconde_plugin_api::Session for PgSession {
    fn apply(
        &mut self,
        changes: &[Change],
    ) -> Result<Vec<Result<Applied, PluginError>>, PluginError> {
        let inner = self.inner.as_mut().expect("present until drop");
        if inner.client.is_closed() {
            return Err(PluginError::transient(format!(
                "the connection to {} is closed; reconnecting",
                inner.shared.settings.pg.target
            )));
        }
        self.runtime.block_on(inner.apply(changes))
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

    /// Forgets what we know of `tables` (and the statements built on it).
    fn refresh(&mut self, tables: Vec<&str>) {
        tracing::info!(
            "reading the definition of {} again: it changed",
            tables.join(", ")
        );
        self.shared.catalog.forget(tables);
        self.statements.clear();
    }

    /// The definition of every table the batch names, read from the catalog if not cached.
    /// Also answers which of them came from the cache.
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
            let missing = || {
                format!(
                    "table `{name}` does not exist in {} (or user cannot see it); create \
                     it, or fix the message's table",
                    self.shared.settings.pg.target
                )
            };
            let table = match self.shared.catalog.get(name) {
                Some(table) => {
                    cached.push(name);
                    Ok(table)
                }
                // Found missing a moment ago: asking again for every message would cost a
                // catalog query each.
                None if self.shared.catalog.is_missing(name) => Err(missing()),
                None => match schema::introspect(&self.client, name).await {
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
                    Err(Introspection::Database(e)) => match classify(e) {
                        Failure::Transient(e) => return Err(e),
                        Failure::Doubtful(e) => {
                            return Err(self.transient(
                                &format!("reading the definition of table `{name}`"),
                                e,
                            ))
                        }
                        Failure::Schema(e) | Failure::Data(DataError::Database(e)) => Err(format!(
                            "cannot read the definition of table `{name}`: {}",
                            db_message(&e)
                        )),
                        Failure::Data(DataError::Unmatched) => unreachable!("not a statement"),
                    },
                },
            };
            let dedupe_schema = &self.shared.settings.dedupe_schema;
            let table = table.and_then(|table| match schema::refusal(&table, dedupe_schema) {
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
                        plan::prepare(table, op, unknown).map_err(|misfit| {
                            let error = PluginError::permanent(with_id(change, misfit.message));
                            (error, misfit.stale_suspect.then_some(op.table.as_str()))
                        })
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
        // Later changes that replay an earlier change of this batch: (later, earlier).
        let mut repeats = Vec::new();
        let mut records = Vec::new();
        if self.shared.settings.dedupe {
            self.begin().await?;
            match self.skip_seen(changes, plans, &mut results).await {
                Ok((r, entries)) => {
                    repeats = r;
                    records = entries;
                }
                Err(e) => {
                    self.rollback().await;
                    return Err(e);
                }
            }
        }
        let candidates: Vec<usize> = (0..changes.len())
            .filter(|&i| results[i].is_none() && !repeats.iter().any(|(later, _)| *later == i))
            .collect();

        // With nothing to record after them, the batch's statements may take the COMMIT
        // along, or need no transaction of their own (see [`Inner::run`]).
        let may_commit = !self.shared.settings.dedupe;
        let mut committed = false;
        let isolation = match self.run(plans, &candidates, may_commit).await {
            Ok((applied, with_commit)) => {
                committed = with_commit;
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
                // Which change is at fault is not known yet: each was attempted, and the
                // attempt failed. Isolating them costs a statement (and, for a timeout, its
                // wait) per step, so that is done only once one has failed often enough.
                let failures = self
                    .shared
                    .doubts
                    .failed_together(candidates.iter().map(|&i| &changes[i]));
                if failures < self.shared.settings.max_attempts {
                    return Err(self.doubtful(&e, failures));
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
            if let Err(e) = self
                .isolate(changes, plans, &candidates, &mut results, counted)
                .await
            {
                self.rollback().await;
                return Err(e);
            }
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
            if let Err(e) = self.record(&results, records).await {
                self.rollback().await;
                return Err(e);
            }
        }
        if !committed {
            self.open = false;
            self.client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| self.transient("committing", e))?;
        }
        self.shared.doubts.forget_changes(
            candidates
                .iter()
                .filter(|&&i| results[i].is_ok())
                .map(|&i| &changes[i]),
        );
        Ok(Attempt::Done(results))
    }

    async fn begin(&mut self) -> Result<(), PluginError> {
        self.open = true;
        // Deferred constraints are checked per statement, so that a violation is pinned
        // to its change rather than failing the whole batch at COMMIT.
        let begun = self
            .client
            .batch_execute("BEGIN; SET CONSTRAINTS ALL IMMEDIATE")
            .await;
        if let Err(e) = begun {
            // BEGIN may have gone through and the SET not: nothing may stay open.
            self.rollback().await;
            return Err(self.transient("starting a transaction", e));
        }
        Ok(())
    }

    /// Rolls back the open transaction, if there is one.
    async fn rollback(&mut self) {
        if !std::mem::take(&mut self.open) {
            return;
        }
        if let Err(e) = self.client.batch_execute("ROLLBACK").await {
            tracing::debug!("rolling back: {e}");
        }
    }

    /// A failure that may pass on a retry, while the changes in it have failed fewer
    /// than `max_attempts` times (the most any of them has: `failures`).
    fn doubtful(&self, e: &tokio_postgres::Error, failures: u32) -> PluginError {
        let max = self.shared.settings.max_attempts;
        PluginError::transient(format!(
            "{}; nothing of the batch was committed. Retrying: this may pass (attempt \
             {failures} of `max_attempts` = {max}; then the change that keeps failing is \
             dead-lettered)",
            db_message(e)
        ))
    }

    fn transient(&self, what: &str, e: tokio_postgres::Error) -> PluginError {
        PluginError::transient(format!(
            "{what} on {}: {}; nothing of the batch was committed",
            self.shared.settings.pg.target,
            db_message(&e)
        ))
    }

    /// Marks the changes that replay one applied before (same id, same tables, same
    /// content) as duplicates. Answers the later changes of this batch that replay an
    /// earlier one of it, (later, earlier), and the entries to record for the others.
    async fn skip_seen(
        &mut self,
        changes: &[Change],
        plans: &[Result<Vec<Prepared<'_>>, PluginError>],
        results: &mut [Option<Result<Applied, PluginError>>],
    ) -> Result<(Vec<(usize, usize)>, Vec<(usize, dedupe::Entry)>), PluginError> {
        // (position, entry) of each change with an id that is still to apply.
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
        let ids: Vec<&str> = entries.iter().map(|(_, e)| e.id.as_str()).collect();
        let scopes: Vec<&str> = entries.iter().map(|(_, e)| e.scope.as_str()).collect();
        let schema = &self.shared.settings.dedupe_schema;
        let seen = dedupe::seen(&self.client, schema, &ids, &scopes)
            .await
            .map_err(|e| self.transient(&format!("reading {schema}.applied"), e))?;

        // The latest content applied under each (scope, id): this batch's, else the table's.
        let mut latest: HashMap<(&str, &str), (usize, &str)> = HashMap::new();
        let mut repeats = Vec::new();
        let mut to_record = Vec::new();
        for (i, entry) in &entries {
            let key = (entry.scope.as_str(), entry.id.as_str());
            let hash = entry.hash.as_deref().expect("computed above");
            if let Some(&(earlier, earlier_hash)) = latest.get(&key) {
                if earlier_hash == hash {
                    repeats.push((*i, earlier));
                    continue;
                }
            } else if let Some(applied) = seen
                .get(&(entry.scope.clone(), entry.id.clone()))
                .or_else(|| seen.get(&(dedupe::LEGACY_SCOPE.into(), entry.id.clone())))
            {
                // An entry from before hashes were kept can only say the id was applied.
                if applied.hash.is_none() || applied.hash.as_deref() == Some(hash) {
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
            if latest.contains_key(&key)
                || seen.contains_key(&(entry.scope.clone(), entry.id.clone()))
            {
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
        let schema = &self.shared.settings.dedupe_schema;
        let recorded = dedupe::record(&self.client, schema, &entries)
            .await
            .map_err(|e| self.transient(&format!("writing {schema}.applied"), e))?;
        if recorded < entries.len() {
            return Err(PluginError::transient(format!(
                "another session committed some of this batch's change ids meanwhile; \
                 rolled back, the retry will skip them (on {})",
                self.shared.settings.pg.target
            )));
        }
        Ok(())
    }

    /// Removes old entries of the applied-change table, now and then, outside any batch.
    async fn prune(&mut self) {
        if !self.shared.settings.dedupe || !self.shared.prune_due() {
            return;
        }
        let retention = self.shared.settings.dedupe_retention.as_secs_f64();
        let schema = &self.shared.settings.dedupe_schema;
        match dedupe::prune(&self.client, schema, retention).await {
            Ok(n) if n > 0 => tracing::debug!("pruned {n} entries of {schema}.applied"),
            Ok(_) => {}
            Err(e) => tracing::warn!("pruning {schema}.applied: {}", db_message(&e)),
        }
    }

    /// Applies the changes `candidates` (positions in `plans`) set-based; what each
    /// returned, in the order of `candidates`. Begins the transaction unless it is open.
    ///
    /// `may_commit`: nothing follows in the transaction, so the last statement may take the
    /// COMMIT along, and a batch that is a single statement is sent on its own, with no
    /// transaction around it: PostgreSQL applies one statement all or nothing, with its
    /// deferred constraints checked at its end. That saves the round trips of BEGIN and
    /// COMMIT. The answer says whether the batch is committed (then no transaction is open).
    async fn run(
        &mut self,
        plans: &[Result<Vec<Prepared<'_>>, PluginError>],
        candidates: &[usize],
        may_commit: bool,
    ) -> Result<(Vec<Applied>, bool), Failure> {
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
        let count = (0..candidates.len()).map(|k| ops(k).len()).sum();
        let runs = plan::runs(
            batch::operations((0..candidates.len()).map(|k| ops(k).as_slice())),
            count,
        );
        let last = runs.len().checked_sub(1);
        let alone = may_commit && !self.open && runs.len() == 1 && !runs[0].returns();
        if !alone && !self.open {
            self.begin().await.map_err(Failure::Transient)?;
        }
        let mut committed = false;
        for (index, run) in runs.into_iter().enumerate() {
            let sql = run.sql();
            let statement = self.statement(&sql).await.map_err(classify)?;
            let params = run.params();
            let params: Vec<&(dyn ToSql + Sync)> = params
                .iter()
                .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                .collect();
            if alone {
                self.client
                    .execute(&statement, &params)
                    .await
                    .map_err(classify)?;
                committed = true;
                continue;
            }
            // A statement that returns keys is checked before anything may commit.
            if may_commit && Some(index) == last && !run.returns() {
                let (executed, commit) =
                    execute_then_commit(&self.client, &statement, &params).await;
                if commit.is_some() {
                    // Whatever the answers, the transaction is over.
                    self.open = false;
                }
                executed.map_err(classify)?;
                if let Some(commit) = commit {
                    commit.map_err(|e| Failure::Transient(self.transient("committing", e)))?;
                    committed = true;
                }
                continue;
            }
            if !run.returns() {
                self.client
                    .execute(&statement, &params)
                    .await
                    .map_err(classify)?;
                continue;
            }
            let rows = self
                .client
                .query(&statement, &params)
                .await
                .map_err(classify)?;
            if rows.len() != run.rows.len() {
                if run.rows.len() > 1 {
                    return Err(Failure::Data(DataError::Unmatched));
                }
                continue;
            }
            for ((origin, op), row) in run.rows.iter().zip(rows) {
                let table = &op.table;
                let columns: Vec<Column> = table
                    .primary_key
                    .iter()
                    .enumerate()
                    .map(|(i, &p)| {
                        let column = &table.columns[p];
                        Column::new(
                            column.name.clone(),
                            returned_value(&column.kind, row.get::<_, Option<String>>(i)),
                        )
                    })
                    .collect();
                applied[origin.change].returned[origin.operation] = columns.into();
            }
        }
        Ok((applied, committed))
    }

    async fn statement(&mut self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        // Messages choosing ever new sets of columns must not grow this without bound.
        if self.statements.len() >= MAX_STATEMENTS {
            self.statements.clear();
        }
        let statement = self.client.prepare(sql).await?;
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
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
            let (error, doubtful) = match self.run(plans, &candidates[range.clone()], false).await {
                Ok((applied, _)) => {
                    self.execute("RELEASE SAVEPOINT golconde").await?;
                    for (i, applied) in candidates[range].iter().zip(applied) {
                        results[*i] = Some(Ok(applied));
                    }
                    continue;
                }
                Err(Failure::Transient(e)) => return Err(e),
                Err(Failure::Doubtful(e)) => (Some(e), true),
                Err(Failure::Schema(e) | Failure::Data(DataError::Database(e))) => (Some(e), false),
                Err(Failure::Data(DataError::Unmatched)) => (None, false),
            };
            self.execute("ROLLBACK TO SAVEPOINT golconde; RELEASE SAVEPOINT golconde")
                .await?;
            let Some(at) = bisection.failed(range) else {
                continue;
            };
            let i = candidates[at];
            let ops = plans[i].as_ref().expect("candidates are planned");
            let error = error.expect("a single change always matches its keys");
            let mut message = self.describe(&error, ops).await?;
            if doubtful {
                let max_attempts = self.shared.settings.max_attempts;
                match self.shared.doubts.judge(&changes[i], counted, max_attempts) {
                    // It may pass yet: the whole batch waits for the retry.
                    Verdict::Retry(failures) => return Err(self.doubtful(&error, failures)),
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

    async fn execute(&mut self, sql: &str) -> Result<(), PluginError> {
        self.client
            .batch_execute(sql)
            .await
            .map_err(|e| match classify(e) {
                Failure::Transient(e) => e,
                Failure::Doubtful(e)
                | Failure::Schema(e)
                | Failure::Data(DataError::Database(e)) => self.transient(sql, e),
                Failure::Data(DataError::Unmatched) => unreachable!("not a statement"),
            })
    }

    /// Says why one change failed: the server's message, with the table and the column
    /// it is about: the one the server names, else those of the constraint it names, else
    /// the first value the server cannot take for its column (found by trying each value
    /// alone).
    async fn describe(
        &mut self,
        error: &tokio_postgres::Error,
        ops: &[Prepared<'_>],
    ) -> Result<String, PluginError> {
        let db = error.as_db_error();
        // The table the server names, if the change writes several.
        let named = db.and_then(|e| Some(format!("{}.{}", e.schema()?, e.table()?)));
        let table = ops
            .iter()
            .map(|op| &op.table)
            .find(|t| Some(&t.display) == named.as_ref())
            .or(ops.first().map(|op| &op.table))
            .cloned();
        let Some(table) = table else {
            return Ok(db_message(error));
        };
        let reason = db_message(error);
        if let Some(column) = db.and_then(|e| e.column()) {
            return Ok(format!(
                "column `{column}` of `{}`: {reason}",
                table.display
            ));
        }
        if let Some(constraint) = db.and_then(|e| e.constraint()) {
            let columns = self.constraint_columns(&table, constraint).await?;
            match columns.as_slice() {
                [] => {}
                [column] => {
                    return Ok(format!(
                        "column `{column}` of `{}`: {reason}",
                        table.display
                    ))
                }
                columns => {
                    let names: Vec<String> = columns.iter().map(|c| format!("`{c}`")).collect();
                    return Ok(format!(
                        "columns {} of `{}`: {reason}",
                        names.join(", "),
                        table.display
                    ));
                }
            }
        }
        let about_data = error.code().is_some_and(|c| {
            matches!(&c.code()[..2], "22" | "23") || c == &SqlState::DATATYPE_MISMATCH
        });
        if about_data {
            if let Some((op, position, text)) = self.find_unfit(ops).await? {
                let column = &op.table.columns[position];
                return Ok(format!(
                    "column `{}` of `{}` ({}) cannot take {}: {reason}",
                    column.name,
                    op.table.display,
                    column.type_name,
                    serde_json::to_string(&text).unwrap_or(text),
                ));
            }
        }
        Ok(format!("`{}`: {reason}", table.display))
    }

    /// The columns of constraint `name` of `table`, in order; none if it is not one of the
    /// table's (a domain's check, say).
    async fn constraint_columns(
        &mut self,
        table: &Table,
        name: &str,
    ) -> Result<Vec<String>, PluginError> {
        const SQL: &str = "\
            SELECT a.attname::text
            FROM pg_catalog.pg_constraint c,
                 unnest(c.conkey) WITH ORDINALITY k(attnum, ord),
                 pg_catalog.pg_attribute a
            WHERE c.conrelid = pg_catalog.to_regclass($1) AND c.conname = $2
              AND a.attrelid = c.conrelid AND a.attnum = k.attnum
            ORDER BY k.ord";
        self.execute("SAVEPOINT golconde_probe").await?;
        let rows = self.client.query(SQL, &[&table.quoted, &name]).await;
        self.execute("ROLLBACK TO SAVEPOINT golconde_probe; RELEASE SAVEPOINT golconde_probe")
            .await?;
        match rows {
            Ok(rows) => Ok(rows.iter().map(|r| r.get(0)).collect()),
            Err(e) => match classify(e) {
                Failure::Transient(e) => Err(e),
                _ => Ok(Vec::new()),
            },
        }
    }

    /// The first value of `ops` the server cannot take for its column, with its text.
    async fn find_unfit<'p, 'a>(
        &mut self,
        ops: &'p [Prepared<'a>],
    ) -> Result<Option<(&'p Prepared<'a>, usize, String)>, PluginError> {
        for op in ops {
            for (position, cell) in op.data.iter().chain(&op.restriction) {
                let column = &op.table.columns[*position];
                // The value as it travels, then through the column's type and its declared
                // form (`numeric(30,10)`, a domain's check): format_type's output is the
                // catalog's, never a message's.
                let (wire, text, param): (&str, String, Box<dyn ToSql + Sync + Send>) = match cell {
                    Cell::Null => continue,
                    Cell::Int(i) => ("pg_catalog.int8", i.to_string(), Box::new(*i)),
                    Cell::Float(f) => ("pg_catalog.float8", float_text(*f), Box::new(*f)),
                    Cell::Bool(b) => ("pg_catalog.bool", b.to_string(), Box::new(*b)),
                    Cell::Text(t) => ("pg_catalog.text", t.to_string(), Box::new(t.to_string())),
                    Cell::Micros(m) => {
                        let tz = matches!(column.kind, Kind::Timestamp { tz: true });
                        let wire = if tz {
                            "pg_catalog.timestamptz"
                        } else {
                            "pg_catalog.timestamp"
                        };
                        (wire, timestamp::format(*m, tz), Box::new(*m))
                    }
                };
                let sql = format!("SELECT $1::{wire}::{}::{}", column.cast, column.type_name);
                self.execute("SAVEPOINT golconde_probe").await?;
                let fails = match self
                    .client
                    .query(&sql, &[param.as_ref() as &(dyn ToSql + Sync)])
                    .await
                {
                    Ok(_) => false,
                    Err(e) => match classify(e) {
                        Failure::Transient(e) => return Err(e),
                        _ => true,
                    },
                };
                self.execute(
                    "ROLLBACK TO SAVEPOINT golconde_probe; RELEASE SAVEPOINT golconde_probe",
                )
                .await?;
                if fails {
                    return Ok(Some((op, *position, text)));
                }
            }
        }
        Ok(None)
    }
}

/// The message of a change that failed `failures` times with an error that may or may
/// not pass, now dead-lettered: what happened, and what to do.
fn given_up(error: &tokio_postgres::Error, failures: u32, described: &str) -> String {
    let fix = match error.code().map(|c| c.code()) {
        Some("57014") => {
            "it ran longer than the server's statement_timeout (`statement_timeout_ms`), or \
             was cancelled: raise statement_timeout or find what slows or blocks it"
        }
        _ => {
            "the database user lacks a privilege on the table or a column, or a row-level \
             security policy refused the row: grant the privilege or change the policy"
        }
    };
    format!(
        "failed {failures} times, each time: {described}; {fix}, then replay the change from \
         the dead-letter queue"
    )
}

/// A returned key column, read as text, as a value of its kind.
fn returned_value(kind: &Kind, text: Option<String>) -> Value {
    let Some(text) = text else {
        return Value::Null;
    };
    match kind {
        Kind::Int { .. } => text
            .parse()
            .map(Value::Int)
            .unwrap_or(Value::Text(text.into())),
        Kind::Float { .. } => text
            .parse()
            .map(Value::Float)
            .unwrap_or(Value::Text(text.into())),
        Kind::Numeric => Value::Numeric(text.into()),
        Kind::Bool => Value::Bool(text == "true"),
        Kind::Json => Value::Json(text.into()),
        _ => Value::Text(text.into()),
    }
}

/// Sends `statement` and, once it is on its way, the transaction's COMMIT behind it, without
/// waiting for its answer in between: a batch costs one round trip to the server fewer,
/// which on a busy machine is one wake-up of the server and one of this thread fewer. The
/// COMMIT is `None` when it was not sent, and the caller commits as usual.
///
/// Why this cannot commit what should not be: a statement that fails aborts the
/// transaction, and PostgreSQL answers the COMMIT of an aborted transaction by rolling it
/// back. tokio-postgres encodes and sends a request on its first poll, and fails there if
/// it cannot encode it, so the COMMIT goes out only after the statement did; one that could
/// not be sent is answered at once, and no COMMIT follows it.
async fn execute_then_commit(
    client: &Client,
    statement: &Statement,
    params: &[&(dyn ToSql + Sync)],
) -> (
    Result<u64, tokio_postgres::Error>,
    Option<Result<(), tokio_postgres::Error>>,
) {
    let mut execute = pin!(client.execute(statement, params));
    if let Poll::Ready(done) =
        std::future::poll_fn(|cx| Poll::Ready(execute.as_mut().poll(cx))).await
    {
        return (done, None);
    }
    let mut commit = pin!(client.batch_execute("COMMIT"));
    let (mut executed, mut committed) = (None, None);
    std::future::poll_fn(|cx| {
        if executed.is_none() {
            if let Poll::Ready(done) = execute.as_mut().poll(cx) {
                executed = Some(done);
            }
        }
        if committed.is_none() {
            if let Poll::Ready(done) = commit.as_mut().poll(cx) {
                committed = Some(done);
            }
        }
        if executed.is_some() && committed.is_some() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    (executed.expect("polled until answered"), committed)
}

/// What a failed statement means, by SQLSTATE class.
fn classify(e: tokio_postgres::Error) -> Failure {
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection broke, or the protocol did.
        return Failure::Transient(PluginError::transient(format!(
            "the database connection failed: {}; nothing of the batch was committed",
            db_message(&e)
        )));
    };
    let code = code.code();
    // insufficient_privilege (also a row-level security policy's WITH CHECK) and
    // query_canceled (statement_timeout): a retry may pass, or may not.
    if matches!(code, "42501" | "57014") {
        return Failure::Doubtful(e);
    }
    let transient = matches!(&code[..2], "08" | "40" | "53" | "57" | "58" | "25" | "XX")
        || matches!(code, "55P03" | "55006");
    let schema = matches!(
        code,
        "42P01" | "42703" | "42704" | "42883" | "42804" | "42P10" | "0A000" | "3F000"
    );
    if transient {
        Failure::Transient(PluginError::transient(format!(
            "{}; nothing of the batch was committed",
            db_message(&e)
        )))
    } else if schema {
        Failure::Schema(e)
    } else {
        Failure::Data(DataError::Database(e))
    }
}

/// The server's message with its detail and SQLSTATE, or the client's error.
fn db_message(e: &tokio_postgres::Error) -> String {
    let Some(db) = e.as_db_error() else {
        return e.to_string();
    };
    let mut message = db.message().to_string();
    if let Some(detail) = db.detail() {
        message.push_str(&format!(" ({detail})"));
    }
    if let Some(constraint) = db.constraint() {
        message.push_str(&format!(" [constraint {constraint}]"));
    }
    message.push_str(&format!(" [SQLSTATE {}]", db.code().code()));
    message
}

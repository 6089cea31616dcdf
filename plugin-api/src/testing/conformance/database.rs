//! The database suite: what the host's appliers rely on when they apply batches, against
//! a real database the author provides.

use std::{sync::Arc, time::Duration};

use crate::{
    abi::{DatabaseBox, PluginKind, SessionBox},
    data::{Action, Applied, Change, Column, Operation, Value},
    error::{ErrorKind, PluginError},
    sdk::Database,
    testing::{build_database, Library},
};
use abi_stable::std_types::{ROption, RSlice, RStr, RString, RVec};

use super::{
    bounded, config_object, configuration, describe, reachability, run_id, show, ConfigAt, ReadRow,
    Report, DEFAULT_TIME_LIMIT,
};

/// How the suite writes keys into [`DatabaseSuite::key_column`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyKind {
    /// [`Value::Text`] keys, for a `text` or `varchar` column.
    #[default]
    Text,
    /// [`Value::Int`] keys between 10⁹ and 2·10⁹, which fit a 32-bit column.
    Integer,
}

/// What [`database`] needs to know about the database under test, and the database it
/// runs against.
pub struct DatabaseSuite {
    /// The plugin's configuration section, as a JSON object, pointing at a database the
    /// suite may write to.
    pub config: String,
    /// A table that exists there, as the plugin names tables (`schema.table`), keyed by
    /// [`DatabaseSuite::key_column`] alone and with a text [`DatabaseSuite::value_column`]
    /// that may be NULL. The suite writes rows with keys of its own and deletes them again.
    pub table: String,
    /// The table's key column (its primary key).
    pub key_column: String,
    /// What the key column holds.
    pub key_kind: KeyKind,
    /// A text column of the table.
    pub value_column: String,
    /// Reads the table back, outside the plugin: the value column of the row whose key is
    /// the given one (as text: `"1000000042"` for an integer key), `None` when there is no
    /// such row. The default panics: it must be set.
    pub read: ReadRow,
    /// The key column has a value the database generates (`serial`, identity, a default):
    /// then an `Insert` without the key must return it in [`Applied::returned`]. With
    /// [`KeyKind::Text`] the default must make text, e.g. `DEFAULT gen_random_uuid()::text`.
    pub generated_key: bool,
    /// Cuts every connection the plugin holds to the database (for PostgreSQL,
    /// `pg_terminate_backend` of the sessions with the plugin's `application_name`). When
    /// set, the suite checks that a batch applied after the cut is a transient error that
    /// leaves nothing behind (or, if the plugin reconnects on its own, applies whole), and
    /// that a new session works.
    pub disconnect: Option<Box<dyn Fn()>>,
    /// Makes the plugin's configuration for a database server at a host and port, where the
    /// suite listens and never answers, or nothing listens. Keep the plugin's connect
    /// timeout below [`DatabaseSuite::time_limit`]. Leave it `None` for a database with no
    /// server (a file, an embedded engine): those checks are then skipped.
    pub config_at: Option<ConfigAt>,
    /// How long one call may take before it is reported as hung (default
    /// [`DEFAULT_TIME_LIMIT`]).
    pub time_limit: Duration,
    /// The plugin's library, to check that it lists the database:
    /// `Some(golconde_plugin_api::testing::library!(your_crate))`.
    pub library: Option<Library>,
}

impl Default for DatabaseSuite {
    fn default() -> DatabaseSuite {
        DatabaseSuite {
            config: "{}".into(),
            table: "golconde_conformance".into(),
            key_column: "id".into(),
            key_kind: KeyKind::Text,
            value_column: "value".into(),
            read: Box::new(|_| {
                panic!("DatabaseSuite::read is not set: give it a function that reads the value column of a row by its key")
            }),
            generated_key: false,
            disconnect: None,
            config_at: None,
            time_limit: DEFAULT_TIME_LIMIT,
            library: None,
        }
    }
}

/// Checks database `D` against the contract, on the database the suite names, and panics
/// with a report of every check that failed.
///
/// Besides what every kind is checked for (see [`super`]):
/// - `connect` opens a session; `key_columns` of the table names the key column, and of a
///   missing table is an error (not a panic); an empty batch gives no results;
/// - one key upserted (a new row), upserted again (the row replaced), updated and deleted,
///   each in a batch of its own, reads back as expected after each step;
/// - a batch of three upserts whose second names a column the table lacks is `Ok` with
///   three results: the second a permanent error naming the column, the other two applied;
///   a change to a missing table is a permanent (or config) error for that change alone,
///   the others applied; and the session then goes on working;
/// - every `Ok` batch has one result per change;
/// - with [`DatabaseSuite::generated_key`], an `Insert` returns the generated key in
///   [`Applied::returned`], and the row is there under it;
/// - with [`DatabaseSuite::disconnect`], a batch after the connections were cut is a
///   transient error of which nothing is visible (or applies whole), and a new session
///   works.
///
/// Everything the suite wrote is deleted at the end.
///
/// # Panics
/// When any check failed, with the list of them.
pub fn database<D: Database>(suite: DatabaseSuite) {
    let mut report = Report::new(PluginKind::Database, D::NAME);
    let mut run = Run {
        suite: &suite,
        keys: Keys::new(suite.key_kind),
        written: Vec::new(),
    };
    if let Some(database) = run.build::<D>(&mut report) {
        run.checks::<D>(&mut report, &database);
        run.clean_up(&database);
    }
    report.finish();
}

/// Makes keys no other run uses.
struct Keys {
    kind: KeyKind,
    run: String,
    base: i64,
    next: i64,
}

impl Keys {
    fn new(kind: KeyKind) -> Keys {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Keys {
            kind,
            run: run_id(),
            base: 1_000_000_000 + i64::from(nanos % 1_000_000) * 1000,
            next: 0,
        }
    }

    /// A new key, as a value and as the text `read` gets.
    fn next(&mut self) -> (Value, String) {
        self.next += 1;
        match self.kind {
            KeyKind::Text => {
                let key = format!("golconde-conformance-{}-{}", self.run, self.next);
                (Value::Text(RString::from(key.as_str())), key)
            }
            KeyKind::Integer => {
                let key = self.base + self.next;
                (Value::Int(key), key.to_string())
            }
        }
    }
}

/// The results of one `apply`, as the contract wants them: one per change.
type Results = Vec<Result<Applied, PluginError>>;

struct Run<'a> {
    suite: &'a DatabaseSuite,
    keys: Keys,
    /// Every key written, as value and text, to delete at the end.
    written: Vec<(Value, String)>,
}

impl Run<'_> {
    fn limit(&self) -> Duration {
        self.suite.time_limit
    }

    fn build<D: Database>(&self, report: &mut Report) -> Option<Arc<DatabaseBox>> {
        let suite = self.suite;
        describe::<D>(
            report,
            PluginKind::Database,
            suite.library.as_ref(),
            &suite.config,
        );
        let config = match config_object(&suite.config) {
            Ok(config) => config,
            Err(why) => {
                report.check("builds from the suite's `config`", Err(why));
                return None;
            }
        };
        let built = {
            let json = suite.config.clone();
            bounded(self.limit(), "building", move || {
                build_database::<D>(&json).map(Arc::new)
            })
        };
        let database = match built {
            Ok(Ok(database)) => database,
            Ok(Err(e)) => {
                report.check("builds from the suite's `config`", Err(show(&e)));
                return None;
            }
            Err(hung) => {
                report.check("builds from the suite's `config`", Err(hung));
                return None;
            }
        };
        report.check("builds from the suite's `config`", Ok(()));
        configuration(report, &config, self.limit(), |json| {
            build_database::<D>(&json).map(drop)
        });
        reachability(
            report,
            suite.config_at.as_ref(),
            self.limit(),
            |json| build_database::<D>(&json),
            |database: &DatabaseBox| database.connect().into_result().map(drop),
            "`connect`",
        );
        Some(database)
    }

    fn connect(&self, database: &Arc<DatabaseBox>) -> Result<SessionBox, String> {
        let database = database.clone();
        bounded(self.limit(), "`connect`", move || {
            database.connect().into_result()
        })?
        .map_err(|e| format!("`connect` failed: {}", show(&e)))
    }

    /// Applies `changes` in `session`, checking that an `Ok` has one result per change. A
    /// session whose call hung is gone.
    fn apply(
        &self,
        session: &mut Option<SessionBox>,
        changes: Vec<Change>,
    ) -> Result<Result<Results, PluginError>, String> {
        let Some(mut taken) = session.take() else {
            return Err("no session: an earlier call hung or failed".into());
        };
        let count = changes.len();
        let (back, outcome) = bounded(self.limit(), "`apply`", move || {
            let outcome = taken.apply(RSlice::from_slice(&changes)).into_result();
            (taken, outcome)
        })?;
        *session = Some(back);
        match outcome {
            Ok(results) if results.len() != count => Err(format!(
                "`apply` of {count} changes returned {} results; it must return one per change",
                results.len()
            )),
            Ok(results) => Ok(Ok(results.into_iter().map(|r| r.into_result()).collect())),
            Err(e) => Ok(Err(e)),
        }
    }

    /// Applies a batch that must commit whole.
    fn commit(
        &self,
        session: &mut Option<SessionBox>,
        changes: Vec<Change>,
    ) -> Result<Results, String> {
        let results = self
            .apply(session, changes)?
            .map_err(|e| format!("`apply` failed: {}", show(&e)))?;
        for (i, result) in results.iter().enumerate() {
            if let Err(e) = result {
                return Err(format!("change {i} failed: {}", show(e)));
            }
        }
        Ok(results)
    }

    fn key(&mut self) -> (Value, String) {
        let key = self.keys.next();
        self.written.push(key.clone());
        key
    }

    fn operation(
        &self,
        action: Action,
        table: &str,
        data: Vec<Column>,
        restriction: Vec<Column>,
    ) -> Change {
        Change {
            id: ROption::RNone,
            operations: RVec::from(vec![Operation {
                action,
                table: RString::from(table),
                data: RVec::from(data),
                restriction: RVec::from(restriction),
            }]),
        }
    }

    fn upsert(&self, key: &Value, value: &str) -> Change {
        let s = self.suite;
        self.operation(
            Action::Upsert,
            &s.table,
            vec![
                Column::new(s.key_column.as_str(), key.clone()),
                Column::new(s.value_column.as_str(), Value::Text(value.into())),
            ],
            Vec::new(),
        )
    }

    fn update(&self, key: &Value, value: &str) -> Change {
        let s = self.suite;
        self.operation(
            Action::Update,
            &s.table,
            vec![Column::new(
                s.value_column.as_str(),
                Value::Text(value.into()),
            )],
            vec![Column::new(s.key_column.as_str(), key.clone())],
        )
    }

    fn delete(&self, key: &Value) -> Change {
        let s = self.suite;
        self.operation(
            Action::Delete,
            &s.table,
            Vec::new(),
            vec![Column::new(s.key_column.as_str(), key.clone())],
        )
    }

    /// Whether the row of `key` reads back as `expected`.
    fn reads(&self, key: &str, expected: Option<&str>) -> Result<(), String> {
        let found = (self.suite.read)(key);
        if found.as_deref() == expected {
            return Ok(());
        }
        Err(match (expected, found) {
            (Some(want), None) => format!("key {key} has no row; expected value {want:?}"),
            (None, Some(got)) => format!("key {key} still has a row, with value {got:?}"),
            (want, got) => format!("key {key} has value {got:?}; expected {want:?}"),
        })
    }

    /// The name of a table that does not exist, beside the suite's table.
    fn missing_table(&self) -> String {
        let name = format!(
            "golconde_conformance_missing_{}",
            self.keys.run.replace('-', "_")
        );
        match self.suite.table.rsplit_once('.') {
            Some((schema, _)) => format!("{schema}.{name}"),
            None => name,
        }
    }

    fn checks<D: Database>(&mut self, report: &mut Report, database: &Arc<DatabaseBox>) {
        let mut session = match self.connect(database) {
            Ok(session) => {
                report.check("`connect` opens a session", Ok(()));
                Some(session)
            }
            Err(why) => return report.check("`connect` opens a session", Err(why)),
        };
        self.key_columns(report, database);
        report.check(
            "an empty batch gives no results",
            self.apply(&mut session, Vec::new())
                .and_then(|outcome| match outcome {
                    Ok(_) => Ok(()),
                    Err(e) => Err(format!("`apply` failed: {}", show(&e))),
                }),
        );
        self.one_row(report, &mut session);
        self.bad_change(report, &mut session);
        self.missing(report, &mut session);
        if self.suite.generated_key {
            self.generated(report, &mut session);
        }
        drop(session);
        if self.suite.disconnect.is_some() {
            self.cut(report, database);
        }
        self.fresh::<D>(report);
    }

    fn key_columns(&self, report: &mut Report, database: &Arc<DatabaseBox>) {
        let s = self.suite;
        let key_columns = |table: String| {
            let database = database.clone();
            bounded(self.limit(), "`key_columns`", move || {
                database
                    .key_columns(RStr::from_str(&table))
                    .into_result()
                    .map(|columns| {
                        columns
                            .into_iter()
                            .map(RString::into_string)
                            .collect::<Vec<_>>()
                    })
            })
        };
        report.check(
            &format!("`key_columns` of `{}` names `{}`", s.table, s.key_column),
            match key_columns(s.table.clone()) {
                Err(hung) => Err(hung),
                Ok(Ok(columns)) if columns.contains(&s.key_column) => Ok(()),
                Ok(Ok(columns)) => Err(format!("it names {columns:?}")),
                Ok(Err(e)) => Err(show(&e)),
            },
        );
        let missing = self.missing_table();
        report.check(
            "`key_columns` of a missing table is an error",
            match key_columns(missing.clone()) {
                Err(hung) => Err(hung),
                Ok(Ok(columns)) => Err(format!("`{missing}` has key columns {columns:?}")),
                Ok(Err(e)) if e.kind == ErrorKind::Panic => Err(show(&e)),
                Ok(Err(_)) => Ok(()),
            },
        );
    }

    fn one_row(&mut self, report: &mut Report, session: &mut Option<SessionBox>) {
        let (key, text) = self.key();
        let steps: [(&str, Change, Option<&str>); 4] = [
            (
                "an upsert inserts a new row",
                self.upsert(&key, "one"),
                Some("one"),
            ),
            (
                "an upsert of the same key replaces the row",
                self.upsert(&key, "two ü"),
                Some("two ü"),
            ),
            (
                "an update by key changes the row",
                self.update(&key, "three"),
                Some("three"),
            ),
            ("a delete by key removes the row", self.delete(&key), None),
        ];
        for (what, change, expected) in steps {
            let outcome = self
                .commit(session, vec![change])
                .and_then(|_| self.reads(&text, expected));
            report.check(what, outcome);
        }
    }

    fn bad_change(&mut self, report: &mut Report, session: &mut Option<SessionBox>) {
        let what = "a change naming a column the table lacks fails alone, as a permanent \
                    error naming the column; the rest of its batch applies";
        let bad_column = "golconde_conformance_no_such_column";
        let (first, first_text) = self.key();
        let (bad, bad_text) = self.key();
        let (last, last_text) = self.key();
        let mut wrong = self.upsert(&bad, "bad");
        wrong.operations[0]
            .data
            .push(Column::new(bad_column, Value::Text("x".into())));
        let batch = vec![
            self.upsert(&first, "first"),
            wrong,
            self.upsert(&last, "last"),
        ];
        let outcome = self.apply(session, batch).and_then(|outcome| {
            let results = outcome.map_err(|e| {
                format!(
                    "the whole batch failed with {}; only the bad change may fail, and the \
                     others must commit",
                    show(&e)
                )
            })?;
            if let Err(e) = &results[0] {
                return Err(format!("the first (good) change failed: {}", show(e)));
            }
            if let Err(e) = &results[2] {
                return Err(format!("the third (good) change failed: {}", show(e)));
            }
            match &results[1] {
                Ok(_) => return Err("the change with the unknown column was applied".into()),
                Err(e) if e.kind != ErrorKind::Permanent => {
                    return Err(format!(
                        "the bad change failed with {}; it must be permanent",
                        show(e)
                    ))
                }
                Err(e) if !e.message.contains(bad_column) => {
                    return Err(format!(
                        "the bad change's error does not name the column `{bad_column}`: {}",
                        show(e)
                    ))
                }
                Err(_) => {}
            }
            self.reads(&first_text, Some("first"))?;
            self.reads(&bad_text, None)?;
            self.reads(&last_text, Some("last"))
        });
        report.check(what, outcome);
        let outcome = self
            .commit(session, vec![self.delete(&first), self.delete(&last)])
            .and_then(|_| self.reads(&first_text, None))
            .and_then(|_| self.reads(&last_text, None));
        report.check(
            "the session goes on working after a batch with a failed change",
            outcome,
        );
    }

    fn missing(&mut self, report: &mut Report, session: &mut Option<SessionBox>) {
        let missing = self.missing_table();
        let (key, text) = self.key();
        let (other, _) = self.key();
        let s = self.suite;
        let to_missing = self.operation(
            Action::Upsert,
            &missing,
            vec![
                Column::new(s.key_column.as_str(), other),
                Column::new(s.value_column.as_str(), Value::Text("lost".into())),
            ],
            Vec::new(),
        );
        let batch = vec![self.upsert(&key, "kept"), to_missing];
        let outcome = self.apply(session, batch).and_then(|outcome| {
            let results = outcome.map_err(|e| {
                format!(
                    "the whole batch failed with {}; only the change to the missing table may \
                     fail",
                    show(&e)
                )
            })?;
            if let Err(e) = &results[0] {
                return Err(format!("the good change failed: {}", show(e)));
            }
            match &results[1] {
                Ok(_) => Err(format!("the change to `{missing}` was applied")),
                Err(e) if matches!(e.kind, ErrorKind::Permanent | ErrorKind::Config) => {
                    self.reads(&text, Some("kept"))
                }
                Err(e) => Err(format!(
                    "the change to `{missing}` failed with {}; a missing table does not come \
                     back on a retry, so it must be permanent (or config)",
                    show(e)
                )),
            }
        });
        report.check(
            "a change to a missing table fails alone, as a permanent error",
            outcome,
        );
    }

    fn generated(&mut self, report: &mut Report, session: &mut Option<SessionBox>) {
        let s = self.suite;
        let insert = self.operation(
            Action::Insert,
            &s.table,
            vec![Column::new(
                s.value_column.as_str(),
                Value::Text("generated".into()),
            )],
            Vec::new(),
        );
        let outcome = self.commit(session, vec![insert]).and_then(|results| {
            let applied = results[0].as_ref().expect("committed");
            let Some(columns) = applied.returned.first() else {
                return Err(format!(
                    "`Applied::returned` is empty; it must hold the insert's generated key \
                     columns ({:?})",
                    s.key_column
                ));
            };
            let Some(column) = columns.iter().find(|c| c.name.as_str() == s.key_column) else {
                return Err(format!(
                    "the insert returned {columns:?}, without the key column `{}`",
                    s.key_column
                ));
            };
            let text = match &column.value {
                Value::Int(n) => n.to_string(),
                Value::Text(t) | Value::Numeric(t) => t.to_string(),
                other => return Err(format!("the generated key is {other:?}")),
            };
            self.written.push((column.value.clone(), text.clone()));
            self.reads(&text, Some("generated"))
        });
        report.check(
            "an insert returns its generated key, under which the row is",
            outcome,
        );
    }

    fn cut(&mut self, report: &mut Report, database: &Arc<DatabaseBox>) {
        let what = "a batch after the connection was cut is a transient error that leaves \
                    nothing, or applies whole";
        let mut session = match self.connect(database) {
            Ok(session) => Some(session),
            Err(why) => return report.check(what, Err(why)),
        };
        let (before, _) = self.key();
        if let Err(why) = self.commit(&mut session, vec![self.upsert(&before, "before")]) {
            return report.check(what, Err(format!("before the cut: {why}")));
        }
        if let Some(disconnect) = &self.suite.disconnect {
            disconnect();
        }
        let keys: Vec<(Value, String)> = (0..3).map(|_| self.key()).collect();
        let batch = keys
            .iter()
            .map(|(key, _)| self.upsert(key, "after"))
            .collect();
        let outcome = self
            .apply(&mut session, batch)
            .and_then(|outcome| match outcome {
                Err(e) if e.kind == ErrorKind::Transient => {
                    for (_, text) in &keys {
                        self.reads(text, None).map_err(|why| {
                            format!(
                                "`apply` failed ({}), yet part of it is visible: {why}",
                                show(&e)
                            )
                        })?;
                    }
                    Ok(())
                }
                Err(e) => Err(format!(
                    "it failed with {}; a lost connection is the database's trouble, not the \
                 batch's: it must be transient",
                    show(&e)
                )),
                Ok(results) => {
                    for (i, result) in results.iter().enumerate() {
                        if let Err(e) = result {
                            return Err(format!(
                                "`apply` reconnected, but change {i} failed: {}",
                                show(e)
                            ));
                        }
                    }
                    for (_, text) in &keys {
                        self.reads(text, Some("after"))?;
                    }
                    Ok(())
                }
            });
        report.check(what, outcome);
        drop(session);
        let outcome = self.connect(database).and_then(|session| {
            let mut session = Some(session);
            let (key, text) = self.key();
            self.commit(&mut session, vec![self.upsert(&key, "again")])?;
            self.reads(&text, Some("again"))
        });
        report.check("a new session works after the cut", outcome);
    }

    fn fresh<D: Database>(&mut self, report: &mut Report) {
        report.check(
            "a new instance, built after the errors, works",
            self.fresh_works::<D>(),
        );
    }

    /// Builds the instance anew, through the ABI as the host rebuilds one, and writes and
    /// deletes a row with it.
    fn fresh_works<D: Database>(&mut self) -> Result<(), String> {
        let json = self.suite.config.clone();
        let database = bounded(self.limit(), "building", move || {
            build_database::<D>(&json).map(Arc::new)
        })?
        .map_err(|e| format!("building failed: {}", show(&e)))?;
        let mut session = Some(self.connect(&database)?);
        let (key, text) = self.key();
        self.commit(&mut session, vec![self.upsert(&key, "fresh")])?;
        self.reads(&text, Some("fresh"))?;
        self.commit(&mut session, vec![self.delete(&key)])?;
        self.reads(&text, None)
    }

    /// Deletes every row the suite wrote, through a session of its own; best effort.
    fn clean_up(&self, database: &Arc<DatabaseBox>) {
        let Ok(session) = self.connect(database) else {
            return;
        };
        let mut session = Some(session);
        let deletes = self
            .written
            .iter()
            .map(|(key, _)| self.delete(key))
            .collect();
        if let Err(why) = self.commit(&mut session, deletes) {
            eprintln!("  (cleaning up: {why})");
        }
    }
}

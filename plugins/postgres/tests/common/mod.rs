//! Helpers for the tests against the real PostgreSQL on 127.0.0.1:5432: a schema of the
//! test's own (dropped at the end), the plugin pointed at it, and changes written as
//! Golconde messages through the `autosql` processor.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

use golconde_plugin_api::{
    sdk::parse_config, Action, Applied, Change, Column, Database, ErrorKind, Operation,
    PluginError, ROption, RString, RVec, Session, Value,
};
use golconde_postgres::{Config, PgSession, Postgres};
use tokio::runtime::Runtime;
use tokio_postgres::{types::ToSql, Client, NoTls, Row};

pub const DSN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A schema of this test's own, and a plain connection to look at it.
pub struct Db {
    runtime: Runtime,
    client: Client,
    /// The schema's name, unique to this test run.
    pub schema: String,
}

impl Db {
    pub fn new(tag: &str) -> Db {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(DSN, NoTls).await.unwrap();
            tokio::spawn(connection);
            client
        });
        let schema = format!(
            "gt_{}_{}_{tag}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let db = Db {
            runtime,
            client,
            schema,
        };
        db.exec(&format!("CREATE SCHEMA {}", db.schema));
        db
    }

    /// Runs SQL; `{s}` stands for the schema.
    pub fn exec(&self, sql: &str) {
        let sql = sql.replace("{s}", &self.schema);
        self.runtime
            .block_on(self.client.batch_execute(&sql))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    pub fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Vec<Row> {
        let sql = sql.replace("{s}", &self.schema);
        self.runtime
            .block_on(self.client.query(&sql, params))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    }

    /// The first column of the first row, as text (`NULL` as "NULL").
    pub fn text(&self, sql: &str) -> String {
        let rows = self.query(sql, &[]);
        rows[0]
            .get::<_, Option<String>>(0)
            .unwrap_or_else(|| "NULL".into())
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.query(sql, &[])[0].get(0)
    }

    /// The plugin, pointed at the test database, with extra configuration keys.
    pub fn plugin(&self, extra: &str) -> Postgres {
        // The applied-change table goes into the test's schema, and is dropped with it.
        let json = format!(
            r#"{{"dsn": "{DSN}", "dedupe_schema": "{}"{extra}}}"#,
            self.schema
        );
        Postgres::from_config(parse_config::<Config>(&json).unwrap()).unwrap()
    }

    /// A table name in this test's schema.
    pub fn table(&self, name: &str) -> String {
        format!("{}.{name}", self.schema)
    }

    /// A processor writing to `table` of this schema by default.
    pub fn processor(&self, table: &str) -> golconde_autosql::AutoSql {
        golconde_autosql::AutoSql::from_config(golconde_autosql::Config {
            table: Some(self.table(table)),
            tables: Vec::new(),
        })
        .unwrap()
    }

    /// Terminates the server processes of `pid`.
    pub fn terminate(&self, pid: i32) {
        self.query("SELECT pg_terminate_backend($1)", &[&pid]);
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema);
        let _ = self.runtime.block_on(self.client.batch_execute(&sql));
    }
}

/// Messages through the processor, then changes.
pub fn changes(processor: &golconde_autosql::AutoSql, messages: &[String]) -> Vec<Change> {
    use golconde_plugin_api::{Message, Processor};
    messages
        .iter()
        .map(|m| {
            processor
                .process(&Message::new(m.as_bytes().to_vec()))
                .unwrap_or_else(|e| panic!("{m}: {e}"))
        })
        .collect()
}

/// Applies through a fresh session and expects the batch to commit.
pub fn apply(db: &Postgres, changes: &[Change]) -> Vec<Result<Applied, PluginError>> {
    let mut session = db.connect().unwrap();
    apply_in(&mut session, changes)
}

pub fn apply_in(session: &mut PgSession, changes: &[Change]) -> Vec<Result<Applied, PluginError>> {
    let results = session.apply(changes).expect("the batch commits");
    assert_eq!(results.len(), changes.len());
    results
}

/// The error of a result expected to fail permanently.
pub fn permanent(result: &Result<Applied, PluginError>) -> String {
    match result {
        Err(e) if e.kind == ErrorKind::Permanent => e.message.to_string(),
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

pub fn op(action: Action, table: &str, data: Vec<Column>, restriction: Vec<Column>) -> Change {
    Change {
        id: ROption::RNone,
        operations: RVec::from(vec![Operation {
            action,
            table: RString::from(table),
            data: data.into(),
            restriction: restriction.into(),
        }]),
    }
}

pub fn col(name: &str, value: Value) -> Column {
    Column::new(name, value)
}

pub fn text(t: &str) -> Value {
    Value::Text(t.into())
}

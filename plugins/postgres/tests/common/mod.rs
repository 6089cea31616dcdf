//! Helpers for the tests against the real PostgreSQL on 127.0.0.1:5432: a schema of the
//! test's own (dropped at the end, with the schema of its applied-change table), the
//! plugin pointed at it, changes written as Golconde messages through the `autosql`
//! processor, and, for the tests that need them, a role or a database of the test's own,
//! a server of the test's own (`server`), and what was logged.
#![allow(dead_code)]

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Mutex,
};

use golconde_plugin_api::{
    sdk::parse_config, Action, Applied, Change, Column, Database, ErrorKind, Operation,
    PluginError, ROption, RString, RVec, Session, Value,
};
use golconde_postgres::{Config, PgSession, Postgres};

pub mod server;
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
    roles: Mutex<Vec<String>>,
    databases: Mutex<Vec<String>>,
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
            roles: Mutex::new(Vec::new()),
            databases: Mutex::new(Vec::new()),
        };
        db.exec(&format!("CREATE SCHEMA {}", db.schema));
        db
    }

    /// The schema of the applied-change table (`dedupe_schema`), beside the test's own.
    pub fn dedupe_schema(&self) -> String {
        format!("{}_dd", self.schema)
    }

    /// `{s}` stands for the schema, `{d}` for the dedupe schema.
    fn expand(&self, sql: &str) -> String {
        sql.replace("{s}", &self.schema)
            .replace("{d}", &self.dedupe_schema())
    }

    /// Runs SQL; `{s}` stands for the schema, `{d}` for the dedupe schema.
    pub fn exec(&self, sql: &str) {
        let sql = self.expand(sql);
        self.runtime
            .block_on(self.client.batch_execute(&sql))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    pub fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Vec<Row> {
        let sql = self.expand(sql);
        self.runtime
            .block_on(self.client.query(&sql, params))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    }

    /// A query that may fail, and the server's error if it does.
    pub fn try_query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, tokio_postgres::Error> {
        let sql = self.expand(sql);
        self.runtime.block_on(self.client.query(&sql, params))
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

    /// Runs SQL and answers the error it fails with.
    pub fn fails(&self, sql: &str) -> tokio_postgres::Error {
        let sql = self.expand(sql);
        match self.runtime.block_on(self.client.batch_execute(&sql)) {
            Ok(()) => panic!("{sql} succeeded"),
            Err(e) => e,
        }
    }

    /// The plugin, pointed at the test database, with extra configuration keys.
    pub fn plugin(&self, extra: &str) -> Postgres {
        self.plugin_at(DSN, extra)
    }

    /// The plugin, pointed at `dsn`, with extra configuration keys.
    pub fn plugin_at(&self, dsn: &str, extra: &str) -> Postgres {
        // The applied-change table goes into a schema of the test's own, dropped with it.
        let json = format!(
            r#"{{"dsn": "{dsn}", "dedupe_schema": "{}"{extra}}}"#,
            self.dedupe_schema()
        );
        Postgres::from_config(parse_config::<Config>(&json).unwrap()).unwrap()
    }

    /// A login role of this test's own, dropped with the schema; `{r}` in `grants` stands
    /// for its name.
    pub fn role(&self, tag: &str, grants: &str) -> String {
        let role = format!("{}_{tag}", self.schema);
        self.exec(&format!("CREATE ROLE {role} LOGIN"));
        self.roles.lock().unwrap().push(role.clone());
        self.exec(&grants.replace("{r}", &role));
        role
    }

    /// A database of this test's own, dropped with the schema; answers its name.
    pub fn database(&self, tag: &str) -> String {
        let name = format!("{}_{tag}", self.schema);
        self.exec(&format!("CREATE DATABASE {name}"));
        self.databases.lock().unwrap().push(name.clone());
        name
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

    /// Runs SQL in `database` (one of [`Db::database`]) through a connection of its own.
    pub fn exec_in(&self, database: &str, sql: &str) {
        let dsn = format!("host=127.0.0.1 port=5432 user=postgres dbname={database}");
        self.runtime.block_on(async {
            let (client, connection) = tokio_postgres::connect(&dsn, NoTls).await.unwrap();
            let connection = tokio::spawn(connection);
            client
                .batch_execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
            drop(client);
            let _ = connection.await;
        });
    }

    /// Terminates the server processes of `pid`.
    pub fn terminate(&self, pid: i32) {
        self.query("SELECT pg_terminate_backend($1)", &[&pid]);
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let mut sql = format!(
            "DROP SCHEMA IF EXISTS {} CASCADE; DROP SCHEMA IF EXISTS {} CASCADE;",
            self.schema,
            self.dedupe_schema()
        );
        for role in self.roles.lock().unwrap().iter() {
            sql.push_str(&format!("DROP OWNED BY {role}; DROP ROLE {role};"));
        }
        let _ = self.runtime.block_on(self.client.batch_execute(&sql));
        for database in self.databases.lock().unwrap().iter() {
            let sql = format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)");
            let _ = self.runtime.block_on(self.client.batch_execute(&sql));
        }
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

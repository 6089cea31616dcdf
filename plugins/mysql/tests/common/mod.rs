//! Helpers for the tests against the real MariaDB on 127.0.0.1:3306: a database of the
//! test's own (dropped at the end, with the database of its applied-change table), the
//! plugin pointed at it, changes written as Golconde messages (read by a small parser of
//! the test's own), and a plain connection to look at what was written.
#![allow(dead_code)]

use std::{
    cell::RefCell,
    sync::atomic::{AtomicUsize, Ordering},
};

use golconde_mysql::{Config, MySession, Mysql};
use golconde_plugin_api::{
    sdk::parse_config, testing, Action, Applied, Change, Column, Database, ErrorKind, Operation,
    PluginError, ROption, RString, RVec, Session, Value,
};
use mysql_async::{prelude::Queryable, Conn, Opts};
use tokio::runtime::Runtime;

pub const DSN: &str = "mysql://root@127.0.0.1:3306";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A database of this test's own, and a plain connection to look at it.
pub struct Db {
    runtime: Runtime,
    conn: RefCell<Option<Conn>>,
    /// The database's name, unique to this test run.
    pub name: String,
}

impl Db {
    pub fn new(tag: &str) -> Db {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let opts = Opts::from_url(&format!("{DSN}?prefer_socket=false")).unwrap();
        let conn = runtime
            .block_on(Conn::new(opts))
            .expect("the local MariaDB on 127.0.0.1:3306");
        let name = format!(
            "gt_{}_{}_{tag}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let db = Db {
            runtime,
            conn: RefCell::new(Some(conn)),
            name,
        };
        db.exec("CREATE DATABASE `{s}` CHARACTER SET utf8mb4");
        db
    }

    /// The database of the applied-change table (`dedupe_database`), beside the test's.
    pub fn dedupe_database(&self) -> String {
        format!("{}_dd", self.name)
    }

    /// `{s}` stands for the database, `{d}` for the dedupe database.
    fn expand(&self, sql: &str) -> String {
        sql.replace("{s}", &self.name)
            .replace("{d}", &self.dedupe_database())
    }

    /// Runs SQL; `{s}` stands for the database, `{d}` for the dedupe database.
    pub fn exec(&self, sql: &str) {
        let sql = self.expand(sql);
        let mut conn = self.conn.borrow_mut();
        let conn = conn.as_mut().unwrap();
        self.runtime
            .block_on(conn.query_drop(&sql))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    /// Rows of a query, each value as text (`NULL` as None).
    pub fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let sql = self.expand(sql);
        let mut conn = self.conn.borrow_mut();
        let conn = conn.as_mut().unwrap();
        let rows: Vec<mysql_async::Row> = self
            .runtime
            .block_on(conn.query(&sql))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        rows.into_iter()
            .map(|row| {
                row.unwrap()
                    .into_iter()
                    .map(|v| match v {
                        mysql_async::Value::NULL => None,
                        mysql_async::Value::Bytes(b) => {
                            Some(String::from_utf8_lossy(&b).into_owned())
                        }
                        other => Some(other.as_sql(true)),
                    })
                    .collect()
            })
            .collect()
    }

    /// The first column of the first row, as text (`NULL` as "NULL").
    pub fn text(&self, sql: &str) -> String {
        self.rows(sql)[0][0]
            .clone()
            .unwrap_or_else(|| "NULL".into())
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.text(sql).parse().unwrap()
    }

    /// The plugin, pointed at the test database, with extra configuration keys.
    pub fn plugin(&self, extra: &str) -> Mysql {
        let json = format!(
            r#"{{"dsn": "{DSN}/{}", "dedupe_database": "{}"{extra}}}"#,
            self.name,
            self.dedupe_database()
        );
        Mysql::from_config(
            parse_config::<Config>(&json).unwrap(),
            &testing::host("test"),
        )
        .unwrap()
    }

    /// A table name in this test's database.
    pub fn table(&self, name: &str) -> String {
        format!("{}.{name}", self.name)
    }

    /// Messages in the Golconde format for `table` of this database.
    pub fn processor(&self, table: &str) -> Messages {
        Messages {
            table: self.table(table),
        }
    }

    /// Ends the connection `id` from this connection.
    pub fn kill(&self, id: u32) {
        self.exec(&format!("KILL CONNECTION {id}"));
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let sql = self.expand("DROP DATABASE IF EXISTS `{s}`; DROP DATABASE IF EXISTS `{d}`");
        if let Some(mut conn) = self.conn.get_mut().take() {
            self.runtime.block_on(async {
                let _ = conn.query_drop(sql).await;
                let _ = conn.disconnect().await;
            });
        }
    }
}

/// Writes Golconde messages (`{"action": "add" | "set" | "update" | "delete", "data":
/// {...}, "restriction": {...}}`) for one table as changes. A small reading of the format
/// of the test's own: the `autosql` plugin cannot be linked beside this one in a test
/// binary (both export the same root-module symbols).
pub struct Messages {
    table: String,
}

pub fn changes(messages: &Messages, texts: &[String]) -> Vec<Change> {
    texts
        .iter()
        .map(|text| {
            let json: serde_json::Value =
                serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let action = match json["action"].as_str() {
                Some("add") => Action::Insert,
                Some("set") => Action::Upsert,
                Some("update") => Action::Update,
                Some("delete") => Action::Delete,
                other => panic!("{text}: action {other:?}"),
            };
            let columns = |key: &str| -> Vec<Column> {
                json.get(key)
                    .and_then(|v| v.as_object())
                    .map(|o| o.iter().map(|(k, v)| col(k, value(v))).collect())
                    .unwrap_or_default()
            };
            op(
                action,
                &messages.table,
                columns("data"),
                columns("restriction"),
            )
        })
        .collect()
}

fn value(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap()),
        },
        serde_json::Value::String(s) => Value::Text(s.as_str().into()),
        serde_json::Value::Array(items) => Value::Array(items.iter().map(value).collect()),
        object => Value::Json(object.to_string().into()),
    }
}

/// Applies through a fresh session and expects the batch to commit.
pub fn apply(db: &Mysql, changes: &[Change]) -> Vec<Result<Applied, PluginError>> {
    let mut session = db.connect().unwrap();
    apply_in(&mut session, changes)
}

pub fn apply_in(session: &mut MySession, changes: &[Change]) -> Vec<Result<Applied, PluginError>> {
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

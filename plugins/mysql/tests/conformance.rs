//! The `mysql` database against the plugin contract (`golconde_plugin_api::testing::
//! conformance`), on a database of the test's own on the local MariaDB: one table with
//! an AUTO_INCREMENT key, one with a text key.
//!
//! Standalone rather than on `common`: `common` links the `autosql` plugin too, and in a
//! binary that links two plugin crates the linker keeps one crate's `export_plugins!`
//! statics for both, so the suite could not check this library's entries.

use std::{
    cell::RefCell,
    rc::Rc,
    sync::atomic::{AtomicUsize, Ordering},
};

use golconde_mysql::Mysql;
use golconde_plugin_api::testing::{self, conformance};
use mysql_async::{prelude::Queryable, Conn, Opts};
use tokio::runtime::Runtime;

const DSN: &str = "mysql://root@127.0.0.1:3306";

/// A database of this test's own, with the database of the plugin's applied-change table
/// beside it; both dropped at the end. The plugin connects as a user of the test's own,
/// so that the suite's `disconnect` cuts only this test's sessions.
struct Database {
    runtime: Runtime,
    conn: RefCell<Conn>,
    name: String,
}

impl Database {
    fn new(tag: &str) -> Rc<Database> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "gt_{}_{}_{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let opts = Opts::from_url(&format!("{DSN}?prefer_socket=false")).unwrap();
        let conn = runtime
            .block_on(Conn::new(opts))
            .expect("the local MariaDB");
        let database = Rc::new(Database {
            runtime,
            conn: RefCell::new(conn),
            name,
        });
        database.exec(
            "CREATE DATABASE `{s}`; CREATE USER '{s}'@'%'; GRANT ALL ON `{s}`.* TO '{s}'@'%'; \
             GRANT ALL ON `{s}_dd`.* TO '{s}'@'%'",
        );
        database
    }

    fn exec(&self, sql: &str) {
        let sql = sql.replace("{s}", &self.name);
        self.runtime
            .block_on(self.conn.borrow_mut().query_drop(&sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let sql = format!(
            "DROP DATABASE IF EXISTS `{0}`; DROP DATABASE IF EXISTS `{0}_dd`; \
             DROP USER IF EXISTS '{0}'@'%'",
            self.name
        );
        let _ = self.runtime.block_on(self.conn.get_mut().query_drop(sql));
    }
}

fn suite(database: &Rc<Database>) -> conformance::DatabaseSuite {
    let read = {
        let database = database.clone();
        let sql = format!(
            "SELECT value FROM `{}`.items WHERE CAST(id AS CHAR) = ?",
            database.name
        );
        Box::new(move |key: &str| {
            let row: Option<(Option<String>,)> = database
                .runtime
                .block_on(database.conn.borrow_mut().exec_first(&sql, (key,)))
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            row.map(|(value,)| value.unwrap_or_else(|| "NULL".into()))
        })
    };
    let disconnect = {
        let database = database.clone();
        Box::new(move || {
            let sql = format!(
                "SELECT id FROM information_schema.PROCESSLIST WHERE USER = '{}'",
                database.name
            );
            let ids: Vec<u64> = database
                .runtime
                .block_on(database.conn.borrow_mut().query(&sql))
                .expect("sessions listed");
            for id in ids {
                let _ = database
                    .runtime
                    .block_on(database.conn.borrow_mut().query_drop(format!("KILL {id}")));
            }
        })
    };
    conformance::DatabaseSuite {
        config: serde_json::json!({
            "dsn": format!("mysql://{0}@127.0.0.1:3306/{0}", database.name),
            "dedupe_database": format!("{}_dd", database.name),
        })
        .to_string(),
        table: format!("{}.items", database.name),
        key_column: "id".into(),
        value_column: "value".into(),
        read,
        disconnect: Some(disconnect),
        config_at: Some(Box::new(|host, port| {
            serde_json::json!({
                "dsn": format!("mysql://root@{host}:{port}/db"),
                "connect_timeout_ms": 2000,
            })
            .to_string()
        })),
        library: Some(testing::library!(golconde_mysql)),
        ..Default::default()
    }
}

#[test]
fn mysql_conforms_with_a_generated_key() {
    let database = Database::new("conf_gen");
    database.exec("CREATE TABLE `{s}`.items (id bigint AUTO_INCREMENT PRIMARY KEY, value text)");
    conformance::database::<Mysql>(conformance::DatabaseSuite {
        key_kind: conformance::KeyKind::Integer,
        generated_key: true,
        ..suite(&database)
    });
}

#[test]
fn mysql_conforms_with_a_text_key() {
    let database = Database::new("conf_text");
    database.exec("CREATE TABLE `{s}`.items (id varchar(200) PRIMARY KEY, value text)");
    conformance::database::<Mysql>(suite(&database));
}

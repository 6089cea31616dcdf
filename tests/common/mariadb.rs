//! A MariaDB database of the test's own, for the `mysql` plugin's end-to-end tests: created
//! on 127.0.0.1:3306 as root (no password, as `scripts/test` sets up), dropped at the end.
//!
//! The tests read it back through the `mariadb` command-line client, so what they see is
//! what any other client of the server sees, and the test crate needs no MySQL driver.
//! [`PrivateMariaDb`] is a MariaDB server of the test's own, for what the shared one does
//! not offer: TLS with client certificates.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{
    broker::{free_port, Certificates},
    eventually,
    services::unique,
};

pub const MARIADB_URL: &str = "mysql://root@127.0.0.1:3306";

/// A database of the test's own on the local MariaDB, dropped when this is.
pub struct MariaDb {
    pub name: String,
}

impl MariaDb {
    /// Creates the database and runs `schema` (statements separated by `;`) in it.
    pub fn create(what: &str, schema: &str) -> MariaDb {
        let name = unique(what);
        run(None, &format!("create database `{name}`"));
        let db = MariaDb { name };
        run(Some(&db.name), schema);
        db
    }

    /// The `dsn` of a `mysql` database section for this database.
    pub fn dsn(&self) -> String {
        format!("{MARIADB_URL}/{}", self.name)
    }

    /// Every row of `query`, each rendered as its text columns joined by `|` (`NULL` for
    /// null).
    pub fn rows(&self, query: &str) -> Vec<String> {
        run(Some(&self.name), query)
            .lines()
            .map(|line| line.replace('\t', "|"))
            .collect()
    }

    /// Runs statements in this database.
    pub fn execute(&self, statements: &str) {
        run(Some(&self.name), statements);
    }

    pub fn count(&self, table: &str) -> i64 {
        self.rows(&format!("select count(*) from {table}"))[0]
            .parse()
            .expect("a count")
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = Command::new("mariadb")
            .args(["-h", "127.0.0.1", "-u", "root", "-e"])
            .arg(format!("drop database if exists `{}`", self.name))
            .status();
    }
}

/// Runs `sql` with the `mariadb` client, batch mode without column names, and returns what
/// it printed; panics with the client's error if it fails.
fn run(database: Option<&str>, sql: &str) -> String {
    let mut command = Command::new("mariadb");
    command.args([
        "-h",
        "127.0.0.1",
        "-P",
        "3306",
        "-u",
        "root",
        "--batch",
        "--skip-column-names",
    ]);
    if let Some(database) = database {
        command.arg(database);
    }
    let output = command
        .arg("-e")
        .arg(sql)
        .output()
        .expect("the mariadb client (scripts/test installs mariadb-client)");
    assert!(
        output.status.success(),
        "mariadb failed on `{sql}`: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 from mariadb")
}

impl MariaDb {
    /// Ends every connection open to this database but the caller's own (`KILL
    /// CONNECTION`), and says how many there were.
    pub fn kill_golconde_connections(&self) -> usize {
        let ids = self.rows(&format!(
            "select id from information_schema.processlist \
             where db = '{}' and id <> connection_id()",
            self.name
        ));
        for id in &ids {
            // A connection may end between the listing and the kill.
            let _ = Command::new("mariadb")
                .args(["-h", "127.0.0.1", "-u", "root", "-e"])
                .arg(format!("kill connection {id}"))
                .status();
        }
        ids.len()
    }
}

/// A MariaDB server of the test's own, on a free port, that takes TLS with the given
/// certificates and has a user `golconde` who must present a client certificate
/// (`REQUIRE X509`) and a database `shop`; stopped and removed when dropped.
pub struct PrivateMariaDb {
    dir: tempfile::TempDir,
    server: Child,
    pub port: u16,
}

impl PrivateMariaDb {
    pub fn start_tls(certificates: &Certificates) -> PrivateMariaDb {
        let dir = tempfile::tempdir().expect("a folder for the server");
        let data = dir.path().join("data");
        let user = String::from_utf8(
            Command::new("id")
                .arg("-un")
                .output()
                .expect("id -un")
                .stdout,
        )
        .expect("a user name")
        .trim()
        .to_string();
        // Temporary files of its own: two bootstraps sharing /tmp can trip on each other's.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).expect("a temporary folder for the server");
        // One bootstrap at a time in this process, all the same.
        static INSTALLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let installing = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
        let installed = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--user={user}"))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .output()
            .expect("mariadb-install-db (scripts/test installs mariadb-server)");
        assert!(
            installed.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&installed.stderr)
        );
        drop(installing);
        let port = free_port();
        let path = |name: &str| dir.path().join(name).display().to_string();
        let server = Command::new("mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--user={user}"))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", path("sock")))
            .arg(format!("--pid-file={}", path("pid")))
            .arg(format!("--log-error={}", path("error.log")))
            .arg(format!("--ssl-ca={}", certificates.ca.display()))
            .arg(format!("--ssl-cert={}", certificates.server_cert.display()))
            .arg(format!("--ssl-key={}", certificates.server_key.display()))
            .args(["--skip-name-resolve", "--innodb-buffer-pool-size=16M"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd (scripts/test installs mariadb-server)");
        let mut db = PrivateMariaDb { dir, server, port };
        let up = eventually(Duration::from_secs(60), || {
            db.socket_client()
                .args(["-e", "select 1"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        if !up {
            let _ = db.server.kill();
            panic!(
                "the private MariaDB did not start; its log:\n{}",
                std::fs::read_to_string(db.dir.path().join("error.log")).unwrap_or_default()
            );
        }
        db.sql(
            "create user 'golconde'@'%' require x509; \
             grant all on *.* to 'golconde'@'%'; \
             create database shop",
        );
        db
    }

    /// Runs `sql` as root over the server's socket and returns what it printed.
    pub fn sql(&self, sql: &str) -> String {
        let output = self
            .socket_client()
            .args(["--batch", "--skip-column-names", "-e", sql])
            .output()
            .expect("the mariadb client");
        assert!(
            output.status.success(),
            "mariadb failed on `{sql}`: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8 from mariadb")
    }

    /// The `dsn` of a `mysql` database section for database `shop` as user `golconde`.
    pub fn dsn(&self) -> String {
        format!("mysql://golconde@127.0.0.1:{}/shop", self.port)
    }

    fn socket_client(&self) -> Command {
        let mut command = Command::new("mariadb");
        command
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-u", "root"]);
        command
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("sock")
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        // SIGTERM is a clean shutdown; the folder goes with `dir`.
        unsafe { libc::kill(self.server.id() as i32, libc::SIGTERM) };
        let stopped = eventually(Duration::from_secs(30), || {
            matches!(self.server.try_wait(), Ok(Some(_)))
        });
        if !stopped {
            let _ = self.server.kill();
            let _ = self.server.wait();
        }
    }
}

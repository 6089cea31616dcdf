//! A DSN naming several hosts, as libpq takes it (`host=a,b port=1,2`, or
//! `postgres://a:1,b:2/db`): connecting tries them in order, each within
//! `connect_timeout_ms` of its own, and passes over a dead one; with
//! `target_session_attrs=read-write` it passes over a read-only server too, so after a
//! failover a new session finds the new primary; when no host takes the connection, the
//! error names each one and why.
//!
//! The dead hosts are a closed port on 127.0.0.1 and a listener that never answers; the
//! read-only server is a server of the test's own (`common::server`) with
//! `default_transaction_read_only = on`, which is how tokio-postgres tells a standby.

mod common;

use std::{
    net::{TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use common::{server::Server, *};
use golconde_plugin_api::{testing::logged, Database, ErrorKind, PluginError, Session};

const TABLE: &str = "CREATE TABLE {s}.items (id int PRIMARY KEY, name text NOT NULL)";

/// A port nothing listens on: connecting is refused at once.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().unwrap().port()
}

/// A host that takes TCP connections and never answers (a server hung, or a firewall
/// that lets the handshake through): only a timeout ends the wait.
struct Silent {
    port: u16,
    stopped: Arc<AtomicBool>,
}

impl Silent {
    fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = listener.local_addr().unwrap().port();
        let stopped = Arc::new(AtomicBool::new(false));
        let stop = stopped.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                held.extend(client.ok());
            }
        });
        Silent { port, stopped }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Adds rows `ids` to `items`.
fn adds(db: &Db, ids: &[i32]) -> Vec<golconde_plugin_api::Change> {
    let messages: Vec<String> = ids
        .iter()
        .map(|i| format!(r#"{{"action": "add", "data": {{"id": {i}, "name": "n{i}"}}}}"#))
        .collect();
    changes(&db.processor("items"), &messages)
}

#[test]
fn a_dead_host_listed_first_is_passed_over() {
    let db = Db::new("failover_dead_first");
    db.exec(TABLE);
    let closed = closed_port();
    let silent = Silent::start();
    let dsns = [
        format!("host=127.0.0.1,127.0.0.1 port={closed},5432 user=postgres dbname=postgres"),
        format!("postgres://postgres@127.0.0.1:{closed},127.0.0.1:5432/postgres"),
        // Before each host had a timeout of its own, the silent one used up the only one.
        format!(
            "host=127.0.0.1,127.0.0.1 port={},5432 user=postgres dbname=postgres",
            silent.port
        ),
    ];
    for (i, dsn) in dsns.iter().enumerate() {
        let dead = format!("127.0.0.1:{}", if i < 2 { closed } else { silent.port });
        let pg = db.plugin_at(dsn, r#", "connect_timeout_ms": 500"#);
        let id = i as i32 + 1;
        let (results, log) = logged(|| apply(&pg, &adds(&db, &[id])));
        assert!(results[0].is_ok(), "{dsn}: {results:?}");
        // The dead host's failure is logged with its address and the reason.
        let line = log
            .lines()
            .find(|l| l.contains(&format!("cannot connect to {dead}")))
            .unwrap_or_else(|| panic!("{dsn}: no warning about {dead}: {log}"));
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains("trying 127.0.0.1:5432 next"), "{line}");
        let reason = if i < 2 {
            "refused"
        } else {
            "timed out after 500 ms"
        };
        assert!(line.contains(reason), "{line}");
        assert_eq!(
            pg.key_columns(&db.table("items")).expect("key columns"),
            ["id"]
        );
    }
    assert_eq!(db.count("SELECT count(*) FROM {s}.items"), 3);
}

#[test]
fn no_host_answering_is_a_transient_error_naming_each() {
    let db = Db::new("failover_none");
    db.exec(TABLE);
    let (closed, silent) = (closed_port(), Silent::start());
    let pg = db.plugin_at(
        &format!(
            "host=127.0.0.1,127.0.0.1 port={closed},{} user=postgres dbname=postgres",
            silent.port
        ),
        r#", "connect_timeout_ms": 300"#,
    );
    let check = |what: &str, error: PluginError| {
        assert_eq!(error.kind, ErrorKind::Transient, "{what}: {error}");
        let message = error.message.as_str();
        let expected = format!(
            "cannot connect to any of the 2 hosts of postgres://postgres@127.0.0.1:{closed},\
             127.0.0.1:{}/postgres: 127.0.0.1:{closed}: error connecting to server: \
             Connection refused (os error 111); 127.0.0.1:{}: timed out after 300 ms \
             (`connect_timeout_ms`)",
            silent.port, silent.port
        );
        assert_eq!(message, expected, "{what}");
    };
    check("connect", pg.connect().err().expect("connected to no host"));
    check(
        "key_columns",
        pg.key_columns(&db.table("items")).unwrap_err(),
    );
}

/// `SQL` run on the server at `port`.
fn exec_at(port: u16, sql: &str) {
    let mut client = postgres::Client::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
        postgres::NoTls,
    )
    .unwrap_or_else(|e| panic!("connecting to {port}: {e}"));
    client
        .batch_execute(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn count_at(port: u16, sql: &str) -> i64 {
    let mut client = postgres::Client::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres"),
        postgres::NoTls,
    )
    .unwrap();
    client.query_one(sql, &[]).unwrap().get(0)
}

#[test]
fn read_write_passes_over_a_read_only_server_and_finds_the_new_primary() {
    let db = Db::new("failover_primary");
    db.exec(TABLE);
    // The old primary: a server of the test's own, with the same table.
    let old = Server::start("", "host all all 127.0.0.1/32 trust\n", &[]);
    let table = db.table("items");
    exec_at(
        old.port,
        &format!(
            "CREATE SCHEMA {}; {}",
            db.schema,
            TABLE.replace("{s}", &db.schema)
        ),
    );
    let count_old = || count_at(old.port, &format!("SELECT count(*) FROM {table}"));
    let dsn = format!(
        "host=127.0.0.1,127.0.0.1 port={},5432 user=postgres dbname=postgres \
         target_session_attrs=read-write",
        old.port
    );
    let pg = db.plugin_at(&dsn, "");

    // While it takes writes, the first host listed is the one used.
    let mut session = pg.connect().expect("session");
    apply_in(&mut session, &adds(&db, &[1]));
    assert_eq!(count_old(), 1);
    assert_eq!(db.count("SELECT count(*) FROM {s}.items"), 0);

    // Failover: the old primary becomes read-only (as a standby is) and its sessions end.
    let pid = session.backend_pid().expect("pid");
    // (ALTER SYSTEM cannot share an implicit transaction with the rest.)
    exec_at(
        old.port,
        "ALTER SYSTEM SET default_transaction_read_only = on",
    );
    exec_at(old.port, "SELECT pg_reload_conf()");
    // The server reloads its configuration after answering: wait until new sessions see it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while count_at(
        old.port,
        "SELECT count(*) FROM pg_settings WHERE name = 'default_transaction_read_only' \
         AND setting = 'on'",
    ) == 0
    {
        assert!(std::time::Instant::now() < deadline, "never read-only");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    exec_at(old.port, &format!("SELECT pg_terminate_backend({pid})"));
    let error = session
        .apply(&adds(&db, &[2]))
        .expect_err("the session's connection was terminated");
    assert_eq!(error.kind, ErrorKind::Transient, "{error}");
    drop(session);

    // The host retries on a new session: it passes over the read-only server and finds
    // the new primary, in both forms of the DSN.
    apply(&pg, &adds(&db, &[2]));
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:5432/postgres?target_session_attrs=read-write",
        old.port
    );
    apply(&db.plugin_at(&url, ""), &adds(&db, &[3]));
    assert_eq!(count_old(), 1);
    assert_eq!(
        db.text("SELECT string_agg(id::text, ',' ORDER BY id) FROM {s}.items"),
        "2,3"
    );

    // Without `target_session_attrs`, the read-only server is taken and refuses the batch.
    let any = db.plugin_at(&dsn.replace("target_session_attrs=read-write", ""), "");
    let error = any
        .connect()
        .expect("connected to the read-only server")
        .apply(&adds(&db, &[4]))
        .expect_err("a read-only server took a write");
    assert!(error.message.contains("read-only transaction"), "{error}");

    // No host takes writes: each one is named, with why.
    let error = db
        .plugin_at(
            &format!(
                "host=127.0.0.1,localhost port={} user=postgres dbname=postgres \
                 target_session_attrs=read-write",
                old.port
            ),
            "",
        )
        .connect()
        .err()
        .expect("connected to a read-only server for writing");
    assert_eq!(error.kind, ErrorKind::Transient, "{error}");
    for host in ["127.0.0.1", "localhost"] {
        assert!(
            error.message.contains(&format!(
                "{host}:{}: error connecting to server: database does not allow writes",
                old.port
            )),
            "{error}"
        );
    }
}

#[test]
fn verify_full_checks_each_host_by_its_own_name() {
    // Debian's server certificate is for `localhost`, not `127.0.0.1`: listed first,
    // 127.0.0.1 is refused for its name, and localhost, checked by its own, is taken.
    let db = Db::new("failover_tls");
    db.exec(TABLE);
    let snakeoil = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
    let pg = db.plugin_at(
        &format!(
            "host=127.0.0.1,localhost user=postgres dbname=postgres sslmode=verify-full \
             sslrootcert={snakeoil}"
        ),
        "",
    );
    apply(&pg, &adds(&db, &[1]));
    assert_eq!(db.count("SELECT count(*) FROM {s}.items"), 1);
    let error = db
        .plugin_at(
            &format!(
                "host=127.0.0.1,127.0.0.1 port=5432 user=postgres dbname=postgres \
                 sslmode=verify-full sslrootcert={snakeoil}"
            ),
            "",
        )
        .connect()
        .err()
        .expect("a certificate for another name was taken");
    assert_eq!(
        error
            .message
            .matches("certificate not valid for name")
            .count(),
        2,
        "{error}"
    );
}

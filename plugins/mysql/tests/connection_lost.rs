//! The connection killed by the server in the middle of a batch: the batch is a
//! transient error, nothing of it is visible, and a new session applies it whole.

mod common;

use common::*;
use golconde_plugin_api::{Action, Database, ErrorKind, Session, Value};

#[test]
fn a_connection_killed_mid_batch_leaves_nothing_and_the_next_session_applies_it() {
    let db = Db::new("killed");
    db.exec("CREATE TABLE `{s}`.t (id int PRIMARY KEY, v int) ENGINE = InnoDB");
    db.exec("CREATE TABLE `{s}`.slow (id int PRIMARY KEY, v int) ENGINE = InnoDB");
    // A trigger that sleeps makes the batch last long enough to be killed in its middle,
    // after the first statement wrote its rows.
    db.exec(
        "CREATE TRIGGER `{s}`.slow_insert BEFORE INSERT ON `{s}`.slow FOR EACH ROW \
         SET NEW.v = SLEEP(2)",
    );
    let my = db.plugin("");
    let t = db.table("t");
    let slow = db.table("slow");
    let mut batch: Vec<_> = (0..100)
        .map(|i| op(Action::Insert, &t, vec![col("id", Value::Int(i))], vec![]))
        .collect();
    batch.push(op(
        Action::Insert,
        &slow,
        vec![col("id", Value::Int(1))],
        vec![],
    ));
    let mut session = my.connect().unwrap();
    let id = session.connection_id();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(700));
        Db::new("killer").kill(id);
    });
    let error = session.apply(&batch).unwrap_err();
    killer.join().unwrap();
    assert_eq!(error.kind, ErrorKind::Transient, "{error}");
    assert!(
        error.message.contains("nothing of the batch was committed"),
        "{error}"
    );
    assert_eq!(db.count("SELECT count(*) FROM `{s}`.t"), 0);
    // The session knows it is broken; a new one applies the batch.
    assert_eq!(
        session.apply(&batch).unwrap_err().kind,
        ErrorKind::Transient
    );
    db.exec("DROP TRIGGER `{s}`.slow_insert");
    let results = apply(&my, &batch);
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(db.count("SELECT count(*) FROM `{s}`.t"), 100);
}

#[test]
fn a_server_that_is_not_there_is_a_transient_error_naming_it_without_the_password() {
    let db = Db::new("absent");
    let my = golconde_mysql::Mysql::from_config(
        golconde_plugin_api::sdk::parse_config(
            r#"{"dsn": "mysql://app:s3cr3t@127.0.0.1:1/x", "connect_timeout_ms": 2000}"#,
        )
        .unwrap(),
        &golconde_plugin_api::testing::host("test"),
    )
    .unwrap();
    let error = my.connect().err().unwrap();
    assert_eq!(error.kind, ErrorKind::Transient);
    assert!(
        error.message.contains("mysql://app@127.0.0.1:1/x"),
        "{error}"
    );
    assert!(!error.message.contains("s3cr3t"), "{error}");
    drop(db);
}

//! Reloading the configuration of a running daemon (SIGHUP, `golconde reload`), with the
//! real binary, RabbitMQ and PostgreSQL, while messages flow: pipelines added, removed and
//! changed, untouched ones never restarted, nothing lost, every row at its last version.

use std::time::Duration;

use golconde_e2e::{
    children_of, eventually, run,
    services::{real_config, unique, Database, Queues},
    Daemon, Scratch,
};

const KEYS: u64 = 500;

const TABLES: &str = "create table a (id bigint primary key, version int not null); \
                      create table b (id bigint primary key, version int not null); \
                      create table c (id bigint primary key, version int not null); \
                      create table d (id bigint primary key, version int not null)";

fn versions(from: u64, to: u64) -> Vec<String> {
    (from..to)
        .map(|i| {
            format!(
                r#"{{"action": "set", "data": {{"id": {}, "version": {i}}}}}"#,
                i % KEYS
            )
        })
        .collect()
}

fn pipeline(name: &str, queue: &str, table: &str, extra: &str) -> String {
    format!(
        r#"
[[pipelines]]
name = "{name}"
transport = "rabbit"
queue = "{queue}"
processor = "autosql"
database = "db"
table = "{table}"
{extra}
"#
    )
}

/// Every key of `table` holds the last of `messages` versions.
fn at_last_versions(db: &mut Database, table: &str, messages: u64) -> bool {
    db.rows(&format!(
        "select count(*) from {table} where version = id + {}",
        messages - KEYS
    )) == [KEYS.to_string()]
}

#[test]
fn reload_adds_removes_and_changes_pipelines_while_messages_flow() {
    let mut queues = Queues::new();
    let [qa, qb, qc, qd] = ["a", "b", "c", "d"].map(|q| queues.name(&format!("reload-{q}")));
    let mut db = Database::create("reload", TABLES);
    let scratch = Scratch::new();
    let connection = unique("reload");
    let pid_file = scratch.path("golconde.pid");
    // The connections' sections, the same in both files.
    let head = format!(
        "pid_file = \"{}\"\n{}",
        pid_file.display(),
        real_config(&connection, &[("db", &db, "")], "")
    );
    let write = |pipelines: &str| scratch.config(&format!("{head}{pipelines}"));
    let small = "batch = { max_messages = 20, max_wait_ms = 5 }";
    let before = [
        pipeline("a", &qa, "a", small),
        pipeline("b", &qb, "b", ""),
        pipeline("c", &qc, "c", &format!("workers = 1\n{small}")),
    ]
    .concat();
    let config = write(&before);
    let mut daemon = Daemon::start(&config);
    daemon.wait_for_log("pipeline(s) running", Duration::from_secs(30));
    assert!(pid_file.exists(), "no pid file; log:\n{}", daemon.log());

    const FIRST: u64 = 6_000;
    queues.publish(&qa, &versions(0, FIRST));
    queues.publish(&qc, &versions(0, FIRST));
    let flowing = eventually(Duration::from_secs(60), || {
        db.count("a") > 0 && db.count("c") > 0
    });
    assert!(flowing, "nothing applied; log:\n{}", daemon.log());
    let a_channel = Queues::consumer_channel(&qa).expect("a consumer on queue a");

    // a untouched, b removed, c changed, d added.
    let after = [
        pipeline("a", &qa, "a", small),
        pipeline(
            "c",
            &qc,
            "c",
            "workers = 3\nbatch = { max_messages = 50, max_wait_ms = 5 }",
        ),
        pipeline("d", &qd, "d", ""),
    ]
    .concat();
    write(&after);
    let (output, text) = run(&["reload", "--config", config.to_str().unwrap()]);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("asked golconde"), "{text}");
    let reloaded = daemon.wait_for_log("reloaded", Duration::from_secs(60));
    assert!(
        reloaded.contains("added `d`; removed `b`; restarted with new settings `c`; 1 untouched"),
        "{reloaded}"
    );

    const ALL: u64 = 12_000;
    queues.publish(&qa, &versions(FIRST, ALL));
    queues.publish(&qc, &versions(FIRST, ALL));
    queues.publish(&qd, &versions(0, ALL));
    let done = eventually(Duration::from_secs(120), || {
        ["a", "c", "d"]
            .iter()
            .all(|t| at_last_versions(&mut db, t, ALL))
    });
    assert!(
        done,
        "not every row at its last version; log:\n{}",
        daemon.log()
    );
    for q in [&qa, &qc, &qd] {
        assert_eq!(queues.depth(q), (0, 0), "queue {q}");
    }

    // The untouched pipeline kept its consumer; the removed one has none; the transport's
    // instance, and with it its one publishing connection (which reads the lag), is shared
    // by the pipelines old and new.
    assert_eq!(Queues::consumer_channel(&qa), Some(a_channel));
    assert_eq!(
        Queues::connections_named(&format!("{connection} publisher")).len(),
        1
    );
    assert_eq!(Queues::consumer_channel(&qb), None);
    queues.publish(&qb, &versions(0, 10));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        queues.depth(&qb).0,
        10,
        "the removed pipeline still consumes"
    );

    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    let consuming = |q: &str| log.matches(&format!("consuming queue `{q}`")).count();
    assert_eq!(consuming(&qa), 1, "pipeline a restarted:\n{log}");
    assert_eq!(consuming(&qc), 2, "pipeline c not restarted:\n{log}");
    assert!(!pid_file.exists(), "pid file left behind");
}

#[test]
fn a_file_that_fails_check_is_refused_and_the_pipelines_run_on() {
    let mut queues = Queues::new();
    let queue = queues.name("reload-refused");
    let mut db = Database::create("reload_refused", TABLES);
    let scratch = Scratch::new();
    let connection = unique("reload-refused");
    let good = real_config(
        &connection,
        &[("db", &db, "")],
        &pipeline("a", &queue, "a", ""),
    );
    let config = scratch.config(&good);
    let mut daemon = Daemon::start(&config);
    daemon.wait_for_log("pipeline(s) running", Duration::from_secs(30));

    // A pipeline naming a database nobody declared, and a key no plugin knows.
    let bad = format!(
        "{}{}",
        good.replace("connection_name =", "no_such_key = 1\nconnection_name ="),
        pipeline("b", &queue, "b", "").replace("database = \"db\"", "database = \"nowhere\"")
    );
    scratch.config(&bad);
    let (output, text) = run(&[
        "reload",
        "--config",
        config.to_str().unwrap(),
        "--pid-file",
        "/nonexistent/golconde.pid",
    ]);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("not reloaded"), "{text}");
    assert!(text.contains("nowhere"), "{text}");

    // SIGHUP straight to the daemon: it checks the file itself.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(daemon.pid() as i32, libc::SIGHUP) };
    let log = daemon.wait_for_log("reload refused", Duration::from_secs(30));
    assert!(log.contains("nowhere"), "{log}");

    queues.publish(&queue, &versions(0, 2_000));
    let applied = eventually(Duration::from_secs(60), || {
        at_last_versions(&mut db, "a", 2_000)
    });
    assert!(
        applied,
        "the running pipeline stopped; log:\n{}",
        daemon.log()
    );
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert_eq!(log.matches("consuming queue").count(), 1, "{log}");
}

#[test]
fn reload_without_a_pid_file_says_how_to_find_the_daemon() {
    let scratch = Scratch::new();
    let mut queues = Queues::new();
    let queue = queues.name("reload-nopid");
    let db = Database::create("reload_nopid", TABLES);
    let config = scratch.config(&real_config(
        &unique("reload-nopid"),
        &[("db", &db, "")],
        &pipeline("a", &queue, "a", ""),
    ));
    let (output, text) = run(&["reload", "--config", config.to_str().unwrap()]);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("pid_file"), "{text}");
    assert!(text.contains("--pid-file"), "{text}");

    // A stale pid file, naming a process that is not golconde, is never signalled.
    let stale = scratch.path("stale.pid");
    std::fs::write(&stale, format!("{}\n", std::process::id())).unwrap();
    let (output, text) = run(&[
        "reload",
        "--config",
        config.to_str().unwrap(),
        "--pid-file",
        stale.to_str().unwrap(),
    ]);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("not a running golconde"), "{text}");
}

#[test]
fn a_pipeline_in_a_process_of_its_own_is_restarted_alone() {
    let mut queues = Queues::new();
    let [qa, qb] = ["a", "b"].map(|q| queues.name(&format!("reload-proc-{q}")));
    let mut db = Database::create("reload_proc", TABLES);
    let scratch = Scratch::new();
    let head = real_config(&unique("reload-proc"), &[("db", &db, "")], "");
    let own = "isolation = \"process\"";
    let config = scratch.config(&format!(
        "{head}{}{}",
        pipeline("a", &qa, "a", own),
        pipeline("b", &qb, "b", own)
    ));
    let mut daemon = Daemon::start(&config);
    daemon.wait_for_log("pipeline(s) running", Duration::from_secs(30));
    let mut children = Vec::new();
    let two = eventually(Duration::from_secs(30), || {
        children = children_of(daemon.pid());
        children.len() == 2
    });
    assert!(two, "children {children:?}; log:\n{}", daemon.log());
    queues.publish(&qa, &versions(0, 1_000));
    queues.publish(&qb, &versions(0, 1_000));
    let applied = eventually(Duration::from_secs(60), || {
        at_last_versions(&mut db, "a", 1_000) && at_last_versions(&mut db, "b", 1_000)
    });
    assert!(applied, "log:\n{}", daemon.log());

    scratch.config(&format!(
        "{head}{}{}",
        pipeline("a", &qa, "a", own),
        pipeline("b", &qb, "b", &format!("{own}\nworkers = 2"))
    ));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(daemon.pid() as i32, libc::SIGHUP) };
    let log = daemon.wait_for_log("reloaded", Duration::from_secs(60));
    assert!(
        log.contains("restarted with new settings `b`; 1 untouched"),
        "{log}"
    );
    let mut after = Vec::new();
    let replaced = eventually(Duration::from_secs(30), || {
        after = children_of(daemon.pid());
        after.len() == 2 && after.iter().filter(|p| children.contains(p)).count() == 1
    });
    assert!(
        replaced,
        "before {children:?}, after {after:?}; log:\n{}",
        daemon.log()
    );

    queues.publish(&qa, &versions(1_000, 2_000));
    queues.publish(&qb, &versions(1_000, 2_000));
    let applied = eventually(Duration::from_secs(60), || {
        at_last_versions(&mut db, "a", 2_000) && at_last_versions(&mut db, "b", 2_000)
    });
    assert!(applied, "log:\n{}", daemon.log());
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

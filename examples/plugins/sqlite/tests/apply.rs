//! The plugin built through the ABI, as the host builds it, applying batches to a
//! temporary SQLite file; what each batch left is read back with rusqlite.

use std::path::{Path, PathBuf};

use golconde_plugin_api::{
    abi::{DatabaseBox, SessionBox},
    testing, Action, Applied, Change, Column, ErrorKind, Operation, PluginError, RVec, Value,
};
use golconde_sqlite::Sqlite;
use rusqlite::Connection;

const SCHEMA: &str = "
    CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE, name TEXT NOT NULL, score REAL);
    CREATE TABLE prices (sku TEXT, region TEXT, amount NUMERIC, note TEXT, PRIMARY KEY (region, sku));
";

/// A database file with `schema` in a temporary folder, and the plugin built for it.
struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    database: DatabaseBox,
}

impl Fixture {
    fn new(schema: &str) -> Fixture {
        Self::with(schema, "")
    }

    /// `extra`: more configuration keys, as JSON members (`"a": 1, `).
    fn with(schema: &str, extra: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(schema)
            .unwrap();
        let database = build(&format!(r#"{{{extra} "path": {}}}"#, json(&path))).unwrap();
        Fixture {
            _dir: dir,
            path,
            database,
        }
    }

    fn session(&self) -> SessionBox {
        self.database.connect().into_result().unwrap()
    }

    /// Every row of `query`, its columns rendered with `{:?}` and joined by `|`.
    fn rows(&self, query: &str) -> Vec<String> {
        rows(&self.path, query)
    }
}

fn rows(path: &Path, query: &str) -> Vec<String> {
    let conn = Connection::open(path).unwrap();
    let mut statement = conn.prepare(query).unwrap();
    let n = statement.column_count();
    statement
        .query_map([], |row| {
            Ok((0..n)
                .map(|i| format!("{:?}", row.get::<_, rusqlite::types::Value>(i).unwrap()))
                .collect::<Vec<_>>()
                .join("|"))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn build(config: &str) -> Result<DatabaseBox, PluginError> {
    testing::build_database::<Sqlite>(config)
}

fn json(path: &Path) -> String {
    serde_json::to_string(path.to_str().unwrap()).unwrap()
}

type Results = Vec<Result<Applied, PluginError>>;

fn apply(session: &mut SessionBox, changes: &[Change]) -> Result<Results, PluginError> {
    session
        .apply(changes.into())
        .into_result()
        .map(|results| results.into_iter().map(|r| r.into_result()).collect())
}

fn change(operations: Vec<Operation>) -> Change {
    Change {
        id: None.into(),
        operations: operations.into(),
    }
}

fn op(
    action: Action,
    table: &str,
    data: &[(&str, Value)],
    restriction: &[(&str, Value)],
) -> Operation {
    let columns = |cs: &[(&str, Value)]| -> RVec<Column> {
        cs.iter().map(|(n, v)| Column::new(*n, v.clone())).collect()
    };
    Operation {
        action,
        table: table.into(),
        data: columns(data),
        restriction: columns(restriction),
    }
}

fn add(data: &[(&str, Value)]) -> Change {
    change(vec![op(Action::Insert, "users", data, &[])])
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn permanent(result: &Result<Applied, PluginError>) -> String {
    match result {
        Err(e) if e.kind == ErrorKind::Permanent => e.message.to_string(),
        other => panic!("expected a permanent error, got {other:?}"),
    }
}

#[test]
fn every_action_applies_and_an_insert_returns_its_generated_key() {
    let db = Fixture::new(SCHEMA);
    let mut session = db.session();
    let results = apply(
        &mut session,
        &[
            add(&[("name", text("ann")), ("email", text("a@x"))]),
            add(&[("name", text("bob")), ("score", Value::Float(1.5))]),
            // An upsert inserts, then updates the same row.
            change(vec![op(
                Action::Upsert,
                "users",
                &[("id", Value::Int(10)), ("name", text("cy"))],
                &[],
            )]),
            change(vec![op(
                Action::Upsert,
                "users",
                &[("id", Value::Int(10)), ("name", text("cyd"))],
                &[],
            )]),
            change(vec![op(
                Action::Update,
                "users",
                &[("score", Value::Int(7))],
                &[("name", text("ann"))],
            )]),
            change(vec![op(
                Action::Delete,
                "users",
                &[],
                &[("id", Value::Int(2))],
            )]),
        ],
    )
    .unwrap();
    let returned: Vec<Vec<Vec<Column>>> = results
        .into_iter()
        .map(|r| {
            r.unwrap()
                .returned
                .into_iter()
                .map(|c| c.into_vec())
                .collect()
        })
        .collect();
    assert_eq!(returned[0], [[Column::new("id", Value::Int(1))]]);
    assert_eq!(returned[1], [[Column::new("id", Value::Int(2))]]);
    // Only an insert returns anything.
    assert!(
        returned[2..]
            .iter()
            .all(|ops| ops == &[Vec::<Column>::new()]),
        "{returned:?}"
    );
    assert_eq!(
        db.rows("SELECT id, name, score FROM users ORDER BY id"),
        [
            r#"Integer(1)|Text("ann")|Real(7.0)"#,
            r#"Integer(10)|Text("cyd")|Null"#,
        ]
    );
    // A replica given the key the primary generated stores the same row.
    apply(
        &mut session,
        &[add(&[("id", Value::Int(2)), ("name", text("bob"))])],
    )
    .unwrap()[0]
        .as_ref()
        .unwrap();
    assert_eq!(
        db.rows("SELECT id FROM users WHERE name = 'bob'"),
        ["Integer(2)"]
    );
}

#[test]
fn values_are_stored_as_their_columns_take_them() {
    let db = Fixture::new(
        "CREATE TABLE v (id INTEGER PRIMARY KEY, flag BOOLEAN, doc TEXT, raw BLOB, exact TEXT, n NUMERIC, r REAL);",
    );
    let mut session = db.session();
    let big = "123456789012345678901234567890.5";
    let results = apply(
        &mut session,
        &[change(vec![op(
            Action::Insert,
            "v",
            &[
                ("flag", Value::Bool(true)),
                ("doc", Value::Json(r#"{"a": [1]}"#.into())),
                ("raw", Value::Bytes(vec![0, 159, 255].into())),
                ("exact", Value::Numeric(big.into())),
                ("n", Value::Numeric("42".into())),
                ("r", Value::Numeric("0.1".into())),
            ],
            &[],
        )])],
    )
    .unwrap();
    results[0].as_ref().unwrap();
    assert_eq!(
        db.rows("SELECT flag, doc, raw, exact, n, typeof(n), r FROM v"),
        [format!(
            r#"Integer(1)|Text("{{\"a\": [1]}}")|Blob([0, 159, 255])|Text("{big}")|Integer(42)|Text("integer")|Real(0.1)"#
        )]
    );
}

#[test]
fn a_bad_change_is_refused_alone_naming_what_is_wrong_and_the_others_commit() {
    let db = Fixture::new(SCHEMA);
    let mut session = db.session();
    let mut with_id = add(&[("email", text("a@x")), ("name", text("dup"))]);
    with_id.id = Some("m-7".into()).into();
    let changes = [
        add(&[("name", text("ann")), ("email", text("a@x"))]),
        with_id,
        change(vec![op(
            Action::Insert,
            "nowhere",
            &[("name", text("x"))],
            &[],
        )]),
        add(&[("name", text("x")), ("colour", text("red"))]),
        add(&[("name", text("bob"))]),
        add(&[("name", Value::Array(vec![text("a")].into()))]),
        add(&[
            ("name", text("x")),
            ("score", Value::Numeric("1e400".into())),
        ]),
        add(&[("email", text("only-email"))]),
        // Atomic: the first operation of a change whose second fails is undone too.
        change(vec![
            op(Action::Insert, "users", &[("name", text("half"))], &[]),
            op(Action::Delete, "users", &[], &[("ghost", Value::Int(1))]),
        ]),
        add(&[("name", text("cy"))]),
    ];
    let results = apply(&mut session, &changes).unwrap();
    assert_eq!(results.len(), changes.len());
    let good = [0, 4, 9];
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result.is_ok(), good.contains(&i), "change {i}: {result:?}");
    }
    for (i, needles) in [
        (
            1,
            &["change `m-7`", "UNIQUE constraint failed: users.email"][..],
        ),
        (2, &["table `nowhere` does not exist", "test.db"]),
        (
            3,
            &["table `users` has no column `colour`", "unknown_columns"],
        ),
        (5, &["column `name` of `users` (TEXT)", "no array type"]),
        (
            6,
            &[
                "column `score` of `users` (REAL) cannot take 1e400",
                "out of range",
            ],
        ),
        (7, &["NOT NULL constraint failed: users.name"]),
        (8, &["table `users` has no column `ghost`"]),
    ] {
        let message = permanent(&results[i]);
        for needle in needles {
            assert!(message.contains(needle), "change {i}: {message}");
        }
    }
    assert_eq!(
        db.rows("SELECT name FROM users ORDER BY id"),
        [r#"Text("ann")"#, r#"Text("bob")"#, r#"Text("cy")"#]
    );
}

#[test]
fn unknown_columns_can_be_ignored_in_data_but_never_in_a_restriction() {
    let db = Fixture::with(SCHEMA, r#""unknown_columns": "ignore","#);
    let mut session = db.session();
    let results = apply(
        &mut session,
        &[
            add(&[("name", text("ann")), ("colour", text("red"))]),
            change(vec![op(
                Action::Update,
                "users",
                &[("colour", text("blue"))],
                &[("id", Value::Int(1))],
            )]),
            change(vec![op(
                Action::Delete,
                "users",
                &[],
                &[("colour", text("red"))],
            )]),
        ],
    )
    .unwrap();
    results[0].as_ref().unwrap();
    // Nothing left to update: nothing done.
    results[1].as_ref().unwrap();
    assert!(permanent(&results[2]).contains("no column `colour` (named in the restriction)"));
    assert_eq!(db.rows("SELECT name FROM users"), [r#"Text("ann")"#]);
}

#[test]
fn a_change_that_ends_the_whole_transaction_is_refused_and_the_batch_applied_without_it() {
    // RAISE(ROLLBACK) rolls back the transaction, savepoints and all, not just the change.
    let db = Fixture::new(&format!(
        "{SCHEMA}
        CREATE TRIGGER no_eve BEFORE INSERT ON users WHEN NEW.name = 'eve'
        BEGIN SELECT RAISE(ROLLBACK, 'eve is not welcome'); END;"
    ));
    let mut session = db.session();
    let results = apply(
        &mut session,
        &[
            add(&[("name", text("ann"))]),
            add(&[("name", text("eve"))]),
            add(&[("name", text("bob"))]),
        ],
    )
    .unwrap();
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    assert!(permanent(&results[1]).contains("eve is not welcome"));
    assert_eq!(
        db.rows("SELECT id, name FROM users ORDER BY id"),
        [r#"Integer(1)|Text("ann")"#, r#"Integer(2)|Text("bob")"#,]
    );
}

#[test]
fn a_deferred_foreign_key_violation_is_pinned_on_its_change() {
    let db = Fixture::new(
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);
         CREATE TABLE child (id INTEGER PRIMARY KEY,
             parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);",
    );
    let mut session = db.session();
    let child = |id: i64, parent: i64| {
        change(vec![op(
            Action::Insert,
            "child",
            &[("id", Value::Int(id)), ("parent", Value::Int(parent))],
            &[],
        )])
    };
    let results = apply(
        &mut session,
        &[
            change(vec![op(
                Action::Insert,
                "parent",
                &[("id", Value::Int(1))],
                &[],
            )]),
            child(1, 1),
            child(2, 99),
            // Within one change, deferred means deferred: the parent may come second.
            change(vec![
                op(
                    Action::Insert,
                    "child",
                    &[("id", Value::Int(3)), ("parent", Value::Int(2))],
                    &[],
                ),
                op(Action::Insert, "parent", &[("id", Value::Int(2))], &[]),
            ]),
        ],
    )
    .unwrap();
    assert!(
        results[0].is_ok() && results[1].is_ok() && results[3].is_ok(),
        "{results:?}"
    );
    assert!(permanent(&results[2]).contains("FOREIGN KEY"));
    assert_eq!(
        db.rows("SELECT id, parent FROM child ORDER BY id"),
        ["Integer(1)|Integer(1)", "Integer(3)|Integer(2)"]
    );
}

#[test]
fn a_locked_database_is_transient_and_nothing_of_the_batch_is_kept() {
    let db = Fixture::with(SCHEMA, r#""busy_timeout_ms": 50,"#);
    let mut session = db.session();
    let other = Connection::open(&db.path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = apply(&mut session, &[add(&[("name", text("ann"))])]).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert!(err.message.contains("database is locked"), "{err}");
    assert!(
        err.message.contains("nothing of the batch was committed"),
        "{err}"
    );
    other.execute_batch("COMMIT").unwrap();
    // Retried, as the host does.
    apply(&mut session, &[add(&[("name", text("ann"))])]).unwrap()[0]
        .as_ref()
        .unwrap();
    assert_eq!(
        db.rows("SELECT id, name FROM users"),
        [r#"Integer(1)|Text("ann")"#]
    );
}

#[test]
fn key_columns_are_the_primary_key_in_key_order() {
    let db = Fixture::new(SCHEMA);
    let keys = |table: &str| -> Result<Vec<String>, PluginError> {
        db.database
            .key_columns(table.into())
            .into_result()
            .map(|k| k.into_iter().map(|s| s.into_string()).collect())
    };
    assert_eq!(keys("users").unwrap(), ["id"]);
    assert_eq!(keys("prices").unwrap(), ["region", "sku"]);
    assert_eq!(keys("main.prices").unwrap(), ["region", "sku"]);
    let err = keys("nowhere").unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("table `nowhere` does not exist"),
        "{err}"
    );
    // Created meanwhile: found, since a missing table is not remembered.
    Connection::open(&db.path)
        .unwrap()
        .execute_batch("CREATE TABLE nowhere (k TEXT PRIMARY KEY)")
        .unwrap();
    assert_eq!(keys("nowhere").unwrap(), ["k"]);
}

#[test]
fn a_composite_key_upsert_needs_every_key_column() {
    let db = Fixture::new(SCHEMA);
    let mut session = db.session();
    let price = |amount: &str| {
        change(vec![op(
            Action::Upsert,
            "prices",
            &[
                ("sku", text("a")),
                ("region", text("eu")),
                ("amount", Value::Numeric(amount.into())),
            ],
            &[],
        )])
    };
    let results = apply(
        &mut session,
        &[
            price("1.25"),
            price("2.50"),
            change(vec![op(
                Action::Upsert,
                "prices",
                &[("sku", text("b"))],
                &[],
            )]),
        ],
    )
    .unwrap();
    assert!(results[0].is_ok() && results[1].is_ok());
    assert!(permanent(&results[2])
        .contains("needs every primary key column in its data; missing: region"));
    assert_eq!(
        db.rows("SELECT sku, region, amount FROM prices"),
        [r#"Text("a")|Text("eu")|Real(2.5)"#]
    );
}

#[test]
fn configuration_is_checked_without_opening_the_file() {
    for (config, needle) in [
        (r#"{"path": "x.db", "busy_timeout": 1}"#, "busy_timeout"),
        (
            r#"{"path": "x.db", "busy_timeout_ms": 9999999999}"#,
            "busy_timeout_ms",
        ),
        (r#"{"path": "x.db", "unknown_columns": "drop"}"#, "drop"),
        (r#"{"path": ""}"#, "`path` is empty"),
        (r#"{}"#, "path"),
    ] {
        let err = build(config)
            .err()
            .unwrap_or_else(|| panic!("{config} was accepted"));
        assert_eq!(err.kind, ErrorKind::Config, "{config}");
        assert!(err.message.contains(needle), "{config}: {err}");
    }
    // A relative path is taken from the configuration file's folder (here, as the testing
    // host says, the current one); and building does not create the file.
    let database = build(r#"{"path": "no-such-dir/test.db"}"#).unwrap();
    let expected = std::env::current_dir().unwrap().join("no-such-dir/test.db");
    assert!(!expected.exists());
    let err = database.connect().into_result().err().unwrap();
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert!(
        err.message.contains(&expected.display().to_string()),
        "{err}"
    );
    assert!(err.message.contains("fix `path`"), "{err}");
}

//! A value survives message → `autosql` → conversion → PostgreSQL → read back, for
//! generated values of every kind of column: the row holds what the server itself makes
//! of the value's text, and a value the server would refuse is refused, never stored
//! as something else.

mod common;

use common::*;
use golconde_plugin_api::Change;
use proptest::{
    collection::vec,
    prelude::*,
    test_runner::{Config, TestRunner},
};
use serde_json::json;

/// Each column, and the server's own reading of a message's JSON value for it (`$1`, the
/// JSON text): an error there means the value must be refused. An integer column takes a
/// number whose value is an integer (`5.0`), as JSON has no other way to say it; any
/// other is refused (by the plain cast in `ELSE`: a constant error such as `1/0` would be
/// raised when the statement is planned, taken or not).
const COLUMNS: &[(&str, &str, &str)] = &[
    (
        "i2",
        "smallint",
        "CASE WHEN $1::numeric = trunc($1::numeric) THEN $1::numeric::int2 ELSE $1::int2 END",
    ),
    (
        "i4",
        "integer",
        "CASE WHEN $1::numeric = trunc($1::numeric) THEN $1::numeric::int4 ELSE $1::int4 END",
    ),
    (
        "i8",
        "bigint",
        "CASE WHEN $1::numeric = trunc($1::numeric) THEN $1::numeric::int8 ELSE $1::int8 END",
    ),
    ("f4", "real", "$1::float4"),
    ("f8", "double precision", "$1::float8"),
    ("num", "numeric", "$1::numeric"),
    ("t", "text", "$1::jsonb #>> '{}'"),
    ("u", "uuid", "($1::jsonb #>> '{}')::uuid"),
    ("ts", "timestamp", "($1::jsonb #>> '{}')::timestamp"),
    ("tstz", "timestamptz", "($1::jsonb #>> '{}')::timestamptz"),
    ("jb", "jsonb", "$1::jsonb"),
    (
        "ai",
        "integer[]",
        "ARRAY(SELECT CASE WHEN e IS NULL THEN NULL
                           WHEN e::numeric = trunc(e::numeric) THEN e::numeric::int4
                           ELSE e::int4 END
               FROM jsonb_array_elements_text($1::jsonb) e)",
    ),
    (
        "af8",
        "double precision[]",
        "ARRAY(SELECT e::float8 FROM jsonb_array_elements_text($1::jsonb) e)",
    ),
    (
        "at",
        "text[]",
        "ARRAY(SELECT e FROM jsonb_array_elements_text($1::jsonb) e)",
    ),
];

/// Integers at the edges of each width, one past them, and anything.
fn integer() -> BoxedStrategy<String> {
    let edges: Vec<i128> = [i16::MIN as i128, i16::MAX as i128, i32::MIN as i128]
        .into_iter()
        .chain([i32::MAX as i128, i64::MIN as i128, i64::MAX as i128, 0])
        .flat_map(|e| [e - 1, e, e + 1])
        .collect();
    prop_oneof![
        proptest::sample::select(edges).prop_map(|i| i.to_string()),
        any::<i64>().prop_map(|i| i.to_string()),
        (-1000i64..1000).prop_map(|i| format!("{i}.0")),
        Just("1e3".to_string()),
        Just("2.5".to_string()),
        Just("9.2e18".to_string()),
    ]
    .boxed()
}

/// Numbers as JSON writes them: shortest floats, the edges of `real` and
/// `double precision`, and decimals with more digits than any float holds.
fn number() -> BoxedStrategy<String> {
    prop_oneof![
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:?}")),
        any::<f32>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:?}")),
        proptest::sample::select(vec![
            "1e400",
            "-1e400",
            "1e-400",
            "1e-310",
            "4.9e-324",
            "1.7976931348623157e308",
            "3.4028235e38",
            "3.5e38",
            "1e39",
            "1e-45",
            "1e-46",
            "1.0e-40",
            "-0.0",
            "0",
        ])
        .prop_map(str::to_string),
        "(0|-?[1-9][0-9]{0,39})(\\.[0-9]{1,40})?([eE][+-]?[0-9]{1,3})?",
    ]
    .boxed()
}

/// Text with odd characters, now and then a NUL.
fn text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => any::<String>(),
        2 => "[a-z\"'\\\\{},NUL ]{0,12}",
        1 => proptest::sample::select(vec![
            "", "NULL", "é", "e\u{301}", "\u{202e}right-to-left", "😀\u{fe0f}", "\u{ffff}",
            "a\u{0}b", "\u{0}", "tab\there", "\u{2028}",
        ])
        .prop_map(str::to_string),
    ]
    .boxed()
}

fn uuid() -> BoxedStrategy<String> {
    (any::<[u8; 16]>(), any::<bool>(), any::<bool>())
        .prop_map(|(bytes, upper, braces)| {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let mut text = format!(
                "{}-{}-{}-{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            );
            if upper {
                text = text.to_uppercase();
            }
            if braces {
                text = format!("{{{text}}}");
            }
            text
        })
        .boxed()
}

fn timestamp() -> BoxedStrategy<String> {
    let rfc3339 = (
        1u32..=9999,
        1u32..=12,
        1u32..=31,
        0u32..=24,
        0u32..=59,
        0u32..=60,
        proptest::option::of(0u32..1_000_000_000),
        proptest::sample::select(vec!["", "Z", "+00:00", "-08:00", "+05:30", "+14", "-1200"]),
        proptest::sample::select(vec!["T", " ", "t"]),
    )
        .prop_map(|(y, mo, d, h, mi, s, fraction, offset, t)| {
            let fraction = fraction
                .map(|f| format!(".{}", &format!("{f:09}")[..1 + (f % 9) as usize]))
                .unwrap_or_default();
            format!("{y:04}-{mo:02}-{d:02}{t}{h:02}:{mi:02}:{s:02}{fraction}{offset}")
        });
    prop_oneof![
        4 => rfc3339,
        1 => proptest::sample::select(vec![
            "infinity", "-infinity", "2024-02-29 13:14:15 Europe/Paris", "Feb 29 2024 13:14 UTC",
            "epoch", "10000-01-01 00:00:00", "2024-13-01 00:00:00", "0000-01-01T00:00:00Z",
        ])
        .prop_map(str::to_string),
    ]
    .boxed()
}

/// Any JSON, nested.
fn json_value() -> BoxedStrategy<serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        text().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            vec(("[a-z]{1,3}", inner), 0..4)
                .prop_map(|fields| serde_json::Value::Object(fields.into_iter().collect())),
        ]
    })
    .boxed()
}

/// A JSON value for each column, as message text.
fn row() -> impl Strategy<Value = Vec<String>> {
    let string = |s: BoxedStrategy<String>| s.prop_map(|t| json!(t).to_string()).boxed();
    let array = |s: BoxedStrategy<String>| {
        vec(proptest::option::of(s), 0..4)
            .prop_map(|items| {
                let items: Vec<String> = items
                    .into_iter()
                    .map(|i| i.unwrap_or_else(|| "null".into()))
                    .collect();
                format!("[{}]", items.join(", "))
            })
            .boxed()
    };
    (
        (
            integer(),
            integer(),
            integer(),
            number(),
            number(),
            number(),
        ),
        (
            string(text()),
            string(uuid()),
            string(timestamp()),
            string(timestamp()),
        ),
        (
            json_value().prop_map(|v| v.to_string()),
            array(integer()),
            array(number()),
            array(string(text())),
        ),
    )
        .prop_map(
            |((i2, i4, i8, f4, f8, num), (t, u, ts, tstz), (jb, ai, af8, at))| {
                vec![i2, i4, i8, f4, f8, num, t, u, ts, tstz, jb, ai, af8, at]
            },
        )
}

#[test]
fn generated_values_round_trip_as_the_server_reads_them() {
    let db = Db::new("round_trip");
    let columns: Vec<String> = COLUMNS
        .iter()
        .map(|(name, ty, _)| format!("{name} {ty}"))
        .collect();
    db.exec(&format!(
        "CREATE TABLE {{s}}.t (id int PRIMARY KEY, {})",
        columns.join(", ")
    ));
    let pg = db.plugin("");
    // The runner wants a closure it may call again: the session and the ids go in cells.
    let session = std::cell::RefCell::new(golconde_plugin_api::Database::connect(&pg).unwrap());
    let table = db.table("t");
    let next_id = std::cell::Cell::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&row(), |values| {
            // One change per column, so that each value is judged on its own.
            let mut batch: Vec<Change> = Vec::new();
            let mut ids = Vec::new();
            for ((name, _, _), value) in COLUMNS.iter().zip(&values) {
                let id = next_id.get() + 1;
                next_id.set(id);
                ids.push(id);
                let body =
                    format!(r#"{{"action": "add", "data": {{"id": {id}, "{name}": {value}}}}}"#);
                let limits = golconde_autosql::Limits::default();
                let change =
                    golconde_autosql::parse_change(body.as_bytes(), &limits, |_| Ok(table.clone()))
                        .map_err(|e| TestCaseError::fail(format!("{body}: {e}")))?;
                batch.push(change);
            }
            let results = apply_in(&mut session.borrow_mut(), &batch);
            for (((name, ty, reading), value), (id, result)) in
                COLUMNS.iter().zip(&values).zip(ids.iter().zip(&results))
            {
                // A top-level JSON null is SQL NULL in every column, `jsonb` too.
                let reading = if value == "null" {
                    format!("CAST(NULLIF($1::text, $1::text) AS {ty})")
                } else {
                    reading.replace("$1", "($1::text)")
                };
                let server = db.try_query(&format!("SELECT ({reading})"), &[value]);
                match (server, result) {
                    (Ok(_), Ok(_)) => {
                        let same: bool = db.query(
                            &format!(
                                "SELECT {name} IS NOT DISTINCT FROM ({reading}) \
                                 FROM {{s}}.t WHERE id = $2"
                            ),
                            &[value, id],
                        )[0]
                        .get(0);
                        prop_assert!(
                            same,
                            "{name} ({ty}) = {value}: stored {}",
                            db.text(&format!("SELECT {name}::text FROM {{s}}.t WHERE id = {id}"))
                        );
                    }
                    (Err(_), Err(e)) => {
                        prop_assert!(
                            e.message.contains(&format!("column `{name}`")),
                            "{name} ({ty}) = {value}: {e}"
                        );
                    }
                    (Ok(_), Err(e)) => {
                        prop_assert!(false, "{name} ({ty}) = {value} was refused: {e}")
                    }
                    (Err(server), Ok(_)) => prop_assert!(
                        false,
                        "{name} ({ty}) = {value} was taken, the server refuses it: {server}"
                    ),
                }
            }
            Ok(())
        })
        .unwrap();
}

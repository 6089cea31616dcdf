//! The `autosql` processor: the first Golconde's message format, turned into
//! database-neutral [`Change`]s.
//!
//! ```json
//! {"action": "add",    "data": {"name": "x", "email": "y"}}
//! {"action": "set",    "data": {"id": 7, "name": "x"}}
//! {"action": "update", "data": {"name": "z"}, "restriction": {"id": 7}}
//! {"action": "delete", "restriction": {"id": 7}}
//! ```
//!
//! `add` is an insert (the database returns the generated keys, and [`AutoSql::enrich`]
//! writes them into the fanned-out copy so replicas get the same rows), `set` an atomic
//! upsert, `update`/`delete` act on the rows matching every column of `restriction`.
//! Optional `table` picks one of the pipeline's tables (default: the pipeline's `table`),
//! optional `id` is the idempotency key a database with `dedupe` records.
//!
//! Key decisions, and why:
//! - **Numbers keep their text.** A JSON number becomes `Value::Int` when it fits an `i64`,
//!   `Value::Float` when it has at most 15 significant digits (which an `f64` round-trips),
//!   and `Value::Numeric` with its exact text otherwise, so a `numeric(40,20)` or a
//!   `uint64` id is never rounded. The message is read with serde_json's `RawValue` rather
//!   than its `arbitrary_precision` feature, which would change number handling for every
//!   crate compiled together with this one.
//! - **Strict shapes.** Unknown top-level fields, duplicate columns, a `restriction` on
//!   `add`, `data` on `delete` are refused with a message naming the field: a misspelt
//!   `restriction` must never turn into "every row", nor a misspelt `table` into the
//!   default table.
//! - **The idempotency key is the message's `id` field only**, never a transport header:
//!   a STOMP broker assigns `message-id` per delivery, so a redelivery would look new.
//! - `enrich` edits the message text rather than re-serialising a parsed tree, so every
//!   value it does not touch (numbers above all) reaches the replicas byte for byte.
//! - **What one message may cost is bounded before it is parsed.** Nesting (`max_depth`)
//!   and field counts (`max_fields`) are measured in one non-recursive pass over the
//!   bytes ([`limits`]), so no message can recurse deeper or allocate more than the
//!   limits say; a message over them is a permanent error naming the limit.
//!
//! May depend on: `golconde-plugin-api`, `golconde-plugin-support` (exact numbers, the
//! limits' scan, raw JSON objects, configuration errors naming their key, shared with
//! `debezium`), serde/serde_json, base64. Nothing database-specific: column
//! types are the database plugin's business.

pub mod limits;
mod message;

use std::collections::HashSet;

use golconde_plugin_api::{Applied, Change, Host, Message, Plugin, PluginError, Processor};
use serde::Deserialize;

pub use limits::Limits;
pub use message::{enrich_body, parse_change};

/// The processor's configuration section. The host writes the pipeline's `table` and
/// `tables` into it; a processor section may also set them itself, and the limits.
#[derive(Debug)]
pub struct Settings {
    /// The table a message goes to when it names none.
    pub table: Option<String>,
    /// The only tables a message may name (exact names); empty means any.
    pub tables: Vec<String>,
    /// See [`Limits::max_depth`].
    pub max_depth: usize,
    /// See [`Limits::max_fields`].
    pub max_fields: usize,
}

/// [`Settings`] as written, read so that a value of the wrong type is reported with its
/// key (`golconde_plugin_support::config`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    table: Option<String>,
    #[serde(default)]
    tables: Vec<String>,
    #[serde(default = "default_max_depth")]
    max_depth: usize,
    #[serde(default = "default_max_fields")]
    max_fields: usize,
}

impl<'de> Deserialize<'de> for Settings {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Settings, D::Error> {
        let raw: RawSettings = golconde_plugin_support::config::naming_path(deserializer)?;
        Ok(Settings {
            table: raw.table,
            tables: raw.tables,
            max_depth: raw.max_depth,
            max_fields: raw.max_fields,
        })
    }
}

fn default_max_depth() -> usize {
    limits::DEFAULT_MAX_DEPTH
}

fn default_max_fields() -> usize {
    limits::DEFAULT_MAX_FIELDS
}

impl Default for Settings {
    fn default() -> Settings {
        Config::default().into()
    }
}

/// The tables alone, with the default limits: what code embedding the processor (tests,
/// examples) usually sets.
#[derive(Debug, Default)]
pub struct Config {
    pub table: Option<String>,
    pub tables: Vec<String>,
}

impl From<Config> for Settings {
    fn from(Config { table, tables }: Config) -> Settings {
        Settings {
            table,
            tables,
            max_depth: limits::DEFAULT_MAX_DEPTH,
            max_fields: limits::DEFAULT_MAX_FIELDS,
        }
    }
}

/// The `autosql` processor.
#[derive(Debug)]
pub struct AutoSql {
    default_table: Option<String>,
    allowed: HashSet<String>,
    limits: Limits,
}

impl AutoSql {
    /// The table `named` resolves to, or why the message may not use it.
    fn table(&self, named: Option<&str>) -> Result<String, PluginError> {
        let table = match (named, &self.default_table) {
            (Some(t), _) => t,
            (None, Some(t)) => t.as_str(),
            (None, None) => {
                return Err(PluginError::permanent(
                    "the message names no `table` and the pipeline sets no default `table`; \
                     add `\"table\": \"schema.name\"` to the message or `table = ...` to the \
                     pipeline",
                ))
            }
        };
        if !self.allowed.is_empty() && !self.allowed.contains(table) {
            let mut allowed: Vec<&str> = self.allowed.iter().map(String::as_str).collect();
            allowed.sort_unstable();
            return Err(PluginError::permanent(format!(
                "the message names table `{table}`, which is not among the pipeline's tables \
                 ({})",
                allowed.join(", ")
            )));
        }
        Ok(table.to_string())
    }
}

impl Plugin for AutoSql {
    const NAME: &'static str = "autosql";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Golconde message format: {\"action\": add|set|update|delete, \"data\", \"restriction\"}";
    type Config = Settings;

    fn new(config: Settings, _host: &Host) -> Result<Self, PluginError> {
        AutoSql::from_config(config)
    }
}

impl AutoSql {
    /// Validates the configuration and builds the processor.
    pub fn from_config(config: impl Into<Settings>) -> Result<Self, PluginError> {
        let config: Settings = config.into();
        if config.max_depth > limits::MAX_MAX_DEPTH {
            return Err(PluginError::config(format!(
                "`max_depth` = {} is more than {}: values are converted recursively, and \
                 deeper ones could overflow the dispatcher's stack",
                config.max_depth,
                limits::MAX_MAX_DEPTH
            )));
        }
        if config.max_fields == 0 {
            return Err(PluginError::config(
                "`max_fields` = 0 would refuse every message; it must be at least 1",
            ));
        }
        for (i, table) in config.tables.iter().enumerate() {
            if table.trim().is_empty() {
                return Err(PluginError::config(format!("`tables[{i}]` is empty")));
            }
            // Taken literally, a pattern would refuse every table but one named `s.*`.
            if table.contains('*') {
                return Err(PluginError::config(format!(
                    "`tables[{i}]` = `{table}` is a pattern, and the processor's `tables` \
                     takes exact names only; give patterns in the pipeline's `tables`, which \
                     the host enforces"
                )));
            }
        }
        if let Some(table) = &config.table {
            if table.trim().is_empty() {
                return Err(PluginError::config("`table` is empty"));
            }
            if !config.tables.is_empty() && !config.tables.contains(table) {
                return Err(PluginError::config(format!(
                    "`table` = `{table}` is not among `tables` ({})",
                    config.tables.join(", ")
                )));
            }
        }
        Ok(AutoSql {
            default_table: config.table,
            allowed: config.tables.into_iter().collect(),
            limits: Limits {
                max_depth: config.max_depth,
                max_fields: config.max_fields,
            },
        })
    }
}

impl Processor for AutoSql {
    fn process(&self, message: &Message) -> Result<Change, PluginError> {
        parse_change(message.body.as_slice(), &self.limits, |named| {
            self.table(named)
        })
    }

    fn enrich(&self, message: &Message, applied: &Applied) -> Result<Message, PluginError> {
        let Some(body) = enrich_body(message.body.as_slice(), &self.limits, applied)? else {
            return Ok(message.clone());
        };
        Ok(Message {
            body: body.into_bytes().into(),
            headers: message.headers.clone(),
        })
    }
}

golconde_plugin_api::export_plugins! {
    processor: AutoSql,
}

#[cfg(test)]
mod tests {
    use golconde_plugin_api::{Action, Column, ErrorKind, Value};

    use super::*;

    fn processor() -> AutoSql {
        AutoSql::from_config(Config {
            table: Some("public.users".into()),
            tables: vec!["public.users".into(), "public.orders".into()],
        })
        .unwrap()
    }

    fn process(body: &str) -> Result<Change, PluginError> {
        processor().process(&Message::new(body.as_bytes().to_vec()))
    }

    fn error(body: &str) -> String {
        match process(body) {
            Err(e) => {
                assert_eq!(e.kind, ErrorKind::Permanent, "{body}: {e}");
                e.message.into_string()
            }
            Ok(change) => panic!("{body} was accepted: {change:?}"),
        }
    }

    fn column(name: &str, value: Value) -> Column {
        Column::new(name, value)
    }

    #[test]
    fn each_action_becomes_its_operation() {
        let change = process(r#"{"action": "add", "data": {"name": "x", "email": "y"}}"#).unwrap();
        assert_eq!(change.id.into_option(), None);
        let op = &change.operations[0];
        assert_eq!(op.action, Action::Insert);
        assert_eq!(op.table.as_str(), "public.users");
        assert_eq!(
            op.data.as_slice(),
            [
                column("name", Value::Text("x".into())),
                column("email", Value::Text("y".into()))
            ]
        );
        assert!(op.restriction.is_empty());

        let op = &process(r#"{"action": "set", "data": {"id": 7, "name": "x"}}"#)
            .unwrap()
            .operations[0];
        assert_eq!(op.action, Action::Upsert);

        let change = process(
            r#"{"action": "update", "data": {"name": "z"}, "restriction": {"id": 7},
                "table": "public.orders", "id": "m-1"}"#,
        )
        .unwrap();
        assert_eq!(change.id.into_option().unwrap().as_str(), "m-1");
        let op = &change.operations[0];
        assert_eq!(op.action, Action::Update);
        assert_eq!(op.table.as_str(), "public.orders");
        assert_eq!(op.restriction.as_slice(), [column("id", Value::Int(7))]);

        let op = &process(r#"{"action": "delete", "restriction": {"id": 7}, "data": {}}"#)
            .unwrap()
            .operations[0];
        assert_eq!(op.action, Action::Delete);
        assert!(op.data.is_empty());
    }

    #[test]
    fn json_values_map_to_values() {
        let change = process(
            r#"{"action": "add", "data": {
                "n": null, "t": true, "f": false, "i": -3, "x": 1.25,
                "big": 123456789012345678901234567890, "dec": 0.12345678901234567890,
                "s": "h\u00e9\"", "o": {"a": [1, {"b": null}]}, "a": [1, "two", [3.5], null]
            }}"#,
        )
        .unwrap();
        let data = &change.operations[0].data;
        let value = |name: &str| data.iter().find(|c| c.name == name).unwrap().value.clone();
        assert_eq!(value("n"), Value::Null);
        assert_eq!(value("t"), Value::Bool(true));
        assert_eq!(value("f"), Value::Bool(false));
        assert_eq!(value("i"), Value::Int(-3));
        assert_eq!(value("x"), Value::Float(1.25));
        assert_eq!(
            value("big"),
            Value::Numeric("123456789012345678901234567890".into())
        );
        assert_eq!(
            value("dec"),
            Value::Numeric("0.12345678901234567890".into())
        );
        assert_eq!(value("s"), Value::Text("hé\"".into()));
        assert_eq!(value("o"), Value::Json(r#"{"a": [1, {"b": null}]}"#.into()));
        assert_eq!(
            value("a"),
            Value::Array(
                vec![
                    Value::Int(1),
                    Value::Text("two".into()),
                    Value::Array(vec![Value::Float(3.5)].into()),
                    Value::Null
                ]
                .into()
            )
        );
    }

    /// Runs `f` on a thread with a stack far smaller than the host's, so that anything
    /// recursing once per level of a deep message would overflow it.
    fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    fn nested(open: &str, close: &str, depth: usize) -> String {
        format!("{}1{}", open.repeat(depth), close.repeat(depth))
    }

    #[test]
    fn deep_nesting_is_refused_before_anything_recurses() {
        const DEPTH: usize = 100_000;
        let cases = [
            (
                format!(
                    r#"{{"action": "add", "data": {{"ok": 1, "deep": {}}}}}"#,
                    nested("[", "]", DEPTH)
                ),
                "`data.deep` nests arrays and objects more than 64 deep",
            ),
            (
                format!(
                    r#"{{"action": "delete", "restriction": {{"deep": {}}}}}"#,
                    nested(r#"{"a": "#, "}", DEPTH)
                ),
                "`restriction.deep` nests arrays and objects more than 64 deep",
            ),
            (
                format!(
                    r#"{{"action": "delete", "restriction": {{"id": 1}}, "id": {}}}"#,
                    nested("[", "]", DEPTH)
                ),
                "`id` nests",
            ),
            (nested("[", "]", DEPTH), "the message nests"),
        ];
        on_small_stack(move || {
            for (body, expected) in cases {
                let e = error(&body);
                assert!(e.contains(expected), "{e}");
                assert!(e.contains("raise `max_depth`"), "{e}");
            }
        });
    }

    #[test]
    fn nesting_up_to_max_depth_is_converted() {
        let array = |depth| {
            format!(
                r#"{{"action": "add", "data": {{"a": {}}}}}"#,
                nested("[", "]", depth)
            )
        };
        let change = process(&array(64)).unwrap();
        let mut value = &change.operations[0].data[0].value;
        for _ in 0..64 {
            match value {
                Value::Array(items) => value = &items[0],
                other => panic!("expected an array, got {other:?}"),
            }
        }
        assert_eq!(value, &Value::Int(1));
        assert!(error(&array(65)).contains("more than 64 deep"));
        let object = format!(
            r#"{{"action": "add", "data": {{"a": [{}]}}}}"#,
            nested(r#"{"b": "#, "}", 63)
        );
        assert!(process(&object).is_ok());

        // The deepest a configuration may allow still fits a small stack.
        let deepest = limits::MAX_MAX_DEPTH;
        on_small_stack(move || {
            let processor = AutoSql::from_config(Settings {
                max_depth: deepest,
                ..Settings::default()
            })
            .unwrap();
            let body = format!(
                r#"{{"action": "add", "table": "t", "data": {{"a": {}}}}}"#,
                nested("[", "]", deepest)
            );
            assert!(processor.process(&Message::new(body)).is_ok());
        });
    }

    #[test]
    fn a_message_with_too_many_fields_is_refused() {
        const N: usize = 100_000;
        let columns = |n: usize| {
            (0..n)
                .map(|i| format!(r#""c{i}": {i}"#))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let elements = (0..N).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        let cases = [
            (
                format!(r#"{{"action": "add", "data": {{{}}}}}"#, columns(N)),
                "`data` and `restriction` have more than 4096 columns together (reached at `data.c4096`)",
            ),
            (
                format!(
                    r#"{{"action": "update", "data": {{{}}}, "restriction": {{"id": 1}}}}"#,
                    columns(4096)
                ),
                "more than 4096 columns together (reached at `restriction.id`)",
            ),
            (
                format!(r#"{{"action": "add", "data": {{"a": [{elements}]}}}}"#),
                "array values have more than 4096 elements together (reached at `data.a`)",
            ),
            (
                format!(r#"{{"action": "add", "data": {{"a": 1}}, {}}}"#, columns(N)),
                "the message has more than 4096 top-level fields",
            ),
        ];
        for (body, expected) in cases {
            let started = std::time::Instant::now();
            let e = error(&body);
            eprintln!("{} bytes refused in {:?}", body.len(), started.elapsed());
            assert!(e.contains(expected), "{e}");
            assert!(e.contains("raise `max_fields`"), "{e}");
        }
        // At the limit, a message is accepted, and its duplicate check is linear.
        let body = format!(r#"{{"action": "add", "data": {{{}}}}}"#, columns(4096));
        assert_eq!(process(&body).unwrap().operations[0].data.len(), 4096);
        let body = format!(
            r#"{{"action": "add", "data": {{{}, "c0": 1}}}}"#,
            columns(4095)
        );
        assert!(error(&body).contains("`data` has the field `c0` twice"));
    }

    #[test]
    fn limits_are_configurable() {
        let settings = golconde_plugin_api::sdk::parse_config::<Settings>(
            r#"{"table": "t", "max_depth": 1, "max_fields": 2}"#,
        )
        .unwrap();
        let p = AutoSql::from_config(settings).unwrap();
        let process = |body: &str| p.process(&Message::new(body));
        assert!(process(r#"{"action": "add", "data": {"a": [1], "b": 2}}"#).is_ok());
        let e = process(r#"{"action": "add", "data": {"a": [[1]]}}"#).unwrap_err();
        assert!(e.message.contains("more than 1 deep"), "{e}");
        let e = process(r#"{"action": "add", "data": {"a": 1, "b": 2, "c": 3}}"#).unwrap_err();
        assert!(e.message.contains("more than 2 columns"), "{e}");
        // Zero depth allows scalar values only.
        let p = AutoSql::from_config(Settings {
            max_depth: 0,
            ..Settings::default()
        })
        .unwrap();
        let body = r#"{"action": "add", "table": "t", "data": {"a": {}}}"#;
        assert!(p.process(&Message::new(body)).is_err());

        for (json, key) in [
            (
                r#"{"max_depth": 257}"#,
                "`max_depth` = 257 is more than 256",
            ),
            (r#"{"max_fields": 0}"#, "`max_fields` = 0"),
        ] {
            let settings = golconde_plugin_api::sdk::parse_config::<Settings>(json).unwrap();
            let e = AutoSql::from_config(settings).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Config);
            assert!(e.message.contains(key), "{e}");
        }
        let e =
            golconde_plugin_api::sdk::parse_config::<Settings>(r#"{"max_depth": -1}"#).unwrap_err();
        assert!(e.message.contains("max_depth"), "{e}");
    }

    #[test]
    fn numbers_no_f64_holds_exactly_keep_their_text() {
        let change = process(
            r#"{"action": "add", "data": {"a": 1e400, "b": -1e400, "c": 1e-400,
                "d": [1e999999999, -0.0], "e": 5e-324}}"#,
        )
        .unwrap();
        let data = &change.operations[0].data;
        let numeric = |text: &str| Value::Numeric(text.into());
        assert_eq!(data[0].value, numeric("1e400"));
        assert_eq!(data[1].value, numeric("-1e400"));
        assert_eq!(data[2].value, numeric("1e-400"));
        assert_eq!(
            data[3].value,
            Value::Array(vec![numeric("1e999999999"), Value::Float(-0.0)].into())
        );
        assert_eq!(data[4].value, numeric("5e-324"));
    }

    #[test]
    fn set_takes_its_key_from_a_restriction_too() {
        let op = &process(r#"{"action": "set", "data": {"name": "x"}, "restriction": {"id": 7}}"#)
            .unwrap()
            .operations[0];
        assert_eq!(
            op.data.as_slice(),
            [
                column("name", Value::Text("x".into())),
                column("id", Value::Int(7))
            ]
        );
        assert!(op.restriction.is_empty());
        let e = error(r#"{"action": "set", "data": {"id": 8}, "restriction": {"id": 7}}"#);
        assert!(
            e.contains("`set` has column `id` in both `data` and `restriction`"),
            "{e}"
        );
    }

    #[test]
    fn ids_are_strings_or_integers() {
        let id = |body: &str| {
            process(body)
                .unwrap()
                .id
                .into_option()
                .map(|s| s.into_string())
        };
        assert_eq!(
            id(r#"{"action": "delete", "restriction": {"id": 1}, "id": 42}"#),
            Some("42".into())
        );
        assert_eq!(
            id(r#"{"action": "delete", "restriction": {"id": 1}, "id": null}"#),
            None
        );
        for bad in [r#""""#, "1.5", "true", "[1]", r#"{"a": 1}"#] {
            let e = error(&format!(
                r#"{{"action": "delete", "restriction": {{"id": 1}}, "id": {bad}}}"#
            ));
            assert!(
                e.contains("`id` must be a non-empty string or an integer"),
                "{e}"
            );
        }
    }

    /// Every way a message can be malformed, and the words its error must contain.
    #[test]
    fn malformed_messages_say_exactly_what_is_wrong() {
        let cases: &[(&[u8], &str)] = &[
            (b"\xff\xfe", "not UTF-8"),
            (b"", "not valid JSON"),
            (b"{\"action\": \"add\",", "not valid JSON"),
            (b"[1, 2]", "the message must be a JSON object, not [1, 2]"),
            (b"\"add\"", "must be a JSON object"),
            (b"{}", "no `action`"),
            (br#"{"action": "upsert", "data": {"a": 1}}"#, "unknown action \"upsert\""),
            (br#"{"action": 1, "data": {"a": 1}}"#, "unknown action 1"),
            (br#"{"action": "add", "data": {"a": 1}, "actoin": 2}"#, "unknown field `actoin`"),
            (
                br#"{"action": "add", "action": "delete", "data": {"a": 1}}"#,
                "the field `action` twice",
            ),
            (br#"{"action": "add"}"#, "`add` needs a non-empty `data`"),
            (br#"{"action": "add", "data": {}}"#, "`add` needs a non-empty `data`"),
            (br#"{"action": "set", "data": null}"#, "`set` needs a non-empty `data`"),
            (br#"{"action": "add", "data": [1]}"#, "`data` must be a JSON object, not [1]"),
            (br#"{"action": "add", "data": "a=1"}"#, "`data` must be a JSON object"),
            (br#"{"action": "add", "data": {"a": 1, "a": 2}}"#, "`data` has the field `a` twice"),
            (br#"{"action": "add", "data": {"": 1}}"#, "`data` has a column with an empty name"),
            (
                br#"{"action": "add", "data": {"a": 1}, "restriction": {"id": 1}}"#,
                "`add` inserts a new row and takes no `restriction`",
            ),
            (
                br#"{"action": "update", "data": {"a": 1}}"#,
                "`update` needs a non-empty `restriction`",
            ),
            (
                br#"{"action": "update", "data": {"a": 1}, "restriction": {}}"#,
                "it never applies to all rows",
            ),
            (br#"{"action": "update", "restriction": {"id": 1}}"#, "`update` needs a non-empty `data`"),
            (br#"{"action": "delete"}"#, "`delete` needs a non-empty `restriction`"),
            (
                br#"{"action": "delete", "restriction": {"id": 1}, "data": {"a": 1}}"#,
                "`delete` takes no `data`",
            ),
            (
                br#"{"action": "delete", "restriction": [["id", 1]]}"#,
                "`restriction` must be a JSON object",
            ),
            (
                br#"{"action": "delete", "restriction": {"id": 1}, "table": 5}"#,
                "`table` must be a non-empty string",
            ),
            (
                br#"{"action": "delete", "restriction": {"id": 1}, "table": " "}"#,
                "`table` must be a non-empty string",
            ),
            (
                br#"{"action": "delete", "restriction": {"id": 1}, "table": "public.secrets"}"#,
                "table `public.secrets`, which is not among the pipeline's tables (public.orders, public.users)",
            ),
        ];
        for (body, expected) in cases {
            let e = match processor().process(&Message::new(body.to_vec())) {
                Err(e) => {
                    assert_eq!(e.kind, ErrorKind::Permanent);
                    e.message.into_string()
                }
                Ok(c) => panic!("{} accepted: {c:?}", String::from_utf8_lossy(body)),
            };
            assert!(
                e.contains(expected),
                "{}: {e}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn without_a_default_table_a_message_must_name_one() {
        let p = AutoSql::from_config(Config::default()).unwrap();
        let e = p
            .process(&Message::new(
                r#"{"action": "delete", "restriction": {"id": 1}}"#,
            ))
            .unwrap_err();
        assert!(e.message.contains("names no `table`"), "{e}");
        // Without `tables`, any table is allowed.
        let change = p
            .process(&Message::new(
                r#"{"action": "delete", "restriction": {"id": 1}, "table": "x.y"}"#,
            ))
            .unwrap();
        assert_eq!(change.operations[0].table.as_str(), "x.y");
    }

    #[test]
    fn configuration_is_checked() {
        let e = AutoSql::from_config(Config {
            table: Some("a".into()),
            tables: vec!["b".into()],
        })
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Config);
        assert!(
            e.message
                .contains("`table` = `a` is not among `tables` (b)"),
            "{e}"
        );
        let e = AutoSql::from_config(Config {
            table: None,
            tables: vec!["".into()],
        })
        .unwrap_err();
        assert!(e.message.contains("`tables[0]` is empty"), "{e}");
        let e = AutoSql::from_config(Config {
            table: None,
            tables: vec!["public.users".into(), "public.*".into()],
        })
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Config);
        assert!(
            e.message.contains("`tables[1]` = `public.*` is a pattern"),
            "{e}"
        );
        let e =
            golconde_plugin_api::sdk::parse_config::<Settings>(r#"{"tabel": "x"}"#).unwrap_err();
        assert!(e.message.contains("tabel"), "{e}");
    }

    fn applied(columns: Vec<Column>) -> Applied {
        Applied {
            returned: vec![columns.into()].into(),
            duplicate: false,
        }
    }

    #[test]
    fn enrich_writes_generated_keys_into_an_add() {
        let message = Message::new(
            r#"{"id": "m-1", "action": "add", "data": {"name": "x", "big": 123456789012345678901234567890}, "table": "public.users"}"#,
        )
        .with_header("message-id", "7");
        let copy = processor()
            .enrich(
                &message,
                &applied(vec![
                    column("id", Value::Int(42)),
                    column("code", Value::Text("A\"1".into())),
                ]),
            )
            .unwrap();
        assert_eq!(
            String::from_utf8(copy.body.to_vec()).unwrap(),
            r#"{"id":"m-1","action":"add","data":{"name":"x","big":123456789012345678901234567890,"id":42,"code":"A\"1"},"table":"public.users"}"#
        );
        assert_eq!(copy.headers, message.headers);
        // The copy is itself a valid message that inserts the same keys.
        let op = &processor().process(&copy).unwrap().operations[0];
        assert!(op.data.contains(&column("id", Value::Int(42))));
    }

    #[test]
    fn enrich_replaces_a_key_the_message_already_had() {
        let message = Message::new(r#"{"action": "add", "data": {"id": 0, "name": "x"}}"#);
        let copy = processor()
            .enrich(&message, &applied(vec![column("id", Value::Int(9))]))
            .unwrap();
        assert_eq!(
            String::from_utf8(copy.body.to_vec()).unwrap(),
            r#"{"action":"add","data":{"id":9,"name":"x"}}"#
        );
    }

    #[test]
    fn enrich_writes_a_column_returned_twice_once() {
        let message = Message::new(r#"{"action": "add", "data": {"name": "x", "code": "a"}}"#);
        let copy = processor()
            .enrich(
                &message,
                &Applied {
                    returned: vec![
                        vec![column("id", Value::Int(1)), column("code", Value::Int(3))].into(),
                        vec![column("id", Value::Int(2)), column("code", Value::Int(4))].into(),
                    ]
                    .into(),
                    duplicate: false,
                },
            )
            .unwrap();
        assert_eq!(
            String::from_utf8(copy.body.to_vec()).unwrap(),
            r#"{"action":"add","data":{"name":"x","code":3,"id":1}}"#
        );
        processor().process(&copy).unwrap();
    }

    #[test]
    fn enrich_leaves_other_messages_alone() {
        let keys = applied(vec![column("id", Value::Int(9))]);
        for body in [
            r#"{"action": "set", "data": {"id": 1}}"#,
            r#"{"action": "delete", "restriction": {"id": 1}}"#,
        ] {
            let message = Message::new(body);
            assert_eq!(processor().enrich(&message, &keys).unwrap(), message);
        }
        let message = Message::new(r#"{"action": "add", "data": {"name": "x"}}"#);
        assert_eq!(
            processor().enrich(&message, &Applied::default()).unwrap(),
            message
        );
    }

    #[test]
    fn enrich_writes_every_kind_of_value_as_json() {
        let message = Message::new(r#"{"action": "add", "data": {"a": 1}}"#);
        let copy = processor()
            .enrich(
                &message,
                &applied(vec![
                    column("n", Value::Null),
                    column("b", Value::Bool(true)),
                    column("f", Value::Float(2.5)),
                    column("d", Value::Numeric("1.000000000000000000001".into())),
                    column("nan", Value::Numeric("NaN".into())),
                    column("j", Value::Json(r#"{"k":[1]}"#.into())),
                    column("x", Value::Bytes(vec![0, 255].into())),
                    column("arr", Value::Array(vec![Value::Int(1), Value::Null].into())),
                ]),
            )
            .unwrap();
        assert_eq!(
            String::from_utf8(copy.body.to_vec()).unwrap(),
            r#"{"action":"add","data":{"a":1,"n":null,"b":true,"f":2.5,"d":1.000000000000000000001,"nan":"NaN","j":{"k":[1]},"x":"AP8=","arr":[1,null]}}"#
        );
    }
}

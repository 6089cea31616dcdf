//! The processor's configuration section, and the rules built from it.

use std::collections::{BTreeMap, HashMap, HashSet};

use golconde_plugin_api::PluginError;
use serde::Deserialize;

use crate::{limits, limits::Limits, unavailable::Placeholder};

/// What Debezium's connectors write for an unavailable value unless told otherwise.
pub const DEFAULT_PLACEHOLDER: &str = "__debezium_unavailable_value";
/// The body Debezium Server's RabbitMQ sinks publish for a tombstone (their
/// `debezium.sink.rabbitmq.null.value`) unless told otherwise.
pub const DEFAULT_NULL_VALUE: &str = "default";

/// The processor's configuration section, as written. The host adds the pipeline's
/// `table` and `tables`.
#[derive(Debug)]
pub struct Settings {
    /// The pipeline's `table`: accepted, not used (every event names its own table).
    pub table: Option<String>,
    /// The pipeline's tables (exact names), when it lists no patterns: `table_map`'s
    /// targets are checked against them when the pipeline starts.
    pub tables: Vec<String>,
    /// See [`Limits::max_depth`].
    pub max_depth: usize,
    /// See [`Limits::max_fields`].
    pub max_fields: usize,
    /// Per source table (`schema.table`, or `database.table` for MySQL and MariaDB), the
    /// columns that identify a row.
    pub key_columns: BTreeMap<String, Vec<String>>,
    /// The key of the tables `key_columns` does not name, used only where every one of
    /// these columns has a value.
    pub default_key_columns: Vec<String>,
    /// Source table → target table.
    pub table_map: BTreeMap<String, String>,
    /// Put before the source table's own name (its schema or database dropped) to make
    /// the target of a table `table_map` does not name.
    pub table_prefix: Option<String>,
    /// What a truncate event does: `"refuse"`, `"skip"` or `"apply"`.
    pub truncate: String,
    /// The body that stands for a tombstone.
    pub null_value: String,
    /// The connector's `unavailable.value.placeholder`.
    pub unavailable_value_placeholder: String,
}

/// [`Settings`] as written, read with `golconde_plugin_support::config` so that a value of the
/// wrong type is reported with its key.
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
    #[serde(default)]
    key_columns: BTreeMap<String, Vec<String>>,
    #[serde(default = "default_key_columns")]
    default_key_columns: Vec<String>,
    #[serde(default)]
    table_map: BTreeMap<String, String>,
    table_prefix: Option<String>,
    #[serde(default = "default_truncate")]
    truncate: String,
    #[serde(default = "default_null_value")]
    null_value: String,
    #[serde(default = "default_placeholder")]
    unavailable_value_placeholder: String,
}

impl<'de> Deserialize<'de> for Settings {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Settings, D::Error> {
        let raw: RawSettings = golconde_plugin_support::config::naming_path(deserializer)?;
        Ok(Settings {
            table: raw.table,
            tables: raw.tables,
            max_depth: raw.max_depth,
            max_fields: raw.max_fields,
            key_columns: raw.key_columns,
            default_key_columns: raw.default_key_columns,
            table_map: raw.table_map,
            table_prefix: raw.table_prefix,
            truncate: raw.truncate,
            null_value: raw.null_value,
            unavailable_value_placeholder: raw.unavailable_value_placeholder,
        })
    }
}

impl Default for Settings {
    fn default() -> Settings {
        serde_json::from_str("{}").expect("every key has a default")
    }
}

fn default_max_depth() -> usize {
    limits::DEFAULT_MAX_DEPTH
}

fn default_max_fields() -> usize {
    limits::DEFAULT_MAX_FIELDS
}

fn default_key_columns() -> Vec<String> {
    vec!["id".into()]
}

fn default_truncate() -> String {
    "refuse".into()
}

fn default_null_value() -> String {
    DEFAULT_NULL_VALUE.into()
}

fn default_placeholder() -> String {
    DEFAULT_PLACEHOLDER.into()
}

/// What a truncate event does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truncate {
    /// A permanent error: the event is dead-lettered.
    Refuse,
    /// Acknowledged, nothing applied, an info line in the log.
    Skip,
    /// Every row of the target table deleted, in the change's transaction.
    Apply,
}

/// The validated configuration: everything `process` needs.
#[derive(Debug)]
pub struct Rules {
    pub limits: Limits,
    pub key_columns: HashMap<String, Vec<String>>,
    pub default_key_columns: Vec<String>,
    pub table_map: HashMap<String, String>,
    pub table_prefix: Option<String>,
    pub truncate: Truncate,
    pub null_value: String,
    pub placeholder: Placeholder,
}

impl Rules {
    /// Checks `settings`; a bad value is a config error naming its key.
    pub fn new(settings: Settings) -> Result<Rules, PluginError> {
        if settings.max_depth > limits::MAX_MAX_DEPTH {
            return Err(PluginError::config(format!(
                "`max_depth` = {} is more than {}: values are converted and dropped \
                 recursively, and deeper ones could overflow the dispatcher's stack",
                settings.max_depth,
                limits::MAX_MAX_DEPTH
            )));
        }
        if settings.max_fields == 0 {
            return Err(PluginError::config(
                "`max_fields` = 0 would refuse every event; it must be at least 1",
            ));
        }
        for (table, columns) in &settings.key_columns {
            source_name("key_columns", table)?;
            columns_list(&format!("key_columns.\"{table}\""), columns, false)?;
        }
        columns_list("default_key_columns", &settings.default_key_columns, true)?;
        let allowed: HashSet<&str> = settings.tables.iter().map(String::as_str).collect();
        for (source, target) in &settings.table_map {
            source_name("table_map", source)?;
            if target.trim().is_empty() {
                return Err(PluginError::config(format!(
                    "`table_map.\"{source}\"` is empty; give the target table, such as \
                     \"public.customers\""
                )));
            }
            if !allowed.is_empty() && !allowed.contains(target.as_str()) {
                let mut tables: Vec<&str> = allowed.iter().copied().collect();
                tables.sort_unstable();
                return Err(PluginError::config(format!(
                    "`table_map.\"{source}\"` = `{target}` is not among the pipeline's \
                     tables ({}); add it to the pipeline's `tables`",
                    tables.join(", ")
                )));
            }
        }
        if let Some(prefix) = &settings.table_prefix {
            if prefix.trim().is_empty() {
                return Err(PluginError::config(
                    "`table_prefix` is empty; leave it out to keep each table's \
                     `schema.table` name",
                ));
            }
        }
        let truncate = match settings.truncate.as_str() {
            "refuse" => Truncate::Refuse,
            "skip" => Truncate::Skip,
            "apply" => Truncate::Apply,
            other => {
                return Err(PluginError::config(format!(
                    "`truncate` = \"{other}\" is not one of \"refuse\", \"skip\" or \"apply\""
                )))
            }
        };
        if settings.unavailable_value_placeholder.is_empty() {
            return Err(PluginError::config(
                "`unavailable_value_placeholder` is empty; give the connector's \
                 `unavailable.value.placeholder` (\"__debezium_unavailable_value\" unless set)",
            ));
        }
        if settings.null_value.trim() == "null" {
            return Err(PluginError::config(
                "`null_value` = \"null\" is a tombstone already; give the body your \
                 producer sends for one (\"default\" from Debezium Server's RabbitMQ sink; \
                 an empty body is one always)",
            ));
        }
        Ok(Rules {
            limits: Limits {
                max_depth: settings.max_depth,
                max_fields: settings.max_fields,
            },
            key_columns: settings.key_columns.into_iter().collect(),
            default_key_columns: settings.default_key_columns,
            table_map: settings.table_map.into_iter().collect(),
            table_prefix: settings.table_prefix,
            truncate,
            null_value: settings.null_value,
            placeholder: Placeholder::new(&settings.unavailable_value_placeholder),
        })
    }

    /// The table a source table's changes are applied to: its `table_map` entry, else
    /// `table_prefix` followed by the table's own name, else the source name itself.
    pub fn target(&self, source: &str, table: &str) -> String {
        if let Some(target) = self.table_map.get(source) {
            return target.clone();
        }
        match &self.table_prefix {
            Some(prefix) => format!("{prefix}{table}"),
            None => source.to_string(),
        }
    }
}

/// A source table as `key_columns` and `table_map` name it: always qualified.
fn source_name(key: &str, name: &str) -> Result<(), PluginError> {
    match name.split_once('.') {
        Some((qualifier, table)) if !qualifier.is_empty() && !table.is_empty() => Ok(()),
        _ => Err(PluginError::config(format!(
            "`{key}` names the source table \"{name}\", which no event can have: events name \
             tables \"schema.table\" (PostgreSQL, SQL Server, Oracle) or \"database.table\" \
             (MySQL, MariaDB), as in `source`"
        ))),
    }
}

/// A list of column names: none empty, none twice, and not empty unless `may_be_empty`.
fn columns_list(key: &str, columns: &[String], may_be_empty: bool) -> Result<(), PluginError> {
    if columns.is_empty() && !may_be_empty {
        return Err(PluginError::config(format!(
            "`{key}` is empty; list the columns of the table's primary key"
        )));
    }
    let mut seen = HashSet::new();
    for (i, column) in columns.iter().enumerate() {
        if column.is_empty() {
            return Err(PluginError::config(format!("`{key}[{i}]` is empty")));
        }
        if !seen.insert(column) {
            return Err(PluginError::config(format!(
                "`{key}` names column `{column}` twice"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use golconde_plugin_api::ErrorKind;

    use super::*;

    fn rules(json: &str) -> Result<Rules, PluginError> {
        let settings: Settings =
            serde_json::from_str(json).map_err(|e| PluginError::config(e.to_string()))?;
        Rules::new(settings)
    }

    fn refused(json: &str) -> String {
        match rules(json) {
            Err(e) => {
                assert_eq!(e.kind, ErrorKind::Config, "{json}: {e}");
                e.message.into_string()
            }
            Ok(r) => panic!("{json} was accepted: {r:?}"),
        }
    }

    #[test]
    fn defaults() {
        let r = rules("{}").unwrap();
        assert_eq!(r.limits, Limits::default());
        assert_eq!(r.default_key_columns, vec!["id".to_string()]);
        assert_eq!(r.truncate, Truncate::Refuse);
        assert_eq!(r.null_value, "default");
        assert!(r.key_columns.is_empty() && r.table_map.is_empty());
        assert_eq!(r.table_prefix, None);
        // What the host adds is accepted.
        rules(r#"{"table": "public.users", "tables": ["public.users", "public.orders"]}"#).unwrap();
    }

    #[test]
    fn tables_are_mapped_then_prefixed_then_kept() {
        let r = rules(
            r#"{"table_map": {"inventory.customers": "public.clients"},
                "table_prefix": "replica."}"#,
        )
        .unwrap();
        assert_eq!(
            r.target("inventory.customers", "customers"),
            "public.clients"
        );
        assert_eq!(r.target("inventory.orders", "orders"), "replica.orders");
        let r = rules(r#"{"table_prefix": "dbz_"}"#).unwrap();
        assert_eq!(r.target("inventory.orders", "orders"), "dbz_orders");
        let r = rules("{}").unwrap();
        assert_eq!(r.target("inventory.orders", "orders"), "inventory.orders");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (json, words) in [
            (r#"{"truncate": "drop"}"#, "`truncate` = \"drop\" is not one of"),
            (r#"{"truncate": 1}"#, "`truncate`"),
            (r#"{"max_depth": 257}"#, "`max_depth` = 257"),
            (r#"{"max_fields": 0}"#, "`max_fields` = 0"),
            (r#"{"key_columns": {"customers": ["id"]}}"#, "`key_columns` names the source table \"customers\""),
            (r#"{"key_columns": {"inventory.customers": []}}"#, "`key_columns.\"inventory.customers\"` is empty"),
            (r#"{"key_columns": {"inventory.customers": ["id", "id"]}}"#, "column `id` twice"),
            (r#"{"key_columns": {"inventory.customers": "id"}}"#, "`key_columns.inventory.customers`"),
            (r#"{"default_key_columns": [""]}"#, "`default_key_columns[0]` is empty"),
            (r#"{"table_map": {"inventory.customers": " "}}"#, "`table_map.\"inventory.customers\"` is empty"),
            (
                r#"{"tables": ["public.a"], "table_map": {"inventory.customers": "public.b"}}"#,
                "`table_map.\"inventory.customers\"` = `public.b` is not among the pipeline's tables (public.a)",
            ),
            (r#"{"table_prefix": ""}"#, "`table_prefix` is empty"),
            (r#"{"unavailable_value_placeholder": ""}"#, "`unavailable_value_placeholder` is empty"),
            (r#"{"null_value": "null"}"#, "`null_value` = \"null\""),
            (r#"{"key_colums": {}}"#, "key_colums"),
        ] {
            let e = refused(json);
            assert!(e.contains(words), "{json}: {e}");
        }
        // An empty default key is allowed: it turns the guess off.
        assert!(rules(r#"{"default_key_columns": []}"#)
            .unwrap()
            .default_key_columns
            .is_empty());
    }
}

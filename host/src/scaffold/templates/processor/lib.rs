//! `{{name}}`: a Golconde processor plugin, which turns each message of a queue into the
//! database operations it asks for.
//!
//! This is the starting point `golconde new-plugin` wrote. It reads message bodies of the
//! form `{"key": K, "value": V}` and upserts the row `(key = K, value = V)` into the
//! pipeline's table. Replace [`KeyValue::process`] (and [`Body`]) with your own message
//! format; the rest is what every processor needs.
//!
//! How the host uses a processor: one instance per pipeline, built from the pipeline's
//! `processor = { plugin = "{{name}}", ... }` table, and called from the pipeline's
//! dispatcher thread, one message at a time, in queue order. Every call is blocking and
//! plain Rust: no runtime, no `extern "C"`; `export_plugins!` at the bottom does the rest.

use golconde_plugin_api::{
    export_plugins, Action, Change, Column, Host, Message, Operation, Plugin, PluginError,
    Processor, ROption, RString, RVec, Value,
};
use serde::Deserialize;

/// The processor's configuration: the pipeline's inline `processor` table, as JSON. Add
/// your own keys here. `deny_unknown_fields` makes a misspelt key an error that names it,
/// which the host shows when the daemon starts (and `golconde check` before that).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where rows go: the pipeline's `table`, which the host adds.
    table: Option<String>,
    /// The tables the pipeline may write, which the host adds too (unless the pipeline
    /// allows patterns such as `"public.*"`). The host refuses a change to any other table
    /// whatever a processor says; checking here only makes a mistake show at start-up
    /// rather than on the first message.
    tables: Option<Vec<String>>,
}

/// The plugin. It holds only what `new` validated: the host may build several instances
/// (one per pipeline, and a new one after a panic), so nothing here may assume it is alone.
pub struct KeyValue {
    table: String,
}

impl Plugin for KeyValue {
    /// What configuration files say: `processor = { plugin = "{{name}}" }`.
    const NAME: &'static str = "{{name}}";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    /// One line for `golconde plugins`.
    const DESCRIPTION: &'static str = "turns {\"key\", \"value\"} messages into upserts";
    type Config = Config;

    /// Validates the configuration. Never connect or open anything here: `golconde check`
    /// builds every plugin to validate a configuration, on a machine that may reach
    /// nothing. A bad value is a config error that names its key and says what to do.
    fn new(config: Config, _host: &Host) -> Result<Self, PluginError> {
        let table = config.table.ok_or_else(|| {
            PluginError::config(
                "`table` is not set: give the pipeline a `table`, where {{name}} writes rows",
            )
        })?;
        if let Some(tables) = config.tables {
            if !tables.contains(&table) {
                return Err(PluginError::config(format!(
                    "`table` = {table:?} is not among the pipeline's `tables` ({tables:?}): \
                     add it there"
                )));
            }
        }
        Ok(KeyValue { table })
    }
}

/// The message format: replace it with yours.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    key: serde_json::Value,
    value: serde_json::Value,
}

impl Processor for KeyValue {
    /// One message in, one [`Change`] out: its operations are applied together, in one
    /// transaction, or not at all.
    ///
    /// A message that can never become a change is a *permanent* error: the host sets it
    /// aside on the dead-letter queue with this error as the reason, so say what is wrong
    /// and where (field, column). Return a *transient* error only for something that may
    /// pass by itself (a lookup service that is down): the host then waits and calls again
    /// with the same message. A panic is caught by the SDK and reported as such; the host
    /// builds a new instance and tries again, dead-lettering the message at the third
    /// panic. Don't rely on that: return errors.
    ///
    /// Keep `process` free of side effects: after a crash the broker delivers the same
    /// message again, and it must become the same change.
    fn process(&self, message: &Message) -> Result<Change, PluginError> {
        let body: Body = serde_json::from_slice(&message.body).map_err(|e| {
            PluginError::permanent(format!(
                "the body is not a JSON object with a `key` and a `value`: {e}"
            ))
        })?;
        if !(body.key.is_string() || body.key.is_number()) {
            return Err(PluginError::permanent(
                "`key` is not a string or a number, which a row's key must be",
            ));
        }
        tracing::debug!(key = %body.key, table = %self.table, "upsert");
        Ok(Change {
            // An idempotency key (the `message-id` header, say) lets a database that records
            // applied ids skip a redelivered message. An upsert is harmless to repeat.
            id: ROption::RNone,
            operations: RVec::from(vec![Operation {
                // Upsert: insert, or update the row with the same key. Insert, Update and
                // Delete (by `restriction`) are the other actions.
                action: Action::Upsert,
                table: RString::from(self.table.as_str()),
                data: RVec::from(vec![
                    Column::new("key", value(body.key)),
                    Column::new("value", value(body.value)),
                ]),
                restriction: RVec::new(),
            }]),
        })
    }

    // `enrich` makes the copy of a message that goes to the pipeline's fan-out queues once
    // its change committed. The default sends the message as it came, which is right here;
    // a format whose inserts get keys from the database adds them (`applied.returned`), so
    // that replicas make the same rows.
}

/// A JSON value as the database-neutral [`Value`] that the database plugin converts to its
/// column's type (and refuses, naming the column, when it does not fit).
fn value(json: serde_json::Value) -> Value {
    use serde_json::Value as Json;
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(b),
        // Anything an `i64` cannot hold exactly travels as its decimal text, which the
        // database reads exactly or refuses, rather than as a rounded float.
        Json::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Numeric(RString::from(n.to_string())),
        },
        Json::String(s) => Value::Text(RString::from(s)),
        other => Value::Json(RString::from(other.to_string())),
    }
}

// Makes this library loadable by the host. One library may export several plugins, of any
// kinds: `export_plugins! { processor: A, database: B }`.
export_plugins! {
    processor: KeyValue,
}

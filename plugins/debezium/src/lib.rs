//! The `debezium` processor: Debezium change events, as Kafka Connect's JSON converter
//! writes them (Debezium Server publishes them so to RabbitMQ), turned into
//! database-neutral [`Change`]s.
//!
//! ```json
//! {"schema": {...}, "payload": {"op": "u", "before": {...}, "after": {...}, "source": {...}}}
//! {"op": "d", "before": {"id": 1}, "after": null, "source": {...}}
//! ```
//!
//! `c` (create) and `r` (snapshot read) upsert `after`; `u` upserts `after`, or updates
//! the row with the old key when `before` shows the key changed; `d` deletes the row
//! `before` selects; `t` (truncate) is refused, skipped or applied as a delete of every row (`truncate`); a tombstone writes
//! nothing. The table is the event's `source` (`schema.table`, `database.table` for
//! MySQL), mapped by `table_map` or `table_prefix`.
//!
//! Key decisions, and why (the crate's README has the whole of them):
//! - **Values are decoded by their schema.** With the schema envelope, each column's
//!   Kafka Connect type and logical name say what its JSON means: a decimal's base64 bytes
//!   become exact `Numeric` text, days and microseconds since the epoch become the date
//!   and timestamp text a database reads. Without the envelope, values pass as plain JSON,
//!   numbers kept exact as the `autosql` processor keeps them.
//! - **The key comes from the configuration, or from what the event shows.** Debezium puts
//!   a row's key in the Kafka message key, which a RabbitMQ sink does not send: so
//!   `key_columns` names it per table, Debezium's `__debezium.newkey` header names it on
//!   the delete of a primary key change, and `default_key_columns` (`["id"]`) is used
//!   where the row has those columns. A delete with none of these is refused rather than
//!   selected by every column of `before`: Debezium fills the NOT NULL columns the source
//!   did not send with defaults, which would select no row.
//! - **Unavailable values are left out.** A column holding Debezium's placeholder for a
//!   value it does not have (an unchanged TOASTed value) is not written: the replica keeps
//!   its own.
//! - **The idempotency key is the event's position in the source's log** (PostgreSQL's
//!   LSN, MySQL's binlog file, position and row, SQL Server's LSNs), with the source table
//!   and the row's key, since a snapshot gives every row the same position.
//! - **What one event may cost is bounded before it is parsed** ([`limits`]): the same
//!   `max_depth` and `max_fields`, with the same defaults, as `autosql`, counted over a
//!   Debezium event's shape.
//!
//! May depend on: `golconde-plugin-api`, `golconde-plugin-support` (exact numbers, the
//! limits' scan, raw JSON objects, configuration errors naming their key, shared with
//! `autosql`), serde/serde_json, base64, md-5 and sha2 (digests of
//! placeholders and long keys).
//! Nothing database-specific: column types are the database plugin's business.

mod decimal;
mod event;
pub mod limits;
mod schema;
mod settings;
mod temporal;
mod unavailable;
mod value;

use golconde_plugin_api::{Change, Host, Message, Plugin, PluginError, Processor};

pub use event::NEW_KEY_HEADER;
pub use limits::Limits;
pub use settings::{Settings, DEFAULT_NULL_VALUE, DEFAULT_PLACEHOLDER};

use settings::Rules;

/// The `debezium` processor.
#[derive(Debug)]
pub struct Debezium {
    rules: Rules,
}

impl Debezium {
    /// Validates the configuration and builds the processor.
    pub fn from_settings(settings: Settings) -> Result<Debezium, PluginError> {
        Ok(Debezium {
            rules: Rules::new(settings)?,
        })
    }
}

impl Plugin for Debezium {
    const NAME: &'static str = "debezium";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "Debezium change events (Kafka Connect JSON, with or without schema) as upserts, updates and deletes";
    type Config = Settings;

    fn new(config: Settings, _host: &Host) -> Result<Self, PluginError> {
        Debezium::from_settings(config)
    }
}

impl Processor for Debezium {
    fn process(&self, message: &Message) -> Result<Change, PluginError> {
        event::change(&self.rules, message)
    }
}

golconde_plugin_api::export_plugins! {
    processor: Debezium,
}

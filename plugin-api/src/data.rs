//! The plain data that crosses the boundary: messages as they come off and go onto a
//! queue, and the database-neutral changes a processor makes of them.
//!
//! Every type here is `#[repr(C)]` and built only from `abi_stable`'s FFI-safe types, so
//! its layout is checked when a plugin is loaded. Message bodies are bytes and headers are
//! string pairs; the protocol-specific properties (AMQP `message_id`, STOMP `message-id`)
//! travel as headers with the STOMP spelling, so a pipeline can switch protocol without its
//! processor noticing.

use abi_stable::{
    std_types::{ROption, RString, RVec},
    StableAbi,
};

/// The header a transport puts on a delivery it could not receive whole (say, a frame over
/// its size limit, whose body it dropped unread), saying what was lost and which setting to
/// raise. The host dead-letters such a message with that reason, without processing it. A
/// transport removes this header from what a producer sent, so that only it can set it.
pub const TRANSPORT_ERROR_HEADER: &str = "x-golconde-transport-error";

/// The header the host puts on a fan-out copy of a change that has an id ([`Change::id`]),
/// holding that id, so that a transport with deduplication of its own (JetStream's
/// `Nats-Msg-Id`) can use it without parsing the body. Since ABI 1.2. A producer may reuse
/// an id for other content: a transport must combine it with the body before dropping a
/// copy as a duplicate.
pub const CHANGE_ID_HEADER: &str = "x-golconde-change-id";

/// One header of a message. Names keep the order and case the transport gave them.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The header's name, as the transport gave it.
    pub name: RString,
    /// Its value, as text.
    pub value: RString,
}

/// A message body and its headers.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The payload, as the producer sent it.
    pub body: RVec<u8>,
    /// Headers and protocol properties (`message-id`, `content-type`, …), in order.
    pub headers: RVec<Header>,
}

impl Message {
    /// A message with `body` and no headers.
    pub fn new(body: impl Into<Vec<u8>>) -> Self {
        Message {
            body: RVec::from(body.into()),
            headers: RVec::new(),
        }
    }

    /// Adds a header, keeping any existing one of the same name (the first one wins when
    /// read with [`Message::header`]).
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.push_header(name, value);
        self
    }

    /// Adds a header after the others.
    pub fn push_header(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.headers.push(Header {
            name: RString::from(name.into()),
            value: RString::from(value.into()),
        });
    }

    /// The value of the first header with this name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.as_str() == name)
            .map(|h| h.value.as_str())
    }
}

/// A message handed to the host by a consumer.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Identifies the delivery to [`crate::abi::FfiConsumer::ack`]; tags increase in
    /// delivery order within one consumer. A tag from before a reconnection is never
    /// acknowledged on the new connection: its message comes back as a redelivery.
    pub tag: u64,
    /// The broker says it delivered this message before.
    pub redelivered: bool,
    /// What was delivered.
    pub message: Message,
}

/// How a consumer acknowledges.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// `ack(tag, multiple = true)` acknowledges every delivery up to `tag` (AMQP
    /// `multiple`, STOMP `ack:client`). What pipelines use: acks go back in delivery order.
    Cumulative,
    /// Each delivery is acknowledged on its own (STOMP `ack:client-individual`).
    Individual,
}

/// What the host asks of a new consumer.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumeOptions {
    /// The most unacknowledged deliveries the broker may hand over at once.
    pub prefetch: u32,
    /// How deliveries will be acknowledged.
    pub ack_mode: AckMode,
}

/// A value for one column, independent of any database's type system. The database plugin
/// converts it to the column's type and answers a value that does not fit with a permanent
/// error naming the column.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer that fits 64 bits.
    Int(i64),
    /// A number with at most 15 significant digits, which an `f64` holds exactly.
    Float(f64),
    /// A number kept as its decimal text, for values that `Int` and `Float` cannot hold
    /// exactly (large integers, `numeric` with many digits).
    Numeric(RString),
    /// A string.
    Text(RString),
    /// Raw bytes (a `bytea` or `blob` column).
    Bytes(RVec<u8>),
    /// A JSON document, as text (objects, and anything meant for a `json` column).
    Json(RString),
    /// An array of values (a PostgreSQL array column).
    Array(RVec<Value>),
}

/// A column name and its value.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct Column {
    /// The column's name, unquoted.
    pub name: RString,
    /// The value to write or to compare with.
    pub value: Value,
}

impl Column {
    /// A column named `name` with `value`.
    pub fn new(name: impl Into<String>, value: Value) -> Self {
        Column {
            name: RString::from(name.into()),
            value,
        }
    }
}

/// What an [`Operation`] does to its table.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Insert a new row; the database returns its generated key columns.
    Insert,
    /// Insert, or update the row with the same primary (or unique) key, atomically.
    Upsert,
    /// Update the rows matching `restriction`.
    Update,
    /// Delete the rows matching `restriction`.
    Delete,
}

/// One database operation on one table.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct Operation {
    /// What the operation does.
    pub action: Action,
    /// `schema.table` or `table`, unquoted; the database quotes it.
    pub table: RString,
    /// The columns to write (`Insert`, `Upsert`, `Update`).
    pub data: RVec<Column>,
    /// The columns that select the rows (`Update`, `Delete`), all of them ANDed. Never
    /// empty for an `Update`. Empty for a `Delete` means every row of the table (ABI 1.1: a
    /// truncate), which the host passes only to a database that declares it can
    /// ([`crate::sdk::Database::DELETES_ALL_ROWS`]); otherwise a processor refuses "all rows".
    pub restriction: RVec<Column>,
}

/// Everything one message asks of the database: applied all together or not at all.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct Change {
    /// An idempotency key. A database that records applied ids skips a change whose id it
    /// has seen, so a redelivered message is harmless.
    pub id: ROption<RString>,
    /// The operations, applied in order in one transaction.
    pub operations: RVec<Operation>,
}

/// What the database reports for a change it committed: for each operation, in order, the
/// columns it returned (generated keys for an `Insert`, nothing otherwise).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Default)]
pub struct Applied {
    /// Per operation, in order: the columns the database generated (the key of an `Insert`), empty for the others.
    pub returned: RVec<RVec<Column>>,
    /// The change's id was seen before, so nothing was written.
    pub duplicate: bool,
}

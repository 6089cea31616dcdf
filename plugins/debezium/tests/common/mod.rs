//! What the processor's tests share: building it as the host does, reading the event
//! files, and writing expected operations briefly.

#![allow(dead_code)]

use std::path::PathBuf;

use golconde_debezium::Debezium;
use golconde_plugin_api::{
    testing, Action, Change, Column, ErrorKind, Message, Operation, PluginError, Value,
};

/// The processor built from `config` through the plugin ABI, called as the host calls it.
pub fn process(config: &str, message: &Message) -> Result<Change, PluginError> {
    let processor = testing::build_processor::<Debezium>(config)
        .unwrap_or_else(|e| panic!("{config} was refused: {e}"));
    processor.process(message).into_result()
}

/// The permanent error `message` gets, as text.
pub fn refusal(config: &str, message: &Message) -> String {
    match process(config, message) {
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
            e.message.into_string()
        }
        Ok(change) => panic!("accepted: {change:?}"),
    }
}

/// The directory of the event files.
pub fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/events")
}

/// The event file `name`, as a message body.
pub fn event(name: &str) -> Message {
    let path = events_dir().join(name);
    let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Message::new(body)
}

pub fn text(s: &str) -> Value {
    Value::Text(s.into())
}

pub fn column(name: &str, value: Value) -> Column {
    Column::new(name, value)
}

pub fn upsert(table: &str, data: Vec<Column>) -> Operation {
    operation(Action::Upsert, table, data, Vec::new())
}

pub fn update(table: &str, data: Vec<Column>, restriction: Vec<Column>) -> Operation {
    operation(Action::Update, table, data, restriction)
}

pub fn delete(table: &str, restriction: Vec<Column>) -> Operation {
    operation(Action::Delete, table, Vec::new(), restriction)
}

fn operation(
    action: Action,
    table: &str,
    data: Vec<Column>,
    restriction: Vec<Column>,
) -> Operation {
    Operation {
        action,
        table: table.into(),
        data: data.into(),
        restriction: restriction.into(),
    }
}

/// A change of one operation with `id`.
pub fn change(id: Option<&str>, operation: Operation) -> Change {
    Change {
        id: id.map(Into::into).into(),
        operations: vec![operation].into(),
    }
}

/// The change of a tombstone or a skipped truncate: nothing to apply.
pub fn nothing() -> Change {
    Change {
        id: None.into(),
        operations: Vec::new().into(),
    }
}

/// The columns of Debezium's documented `customers` rows.
pub fn customer(id: i64, first: &str, last: &str, email: &str) -> Vec<Column> {
    vec![
        column("id", Value::Int(id)),
        column("first_name", text(first)),
        column("last_name", text(last)),
        column("email", text(email)),
    ]
}

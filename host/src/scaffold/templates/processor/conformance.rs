//! The processor conformance suite of `golconde_plugin_api::testing`, run against
//! `{{name}}` through the same ABI the host uses: what the host relies on (a bad key in the
//! configuration is named, hostile messages are permanent errors and never hang or panic,
//! a message gives the same change every time, fan-out copies are accepted again), plus a
//! test of this format's own. Add yours beside them.

use golconde_plugin_api::{
    testing::{self, conformance},
    Action, Column, Message, Value,
};

// The plugin under test: this crate, linked as an rlib.
use {{lib}}::KeyValue;

/// What the host adds to the processor's section: the pipeline's `table` and `tables`.
const CONFIG: &str = r#"{"table": "items", "tables": ["items"]}"#;

#[test]
fn conforms() {
    conformance::processor::<KeyValue>(conformance::ProcessorSuite {
        config: CONFIG.into(),
        // One message of each shape the format has.
        good: vec![
            Message::new(r#"{"key": "a", "value": "x"}"#),
            Message::new(r#"{"key": 7, "value": {"nested": [1, 2.5, null]}}"#),
        ],
        library: Some(testing::library!({{lib}})),
        ..Default::default()
    });
}

#[test]
fn a_key_and_a_value_become_an_upsert() {
    let processor = testing::build_processor::<KeyValue>(CONFIG).unwrap();
    let message = Message::new(r#"{"key": "a", "value": 12345678901234567890}"#);
    let change = processor.process(&message).into_result().unwrap();
    assert_eq!(change.operations.len(), 1);
    let operation = &change.operations[0];
    assert_eq!(operation.action, Action::Upsert);
    assert_eq!(operation.table.as_str(), "items");
    assert_eq!(
        operation.data.as_slice(),
        [
            Column::new("key", Value::Text("a".into())),
            // Too large for an i64: kept exact, as decimal text.
            Column::new("value", Value::Numeric("12345678901234567890".into())),
        ]
    );
}

//! Two processors: `tidy`, which keeps the contract, and `sloppy`, which breaks most of it.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use abi_stable::std_types::{ROption, RString, RVec};
use serde::Deserialize;

use super::failures;
use crate::{
    testing::{conformance, library},
    Action, Change, Column, Host, Message, Operation, Plugin, PluginError, Processor, Value,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TidyConfig {
    table: String,
}

/// `{"upsert": KEY, "value": V}`, `{"delete": KEY}`, `{"insert": V}`.
pub struct Tidy {
    table: String,
}

impl Plugin for Tidy {
    const NAME: &'static str = "tidy";
    const VERSION: &'static str = "1.0.0";
    const DESCRIPTION: &'static str = "keeps the contract";
    type Config = TidyConfig;

    fn new(config: TidyConfig, _host: &Host) -> Result<Self, PluginError> {
        Ok(Tidy {
            table: config.table,
        })
    }
}

fn operation(action: Action, table: &str, data: Vec<Column>, restriction: Vec<Column>) -> Change {
    Change {
        id: ROption::RNone,
        operations: RVec::from(vec![Operation {
            action,
            table: RString::from(table),
            data: RVec::from(data),
            restriction: RVec::from(restriction),
        }]),
    }
}

fn text(name: &str, value: &str) -> Column {
    Column::new(name, Value::Text(value.into()))
}

impl Processor for Tidy {
    fn process(&self, message: &Message) -> Result<Change, PluginError> {
        let json: serde_json::Value = serde_json::from_slice(&message.body)
            .map_err(|e| PluginError::permanent(format!("the message is not JSON: {e}")))?;
        let field = |name: &str| json.get(name).and_then(|v| v.as_str());
        let table = self.table.as_str();
        if let Some(key) = field("upsert") {
            let value = field("value").unwrap_or("");
            Ok(operation(
                Action::Upsert,
                table,
                vec![text("id", key), text("value", value)],
                vec![],
            ))
        } else if let Some(key) = field("delete") {
            Ok(operation(
                Action::Delete,
                table,
                vec![],
                vec![text("id", key)],
            ))
        } else if let Some(value) = field("insert") {
            Ok(operation(
                Action::Insert,
                table,
                vec![text("value", value)],
                vec![],
            ))
        } else {
            Err(PluginError::permanent("no `upsert`, `delete` or `insert`"))
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SloppyConfig {
    #[allow(dead_code)]
    table: String,
}

/// Answers every hostile input wrongly, makes a new change id each time, and enriches
/// messages into garbage.
pub struct Sloppy {
    calls: AtomicU64,
}

impl Plugin for Sloppy {
    const NAME: &'static str = "sloppy";
    const VERSION: &'static str = "0.0.1";
    const DESCRIPTION: &'static str = "breaks the contract";
    type Config = SloppyConfig;

    fn new(_config: SloppyConfig, _host: &Host) -> Result<Self, PluginError> {
        Ok(Sloppy {
            calls: AtomicU64::new(0),
        })
    }
}

impl Processor for Sloppy {
    fn process(&self, message: &Message) -> Result<Change, PluginError> {
        let body = message.body.as_slice();
        if body.is_empty() {
            return Err(PluginError::transient("nothing to read yet"));
        }
        if body[0] == b'[' {
            panic!("too deep for me");
        }
        if body.len() > 100_000 && body[0] == b'{' {
            std::thread::sleep(Duration::from_secs(5));
            return Err(PluginError::permanent("too big"));
        }
        match std::str::from_utf8(body) {
            Err(_) => Ok(operation(
                Action::Update,
                "t",
                vec![text("value", "?")],
                vec![],
            )),
            Ok("upsert") => {
                let mut change = operation(Action::Upsert, "t", vec![text("id", "1")], vec![]);
                let call = self.calls.fetch_add(1, Ordering::Relaxed);
                change.id = ROption::RSome(RString::from(call.to_string()));
                Ok(change)
            }
            Ok("delete") => Ok(operation(
                Action::Delete,
                "t",
                vec![],
                vec![text("id", "1")],
            )),
            Ok(other) => Err(PluginError::config(format!("what is {other}?"))),
        }
    }

    fn enrich(
        &self,
        _message: &Message,
        _applied: &crate::Applied,
    ) -> Result<Message, PluginError> {
        Ok(Message::new(vec![0xff]))
    }
}

fn tidy_suite() -> conformance::ProcessorSuite {
    conformance::ProcessorSuite {
        config: r#"{"table": "t"}"#.into(),
        good: [
            r#"{"upsert": "1", "value": "one"}"#,
            r#"{"delete": "1"}"#,
            r#"{"insert": "new"}"#,
        ]
        .iter()
        .map(|body| Message::new(*body))
        .collect(),
        library: Some(library!(crate::testing::conformance::tests)),
        ..Default::default()
    }
}

#[test]
fn a_processor_that_keeps_the_contract_passes() {
    assert_eq!(
        failures(|| conformance::processor::<Tidy>(tidy_suite())),
        Vec::<String>::new()
    );
}

#[test]
fn every_broken_rule_of_a_processor_is_reported() {
    let failed = failures(|| {
        conformance::processor::<Sloppy>(conformance::ProcessorSuite {
            config: r#"{"table": "t"}"#.into(),
            good: vec![Message::new("upsert"), Message::new("delete")],
            skipped: vec![Message::new("upsert")],
            time_limit: Duration::from_secs(1),
            library: Some(library!(crate::testing::conformance::tests)),
            ..Default::default()
        })
    });
    let expected = [
        "refuses an unknown key (`golconde_conformance_unknown_key`) with a config error naming it",
        "accepts good message `upsert`",
        "skips `upsert` (a change with no operation)",
        "refuses an empty body with a permanent error, in time",
        "refuses invalid UTF-8 with a permanent error, in time",
        "refuses 1 MiB of `[` with a permanent error, in time",
        "refuses 1 MiB of `{\"a\":` with a permanent error, in time",
        "refuses an object of 100,000 fields with a permanent error, in time",
        "refuses 16 random bytes (seed 1) with a permanent error, in time",
        "refuses 4096 random bytes (seed 2) with a permanent error, in time",
        "refuses 1048576 random bytes (seed 3) with a permanent error, in time",
        "refuses good message `upsert` cut in half with a permanent error, in time",
        "refuses good message `delete` cut in half with a permanent error, in time",
        "`enrich` of `delete` with an empty `Applied` gives a message it accepts",
    ];
    assert_eq!(failed, expected, "{failed:#?}");
}

#[test]
fn a_plugin_its_library_does_not_list_is_reported() {
    /// Tidy under another name, which `export_plugins!` does not list.
    struct Unlisted(Tidy);
    impl Plugin for Unlisted {
        const NAME: &'static str = "unlisted";
        const VERSION: &'static str = "1.0.0";
        const DESCRIPTION: &'static str = "";
        type Config = TidyConfig;
        fn new(config: TidyConfig, host: &Host) -> Result<Self, PluginError> {
            Tidy::new(config, host).map(Unlisted)
        }
    }
    impl Processor for Unlisted {
        fn process(&self, message: &Message) -> Result<Change, PluginError> {
            self.0.process(message)
        }
    }
    let failed = failures(|| conformance::processor::<Unlisted>(tidy_suite()));
    assert_eq!(
        failed,
        [
            "describes itself: `DESCRIPTION` is not empty",
            "the library lists it, offers `golconde.construct` 1 for it, and builds it",
        ]
    );
    let failed = failures(|| {
        conformance::processor::<Tidy>(conformance::ProcessorSuite {
            library: None,
            ..tidy_suite()
        })
    });
    assert_eq!(
        failed,
        ["the library lists it, offers `golconde.construct` 1 for it, and builds it"]
    );
}

#[test]
fn the_test_helpers_build_through_the_abi() {
    let processor = crate::testing::build_processor::<Tidy>(r#"{"table": "t"}"#).unwrap();
    let change = processor
        .process(&Message::new(r#"{"delete": "7"}"#))
        .into_result()
        .unwrap();
    assert_eq!(change.operations[0].action, Action::Delete);
    let e = crate::testing::build_processor::<Tidy>(r#"{"tabel": "t"}"#)
        .err()
        .expect("a misspelt key is refused");
    assert_eq!(e.kind, crate::ErrorKind::Config);
    assert!(e.message.contains("tabel"), "{e}");
    // A panic comes back as the host sees it.
    let sloppy = crate::testing::build_processor::<Sloppy>("{}").unwrap();
    let e = sloppy
        .process(&Message::new("["))
        .into_result()
        .unwrap_err();
    assert_eq!(e.kind, crate::ErrorKind::Panic);

    let host = crate::testing::host("unit");
    assert_eq!(host.instance(), "unit");
    assert_eq!(host.config_dir(), std::env::current_dir().ok().as_deref());
    assert!(Tidy::new(TidyConfig { table: "t".into() }, &host).is_ok());
}

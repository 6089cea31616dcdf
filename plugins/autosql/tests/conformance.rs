//! The `autosql` processor against the plugin contract (`golconde_plugin_api::testing::
//! conformance`): one message of each action, hostile bodies, enrich, configuration.

use golconde_autosql::AutoSql;
use golconde_plugin_api::{
    testing::{self, conformance},
    Message,
};

#[test]
fn autosql_conforms() {
    let good = [
        r#"{"action": "add", "data": {"name": "x", "email": "y"}}"#,
        r#"{"action": "set", "data": {"id": 7, "name": "x"}, "id": "m-1"}"#,
        r#"{"action": "update", "data": {"name": "z"}, "restriction": {"id": 7}}"#,
        r#"{"action": "delete", "restriction": {"id": 7}}"#,
    ];
    conformance::processor::<AutoSql>(conformance::ProcessorSuite {
        config: r#"{"table": "items"}"#.into(),
        good: good.iter().map(|body| Message::new(*body)).collect(),
        library: Some(testing::library!(golconde_autosql)),
        ..Default::default()
    });
}

//! The transport conformance suite of `golconde_plugin_api::testing`, run against
//! `{{name}}` through the same ABI the host uses: what the host relies on (a bad key in the
//! configuration is named, messages come in order with their bodies and headers, a
//! cumulative ack covers everything before it, what was not acknowledged comes again
//! flagged `redelivered`, `receive` honours its timeout, a prefetch of 0 is refused). Add
//! your own tests beside it.

use std::path::Path;

use golconde_plugin_api::testing::{self, conformance};
use serde_json::json;

// The plugin under test: this crate, linked as an rlib.
use {{lib}}::FileQueue;

#[test]
fn conforms() {
    let dir = tempfile::tempdir().unwrap();
    let config = |dir: &Path| json!({ "dir": dir }).to_string();
    let missing = dir.path().join("missing");
    conformance::transport::<FileQueue>(conformance::TransportSuite {
        config: config(dir.path()),
        // Files have no broker: a folder that does not exist stands for one that cannot be
        // reached, which `ping` must answer with a transient error.
        config_at: Some(Box::new(move |_, _| config(&missing))),
        library: Some(testing::library!({{lib}})),
        ..Default::default()
    });
}

//! A plugin built to abort on panic would take the whole host down at its first panic, so
//! the SDK refuses to build one (`export_plugins!` stops the compiler with a message that
//! says what to change), and the loader refuses one built with an SDK that could not.

use std::{path::Path, process::Command};

#[test]
fn a_plugin_built_with_panic_abort_does_not_compile() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::write(
        dir.path().join("Cargo.toml"),
        format!(
            r#"[package]
name = "aborting-plugin"
version = "0.1.0"
edition = "2021"

[lib]
crate-type = ["cdylib"]

[dependencies]
golconde-plugin-api = {{ path = "{}" }}
serde = {{ version = "1", features = ["derive"] }}

[profile.dev]
panic = "abort"

[workspace]
"#,
            workspace.join("plugin-api").display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("src/lib.rs"),
        r#"
use golconde_plugin_api::{Change, Host, Message, Plugin, PluginError, Processor};

pub struct P;
impl Plugin for P {
    const NAME: &'static str = "aborting";
    const VERSION: &'static str = "0.1.0";
    const DESCRIPTION: &'static str = "built to abort";
    type Config = serde::de::IgnoredAny;
    fn new(_: Self::Config, _: &Host) -> Result<Self, PluginError> {
        Ok(P)
    }
}
impl Processor for P {
    fn process(&self, _: &Message) -> Result<Change, PluginError> {
        panic!("never reached")
    }
}
golconde_plugin_api::export_plugins! { processor: P }
"#,
    )
    .unwrap();
    // The workspace's lock file pins the versions already downloaded, so this works offline.
    std::fs::copy(workspace.join("Cargo.lock"), dir.path().join("Cargo.lock")).unwrap();
    let output = Command::new(env!("CARGO"))
        .args(["check", "--offline", "--quiet", "--lib"])
        .current_dir(dir.path())
        // Shared with other runs, so only the first one checks the dependencies.
        .env(
            "CARGO_TARGET_DIR",
            workspace.join("target/panic-abort-check"),
        )
        .env_remove("RUSTFLAGS")
        .output()
        .expect("cargo runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "it compiled:\n{stderr}");
    assert!(
        stderr.contains("must be built with `panic = \"unwind\"`"),
        "{stderr}"
    );
}

/// One built with the first SDK, which could not stop it, is refused when loaded.
#[test]
fn the_host_refuses_a_library_built_to_abort() {
    let library = golconde_e2e::build_dir().join("libgolconde_fixture_abort_v1.so");
    assert!(
        library.exists(),
        "{} is missing: build tests/fixtures/abort-v1 (scripts/test does)",
        library.display()
    );
    let (output, text) = golconde_e2e::run(&["plugins"]);
    assert!(output.status.success(), "{text}");
    assert!(!text.contains("aborting-rows"), "it was loaded:\n{text}");
    let line = text
        .lines()
        .find(|l| l.contains("libgolconde_fixture_abort_v1.so"))
        .unwrap_or_else(|| panic!("not reported:\n{text}"));
    assert!(line.contains("built with `panic = \"abort\"`"), "{line}");
    assert!(
        line.contains("rebuild it with `panic = \"unwind\"`"),
        "{line}"
    );
}

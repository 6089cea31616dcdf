//! `golconde new-plugin`: writes the Cargo project of a new plugin, ready to build out of
//! tree, so that an author starts from code that builds, passes its conformance suite and
//! loads, rather than from a blank page.
//!
//! Design decisions, and why:
//! - **The project carries its own copy of `golconde-plugin-api`**, the very sources this
//!   `golconde` was built with ([`PLUGIN_API`], embedded at build time), written to
//!   `vendor/golconde-plugin-api/` and depended on by path. The crate is not on crates.io
//!   yet, and this copy is the one whose ABI this host speaks: the project builds offline
//!   and with no edit, wherever it is written.
//! - **The project is a workspace of its own** (`[workspace]` in its manifest), so that it
//!   builds the same when written inside another workspace.
//! - **Templates are plain text with `{{placeholders}}`** (`scaffold/templates/`), filled in
//!   by substitution: a handful of names does not need a template engine. Type names are
//!   fixed rather than derived from the plugin's name, which could clash with the SDK's
//!   (`transport`, `message`).
//! - **Nothing existing is touched.** The crate's folder is made with `create_dir`, which
//!   fails if anything is there, and is removed again if writing into it fails.

use std::{
    fs,
    path::{Path, PathBuf},
};

use include_dir::{include_dir, Dir};

/// The sources of `golconde-plugin-api`, as this binary was built. `build.rs` makes cargo
/// rebuild the binary when a file is added there, which `include_dir!` alone would miss.
static PLUGIN_API: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../plugin-api");

/// Where the copy goes in a new project.
const VENDOR_DIR: &str = "vendor/golconde-plugin-api";

/// Why a plugin project was not written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("unknown plugin kind `{0}`: say `transport`, `processor` or `database`")]
    Kind(String),
    #[error(
        "`{name}` cannot be a plugin name: {why}. Use lowercase ASCII letters, digits and `-`, \
         starting with a letter (e.g. `my-queue`)"
    )]
    Name { name: String, why: String },
    #[error(
        "{} already exists; nothing was written. Choose another NAME or --path, or remove it",
        .0.display()
    )]
    Exists(PathBuf),
    #[error("writing {}: {error}; nothing was left behind", path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// The kinds of plugin a project can be written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Transport,
    Processor,
    Database,
}

impl Kind {
    fn parse(text: &str) -> Result<Kind, ScaffoldError> {
        match text {
            "transport" => Ok(Kind::Transport),
            "processor" => Ok(Kind::Processor),
            "database" => Ok(Kind::Database),
            _ => Err(ScaffoldError::Kind(text.to_string())),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Kind::Transport => "transport",
            Kind::Processor => "processor",
            Kind::Database => "database",
        }
    }

    /// `src/lib.rs`, `tests/conformance.rs`, and the kind's part of `README.md`.
    fn templates(self) -> [&'static str; 3] {
        match self {
            Kind::Transport => [
                include_str!("scaffold/templates/transport/lib.rs"),
                include_str!("scaffold/templates/transport/conformance.rs"),
                include_str!("scaffold/templates/transport/README.md"),
            ],
            Kind::Processor => [
                include_str!("scaffold/templates/processor/lib.rs"),
                include_str!("scaffold/templates/processor/conformance.rs"),
                include_str!("scaffold/templates/processor/README.md"),
            ],
            Kind::Database => [
                include_str!("scaffold/templates/database/lib.rs"),
                include_str!("scaffold/templates/database/conformance.rs"),
                include_str!("scaffold/templates/database/README.md"),
            ],
        }
    }
}

/// Writes a `kind` plugin named `name` into `parent/name`, creating `parent` if need be;
/// returns the folder written.
///
/// `anyhow` because that is what `main` matches on; the error inside is a
/// [`ScaffoldError`].
pub fn new_plugin(kind: &str, name: &str, parent: &Path) -> anyhow::Result<PathBuf> {
    Ok(write(kind, name, parent)?)
}

fn write(kind: &str, name: &str, parent: &Path) -> Result<PathBuf, ScaffoldError> {
    let kind = Kind::parse(kind)?;
    check_name(name)?;
    let files = files(kind, name);
    let root = parent.join(name);
    let failed = |path: &Path| {
        let path = path.to_path_buf();
        move |error| ScaffoldError::Write { path, error }
    };
    fs::create_dir_all(parent).map_err(failed(parent))?;
    fs::create_dir(&root).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => ScaffoldError::Exists(root.clone()),
        _ => failed(&root)(e),
    })?;
    let written = files.iter().try_for_each(|(path, contents)| {
        let path = root.join(path);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(failed(dir))?;
        }
        fs::write(&path, contents).map_err(failed(&path))
    });
    if let Err(e) = written {
        // The folder is ours: it did not exist a moment ago.
        let _ = fs::remove_dir_all(&root);
        return Err(e);
    }
    Ok(root)
}

fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let why = match name.chars().next() {
        None => Some("it is empty".to_string()),
        Some(c) if !c.is_ascii_lowercase() => {
            Some(format!("it starts with `{c}`, not a lowercase letter"))
        }
        _ => name
            .chars()
            .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
            .map(|c| format!("it holds `{c}`")),
    };
    match why {
        None => Ok(()),
        Some(why) => Err(ScaffoldError::Name {
            name: name.to_string(),
            why,
        }),
    }
}

/// Every file of the project, by path inside it.
fn files(kind: Kind, name: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let manifest: toml::Table = PLUGIN_API
        .get_file("Cargo.toml")
        .and_then(|f| f.contents_utf8())
        .and_then(|text| text.parse().ok())
        .expect("the embedded plugin-api has a Cargo.toml (checked by a unit test)");
    let api_version = manifest["package"]["version"]
        .as_str()
        .expect("plugin-api's Cargo.toml states its version");
    let has_testing_feature = manifest
        .get("features")
        .and_then(|f| f.get("testing"))
        .is_some();
    let mut dev_dependencies = Vec::new();
    // The suites live in `golconde_plugin_api::testing`, behind a feature if the crate has
    // one: tests get it, the library the host loads does not.
    if has_testing_feature {
        dev_dependencies.push(format!(
            "golconde-plugin-api = {{ path = \"{VENDOR_DIR}\", features = [\"testing\"] }}"
        ));
    }
    // The file-backed templates' tests need a scratch folder.
    if kind != Kind::Processor {
        dev_dependencies.push("tempfile = \"3\"".to_string());
    }
    let dev_dependencies = dev_dependencies.join("\n");
    let crate_name = format!("golconde-{name}");
    let lib_name = crate_name.replace('-', "_");
    let [lib, conformance, kind_readme] = kind.templates();
    let vars = [
        ("name", name),
        ("kind", kind.as_str()),
        ("crate", &crate_name),
        ("lib", &lib_name),
        ("api_version", api_version),
        ("vendor", VENDOR_DIR),
        ("dev_dependencies", &dev_dependencies),
        ("golconde_version", env!("CARGO_PKG_VERSION")),
    ];
    let readme =
        include_str!("scaffold/templates/README.md").replace("{{kind_readme}}", kind_readme);
    let mut files: Vec<(PathBuf, Vec<u8>)> = [
        ("Cargo.toml", include_str!("scaffold/templates/Cargo.toml")),
        (".gitignore", "/target\n"),
        ("README.md", &readme),
        ("src/lib.rs", lib),
        ("tests/conformance.rs", conformance),
    ]
    .into_iter()
    .map(|(path, template)| (PathBuf::from(path), render(template, &vars).into_bytes()))
    .collect();
    vendor(&PLUGIN_API, &mut files);
    files
}

/// Adds every file of `dir` (recursively) under [`VENDOR_DIR`], except build output
/// (`target/`) and a lock file: the copy is a dependency, resolved with the project.
fn vendor(dir: &'static Dir<'static>, files: &mut Vec<(PathBuf, Vec<u8>)>) {
    for file in dir.files() {
        if file.path() != Path::new("Cargo.lock") {
            files.push((
                Path::new(VENDOR_DIR).join(file.path()),
                file.contents().to_vec(),
            ));
        }
    }
    for sub in dir.dirs() {
        if sub.path().file_name() != Some("target".as_ref()) {
            vendor(sub, files);
        }
    }
}

/// `template` with each `{{key}}` of `vars` replaced by its value.
fn render(template: &str, vars: &[(&str, &str)]) -> String {
    vars.iter()
        .fold(template.to_string(), |text, (key, value)| {
            text.replace(&format!("{{{{{key}}}}}"), value)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_anything_is_written() {
        for good in ["a", "my-queue", "q2", "x-1-y"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("2queue", "starts with `2`"),
            ("-queue", "starts with `-`"),
            ("Queue", "starts with `Q`"),
            ("my_queue", "holds `_`"),
            ("my queue", "holds ` `"),
            ("myQueue", "holds `Q`"),
            ("café", "holds `é`"),
            ("../x", "starts with `.`"),
        ] {
            let e = check_name(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.contains("lowercase ASCII letters, digits and `-`"), "{e}");
        }
    }

    #[test]
    fn every_placeholder_is_filled_in() {
        for kind in [Kind::Transport, Kind::Processor, Kind::Database] {
            for (path, contents) in files(kind, "my-plugin") {
                if path.starts_with(VENDOR_DIR) {
                    continue;
                }
                let text = String::from_utf8(contents).unwrap();
                let left = text.split("{{").skip(1).find(|rest| {
                    rest.split_once("}}").is_some_and(|(key, _)| {
                        key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    })
                });
                assert!(left.is_none(), "{kind:?} {}: {{{{{left:?}", path.display());
            }
        }
    }

    #[test]
    fn the_copy_of_plugin_api_is_whole_and_builds_on_its_own() {
        let files = files(Kind::Processor, "p");
        let has = |path: &str| {
            files
                .iter()
                .any(|(p, _)| p == &Path::new(VENDOR_DIR).join(path))
        };
        assert!(has("Cargo.toml"));
        assert!(has("src/lib.rs"));
        assert!(has("src/sdk.rs"));
        assert!(!files
            .iter()
            .any(|(p, _)| p.components().any(|c| c.as_os_str() == "target")));
        // Inherited keys (`edition.workspace = true`) would need the Golconde workspace.
        let manifest = PLUGIN_API
            .get_file("Cargo.toml")
            .unwrap()
            .contents_utf8()
            .unwrap();
        let inherits = manifest
            .lines()
            .any(|l| !l.trim_start().starts_with('#') && l.contains("workspace"));
        assert!(!inherits, "{manifest}");
    }

    #[test]
    fn an_existing_folder_is_left_alone() {
        let parent = std::env::temp_dir().join(format!("golconde-scaffold-{}", std::process::id()));
        let root = parent.join("taken");
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("mine.txt"), "keep me").unwrap();
        let e = write("processor", "taken", &parent).unwrap_err();
        assert!(matches!(e, ScaffoldError::Exists(_)), "{e}");
        assert_eq!(fs::read_dir(&root).unwrap().count(), 1);
        assert_eq!(
            fs::read_to_string(root.join("mine.txt")).unwrap(),
            "keep me"
        );
        fs::remove_dir_all(&parent).unwrap();
    }
}

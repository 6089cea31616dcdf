//! Finds plugin libraries, loads them, and keeps the plugins they export.
//!
//! Each file is opened with `lib_header_from_path` and checked with `init_root_module`,
//! never with `RootModule::load_from*`: those cache one module per root-module type, so a
//! second transport library would silently hand back the first one's plugins. Libraries are
//! never unloaded: plugin code may still be running on threads of its own, and
//! `abi_stable` leaks them anyway.
//!
//! A library that cannot be used is refused with a reason and the rest go on: one stale
//! plugin must not stop pipelines that do not use it.

use std::{
    collections::BTreeSet,
    fmt,
    path::{Path, PathBuf},
};

use abi_stable::library::{lib_header_from_path, LibraryError, RawLibrary};
use golconde_plugin_api::{
    abi::{Constructor, PluginKind, PluginLibRef},
    ext::{
        construct::ConstructV1, consume_as::ConsumeAsV1, delete_all::DeleteAllV1, lag::LagV1,
        Extension, ExtensionHeader, EXTENSIONS_MAGIC, EXTENSIONS_SYMBOL,
    },
    AbiVersion,
};

/// A plugin found in a library.
#[derive(Clone)]
pub struct PluginInfo {
    pub file: PathBuf,
    pub kind: PluginKind,
    pub name: String,
    pub version: String,
    pub description: String,
    pub abi: AbiVersion,
    /// The ABI 1.0 constructor, which every plugin has.
    pub constructor: Constructor,
    /// `golconde.construct` 1 (ABI 1.1), when the plugin implements it: what the host
    /// builds instances with, handing over its services.
    pub construct_v1: Option<&'static ConstructV1>,
    /// A database that offers `golconde.delete_all` 1 (ABI 1.1): it takes a `Delete` with
    /// an empty restriction as "every row". Without it, the host refuses such a change.
    pub deletes_all_rows: bool,
    /// A transport that offers `golconde.consume_as` 1 (ABI 1.2): the host opens its
    /// consumers naming the pipeline. Without it, the 1.0 `consume`.
    pub consume_as: Option<&'static ConsumeAsV1>,
    /// A transport that offers `golconde.lag` 1 (ABI 1.3): it says how many messages
    /// wait for a pipeline. Without it, no lag is shown.
    pub lag: Option<&'static LagV1>,
}

/// A library that was found but cannot be used, and why.
#[derive(Debug, Clone)]
pub struct Refused {
    pub file: PathBuf,
    pub reason: String,
    /// `abi_stable`'s full report, for the debug log.
    pub detail: Option<String>,
}

/// Every plugin found in a set of directories.
#[derive(Default)]
pub struct Registry {
    pub plugins: Vec<PluginInfo>,
    pub refused: Vec<Refused>,
    pub searched: Vec<PathBuf>,
}

impl Registry {
    /// Loads every library in `dirs`, in order. When two libraries export a plugin of the
    /// same kind and name, the first one found is used and the other is refused.
    pub fn discover(dirs: &[PathBuf]) -> Registry {
        let mut registry = Registry::default();
        let mut seen = BTreeSet::new();
        for dir in dirs {
            registry.searched.push(dir.clone());
            let Ok(entries) = std::fs::read_dir(dir) else {
                tracing::debug!(dir = %dir.display(), "plugin directory does not exist");
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_library(p))
                .collect();
            files.sort();
            for file in files {
                let canonical = file.canonicalize().unwrap_or_else(|_| file.clone());
                if seen.insert(canonical) {
                    registry.load(&file);
                }
            }
        }
        registry
    }

    fn load(&mut self, file: &Path) {
        match load_library(file) {
            Ok(None) => tracing::debug!(file = %file.display(), "not a Golconde plugin library"),
            Ok(Some(plugins)) => {
                for plugin in plugins {
                    if let Some(first) = self.find(plugin.kind, &plugin.name) {
                        self.refused.push(Refused {
                            file: plugin.file.clone(),
                            reason: format!(
                                "{} plugin `{}` is also exported by {}, which was found first",
                                plugin.kind,
                                plugin.name,
                                first.file.display()
                            ),
                            detail: None,
                        });
                    } else {
                        self.plugins.push(plugin);
                    }
                }
            }
            Err(refused) => {
                tracing::warn!("{}: refused: {}", refused.file.display(), refused.reason);
                if let Some(detail) = &refused.detail {
                    tracing::debug!("{}: abi_stable's report:\n{detail}", refused.file.display());
                }
                self.refused.push(refused);
            }
        }
    }

    pub fn find(&self, kind: PluginKind, name: &str) -> Option<&PluginInfo> {
        self.plugins
            .iter()
            .find(|p| p.kind == kind && p.name == name)
    }

    /// The plugin, or an error that lists what there is instead.
    pub fn require(&self, kind: PluginKind, name: &str) -> Result<&PluginInfo, UnknownPlugin> {
        self.find(kind, name).ok_or_else(|| UnknownPlugin {
            kind,
            name: name.to_string(),
            available: self
                .plugins
                .iter()
                .filter(|p| p.kind == kind)
                .map(|p| format!("{} ({})", p.name, p.file.display()))
                .collect(),
            refused: self.refused.clone(),
            searched: self.searched.clone(),
        })
    }
}

/// A configuration names a plugin nobody exports.
#[derive(Debug, thiserror::Error)]
pub struct UnknownPlugin {
    pub kind: PluginKind,
    pub name: String,
    pub available: Vec<String>,
    pub refused: Vec<Refused>,
    pub searched: Vec<PathBuf>,
}

impl fmt::Display for UnknownPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no {} plugin named `{}` was found", self.kind, self.name)?;
        if self.available.is_empty() {
            write!(f, "; there is no {} plugin at all", self.kind)?;
        } else {
            write!(
                f,
                "; {} plugins found: {}",
                self.kind,
                self.available.join(", ")
            )?;
        }
        for refused in &self.refused {
            write!(
                f,
                "; refused {}: {}",
                refused.file.display(),
                refused.reason
            )?;
        }
        let searched: Vec<String> = self
            .searched
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        write!(
            f,
            "; searched [{}] (set `plugin_dirs` in the configuration or $GOLCONDE_PLUGIN_PATH)",
            searched.join(", ")
        )
    }
}

fn is_library(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    path.is_file()
        && name.starts_with(std::env::consts::DLL_PREFIX)
        && name.ends_with(std::env::consts::DLL_SUFFIX)
}

/// Loads one library: `Ok(None)` if it is not a plugin library at all.
pub fn load_library(file: &Path) -> Result<Option<Vec<PluginInfo>>, Refused> {
    let refuse = |reason: String, detail: Option<String>| Refused {
        file: file.to_path_buf(),
        reason,
        detail,
    };
    let host_abi = AbiVersion::current();
    let header = match lib_header_from_path(file) {
        Ok(header) => header,
        Err(LibraryError::GetSymbolError { .. }) => return Ok(None),
        Err(LibraryError::OpenError { err, .. }) => {
            return Err(refuse(format!("cannot be opened: {err}"), None))
        }
        Err(e) => {
            return Err(refuse(
                format!(
                    "it was built with an `abi_stable` this host cannot read ({}); rebuild it \
                     against golconde-plugin-api {}.x",
                    first_line(&e.to_string()),
                    host_abi.major
                ),
                Some(e.to_string()),
            ))
        }
    };
    if unwinds(file) == Some(false) {
        return Err(refuse(
            "it was built with `panic = \"abort\"`, so its first panic would end this whole \
             process with every pipeline; rebuild it with `panic = \"unwind\"` (the default: \
             remove `panic = \"abort\"` from its Cargo.toml profile and `-C panic=abort` from \
             RUSTFLAGS)"
                .into(),
            None,
        ));
    }
    let raw_version = header.version_strings().version.as_str().to_string();
    let plugin_abi = AbiVersion::parse(&raw_version);
    let abi_text = plugin_abi.map_or_else(|| format!("`{raw_version}`"), |v| v.to_string());
    let module = match header.init_root_module::<PluginLibRef>() {
        Ok(module) => module,
        Err(LibraryError::IncompatibleVersionNumber { .. })
        | Err(LibraryError::ParseVersionError(_)) => {
            let which = match plugin_abi {
                Some(plugin) if plugin.major > host_abi.major => format!(
                    "the plugin is newer than this golconde: upgrade golconde to one that \
                     speaks ABI {}.x, or rebuild the plugin against golconde-plugin-api {}.x",
                    plugin.major, host_abi.major
                ),
                _ => format!(
                    "the plugin is older than this golconde: rebuild it against \
                     golconde-plugin-api {}.x (plugins of ABI {}.0 and later keep loading in \
                     every golconde of ABI {}.x)",
                    host_abi.major, host_abi.major, host_abi.major
                ),
            };
            return Err(refuse(
                format!(
                    "it was built for Golconde plugin ABI {abi_text}, and this host speaks ABI \
                     {host_abi}; {which}"
                ),
                None,
            ));
        }
        Err(e @ LibraryError::AbiInstability(_)) => {
            return Err(refuse(
                format!(
                    "it claims Golconde plugin ABI {abi_text}, but its types differ from those \
                     of ABI {abi_text} as released (a released golconde-plugin-api {}.x never \
                     changes a type, so it was built against a modified copy); rebuild it \
                     against a released golconde-plugin-api {}.x. Run with \
                     `RUST_LOG=golconde=debug` for the full layout report",
                    host_abi.major, host_abi.major
                ),
                Some(e.to_string()),
            ))
        }
        Err(e) => {
            return Err(refuse(
                format!(
                    "its root module failed to load: {}",
                    first_line(&e.to_string())
                ),
                Some(e.to_string()),
            ))
        }
    };
    let abi = plugin_abi.unwrap_or(host_abi);
    let extensions = extensions(file).map_err(|reason| refuse(reason, None))?;
    let entries = (module.plugins())();
    entries
        .iter()
        .map(|entry| {
            let kind = entry.constructor.kind();
            let name = entry.name.as_str();
            // One interface of this plugin's, checked against the host's layout.
            fn find<I: golconde_plugin_api::ext::Interface>(
                extensions: &[Extension],
                name: &str,
                kind: PluginKind,
                refuse: &dyn Fn(String, Option<String>) -> Refused,
            ) -> Result<Option<&'static I>, Refused> {
                extensions
                    .iter()
                    .filter(|e| e.plugin.as_str() == name && e.kind.as_str() == kind.as_str())
                    .find_map(|e| e.get::<I>())
                    .transpose()
                    .map_err(|detail| {
                        refuse(
                            format!(
                                "its interface `{}` {} for {kind} `{name}` differs from this \
                                 host's (it was built against a modified golconde-plugin-api); \
                                 rebuild it against a released one. Run with \
                                 `RUST_LOG=golconde=debug` for the layout report",
                                I::NAME,
                                I::VERSION
                            ),
                            Some(detail),
                        )
                    })
            }
            let construct_v1 = find::<ConstructV1>(&extensions, name, kind, &refuse)?;
            let deletes_all_rows = find::<DeleteAllV1>(&extensions, name, kind, &refuse)?
                .is_some_and(|t| t.deletes_all_rows);
            let consume_as = find::<ConsumeAsV1>(&extensions, name, kind, &refuse)?;
            let lag = find::<LagV1>(&extensions, name, kind, &refuse)?;
            Ok(PluginInfo {
                file: file.to_path_buf(),
                kind,
                name: name.to_string(),
                version: entry.version.as_str().to_string(),
                description: entry.description.as_str().to_string(),
                abi,
                constructor: entry.constructor,
                construct_v1,
                deletes_all_rows,
                consume_as,
                lag,
            })
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

/// The interfaces a library offers beyond ABI 1.0 ([`golconde_plugin_api::ext`]): none for
/// a library built before them. `Err` says why the list cannot be trusted.
fn extensions(file: &Path) -> Result<Vec<Extension>, String> {
    let library = RawLibrary::load_at(file).map_err(|e| format!("cannot be opened: {e}"))?;
    let symbol = format!("{EXTENSIONS_SYMBOL}\0");
    // SAFETY: a library exporting this symbol exports an `ExtensionHeader` under it; its
    // magic is checked before anything else is read.
    let header: &'static ExtensionHeader =
        match unsafe { library.get::<&'static ExtensionHeader>(symbol.as_bytes()) } {
            Ok(header) => *header,
            Err(_) => return Ok(Vec::new()),
        };
    // Libraries are never unloaded: the header and every table it lists stay valid.
    std::mem::forget(library);
    if header.magic != EXTENSIONS_MAGIC {
        return Err(format!(
            "it exports `{EXTENSIONS_SYMBOL}`, but not as a Golconde plugin library does; \
             rebuild it with `export_plugins!`"
        ));
    }
    abi_stable::abi_stability::abi_checking::check_layout_compatibility(
        <golconde_plugin_api::ext::ExtensionList as abi_stable::StableAbi>::LAYOUT,
        header.layout,
    )
    .map_err(|e| {
        format!(
            "its list of ABI extensions differs from this host's (it was built against a \
             modified golconde-plugin-api): {}",
            first_line(&e.to_string())
        )
    })?;
    Ok((header.list)().extensions.into_iter().collect())
}

/// Whether a library can unwind a panic, as far as its file tells: a Rust library built with
/// `panic = "unwind"` links the unwinder's `_Unwind_RaiseException`, one built with
/// `panic = "abort"` does not. `None` when the file is not an ELF object this can read (the
/// check is then skipped; `export_plugins!` refuses to build an aborting plugin anyway).
fn unwinds(file: &Path) -> Option<bool> {
    use object::{Object, ObjectSymbol};
    // Read through a cache, so that only the headers and the dynamic symbol table come off
    // the disk: a plugin with debug information is tens of MB, which every start (and every
    // pipeline process) would otherwise hold at once.
    let cache = object::ReadCache::new(std::fs::File::open(file).ok()?);
    let object = object::File::parse(&cache).ok()?;
    if object.format() != object::BinaryFormat::Elf {
        return None;
    }
    // The unwinder is a shared library, so a plugin that unwinds imports it.
    let found = object
        .dynamic_symbols()
        .any(|symbol| symbol.name() == Ok("_Unwind_RaiseException"));
    Some(found)
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text).trim()
}

//! Testing a plugin without the host: a [`Host`] for unit tests, instances built through
//! the real ABI, and [`conformance`] suites that check the contract the host relies on.
//!
//! ```ignore
//! use golconde_plugin_api::testing::{self, conformance};
//!
//! #[test]
//! fn builds_through_the_abi() {
//!     let processor = testing::build_processor::<MyProcessor>(r#"{"table": "items"}"#).unwrap();
//!     // ... call it as the host does: processor.process(&message).into_result()
//! }
//!
//! #[test]
//! fn conforms() {
//!     conformance::processor::<MyProcessor>(conformance::ProcessorSuite {
//!         config: r#"{"table": "items"}"#.into(),
//!         good: vec![Message::new(r#"{"action": "add", "data": {"name": "x"}}"#)],
//!         library: Some(testing::library!(my_plugin)),
//!         ..Default::default()
//!     });
//! }
//! ```
//!
//! A plugin's tests link it as an `rlib`, so its crate needs `crate-type = ["cdylib",
//! "rlib"]`: the `cdylib` is what the host loads, the `rlib` what tests call.
//!
//! Design decisions, and why:
//! - **Built through the ABI, not by calling `Plugin::new`.** [`build_transport`],
//!   [`build_processor`] and [`build_database`] go through `golconde.construct` 1 exactly
//!   as the host does ([`crate::ext`]): the configuration as JSON text, the layout check of
//!   the interface, the SDK's adapters. A test then sees what the host sees: a panic is an
//!   [`ErrorKind::Panic`] error, a misspelt key a [`ErrorKind::Config`] one.
//! - **Behind the `testing` feature, with no dependency of its own.** A plugin enables it
//!   in `[dev-dependencies]` only (`golconde-plugin-api = { version = "1.1", features =
//!   ["testing"] }`), so its `cdylib` carries none of it.
//! - **Logs go to stderr**, where `cargo test` shows them for a failing test. The level is
//!   `RUST_LOG` when that is a bare level (`debug`), and `info` otherwise. [`logged`]
//!   captures what a plugin called directly logs on the test's thread, for tests that
//!   assert on a warning.

pub mod conformance;

use std::path::PathBuf;

use abi_stable::{
    library::LibHeader,
    sabi_trait::TD_Opaque,
    std_types::{RArc, RStr, RString},
};

use crate::{
    abi::{DatabaseBox, HostContext, PluginEntry, PluginLibRef, ProcessorBox, TransportBox},
    error::{ErrorKind, PluginError},
    ext::{
        construct::{Built, ConstructV1},
        Extension, ExtensionHeader, FfiLogFilter, FfiLogFilter_TO, HostServices, LogFilterBox,
        EXTENSIONS_MAGIC,
    },
    log::{FfiLogSink, FfiLogSink_TO, LogLevel, LogRecord, LogSinkBox},
    sdk::{self, Database, Host, Processor, Transport},
};

/// The instance name the `build_*` functions give what they build (the host gives the
/// configuration section's name).
pub const INSTANCE: &str = "test";

/// A [`Host`] for unit tests that call a plugin's own code directly: it logs to stderr as
/// instance `instance`, and its [`Host::config_dir`] is the current directory (the crate's
/// folder under `cargo test`).
pub fn host(instance: &str) -> Host {
    let dispatch = crate::log::dispatch_for(&sink(Some(instance)), Some(&services()));
    Host::new(instance.to_string(), dispatch, std::env::current_dir().ok())
}

/// Builds transport `T` from its configuration section (JSON text) through the real ABI,
/// as the host does, with a log sink that writes to stderr.
///
/// # Errors
/// What the plugin's constructor answers: [`ErrorKind::Config`] for a bad configuration,
/// [`ErrorKind::Panic`] if it panicked.
pub fn build_transport<T: Transport>(config_json: &str) -> Result<TransportBox, PluginError> {
    match construct(&sdk::transport_extensions::<T>(), T::NAME, config_json)? {
        Built::Transport(transport) => Ok(transport),
        _ => Err(another_kind(T::NAME, "transport")),
    }
}

/// Builds processor `P` from its configuration section (JSON text) through the real ABI,
/// as the host does, with a log sink that writes to stderr.
///
/// # Errors
/// As [`build_transport`].
pub fn build_processor<P: Processor>(config_json: &str) -> Result<ProcessorBox, PluginError> {
    match construct(&sdk::processor_extensions::<P>(), P::NAME, config_json)? {
        Built::Processor(processor) => Ok(processor),
        _ => Err(another_kind(P::NAME, "processor")),
    }
}

/// Builds database `D` from its configuration section (JSON text) through the real ABI,
/// as the host does, with a log sink that writes to stderr.
///
/// # Errors
/// As [`build_transport`].
pub fn build_database<D: Database>(config_json: &str) -> Result<DatabaseBox, PluginError> {
    match construct(&sdk::database_extensions::<D>(), D::NAME, config_json)? {
        Built::Database(database) => Ok(database),
        _ => Err(another_kind(D::NAME, "database")),
    }
}

/// Calls the `golconde.construct` 1 table among `extensions`, as the host's
/// `assemble::Recipe::build` does.
fn construct(
    extensions: &[Extension],
    plugin: &str,
    config_json: &str,
) -> Result<Built, PluginError> {
    let table = construct_table(extensions)
        .ok_or_else(|| {
            PluginError::new(
                ErrorKind::Panic,
                format!("plugin `{plugin}` offers no `golconde.construct` 1"),
            )
        })?
        .map_err(|e| {
            PluginError::new(
                ErrorKind::Panic,
                format!("the `golconde.construct` 1 of plugin `{plugin}` has another layout: {e}"),
            )
        })?;
    let context = HostContext {
        instance: RString::from(INSTANCE),
        log: sink(Some(INSTANCE)),
    };
    (table.construct)(RStr::from_str(config_json), context, &services()).into_result()
}

fn construct_table(extensions: &[Extension]) -> Option<Result<&'static ConstructV1, String>> {
    extensions.iter().find_map(|e| e.get::<ConstructV1>())
}

fn another_kind(plugin: &str, kind: &str) -> PluginError {
    PluginError::new(
        ErrorKind::Panic,
        format!("{kind} plugin `{plugin}` built an instance of another kind"),
    )
}

/// What the host offers an instance besides its context: the current directory as the
/// configuration's folder, and stderr for the library's own threads.
fn services() -> HostServices {
    let dir: PathBuf = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    HostServices {
        config_dir: RString::from(dir.to_string_lossy().as_ref()),
        log_filter: FfiLogFilter_TO::from_ptr(RArc::new(Stderr::new(None)), TD_Opaque)
            as LogFilterBox,
        library_log: sink(None),
    }
}

fn sink(instance: Option<&str>) -> LogSinkBox {
    FfiLogSink_TO::from_ptr(RArc::new(Stderr::new(instance)), TD_Opaque)
}

/// Writes a plugin's log events to stderr, at the level `RUST_LOG` names (info if it names
/// none).
#[derive(Clone)]
struct Stderr {
    instance: Option<String>,
    max: LogLevel,
}

impl Stderr {
    fn new(instance: Option<&str>) -> Stderr {
        let max = std::env::var("RUST_LOG")
            .ok()
            .and_then(|level| {
                level
                    .trim()
                    .parse::<tracing::level_filters::LevelFilter>()
                    .ok()
            })
            .map_or(LogLevel::Info, LogLevel::from_filter);
        Stderr {
            instance: instance.map(str::to_string),
            max,
        }
    }
}

impl FfiLogSink for Stderr {
    fn max_level(&self) -> LogLevel {
        self.max
    }

    fn log(&self, record: &LogRecord<'_>) {
        if record.level > self.max {
            return;
        }
        let who = self.instance.as_deref().unwrap_or("(library)");
        eprintln!(
            "[{:?} {}] {who}: {}",
            record.level,
            record.target.as_str(),
            record.message.as_str()
        );
    }
}

impl FfiLogFilter for Stderr {
    fn enabled(&self, level: LogLevel, _target: RStr<'_>) -> bool {
        level <= self.max
    }
}

/// A plugin library linked into a test: what its `export_plugins!` exported, read the way
/// the host reads a library file it loaded. Make one with [`library!`]; the conformance
/// suites use it to check that the library lists the plugin under test, and can build it.
#[derive(Clone, Copy)]
pub struct Library {
    header: &'static LibHeader,
    extensions: &'static ExtensionHeader,
}

impl Library {
    /// The library whose `export_plugins!` defined these two statics; [`library!`] names
    /// them for you.
    pub fn new(header: &'static LibHeader, extensions: &'static ExtensionHeader) -> Library {
        Library { header, extensions }
    }

    /// Every plugin the library lists, read through its root module after `abi_stable`'s
    /// version and layout checks, as the host's loader reads them.
    ///
    /// # Errors
    /// Why the root module cannot be loaded.
    pub fn entries(&self) -> Result<Vec<PluginEntry>, String> {
        let module = self
            .header
            .init_root_module::<PluginLibRef>()
            .map_err(|e| format!("its root module does not load: {e}"))?;
        Ok((module.plugins())().into_iter().collect())
    }

    /// The interfaces beyond ABI 1.0 that the library offers, after the checks the host's
    /// loader makes (magic, layout of the list).
    ///
    /// # Errors
    /// Why the host would refuse the list.
    pub fn extensions(&self) -> Result<Vec<Extension>, String> {
        if self.extensions.magic != EXTENSIONS_MAGIC {
            return Err("its extension header does not start with the Golconde magic".into());
        }
        abi_stable::abi_stability::abi_checking::check_layout_compatibility(
            <crate::ext::ExtensionList as abi_stable::StableAbi>::LAYOUT,
            self.extensions.layout,
        )
        .map_err(|e| format!("its list of extensions has another layout: {e}"))?;
        Ok((self.extensions.list)().extensions.into_iter().collect())
    }
}

/// The [`Library`] of a plugin crate, by the crate's path: `library!(my_plugin)` in the
/// crate's integration tests, `library!(crate)` in its unit tests.
#[macro_export]
#[doc(hidden)]
macro_rules! __golconde_testing_library {
    ($($krate:ident)::+) => {
        $crate::testing::Library::new(
            &$($krate)::+::__GOLCONDE_PLUGIN_LIB_HEADER,
            &$($krate)::+::__GOLCONDE_PLUGIN_EXTENSIONS,
        )
    };
}

/// The [`Library`] of a plugin crate, by the crate's path: `library!(my_plugin)` in the
/// crate's integration tests, `library!(crate)` in its unit tests. The crate must call
/// `export_plugins!` at its root.
pub use crate::__golconde_testing_library as library;

/// Runs `f` and answers, besides its result, the warnings and errors logged on this thread
/// while it ran (by a plugin called directly, not through the ABI, and by the tasks of a
/// runtime it blocks on from this thread): one line each, `LEVEL target: message
/// field=value ...`.
///
/// Safe with tests on parallel threads: each captures its own thread's events. `tracing`
/// remembers per log statement whether any subscriber wants it, decided when the statement
/// is first reached; so that a statement first reached where nothing captured does not stay
/// off for the test that captures it next, the first call installs a global subscriber that
/// wants every statement and writes none (unless the test binary installed one itself).
pub fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
    use std::sync::{Arc, Mutex, Once};
    use tracing_subscriber::layer::SubscriberExt;

    static LISTENING: Once = Once::new();
    LISTENING.call_once(|| {
        let _ = tracing::subscriber::set_global_default(Listening);
    });
    let lines = Arc::new(Mutex::new(String::new()));
    let subscriber = tracing_subscriber::registry().with(Capture(lines.clone()));
    let result = tracing::subscriber::with_default(subscriber, f);
    let text = lines.lock().map(|l| l.clone()).unwrap_or_default();
    (result, text)
}

/// Writes warnings and errors, one line each, into a shared string: see [`logged`].
struct Capture(std::sync::Arc<std::sync::Mutex<String>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn enabled(
        &self,
        metadata: &tracing::Metadata<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        *metadata.level() <= tracing::Level::WARN
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                use std::fmt::Write;
                let _ = if field.name() == "message" {
                    write!(self.0, " {value:?}")
                } else {
                    write!(self.0, " {}={value:?}", field.name())
                };
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                use std::fmt::Write;
                let _ = if field.name() == "message" {
                    write!(self.0, " {value}")
                } else {
                    write!(self.0, " {}={value}", field.name())
                };
            }
        }
        let metadata = event.metadata();
        let mut fields = Fields(format!("{} {}:", metadata.level(), metadata.target()));
        event.record(&mut fields);
        if let Ok(mut lines) = self.0.lock() {
            lines.push_str(&fields.0);
            lines.push('\n');
        }
    }
}

/// Wants every log statement and keeps none: see [`logged`].
struct Listening;

impl tracing::Subscriber for Listening {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::always()
    }
    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        false
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

//! The host's log: `tracing-subscriber` set up from the `[log]` section (or `RUST_LOG`), and
//! the sink and filter through which plugins' events join it.

use std::{
    collections::HashMap,
    io::IsTerminal,
    sync::{Mutex, OnceLock},
};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RArc, RStr},
};
use golconde_plugin_api::{
    ext::{FfiLogFilter, FfiLogFilter_TO, LogFilterBox},
    log::{FfiLogSink, FfiLogSink_TO, LogLevel, LogRecord, LogSinkBox},
};
use tracing::{
    callsite::{Callsite, Identifier},
    field::FieldSet,
    level_filters::LevelFilter,
    metadata::Kind,
    subscriber::Interest,
    Level, Metadata,
};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides the configured level.
pub fn init(config: &LogConfig) -> Result<(), String> {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(config)?)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, never in files or journals.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_thread_names(true);
    let installed = match config.format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
    installed.map_err(|e| format!("cannot install the log subscriber: {e}"))
}

/// The filter `init` would install, or why it cannot be made.
pub fn filter(config: &LogConfig) -> Result<EnvFilter, String> {
    match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
            .map_err(|e| format!("RUST_LOG=`{directives}` is not a valid filter: {e}")),
        _ => {
            let invalid = |why: String| {
                format!(
                    "[log] level = `{}` is not a valid level or filter (try `info`, `debug`, \
                     or `golconde=debug,info`): {why}",
                    config.level
                )
            };
            // A lone word would parse as a target name and silence everything else.
            let level = config.level.trim();
            if !level.contains(['=', ',']) && level.parse::<LevelFilter>().is_err() {
                return Err(invalid(
                    "not one of off, error, warn, info, debug, trace".into(),
                ));
            }
            EnvFilter::try_new(level).map_err(|e| invalid(e.to_string()))
        }
    }
}

/// A sink for one plugin instance, or for a plugin library's own threads: its events come
/// out of the host's log under their own target (`lapin::channels`, `golconde_amqp::…`), so
/// that `RUST_LOG=lapin=debug` means what it says, with `plugin` and `instance` fields, so
/// that an operator can tell which plugin said what.
#[derive(Clone)]
struct PluginSink {
    plugin: String,
    instance: Option<String>,
}

/// The sink to hand a plugin instance at construction.
pub fn sink_for(plugin: &str, instance: &str) -> LogSinkBox {
    sink(plugin, Some(instance))
}

/// The sink for events of a plugin library that belong to no instance (threads it started
/// itself): what `HostServices::library_log` carries.
pub fn library_sink_for(plugin: &str) -> LogSinkBox {
    sink(plugin, None)
}

fn sink(plugin: &str, instance: Option<&str>) -> LogSinkBox {
    FfiLogSink_TO::from_ptr(
        RArc::new(PluginSink {
            plugin: plugin.to_string(),
            instance: instance.map(str::to_string),
        }),
        TD_Opaque,
    )
}

impl FfiLogSink for PluginSink {
    fn max_level(&self) -> LogLevel {
        LogLevel::from_filter(LevelFilter::current())
    }

    fn log(&self, record: &LogRecord<'_>) {
        let Some(callsite) = callsite(record.level, record.target.as_str()) else {
            return;
        };
        let metadata = callsite.metadata();
        tracing::dispatcher::get_default(|dispatch| {
            if !dispatch.enabled(metadata) {
                return;
            }
            let fields = metadata.fields();
            let field = |name| fields.field(name).expect("the callsite has it");
            let (message, plugin, instance) =
                (field("message"), field("plugin"), field("instance"));
            let text = record.message.as_str();
            let values = [
                (
                    &message,
                    Some(&format_args!("{text}") as &dyn tracing::Value),
                ),
                (&plugin, Some(&self.plugin.as_str() as &dyn tracing::Value)),
                (
                    &instance,
                    self.instance.as_ref().map(|i| i as &dyn tracing::Value),
                ),
            ];
            dispatch.event(&tracing::Event::new(metadata, &fields.value_set(&values)));
        });
    }
}

/// The host's log filter, for plugins to ask by target and level before they format an
/// event: what `HostServices::log_filter` carries.
#[derive(Clone)]
struct HostFilter;

pub fn filter_for_plugins() -> LogFilterBox {
    FfiLogFilter_TO::from_ptr(RArc::new(HostFilter), TD_Opaque)
}

impl FfiLogFilter for HostFilter {
    fn enabled(&self, level: LogLevel, target: RStr<'_>) -> bool {
        callsite(level, target.as_str()).is_some_and(|callsite| {
            tracing::dispatcher::get_default(|d| d.enabled(callsite.metadata()))
        })
    }
}

/// A callsite made at run time for one level and target of plugin events: `tracing`
/// filters by a callsite's metadata, which must be `'static`, and plugins' targets are
/// known only when they log.
struct PluginCallsite {
    metadata: OnceLock<Metadata<'static>>,
}

impl Callsite for PluginCallsite {
    fn set_interest(&self, _interest: Interest) {}

    fn metadata(&self) -> &Metadata<'_> {
        self.metadata.get().expect("set when made")
    }
}

/// The most distinct targets plugins may log under; the rest go under `golconde::plugin`.
/// Each costs a little memory for good, and a plugin names its targets after its modules.
const MAX_TARGETS: usize = 1024;

const FIELDS: &[&str] = &["message", "plugin", "instance"];

/// The callsite of `level` and `target`, made on first use; `None` for `Off`.
fn callsite(level: LogLevel, target: &str) -> Option<&'static PluginCallsite> {
    static MADE: OnceLock<Mutex<HashMap<(u8, String), &'static PluginCallsite>>> = OnceLock::new();
    let level = match level {
        LogLevel::Off => return None,
        LogLevel::Error => Level::ERROR,
        LogLevel::Warn => Level::WARN,
        LogLevel::Info => Level::INFO,
        LogLevel::Debug => Level::DEBUG,
        LogLevel::Trace => Level::TRACE,
    };
    let key = (level_index(level), target.to_string());
    let mut made = MADE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(callsite) = made.get(&key) {
        return Some(callsite);
    }
    let key = if made.len() >= MAX_TARGETS {
        (key.0, "golconde::plugin".to_string())
    } else {
        key
    };
    if let Some(callsite) = made.get(&key) {
        return Some(callsite);
    }
    let callsite: &'static PluginCallsite = Box::leak(Box::new(PluginCallsite {
        metadata: OnceLock::new(),
    }));
    let target: &'static str = Box::leak(key.1.clone().into_boxed_str());
    let _ = callsite.metadata.set(Metadata::new(
        "plugin event",
        target,
        level,
        None,
        None,
        None,
        FieldSet::new(FIELDS, Identifier(callsite)),
        Kind::EVENT,
    ));
    tracing::callsite::register(callsite);
    made.insert(key, callsite);
    Some(callsite)
}

fn level_index(level: Level) -> u8 {
    match level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

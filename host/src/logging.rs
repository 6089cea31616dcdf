//! The host's log: `tracing-subscriber` set up from the `[log]` section (or `RUST_LOG`), and
//! the sink through which plugins' events join it.

use std::io::IsTerminal;

use abi_stable::{sabi_trait::TD_Opaque, std_types::RArc};
use golconde_plugin_api::log::{FfiLogSink, FfiLogSink_TO, LogLevel, LogRecord, LogSinkBox};
use tracing::level_filters::LevelFilter;
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

/// A sink for one plugin instance: its events come out of the host's log with `plugin` and
/// `instance` fields, so an operator can tell which plugin said what.
#[derive(Clone)]
struct PluginSink {
    plugin: String,
    instance: String,
}

/// The sink to hand a plugin instance at construction.
pub fn sink_for(plugin: &str, instance: &str) -> LogSinkBox {
    FfiLogSink_TO::from_ptr(
        RArc::new(PluginSink {
            plugin: plugin.to_string(),
            instance: instance.to_string(),
        }),
        TD_Opaque,
    )
}

impl FfiLogSink for PluginSink {
    fn max_level(&self) -> LogLevel {
        LogLevel::from_filter(LevelFilter::current())
    }

    fn log(&self, record: &LogRecord<'_>) {
        let (plugin, instance) = (self.plugin.as_str(), self.instance.as_str());
        let (module, message) = (record.target.as_str(), record.message.as_str());
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!(target: "golconde::plugin", $level, plugin, instance, module, "{message}")
            };
        }
        match record.level {
            LogLevel::Off => {}
            LogLevel::Error => emit!(tracing::Level::ERROR),
            LogLevel::Warn => emit!(tracing::Level::WARN),
            LogLevel::Info => emit!(tracing::Level::INFO),
            LogLevel::Debug => emit!(tracing::Level::DEBUG),
            LogLevel::Trace => emit!(tracing::Level::TRACE),
        }
    }
}

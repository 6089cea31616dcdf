//! The configuration file: its shape, `${VAR}` expansion, and the errors that point at a
//! file, a line and a key.
//!
//! **Invariant:** only this module knows the file format. Everything after it sees typed
//! values, and each plugin sees its own section as JSON text.
//!
//! Environment variables are expanded on the parsed document, string value by string
//! value, before the typed pass: a value that holds quotes or backslashes can never break
//! the TOML around it, and every line keeps its number for the errors of the typed pass.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use crate::tables::TablePattern;

/// Everything that can be wrong with a configuration file.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "{path}:{line}: `{key}` uses environment variable `{var}`, which is not set; \
         set it, or write `$${{` for a literal `${{`"
    )]
    UnsetVariable {
        path: PathBuf,
        line: usize,
        key: String,
        var: String,
    },
    #[error("{path}:{line}: `{key}`: {message}")]
    BadVariable {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
}

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where plugin libraries are looked for, relative to the configuration file.
    #[serde(default)]
    pub plugin_dirs: Vec<PathBuf>,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub stats: StatsConfig,
    /// How long, at most, a stopping daemon waits for in-flight batches.
    #[serde(default = "defaults::shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// Where `golconde run` writes its process id, for `golconde reload`; relative to the
    /// configuration file.
    pub pid_file: Option<PathBuf>,
    /// Whether pipelines run as threads of this process or each in a process of its own;
    /// a pipeline may say otherwise for itself.
    #[serde(default)]
    pub isolation: Isolation,
    #[serde(default)]
    pub transports: BTreeMap<String, Spanned<Connection>>,
    #[serde(default)]
    pub databases: BTreeMap<String, Spanned<Connection>>,
    #[serde(default)]
    pub pipelines: Vec<Spanned<PipelineConfig>>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default = "defaults::log_level")]
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: defaults::log_level(),
            format: LogFormat::default(),
        }
    }
}

/// The `[stats]` section: where the counters are served over HTTP, if anywhere.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct StatsConfig {
    /// `host:port` to serve the dashboard, `/stats`, `/metrics` and `/health` on; off when
    /// absent.
    pub listen: Option<String>,
    /// A bearer token every route but `/health` wants.
    pub token: Option<String>,
    /// A file holding that token (relative to the configuration file), instead of `token`.
    pub token_file: Option<PathBuf>,
}

/// Where a pipeline runs.
#[derive(Debug, Deserialize, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Threads of the daemon's process: the cheapest, but a plugin that crashes natively
    /// (a segmentation fault, an abort) takes every pipeline down with it.
    #[default]
    Thread,
    /// A child process of the same binary, supervised and restarted by the daemon: a
    /// native crash costs that pipeline a restart.
    Process,
}

#[derive(Debug, Deserialize, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// A `[transports.NAME]` or `[databases.NAME]` section: the plugin to use, and everything
/// else handed to that plugin.
#[derive(Debug, Deserialize, Clone, PartialEq)]
pub struct Connection {
    pub plugin: String,
    #[serde(flatten)]
    pub settings: toml::Table,
}

/// A pipeline's `processor = { plugin = "...", ... }`, or `processor = "..."` for a
/// processor with no settings of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessorConfig {
    pub plugin: String,
    pub settings: toml::Table,
}

impl<'de> Deserialize<'de> for ProcessorConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{self, MapAccess, Visitor};

        struct Form;
        impl<'de> Visitor<'de> for Form {
            type Value = ProcessorConfig;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a processor's name (\"autosql\") or a table with its name and settings \
                     ({ plugin = \"autosql\", ... })",
                )
            }

            fn visit_str<E: de::Error>(self, name: &str) -> Result<ProcessorConfig, E> {
                Ok(ProcessorConfig {
                    plugin: name.to_string(),
                    settings: toml::Table::new(),
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ProcessorConfig, A::Error> {
                let mut settings =
                    toml::Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                match settings.remove("plugin") {
                    Some(toml::Value::String(plugin)) => Ok(ProcessorConfig { plugin, settings }),
                    Some(other) => Err(de::Error::custom(format!(
                        "`plugin` must be the processor's name as a string (found {})",
                        other.type_str()
                    ))),
                    None => Err(de::Error::missing_field("plugin")),
                }
            }
        }
        deserializer.deserialize_any(Form)
    }
}

/// One `[[pipelines]]` entry.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub name: String,
    pub transport: String,
    pub queue: String,
    pub processor: ProcessorConfig,
    pub database: String,
    /// The table a message goes to when it names none.
    pub table: Option<String>,
    /// The only tables this pipeline may write; defaults to `table` alone. `"*"` allows
    /// any table and `"schema.*"` any table of one schema, but never a system catalog.
    #[serde(default)]
    pub tables: Vec<String>,
    /// A message body larger than this is set aside (dead letter) without being processed.
    #[serde(default = "defaults::max_message_bytes")]
    pub max_message_bytes: usize,
    /// Where this pipeline runs; the file's `isolation` when absent.
    pub isolation: Option<Isolation>,
    /// With process isolation: the most memory the pipeline's process may hold (its data
    /// segment, `RLIMIT_DATA`), in MiB.
    pub memory_limit_mb: Option<u64>,
    #[serde(default = "defaults::workers")]
    pub workers: usize,
    #[serde(default)]
    pub batch: BatchConfig,
    /// Unacknowledged deliveries the broker may hand over; see [`PipelineConfig::prefetch`].
    pub prefetch: Option<u32>,
    #[serde(default)]
    pub retry: RetryConfig,
    pub dead_letter: Option<Target>,
    #[serde(default)]
    pub fan_out: Vec<Target>,
}

impl PipelineConfig {
    /// The prefetch asked of the transport: the configured one, else two batches for
    /// every worker and never fewer than four. Two batches are in flight at most (one
    /// applying, the next waiting for it); with only those two in the window, the broker
    /// stops sending while both are, and after each commit the pipeline runs dry for as
    /// long as the acknowledgement and the next deliveries take to cross. Four batches
    /// keep one arriving meanwhile: one worker drained AMQP about 5% faster with 2,000
    /// than with 1,000 at the default batch of 500, and no faster with 4,000.
    pub fn prefetch(&self) -> u32 {
        self.prefetch.unwrap_or_else(|| {
            let workers = u32::try_from(self.workers.max(2)).unwrap_or(u32::MAX);
            self.batch
                .max_messages
                .saturating_mul(workers.saturating_mul(2))
        })
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    #[serde(default = "defaults::max_messages")]
    pub max_messages: u32,
    #[serde(default = "defaults::max_wait_ms")]
    pub max_wait_ms: u64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_messages: defaults::max_messages(),
            max_wait_ms: defaults::max_wait_ms(),
        }
    }
}

/// Backoff for transient failures and for restarting workers.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(default = "defaults::initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    #[serde(default = "defaults::max_backoff_ms")]
    pub max_backoff_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_backoff_ms: defaults::initial_backoff_ms(),
            max_backoff_ms: defaults::max_backoff_ms(),
        }
    }
}

/// A queue on a named transport (dead-letter queue, fan-out target).
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub transport: String,
    pub queue: String,
}

mod defaults {
    pub fn log_level() -> String {
        "info".into()
    }
    pub fn shutdown_grace_ms() -> u64 {
        30_000
    }
    pub fn workers() -> usize {
        1
    }
    pub fn max_messages() -> u32 {
        500
    }
    pub fn max_wait_ms() -> u64 {
        20
    }
    pub fn initial_backoff_ms() -> u64 {
        100
    }
    pub fn max_backoff_ms() -> u64 {
        30_000
    }
    pub fn max_message_bytes() -> usize {
        16 * 1024 * 1024
    }
}

/// A parsed file, with what is needed to point back into it.
#[derive(Debug)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub config: Config,
    text: String,
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, text, |name| std::env::var(name).ok())
    }

    /// Parses `text` as if read from `path`, looking variables up with `env`.
    pub fn parse(
        path: &Path,
        text: String,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ConfigFile, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let mut document: toml_edit::DocumentMut = text
            .parse()
            .map_err(|e: toml_edit::TomlError| invalid(e.to_string().trim_end().to_string()))?;
        let mut expander = Expander {
            path,
            text: &text,
            env: &env,
        };
        expander.table(document.as_table_mut(), "")?;
        let config: Config = toml::from_str(&document.to_string())
            .map_err(|e| invalid(e.to_string().trim_end().to_string()))?;
        let file = ConfigFile {
            path: path.to_path_buf(),
            config,
            text,
        };
        file.validate()?;
        Ok(file)
    }

    /// The 1-based line a byte offset of the file falls on.
    pub fn line_of(&self, offset: usize) -> usize {
        line_of(&self.text, offset)
    }

    /// Where a section starts, as `file:line`, for messages about it.
    pub fn locate<T>(&self, section: &Spanned<T>) -> Location<'_> {
        Location {
            path: &self.path,
            line: self.line_of(section.span().start),
        }
    }

    /// Where `golconde run` writes its process id, if it does.
    pub fn pid_file(&self) -> Option<PathBuf> {
        self.config.pid_file.as_ref().map(|p| self.dir().join(p))
    }

    /// Where pipeline `p` runs.
    pub fn isolation(&self, p: &PipelineConfig) -> Isolation {
        p.isolation.unwrap_or(self.config.isolation)
    }

    /// The folder of the file, absolute: what relative paths in it mean.
    pub fn dir(&self) -> PathBuf {
        let base = match self.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf())
    }

    /// The plugin directories: those of the file (relative to its folder), then those of
    /// `$GOLCONDE_PLUGIN_PATH`.
    pub fn plugin_dirs(&self) -> Vec<PathBuf> {
        let base = self.path.parent().unwrap_or(Path::new("."));
        let mut dirs: Vec<PathBuf> = self
            .config
            .plugin_dirs
            .iter()
            .map(|dir| base.join(dir))
            .collect();
        dirs.extend(plugin_path_from_env());
        dirs
    }

    /// The token of `[stats]`, read from `token_file` if that is where it is.
    pub fn stats_token(&self) -> Result<Option<String>, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: self.path.clone(),
            message,
        };
        let Some(file) = &self.config.stats.token_file else {
            return Ok(self.config.stats.token.clone());
        };
        let path = self.dir().join(file);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            invalid(format!(
                "`[stats] token_file` = `{}`: cannot read {}: {e}",
                file.display(),
                path.display()
            ))
        })?;
        let token = text.lines().next().unwrap_or_default();
        if token.trim().is_empty() {
            return Err(invalid(format!(
                "`[stats] token_file`: {} is empty; write the token in it",
                path.display()
            )));
        }
        Ok(Some(token.to_string()))
    }

    /// Checks what the types cannot: names that refer to each other, and limits.
    fn validate(&self) -> Result<(), ConfigError> {
        let c = &self.config;
        if c.stats.token.is_some() && c.stats.token_file.is_some() {
            return Err(ConfigError::Invalid {
                path: self.path.clone(),
                message: "`[stats]` has both `token` and `token_file`: keep one".into(),
            });
        }
        if c.stats.token.as_ref().is_some_and(|t| t.trim().is_empty()) {
            return Err(ConfigError::Invalid {
                path: self.path.clone(),
                message: "`[stats] token` is empty: set a token, or remove the key to leave \
                          the endpoint open"
                    .into(),
            });
        }
        let fail = |section: &Spanned<PipelineConfig>, message: String| ConfigError::Invalid {
            path: self.path.clone(),
            message: format!(
                "line {}: pipeline `{}`: {message}",
                self.line_of(section.span().start),
                section.get_ref().name
            ),
        };
        let mut names = std::collections::BTreeSet::new();
        for section in &c.pipelines {
            let p = section.get_ref();
            if !names.insert(p.name.as_str()) {
                return Err(fail(section, "another pipeline has the same name".into()));
            }
            let known = |map: &BTreeMap<String, Spanned<Connection>>| {
                map.keys().cloned().collect::<Vec<_>>().join(", ")
            };
            let check_transport = |key: &str, name: &str| {
                if c.transports.contains_key(name) {
                    Ok(())
                } else {
                    Err(fail(
                        section,
                        format!(
                            "`{key}` names transport `{name}`, which is not declared; \
                             declared transports: [{}]",
                            known(&c.transports)
                        ),
                    ))
                }
            };
            check_transport("transport", &p.transport)?;
            if let Some(dead) = &p.dead_letter {
                check_transport("dead_letter.transport", &dead.transport)?;
            }
            for target in &p.fan_out {
                check_transport("fan_out.transport", &target.transport)?;
            }
            if !c.databases.contains_key(&p.database) {
                return Err(fail(
                    section,
                    format!(
                        "`database` names `{}`, which is not declared; declared databases: [{}]",
                        p.database,
                        known(&c.databases)
                    ),
                ));
            }
            if p.workers == 0 {
                return Err(fail(section, "`workers` must be at least 1".into()));
            }
            if p.batch.max_messages == 0 {
                return Err(fail(
                    section,
                    "`batch.max_messages` must be at least 1".into(),
                ));
            }
            if p.retry.initial_backoff_ms == 0
                || p.retry.max_backoff_ms < p.retry.initial_backoff_ms
            {
                return Err(fail(
                    section,
                    "`retry.initial_backoff_ms` must be at least 1 and at most \
                     `retry.max_backoff_ms`"
                        .into(),
                ));
            }
            if p.prefetch == Some(0) {
                return Err(fail(
                    section,
                    "`prefetch` must be at least 1: 0 would let the broker send the whole \
                     queue at once; leave it out for the default of twice a batch per worker"
                        .into(),
                ));
            }
            if p.max_message_bytes == 0 {
                return Err(fail(
                    section,
                    "`max_message_bytes` must be at least 1".into(),
                ));
            }
            if p.memory_limit_mb.is_some() && self.isolation(p) != Isolation::Process {
                return Err(fail(
                    section,
                    "`memory_limit_mb` limits a pipeline's own process: set `isolation = \
                     \"process\"` for it too"
                        .into(),
                ));
            }
            if p.memory_limit_mb == Some(0) {
                return Err(fail(section, "`memory_limit_mb` must be at least 1".into()));
            }
            if p.table.is_none() && p.tables.is_empty() {
                return Err(fail(
                    section,
                    "says no table it may write: set `table = \"schema.name\"` (the default \
                     table), `tables = [...]` (the only ones allowed), or `tables = [\"*\"]` to \
                     allow any table"
                        .into(),
                ));
            }
            for pattern in &p.tables {
                if let Err(problem) = TablePattern::parse(pattern) {
                    return Err(fail(section, format!("`tables`: {problem}")));
                }
            }
            if let (Some(table), false) = (&p.table, p.tables.is_empty()) {
                if !p
                    .tables
                    .iter()
                    .any(|t| TablePattern::matches_text(t, table))
                {
                    return Err(fail(
                        section,
                        format!("`table` = `{table}` is not among `tables`"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The directories of `$GOLCONDE_PLUGIN_PATH` (separated like `$PATH`).
pub fn plugin_path_from_env() -> Vec<PathBuf> {
    std::env::var_os("GOLCONDE_PLUGIN_PATH")
        .map(|paths| std::env::split_paths(&paths).collect())
        .unwrap_or_default()
}

/// `file:line`.
pub struct Location<'a> {
    pub path: &'a Path,
    pub line: usize,
}

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Converts a plugin's section to the JSON text its constructor reads.
pub fn settings_json(settings: &toml::Table) -> String {
    fn convert(value: &toml::Value) -> serde_json::Value {
        match value {
            toml::Value::String(s) => serde_json::Value::String(s.clone()),
            toml::Value::Integer(i) => serde_json::Value::from(*i),
            toml::Value::Float(f) => serde_json::Value::from(*f),
            toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
            toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
            toml::Value::Array(items) => items.iter().map(convert).collect(),
            toml::Value::Table(table) => table_to_json(table),
        }
    }
    fn table_to_json(table: &toml::Table) -> serde_json::Value {
        serde_json::Value::Object(table.iter().map(|(k, v)| (k.clone(), convert(v))).collect())
    }
    table_to_json(settings).to_string()
}

/// Walks every string value of the document and expands `${VAR}` in place.
struct Expander<'a, F> {
    path: &'a Path,
    text: &'a str,
    env: &'a F,
}

impl<F: Fn(&str) -> Option<String>> Expander<'_, F> {
    fn table(
        &mut self,
        table: &mut dyn toml_edit::TableLike,
        prefix: &str,
    ) -> Result<(), ConfigError> {
        for (key, item) in table.iter_mut() {
            let path = join_key(prefix, key.get());
            self.item(item, &path)?;
        }
        Ok(())
    }

    fn item(&mut self, item: &mut toml_edit::Item, path: &str) -> Result<(), ConfigError> {
        match item {
            toml_edit::Item::Value(value) => self.value(value, path),
            toml_edit::Item::Table(table) => self.table(table, path),
            toml_edit::Item::ArrayOfTables(tables) => {
                for (i, table) in tables.iter_mut().enumerate() {
                    self.table(table, &format!("{path}[{i}]"))?;
                }
                Ok(())
            }
            toml_edit::Item::None => Ok(()),
        }
    }

    fn value(&mut self, value: &mut toml_edit::Value, path: &str) -> Result<(), ConfigError> {
        match value {
            toml_edit::Value::String(s) if s.value().contains('$') => {
                let expanded = self.expand(s.value(), path)?;
                let decor = s.decor().clone();
                *s = toml_edit::Formatted::new(expanded);
                *s.decor_mut() = decor;
                Ok(())
            }
            toml_edit::Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.value(item, &format!("{path}[{i}]"))?;
                }
                Ok(())
            }
            toml_edit::Value::InlineTable(table) => self.table(table, path),
            _ => Ok(()),
        }
    }

    fn expand(&self, raw: &str, key: &str) -> Result<String, ConfigError> {
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            if let Some(after) = rest.strip_prefix("$${") {
                out.push_str("${");
                rest = after;
            } else if let Some(after) = rest.strip_prefix("${") {
                let Some(end) = after.find('}') else {
                    return Err(self.bad(key, raw, "`${` without a closing `}`".into()));
                };
                let name = &after[..end];
                let valid = !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !name.starts_with(|c: char| c.is_ascii_digit());
                if !valid {
                    return Err(self.bad(
                        key,
                        raw,
                        format!("`${{{name}}}` is not a valid environment variable name"),
                    ));
                }
                match (self.env)(name) {
                    Some(value) => out.push_str(&value),
                    None => {
                        return Err(ConfigError::UnsetVariable {
                            path: self.path.to_path_buf(),
                            line: self.line(raw),
                            key: key.to_string(),
                            var: name.to_string(),
                        })
                    }
                }
                rest = &after[end + 1..];
            } else {
                out.push('$');
                rest = &rest[1..];
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    fn bad(&self, key: &str, raw: &str, message: String) -> ConfigError {
        ConfigError::BadVariable {
            path: self.path.to_path_buf(),
            line: self.line(raw),
            key: key.to_string(),
            message,
        }
    }

    /// The line of the first occurrence of the raw value: the edited document no longer has
    /// positions, and a value that mentions a variable is rarely written twice.
    fn line(&self, raw: &str) -> usize {
        self.text.find(raw).map_or(0, |at| line_of(self.text, at))
    }
}

fn join_key(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, ConfigError> {
        parse_with(text, &[])
    }

    fn parse_with(text: &str, vars: &[(&str, &str)]) -> Result<ConfigFile, ConfigError> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ConfigFile::parse(Path::new("/etc/golconde.toml"), text.to_string(), |name| {
            vars.get(name).cloned()
        })
    }

    const MINIMAL: &str = r#"
[transports.rabbit]
plugin = "amqp"
url = "amqp://127.0.0.1"

[databases.primary]
plugin = "postgres"
dsn = "host=127.0.0.1"

[[pipelines]]
name = "users"
transport = "rabbit"
queue = "users"
processor = { plugin = "autosql" }
database = "primary"
table = "public.users"
"#;

    #[test]
    fn the_stats_token_comes_from_the_file_or_a_file_of_its_own() {
        let with = |stats: &str| parse(&format!("[stats]\n{stats}\n{MINIMAL}"));
        let file = with("token = \"s3cret\"").unwrap();
        assert_eq!(file.stats_token().unwrap().as_deref(), Some("s3cret"));
        assert_eq!(with("").unwrap().stats_token().unwrap(), None);
        let both = with("token = \"a\"\ntoken_file = \"t\"").unwrap_err();
        assert!(
            both.to_string().contains("both `token` and `token_file`"),
            "{both}"
        );
        let empty = with("token = \" \"").unwrap_err();
        assert!(
            empty.to_string().contains("`[stats] token` is empty"),
            "{empty}"
        );

        let dir = std::env::temp_dir().join(format!("golconde-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), "from a file\n").unwrap();
        let text = format!("[stats]\ntoken_file = \"token\"\n{MINIMAL}");
        let file = ConfigFile::parse(&dir.join("golconde.toml"), text.clone(), |_| None).unwrap();
        assert_eq!(file.stats_token().unwrap().as_deref(), Some("from a file"));
        let missing = ConfigFile::parse(&dir.join("sub/golconde.toml"), text, |_| None).unwrap();
        let error = missing.stats_token().unwrap_err().to_string();
        assert!(
            error.contains("`[stats] token_file` = `token`: cannot read"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_minimal_file_gets_sane_defaults() {
        let file = parse(MINIMAL).unwrap();
        let c = &file.config;
        let p = c.pipelines[0].get_ref();
        assert_eq!(p.workers, 1);
        assert_eq!(p.batch.max_messages, 500);
        assert_eq!(p.batch.max_wait_ms, 20);
        assert_eq!(c.log.level, "info");
        assert_eq!(c.log.format, LogFormat::Pretty);
        let rabbit = c.transports["rabbit"].get_ref();
        assert_eq!(rabbit.plugin, "amqp");
        assert_eq!(
            settings_json(&rabbit.settings),
            r#"{"url":"amqp://127.0.0.1"}"#
        );
        assert_eq!(file.locate(&c.pipelines[0]).line, 10);
    }

    #[test]
    fn a_processor_is_a_name_or_a_table_with_its_settings() {
        let file = parse(&MINIMAL.replace(
            r#"processor = { plugin = "autosql" }"#,
            r#"processor = "autosql""#,
        ))
        .unwrap();
        let p = file.config.pipelines[0].get_ref();
        assert_eq!(p.processor.plugin, "autosql");
        assert!(p.processor.settings.is_empty());

        let file = parse(&MINIMAL.replace(
            r#"processor = { plugin = "autosql" }"#,
            r#"processor = { plugin = "autosql", mode = "strict" }"#,
        ))
        .unwrap();
        let p = file.config.pipelines[0].get_ref();
        assert_eq!(p.processor.plugin, "autosql");
        assert_eq!(settings_json(&p.processor.settings), r#"{"mode":"strict"}"#);

        for (processor, expected) in [
            ("{ mode = \"strict\" }", "missing field `plugin`"),
            (
                "{ plugin = 3 }",
                "`plugin` must be the processor's name as a string",
            ),
            ("3", "a processor's name"),
        ] {
            let error = parse(&MINIMAL.replace(
                r#"processor = { plugin = "autosql" }"#,
                &format!("processor = {processor}"),
            ))
            .unwrap_err()
            .to_string();
            assert!(error.contains(expected), "{processor}: {error}");
            assert!(error.contains("/etc/golconde.toml"), "{error}");
        }
    }

    #[test]
    fn an_unknown_key_names_the_file_line_and_key() {
        let text = MINIMAL
            .replace("workers", "x")
            .replace("table = ", "wrokers = 3\ntable = ");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("/etc/golconde.toml: "), "{err}");
        assert!(err.contains("line 16"), "{err}");
        assert!(err.contains("unknown field `wrokers`"), "{err}");
    }

    #[test]
    fn a_missing_key_is_named() {
        let text = MINIMAL.replace("queue = \"users\"\n", "");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("missing field `queue`"), "{err}");
    }

    #[test]
    fn variables_expand_inside_strings_without_breaking_toml() {
        let text = MINIMAL.replace(
            "amqp://127.0.0.1",
            "amqp://guest:${PASS}@127.0.0.1/$${literal}",
        );
        let file = parse_with(&text, &[("PASS", "p\"w\\d")]).unwrap();
        let rabbit = file.config.transports["rabbit"].get_ref();
        assert_eq!(
            rabbit.settings["url"].as_str(),
            Some("amqp://guest:p\"w\\d@127.0.0.1/${literal}")
        );
    }

    #[test]
    fn an_unset_variable_names_the_file_line_key_and_variable() {
        let text = MINIMAL.replace("host=127.0.0.1", "host=${PGHOST_FOR_GOLCONDE}");
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.starts_with("/etc/golconde.toml:8: `databases.primary.dsn`"),
            "{err}"
        );
        assert!(err.contains("PGHOST_FOR_GOLCONDE"), "{err}");
    }

    #[test]
    fn a_malformed_variable_is_refused() {
        let text = MINIMAL.replace("host=127.0.0.1", "host=${1BAD}");
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("not a valid environment variable name"),
            "{err}"
        );
        let text = MINIMAL.replace("host=127.0.0.1", "host=${OPEN");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("without a closing"), "{err}");
    }

    #[test]
    fn references_to_undeclared_connections_list_what_is_declared() {
        let text = MINIMAL.replace("transport = \"rabbit\"", "transport = \"rabit\"");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("line 10: pipeline `users`"), "{err}");
        assert!(err.contains("transport `rabit`"), "{err}");
        assert!(err.contains("[rabbit]"), "{err}");
    }

    #[test]
    fn a_pipeline_must_say_which_tables_it_may_write() {
        let err = parse(&MINIMAL.replace("table = \"public.users\"\n", ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 10: pipeline `users`"), "{err}");
        assert!(err.contains("tables = [\"*\"]"), "{err}");
        let any = MINIMAL.replace("table = \"public.users\"", "tables = [\"*\"]");
        assert!(parse(&any).is_ok());
        let schema = MINIMAL.replace(
            "table = \"public.users\"",
            "table = \"public.users\"\ntables = [\"public.*\"]",
        );
        assert!(parse(&schema).is_ok());
        for (tables, expected) in [
            ("[\"pg_catalog.*\"]", "system schema `pg_catalog`"),
            ("[\"information_schema.tables\"]", "system schema"),
            ("[\"pub*\"]", "a wildcard is"),
            ("[\"other.*\"]", "is not among `tables`"),
        ] {
            let text = MINIMAL.replace(
                "table = \"public.users\"",
                &format!("table = \"public.users\"\ntables = {tables}"),
            );
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{tables}: {err}");
        }
    }

    #[test]
    fn limits_have_defaults_and_refuse_zero() {
        let file = parse(MINIMAL).unwrap();
        let p = file.config.pipelines[0].get_ref();
        assert_eq!(p.max_message_bytes, 16 * 1024 * 1024);
        assert_eq!(p.prefetch, None);
        for (keys, prefetch) in [
            ("", 2000),
            ("workers = 2", 2000),
            ("workers = 4", 4000),
            ("workers = 3\nbatch = { max_messages = 10 }", 60),
            ("workers = 4\nprefetch = 7", 7),
        ] {
            let file = parse(&MINIMAL.replace("table = ", &format!("{keys}\ntable = "))).unwrap();
            let p = file.config.pipelines[0].get_ref();
            assert_eq!(p.prefetch(), prefetch, "{keys}");
        }
        for (key, expected) in [
            ("prefetch = 0", "`prefetch` must be at least 1"),
            (
                "max_message_bytes = 0",
                "`max_message_bytes` must be at least 1",
            ),
        ] {
            let text = MINIMAL.replace("table = ", &format!("{key}\ntable = "));
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{key}: {err}");
        }
    }

    #[test]
    fn isolation_is_the_files_unless_a_pipeline_says_otherwise() {
        let file = parse(MINIMAL).unwrap();
        let p = file.config.pipelines[0].get_ref();
        assert_eq!(file.isolation(p), Isolation::Thread);
        let file = parse(&format!("isolation = \"process\"\n{MINIMAL}")).unwrap();
        let p = file.config.pipelines[0].get_ref();
        assert_eq!(file.isolation(p), Isolation::Process);
        let text = MINIMAL.replace("table = ", "isolation = \"process\"\ntable = ");
        let file = parse(&text).unwrap();
        assert_eq!(
            file.isolation(file.config.pipelines[0].get_ref()),
            Isolation::Process
        );
        let err = parse(&MINIMAL.replace("table = ", "memory_limit_mb = 64\ntable = "))
            .unwrap_err()
            .to_string();
        assert!(err.contains("set `isolation = \"process\"`"), "{err}");
        let err = parse(&MINIMAL.replace("table = ", "isolation = \"fork\"\ntable = "))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `fork`"), "{err}");
    }

    #[test]
    fn plugin_dirs_are_relative_to_the_file() {
        let text = format!("plugin_dirs = [\"plugins\", \"/opt/golconde\"]\n{MINIMAL}");
        let file = parse(&text).unwrap();
        let dirs = file.plugin_dirs();
        assert_eq!(dirs[0], Path::new("/etc/plugins"));
        assert_eq!(dirs[1], Path::new("/opt/golconde"));
    }
}

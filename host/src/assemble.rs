//! Turns a parsed configuration into built pieces, with nothing running yet: one plugin
//! instance per declared connection, and for each pipeline the instances it uses.
//!
//! Building never connects (constructors only validate), so `golconde check` runs exactly
//! this. A piece that cannot be built takes down only the pipelines that use it.

use std::{
    collections::BTreeMap,
    fmt,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use abi_stable::std_types::RResult;

use abi_stable::std_types::{RStr, RString};
use golconde_plugin_api::{
    abi::{Constructor, DatabaseBox, HostContext, PluginKind, ProcessorBox, TransportBox},
    ext::{construct::Built, HostServices},
    ErrorKind, PluginError,
};

use crate::{
    config::{settings_json, ConfigFile, Connection, PipelineConfig},
    loader::{PluginInfo, Registry},
    logging,
    tables::AllowedTables,
};

/// A plugin instance and what it was built from, so that it can be built again.
///
/// A plugin that panicked may have left its instance in any state, so the instance is
/// replaced before it serves another call ([`Instance::rebuild`]). Callers hold a
/// [`Current`] for the length of a call; one that saw a panic asks for a rebuild of that
/// very generation, so that several threads seeing the same panic rebuild it once.
pub struct Instance<T> {
    /// The section's name (`rabbit` for `[transports.rabbit]`).
    pub name: String,
    pub plugin: PluginInfo,
    recipe: Recipe,
    current: Mutex<Current<T>>,
}

/// One build of an instance.
pub struct Current<T> {
    generation: u64,
    value: Arc<T>,
}

impl<T> Clone for Current<T> {
    fn clone(&self) -> Self {
        Current {
            generation: self.generation,
            value: self.value.clone(),
        }
    }
}

impl<T> std::ops::Deref for Current<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> Instance<T> {
    /// Whether `other` was built from the same section by the same plugin library: a
    /// reload keeps the running one of the two, connections and all.
    pub fn same_build(&self, other: &Instance<T>) -> bool {
        self.name == other.name
            && self.plugin.file == other.plugin.file
            && self.plugin.name == other.plugin.name
            && self.recipe.settings == other.recipe.settings
            && self.recipe.config_dir == other.recipe.config_dir
    }
}

impl<T: Kind> Instance<T> {
    /// The instance as it is now.
    pub fn get(&self) -> Current<T> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces `broken` (which panicked) with a new build, unless another caller already
    /// did. If the plugin cannot be built again the old instance stays, and the error is
    /// returned: the caller backs off and tries again.
    pub fn rebuild(&self, broken: &Current<T>) -> Result<(), PluginError> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.generation != broken.generation {
            return Ok(());
        }
        let value = self.recipe.build::<T>()?;
        tracing::warn!(
            "plugin `{}` of `{}` panicked; its instance was built anew",
            self.plugin.name,
            self.name
        );
        *current = Current {
            generation: current.generation + 1,
            value: Arc::new(value),
        };
        Ok(())
    }
}

/// How to build a plugin instance, and build it again after it panicked.
#[derive(Clone)]
pub struct Recipe {
    pub plugin: PluginInfo,
    /// The instance's name: the section's, or for a processor its pipeline's.
    pub instance: String,
    /// The plugin's section, as JSON text.
    pub settings: String,
    /// The configuration file's folder, absolute: what relative paths in `settings` mean.
    pub config_dir: PathBuf,
}

impl Recipe {
    /// Builds the instance: through `golconde.construct` 1 (ABI 1.1) when the plugin has it,
    /// handing over the host's services, else through its ABI 1.0 constructor.
    pub fn build<T: Kind>(&self) -> Result<T, PluginError> {
        let json = RStr::from_str(&self.settings);
        let context = HostContext {
            instance: RString::from(self.instance.as_str()),
            log: logging::sink_for(&self.plugin.name, &self.instance),
        };
        let Some(construct) = self.plugin.construct_v1 else {
            return T::construct_v0(self.plugin.constructor, json, context)
                .expect("the registry returned a plugin of the kind asked for")
                .into_result();
        };
        let services = HostServices {
            config_dir: RString::from(self.config_dir.to_string_lossy().as_ref()),
            log_filter: logging::filter_for_plugins(),
            library_log: logging::library_sink_for(&self.plugin.name),
        };
        let built = (construct.construct)(json, context, &services).into_result()?;
        T::from_v1(built).ok_or_else(|| {
            PluginError::new(
                ErrorKind::Panic,
                format!(
                    "{} plugin `{}` built an instance of another kind",
                    self.plugin.kind, self.plugin.name
                ),
            )
        })
    }
}

/// The three kinds of instance, built alike.
pub trait Kind: Sized {
    /// By the ABI 1.0 constructor; `None` if it is of another kind.
    fn construct_v0(
        constructor: Constructor,
        json: RStr<'_>,
        context: HostContext,
    ) -> Option<RResult<Self, PluginError>>;

    /// What `golconde.construct` built, if it is of this kind.
    fn from_v1(built: Built) -> Option<Self>;
}

/// Implements [`Kind`] for the box of one kind: the same variant name in [`Constructor`]
/// and [`Built`].
macro_rules! kind {
    ($box:ty, $variant:ident) => {
        impl Kind for $box {
            fn construct_v0(
                c: Constructor,
                json: RStr<'_>,
                context: HostContext,
            ) -> Option<RResult<Self, PluginError>> {
                match c {
                    Constructor::$variant(f) => Some(f(json, context)),
                    _ => None,
                }
            }

            fn from_v1(built: Built) -> Option<Self> {
                match built {
                    Built::$variant(b) => Some(b),
                    _ => None,
                }
            }
        }
    };
}

kind!(TransportBox, Transport);
kind!(ProcessorBox, Processor);
kind!(DatabaseBox, Database);

/// A pipeline with every piece it needs.
pub struct PipelineParts {
    pub config: PipelineConfig,
    pub transport: Arc<Instance<TransportBox>>,
    pub database: Arc<Instance<DatabaseBox>>,
    pub processor: Recipe,
    pub dead_letter: Option<(Arc<Instance<TransportBox>>, String)>,
    pub fan_out: Vec<(Arc<Instance<TransportBox>>, String)>,
}

/// Something that could not be built, with where it is declared.
#[derive(Debug, Clone)]
pub struct Problem {
    pub location: String,
    pub subject: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.location, self.subject, self.message)
    }
}

/// Everything built from one configuration file.
pub struct Assembly {
    pub transports: BTreeMap<String, Arc<Instance<TransportBox>>>,
    pub databases: BTreeMap<String, Arc<Instance<DatabaseBox>>>,
    pub pipelines: Vec<PipelineParts>,
    pub problems: Vec<Problem>,
}

/// The connection instances pipelines are running on, by section name.
#[derive(Default, Clone)]
pub struct Connections {
    pub transports: BTreeMap<String, Arc<Instance<TransportBox>>>,
    pub databases: BTreeMap<String, Arc<Instance<DatabaseBox>>>,
}

impl Connections {
    /// Those `pipelines` use.
    pub fn of<'a>(pipelines: impl IntoIterator<Item = &'a PipelineParts>) -> Connections {
        let mut used = Connections::default();
        for p in pipelines {
            let targets = p.dead_letter.iter().chain(&p.fan_out).map(|(t, _)| t);
            for t in std::iter::once(&p.transport).chain(targets) {
                used.transports.insert(t.name.clone(), t.clone());
            }
            used.databases
                .insert(p.database.name.clone(), p.database.clone());
        }
        used
    }
}

/// `built`, or the running instance of the same build in its place.
fn reuse<T>(
    built: &Arc<Instance<T>>,
    running: &BTreeMap<String, Arc<Instance<T>>>,
) -> Arc<Instance<T>> {
    match running.get(&built.name) {
        Some(old) if old.same_build(built) => old.clone(),
        _ => built.clone(),
    }
}

impl Assembly {
    /// Puts the running instances of `running` in place of those built anew from the same
    /// sections, so that pipelines started now share connections with those that run on.
    pub fn reuse(&mut self, running: &Connections) {
        for t in self.transports.values_mut() {
            *t = reuse(t, &running.transports);
        }
        for d in self.databases.values_mut() {
            *d = reuse(d, &running.databases);
        }
        for p in &mut self.pipelines {
            p.transport = reuse(&p.transport, &running.transports);
            p.database = reuse(&p.database, &running.databases);
            for (t, _) in p.dead_letter.iter_mut().chain(&mut p.fan_out) {
                *t = reuse(t, &running.transports);
            }
        }
    }

    /// Pipeline `name` alone, with its connections: what its own process builds.
    pub fn build_pipeline(file: &ConfigFile, registry: &Registry, name: &str) -> Assembly {
        Assembly::build_selected(file, registry, |p| p.name == name, false)
    }

    /// Everything the file declares, used or not: what `golconde check` builds.
    pub fn build(file: &ConfigFile, registry: &Registry) -> Assembly {
        Assembly::build_selected(file, registry, |_| true, true)
    }

    /// The pipelines `keep` keeps, and the connections they use (or every connection, with
    /// `all_connections`): the daemon builds those of thread isolation, a pipeline's own
    /// process its own.
    pub fn build_selected(
        file: &ConfigFile,
        registry: &Registry,
        keep: impl Fn(&PipelineConfig) -> bool,
        all_connections: bool,
    ) -> Assembly {
        let kept: Vec<&toml::Spanned<PipelineConfig>> = file
            .config
            .pipelines
            .iter()
            .filter(|p| keep(p.get_ref()))
            .collect();
        let used_transport = |name: &String| {
            all_connections
                || kept.iter().any(|p| {
                    let p = p.get_ref();
                    p.transport == *name
                        || p.dead_letter.as_ref().is_some_and(|t| t.transport == *name)
                        || p.fan_out.iter().any(|t| t.transport == *name)
                })
        };
        let used_database =
            |name: &String| all_connections || kept.iter().any(|p| p.get_ref().database == *name);
        let mut problems = Vec::new();
        let transports = build_connections(
            file,
            &file.config.transports,
            used_transport,
            "transports",
            PluginKind::Transport,
            registry,
            &mut problems,
        );
        let databases = build_connections(
            file,
            &file.config.databases,
            used_database,
            "databases",
            PluginKind::Database,
            registry,
            &mut problems,
        );

        let mut pipelines = Vec::new();
        for section in kept {
            let location = file.locate(section).to_string();
            let p = section.get_ref();
            let subject = format!("pipeline `{}`", p.name);
            let mut missing = Vec::new();
            let mut need_transport = |name: &str| {
                let found = transports.get(name).cloned();
                let named = format!("transport `{name}`");
                // A transport named for the source and for dead letters is one problem.
                if found.is_none() && !missing.contains(&named) {
                    missing.push(named);
                }
                found
            };
            let transport = need_transport(&p.transport);
            let dead_letter = p
                .dead_letter
                .as_ref()
                .and_then(|t| Some((need_transport(&t.transport)?, t.queue.clone())));
            let fan_out: Vec<_> = p
                .fan_out
                .iter()
                .filter_map(|t| Some((need_transport(&t.transport)?, t.queue.clone())))
                .collect();
            let database = databases.get(&p.database).cloned();
            if database.is_none() {
                missing.push(format!("database `{}`", p.database));
            }
            let processor = build_processor(file, p, registry);
            if let Err(message) = &processor {
                problems.push(Problem {
                    location: location.clone(),
                    subject: format!("{subject}: processor `{}`", p.processor.plugin),
                    message: message.clone(),
                });
            }
            if !missing.is_empty() {
                problems.push(Problem {
                    location,
                    subject,
                    message: format!(
                        "not started because {} could not be built (see above)",
                        missing.join(" and ")
                    ),
                });
                continue;
            }
            let (Some(transport), Some(database), Ok((processor, _))) =
                (transport, database, processor)
            else {
                continue;
            };
            pipelines.push(PipelineParts {
                config: p.clone(),
                transport,
                database,
                processor,
                dead_letter,
                fan_out,
            });
        }
        Assembly {
            transports,
            databases,
            pipelines,
            problems,
        }
    }
}

fn build_connections<T: Kind>(
    file: &ConfigFile,
    sections: &BTreeMap<String, toml::Spanned<Connection>>,
    used: impl Fn(&String) -> bool,
    table: &str,
    kind: PluginKind,
    registry: &Registry,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Arc<Instance<T>>> {
    let mut built = BTreeMap::new();
    for (name, section) in sections.iter().filter(|(name, _)| used(name)) {
        match build_connection(file, name, section, table, kind, registry) {
            Ok(instance) => {
                built.insert(name.clone(), Arc::new(instance));
            }
            Err(problem) => problems.push(problem),
        }
    }
    built
}

/// Builds the transport `name` alone, for commands that need no pipeline.
pub fn build_transport(
    file: &ConfigFile,
    registry: &Registry,
    name: &str,
) -> Result<Instance<TransportBox>, Problem> {
    let transports = &file.config.transports;
    let section = transports.get(name).ok_or_else(|| Problem {
        location: file.path.display().to_string(),
        subject: format!("transport `{name}`"),
        message: format!(
            "not declared; declared transports: [{}]",
            transports.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
    })?;
    build_connection(
        file,
        name,
        section,
        "transports",
        PluginKind::Transport,
        registry,
    )
}

fn build_connection<T: Kind>(
    file: &ConfigFile,
    name: &str,
    section: &toml::Spanned<Connection>,
    table: &str,
    kind: PluginKind,
    registry: &Registry,
) -> Result<Instance<T>, Problem> {
    let connection = section.get_ref();
    let problem = |message: String| Problem {
        location: file.locate(section).to_string(),
        subject: format!("[{table}.{name}] (plugin `{}`)", connection.plugin),
        message,
    };
    let plugin = registry
        .require(kind, &connection.plugin)
        .map_err(|unknown| problem(unknown.to_string()))?;
    let recipe = Recipe {
        plugin: plugin.clone(),
        instance: name.to_string(),
        settings: settings_json(&connection.settings),
        config_dir: file.dir(),
    };
    let value = recipe
        .build::<T>()
        .map_err(|e| problem(describe_build_error(&e)))?;
    Ok(Instance {
        name: name.to_string(),
        plugin: plugin.clone(),
        recipe,
        current: Mutex::new(Current {
            generation: 0,
            value: Arc::new(value),
        }),
    })
}

fn build_processor(
    file: &ConfigFile,
    p: &PipelineConfig,
    registry: &Registry,
) -> Result<(Recipe, ProcessorBox), String> {
    let plugin = registry
        .require(PluginKind::Processor, &p.processor.plugin)
        .map_err(|e| e.to_string())?;
    let mut settings = p.processor.settings.clone();
    // The processor picks the table of a message that names none, and may check the
    // allowed ones early; the host enforces `tables` again on every change it applies.
    if let Some(table) = &p.table {
        settings.insert("table".into(), toml::Value::String(table.clone()));
    }
    // With wildcards only the host can tell; the processor then checks nothing early.
    if let Some(exact) = allowed_tables(p).exact_only() {
        settings.insert(
            "tables".into(),
            toml::Value::Array(exact.into_iter().map(toml::Value::String).collect()),
        );
    }
    let recipe = Recipe {
        plugin: plugin.clone(),
        instance: p.name.clone(),
        settings: settings_json(&settings),
        config_dir: file.dir(),
    };
    let instance = recipe
        .build::<ProcessorBox>()
        .map_err(|e| describe_build_error(&e))?;
    Ok((recipe, instance))
}

/// The tables a pipeline may write: `tables`, or else `table` alone.
pub fn allowed_tables(p: &PipelineConfig) -> AllowedTables {
    AllowedTables::new(p.table.as_deref(), &p.tables)
}

fn describe_build_error(e: &PluginError) -> String {
    match e.kind {
        ErrorKind::Config => {
            format!("the plugin refused its configuration: {}", e.message)
        }
        _ => format!("the plugin could not be built: {e}"),
    }
}

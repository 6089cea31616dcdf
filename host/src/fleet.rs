//! The pipelines a daemon runs, and how a new configuration takes their place without a
//! restart.
//!
//! A reload (SIGHUP, `golconde reload`) reads the file again and compares each pipeline's
//! [`Spec`] (its section, where it runs, and the sections of every connection it uses)
//! with the running one's. Pipelines whose spec is the same are not touched: their threads,
//! consumers and sessions run on. The others are drained and stopped (removed, changed)
//! and started (added, changed), a changed one only once its old threads have finished, so
//! that two consumers of one pipeline never overlap and rows keep their order. Connection
//! instances built from an unchanged section are shared with the new pipelines rather than
//! built again ([`Assembly::reuse`]).
//!
//! A file that would not pass `golconde check` is refused as a whole and nothing changes.
//! Depends on the assembling and running modules; knows nothing of signals or HTTP.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::{
    assemble::{Assembly, Connections, PipelineParts},
    config::{ConfigFile, Connection, Isolation, PipelineConfig},
    loader::Registry,
    logging,
    pipeline::RunningPipeline,
    pool::Shutdown,
    stats::Stats,
    supervise::{ChildSpec, Supervisor},
};

/// What decides whether a running pipeline must be restarted to match the file.
#[derive(Debug, PartialEq)]
pub struct Spec {
    config: PipelineConfig,
    isolation: Isolation,
    /// The sections of the transports and the database it uses, by table and name.
    connections: Vec<(&'static str, String, Option<Connection>)>,
}

impl Spec {
    fn of(file: &ConfigFile, p: &PipelineConfig) -> Spec {
        let transport = |name: &str| {
            (
                "transports",
                name.to_string(),
                file.config
                    .transports
                    .get(name)
                    .map(|s| s.get_ref().clone()),
            )
        };
        let mut connections: Vec<_> = std::iter::once(p.transport.as_str())
            .chain(p.dead_letter.iter().map(|t| t.transport.as_str()))
            .chain(p.fan_out.iter().map(|t| t.transport.as_str()))
            .map(transport)
            .collect();
        connections.push((
            "databases",
            p.database.clone(),
            file.config
                .databases
                .get(&p.database)
                .map(|s| s.get_ref().clone()),
        ));
        Spec {
            config: p.clone(),
            isolation: file.isolation(p),
            connections,
        }
    }
}

/// One pipeline as it runs.
struct Member {
    spec: Spec,
    /// Stops this pipeline alone; the daemon's shutdown stops it too.
    stop: Shutdown,
    run: Run,
}

enum Run {
    /// In this process, with the connection instances it uses.
    Threads(RunningPipeline, Connections),
    /// In a process of its own.
    Process(Supervisor),
}

impl Member {
    fn is_finished(&self) -> bool {
        match &self.run {
            Run::Threads(p, _) => p.is_finished(),
            Run::Process(s) => s.is_finished(),
        }
    }

    fn join(self) -> Result<(), String> {
        match self.run {
            Run::Threads(p, _) => p.join(),
            Run::Process(s) => s.join(),
        }
    }
}

/// What a reload did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub untouched: usize,
    /// Pipelines that could not be started, and why.
    pub failed: Vec<String>,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |names: &[String]| {
            if names.is_empty() {
                "none".to_string()
            } else {
                format!("`{}`", names.join("`, `"))
            }
        };
        write!(
            f,
            "added {}; removed {}; restarted with new settings {}; {} untouched",
            list(&self.added),
            list(&self.removed),
            list(&self.changed),
            self.untouched
        )?;
        if !self.failed.is_empty() {
            write!(f, "; not started: {}", self.failed.join("; "))?;
        }
        Ok(())
    }
}

/// Every pipeline of the daemon.
pub struct Fleet {
    path: PathBuf,
    cli_dirs: Vec<PathBuf>,
    shutdown: Shutdown,
    stats: Stats,
    grace: Duration,
    /// In the file's order.
    members: BTreeMap<String, Member>,
    order: Vec<String>,
}

impl Fleet {
    /// Starts every pipeline of `file`. Problems building some pieces are logged and cost
    /// only the pipelines that use them.
    pub fn start(
        file: &ConfigFile,
        path: &Path,
        cli_dirs: Vec<PathBuf>,
        shutdown: &Shutdown,
        stats: Stats,
    ) -> Result<Fleet, String> {
        let mut fleet = Fleet {
            path: path.to_path_buf(),
            cli_dirs,
            shutdown: shutdown.clone(),
            stats,
            grace: Duration::from_millis(file.config.shutdown_grace_ms),
            members: BTreeMap::new(),
            order: Vec::new(),
        };
        let threaded = file
            .config
            .pipelines
            .iter()
            .filter(|p| file.isolation(p.get_ref()) == Isolation::Thread)
            .count();
        let mut parts = Vec::new();
        let mut problems = Vec::new();
        if threaded > 0 {
            let registry = Registry::discover(&fleet.search_path(file));
            // With every pipeline here, every declared connection is built (and a broken
            // one reported), as `check` does; otherwise only what these pipelines use.
            let everything = threaded == file.config.pipelines.len();
            let built = Assembly::build_selected(
                file,
                &registry,
                |p| file.isolation(p) == Isolation::Thread,
                everything,
            );
            for problem in &built.problems {
                tracing::error!("{problem}");
            }
            parts = built.pipelines;
            problems = built.problems;
        }
        let names: Vec<String> = file
            .config
            .pipelines
            .iter()
            .map(|p| p.get_ref().name.clone())
            .collect();
        if let Some(failure) = fleet.start_named(file, parts, &names).into_iter().next() {
            return Err(failure);
        }
        // Shown on the dashboard as stopped, with the reason the log gave.
        for name in names.iter().filter(|n| !fleet.members.contains_key(*n)) {
            let subject = format!("pipeline `{name}`");
            let why = problems
                .iter()
                .find(|p| p.subject.starts_with(&subject))
                .map_or_else(
                    || format!("{subject}: not started; see the log"),
                    ToString::to_string,
                );
            fleet.stats.register(name).not_started(&why);
        }
        fleet.order = names;
        Ok(fleet)
    }

    fn search_path(&self, file: &ConfigFile) -> Vec<PathBuf> {
        crate::search_path(self.cli_dirs.clone(), Some(file))
    }

    /// Starts the pipelines of `file` named in `names` (threaded ones from `parts`); what
    /// could not start, as messages.
    fn start_named(
        &mut self,
        file: &ConfigFile,
        parts: Vec<PipelineParts>,
        names: &[String],
    ) -> Vec<String> {
        let mut failures = Vec::new();
        let mut parts: BTreeMap<String, PipelineParts> = parts
            .into_iter()
            .map(|p| (p.config.name.clone(), p))
            .collect();
        let config_path = std::path::absolute(&self.path).unwrap_or_else(|_| self.path.clone());
        for section in &file.config.pipelines {
            let p = section.get_ref();
            if !names.contains(&p.name) {
                continue;
            }
            let isolation = file.isolation(p);
            let built = parts.remove(&p.name);
            if isolation == Isolation::Thread && built.is_none() {
                // Its pieces could not be built: logged with the assembly's problems.
                continue;
            }
            let stop = self.shutdown.child();
            // A restarted pipeline counts on from where it was.
            let stats = self
                .stats
                .named(&p.name)
                .unwrap_or_else(|| self.stats.register(&p.name));
            let run = match isolation {
                Isolation::Thread => {
                    let parts = built.expect("checked above");
                    let used = Connections::of([&parts]);
                    RunningPipeline::start(parts, &stop, stats.clone(), None)
                        .map(|running| Run::Threads(running, used))
                        .map_err(|e| format!("starting the threads of pipeline `{}`: {e}", p.name))
                }
                Isolation::Process => {
                    let spec = ChildSpec {
                        pipeline: p.name.clone(),
                        config: config_path.clone(),
                        plugin_dirs: self.cli_dirs.clone(),
                        retry: p.retry,
                        memory_limit_mb: p.memory_limit_mb,
                        grace: self.grace,
                        log_format: file.config.log.format,
                    };
                    Supervisor::start(spec, &stop, stats.clone())
                        .map(Run::Process)
                        .map_err(|e| {
                            format!("starting the supervisor of pipeline `{}`: {e}", p.name)
                        })
                }
            };
            match run {
                Ok(run) => {
                    self.members.insert(
                        p.name.clone(),
                        Member {
                            spec: Spec::of(file, p),
                            stop,
                            run,
                        },
                    );
                }
                Err(e) => failures.push(e),
            }
        }
        failures
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn in_processes(&self) -> usize {
        self.members
            .values()
            .filter(|m| matches!(m.run, Run::Process(_)))
            .count()
    }

    pub fn all_finished(&self) -> bool {
        self.members.values().all(Member::is_finished)
    }

    /// The connection instances the running pipelines of this process use.
    fn connections(&self) -> Connections {
        let mut all = Connections::default();
        for member in self.members.values() {
            if let Run::Threads(_, used) = &member.run {
                all.transports.extend(used.transports.clone());
                all.databases.extend(used.databases.clone());
            }
        }
        all
    }

    /// Reads the file again and makes the running pipelines match it. `Err` (with nothing
    /// changed) when the file does not pass `golconde check`.
    pub fn reload(&mut self) -> Result<Outcome, String> {
        let file = ConfigFile::load(&self.path).map_err(|e| e.to_string())?;
        let registry = Registry::discover(&self.search_path(&file));
        // What `check` builds and reports: the whole file, every connection.
        let mut assembly = Assembly::build(&file, &registry);
        let mut problems: Vec<String> = assembly.problems.iter().map(ToString::to_string).collect();
        if let Err(e) = logging::filter(&file.config.log) {
            problems.push(format!("{}: {e}", file.path.display()));
        }
        if file.config.pipelines.is_empty() {
            problems.push(format!(
                "{}: it declares no pipeline; stop the daemon to run none",
                file.path.display()
            ));
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        assembly.reuse(&self.connections());

        let mut outcome = Outcome::default();
        let wanted: Vec<String> = file
            .config
            .pipelines
            .iter()
            .map(|p| p.get_ref().name.clone())
            .collect();
        for name in &self.order {
            if !wanted.contains(name) {
                outcome.removed.push(name.clone());
            }
        }
        for section in &file.config.pipelines {
            let p = section.get_ref();
            match self.members.get(&p.name) {
                None => outcome.added.push(p.name.clone()),
                // A pipeline that stopped for good (a fatal error) is started again too.
                Some(m) if m.spec != Spec::of(&file, p) || m.is_finished() => {
                    outcome.changed.push(p.name.clone())
                }
                Some(_) => outcome.untouched += 1,
            }
        }
        // Instances built for pipelines that run on, or in processes of their own, are
        // dropped unused here: building never connects.
        let (added, rest): (Vec<_>, Vec<_>) = assembly
            .pipelines
            .into_iter()
            .filter(|p| file.isolation(&p.config) == Isolation::Thread)
            .partition(|p| outcome.added.contains(&p.config.name));
        let changed: Vec<_> = rest
            .into_iter()
            .filter(|p| outcome.changed.contains(&p.config.name))
            .collect();
        self.grace = Duration::from_millis(file.config.shutdown_grace_ms);
        // New pipelines need not wait for old ones.
        outcome
            .failed
            .extend(self.start_named(&file, added, &outcome.added));

        let going: Vec<String> = outcome
            .removed
            .iter()
            .chain(&outcome.changed)
            .cloned()
            .collect();
        self.stop_and_join(&going);
        for name in &outcome.removed {
            self.stats.remove(name);
        }
        outcome
            .failed
            .extend(self.start_named(&file, changed, &outcome.changed));
        self.order = wanted;
        Ok(outcome)
    }

    /// Drains and stops the pipelines named, and waits for them: a changed pipeline's new
    /// threads must not consume beside its old ones.
    fn stop_and_join(&mut self, names: &[String]) {
        for name in names {
            if let Some(member) = self.members.get(name) {
                member.stop.trigger();
            }
        }
        let started = Instant::now();
        let mut told = Duration::ZERO;
        while names
            .iter()
            .filter_map(|n| self.members.get(n))
            .any(|m| !m.is_finished())
        {
            if self.shutdown.is_triggered() {
                break;
            }
            if started.elapsed() >= told + Duration::from_secs(10) {
                told = started.elapsed();
                tracing::warn!(
                    "reload: still waiting, after {:.0?}, for the batches in flight of \
                     pipelines `{}` to finish",
                    told,
                    names.join("`, `")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for name in names {
            let Some(member) = self.members.remove(name) else {
                continue;
            };
            if !member.is_finished() {
                // Shutting down: the daemon's own wait takes it from here.
                self.members.insert(name.clone(), member);
                continue;
            }
            if let Err(e) = member.join() {
                tracing::error!("pipeline `{name}` had stopped: {e}");
            }
        }
    }

    /// Waits for every pipeline (after the daemon's shutdown, or when all stopped on their
    /// own); how many ended on an error.
    pub fn join(self) -> usize {
        let mut failed = 0;
        for (name, member) in self.members {
            if let Err(e) = member.join() {
                failed += 1;
                tracing::error!("pipeline `{name}` stopped: {e}");
            }
        }
        failed
    }
}

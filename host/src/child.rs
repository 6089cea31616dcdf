//! A pipeline in a process of its own: what `golconde run-pipeline` does, started by the
//! daemon's supervisor (`crate::supervise`) for a pipeline with `isolation = "process"`.
//!
//! The child loads the plugins its pipeline needs, runs it exactly as the daemon runs a
//! pipeline in a thread, and talks to its parent over standard output, one line each (the
//! log goes to standard error, which the parent passes on):
//!
//! - `B <batch> <hash>,<hash>,…`: a batch is about to be processed and applied, with the
//!   hashes of its messages' bodies. Written and flushed *before* the work, so that when a
//!   plugin crashes the process the parent knows what was in flight.
//! - `E <batch>`: the batch is done with (acknowledged, or left to the broker); the
//!   counters follow at once.
//! - `S <json>`: the pipeline's counters ([`PipelineStats::report`]), after each batch and
//!   now and then.
//! - `X <text>`: why the child is about to exit on an error of its own (not a crash).
//!
//! What the parent counted comes back on standard input, one `<hash>:<crashes>:<how>` line
//! per message, as many as `GOLCONDE_SUSPECTS` says (an environment variable could not hold
//! thousands): those messages are processed alone, or set aside past the limit.
//!
//! Exit status: 0 after a requested stop; [`EXIT_CANNOT_START`] when the pipeline cannot be
//! built (its configuration, a missing plugin), which a restart would not change;
//! [`EXIT_STOPPED`] when the pipeline stopped on a message it can neither apply nor set
//! aside. Anything else, a signal above all, is a crash.

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use golconde_plugin_api::{Delivery, Message};

use crate::{
    assemble::Assembly,
    config::ConfigFile,
    loader::Registry,
    logging,
    pipeline::{RunningPipeline, Watcher},
    pool::Shutdown,
    stats::PipelineStats,
};

/// The pipeline cannot be built; starting it again would not help.
pub const EXIT_CANNOT_START: u8 = 3;
/// The pipeline stopped on a message it can neither apply nor set aside.
pub const EXIT_STOPPED: u8 = 4;
/// The environment variable saying how many lines of crash counts come on standard input.
pub const SUSPECTS_VAR: &str = "GOLCONDE_SUSPECTS";

/// How often the counters go to the parent.
const REPORT_EVERY: Duration = Duration::from_millis(250);

/// Runs pipeline `name` of the file at `path` until the parent stops it.
pub fn run(path: &Path, name: &str, search: impl FnOnce(&ConfigFile) -> Vec<PathBuf>) -> ExitCode {
    let channel = Channel::default();
    let file = match ConfigFile::load(path) {
        Ok(file) => file,
        Err(e) => return channel.cannot_start(&e.to_string()),
    };
    if let Err(e) = logging::init(&file.config.log) {
        return channel.cannot_start(&format!("{}: {e}", path.display()));
    }
    let _span = tracing::info_span!("pipeline", name).entered();
    let shutdown = Shutdown::default();
    // SIGHUP is for the daemon, which reloads; here it is noted and ignored.
    let signals = match crate::control::Signals::watch(shutdown.clone()) {
        Ok(signals) => signals,
        Err(e) => return channel.cannot_start(&format!("{e:#}")),
    };
    let registry = Registry::discover(&search(&file));
    let assembly = Assembly::build_pipeline(&file, &registry, name);
    if let Some(problem) = assembly.problems.first() {
        return channel.cannot_start(&problem.to_string());
    }
    let Some(parts) = assembly.pipelines.into_iter().next() else {
        return channel.cannot_start(&format!("{}: no pipeline named `{name}`", path.display()));
    };
    let stats = PipelineStats::new(name);
    let watcher = Arc::new(ChildWatcher {
        channel: channel.clone(),
        suspects: suspects_from_parent(),
        stats: stats.clone(),
    });
    let pipeline = match RunningPipeline::start(parts, &shutdown, stats.clone(), Some(watcher)) {
        Ok(pipeline) => pipeline,
        Err(e) => return channel.cannot_start(&format!("starting the threads of `{name}`: {e}")),
    };
    while !shutdown.is_triggered() && !pipeline.is_finished() {
        channel.line(&format!("S {}", stats.report()));
        shutdown.sleep(REPORT_EVERY);
    }
    let deadline = Instant::now() + Duration::from_millis(file.config.shutdown_grace_ms);
    while !pipeline.is_finished() && Instant::now() < deadline {
        channel.line(&format!("S {}", stats.report()));
        std::thread::sleep(Duration::from_millis(20));
    }
    channel.line(&format!("S {}", stats.report()));
    if !pipeline.is_finished() {
        tracing::warn!(
            "grace period over with batches still in flight; their messages stay on the \
             broker and will be redelivered"
        );
        return ExitCode::SUCCESS;
    }
    let outcome = pipeline.join();
    signals.close();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(fatal) => {
            channel.line(&format!("X {}", one_line(&fatal)));
            ExitCode::from(EXIT_STOPPED)
        }
    }
}

/// Standard output, where the parent reads the child's lines.
#[derive(Clone, Default)]
struct Channel {
    out: Arc<Mutex<()>>,
}

impl Channel {
    /// Writes one line and flushes it: it must be out before a crash can follow.
    fn line(&self, line: &str) {
        let _guard = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }

    fn cannot_start(&self, why: &str) -> ExitCode {
        eprintln!("golconde: error: {why}");
        self.line(&format!("X {}", one_line(why)));
        ExitCode::from(EXIT_CANNOT_START)
    }
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// The hash of a message's body, as the parent counts crashes by it. Only children compute
/// it, so it need only be stable within one binary.
pub fn body_hash(message: &Message) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    message.body.as_slice().hash(&mut hasher);
    hasher.finish()
}

/// The parent's crash counts, by body hash.
type Suspects = HashMap<u64, (u32, String)>;

/// The parent's crash counts: `GOLCONDE_SUSPECTS` lines of standard input.
fn suspects_from_parent() -> Suspects {
    let lines: usize = std::env::var(SUSPECTS_VAR)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let text: String = std::io::stdin()
        .lines()
        .take(lines)
        .map_while(Result::ok)
        .map(|line| line + "\n")
        .collect();
    parse_suspects(&text)
}

/// Reads `<hash>:<crashes>:<how>` lines, skipping what it cannot read.
pub fn parse_suspects(text: &str) -> Suspects {
    text.lines()
        .filter_map(|entry| {
            let mut parts = entry.splitn(3, ':');
            let hash = u64::from_str_radix(parts.next()?, 16).ok()?;
            let crashes = parts.next()?.parse().ok()?;
            let how = parts.next().unwrap_or("a crash").to_string();
            Some((hash, (crashes, how)))
        })
        .collect()
}

/// Writes [`parse_suspects`]' form, one line each.
pub fn format_suspects<'a>(suspects: impl Iterator<Item = (&'a u64, &'a (u32, String))>) -> String {
    suspects
        .map(|(hash, (crashes, how))| {
            format!("{hash:x}:{crashes}:{}\n", how.replace(['\n', '\r'], " "))
        })
        .collect()
}

struct ChildWatcher {
    channel: Channel,
    suspects: Suspects,
    stats: Arc<PipelineStats>,
}

impl Watcher for ChildWatcher {
    fn started(&self, batch: u64, deliveries: &[Delivery]) {
        let mut line = format!("B {batch} ");
        for (i, delivery) in deliveries.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            line.push_str(&format!("{:x}", body_hash(&delivery.message)));
        }
        self.channel.line(&line);
    }

    fn finished(&self, batch: u64) {
        // The counters with it: a crash may come before the next report.
        self.channel
            .line(&format!("E {batch}\nS {}", self.stats.report()));
    }

    fn crashes(&self, message: &Message) -> Option<(u32, String)> {
        if self.suspects.is_empty() {
            return None;
        }
        self.suspects.get(&body_hash(message)).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspects_travel_to_the_child_intact() {
        let mut suspects = Suspects::new();
        suspects.insert(0xdead_beef, (2, "killed by SIGSEGV".into()));
        suspects.insert(7, (1, "exit status 101, with a comma, here".into()));
        suspects.insert(8, (1, "two\nlines".into()));
        let text = format_suspects(suspects.iter());
        let back = parse_suspects(&text);
        assert_eq!(back[&0xdead_beef], (2, "killed by SIGSEGV".to_string()));
        assert_eq!(
            back[&7],
            (1, "exit status 101, with a comma, here".to_string())
        );
        assert_eq!(back[&8], (1, "two lines".to_string()));
        assert!(parse_suspects("").is_empty());
        assert!(parse_suspects("zz:1:x\n:\n5").is_empty());
    }
}

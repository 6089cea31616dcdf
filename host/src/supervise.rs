//! The daemon's side of process isolation: each pipeline with `isolation = "process"` runs
//! in a child process of the same binary (`golconde run-pipeline`, see `crate::child`), and
//! a supervisor thread here starts it, passes its log on, gathers its counters, and starts
//! it again when it dies.
//!
//! A child that dies of a signal or an unexpected exit status is a crash: the supervisor
//! logs the cause in words, counts one crash against every message the child had in flight
//! (from its `B`/`E` lines), hands those counts to the next child (`GOLCONDE_SUSPECTS`),
//! which processes such messages alone and sets one aside once it has been in flight at
//! three crashes, and restarts it after a backoff. A child that cannot start, or that
//! stopped on a message it can neither apply nor set aside, is not restarted: a restart
//! would end the same way.
//!
//! **Invariant:** no child outlives the daemon. Each child asks the kernel to kill it when
//! the thread that started it ends (`PR_SET_PDEATHSIG`, set between fork and exec), and the
//! supervisor thread lives until its child has exited.
//!
//! Depends on: `crate::child` (the line protocol), `crate::stats`, `crate::pool`; `libc` for
//! the calls between fork and exec, and for signals.

use std::{
    collections::{HashMap, VecDeque},
    io::{BufRead, BufReader, Write},
    os::unix::process::{CommandExt, ExitStatusExt},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{mpsc, Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{
    child::{format_suspects, EXIT_CANNOT_START, EXIT_STOPPED, SUSPECTS_VAR},
    config::{LogFormat, RetryConfig},
    pool::{Backoff, Shutdown},
    stats::{PipelineStats, ProcessInfo},
};

/// How many of a dead child's last log lines `/stats` shows.
const KEPT_LINES: usize = 20;
/// A child that dies sooner than this after it started counts towards a crash loop.
const QUICK_DEATH: Duration = Duration::from_secs(10);
/// Quick deaths in a row that make a crash loop.
const LOOPING_AFTER: u32 = 3;
/// A child that lived this long resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(30);
/// The most messages whose crashes are remembered at once: more than a pipeline has in
/// flight with any sane batch size.
const MAX_SUSPECTS: usize = 100_000;

/// How to start a pipeline's process.
pub struct ChildSpec {
    pub pipeline: String,
    pub config: PathBuf,
    pub plugin_dirs: Vec<PathBuf>,
    pub retry: RetryConfig,
    pub memory_limit_mb: Option<u64>,
    /// How long a stopping child may take before it is killed.
    pub grace: Duration,
    /// The log's format, which the child writes too.
    pub log_format: LogFormat,
}

/// A supervisor thread and the pipeline it keeps running.
pub struct Supervisor {
    handle: JoinHandle<Result<(), String>>,
}

impl Supervisor {
    pub fn start(
        spec: ChildSpec,
        shutdown: &Shutdown,
        stats: Arc<PipelineStats>,
    ) -> std::io::Result<Supervisor> {
        let name = spec.pipeline.clone();
        let shutdown = shutdown.clone();
        // The pipeline runs for as long as its supervisor does.
        let alive = stats.running();
        let handle = std::thread::Builder::new()
            .name(format!("{name}/supervise"))
            .spawn(move || {
                let _alive = alive;
                let span = tracing::info_span!("supervise", pipeline = spec.pipeline.as_str());
                let _entered = span.enter();
                supervise(&spec, &shutdown, &stats)
            })?;
        Ok(Supervisor { handle })
    }

    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Waits for the supervisor; why the pipeline stopped for good, if it did on an error.
    pub fn join(self) -> Result<(), String> {
        self.handle
            .join()
            .unwrap_or_else(|_| Err("its supervisor thread panicked".into()))
    }
}

/// What a supervisor remembers across its children.
#[derive(Default)]
struct History {
    /// Crashes per message body hash, and how the last one happened.
    suspects: HashMap<u64, (u32, String)>,
    /// The counters of the children that have ended.
    base: [u64; 8],
    restarts: u64,
    quick_deaths: u32,
}

fn supervise(spec: &ChildSpec, shutdown: &Shutdown, stats: &PipelineStats) -> Result<(), String> {
    let mut history = History::default();
    let mut backoff = Backoff::new(&spec.retry);
    *lock(&stats.process) = Some(ProcessInfo::default());
    loop {
        if shutdown.is_triggered() {
            return Ok(());
        }
        let started = Instant::now();
        let ended = run_child(spec, shutdown, stats, &mut history)?;
        let Ended {
            status,
            in_flight,
            last_lines,
            reason,
        } = ended;
        if shutdown.is_triggered() {
            return Ok(());
        }
        let how = describe(&status);
        match status.code().map(|c| c as u8) {
            Some(EXIT_CANNOT_START) => {
                let why = reason.unwrap_or_else(|| format!("its process {how}"));
                tracing::error!("pipeline `{}` cannot start: {why}", spec.pipeline);
                record_exit(stats, &how, last_lines, false);
                return Err(why);
            }
            Some(EXIT_STOPPED) => {
                let why = reason.unwrap_or_else(|| format!("its process {how}"));
                record_exit(stats, &how, last_lines, false);
                return Err(why);
            }
            _ => {}
        }
        let lived = started.elapsed();
        if lived >= HEALTHY_RUN {
            backoff.reset();
        }
        history.quick_deaths = if lived < QUICK_DEATH {
            history.quick_deaths + 1
        } else {
            0
        };
        for hash in &in_flight {
            if history.suspects.len() >= MAX_SUSPECTS && !history.suspects.contains_key(hash) {
                break;
            }
            let entry = history.suspects.entry(*hash).or_insert((0, String::new()));
            entry.0 += 1;
            entry.1 = how.clone();
        }
        history.restarts += 1;
        let looping = history.quick_deaths >= LOOPING_AFTER;
        record_exit(stats, &how, last_lines, looping);
        if let Some(info) = lock(&stats.process).as_mut() {
            info.restarts = history.restarts;
        }
        let delay = backoff.next_delay();
        let message = format!(
            "pipeline `{}` {how} with {} message(s) in flight; restarting in {delay:.1?}{}",
            spec.pipeline,
            in_flight.len(),
            if looping {
                " (it keeps dying as it starts: see its last log lines in /stats)"
            } else {
                ""
            }
        );
        tracing::error!("{message}");
        stats.error(&message);
        if shutdown.sleep(delay) {
            return Ok(());
        }
    }
}

/// How a child ended.
struct Ended {
    status: ExitStatus,
    /// Hashes of the messages it had in flight.
    in_flight: Vec<u64>,
    last_lines: Vec<String>,
    /// What it said about why it exits, if it did (`X`).
    reason: Option<String>,
}

/// A line from the child's standard output, or its end.
enum Event {
    Line(String),
    Closed,
}

fn run_child(
    spec: &ChildSpec,
    shutdown: &Shutdown,
    stats: &PipelineStats,
    history: &mut History,
) -> Result<Ended, String> {
    let mut child = spawn(spec, &history.suspects)
        .map_err(|e| format!("cannot start the process of `{}`: {e}", spec.pipeline))?;
    let pid = child.id();
    if let Some(info) = lock(&stats.process).as_mut() {
        info.pid = Some(pid);
    }
    let last_lines = Arc::new(Mutex::new(VecDeque::with_capacity(KEPT_LINES)));
    let log = child.stderr.take().map(|stderr| {
        let last_lines = last_lines.clone();
        let (name, format) = (spec.pipeline.clone(), spec.log_format);
        std::thread::spawn(move || pass_log_on(stderr, &name, format, &last_lines))
    });
    let (events, received) = mpsc::channel();
    let reader = child.stdout.take().map(|stdout| {
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if events.send(Event::Line(line)).is_err() {
                    return;
                }
            }
            let _ = events.send(Event::Closed);
        })
    });

    let mut batches: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut counted = [0u64; 8];
    let mut reason = None;
    let mut stop_deadline: Option<Instant> = None;
    let mut closed = false;
    let status = loop {
        if shutdown.is_triggered() && stop_deadline.is_none() {
            signal(pid, libc::SIGTERM);
            stop_deadline = Some(Instant::now() + spec.grace + Duration::from_secs(1));
        }
        if stop_deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            tracing::warn!(
                "the process of `{}` did not stop within the grace period; killing it",
                spec.pipeline
            );
            let _ = child.kill();
        }
        let event = if closed {
            std::thread::sleep(Duration::from_millis(20));
            None
        } else {
            match received.recv_timeout(Duration::from_millis(200)) {
                Ok(event) => Some(event),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => Some(Event::Closed),
            }
        };
        match event {
            Some(Event::Line(line)) => take_line(
                &line,
                stats,
                history,
                &mut batches,
                &mut counted,
                &mut reason,
            ),
            Some(Event::Closed) => closed = true,
            None => {}
        }
        match child.try_wait() {
            Ok(Some(status)) if closed => break status,
            Ok(_) => {}
            Err(e) => {
                return Err(format!(
                    "waiting for the process of `{}`: {e}",
                    spec.pipeline
                ))
            }
        }
    };
    // Whatever it reported last counts: its work is done.
    while let Ok(Event::Line(line)) = received.try_recv() {
        take_line(
            &line,
            stats,
            history,
            &mut batches,
            &mut counted,
            &mut reason,
        );
    }
    if let Some(reader) = reader {
        let _ = reader.join();
    }
    if let Some(log) = log {
        let _ = log.join();
    }
    for (base, counted) in history.base.iter_mut().zip(counted) {
        *base += counted;
    }
    if let Some(info) = lock(&stats.process).as_mut() {
        info.pid = None;
    }
    stats.process_ended();
    let last_lines = lock(&last_lines).iter().cloned().collect();
    Ok(Ended {
        status,
        in_flight: batches.into_values().flatten().collect(),
        last_lines,
        reason,
    })
}

/// Acts on one line of a child's standard output.
fn take_line(
    line: &str,
    stats: &PipelineStats,
    history: &mut History,
    batches: &mut HashMap<u64, Vec<u64>>,
    counted: &mut [u64; 8],
    reason: &mut Option<String>,
) {
    let (kind, rest) = line.split_once(' ').unwrap_or((line, ""));
    match kind {
        "B" => {
            let (id, hashes) = rest.split_once(' ').unwrap_or((rest, ""));
            let Ok(id) = id.parse() else { return };
            let hashes = hashes
                .split(',')
                .filter_map(|h| u64::from_str_radix(h, 16).ok())
                .collect();
            batches.insert(id, hashes);
        }
        "E" => {
            if let Some(hashes) = rest.parse().ok().and_then(|id: u64| batches.remove(&id)) {
                // Through without a crash: not a suspect any more.
                for hash in hashes {
                    history.suspects.remove(&hash);
                }
            }
        }
        "S" => {
            if let Some(now) = stats.absorb(&history.base, rest) {
                *counted = now;
            }
        }
        "X" => *reason = Some(rest.to_string()),
        _ => tracing::debug!("unexpected line from a pipeline's process: {line}"),
    }
}

fn spawn(spec: &ChildSpec, suspects: &HashMap<u64, (u32, String)>) -> std::io::Result<Child> {
    let mut child = start(spec, suspects.len())?;
    // Read by the child before it loads anything; written from here so that no pipe
    // buffer size limits how many there may be.
    if let Some(mut stdin) = child.stdin.take() {
        let text = format_suspects(suspects.iter());
        std::thread::spawn(move || {
            let _ = stdin.write_all(text.as_bytes());
        });
    }
    Ok(child)
}

fn start(spec: &ChildSpec, suspects: usize) -> std::io::Result<Child> {
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    command
        .arg("run-pipeline")
        .arg("--config")
        .arg(&spec.config)
        .arg("--pipeline")
        .arg(&spec.pipeline);
    for dir in &spec.plugin_dirs {
        command.arg("--plugin-dir").arg(dir);
    }
    command
        .env(SUSPECTS_VAR, suspects.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let memory = spec
        .memory_limit_mb
        .map(|mb| mb.saturating_mul(1024 * 1024));
    let parent = std::process::id();
    // SAFETY: between fork and exec only async-signal-safe calls are made: prctl,
    // getppid, setrlimit, _exit.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The daemon died before the request above took effect: nobody to kill us.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            if let Some(bytes) = memory {
                let limit = libc::rlimit {
                    rlim_cur: bytes as libc::rlim_t,
                    rlim_max: bytes as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_DATA, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Passes a child's log lines on to the daemon's standard error, each naming the pipeline
/// (a line from a thread a plugin started has no span to say it), and keeps the last few.
fn pass_log_on(
    stderr: impl std::io::Read,
    pipeline: &str,
    format: LogFormat,
    last_lines: &Mutex<VecDeque<String>>,
) {
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        {
            let mut out = std::io::stderr().lock();
            let _ = writeln!(out, "{}", tagged(&line, pipeline, format));
        }
        let mut last = lock(last_lines);
        if last.len() == KEPT_LINES {
            last.pop_front();
        }
        last.push_back(line);
    }
}

/// A child's log line with the pipeline's name: a `pipeline` field in a JSON line, a
/// `[name]` prefix on a text line that does not name it already.
fn tagged(line: &str, pipeline: &str, format: LogFormat) -> String {
    if format == LogFormat::Json {
        if let Ok(serde_json::Value::Object(mut event)) = serde_json::from_str(line) {
            event
                .entry("pipeline")
                .or_insert_with(|| serde_json::Value::from(pipeline));
            return serde_json::Value::Object(event).to_string();
        }
    }
    if line.contains(&format!("pipeline=\"{pipeline}\""))
        || line.contains(&format!("name=\"{pipeline}\""))
    {
        line.to_string()
    } else {
        format!("[{pipeline}] {line}")
    }
}

fn record_exit(stats: &PipelineStats, how: &str, last_lines: Vec<String>, looping: bool) {
    if let Some(info) = lock(&stats.process).as_mut() {
        info.last_exit = Some(how.to_string());
        info.last_stderr = last_lines;
        info.crash_looping = looping;
    }
}

/// How a process ended, in words: "died of SIGSEGV", "exited with status 101".
pub fn describe(status: &ExitStatus) -> String {
    if let Some(signal) = status.signal() {
        let name = signal_name(signal);
        let core = if status.core_dumped() {
            ", dumping core"
        } else {
            ""
        };
        return format!("died of {name}{core}");
    }
    match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "ended".into(),
    }
}

fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGBUS => "SIGBUS".into(),
        libc::SIGILL => "SIGILL".into(),
        libc::SIGFPE => "SIGFPE".into(),
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGTERM => "SIGTERM".into(),
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTRAP => "SIGTRAP".into(),
        other => format!("signal {other}"),
    }
}

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill takes any pid and signal; the child is ours and not yet reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_described_in_words() {
        assert_eq!(
            describe(&ExitStatus::from_raw(libc::SIGSEGV)),
            "died of SIGSEGV"
        );
        assert_eq!(
            describe(&ExitStatus::from_raw(3 << 8)),
            "exited with status 3"
        );
        assert_eq!(
            describe(&ExitStatus::from_raw(libc::SIGABRT | 0x80)),
            "died of SIGABRT, dumping core"
        );
    }

    #[test]
    fn every_line_of_a_child_names_its_pipeline() {
        let json = tagged(
            r#"{"level":"INFO","fields":{"message":"hi"}}"#,
            "users",
            LogFormat::Json,
        );
        let event: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(event["pipeline"], "users");
        assert_eq!(event["fields"]["message"], "hi");
        assert_eq!(
            tagged(
                "2026 INFO ThreadId(3) lapin: hi",
                "users",
                LogFormat::Pretty
            ),
            "[users] 2026 INFO ThreadId(3) lapin: hi"
        );
        let spanned = r#"2026 INFO users/dispatch/0 worker{pipeline="users" role="dispatch"}: x"#;
        assert_eq!(tagged(spanned, "users", LogFormat::Pretty), spanned);
    }

    #[test]
    fn lines_track_what_is_in_flight_and_clear_suspects_that_pass() {
        let stats = PipelineStats::new("p");
        let mut history = History::default();
        history.suspects.insert(0xa, (1, "died of SIGSEGV".into()));
        let mut batches = HashMap::new();
        let mut counted = [0; 8];
        let mut reason = None;
        let mut take = |line: &str, history: &mut History| {
            take_line(
                line,
                &stats,
                history,
                &mut batches,
                &mut counted,
                &mut reason,
            )
        };
        take("B 0 a,b", &mut history);
        take("B 1 c", &mut history);
        take("E 0", &mut history);
        assert!(history.suspects.is_empty());
        take(
            r#"S {"counters":[5,4,0,1,0,5,2,0],"last_error":null}"#,
            &mut history,
        );
        take("X stopped on message `m`", &mut history);
        assert_eq!(batches.keys().collect::<Vec<_>>(), [&1]);
        assert_eq!(counted, [5, 4, 0, 1, 0, 5, 2, 0]);
        assert_eq!(stats.totals()[0], 5);
        assert_eq!(reason.as_deref(), Some("stopped on message `m`"));
    }
}

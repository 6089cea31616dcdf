//! What the daemon has done, per pipeline, and the HTTP endpoint that shows it.
//!
//! Counters, gauges and histograms are plain atomics bumped by the pipeline's threads (a
//! relaxed add per batch, not per message, on the hot path); readers take them when asked.
//! With `[stats] listen` set, [`serve`] answers `GET /stats` (JSON), `GET /metrics` (the
//! OpenMetrics text format, [`metrics`]), `GET /` (a live dashboard fed by `GET
//! /api/series`: the last minutes of every pipeline, sampled once a second, [`series`]) and
//! `GET /health`. The endpoint is off unless `[stats] listen` is set: a replication daemon
//! should not open ports by surprise; `[stats] token` guards all of it but `/health`.
//!
//! **Invariant:** no row value reaches an HTTP answer: every error text and log line on
//! its way out passes through [`redact`], which keeps names and prose and hides values.
//!
//! Depends on `crate::pool` (the shutdown signal), `prometheus-client` for the exposition
//! format, `tiny_http` for the endpoint.

mod histogram;
mod http;
mod metrics;
mod redact;
mod series;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, SystemTime},
};

pub use http::serve;

use histogram::{Histogram, Snapshot, Tally};
use redact::{redact, redact_log_line};

/// What is known of one pipeline.
#[derive(Default)]
pub struct PipelineStats {
    pub name: String,
    /// Messages taken off the queue.
    pub received: AtomicU64,
    /// Messages whose change committed (duplicates included).
    pub applied: AtomicU64,
    /// Messages skipped by the database as replays of an id it had seen.
    pub duplicates: AtomicU64,
    /// Messages set aside on the dead-letter queue.
    pub dead_lettered: AtomicU64,
    /// Copies published to fan-out queues (one per message and target).
    pub fanned_out: AtomicU64,
    /// Messages acknowledged to the broker.
    pub acknowledged: AtomicU64,
    /// Batches committed.
    pub batches: AtomicU64,
    /// Transient failures retried (database, broker, processor).
    pub retries: AtomicU64,
    /// Messages ready on the source queue, as the transport last told; [`NO_LAG`] while
    /// it has not told (or cannot).
    lag: AtomicU64,
    /// Messages received and not yet acknowledged (nor given back to the broker).
    in_flight: AtomicU64,
    /// Apply time, batch size, message age.
    histograms: Histograms,
    /// The source queue, for the lag's label.
    queue: Mutex<String>,
    /// Threads that run the pipeline here: its workers, or its supervisor.
    runners: AtomicU64,
    /// Database workers alive in this process.
    apply_workers: AtomicU64,
    /// Database workers alive in the pipeline's own process, as it last reported.
    child_workers: AtomicU64,
    /// Whether anything ever ran it: with nothing running, it is stopped only then.
    started: AtomicBool,
    /// When the pipeline last showed that it works (a batch committed, its consumer
    /// opened), in milliseconds since 1970; an error later than that means it is retrying.
    progress_ms: AtomicU64,
    last_error: Mutex<Option<(SystemTime, String)>>,
    /// For a pipeline in a process of its own: that process, as its supervisor sees it.
    pub process: Mutex<Option<ProcessInfo>>,
    /// The histograms the current child last reported, so that only growth is added.
    absorbed: Mutex<Option<Vec<Snapshot>>>,
}

/// What `/stats` shows of a pipeline's own process.
#[derive(Clone, Debug, Default)]
pub struct ProcessInfo {
    /// The running child, if one is.
    pub pid: Option<u32>,
    /// How often it was started again after it ended on its own.
    pub restarts: u64,
    /// How the last child ended ("killed by SIGSEGV", "exit status 3").
    pub last_exit: Option<String>,
    /// Children keep dying soon after they start.
    pub crash_looping: bool,
    /// The last lines the last dead child wrote to its log.
    pub last_stderr: Vec<String>,
}

/// A pipeline's histograms.
pub struct Histograms {
    /// Seconds a database worker took to apply its share of a batch, retries included.
    pub apply: Histogram,
    /// Messages per batch received.
    pub batch_size: Histogram,
    /// Seconds from a message's `timestamp` header to its acknowledgement.
    pub age: Histogram,
}

impl Default for Histograms {
    fn default() -> Self {
        Histograms {
            apply: Histogram::new(&histogram::APPLY_SECONDS),
            batch_size: Histogram::new(&histogram::BATCH_MESSAGES),
            age: Histogram::new(&histogram::AGE_SECONDS),
        }
    }
}

impl Histograms {
    fn all(&self) -> [&Histogram; 3] {
        [&self.apply, &self.batch_size, &self.age]
    }
}

/// Where a pipeline stands, as the dashboard and `/stats` say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Started, and not yet shown to work.
    Starting,
    Running,
    /// Its latest error is newer than its latest progress: it is backing off and trying
    /// again (a broker or database away, a process restarting).
    Retrying,
    /// Its own process keeps dying as it starts.
    CrashLooping,
    /// Nothing runs it any more (stopped on an error, or shut down).
    Stopped,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Starting,
        State::Running,
        State::Retrying,
        State::CrashLooping,
        State::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Retrying => "retrying",
            State::CrashLooping => "crash-looping",
            State::Stopped => "stopped",
        }
    }
}

/// Counts a thread that runs a pipeline while it lives: dropped with the thread's closure
/// when the thread ends, however it ends.
pub struct RunGuard {
    stats: Arc<PipelineStats>,
    database_worker: bool,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.stats.runners.fetch_sub(1, Ordering::Relaxed);
        if self.database_worker {
            self.stats.apply_workers.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// How far ahead of this host's clock a message's `timestamp` may be and still count.
const FUTURE_TOLERANCE_S: f64 = 300.0;

/// The lag of a pipeline whose transport has not told it.
const NO_LAG: u64 = u64::MAX;

/// The counters, in the order [`PipelineStats::report`] sends them: name and help.
const COUNTERS: [(&str, &str); 8] = [
    ("received", "messages taken off the queue"),
    ("applied", "messages whose change committed"),
    ("duplicates", "messages skipped as replays"),
    (
        "dead_lettered",
        "messages set aside on the dead-letter queue",
    ),
    ("fanned_out", "copies published to fan-out queues"),
    ("acknowledged", "messages acknowledged to the broker"),
    ("batches", "batches committed"),
    ("retries", "transient failures retried"),
];

impl PipelineStats {
    pub fn new(name: &str) -> Arc<PipelineStats> {
        Arc::new(PipelineStats {
            name: name.to_string(),
            lag: AtomicU64::new(NO_LAG),
            ..Default::default()
        })
    }

    /// Messages ready on the source queue, if the transport can tell.
    pub fn lag(&self) -> Option<u64> {
        Some(self.lag.load(Ordering::Relaxed)).filter(|&n| n != NO_LAG)
    }

    pub fn set_lag(&self, lag: Option<u64>) {
        // A real lag of u64::MAX (never seen) is shown one less, not as none.
        let stored = lag.map_or(NO_LAG, |n| n.min(NO_LAG - 1));
        self.lag.store(stored, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Remembers the latest failure, shown with the counters.
    pub fn error(&self, message: &str) {
        let mut last = lock(&self.last_error);
        *last = Some((SystemTime::now(), message.to_string()));
    }

    /// The pipeline's threads are about to start here, consuming `queue`.
    pub fn starting(&self, queue: &str) {
        *lock(&self.queue) = queue.to_string();
        // Its own process, if it had one before a reload, is no more.
        *lock(&self.process) = None;
    }

    /// The pipeline could not be started: shown stopped, saying why.
    pub fn not_started(self: &Arc<Self>, why: &str) {
        self.error(why);
        drop(self.guard(false));
    }

    /// Counts the calling thread (a dispatcher, a supervisor) as running the pipeline
    /// until the guard is dropped.
    pub fn running(self: &Arc<Self>) -> RunGuard {
        self.guard(false)
    }

    /// Counts a database worker, alive until the guard is dropped.
    pub fn applying(self: &Arc<Self>) -> RunGuard {
        self.guard(true)
    }

    fn guard(self: &Arc<Self>, database_worker: bool) -> RunGuard {
        self.started.store(true, Ordering::Relaxed);
        self.runners.fetch_add(1, Ordering::Relaxed);
        if database_worker {
            self.apply_workers.fetch_add(1, Ordering::Relaxed);
        }
        RunGuard {
            stats: self.clone(),
            database_worker,
        }
    }

    /// The pipeline works: its consumer is open.
    pub fn progress(&self) {
        self.progress_ms.fetch_max(now_ms(), Ordering::Relaxed);
    }

    /// A batch of `messages` was received and is now in flight.
    pub fn batch_started(&self, messages: usize) {
        self.in_flight.fetch_add(messages as u64, Ordering::Relaxed);
        self.histograms.batch_size.observe(messages as f64);
    }

    /// A batch of `messages` is done with: acknowledged, or left to the broker.
    pub fn batch_finished(&self, messages: usize) {
        let _ = self
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(messages as u64))
            });
    }

    /// Nothing is in flight any more: the consumer is closed, and what it had not
    /// acknowledged went back to the broker.
    pub fn nothing_in_flight(&self) {
        self.in_flight.store(0, Ordering::Relaxed);
    }

    /// A database worker applied its share of a batch in `took`.
    pub fn applied_in(&self, took: Duration) {
        self.histograms.apply.observe(took.as_secs_f64());
    }

    /// A batch was acknowledged; `timestamps` are the `timestamp` headers (seconds since
    /// 1970) of its messages that have one. One clock read and one histogram update for
    /// the batch; no allocation.
    pub fn committed<'a>(&self, timestamps: impl IntoIterator<Item = &'a str>) {
        let now = now_ms();
        self.progress_ms.fetch_max(now, Ordering::Relaxed);
        let mut tally = Tally::default();
        for timestamp in timestamps {
            if let Ok(seconds) = timestamp.trim().parse::<u64>() {
                let age = now as f64 / 1000.0 - seconds as f64;
                // A clock a little ahead of ours counts as no age; a time far in the future
                // is not in seconds (ActiveMQ's `timestamp` is in milliseconds) and is
                // left out rather than taken for a fast message.
                if age >= -FUTURE_TOLERANCE_S {
                    tally.observe(self.histograms.age.shape(), age.max(0.0));
                }
            }
        }
        self.histograms.age.add(&tally);
    }

    /// The pipeline's own process ended: what it reported of its moment no longer holds.
    pub fn process_ended(&self) {
        self.child_workers.store(0, Ordering::Relaxed);
        self.nothing_in_flight();
        self.set_lag(None);
        *lock(&self.absorbed) = None;
    }

    /// Messages in flight now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Database workers alive, here or in the pipeline's own process.
    pub fn workers(&self) -> u64 {
        self.apply_workers.load(Ordering::Relaxed) + self.child_workers.load(Ordering::Relaxed)
    }

    /// The source queue, once the pipeline has started.
    pub fn queue(&self) -> String {
        lock(&self.queue).clone()
    }

    pub fn histograms(&self) -> &Histograms {
        &self.histograms
    }

    /// The latest error, redacted: what HTTP answers may show of it.
    pub fn shown_error(&self) -> Option<(SystemTime, String)> {
        lock(&self.last_error)
            .as_ref()
            .map(|(at, message)| (*at, redact(message)))
    }

    pub fn state(&self) -> State {
        if self.started.load(Ordering::Relaxed) && self.runners.load(Ordering::Relaxed) == 0 {
            return State::Stopped;
        }
        let progress = self.progress_ms.load(Ordering::Relaxed);
        let failing = lock(&self.last_error)
            .as_ref()
            .is_some_and(|(at, _)| ms_since_epoch(*at) > progress);
        let looping = lock(&self.process)
            .as_ref()
            .is_some_and(|p| p.crash_looping && (failing || p.pid.is_none()));
        if looping {
            State::CrashLooping
        } else if failing {
            State::Retrying
        } else if progress == 0 {
            State::Starting
        } else {
            State::Running
        }
    }

    fn cells(&self) -> [&AtomicU64; 8] {
        [
            &self.received,
            &self.applied,
            &self.duplicates,
            &self.dead_lettered,
            &self.fanned_out,
            &self.acknowledged,
            &self.batches,
            &self.retries,
        ]
    }

    /// What a pipeline's own process reports to its supervisor ([`PipelineStats::absorb`]),
    /// as one line of JSON: the counters, the latest error, the gauges and the histograms.
    pub fn report(&self) -> String {
        let counters: Vec<u64> = self
            .cells()
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let last = lock(&self.last_error)
            .clone()
            .map(|(at, message)| serde_json::json!([ms_since_epoch(at), message]));
        let histograms: Vec<serde_json::Value> = self
            .histograms
            .all()
            .iter()
            .map(|h| h.snapshot().to_json())
            .collect();
        serde_json::json!({
            "counters": counters,
            "last_error": last,
            "in_flight": self.in_flight(),
            "workers": self.workers(),
            "lag": self.lag(),
            "queue": self.queue(),
            "progress_ms": self.progress_ms.load(Ordering::Relaxed),
            "histograms": histograms,
        })
        .to_string()
    }

    /// Takes a child's [`PipelineStats::report`]: the counters become `base` (what the
    /// children before it counted) plus the child's; its latest error is kept if newer; its
    /// gauges replace these; its histograms add what grew since its last report. A report
    /// without gauges or histograms (from an older child) updates only what it has.
    /// `None` for a line that is not a report.
    pub fn absorb(&self, base: &[u64; 8], report: &str) -> Option<[u64; 8]> {
        let value: serde_json::Value = serde_json::from_str(report).ok()?;
        let mut counted = [0u64; 8];
        for (slot, value) in counted.iter_mut().zip(value["counters"].as_array()?.iter()) {
            *slot = value.as_u64()?;
        }
        for ((cell, base), counted) in self.cells().iter().zip(base).zip(&counted) {
            cell.store(base + counted, Ordering::Relaxed);
        }
        if let (Some(ms), Some(message)) = (
            value["last_error"][0].as_u64(),
            value["last_error"][1].as_str(),
        ) {
            let at = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
            let mut last = lock(&self.last_error);
            if last.as_ref().is_none_or(|(seen, _)| *seen < at) {
                *last = Some((at, message.to_string()));
            }
        }
        if let Some(n) = value["in_flight"].as_u64() {
            self.in_flight.store(n, Ordering::Relaxed);
        }
        if let Some(n) = value["workers"].as_u64() {
            self.child_workers.store(n, Ordering::Relaxed);
        }
        if let Some(lag) = value.get("lag") {
            self.set_lag(lag.as_u64());
        }
        if let Some(queue) = value["queue"].as_str().filter(|q| !q.is_empty()) {
            *lock(&self.queue) = queue.to_string();
        }
        if let Some(ms) = value["progress_ms"].as_u64() {
            self.progress_ms.fetch_max(ms, Ordering::Relaxed);
        }
        if let Some(reported) = value["histograms"].as_array() {
            let now: Option<Vec<Snapshot>> = reported.iter().map(Snapshot::from_json).collect();
            if let Some(now) = now.filter(|n| n.len() == self.histograms.all().len()) {
                let mut absorbed = lock(&self.absorbed);
                for (i, histogram) in self.histograms.all().iter().enumerate() {
                    let before = absorbed
                        .as_ref()
                        .map(|b| b[i].clone())
                        .unwrap_or_else(|| Snapshot::zero(histogram.shape()));
                    histogram.add_growth(&before, &now[i]);
                }
                *absorbed = Some(now);
            }
        }
        Some(counted)
    }

    /// The counters as they are now.
    #[cfg(test)]
    pub fn totals(&self) -> [u64; 8] {
        self.cells().map(|c| c.load(Ordering::Relaxed))
    }

    /// The counters with their names and help.
    fn counters(&self) -> [(&'static str, &'static str, u64); 8] {
        let cells = self.cells();
        std::array::from_fn(|i| {
            (
                COUNTERS[i].0,
                COUNTERS[i].1,
                cells[i].load(Ordering::Relaxed),
            )
        })
    }
}

/// Every pipeline's counters.
#[derive(Default, Clone)]
pub struct Stats {
    pipelines: Arc<Mutex<Vec<Arc<PipelineStats>>>>,
}

impl Stats {
    pub fn register(&self, name: &str) -> Arc<PipelineStats> {
        let stats = PipelineStats::new(name);
        lock(&self.pipelines).push(stats.clone());
        stats
    }

    /// The counters of pipeline `name`, if it is registered.
    pub fn named(&self, name: &str) -> Option<Arc<PipelineStats>> {
        self.pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|p| p.name == name)
            .cloned()
    }

    /// Forgets a pipeline that no longer runs (removed by a reload).
    pub fn remove(&self, name: &str) {
        self.pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| p.name != name);
    }

    fn snapshot(&self) -> Vec<Arc<PipelineStats>> {
        lock(&self.pipelines).clone()
    }

    /// `GET /stats`: every pipeline's counters, gauges, state and latest error (redacted).
    pub fn json(&self) -> String {
        let pipelines: Vec<serde_json::Value> = self
            .snapshot()
            .iter()
            .map(|p| {
                let mut object = serde_json::Map::new();
                object.insert("name".into(), p.name.clone().into());
                object.insert("state".into(), p.state().as_str().into());
                object.insert("queue".into(), p.queue().into());
                for (key, _, value) in p.counters() {
                    object.insert(key.into(), value.into());
                }
                object.insert("in_flight".into(), p.in_flight().into());
                object.insert("workers".into(), p.workers().into());
                object.insert("lag".into(), p.lag().into());
                object.insert(
                    "last_error".into(),
                    match p.shown_error() {
                        Some((at, message)) => serde_json::json!({
                            "at": humantime::format_rfc3339_millis(at).to_string(),
                            "message": message,
                        }),
                        None => serde_json::Value::Null,
                    },
                );
                if let Some(process) = process_json(p, true) {
                    object.insert("process".into(), process);
                }
                serde_json::Value::Object(object)
            })
            .collect();
        serde_json::json!({ "pipelines": pipelines }).to_string()
    }

    /// `GET /metrics`: the OpenMetrics text exposition.
    pub fn prometheus(&self) -> String {
        metrics::exposition(self)
    }
}

/// What HTTP answers show of a pipeline's own process, if it has one; its log lines
/// (redacted) only if `with_log`.
fn process_json(p: &PipelineStats, with_log: bool) -> Option<serde_json::Value> {
    let process = lock(&p.process).clone()?;
    let mut value = serde_json::json!({
        "pid": process.pid,
        "restarts": process.restarts,
        "last_exit": process.last_exit,
        "crash_looping": process.crash_looping,
    });
    if with_log {
        let lines: Vec<String> = process
            .last_stderr
            .iter()
            .map(|l| redact_log_line(l))
            .collect();
        value["last_stderr"] = lines.into();
    }
    Some(value)
}

fn ms_since_epoch(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn now_ms() -> u64 {
    ms_since_epoch(SystemTime::now())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_show_as_json_and_openmetrics() {
        let stats = Stats::default();
        let users = stats.register("users");
        PipelineStats::add(&users.applied, 7);
        users.error("database `primary`: connection lost");
        stats.register("say \"hi\"");
        let json: serde_json::Value = serde_json::from_str(&stats.json()).unwrap();
        assert_eq!(json["pipelines"][0]["applied"], 7);
        assert_eq!(
            json["pipelines"][0]["last_error"]["message"],
            "database `primary`: connection lost"
        );
        assert_eq!(json["pipelines"][1]["last_error"], serde_json::Value::Null);
        let text = stats.prometheus();
        assert!(text.contains("# TYPE golconde_applied counter"), "{text}");
        assert!(
            text.contains("golconde_applied_total{pipeline=\"users\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("golconde_applied_total{pipeline=\"say \\\"hi\\\"\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn errors_leave_out_row_values_over_http() {
        let stats = Stats::default();
        let users = stats.register("users");
        users.error(
            "database `db`: duplicate key value violates unique constraint \"u\" (Key \
             (email)=(secret@example.com) already exists.); retrying",
        );
        *users.process.lock().unwrap() = Some(ProcessInfo {
            last_stderr: vec![
                "WARN Duplicate entry 'secret@example.com' for key 'email'".into(),
                r#"{"fields":{"message":"cannot take \"secret@example.com\": no"}}"#.into(),
            ],
            ..Default::default()
        });
        let json = stats.json();
        assert!(!json.contains("secret@"), "{json}");
        assert!(json.contains("(Key (email)=(…) already exists.)"), "{json}");
        assert!(!stats.prometheus().contains("secret@"));
    }

    #[test]
    fn a_state_follows_errors_progress_and_threads() {
        let stats = PipelineStats::new("p");
        assert_eq!(stats.state(), State::Starting);
        let worker = stats.applying();
        let dispatcher = stats.running();
        assert_eq!(stats.workers(), 1);
        assert_eq!(stats.state(), State::Starting);
        stats.progress();
        assert_eq!(stats.state(), State::Running);
        std::thread::sleep(Duration::from_millis(2));
        stats.error("database `db`: connection refused; retrying");
        assert_eq!(stats.state(), State::Retrying);
        std::thread::sleep(Duration::from_millis(2));
        stats.committed(["12"]);
        assert_eq!(stats.state(), State::Running);
        *stats.process.lock().unwrap() = Some(ProcessInfo {
            crash_looping: true,
            ..Default::default()
        });
        assert_eq!(stats.state(), State::CrashLooping);
        *stats.process.lock().unwrap() = None;
        drop(worker);
        assert_eq!(stats.workers(), 0);
        assert_eq!(stats.state(), State::Running);
        drop(dispatcher);
        assert_eq!(stats.state(), State::Stopped);
    }

    #[test]
    fn in_flight_follows_batches() {
        let stats = PipelineStats::new("p");
        stats.batch_started(10);
        stats.batch_started(5);
        stats.batch_finished(10);
        assert_eq!(stats.in_flight(), 5);
        stats.nothing_in_flight();
        stats.batch_finished(5);
        assert_eq!(stats.in_flight(), 0);
        let size = stats.histograms().batch_size.snapshot();
        assert_eq!((size.count, size.sum), (2, 15));
    }

    #[test]
    fn ages_come_from_timestamp_headers() {
        let stats = PipelineStats::new("p");
        let now = now_ms() / 1000;
        let (three, hour) = ((now - 3).to_string(), (now - 3000).to_string());
        // Milliseconds (ActiveMQ's), and a clock a second ahead of ours.
        let (millis, ahead) = ((now * 1000).to_string(), (now + 1).to_string());
        stats.committed([
            three.as_str(),
            "yesterday",
            hour.as_str(),
            "-5",
            millis.as_str(),
            ahead.as_str(),
        ]);
        let age = stats.histograms().age.snapshot();
        assert_eq!(age.count, 3);
        assert!((3000.0..3010.0).contains(&(age.sum_in(&histogram::AGE_SECONDS))));
    }

    #[test]
    fn a_childs_report_carries_everything_and_old_reports_still_count() {
        let child = PipelineStats::new("p");
        child.starting("q.users");
        let _worker = child.applying();
        PipelineStats::add(&child.applied, 4);
        child.batch_started(4);
        child.applied_in(Duration::from_millis(30));
        child.set_lag(Some(12));
        child.progress();
        let parent = PipelineStats::new("p");
        parent.absorb(&[0; 8], &child.report()).unwrap();
        parent.absorb(&[0; 8], &child.report()).unwrap();
        assert_eq!(parent.totals()[1], 4);
        assert_eq!(parent.in_flight(), 4);
        assert_eq!(parent.workers(), 1);
        assert_eq!(parent.lag(), Some(12));
        assert_eq!(parent.queue(), "q.users");
        assert_eq!(
            parent.histograms().apply.snapshot(),
            child.histograms().apply.snapshot(),
            "the same report twice adds once"
        );
        // The next child starts from nothing, and adds to what the first one counted.
        parent.process_ended();
        assert_eq!(
            (parent.workers(), parent.in_flight(), parent.lag()),
            (0, 0, None)
        );
        let next = PipelineStats::new("p");
        next.batch_started(2);
        parent
            .absorb(&[4, 4, 0, 0, 0, 4, 1, 0], &next.report())
            .unwrap();
        assert_eq!(parent.histograms().batch_size.snapshot().count, 2);
        assert_eq!(parent.histograms().batch_size.snapshot().sum, 6);
        // A report from before the gauges and histograms.
        let counted = parent
            .absorb(
                &[0; 8],
                r#"{"counters":[9,8,0,1,0,9,3,0],"last_error":null}"#,
            )
            .unwrap();
        assert_eq!(counted, [9, 8, 0, 1, 0, 9, 3, 0]);
        assert_eq!(parent.histograms().batch_size.snapshot().count, 2);
        assert!(parent.absorb(&[0; 8], "not json").is_none());
    }
}

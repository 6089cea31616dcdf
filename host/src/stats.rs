//! What the daemon has done, per pipeline, and the small HTTP endpoint that shows it.
//!
//! Counters are plain atomics bumped by the pipeline's threads (a relaxed add per batch, not
//! per message, on the hot path); the endpoint reads them when asked. `GET /stats` answers
//! JSON, `GET /metrics` the Prometheus text format, `GET /health` `ok`. The endpoint is off
//! unless `[stats] listen` is set: a replication daemon should not open ports by surprise.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, SystemTime},
};

use crate::pool::Shutdown;

/// The counters of one pipeline.
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
    last_error: Mutex<Option<(SystemTime, String)>>,
    /// For a pipeline in a process of its own: that process, as its supervisor sees it.
    pub process: Mutex<Option<ProcessInfo>>,
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

impl PipelineStats {
    pub fn new(name: &str) -> Arc<PipelineStats> {
        Arc::new(PipelineStats {
            name: name.to_string(),
            ..Default::default()
        })
    }

    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Remembers the latest failure, shown with the counters.
    pub fn error(&self, message: &str) {
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        *last = Some((SystemTime::now(), message.to_string()));
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

    /// The counters and the latest error as one line of JSON: what a pipeline's own process
    /// reports to its supervisor ([`PipelineStats::absorb`]).
    pub fn report(&self) -> String {
        let counters: Vec<u64> = self
            .cells()
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let last = self
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .map(|(at, message)| {
                let ms = at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                serde_json::json!([ms, message])
            });
        serde_json::json!({ "counters": counters, "last_error": last }).to_string()
    }

    /// Takes a child's [`PipelineStats::report`]: the counters become `base` (what the
    /// children before it counted) plus the child's; its latest error is kept if newer.
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
            let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
            if last.as_ref().is_none_or(|(seen, _)| *seen < at) {
                *last = Some((at, message.to_string()));
            }
        }
        Some(counted)
    }

    /// The counters as they are now.
    #[cfg(test)]
    pub fn totals(&self) -> [u64; 8] {
        self.cells().map(|c| c.load(Ordering::Relaxed))
    }

    fn counters(&self) -> [(&'static str, &'static str, u64); 8] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            (
                "received",
                "messages taken off the queue",
                get(&self.received),
            ),
            (
                "applied",
                "messages whose change committed",
                get(&self.applied),
            ),
            (
                "duplicates",
                "messages skipped as replays",
                get(&self.duplicates),
            ),
            (
                "dead_lettered",
                "messages set aside on the dead-letter queue",
                get(&self.dead_lettered),
            ),
            (
                "fanned_out",
                "copies published to fan-out queues",
                get(&self.fanned_out),
            ),
            (
                "acknowledged",
                "messages acknowledged to the broker",
                get(&self.acknowledged),
            ),
            ("batches", "batches committed", get(&self.batches)),
            ("retries", "transient failures retried", get(&self.retries)),
        ]
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
        self.pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(stats.clone());
        stats
    }

    fn snapshot(&self) -> Vec<Arc<PipelineStats>> {
        self.pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn json(&self) -> String {
        let pipelines: Vec<serde_json::Value> = self
            .snapshot()
            .iter()
            .map(|p| {
                let mut object = serde_json::Map::new();
                object.insert("name".into(), p.name.clone().into());
                for (key, _, value) in p.counters() {
                    object.insert(key.into(), value.into());
                }
                let last = p
                    .last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                object.insert(
                    "last_error".into(),
                    match last {
                        Some((at, message)) => serde_json::json!({
                            "at": humantime::format_rfc3339_millis(at).to_string(),
                            "message": message,
                        }),
                        None => serde_json::Value::Null,
                    },
                );
                let process = p.process.lock().unwrap_or_else(|e| e.into_inner()).clone();
                if let Some(process) = process {
                    object.insert(
                        "process".into(),
                        serde_json::json!({
                            "pid": process.pid,
                            "restarts": process.restarts,
                            "last_exit": process.last_exit,
                            "crash_looping": process.crash_looping,
                            "last_stderr": process.last_stderr,
                        }),
                    );
                }
                serde_json::Value::Object(object)
            })
            .collect();
        serde_json::json!({ "pipelines": pipelines }).to_string()
    }

    pub fn prometheus(&self) -> String {
        let pipelines = self.snapshot();
        let mut out = String::new();
        let Some(first) = pipelines.first() else {
            return out;
        };
        let label = |p: &PipelineStats| p.name.replace('\\', "\\\\").replace('"', "\\\"");
        for (index, (key, help, _)) in first.counters().iter().enumerate() {
            let _ = writeln!(out, "# HELP golconde_{key}_total {help}");
            let _ = writeln!(out, "# TYPE golconde_{key}_total counter");
            for p in &pipelines {
                let value = p.counters()[index].2;
                let _ = writeln!(
                    out,
                    "golconde_{key}_total{{pipeline=\"{}\"}} {value}",
                    label(p)
                );
            }
        }
        let restarts: Vec<(String, u64)> = pipelines
            .iter()
            .filter_map(|p| {
                let process = p.process.lock().unwrap_or_else(|e| e.into_inner());
                process.as_ref().map(|info| (label(p), info.restarts))
            })
            .collect();
        if !restarts.is_empty() {
            let _ = writeln!(
                out,
                "# HELP golconde_restarts_total times a pipeline's own process was started again"
            );
            let _ = writeln!(out, "# TYPE golconde_restarts_total counter");
            for (name, value) in restarts {
                let _ = writeln!(
                    out,
                    "golconde_restarts_total{{pipeline=\"{name}\"}} {value}"
                );
            }
        }
        out
    }
}

/// Serves the endpoint on `listen` until shutdown; returns the address actually bound (the
/// port may be 0 in the configuration).
pub fn serve(listen: &str, stats: Stats, shutdown: Shutdown) -> Result<SocketAddr, String> {
    let server = tiny_http::Server::http(listen)
        .map_err(|e| format!("[stats] listen = `{listen}`: cannot listen: {e}"))?;
    let address = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| format!("[stats] listen = `{listen}`: not an IP address"))?;
    std::thread::Builder::new()
        .name("stats".into())
        .spawn(move || {
            while !shutdown.is_triggered() {
                let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(200)) else {
                    continue;
                };
                let (status, body, content_type) = match (request.method(), request.url()) {
                    (tiny_http::Method::Get, "/stats") => (200, stats.json(), "application/json"),
                    (tiny_http::Method::Get, "/metrics") => {
                        (200, stats.prometheus(), "text/plain; version=0.0.4")
                    }
                    (tiny_http::Method::Get, "/health") => (200, "ok\n".into(), "text/plain"),
                    _ => (
                        404,
                        "try /stats, /metrics or /health\n".into(),
                        "text/plain",
                    ),
                };
                let header = tiny_http::Header::from_bytes("Content-Type", content_type)
                    .expect("a valid header");
                let response = tiny_http::Response::from_string(body)
                    .with_status_code(status)
                    .with_header(header);
                let _ = request.respond(response);
            }
        })
        .map_err(|e| format!("starting the stats thread: {e}"))?;
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_show_as_json_and_prometheus() {
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
        assert!(
            text.contains("# TYPE golconde_applied_total counter"),
            "{text}"
        );
        assert!(
            text.contains("golconde_applied_total{pipeline=\"users\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("golconde_applied_total{pipeline=\"say \\\"hi\\\"\"} 0"),
            "{text}"
        );
    }
}

//! Runs the real `golconde run` process with the real plugin libraries: writes its
//! configuration, watches its log for the moment it starts consuming and for errors,
//! samples the peak RSS of the daemon and of its child processes (a pipeline in process
//! isolation) and the CPU time they use from that moment on, and stops it with SIGTERM.
//!
//! Depends on the standard library and libc (for SIGTERM). Key decision: the daemon is a
//! child process like in production, not the pipeline called in-process, so the figures
//! include plugin loading across the ABI, the real threads, the pipeline's own process
//! when it has one, and the real shutdown.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// What one daemon run consumes and where it writes.
pub struct Setup<'a> {
    pub transport: &'a str,
    pub queue: &'a str,
    /// The processor plugin: `autosql`, or `debezium` (its events name their own table,
    /// mapped to `public.<table>`).
    pub processor: &'a str,
    /// The database plugin: `postgres`, or `mysql` (the table in the DSN's database).
    pub database: &'a str,
    pub table: &'a str,
    pub workers: u32,
    pub dsn: &'a str,
    /// `batch.max_messages`; Golconde's default (500) when `None`.
    pub batch: Option<u32>,
    /// The pipeline runs in a process of its own (`isolation = "process"`).
    pub process: bool,
}

/// What every daemon the bench starts is configured with, before its transport: where
/// the plugins are, a grace for draining, the stats endpoint on a free port (its log says
/// which; [`Daemon::commits`] reads it), and JSON logs (which [`Daemon`] reads).
pub fn preamble(plugin_dir: &Path) -> String {
    format!(
        r#"plugin_dirs = [{:?}]
shutdown_grace_ms = 30000

[stats]
listen = "127.0.0.1:0"

[log]
level = "info"
format = "json"
"#,
        plugin_dir.display().to_string()
    )
}

pub fn config(setup: &Setup, plugin_dir: &Path) -> String {
    let transport = match setup.transport {
        "stomp" => "plugin = \"stomp\"\naddress = \"127.0.0.1:61613\"\nlogin = \"guest\"\npasscode = \"guest\"".to_string(),
        "nats" => format!("plugin = \"nats\"\nurl = \"{}\"", crate::streams::NATS_URL),
        "redis" => format!("plugin = \"redis\"\nurl = \"{}\"", crate::streams::REDIS_URL),
        _ => format!("plugin = \"amqp\"\nurl = \"{}\"", crate::broker::URL),
    };
    let (processor, tables) = match (setup.processor, setup.database) {
        ("debezium", _) => (
            format!(
                "{{ plugin = \"debezium\", table_map = {{ \"{}\" = \"public.{}\" }} }}",
                crate::workload::DEBEZIUM_SOURCE_TABLE,
                setup.table
            ),
            format!("tables = [\"public.{}\"]", setup.table),
        ),
        (processor, "mysql") => (
            format!("{{ plugin = \"{processor}\" }}"),
            format!("table = \"{}\"", setup.table),
        ),
        (processor, _) => (
            format!("{{ plugin = \"{processor}\" }}"),
            format!("table = \"public.{}\"", setup.table),
        ),
    };
    format!(
        r#"{preamble}
[transports.bench]
{transport}

[databases.bench]
plugin = "{database}"
dsn = "{dsn}"

[[pipelines]]
name = "bench"
transport = "bench"
queue = "{queue}"
processor = {processor}
database = "bench"
{tables}
workers = {workers}
{isolation}{batch}"#,
        preamble = preamble(plugin_dir),
        database = setup.database,
        dsn = setup.dsn,
        queue = setup.queue,
        workers = setup.workers,
        // Written only when wanted: a Golconde older than process isolation refuses the key.
        isolation = if setup.process {
            "isolation = \"process\"\n"
        } else {
            ""
        },
        batch = setup.batch.map_or(String::new(), |n| format!(
            "batch = {{ max_messages = {n} }}\n"
        )),
    )
}

/// The one warning that is about the machine, not the run: the local Redis keeps no
/// append-only file (a bench needs none).
const ABOUT_THE_MACHINE: &str = "writes no append-only file";

/// How often the memory of the daemon and its children is sampled. VmHWM is a high-water
/// mark, so sampling only has to catch each process alive; a child of a pipeline in process
/// isolation exits when the daemon stops, so it cannot be read afterwards.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Peak resident memory (VmHWM) of a daemon and of its child processes, in bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rss {
    pub daemon: u64,
    /// The highest peak among the daemon's child processes (a pipeline in process
    /// isolation: the bench runs one pipeline, so one child at a time); `None` without any.
    pub child: Option<u64>,
}

impl Rss {
    /// What the pipeline costs in memory: the daemon's peak plus its child's.
    pub fn total(&self) -> u64 {
        self.daemon + self.child.unwrap_or(0)
    }
}

/// The peaks seen so far, by pid.
#[derive(Default)]
struct Peaks {
    daemon: u64,
    children: HashMap<u32, u64>,
}

impl Peaks {
    /// Reads the VmHWM of `pid` and of its children now. Fails only if the daemon's own
    /// cannot be read; a child may exit between finding it and reading it.
    fn sample(&mut self, pid: u32) -> Result<()> {
        self.daemon = self.daemon.max(vm_hwm(pid)?);
        for child in children(pid) {
            if let Ok(bytes) = vm_hwm(child) {
                let peak = self.children.entry(child).or_default();
                *peak = (*peak).max(bytes);
            }
        }
        Ok(())
    }

    fn rss(&self) -> Rss {
        Rss {
            daemon: self.daemon,
            child: self.children.values().copied().max(),
        }
    }
}

/// Peak resident memory (VmHWM) of process `pid` so far, in bytes.
fn vm_hwm(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .with_context(|| format!("no VmHWM in {path}"))?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("unreadable `{line}` in {path}"))?;
    Ok(kb * 1024)
}

/// The address in the daemon's "serving counters on http://ADDRESS/stats" line.
fn stats_address(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once("serving counters on http://")?;
    rest.split_once("/stats").map(|(address, _)| address)
}

/// A pipeline's batches as its `/metrics` histograms tell: how big, and how long their
/// transactions took.
#[derive(Debug, PartialEq)]
pub struct Commits {
    pub batches: u64,
    pub mean_messages: f64,
    pub mean_apply_ms: f64,
    /// The upper bound (ms) of the histogram bucket that holds the 99th percentile of
    /// apply times.
    pub p99_apply_ms: f64,
}

impl Commits {
    fn parse(metrics: &str) -> Result<Commits> {
        let value = |name: &str| -> Result<f64> {
            metrics
                .lines()
                .find(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .with_context(|| format!("no {name} in the exposition"))
        };
        let count = value("golconde_batch_apply_seconds_count")?;
        // (upper bound in seconds, cumulative count), in the exposition's order.
        let buckets: Vec<(f64, f64)> = metrics
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix("golconde_batch_apply_seconds_bucket{")?;
                let (_, le) = rest.split_once("le=\"")?;
                let (le, _) = le.split_once('"')?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, l.rsplit(' ').next()?.parse().ok()?))
            })
            .collect();
        let p99 = buckets
            .iter()
            .find(|(_, cumulative)| *cumulative >= 0.99 * count)
            .map_or(f64::NAN, |(le, _)| *le);
        let per = |sum: f64, n: f64| if n > 0.0 { sum / n } else { 0.0 };
        let batches = value("golconde_batch_size_messages_count")?;
        Ok(Commits {
            batches: batches as u64,
            mean_messages: per(value("golconde_batch_size_messages_sum")?, batches),
            mean_apply_ms: per(value("golconde_batch_apply_seconds_sum")?, count) * 1000.0,
            p99_apply_ms: p99 * 1000.0,
        })
    }
}

/// CPU time (user and system) used so far by process `pid` and its living children (a
/// pipeline in process isolation), from the `utime` and `stime` of /proc/PID/stat. A child
/// may exit between finding it and reading it; the daemon's own must be readable.
fn cpu_time(pid: u32) -> Result<Duration> {
    let mut total = ticks_of(&format!("/proc/{pid}/stat"))?;
    for child in children(pid) {
        total += ticks_of(&format!("/proc/{child}/stat")).unwrap_or(0);
    }
    Ok(as_time(total))
}

/// CPU time (user and system) the bench itself used so far: what a ceiling's bare client,
/// which runs inside it, costs per message. Its children (daemons, stopped by then) are
/// not counted.
pub fn own_cpu_time() -> Result<Duration> {
    ticks_of("/proc/self/stat").map(as_time)
}

/// The CPU time, in clock ticks, of the process whose stat file is `path`.
fn ticks_of(path: &str) -> Result<u64> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    cpu_ticks(&stat).with_context(|| format!("no utime and stime in {path}: `{stat}`"))
}

/// Clock ticks as time.
pub fn as_time(ticks: u64) -> Duration {
    // SAFETY: sysconf(3) reads a constant of the system; no memory is involved.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Duration::from_secs_f64(ticks as f64 / hz as f64)
}

/// `utime` + `stime` (fields 14 and 15, in clock ticks) of a /proc/PID/stat line, counted
/// after the command name's last `)` as in [`parent_of`].
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let (_, after) = stat.rsplit_once(')')?;
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The pids whose parent is `pid`, from /proc/*/stat (`/proc/PID/task/*/children` needs a
/// kernel option that is often off).
fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|candidate| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{candidate}/stat")) else {
                return false;
            };
            parent_of(&stat) == Some(pid)
        })
        .collect()
}

/// The ppid field of a /proc/PID/stat line. The command name before it is in parentheses
/// and may itself hold spaces and parentheses, so fields are counted after the last `)`.
fn parent_of(stat: &str) -> Option<u32> {
    let (_, after) = stat.rsplit_once(')')?;
    after.split_whitespace().nth(1)?.parse().ok()
}

/// A running `golconde run`; killed if dropped without [`Daemon::stop`].
pub struct Daemon {
    child: Option<Child>,
    pub spawned: Instant,
    consuming: Arc<OnceLock<Instant>>,
    /// The CPU time used by the daemon and its child when it logged that it consumes.
    cpu_at_consuming: Arc<OnceLock<Result<Duration, String>>>,
    log: Arc<Mutex<Vec<String>>>,
    /// `host:port` of the stats endpoint, once the daemon logged it.
    stats: Arc<OnceLock<String>>,
    reader: Option<JoinHandle<()>>,
    peaks: Arc<Mutex<Peaks>>,
    sampling: Arc<AtomicBool>,
    sampler: Option<JoinHandle<()>>,
    config_path: PathBuf,
}

impl Daemon {
    pub fn start(golconde: &Path, config_path: &Path, config: &str) -> Result<Daemon> {
        std::fs::write(config_path, config)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let mut child = Command::new(golconde)
            .arg("run")
            .arg("--config")
            .arg(config_path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", golconde.display()))?;
        let spawned = Instant::now();
        let consuming = Arc::new(OnceLock::new());
        let cpu_at_consuming = Arc::new(OnceLock::new());
        let log = Arc::new(Mutex::new(Vec::new()));
        let stats = Arc::new(OnceLock::new());
        let stderr = child.stderr.take().expect("stderr is piped");
        let reader = {
            let (consuming, cpu, log) = (consuming.clone(), cpu_at_consuming.clone(), log.clone());
            let stats = stats.clone();
            let pid = child.id();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    // Read here, as the line arrives, so that the start-up (loading the
                    // plugins, connecting) is left out of the CPU time of the drain.
                    if line.contains("consuming queue") && consuming.set(Instant::now()).is_ok() {
                        let _ = cpu.set(cpu_time(pid).map_err(|e| format!("{e:#}")));
                    }
                    if let Some(address) = stats_address(&line) {
                        let _ = stats.set(address.to_string());
                    }
                    log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            })
        };
        let peaks = Arc::new(Mutex::new(Peaks::default()));
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = {
            let (peaks, sampling, pid) = (peaks.clone(), sampling.clone(), child.id());
            std::thread::spawn(move || {
                while sampling.load(Ordering::Relaxed) {
                    // The daemon may be gone already; its last sample stands.
                    let _ = lock(&peaks).sample(pid);
                    std::thread::sleep(SAMPLE_EVERY);
                }
            })
        };
        Ok(Daemon {
            child: Some(child),
            spawned,
            consuming,
            cpu_at_consuming,
            log,
            stats,
            reader: Some(reader),
            peaks,
            sampling,
            sampler: Some(sampler),
            config_path: config_path.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// When the daemon logged that it started consuming (the clock's start).
    pub fn consuming_since(&self) -> Option<Instant> {
        self.consuming.get().copied()
    }

    /// The CPU time the daemon and its child used since it logged that it consumes the
    /// queue.
    pub fn cpu_since_consuming(&self) -> Result<Duration> {
        let now = cpu_time(self.pid())?;
        match self.cpu_at_consuming.get() {
            Some(Ok(then)) => Ok(now.saturating_sub(*then)),
            Some(Err(e)) => bail!("reading golconde's CPU time when it started consuming: {e}"),
            None => bail!("golconde has not logged that it consumes the queue"),
        }
    }

    /// Fails if the daemon exited or logged an error.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            bail!(
                "golconde exited early ({status}); its log ends:\n{}",
                self.tail()
            );
        }
        self.check_log()
    }

    fn check_log(&self) -> Result<()> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(line) = log.iter().find(|l| {
            (l.contains("\"level\":\"ERROR\"") || l.contains("\"level\":\"WARN\""))
                && !l.contains(ABOUT_THE_MACHINE)
        }) {
            bail!(
                "golconde logged a problem with {}: {line}",
                self.config_path.display()
            );
        }
        Ok(())
    }

    /// How the daemon's batches went so far, from its `/metrics`.
    pub fn commits(&self) -> Result<Commits> {
        let address = self
            .stats
            .get()
            .context("golconde has not logged where its stats endpoint listens")?;
        let mut stream = TcpStream::connect(address)
            .with_context(|| format!("connecting to golconde's stats endpoint {address}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")?;
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .with_context(|| format!("reading http://{address}/metrics"))?;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            bail!(
                "http://{address}/metrics answered `{}`",
                head.lines().next().unwrap_or("")
            );
        }
        Commits::parse(body).with_context(|| format!("reading http://{address}/metrics"))
    }

    pub fn tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log[log.len().saturating_sub(20)..].join("\n")
    }

    /// Peak resident memory so far of the daemon and of its child, sampled once more now.
    pub fn peak_rss(&self) -> Result<Rss> {
        let mut peaks = lock(&self.peaks);
        peaks.sample(self.pid())?;
        Ok(peaks.rss())
    }

    fn stop_sampling(&mut self) {
        self.sampling.store(false, Ordering::Relaxed);
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
    }

    /// SIGTERM, then waits for a clean exit; fails on a non-zero exit, a timeout or an
    /// error or warning in the log.
    pub fn stop(mut self) -> Result<()> {
        self.stop_sampling();
        let mut child = self.child.take().expect("stopped once");
        // SAFETY: kill(2) on our own child's pid has no memory-safety requirement.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "golconde did not exit within 60 s of SIGTERM:\n{}",
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        if !status.success() {
            bail!(
                "golconde exited with {status} after SIGTERM:\n{}",
                self.tail()
            );
        }
        self.check_log()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop_sampling();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stats_address_is_read_off_the_log_line() {
        let line = r#"{"level":"INFO","fields":{"message":"serving counters on http://127.0.0.1:40123/stats and /metrics, the dashboard on http://127.0.0.1:40123/"}}"#;
        assert_eq!(stats_address(line), Some("127.0.0.1:40123"));
        assert_eq!(stats_address("consuming queue `q`"), None);
    }

    #[test]
    fn batches_and_commit_times_are_read_off_the_exposition() {
        let metrics = "\
# TYPE golconde_batch_apply_seconds histogram
golconde_batch_apply_seconds_sum{pipeline=\"bench\"} 15.0
golconde_batch_apply_seconds_count{pipeline=\"bench\"} 1000
golconde_batch_apply_seconds_bucket{le=\"0.001\",pipeline=\"bench\"} 900
golconde_batch_apply_seconds_bucket{le=\"0.0025\",pipeline=\"bench\"} 985
golconde_batch_apply_seconds_bucket{le=\"0.005\",pipeline=\"bench\"} 995
golconde_batch_apply_seconds_bucket{le=\"+Inf\",pipeline=\"bench\"} 1000
golconde_batch_size_messages_sum{pipeline=\"bench\"} 5500.0
golconde_batch_size_messages_count{pipeline=\"bench\"} 1000
";
        assert_eq!(
            Commits::parse(metrics).unwrap(),
            Commits {
                batches: 1000,
                mean_messages: 5.5,
                mean_apply_ms: 15.0,
                p99_apply_ms: 5.0,
            }
        );
        assert!(Commits::parse("# EOF").is_err());
    }

    #[test]
    fn the_parent_is_read_past_a_command_name_with_spaces_and_parentheses() {
        assert_eq!(parent_of("42 (golconde) S 7 42 42 0 -1"), Some(7));
        assert_eq!(parent_of("42 (a) b (c) R 9 42 42 0 -1"), Some(9));
        assert_eq!(parent_of("42 (golconde"), None);
    }

    #[test]
    fn cpu_time_is_read_past_the_command_name() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 4 0";
        assert_eq!(cpu_ticks(stat), Some(281));
        assert_eq!(cpu_ticks("42 (a) S 1 42"), None);
        // This process has used some CPU, and more after some work.
        let before = cpu_time(std::process::id()).unwrap();
        let mut x = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(60) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(cpu_time(std::process::id()).unwrap() > before);
    }

    #[test]
    fn a_child_process_is_found_and_its_peak_read() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let mut peaks = Peaks::default();
        let sampled = peaks.sample(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        sampled.unwrap();
        let rss = peaks.rss();
        assert!(rss.daemon > 0);
        assert!(
            peaks.children.contains_key(&child.id()),
            "{:?}",
            peaks.children
        );
        assert!(rss.child.is_some_and(|c| c > 0));
        assert_eq!(rss.total(), rss.daemon + rss.child.unwrap());
    }
}

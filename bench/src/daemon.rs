//! Runs the real `golconde run` process with the real plugin libraries: writes its
//! configuration, watches its log for the moment it starts consuming and for errors,
//! samples its peak RSS, and stops it with SIGTERM.
//!
//! Depends on the standard library and libc (for SIGTERM). Key decision: the daemon is a
//! child process like in production, not the pipeline called in-process, so the figures
//! include plugin loading across the ABI, the real threads and the real shutdown.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// What one daemon run consumes and where it writes.
pub struct Setup<'a> {
    pub transport: &'a str,
    pub queue: &'a str,
    pub table: &'a str,
    pub workers: u32,
    pub dsn: &'a str,
    /// `batch.max_messages`; Golconde's default (500) when `None`.
    pub batch: Option<u32>,
}

pub fn config(setup: &Setup, plugin_dir: &Path) -> String {
    let transport = match setup.transport {
        "stomp" => "plugin = \"stomp\"\naddress = \"127.0.0.1:61613\"\nlogin = \"guest\"\npasscode = \"guest\"".to_string(),
        _ => format!("plugin = \"amqp\"\nurl = \"{}\"", crate::broker::URL),
    };
    format!(
        r#"plugin_dirs = [{dir:?}]
shutdown_grace_ms = 30000

[log]
level = "info"
format = "json"

[transports.bench]
{transport}

[databases.bench]
plugin = "postgres"
dsn = "{dsn}"

[[pipelines]]
name = "bench"
transport = "bench"
queue = "{queue}"
processor = {{ plugin = "autosql" }}
database = "bench"
table = "public.{table}"
workers = {workers}
{batch}"#,
        dir = plugin_dir.display().to_string(),
        dsn = setup.dsn,
        queue = setup.queue,
        table = setup.table,
        workers = setup.workers,
        batch = setup.batch.map_or(String::new(), |n| format!(
            "batch = {{ max_messages = {n} }}\n"
        )),
    )
}

/// A running `golconde run`; killed if dropped without [`Daemon::stop`].
pub struct Daemon {
    child: Option<Child>,
    pub spawned: Instant,
    consuming: Arc<OnceLock<Instant>>,
    log: Arc<Mutex<Vec<String>>>,
    reader: Option<JoinHandle<()>>,
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
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let reader = {
            let (consuming, log) = (consuming.clone(), log.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("consuming queue") {
                        let _ = consuming.set(Instant::now());
                    }
                    log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            })
        };
        Ok(Daemon {
            child: Some(child),
            spawned,
            consuming,
            log,
            reader: Some(reader),
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
        if let Some(line) = log
            .iter()
            .find(|l| l.contains("\"level\":\"ERROR\"") || l.contains("\"level\":\"WARN\""))
        {
            bail!(
                "golconde logged a problem with {}: {line}",
                self.config_path.display()
            );
        }
        Ok(())
    }

    pub fn tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log[log.len().saturating_sub(20)..].join("\n")
    }

    /// Peak resident memory so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
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

    /// SIGTERM, then waits for a clean exit; fails on a non-zero exit, a timeout or an
    /// error or warning in the log.
    pub fn stop(mut self) -> Result<()> {
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
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

//! Helpers for the end-to-end tests: find the built binary and plugins, run the daemon,
//! wait for what it logs, and read what the file-backed fixture plugins recorded.
//!
//! The tests need `cargo build --workspace` first (`scripts/test` does it): the plugins
//! are `cdylib`s, which no test build produces on its own.

pub mod broker;
pub mod browser;
pub mod mariadb;
pub mod services;
pub mod streams;

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

/// The folder holding the `golconde` binary and the plugin libraries of this build.
pub fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf();
    for needed in ["golconde", "libgolconde_fixture_plugins.so"] {
        assert!(
            dir.join(needed).exists(),
            "{} is missing: run `cargo build --workspace` (scripts/test does) before the \
             end-to-end tests",
            dir.join(needed).display()
        );
    }
    dir
}

pub fn golconde() -> Command {
    let mut command = Command::new(build_dir().join("golconde"));
    command
        .env_remove("RUST_LOG")
        .env_remove("GOLCONDE_PLUGIN_PATH")
        // The test processes' large stacks (.cargo/config.toml) must not hide a daemon that
        // would overflow its own.
        .env_remove("RUST_MIN_STACK");
    command
}

/// Runs `golconde ARGS` to completion; returns its exit status and stdout + stderr.
pub fn run(args: &[&str]) -> (Output, String) {
    let output = golconde().args(args).output().expect("golconde runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, text)
}

/// A scratch folder with a configuration file in it, removed at the end of the test.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `golconde.toml`; `{dir}` in the text stands for the scratch folder and
    /// `{plugins}` for the build's plugin folder.
    pub fn config(&self, text: &str) -> PathBuf {
        let text = text
            .replace("{dir}", &self.dir.path().display().to_string())
            .replace("{plugins}", &build_dir().display().to_string());
        let path = self.path("golconde.toml");
        fs::write(&path, text).expect("config written");
        path
    }

    /// Appends rows to the `fixture-queue` queue `queue`.
    pub fn enqueue(&self, queue: &str, rows: &[(&str, &str)]) {
        let mut text = String::new();
        for (key, value) in rows {
            let body = serde_json::json!({"key": key, "value": value}).to_string();
            text.push_str(&serde_json::json!({"body": body}).to_string());
            text.push('\n');
        }
        self.append(&format!("{queue}.jsonl"), &text);
    }

    /// Appends a raw message body to the `fixture-queue` queue `queue`.
    pub fn enqueue_raw(&self, queue: &str, body: &str) {
        let line = serde_json::json!({"body": body}).to_string();
        self.append(&format!("{queue}.jsonl"), &format!("{line}\n"));
    }

    fn append(&self, file: &str, text: &str) {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(file))
            .expect("queue file");
        f.write_all(text.as_bytes()).expect("queue written");
    }

    /// How many messages of `queue` were acknowledged.
    pub fn acked(&self, queue: &str) -> u64 {
        fs::read_to_string(self.path(&format!("{queue}.acked")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The messages published to `queue`: body and headers.
    pub fn published(&self, queue: &str) -> Vec<serde_json::Value> {
        read_lines(&self.path(&format!("{queue}.jsonl")))
    }

    /// Every write of a `fixture-table` file, in order, as (key, value).
    pub fn writes(&self, table_file: &str) -> Vec<(String, String)> {
        read_lines(&self.path(table_file))
            .into_iter()
            .map(|line| {
                let data = &line["data"];
                (
                    data["key"].as_str().unwrap_or_default().to_string(),
                    data["value"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// The final rows of a `fixture-table` file: key to value, last write wins.
    pub fn rows(&self, table_file: &str) -> BTreeMap<String, String> {
        self.writes(table_file).into_iter().collect()
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

fn read_lines(path: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// A `golconde run` in the background, its log going to a file.
pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    pub fn start(config: &Path) -> Daemon {
        Self::start_with(config, &[])
    }

    pub fn start_with(config: &Path, env: &[(&str, &str)]) -> Daemon {
        let log = config.with_extension("log");
        let file = fs::File::create(&log).expect("log file");
        let child = golconde()
            .args(["run", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("golconde starts");
        Daemon { child, log }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where a daemon started [`with_stats`] serves its counters, from its log.
    pub fn stats_address(&mut self) -> String {
        let log = self.wait_for_log("serving counters on http://", Duration::from_secs(20));
        log.split("serving counters on http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .expect("an address")
            .to_string()
    }

    /// Waits until the log contains `needle`; fails the test with the log if it does not.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> String {
        let found = eventually(timeout, || self.log().contains(needle));
        let log = self.log();
        assert!(
            found,
            "`{needle}` not logged within {timeout:?}; log:\n{log}"
        );
        log
    }

    /// Sends SIGTERM and waits for the exit; returns its status and the whole log.
    pub fn stop(mut self) -> (ExitStatus, String) {
        // A signal that arrives before the runtime has installed its handlers kills the
        // process outright; what is under test is the daemon's shutdown, so wait until it
        // is up (or has already exited) first.
        eventually(Duration::from_secs(30), || {
            self.log().contains("pipeline(s) running")
                || matches!(self.child.try_wait(), Ok(Some(_)))
        });
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.wait(Duration::from_secs(30))
    }

    /// Kills the daemon with SIGKILL, as a crash would; returns the log.
    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.log()
    }

    /// Waits for the daemon to exit by itself.
    pub fn wait(&mut self, timeout: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait on golconde") {
                return (status, self.log());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "golconde did not exit within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `configuration` with `[stats]` served on a free port (see [`Daemon::stats_address`]).
pub fn with_stats(configuration: &str) -> String {
    configuration.replacen("[log]", "[stats]\nlisten = \"127.0.0.1:0\"\n\n[log]", 1)
}

/// `GET path` from the stats endpoint at `address`: the whole response, status line and all.
pub fn http_get(address: &str, path: &str) -> String {
    http_get_with(address, path, &[])
}

/// [`http_get`] with request headers of its own (`("Authorization", "Bearer …")`).
pub fn http_get_with(address: &str, path: &str, headers: &[(&str, &str)]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("the stats endpoint accepts");
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("asked");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("answered");
    response
}

/// The body of an HTTP response.
pub fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// `/stats` at `address`, parsed (`Null` if it is not JSON).
pub fn stats(address: &str) -> serde_json::Value {
    serde_json::from_str(body(&http_get(address, "/stats"))).unwrap_or_default()
}

/// The processes whose parent is `pid`, from `/proc`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
            fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    let after = &stat[stat.rfind(')')? + 1..];
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Whether process `pid` exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after = &stat[stat.rfind(')')? + 1..];
            after.split_whitespace().next().map(|state| state != "Z")
        })
        .unwrap_or(false)
}

/// Polls `condition` until it holds or `timeout` passes; says whether it held.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A pipeline reading `queue` of the fixture queue into the fixture table `table_file`.
/// `processor_extra` goes inside the processor's inline table (`, key = value`), and
/// `pipeline_extra` lines at the end of the pipeline.
pub fn fixture_config(
    queue: &str,
    table_file: &str,
    processor_extra: &str,
    pipeline_extra: &str,
) -> String {
    format!(
        r#"
plugin_dirs = ["{{plugins}}"]
shutdown_grace_ms = 5000
[log]
level = "info"

[transports.files]
plugin = "fixture-queue"
dir = "{{dir}}"

[databases.table]
plugin = "fixture-table"
path = "{{dir}}/{table_file}"

[[pipelines]]
name = "{queue}"
transport = "files"
queue = "{queue}"
processor = {{ plugin = "fixture-rows"{processor_extra} }}
database = "table"
table = "rows"
batch = {{ max_messages = 50, max_wait_ms = 5 }}
retry = {{ initial_backoff_ms = 10, max_backoff_ms = 100 }}
{pipeline_extra}
"#
    )
}

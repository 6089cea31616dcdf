//! The `host` part: the real `golconde run` daemon with the in-memory transport, processor
//! and database of bench/memory (the `golconde-bench-memory` library), so that nothing but
//! the host and the plugin ABI is measured. Finds that library, gives it a plugin folder of
//! its own, writes the daemon's configuration and reads the result the transport writes
//! when its queue is drained.
//!
//! Depends on the standard library. Key decision: the rate is the transport's own clock,
//! read inside the daemon from the first `receive` to the last acknowledgement, since at a
//! million messages per second the bench's polling and the daemon's start-up would be a
//! visible share of a drain of a few seconds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// The library cargo makes of bench/memory.
pub const LIBRARY: &str = "libgolconde_bench_memory.so";

/// The in-memory plugins' library: in `release` (where `scripts/bench` builds it beside
/// the daemon), else beside this executable (where a build of the workspace puts it, when
/// `release` holds only the daemon and the shipped plugins).
pub fn library(release: &Path) -> Option<PathBuf> {
    let beside_me = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(LIBRARY)));
    std::iter::once(release.join(LIBRARY))
        .chain(beside_me)
        .find(|path| path.is_file())
}

/// A plugin folder holding only a link to `library`, so that the daemon finds the
/// in-memory plugins without them being added to the folder of the real ones. The
/// daemon also searches its own folder, but loads a library only once: the link resolves
/// to the same file.
pub fn plugin_dir(scratch: &Path, library: &Path) -> Result<PathBuf> {
    let dir = scratch.join("memory-plugins");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let link = dir.join(LIBRARY);
    if !link.exists() {
        let target = library
            .canonicalize()
            .with_context(|| format!("resolving {}", library.display()))?;
        std::os::unix::fs::symlink(&target, &link)
            .with_context(|| format!("linking {} to {}", link.display(), target.display()))?;
    }
    Ok(dir)
}

/// What one daemon run drains.
pub struct Setup<'a> {
    pub plugin_dir: &'a Path,
    pub messages: u64,
    pub keys: u64,
    pub result: &'a Path,
    pub workers: u32,
    /// `batch.max_messages`; Golconde's default (500) when `None`.
    pub batch: Option<u32>,
}

/// The daemon's configuration: the in-memory transport, processor and database in one
/// pipeline, with Golconde's defaults otherwise, as the other parts run it.
pub fn config(setup: &Setup) -> String {
    format!(
        r#"{preamble}
[transports.bench]
plugin = "memory"
messages = {messages}
keys = {keys}
result = {result:?}

[databases.bench]
plugin = "memory"

[[pipelines]]
name = "bench"
transport = "bench"
queue = "users"
processor = {{ plugin = "memory" }}
database = "bench"
table = "public.users"
workers = {workers}
{batch}"#,
        preamble = crate::daemon::preamble(setup.plugin_dir),
        messages = setup.messages,
        keys = setup.keys,
        result = setup.result.display().to_string(),
        workers = setup.workers,
        batch = setup.batch.map_or(String::new(), |n| format!(
            "batch = {{ max_messages = {n} }}\n"
        )),
    )
}

/// What the in-memory transport wrote once its queue was drained.
#[derive(Debug, PartialEq, Eq)]
pub struct Outcome {
    pub messages: u64,
    /// From the first `receive` to the last acknowledgement.
    pub elapsed: Duration,
    pub acked: u64,
    pub dropped: u64,
    pub redelivered: u64,
    /// Rows and transactions the in-memory database was given.
    pub rows: u64,
    pub commits: u64,
}

impl Outcome {
    /// Reads the result file, `None` while it is not there (it is renamed into place
    /// whole).
    pub fn read(path: &Path) -> Result<Option<Outcome>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Outcome::parse(&text)
            .with_context(|| format!("reading {}: `{text}`", path.display()))
            .map(Some)
    }

    fn parse(text: &str) -> Result<Outcome> {
        let value = |key: &str| -> Result<u64> {
            text.lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix(' '))
                .with_context(|| format!("no `{key}`"))?
                .parse()
                .with_context(|| format!("`{key}` is not a count"))
        };
        Ok(Outcome {
            messages: value("messages")?,
            elapsed: Duration::from_nanos(value("elapsed_ns")?),
            acked: value("acked")?,
            dropped: value("dropped")?,
            redelivered: value("redelivered")?,
            rows: value("rows")?,
            commits: value("commits")?,
        })
    }

    /// Fails unless every message was acknowledged after its row was applied, none
    /// dropped.
    pub fn check(&self, messages: u64) -> Result<()> {
        if self.messages != messages || self.acked != messages || self.dropped != 0 {
            bail!(
                "the in-memory queue of {messages} messages ended with {} messages, {} \
                 acknowledged and {} dropped",
                self.messages,
                self.acked,
                self.dropped
            );
        }
        // Every message makes one row; a redelivered one may be applied twice.
        if self.rows < messages || self.rows > messages + self.redelivered {
            bail!(
                "the in-memory database was given {} rows for {messages} messages ({} \
                 redelivered)",
                self.rows,
                self.redelivered
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_result_is_read_and_checked() {
        let text = "messages 10\nelapsed_ns 2500\nacked 10\ndropped 0\nredelivered 2\nrows 11\ncommits 3\n";
        let outcome = Outcome::parse(text).unwrap();
        assert_eq!(outcome.elapsed, Duration::from_nanos(2500));
        assert_eq!((outcome.rows, outcome.commits), (11, 3));
        outcome.check(10).unwrap();
        assert!(outcome.check(11).is_err());
        let short = Outcome { rows: 9, ..outcome };
        assert!(short.check(10).unwrap_err().to_string().contains("9 rows"));
        assert!(Outcome::parse("messages 10\n").is_err());
    }

    #[test]
    fn the_config_names_the_memory_plugins() {
        let config = config(&Setup {
            plugin_dir: Path::new("/tmp/p"),
            messages: 100,
            keys: 25,
            result: Path::new("/tmp/r"),
            workers: 4,
            batch: Some(100),
        });
        assert!(
            config.starts_with("plugin_dirs = [\"/tmp/p\"]\n"),
            "{config}"
        );
        assert!(config.contains("messages = 100\nkeys = 25\nresult = \"/tmp/r\"\n"));
        assert!(config.contains("workers = 4\nbatch = { max_messages = 100 }\n"));
    }
}

//! How an operator steers a running daemon: signals (SIGINT and SIGTERM stop it, SIGHUP
//! reloads its configuration) and the pid file through which `golconde reload` finds it.
//!
//! Depends on `libc` and `signal-hook` only; what a reload does is [`crate::fleet`]'s.

use std::{
    io::Write as _,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use thiserror::Error;

use crate::pool::Shutdown;

#[derive(Debug, Error)]
pub enum ControlError {
    #[error("installing the signal handlers: {0}")]
    Handlers(std::io::Error),
    #[error("starting the signal thread: {0}")]
    Thread(std::io::Error),
    #[error(
        "pid file {path}: process {pid} is a running golconde; stop it first, or give this \
         daemon another `pid_file`"
    )]
    Taken { path: PathBuf, pid: i32 },
    #[error("pid file {path}: cannot write it: {source}; check that its folder exists and is writable, or change `pid_file`")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pid file {path}: cannot read it: {source}; is the daemon running with this configuration's `pid_file`?")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pid file {path}: `{text}` is not a process id")]
    Garbled { path: PathBuf, text: String },
    #[error(
        "pid file {path}: process {pid} is not a running golconde (a stale file, left by a \
         daemon that was killed); start the daemon, or remove the file"
    )]
    Stale { path: PathBuf, pid: i32 },
    #[error("sending SIGHUP to process {pid}: {source}")]
    Signal { pid: i32, source: std::io::Error },
}

/// The daemon's signal thread.
pub struct Signals {
    handle: signal_hook::iterator::Handle,
    reload: Arc<AtomicBool>,
}

impl Signals {
    /// The first SIGINT or SIGTERM starts a graceful shutdown; a second one exits at once.
    /// SIGHUP asks for a reload, which the daemon's main loop performs.
    pub fn watch(shutdown: Shutdown) -> Result<Signals, ControlError> {
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
            .map_err(ControlError::Handlers)?;
        let handle = signals.handle();
        let reload = Arc::new(AtomicBool::new(false));
        let requested = reload.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if signal == SIGHUP {
                        tracing::info!("signal {signal} (SIGHUP) received: reloading");
                        requested.store(true, Ordering::SeqCst);
                        continue;
                    }
                    if shutdown.is_triggered() {
                        tracing::warn!("second signal ({signal}): exiting now");
                        std::process::exit(130);
                    }
                    tracing::info!("signal {signal} received");
                    shutdown.trigger();
                }
            })
            .map_err(ControlError::Thread)?;
        Ok(Signals { handle, reload })
    }

    /// Whether a reload was asked for since the last call; several SIGHUPs before it count
    /// as one.
    pub fn reload_requested(&self) -> bool {
        self.reload.swap(false, Ordering::SeqCst)
    }

    pub fn close(&self) {
        self.handle.close();
    }
}

/// The daemon's process id on disk, removed again when the daemon ends.
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes this process's id to `path`, unless another golconde that is running holds it.
    pub fn write(path: PathBuf) -> Result<PidFile, ControlError> {
        if let Ok(pid) = read_pid(&path) {
            if pid != std::process::id() as i32 && is_golconde(pid) {
                return Err(ControlError::Taken { path, pid });
            }
        }
        let write = || -> std::io::Result<()> {
            // Written beside and renamed, so a reader never sees half a number.
            let partial = path.with_extension("pid.partial");
            let mut out = std::fs::File::create(&partial)?;
            writeln!(out, "{}", std::process::id())?;
            out.sync_all()?;
            std::fs::rename(&partial, &path)
        };
        write().map_err(|source| ControlError::Write {
            path: path.clone(),
            source,
        })?;
        Ok(PidFile { path })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Only our own: a second daemon may have taken the file over since.
        if read_pid(&self.path).is_ok_and(|pid| pid == std::process::id() as i32) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn read_pid(path: &Path) -> Result<i32, ControlError> {
    let text = std::fs::read_to_string(path).map_err(|source| ControlError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.trim()
        .parse::<i32>()
        .ok()
        .filter(|pid| *pid > 0)
        .ok_or_else(|| ControlError::Garbled {
            path: path.to_path_buf(),
            text: text.trim().chars().take(40).collect(),
        })
}

/// Whether `pid` runs a golconde executable (so that a stale pid file never gets an
/// unrelated process signalled).
fn is_golconde(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        let program = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        Path::new(std::ffi::OsStr::from_bytes(program))
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with("golconde"))
    })
}

/// Sends SIGHUP to the daemon whose pid is in `path`; its pid.
pub fn request_reload(path: &Path) -> Result<i32, ControlError> {
    let pid = read_pid(path)?;
    if !is_golconde(pid) {
        return Err(ControlError::Stale {
            path: path.to_path_buf(),
            pid,
        });
    }
    // SAFETY: kill(2) with a valid signal number has no memory-safety preconditions.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        return Err(ControlError::Signal {
            pid,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(pid)
}

//! Threads that run pipeline work, and what keeps them running: one supervised worker
//! abstraction for every role, exponential backoff with jitter, and the shutdown signal
//! they all watch.
//!
//! A worker is a closure run on its own named thread inside `catch_unwind` and a tracing
//! span. When it fails or panics the supervisor logs why, waits (backoff doubling up to the
//! configured maximum, reset after a healthy run) and runs it again; the closure rebuilds
//! its plugin instances each time, so a panicked plugin never gets a second call.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Condvar, Mutex, Weak,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tracing::Span;

use crate::config::RetryConfig;

/// Set once, when the daemon (or, for a [`Shutdown::child`], one pipeline) is asked to
/// stop; cheap to check, and sleepers wake up at once.
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Signal>,
}

#[derive(Default)]
struct Signal {
    flag: AtomicBool,
    /// Children to trigger with this one; the lock also orders sleepers and triggers.
    children: Mutex<Vec<Weak<Signal>>>,
    wake: Condvar,
}

impl Signal {
    fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let children = {
            let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
            std::mem::take(&mut *children)
        };
        for child in children.iter().filter_map(Weak::upgrade) {
            child.trigger();
        }
    }
}

impl Shutdown {
    pub fn trigger(&self) {
        self.inner.trigger();
    }

    pub fn is_triggered(&self) -> bool {
        self.inner.flag.load(Ordering::SeqCst)
    }

    /// A signal of its own that this one also triggers: one pipeline can be stopped (by a
    /// reload) while the daemon's shutdown still stops everything.
    pub fn child(&self) -> Shutdown {
        let child = Shutdown::default();
        {
            let mut children = self
                .inner
                .children
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if !self.is_triggered() {
                children.retain(|c| c.strong_count() > 0);
                children.push(Arc::downgrade(&child.inner));
                return child;
            }
        }
        child.trigger();
        child
    }

    /// Sleeps for `duration` unless shutdown comes first; says whether it did.
    pub fn sleep(&self, duration: Duration) -> bool {
        let signal = &*self.inner;
        let deadline = Instant::now() + duration;
        let mut guard = signal.children.lock().unwrap_or_else(|e| e.into_inner());
        while !signal.flag.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = signal
                .wake
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// Exponential backoff with full jitter in the upper half, so that many workers failing
/// together do not retry together.
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(retry: &RetryConfig) -> Backoff {
        let initial = Duration::from_millis(retry.initial_backoff_ms);
        Backoff {
            initial,
            max: Duration::from_millis(retry.max_backoff_ms),
            next: initial,
        }
    }

    /// The next wait, between half and all of the current step; the step then doubles.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = step / 2;
        half + half.mul_f64(fastrand::f64())
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Why a worker's run ended.
#[derive(Debug)]
pub enum Stop {
    /// It finished its work (shutdown, or nothing left to do): not restarted.
    Done,
    /// Something it depends on failed; restart it after a backoff.
    Restart(String),
    /// It must not go on (a message it cannot apply and cannot set aside): not restarted,
    /// and the reason is the pipeline's final error.
    Fatal(String),
}

/// How long a run must last to count as healthy and reset the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// Runs `body` on a named thread until it is done, restarting it as [`Stop`] says.
/// The thread returns the fatal error, if there was one.
pub fn supervise<F>(
    thread_name: String,
    span: Span,
    retry: RetryConfig,
    shutdown: Shutdown,
    mut body: F,
) -> std::io::Result<JoinHandle<Result<(), String>>>
where
    F: FnMut() -> Stop + Send + 'static,
{
    std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            let _entered = span.enter();
            let mut backoff = Backoff::new(&retry);
            loop {
                let started = Instant::now();
                let why = match catch_unwind(AssertUnwindSafe(&mut body)) {
                    Ok(Stop::Done) => return Ok(()),
                    Ok(Stop::Fatal(message)) => {
                        tracing::error!("stopped: {message}");
                        return Err(message);
                    }
                    Ok(Stop::Restart(why)) => why,
                    Err(payload) => format!("panicked: {}", panic_text(&*payload)),
                };
                if started.elapsed() >= HEALTHY_RUN {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                tracing::warn!("worker failed, restarting it in {delay:.1?}: {why}");
                if shutdown.sleep(delay) {
                    return Ok(());
                }
            }
        })
}

pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

/// A fixed number of supervised workers of one role, started from one factory.
pub struct WorkerPool {
    handles: Vec<JoinHandle<Result<(), String>>>,
}

impl WorkerPool {
    /// Starts `size` workers named `{pipeline}/{role}/{index}`, each inside a span with those
    /// three fields; `make(index)` builds each worker's body.
    pub fn spawn<F>(
        pipeline: &str,
        role: &'static str,
        size: usize,
        retry: RetryConfig,
        shutdown: &Shutdown,
        mut make: impl FnMut(usize) -> F,
    ) -> std::io::Result<WorkerPool>
    where
        F: FnMut() -> Stop + Send + 'static,
    {
        let handles = (0..size)
            .map(|index| {
                let span = tracing::info_span!("worker", pipeline, role, index);
                supervise(
                    format!("{pipeline}/{role}/{index}"),
                    span,
                    retry,
                    shutdown.clone(),
                    make(index),
                )
            })
            .collect::<std::io::Result<_>>()?;
        Ok(WorkerPool { handles })
    }

    pub fn is_finished(&self) -> bool {
        self.handles.iter().all(|h| h.is_finished())
    }

    /// Waits for every worker; the first fatal error, if any.
    pub fn join(self) -> Result<(), String> {
        let mut first = Ok(());
        for handle in self.handles {
            let result = handle
                .join()
                .unwrap_or_else(|p| Err(format!("worker thread panicked: {}", panic_text(&*p))));
            if first.is_ok() {
                first = result;
            }
        }
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn quick() -> RetryConfig {
        RetryConfig {
            initial_backoff_ms: 1,
            max_backoff_ms: 4,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_jitter() {
        let mut b = Backoff::new(&RetryConfig {
            initial_backoff_ms: 100,
            max_backoff_ms: 400,
        });
        let delays: Vec<Duration> = (0..5).map(|_| b.next_delay()).collect();
        let bounds = [100, 200, 400, 400, 400];
        for (d, max) in delays.iter().zip(bounds) {
            assert!(*d >= Duration::from_millis(max / 2) && *d <= Duration::from_millis(max));
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn a_panicking_worker_is_restarted_and_a_fatal_one_is_not() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let handle = supervise(
            "t".into(),
            Span::none(),
            quick(),
            Shutdown::default(),
            move || match counted.fetch_add(1, Ordering::SeqCst) {
                0 => panic!("first run"),
                1 => Stop::Restart("second run".into()),
                _ => Stop::Fatal("third run".into()),
            },
        )
        .unwrap();
        assert_eq!(handle.join().unwrap(), Err("third run".to_string()));
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_parent_stops_its_children_and_a_child_stops_alone() {
        let daemon = Shutdown::default();
        let (one, two) = (daemon.child(), daemon.child());
        one.trigger();
        assert!(one.is_triggered() && !two.is_triggered() && !daemon.is_triggered());
        let sleeper = two.clone();
        let t = std::thread::spawn(move || sleeper.sleep(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(20));
        daemon.trigger();
        assert!(t.join().unwrap());
        assert!(
            daemon.child().is_triggered(),
            "a child of a stopped parent starts stopped"
        );
    }

    #[test]
    fn shutdown_wakes_a_sleeper() {
        let shutdown = Shutdown::default();
        let waker = shutdown.clone();
        let t = std::thread::spawn(move || waker.sleep(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(20));
        shutdown.trigger();
        assert!(t.join().unwrap());
        assert!(shutdown.is_triggered());
    }
}

//! The tokio runtime a transport plugin owns: nothing async crosses the plugin boundary,
//! so each instance runs its connections on a small runtime of its own and enters it
//! with `block_on` from the host's threads.
//!
//! May depend on: tokio.

use std::ops::Deref;

/// A runtime with one worker thread. Dropping it does not wait for its tasks: a
/// connection still open then is simply closed, and the server gives back what it had
/// delivered and not seen acknowledged.
pub struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    /// Starts the runtime; its thread is named `thread_name` (`golconde-nats`).
    pub fn new(thread_name: &str) -> std::io::Result<Runtime> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(thread_name)
            .enable_io()
            .enable_time()
            .build()
            .map(|r| Runtime(Some(r)))
    }
}

impl Deref for Runtime {
    type Target = tokio::runtime::Runtime;
    fn deref(&self) -> &tokio::runtime::Runtime {
        self.0.as_ref().expect("present until dropped")
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_drops_without_waiting_for_its_tasks() {
        let runtime = Runtime::new("golconde-test").unwrap();
        assert_eq!(runtime.block_on(async { 6 * 7 }), 42);
        runtime.spawn(std::future::pending::<()>());
        let started = std::time::Instant::now();
        drop(runtime);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}

//! The suites' own tests: plugins written to pass them, and the same with one flaw each,
//! which the suites must report, by the name of the check that caught it, and nothing
//! else. The fixtures keep their data in memory, so the suites' verdicts can be tested
//! without a broker or a database; the shipped plugins' own tests run the suites against
//! real ones.

mod memory_db;
mod memory_queue;
mod processors;

use std::{
    io::Read,
    net::{SocketAddr, TcpStream},
    panic::{catch_unwind, AssertUnwindSafe},
    time::Duration,
};

use crate::PluginError;

crate::export_plugins! {
    processor: processors::Tidy,
    processor: processors::Sloppy,
    database: memory_db::Memory,
    transport: memory_queue::MemoryQueue,
}

/// Runs a suite; the names of the checks its report says failed, none if it passed.
fn failures(suite: impl FnOnce()) -> Vec<String> {
    let Err(payload) = catch_unwind(AssertUnwindSafe(suite)) else {
        return Vec::new();
    };
    let report = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_else(|| panic!("the suite panicked without a report"));
    assert!(report.contains("checks failed"), "{report}");
    report
        .lines()
        .filter_map(|line| line.strip_prefix("  - "))
        .map(str::to_string)
        .collect()
}

/// What a fixture does to "connect" to `address`: a real connection with short timeouts,
/// so that the suites' reachability checks see what a real plugin does (the fixtures
/// never find a server there).
fn reach(address: &str) -> Result<(), PluginError> {
    let addr: SocketAddr = address
        .parse()
        .map_err(|e| PluginError::config(format!("`address` {address}: {e}")))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map_err(|e| PluginError::transient(format!("cannot connect to {address}: {e}")))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut byte = [0u8];
    match stream.read_exact(&mut byte) {
        Ok(()) => Err(PluginError::transient(format!(
            "{address} is no server of ours"
        ))),
        Err(e) => Err(PluginError::transient(format!(
            "no answer from {address}: {e}"
        ))),
    }
}

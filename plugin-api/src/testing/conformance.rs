//! Conformance suites: the contract the host relies on, checked against a plugin in its
//! own `#[test]`s, through the real ABI.
//!
//! Each suite builds the plugin with [`super::build_transport`] (and its siblings), runs
//! every check, prints each one's outcome to stderr, and at the end panics, as `assert!`
//! does, with a report that lists every check that failed and why. A check that cannot run
//! because an earlier step failed is listed as failed too, saying which step.
//!
//! What every kind is checked for:
//! - it describes itself: `NAME`, `VERSION` and `DESCRIPTION` are not empty, and the
//!   library (the suite's `library`) lists it under its kind with the same words, offers
//!   `golconde.construct` 1 for it, and builds it from the suite's configuration through
//!   both constructors (1.0 and 1.1);
//! - its configuration is checked: the suite's `config` builds; the same with an unknown
//!   key ([`UNKNOWN_KEY`]) is a [`ErrorKind::Config`] error whose message names the key;
//!   JSON that is not an object (`null`, `42`, `"text"`, `true`, `[]`) and text that is not
//!   JSON are `Config` errors;
//! - errors cost nothing lasting: after the calls that failed, a new instance built from
//!   the same configuration works.
//!
//! Transports and databases, given `config_at`, are also checked to never connect while
//! being built (the suite listens on a port and sees nobody come), and to answer a server
//! that does not answer, and an address where nothing listens, with a
//! [`ErrorKind::Transient`] error in bounded time (an unreachable broker or database is
//! infrastructure, which the host waits for). What each kind is checked for besides is in
//! [`processor`], [`database`] and [`transport`].
//!
//! Every call into the plugin runs on a thread of its own and is given `time_limit`: a call
//! that does not return in time is reported as hung (and its thread left behind).

mod database;
mod processor;
mod transport;

#[cfg(test)]
mod tests;

pub use database::{database, DatabaseSuite, KeyKind};
pub use processor::{processor, ProcessorSuite};
pub use transport::{transport, TransportSuite};

use std::{
    fmt::Write as _,
    net::TcpListener,
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::{Map, Value as Json};

use crate::{
    abi::{Constructor, HostContext, PluginKind},
    error::{ErrorKind, PluginError},
    sdk::Plugin,
};

use super::{construct_table, Library};

/// The configuration key the suites add to the author's configuration, which the plugin
/// must refuse by name.
pub const UNKNOWN_KEY: &str = "golconde_conformance_unknown_key";

/// How long a call into the plugin may take before it is reported as hung, unless a suite
/// sets its own `time_limit`.
pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(10);

/// Builds a configuration for a server at a host and port; see the suites' `config_at`.
pub type ConfigAt = Box<dyn Fn(&str, u16) -> String>;

/// Reads a row back by its key, outside the plugin; see [`DatabaseSuite::read`].
pub type ReadRow = Box<dyn Fn(&str) -> Option<String>>;

/// Deletes a queue by its name; see [`TransportSuite::delete_queue`].
pub type DeleteQueue = Box<dyn Fn(&str)>;

/// The outcome of every check of one suite run.
struct Report {
    title: String,
    passed: usize,
    failed: Vec<(String, String)>,
}

impl Report {
    fn new(kind: PluginKind, name: &str) -> Report {
        let title = format!("conformance of {kind} `{name}`");
        eprintln!("{title}:");
        Report {
            title,
            passed: 0,
            failed: Vec::new(),
        }
    }

    /// Records one check.
    fn check(&mut self, what: &str, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                eprintln!("  ok    {what}");
                self.passed += 1;
            }
            Err(why) => {
                eprintln!("  FAIL  {what}: {why}");
                self.failed.push((what.to_string(), why));
            }
        }
    }

    /// Records a check whose outcome is `ok`, with `why` if it is not.
    fn expect(&mut self, what: &str, ok: bool, why: impl FnOnce() -> String) {
        self.check(what, if ok { Ok(()) } else { Err(why()) });
    }

    /// Panics with every failed check, if any failed.
    fn finish(self) {
        if self.failed.is_empty() {
            eprintln!("{}: all {} checks passed", self.title, self.passed);
            return;
        }
        let mut text = format!(
            "{}: {} of {} checks failed\n",
            self.title,
            self.failed.len(),
            self.failed.len() + self.passed
        );
        for (what, why) in &self.failed {
            let _ = writeln!(text, "  - {what}\n      {}", why.replace('\n', "\n      "));
        }
        panic!("{text}");
    }
}

/// Runs `f` on a thread of its own and waits at most `limit` for it.
///
/// # Errors
/// The call did not return in time (its thread is left running), or panicked (which the
/// SDK should have made an error).
fn bounded<R: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, String> {
    let (sender, receiver) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("golconde-conformance-call".into())
        .spawn(move || {
            let _ = sender.send(f());
        });
    if let Err(e) = spawned {
        return Err(format!("{what}: cannot start a thread for the call: {e}"));
    }
    match receiver.recv_timeout(limit) {
        Ok(result) => Ok(result),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(format!(
            "{what} did not return within {limit:?} (the suite's `time_limit`): a call must \
             never hang; bound it with a timeout of the plugin's own"
        )),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(format!(
            "{what} unwound through the ABI instead of returning an error"
        )),
    }
}

/// Shows an error as the checks report it.
fn show(e: &PluginError) -> String {
    format!("{} error: {}", e.kind, e.message)
}

/// The author's configuration as a JSON object.
fn config_object(config: &str) -> Result<Map<String, Json>, String> {
    match serde_json::from_str::<Json>(config) {
        Ok(Json::Object(map)) => Ok(map),
        Ok(other) => Err(format!(
            "the suite's `config` must be a JSON object (the plugin's section), not {other}"
        )),
        Err(e) => Err(format!("the suite's `config` is not JSON: {e}")),
    }
}

/// Checks that describe the plugin, and the library that exports it. `build` builds the
/// instance from the library's own constructor of the right kind (1.0 and 1.1).
fn describe<P: Plugin>(
    report: &mut Report,
    kind: PluginKind,
    library: Option<&Library>,
    config: &str,
) {
    for (constant, value) in [
        ("NAME", P::NAME),
        ("VERSION", P::VERSION),
        ("DESCRIPTION", P::DESCRIPTION),
    ] {
        report.expect(
            &format!("describes itself: `{constant}` is not empty"),
            !value.trim().is_empty(),
            || format!("`Plugin::{constant}` is {value:?}"),
        );
    }
    let what = "the library lists it, offers `golconde.construct` 1 for it, and builds it";
    let Some(library) = library else {
        report.check(
            what,
            Err("the suite's `library` is not set: set it to \
                 `Some(golconde_plugin_api::testing::library!(your_crate))`"
                .into()),
        );
        return;
    };
    report.check(what, listed::<P>(kind, library, config));
}

fn listed<P: Plugin>(kind: PluginKind, library: &Library, config: &str) -> Result<(), String> {
    let entries = library.entries()?;
    let named: Vec<_> = entries
        .iter()
        .filter(|e| e.name.as_str() == P::NAME && e.constructor.kind() == kind)
        .collect();
    let entry =
        match named.as_slice() {
            [entry] => entry,
            [] => {
                let listed: Vec<String> = entries
                    .iter()
                    .map(|e| format!("{} `{}`", e.constructor.kind(), e.name))
                    .collect();
                return Err(format!(
                "`export_plugins!` does not list {kind} `{}`; it lists: {}. (If the test links \
                 another plugin crate too, the linker kept that crate's `export_plugins!` \
                 statics for both: test each plugin in a binary that links only it.)",
                P::NAME,
                if listed.is_empty() { "nothing".into() } else { listed.join(", ") }
            ));
            }
            _ => {
                return Err(format!(
                    "`export_plugins!` lists {kind} `{}` {} times",
                    P::NAME,
                    named.len()
                ))
            }
        };
    if entry.version.as_str() != P::VERSION || entry.description.as_str() != P::DESCRIPTION {
        return Err(format!(
            "the library's entry says version {:?} and description {:?}, the type {:?} and {:?}",
            entry.version.as_str(),
            entry.description.as_str(),
            P::VERSION,
            P::DESCRIPTION
        ));
    }
    let context = || HostContext {
        instance: crate::RString::from(super::INSTANCE),
        log: super::sink(Some(super::INSTANCE)),
    };
    let json = abi_stable::std_types::RStr::from_str(config);
    let v0 = match entry.constructor {
        Constructor::Transport(f) => f(json, context()).into_result().map(drop),
        Constructor::Processor(f) => f(json, context()).into_result().map(drop),
        Constructor::Database(f) => f(json, context()).into_result().map(drop),
    };
    v0.map_err(|e| {
        format!(
            "its ABI 1.0 constructor refuses the suite's `config`: {}",
            show(&e)
        )
    })?;
    let extensions: Vec<_> = library
        .extensions()?
        .into_iter()
        .filter(|e| e.plugin.as_str() == P::NAME && e.kind.as_str() == kind.as_str())
        .collect();
    let table = construct_table(&extensions)
        .ok_or_else(|| {
            format!(
                "the library offers no `golconde.construct` 1 for {kind} `{}`",
                P::NAME
            )
        })?
        .map_err(|e| format!("its `golconde.construct` 1 has another layout: {e}"))?;
    (table.construct)(json, context(), &super::services())
        .into_result()
        .map(drop)
        .map_err(|e| {
            format!(
                "its `golconde.construct` 1 refuses the suite's `config`: {}",
                show(&e)
            )
        })
}

/// The configuration checks every kind shares. `build` builds an instance from JSON text
/// and drops it.
fn configuration(
    report: &mut Report,
    config: &Map<String, Json>,
    limit: Duration,
    build: impl Fn(String) -> Result<(), PluginError> + Send + Sync + Clone + 'static,
) {
    let mut unknown = config.clone();
    unknown.insert(UNKNOWN_KEY.into(), Json::from(1));
    let json = Json::Object(unknown).to_string();
    let built = {
        let build = build.clone();
        let json = json.clone();
        bounded(limit, "building", move || build(json))
    };
    report.check(
        &format!("refuses an unknown key (`{UNKNOWN_KEY}`) with a config error naming it"),
        match built {
            Err(hung) => Err(hung),
            Ok(Ok(())) => Err(format!("{json} was accepted")),
            Ok(Err(e)) if e.kind == ErrorKind::Config && e.message.contains(UNKNOWN_KEY) => Ok(()),
            Ok(Err(e)) => Err(format!(
                "{json} was refused with {}; expected a config error naming `{UNKNOWN_KEY}`",
                show(&e)
            )),
        },
    );
    for json in ["null", "42", "\"text\"", "true", "[]", "{\"unclosed\": "] {
        let built = {
            let build = build.clone();
            bounded(limit, "building", move || build(json.to_string()))
        };
        report.check(
            &format!("refuses `{json}` as its configuration with a config error"),
            match built {
                Err(hung) => Err(hung),
                Ok(Ok(())) => Err("it was accepted".into()),
                Ok(Err(e)) if e.kind == ErrorKind::Config => Ok(()),
                Ok(Err(e)) => Err(format!(
                    "refused with {}; expected a config error",
                    show(&e)
                )),
            },
        );
    }
}

/// What a connecting call answered, judged as the host needs it: a transient error.
fn transient_failure(outcome: Result<Result<(), PluginError>, String>) -> Result<(), String> {
    match outcome {
        Err(hung) => Err(hung),
        Ok(Ok(())) => Err("it succeeded, though nothing can be reached there".into()),
        Ok(Err(e)) if e.kind == ErrorKind::Transient => Ok(()),
        Ok(Err(e)) => Err(format!(
            "it answered {}; an unreachable server is infrastructure, which the host waits \
             for only if the error is transient",
            show(&e)
        )),
    }
}

/// The checks of a plugin built for a server that is not there. `build` builds from JSON
/// text; `connect` makes the plugin's first connection (a transport's `ping`, a
/// database's `connect`).
fn reachability<B: Send + Sync + 'static>(
    report: &mut Report,
    config_at: Option<&ConfigAt>,
    limit: Duration,
    build: impl Fn(String) -> Result<B, PluginError> + Send + Sync + Clone + 'static,
    connect: impl Fn(&B) -> Result<(), PluginError> + Send + Sync + Clone + 'static,
    connecting: &str,
) {
    // A plugin with no server (files, an embedded database) has nothing to reach.
    let Some(config_at) = config_at else {
        return;
    };
    let listener = match TcpListener::bind("127.0.0.1:0") {
        Ok(listener) => listener,
        Err(e) => {
            report.check(
                "building never connects",
                Err(format!("the suite cannot listen on 127.0.0.1: {e}")),
            );
            return;
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let _ = listener.set_nonblocking(true);
    let json = config_at("127.0.0.1", port);
    let built = {
        let build = build.clone();
        let json = json.clone();
        bounded(limit, "building", move || {
            build(json).map(std::sync::Arc::new)
        })
    };
    let instance = match built {
        Ok(Ok(instance)) => {
            let came = listener.accept().is_ok();
            report.expect("building never connects", !came, || {
                format!("building from {json} connected to 127.0.0.1:{port}")
            });
            Some(instance)
        }
        Ok(Err(e)) => {
            report.check(
                "building never connects",
                Err(format!("building from {json} failed: {}", show(&e))),
            );
            None
        }
        Err(hung) => {
            report.check(
                "building never connects",
                Err(format!("building from {json}: {hung}")),
            );
            None
        }
    };
    if let Some(instance) = instance {
        // The port accepts connections (into its backlog) and never says a word.
        let started = Instant::now();
        let outcome = {
            let connect = connect.clone();
            let instance = instance.clone();
            bounded(limit, connecting, move || connect(&instance))
        };
        let waited = started.elapsed();
        report.check(
            &format!("{connecting} to a server that never answers is a transient error in time"),
            transient_failure(outcome).map_err(|e| format!("{e} (after {waited:?})")),
        );
    }
    drop(listener);
    // Nothing listens on the port now (another process taking it meanwhile is unlikely).
    let outcome = {
        let build = build.clone();
        let connect = connect.clone();
        let json = config_at("127.0.0.1", port);
        bounded(limit, connecting, move || {
            let instance = build(json)
                .map_err(|e| PluginError::new(e.kind, format!("building failed: {}", e.message)))?;
            connect(&instance)
        })
    };
    report.check(
        &format!("{connecting} where nothing listens is a transient error"),
        transient_failure(outcome),
    );
}

/// A number that differs between runs and processes, to keep names and keys apart.
fn run_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000)
        .unwrap_or(0);
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

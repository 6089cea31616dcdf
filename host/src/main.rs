//! `golconde`: the replication daemon and its command line.
//!
//! The binary is the only place that knows about processes, signals and exit codes; the
//! stages it drives each live in their own module, in the order data flows through them:
//! [`config`] (file → typed values), [`loader`] (plugin libraries → plugins), [`assemble`]
//! (config + plugins → built instances, nothing running), [`pipeline`] and [`pool`]
//! (running threads). `anyhow` stops here: the modules return their own errors.

mod assemble;
mod capture;
mod child;
mod config;
mod control;
mod fleet;
mod loader;
mod logging;
mod pipeline;
mod place;
mod pool;
mod replay;
mod route;
mod scaffold;
mod send;
mod stats;
mod supervise;
mod tables;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};

use crate::{
    assemble::Assembly,
    config::ConfigFile,
    control::{PidFile, Signals},
    fleet::Fleet,
    loader::Registry,
    pool::Shutdown,
};

/// jemalloc, for the daemon and for every plugin library it loads. Built unprefixed, it
/// defines `malloc`, `free` and the rest in this executable, and the dynamic linker
/// resolves every library's calls to the executable's definitions first: the plugins,
/// whatever their language, allocate from it too, with no change on their side (a
/// library's own `#[global_allocator]`, if it has one, still wins for its Rust code).
///
/// Why: a pipeline allocates a handful of small blocks per message (the delivery, its
/// headers, the parsed change, its columns) on one thread and frees most of them on
/// another. glibc's malloc spent close to a third of a STOMP pipeline's CPU on that
/// (consolidating free lists, taking arena locks). With jemalloc a drain costs 8-18% less
/// CPU per message, for a few MB more resident memory.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Golconde moves data changes from message queues into databases.
///
/// It consumes JSON change messages from a broker (AMQP, STOMP), applies them to an
/// authoritative database in transactions, and fans them out to further queues for
/// replicas. Transports, processors and databases are plugins loaded from shared libraries.
#[derive(Parser)]
#[command(version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum CaptureAction {
    /// Install (or bring up to date) the trigger that writes each inserted, updated or
    /// deleted row of --table to the outbox, in the same transaction. Idempotent, in one
    /// transaction; creates the outbox if missing. Needs PostgreSQL 12+ and a primary key.
    Install {
        /// The configuration file; --database names one of its `[databases.NAME]`.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The `[databases.NAME]` (plugin `postgres`) holding the table.
        #[arg(long, value_name = "NAME")]
        database: String,
        /// The table to capture: `schema.table`, or `table` (found by `search_path`).
        /// Messages name the table as written here.
        #[arg(long, value_name = "TABLE")]
        table: String,
        /// The outbox table: the `queue` of a `pgoutbox` transport.
        #[arg(long, value_name = "TABLE", default_value = "golconde.outbox")]
        outbox: String,
        /// Print the SQL instead of running it (to review, or to install by hand).
        #[arg(long)]
        print: bool,
    },
    /// Remove the capture triggers of --table; the outbox and what it holds stay.
    Uninstall {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long, value_name = "NAME")]
        database: String,
        #[arg(long, value_name = "TABLE")]
        table: String,
        /// Print the SQL instead of running it.
        #[arg(long)]
        print: bool,
    },
    /// List the captured tables of the database, their outboxes and what waits in them.
    Status {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long, value_name = "NAME")]
        database: String,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run every pipeline of a configuration file in the foreground until SIGINT or SIGTERM.
    ///
    /// On a signal Golconde stops consuming, finishes and acknowledges the batches in
    /// flight (for at most `shutdown_grace_ms`), and exits 0; anything unacknowledged stays
    /// on the broker. A second signal exits at once.
    Run {
        /// The configuration file (TOML); see docs/configuration.md.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Also look for plugin libraries here (before `plugin_dirs` of the file).
        #[arg(long = "plugin-dir", value_name = "DIR")]
        plugin_dirs: Vec<PathBuf>,
    },
    /// Ask a running daemon to read its configuration file again, without a restart.
    ///
    /// Checks FILE as `golconde check` does (a file with problems is refused here, and the
    /// daemon is not disturbed), then sends SIGHUP to the daemon whose process id is in
    /// the file's `pid_file` (or --pid-file). The daemon checks the file once more, then
    /// drains and stops removed pipelines, starts new ones, and drains and restarts changed
    /// ones with their new settings; pipelines whose settings did not change never pause.
    /// Its log says what it did. `kill -HUP PID` does the same.
    Reload {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The daemon's pid file, instead of the configuration's `pid_file`.
        #[arg(long, value_name = "FILE")]
        pid_file: Option<PathBuf>,
        #[arg(long = "plugin-dir", value_name = "DIR")]
        plugin_dirs: Vec<PathBuf>,
    },
    /// Check a configuration file without running it.
    ///
    /// Parses the file, loads every plugin it names, has each plugin validate its own
    /// section, and prints a summary. Exits 1 if anything is wrong.
    Check {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// Also connect to every transport and database, and disconnect again.
        #[arg(long)]
        connect: bool,
        #[arg(long = "plugin-dir", value_name = "DIR")]
        plugin_dirs: Vec<PathBuf>,
    },
    /// Publish JSON change messages, one per line, to a queue.
    ///
    /// Reads FILE (or standard input when FILE is `-` or absent), gives each message a
    /// unique `message-id`, waits until the broker confirmed every one, and prints how many
    /// were confirmed. A line that is not JSON is reported with its number and not sent;
    /// the exit status is then 1.
    Send {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The `[transports.NAME]` section to publish through.
        #[arg(long, value_name = "NAME")]
        transport: String,
        /// The queue (or destination) to publish to.
        #[arg(long, value_name = "QUEUE")]
        queue: String,
        /// JSON lines to send; `-` or nothing for standard input.
        input: Option<PathBuf>,
        #[arg(long = "plugin-dir", value_name = "DIR")]
        plugin_dirs: Vec<PathBuf>,
    },
    /// Move the messages of a pipeline's dead-letter queue back to its source queue.
    ///
    /// For after the cause is fixed (a column added, a limit raised): each message goes back
    /// to the pipeline's `transport` and `queue` with its original body and headers, without
    /// the `x-golconde-*` headers dead-lettering added, and with `x-golconde-replayed` (the
    /// time of the replay). Each is published and confirmed by the broker before it is
    /// acknowledged on the dead-letter queue, so a crash leaves a message on both queues,
    /// never on neither. Messages not moved stay on the dead-letter queue, in order.
    ///
    /// Stops when the dead-letter queue has nothing more for 1.5 s, at --limit, or at the
    /// first message this run moved that comes back (a daemon running the pipeline
    /// dead-lettered it again): no message is moved twice in one run. Prints one line per
    /// message and a summary of what was moved and what was left, and why. Exits 1 on an
    /// error; what was not moved stays where it was.
    Replay {
        /// The configuration file (TOML) declaring the pipeline and its transports.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        /// The pipeline (`name` of a `[[pipelines]]` entry) whose `dead_letter` queue to
        /// move back.
        #[arg(long, value_name = "NAME")]
        pipeline: String,
        /// Move at most N messages; the ones after them stay on the dead-letter queue.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// Move only messages whose `x-golconde-error` header contains TEXT, ignoring case;
        /// the others stay on the dead-letter queue, untouched and in order.
        #[arg(long = "where-error", value_name = "TEXT")]
        where_error: Option<String>,
        /// Print what would be moved; move nothing and acknowledge nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also look for plugin libraries here (before `plugin_dirs` of the file).
        #[arg(long = "plugin-dir", value_name = "DIR")]
        plugin_dirs: Vec<PathBuf>,
    },
    /// Capture a PostgreSQL table's changes into an outbox, in the transaction that makes
    /// them, for the `pgoutbox` transport to consume (see docs/capture.md).
    Capture {
        #[command(subcommand)]
        action: CaptureAction,
    },
    /// List the plugins found in plugin directories, and the libraries that were refused.
    ///
    /// Searches each --plugin-dir, then the `plugin_dirs` of --config FILE (if given), then
    /// $GOLCONDE_PLUGIN_PATH, then the folder the golconde executable is in: the same
    /// folders, in the same order, as `run` and `check` with that file. Starts nothing.
    Plugins {
        /// Also search the `plugin_dirs` of this configuration file.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(long = "plugin-dir", value_name = "DIR")]
        plugin_dirs: Vec<PathBuf>,
    },
    /// Run one pipeline of a configuration file in this process, for a daemon supervising
    /// it (`isolation = "process"`): it talks to the daemon over standard output.
    #[command(hide = true)]
    RunPipeline {
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long, value_name = "NAME")]
        pipeline: String,
        #[arg(long = "plugin-dir", value_name = "DIR")]
        plugin_dirs: Vec<PathBuf>,
    },
    /// Write a new plugin crate, ready to build out of tree.
    ///
    /// Creates DIR/NAME (DIR defaults to the current folder) holding a Cargo project for a
    /// KIND plugin named NAME: a minimal implementation, a test that runs the conformance
    /// suite of `golconde_plugin_api::testing`, and a README saying how to build, test and
    /// load it. Refuses to write into an existing folder.
    NewPlugin {
        /// transport, processor or database.
        #[arg(value_name = "KIND")]
        kind: String,
        /// The plugin's name, as configuration files will say `plugin = "NAME"`.
        #[arg(value_name = "NAME")]
        name: String,
        /// Where to create the crate's folder.
        #[arg(long, value_name = "DIR", default_value = ".")]
        path: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            config,
            plugin_dirs,
        } => run(&config, plugin_dirs),
        Command::Check {
            config,
            connect,
            plugin_dirs,
        } => check(&config, connect, plugin_dirs),
        Command::Reload {
            config,
            pid_file,
            plugin_dirs,
        } => reload(&config, pid_file, plugin_dirs),
        Command::Plugins {
            config,
            plugin_dirs,
        } => plugins(config.as_deref(), plugin_dirs),
        Command::Capture { action } => {
            let (config, database, action, print) = match action {
                CaptureAction::Install {
                    config,
                    database,
                    table,
                    outbox,
                    print,
                } => (
                    config,
                    database,
                    capture::Action::Install { table, outbox },
                    print,
                ),
                CaptureAction::Uninstall {
                    config,
                    database,
                    table,
                    print,
                } => (
                    config,
                    database,
                    capture::Action::Uninstall { table },
                    print,
                ),
                CaptureAction::Status { config, database } => {
                    (config, database, capture::Action::Status, false)
                }
            };
            capture::run(&config, &database, action, print).map(|()| ExitCode::SUCCESS)
        }
        Command::RunPipeline {
            config,
            pipeline,
            plugin_dirs,
        } => Ok(child::run(&config, &pipeline, |file| {
            search_path(plugin_dirs, Some(file))
        })),
        Command::NewPlugin { kind, name, path } => {
            scaffold::new_plugin(&kind, &name, &path).map(|dir| {
                println!(
                    "wrote {kind} plugin `{name}` to {}; see its README.md",
                    dir.display()
                );
                ExitCode::SUCCESS
            })
        }
        Command::Send {
            config,
            transport,
            queue,
            input,
            plugin_dirs,
        } => send_lines(&config, &transport, &queue, input.as_deref(), plugin_dirs),
        Command::Replay {
            config,
            pipeline,
            limit,
            where_error,
            dry_run,
            plugin_dirs,
        } => {
            let options = replay::Options {
                pipeline,
                limit,
                where_error,
                dry_run,
            };
            replay::run(&config, &options, |file| {
                search_path(plugin_dirs, Some(file))
            })
            .map_err(Into::into)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("golconde: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Plugin directories in search order: the command line's, the file's, the environment's,
/// and last the executable's own folder (where `cargo build` puts the plugins too).
fn search_path(cli_dirs: Vec<PathBuf>, file: Option<&ConfigFile>) -> Vec<PathBuf> {
    let mut dirs = cli_dirs;
    match file {
        Some(file) => dirs.extend(file.plugin_dirs()),
        None => dirs.extend(config::plugin_path_from_env()),
    }
    if let Some(own) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
    {
        dirs.push(own);
    }
    dirs
}

fn plugins(config: Option<&Path>, cli_dirs: Vec<PathBuf>) -> anyhow::Result<ExitCode> {
    let file = config.map(ConfigFile::load).transpose()?;
    let registry = Registry::discover(&search_path(cli_dirs, file.as_ref()));
    let mut plugins = registry.plugins.clone();
    plugins.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    let rows: Vec<[String; 6]> = plugins
        .iter()
        .map(|p| {
            [
                p.kind.to_string(),
                p.name.clone(),
                p.version.clone(),
                p.abi.to_string(),
                p.description.clone(),
                p.file.display().to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            ["KIND", "NAME", "VERSION", "ABI", "DESCRIPTION", "FILE"],
            &rows
        )
    );
    for refused in &registry.refused {
        println!(
            "{}: incompatible: {}",
            refused.file.display(),
            refused.reason
        );
    }
    if plugins.is_empty() && registry.refused.is_empty() {
        let searched: Vec<String> = registry
            .searched
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        println!("no plugin libraries found in [{}]", searched.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// Rows under a header, each column as wide as its widest cell; the last column, which may
/// be long (a path), is not padded.
fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = header.map(String::from);
    for row in std::iter::once(&header).chain(rows) {
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.push('\n');
    }
    out
}

fn load(path: &Path, cli_dirs: Vec<PathBuf>) -> anyhow::Result<(ConfigFile, Registry)> {
    let file = ConfigFile::load(path)?;
    let registry = Registry::discover(&search_path(cli_dirs, Some(&file)));
    Ok((file, registry))
}

fn check(path: &Path, connect: bool, cli_dirs: Vec<PathBuf>) -> anyhow::Result<ExitCode> {
    let (file, registry) = load(path, cli_dirs)?;
    let assembly = Assembly::build(&file, &registry);
    let mut problems: Vec<String> = assembly.problems.iter().map(ToString::to_string).collect();
    if let Err(e) = logging::filter(&file.config.log) {
        problems.push(format!("{}: {e}", file.path.display()));
    }
    println!("{}: parsed", file.path.display());
    // With --connect, each connection is tried once; a failure is a problem, not a stop.
    let mut report = |kind: &str,
                      section: &str,
                      plugin: &loader::PluginInfo,
                      name: &str,
                      tried: Option<Result<(), String>>| {
        let mut line = format!(
            "  {kind} {name}: {} {} ({})",
            plugin.name,
            plugin.version,
            plugin.file.display()
        );
        match tried {
            Some(Ok(())) => line.push_str(", connected"),
            Some(Err(e)) => problems.push(format!("[{section}.{name}]: cannot connect: {e}")),
            None => {}
        }
        println!("{line}");
    };
    for t in assembly.transports.values() {
        let tried = connect.then(|| t.get().ping().into_result().map_err(|e| e.message.into()));
        report("transport", "transports", &t.plugin, &t.name, tried);
    }
    for d in assembly.databases.values() {
        let tried = connect.then(|| {
            d.get()
                .connect()
                .into_result()
                .map(drop)
                .map_err(|e| e.message.into())
        });
        report("database", "databases", &d.plugin, &d.name, tried);
    }
    for p in &assembly.pipelines {
        let c = &p.config;
        let mut line = format!(
            "  pipeline {}: {}:{} -> {} -> {}",
            c.name, c.transport, c.queue, c.processor.plugin, c.database
        );
        if let Some(table) = &c.table {
            line.push_str(&format!(" ({table})"));
        }
        line.push_str(&format!(
            ", {} worker(s), batches of up to {} messages or {} ms",
            c.workers, c.batch.max_messages, c.batch.max_wait_ms
        ));
        if let Some(dead) = &c.dead_letter {
            line.push_str(&format!(
                ", dead letters to {}:{}",
                dead.transport, dead.queue
            ));
        }
        for target in &c.fan_out {
            line.push_str(&format!(
                ", fan-out to {}:{}",
                target.transport, target.queue
            ));
        }
        println!("{line}");
    }
    if problems.is_empty() {
        println!("ok");
        Ok(ExitCode::SUCCESS)
    } else {
        for problem in &problems {
            println!("problem: {problem}");
        }
        println!("{} problem(s)", problems.len());
        Ok(ExitCode::FAILURE)
    }
}

fn reload(
    path: &Path,
    pid_file: Option<PathBuf>,
    cli_dirs: Vec<PathBuf>,
) -> anyhow::Result<ExitCode> {
    const KEPT: &str = "not reloaded: the daemon keeps running as it is";
    let file = match ConfigFile::load(path) {
        Ok(file) => file,
        Err(e) => {
            println!("problem: {e}\n{KEPT}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let Some(pid_file) = pid_file.or_else(|| file.pid_file()) else {
        bail!(
            "{}: no `pid_file` to find the daemon by: set `pid_file` in the file (and restart \
             the daemon once), pass --pid-file, or send SIGHUP to the daemon yourself",
            path.display()
        );
    };
    if check(path, false, cli_dirs)? != ExitCode::SUCCESS {
        println!("{KEPT}");
        return Ok(ExitCode::FAILURE);
    }
    let pid = control::request_reload(&pid_file)?;
    println!(
        "asked golconde (pid {pid}) to reload {}; its log says what changed",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn run(path: &Path, cli_dirs: Vec<PathBuf>) -> anyhow::Result<ExitCode> {
    let file = ConfigFile::load(path)?;
    logging::init(&file.config.log).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    // Watched before plugins load, so a stop requested during a slow start is still a
    // graceful one: the pipelines start, see the shutdown, and the process exits 0.
    let shutdown = Shutdown::default();
    let signals = Signals::watch(shutdown.clone())?;
    let stats = stats::Stats::default();
    if let Some(listen) = &file.config.stats.listen {
        let token = file.stats_token()?;
        let guarded = if token.is_some() {
            ", with a token"
        } else {
            ""
        };
        let address = stats::serve(listen, token, stats.clone(), shutdown.clone())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        tracing::info!(
            "serving counters on http://{address}/stats and /metrics, the dashboard on \
             http://{address}/{guarded}"
        );
    }
    let mut fleet = Fleet::start(&file, path, cli_dirs, &shutdown, stats)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if fleet.len() == 0 {
        bail!(
            "{}: no pipeline could be started{}",
            path.display(),
            if file.config.pipelines.is_empty() {
                " (the file declares none)"
            } else {
                "; see the errors above"
            }
        );
    }
    let _pid_file = file.pid_file().map(PidFile::write).transpose()?;
    let in_processes = fleet.in_processes();
    tracing::info!(
        "{} pipeline(s) running{}",
        fleet.len(),
        if in_processes == 0 {
            String::new()
        } else {
            format!(", {in_processes} in processes of their own")
        }
    );

    let mut grace = Duration::from_millis(file.config.shutdown_grace_ms);
    while !shutdown.is_triggered() && !fleet.all_finished() {
        if signals.reload_requested() {
            tracing::info!("reloading {}", path.display());
            match fleet.reload() {
                Ok(outcome) => tracing::info!("reloaded {}: {outcome}", path.display()),
                Err(e) => tracing::error!(
                    "reload refused, the running pipelines are kept as they are: {e}"
                ),
            }
            if let Ok(file) = ConfigFile::load(path) {
                grace = Duration::from_millis(file.config.shutdown_grace_ms);
            }
            continue;
        }
        shutdown.sleep(Duration::from_millis(200));
    }
    if shutdown.is_triggered() {
        tracing::info!("stopping: finishing batches in flight (for at most {grace:.0?})");
    }
    // Supervisors give their children the same grace, and a moment to report.
    let deadline = Instant::now() + grace + Duration::from_secs(2);
    while !fleet.all_finished() {
        if Instant::now() >= deadline {
            tracing::warn!(
                "grace period over with batches still in flight; their messages stay on the \
                 broker and will be redelivered"
            );
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let failed = fleet.join();
    signals.close();
    if shutdown.is_triggered() {
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    } else {
        tracing::error!("every pipeline has stopped ({failed} on an error)");
        Ok(ExitCode::FAILURE)
    }
}

fn send_lines(
    path: &Path,
    transport: &str,
    queue: &str,
    input: Option<&Path>,
    cli_dirs: Vec<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let (file, registry) = load(path, cli_dirs)?;
    logging::init(&file.config.log).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let instance = assemble::build_transport(&file, &registry, transport)
        .map_err(|problem| anyhow::anyhow!("{problem}"))?;
    let sent = match input {
        None => send::send(
            &instance.get(),
            queue,
            std::io::stdin().lock(),
            "standard input",
        )?,
        Some(p) if p == Path::new("-") => send::send(
            &instance.get(),
            queue,
            std::io::stdin().lock(),
            "standard input",
        )?,
        Some(p) => {
            let reader =
                std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
            send::send(
                &instance.get(),
                queue,
                std::io::BufReader::new(reader),
                &p.display().to_string(),
            )?
        }
    };
    for (line, reason) in &sent.rejected {
        eprintln!("line {line}: not sent: {reason}");
    }
    println!(
        "{} message(s) confirmed by transport `{transport}` on queue `{queue}`{}",
        sent.confirmed,
        if sent.rejected.is_empty() {
            String::new()
        } else {
            format!("; {} line(s) not sent", sent.rejected.len())
        }
    );
    Ok(if sent.rejected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    /// What a plugin library calls `malloc` is this executable's jemalloc (the test
    /// binary links it as the daemon does), not the C library's.
    #[test]
    fn every_library_allocates_from_the_executables_jemalloc() {
        // SAFETY: dlsym and dladdr only read the loaded objects' symbol tables; `info` is
        // filled by dladdr before it is read, and its file name is a C string it owns.
        let file = unsafe {
            let malloc = libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr());
            assert!(!malloc.is_null(), "no malloc in the global scope");
            let mut info: libc::Dl_info = std::mem::zeroed();
            assert_ne!(libc::dladdr(malloc, &mut info), 0, "dladdr(malloc) failed");
            std::ffi::CStr::from_ptr(info.dli_fname)
                .to_string_lossy()
                .into_owned()
        };
        assert!(
            !file.contains("libc.so"),
            "malloc resolves to {file}, not to jemalloc in the executable"
        );
    }
}

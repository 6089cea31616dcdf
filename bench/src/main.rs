//! `golconde-bench`: measures, in one run on one machine, Golconde end to end (AMQP, STOMP,
//! NATS JetStream and Redis Streams -> autosql -> postgres, AMQP with the pipeline in a
//! process of its own, AMQP -> autosql -> mysql into MariaDB, AMQP -> debezium -> postgres)
//! against the limits of each broker alone (ceiling A for RabbitMQ, S for RabbitMQ over
//! STOMP, N for NATS, R for Redis) and of the database alone (ceiling B for PostgreSQL, C
//! for MariaDB), against pipelines written by hand for the workload alone (AB, SB, NB, RB:
//! RabbitMQ over AMQP and over STOMP, NATS, Redis -> PostgreSQL), against the first
//! Golconde's one-message-at-a-time model (the baseline), its publish-to-commit latency at a
//! quarter and at half of its capacity beside the broker's own (and what the machine's cores
//! did meanwhile), its peak memory, the debezium processor's CPU time per message against
//! autosql's, and the host alone with in-memory plugins (bench/memory). `scripts/bench`
//! builds everything in release and runs it; see bench/README.md.
//!
//! Depends on lapin, async-nats, redis, tokio-postgres, mysql_async, tokio (the STOMP
//! ceiling's client) and the release `golconde` binary and plugin libraries found beside
//! this executable, plus the `golconde-bench-memory` library for the `host` part. Key
//! decisions:
//! Golconde is measured as the real daemon process, on a queue pre-loaded before the clock
//! starts; every run is checked for correctness (every key at its last version, nothing
//! left on the queue), so a fast but wrong run fails the bench instead of producing a
//! figure.

mod broker;
mod daemon;
mod db;
mod host;
mod machine;
mod mariadb;
mod report;
mod stomp;
mod streams;
mod workload;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::daemon::{Daemon, Rss, Setup};
use crate::report::{Consumer, Figure, Load, Report, Sample, Stall};
use crate::workload::{Expected, Format, Workload};

/// The prefetch of ceiling A, the baseline and the latency part's bare consumers:
/// Golconde's default for one worker (2 x batch.max_messages x max(workers, 2)).
const PREFETCH: u16 = 2000;

const PARTS: [&str; 12] = [
    "amqp", "process", "mysql", "debezium", "stomp", "nats", "redis", "ceilings", "baseline",
    "latency", "memory", "host",
];

/// The shares of Golconde's end-to-end capacity (the best `golconde amqp` median) the
/// latency part publishes at by default.
const LATENCY_SHARES: [f64; 2] = [0.25, 0.5];

/// A smoke run's latency rates stay at most this times their share: its capacity comes
/// from a few thousand messages, too noisy to load the machine with.
const SMOKE_LATENCY_CAP: f64 = 4000.0;

#[derive(Parser, Debug, Clone)]
#[command(about = "Golconde end to end against the broker's and the database's limits")]
struct Args {
    /// A few thousand messages, one run of each part; checks correctness, asserts no timing.
    #[arg(long)]
    smoke: bool,
    /// Runs per figure (the median is reported, with min and max).
    #[arg(long)]
    runs: Option<usize>,
    /// Messages of the throughput workload (over a quarter as many keys).
    #[arg(long)]
    messages: Option<u64>,
    /// Messages of the baseline (slow: about 1,300/s).
    #[arg(long)]
    baseline_messages: Option<u64>,
    /// Seconds of fixed-rate publishing in the latency run.
    #[arg(long)]
    latency_seconds: Option<f64>,
    /// Publish rates of the latency part, comma-separated (messages per second); default a
    /// quarter and half of the best AMQP end-to-end rate.
    #[arg(long, value_delimiter = ',')]
    latency_rate: Option<Vec<f64>>,
    /// Messages drained by the host part (the daemon with in-memory plugins).
    #[arg(long)]
    host_messages: Option<u64>,
    /// Queue sizes drained by the memory part, comma-separated.
    #[arg(long, value_delimiter = ',')]
    memory_messages: Option<Vec<u64>>,
    /// Golconde worker counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    workers: Vec<u32>,
    /// Golconde's `batch.max_messages` (default: Golconde's own default, 500).
    #[arg(long)]
    batch: Option<u32>,
    /// Parts to run, comma-separated: amqp, process (AMQP with the pipeline in a process of
    /// its own), mysql (AMQP -> autosql -> MariaDB), debezium (AMQP -> debezium -> postgres,
    /// beside amqp's autosql runs), stomp (ceiling S: RabbitMQ's STOMP adapter alone, ceiling
    /// SB: the hand-written STOMP -> PostgreSQL pipeline, then STOMP -> autosql -> postgres),
    /// nats (ceiling N: JetStream alone, ceiling NB: the hand-written NATS -> PostgreSQL
    /// pipeline, then NATS -> autosql -> postgres), redis (the same with Redis Streams:
    /// ceilings R and RB), ceilings (A: broker, B: PostgreSQL, C:
    /// MariaDB; with an AMQP part also AB: RabbitMQ -> PostgreSQL by hand), baseline,
    /// latency, memory, host (the daemon with the in-memory plugins of bench/memory).
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Folder of the release `golconde` binary and plugin libraries; default this
    /// executable's folder.
    #[arg(long)]
    release_dir: Option<PathBuf>,
    /// Where to write the JSON results (default bench/results/; --smoke writes none).
    #[arg(long)]
    results_dir: Option<PathBuf>,
}

/// The settings a run uses once defaults and --smoke are applied.
struct Plan {
    smoke: bool,
    runs: usize,
    workload: Workload,
    baseline: Workload,
    latency_seconds: f64,
    latency_rates: Option<Vec<f64>>,
    memory: Vec<u64>,
    host_messages: u64,
    workers: Vec<u32>,
    batch: Option<u32>,
    parts: Vec<String>,
}

impl Plan {
    fn from(args: &Args) -> Result<Plan> {
        let smoke = args.smoke;
        let messages = args.messages.unwrap_or(if smoke { 4000 } else { 200_000 });
        let baseline = args
            .baseline_messages
            .unwrap_or(if smoke { 1000 } else { 10_000 })
            .min(messages);
        let parts = match &args.only {
            Some(only) => {
                for part in only {
                    if !PARTS.contains(&part.as_str()) {
                        bail!("--only: unknown part `{part}` (expected some of {PARTS:?})");
                    }
                }
                only.clone()
            }
            None => PARTS.iter().map(|s| s.to_string()).collect(),
        };
        if messages < 4 || args.workers.is_empty() || args.workers.contains(&0) {
            bail!("--messages must be at least 4 and --workers positive");
        }
        if let Some(rates) = &args.latency_rate {
            if rates.is_empty() || rates.iter().any(|r| !r.is_finite() || *r <= 0.0) {
                bail!("--latency-rate wants positive rates, e.g. 5000,10000");
            }
        }
        let host_messages = args
            .host_messages
            .unwrap_or(if smoke { 100_000 } else { 5_000_000 });
        if host_messages == 0 {
            bail!("--host-messages must be at least 1");
        }
        let keys = |n: u64| (n / 4).max(1);
        Ok(Plan {
            smoke,
            runs: args.runs.unwrap_or(if smoke { 1 } else { 3 }).max(1),
            workload: Workload {
                messages,
                keys: keys(messages),
            },
            baseline: Workload {
                messages: baseline,
                keys: keys(messages),
            },
            latency_seconds: args
                .latency_seconds
                .unwrap_or(if smoke { 2.0 } else { 30.0 }),
            latency_rates: args.latency_rate.clone(),
            memory: args.memory_messages.clone().unwrap_or(if smoke {
                vec![messages, messages * 5]
            } else {
                vec![200_000, 1_000_000]
            }),
            host_messages,
            workers: args.workers.clone(),
            batch: args.batch,
            parts,
        })
    }

    fn wants(&self, part: &str) -> bool {
        self.parts.iter().any(|p| p == part)
    }
}

/// What one Golconde run is made of: its transport, where its pipeline runs, its
/// processor and its database plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mode {
    transport: &'static str,
    process: bool,
    processor: &'static str,
    database: &'static str,
}

impl Mode {
    /// AMQP -> autosql -> postgres in thread mode: what the targets of issue 6 are about.
    const AMQP: Mode = Mode {
        transport: "amqp",
        process: false,
        processor: "autosql",
        database: "postgres",
    };
    const PROCESS: Mode = Mode {
        process: true,
        ..Mode::AMQP
    };
    const STOMP: Mode = Mode {
        transport: "stomp",
        ..Mode::AMQP
    };
    const MARIADB: Mode = Mode {
        database: "mysql",
        ..Mode::AMQP
    };
    const DEBEZIUM: Mode = Mode {
        processor: "debezium",
        ..Mode::AMQP
    };
    const NATS: Mode = Mode {
        transport: "nats",
        ..Mode::AMQP
    };
    const REDIS: Mode = Mode {
        transport: "redis",
        ..Mode::AMQP
    };

    /// The stream broker the mode consumes from, if not RabbitMQ.
    fn stream(&self) -> Option<streams::Kind> {
        match self.transport {
            "nats" => Some(streams::Kind::Nats),
            "redis" => Some(streams::Kind::Redis),
            _ => None,
        }
    }

    fn format(&self) -> Format {
        match self.processor {
            "debezium" => Format::Debezium,
            _ => Format::Golconde,
        }
    }

    /// The name of an end-to-end figure; the report and the targets find figures by their
    /// fields, not by this.
    fn figure_name(&self, workers: u32) -> String {
        let mut name = format!("golconde {}", self.transport);
        if self.process {
            name.push_str(" (process isolation)");
        }
        if self.processor != "autosql" {
            name.push_str(&format!(" ({} events)", self.processor));
        }
        if self.database == "mysql" {
            name.push_str(" -> mariadb");
        }
        format!("{name}, workers={workers}")
    }

    fn figure(&self, workers: u32, messages: u64) -> Figure {
        let mut figure = Figure::new(&self.figure_name(workers), messages);
        figure.golconde = Some(self.transport.into());
        figure.process = self.process;
        figure.processor = self.processor.into();
        figure.database = self.database.into();
        figure.workers = workers;
        figure
    }
}

/// What one Golconde run measured.
struct Run {
    elapsed: Duration,
    rss: Rss,
    /// CPU time of the daemon (and its child) from consuming to drained.
    cpu: Duration,
}

impl Run {
    fn record(&self, figure: &mut Figure, messages: u64) {
        figure.rate(messages, self.elapsed);
        figure.rss(&self.rss);
        figure.cpu(messages, self.cpu);
    }
}

struct Bench {
    plan: Plan,
    db: db::Database,
    client: tokio_postgres::Client,
    /// The bench's MariaDB database and a connection to it, for the ceilings and mysql
    /// parts.
    maria: Option<(mariadb::Database, mysql_async::Conn)>,
    amqp: lapin::Connection,
    channel: lapin::Channel,
    golconde: PathBuf,
    plugin_dir: PathBuf,
    /// The in-memory plugins' library, for the host part.
    memory_library: Option<PathBuf>,
    scratch: PathBuf,
    queues: u32,
    report: Report,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("golconde-bench failed: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let plan = Plan::from(&args)?;
    let release = match &args.release_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("this executable has no folder")?
            .to_path_buf(),
    };
    let golconde = release.join("golconde");
    let mut files = vec![
        "golconde",
        "libgolconde_amqp.so",
        "libgolconde_stomp.so",
        "libgolconde_autosql.so",
        "libgolconde_postgres.so",
    ];
    // Asked for only when used, so that an older build without them can run the rest.
    if plan.wants("mysql") {
        files.push("libgolconde_mysql.so");
    }
    if plan.wants("debezium") {
        files.push("libgolconde_debezium.so");
    }
    if plan.wants("nats") {
        files.push("libgolconde_nats.so");
    }
    if plan.wants("redis") {
        files.push("libgolconde_redis.so");
    }
    for file in files {
        if !release.join(file).exists() {
            bail!(
                "{} is missing: build the release binaries first (scripts/bench does)",
                release.join(file).display()
            );
        }
    }
    let memory_library = if plan.wants("host") {
        Some(host::library(&release).with_context(|| {
            format!(
                "{} is in neither {} nor this executable's folder: build it first \
                 (cargo build --release -p golconde-bench-memory; scripts/bench does)",
                host::LIBRARY,
                release.display()
            )
        })?)
    } else {
        None
    };
    let id = std::process::id();
    let database = db::Database::create(&format!("golconde_bench_{id}")).await?;
    let maria_name = format!("golconde_bench_{id}");
    let wants_maria = plan.wants("ceilings") || plan.wants("mysql");
    let scratch = std::env::temp_dir().join(format!("golconde-bench-{id}"));
    let outcome = async {
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        let client = database.client().await?;
        let maria = if wants_maria {
            let maria = mariadb::Database::create(&maria_name).await?;
            let conn = maria.connect().await?;
            Some((maria, conn))
        } else {
            None
        };
        let amqp = broker::connect().await?;
        let channel = amqp.create_channel().await?;
        let mut bench = Bench {
            plan,
            db: db::Database {
                name: database.name.clone(),
                dsn: database.dsn.clone(),
            },
            client,
            maria,
            amqp,
            channel,
            golconde,
            plugin_dir: release,
            memory_library,
            scratch: scratch.clone(),
            queues: 0,
            report: Report::default(),
        };
        let measured = bench.measure().await;
        bench.delete_queues().await;
        bench.amqp.close(200, "done".into()).await.ok();
        if let Some((_, conn)) = bench.maria.take() {
            conn.disconnect().await.ok();
        }
        measured.map(|()| bench)
    }
    .await;
    let dropped = database.drop_all().await;
    let maria_dropped = if wants_maria {
        mariadb::drop_database(&maria_name).await
    } else {
        Ok(())
    };
    let _ = std::fs::remove_dir_all(&scratch);
    let bench = outcome?;
    dropped?;
    maria_dropped?;
    bench.report.print(&bench.plan_summary());
    if !bench.plan.smoke || args.results_dir.is_some() {
        let dir = args
            .results_dir
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("results"));
        let path = bench.report.write(&dir, &bench.plan_summary())?;
        println!("\nwritten to {}", path.display());
    }
    Ok(())
}

/// One line per run on stderr, so a long bench shows it is alive.
fn progress(line: &str) {
    eprintln!("  {line}");
}

/// A broker's ceiling: its bare client draining a pre-loaded queue.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ceiling {
    AmqpEach,
    AmqpEvery100,
    AmqpThrough,
    Stomp,
    StompThrough,
}

/// A run in a round of a turn: one of the turn's ceilings, or one of its Golconde modes.
#[derive(Clone, Copy)]
enum Slot {
    Ceiling(usize),
    Golconde(usize),
}

impl Ceiling {
    fn name(self) -> &'static str {
        match self {
            Ceiling::AmqpEach => report::CEILING_A,
            Ceiling::AmqpEvery100 => report::CEILING_A_CUMULATIVE,
            Ceiling::AmqpThrough => report::CEILING_AB,
            Ceiling::Stomp => report::CEILING_S,
            Ceiling::StompThrough => report::CEILING_SB,
        }
    }
}

/// Records a run of a ceiling's bare client, which took `elapsed` and `cpu` for the
/// figure's messages, and reports it as `label`.
fn record_ceiling(figure: &mut Figure, label: &str, elapsed: Duration, cpu: Duration) {
    figure.rate(figure.messages, elapsed);
    figure.cpu(figure.messages, cpu);
    progress(&format!(
        "{label}: {:.0}/s, CPU {:.2} us/msg",
        figure.rates.last().unwrap_or(&f64::NAN),
        figure.cpu_us.last().unwrap_or(&f64::NAN)
    ));
}

/// Reports a latency run of `who` and returns its latencies (ms, sorted), saying where the
/// slowest 1% were published: a stall shows as a few windows, a tail as many; and how many
/// of them were on their way while the database's commits stalled.
fn summarize(who: &str, rate: f64, samples: &[Sample], stalls: &[Stall]) -> Vec<f64> {
    let (ms, tail) = report::latencies(samples, stalls);
    let slowest_stall = stalls.iter().map(|s| s.ms).fold(0.0, f64::max);
    progress(&format!(
        "{who} latency at {rate:.0}/s: {} messages, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; \
         the slowest {} published within {} of the run's {} windows of {} ms, {} of them on \
         their way during one of the database's {} commit stalls (over {} ms, the longest \
         {slowest_stall:.1} ms)",
        ms.len(),
        report::percentile(&ms, 50.0),
        report::percentile(&ms, 99.0),
        ms.last().copied().unwrap_or(f64::NAN),
        tail.messages,
        tail.windows,
        tail.of,
        report::TAIL_WINDOW_US / 1000,
        tail.in_stalls,
        stalls.len(),
        db::STALL_MS,
    ));
    ms
}

impl Bench {
    fn plan_summary(&self) -> serde_json::Value {
        let p = &self.plan;
        serde_json::json!({
            "smoke": p.smoke,
            "runs": p.runs,
            "messages": p.workload.messages,
            "keys": p.workload.keys,
            "baseline_messages": p.baseline.messages,
            "latency_seconds": p.latency_seconds,
            "latency_rates": p.latency_rates,
            "memory_messages": p.memory,
            "host_messages": p.host_messages,
            "stomp_ceiling": {"prefetch": self.stomp_prefetch(), "ack_every": self.batch()},
            "workers": p.workers,
            "batch_max_messages": p.batch,
            "prefetch_ceiling_and_baseline": PREFETCH,
            "message_bytes": {
                "golconde": p.workload.body(0).len(),
                "debezium": p.workload.debezium_body(0).len(),
            },
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        })
    }

    async fn measure(&mut self) -> Result<()> {
        let workload = self.plan.workload;
        let expected = workload.expected();
        let runs = self.plan.runs;
        if self.plan.wants("ceilings") {
            let mut ceilings = vec![Ceiling::AmqpEach];
            // Beside Golconde's AMQP runs, ceiling A (ack every 100), the one their target
            // names, takes its turns with them instead.
            if !self.amqp_turn() {
                ceilings.push(Ceiling::AmqpEvery100);
            }
            for ceiling in ceilings {
                let mut figure = Figure::new(ceiling.name(), workload.messages);
                for _ in 0..runs {
                    self.ceiling(ceiling, workload, &mut figure).await?;
                }
                self.report.add(figure);
            }
            let mut figure = Figure::new(report::CEILING_B, workload.messages);
            for _ in 0..runs {
                db::truncate(&self.client).await?;
                let t = db::ceiling(&self.client, &workload).await?;
                db::verify(&self.client, &workload, &expected)
                    .await
                    .context("after ceiling B")?;
                progress(&format!(
                    "ceiling B: {:.0}/s",
                    workload.messages as f64 / t.as_secs_f64()
                ));
                figure.rate(workload.messages, t);
            }
            self.report.add(figure);
            let mut figure = Figure::new(report::CEILING_C, workload.messages);
            for _ in 0..runs {
                let conn = self.maria()?;
                mariadb::truncate(conn).await?;
                let t = mariadb::ceiling(conn, &workload).await?;
                mariadb::verify(conn, &workload, &expected)
                    .await
                    .context("after ceiling C")?;
                progress(&format!(
                    "ceiling C: {:.0}/s",
                    workload.messages as f64 / t.as_secs_f64()
                ));
                figure.rate(workload.messages, t);
            }
            self.report.add(figure);
        }
        if self.plan.wants("baseline") {
            let base = self.plan.baseline;
            let base_expected = base.expected();
            let mut figure = Figure::new("baseline: 1 upsert + ack per message", base.messages);
            for _ in 0..runs {
                db::truncate(&self.client).await?;
                let queue = self.loaded_queue(base, Format::Golconde).await?;
                let t = broker::baseline(&self.amqp, &self.client, &queue, base.messages, PREFETCH)
                    .await?;
                self.expect_empty(&queue).await?;
                db::verify(&self.client, &base, &base_expected)
                    .await
                    .context("after the baseline")?;
                progress(&format!(
                    "baseline: {:.0}/s",
                    base.messages as f64 / t.as_secs_f64()
                ));
                figure.rate(base.messages, t);
            }
            self.report.add(figure);
        }
        // The AMQP modes take turns, run by run (in one order, then the reverse), so that
        // whatever else the shared machine does weighs on all alike and their ratios hold.
        // Debezium runs next to autosql's thread mode, its reference, in both orders.
        let modes: Vec<Mode> = [
            (
                Mode::AMQP,
                self.plan.wants("amqp") || self.plan.wants("debezium"),
            ),
            (Mode::DEBEZIUM, self.plan.wants("debezium")),
            (Mode::PROCESS, self.plan.wants("process")),
            (Mode::MARIADB, self.plan.wants("mysql")),
        ]
        .into_iter()
        .filter(|(_, wanted)| *wanted)
        .map(|(mode, _)| mode)
        .collect();
        let amqp_ceilings = if self.plan.wants("ceilings") && !modes.is_empty() {
            vec![Ceiling::AmqpEvery100, Ceiling::AmqpThrough]
        } else {
            Vec::new()
        };
        let mut turns = vec![(modes, amqp_ceilings)];
        if self.plan.wants("stomp") {
            turns.push((
                vec![Mode::STOMP],
                vec![Ceiling::Stomp, Ceiling::StompThrough],
            ));
        }
        // Each stream broker's ceiling is measured in its own turn, next to Golconde on it.
        for (part, mode, kind, name, through) in [
            (
                "nats",
                Mode::NATS,
                streams::Kind::Nats,
                report::CEILING_N,
                report::CEILING_NB,
            ),
            (
                "redis",
                Mode::REDIS,
                streams::Kind::Redis,
                report::CEILING_R,
                report::CEILING_RB,
            ),
        ] {
            if !self.plan.wants(part) {
                continue;
            }
            let mut figure = Figure::new(name, workload.messages);
            for _ in 0..runs {
                let queue = self.stream_queue(kind, workload, Format::Golconde).await?;
                let t = streams::ceiling(kind, &queue, workload.messages).await?;
                let left =
                    streams::settled(kind, &queue, "ceiling", Duration::from_secs(5)).await?;
                streams::delete(kind, &queue).await?;
                if left != Some(0) {
                    bail!("{name}: {left:?} messages left unacknowledged on `{queue}`");
                }
                progress(&format!(
                    "{name}: {:.0}/s",
                    workload.messages as f64 / t.as_secs_f64()
                ));
                figure.rate(workload.messages, t);
            }
            self.report.add(figure);
            let mut figure = Figure::new(through, workload.messages);
            for _ in 0..runs {
                let queue = self.stream_queue(kind, workload, Format::Golconde).await?;
                db::truncate(&self.client).await?;
                let t = streams::through(kind, &queue, workload.messages, &self.client).await?;
                db::verify(&self.client, &workload, &expected)
                    .await
                    .with_context(|| format!("{through}: the rows it left"))?;
                let left =
                    streams::settled(kind, &queue, "ceiling", Duration::from_secs(5)).await?;
                streams::delete(kind, &queue).await?;
                if left != Some(0) {
                    bail!("{through}: {left:?} messages left unacknowledged on `{queue}`");
                }
                progress(&format!(
                    "{through}: {:.0}/s",
                    workload.messages as f64 / t.as_secs_f64()
                ));
                figure.rate(workload.messages, t);
            }
            self.report.add(figure);
            turns.push((vec![mode], Vec::new()));
        }
        for (modes, ceilings) in turns {
            if modes.is_empty() {
                continue;
            }
            // The turn's ceilings run once in every round, first and then last, so that
            // the broker's drift over the minutes of a bench weighs on them as on the runs
            // divided by them.
            let mut references: Vec<Figure> = ceilings
                .iter()
                .map(|c| Figure::new(c.name(), workload.messages))
                .collect();
            for workers in self.plan.workers.clone() {
                let mut figures: Vec<Figure> = modes
                    .iter()
                    .map(|mode| mode.figure(workers, workload.messages))
                    .collect();
                for run in 0..runs {
                    let mut order: Vec<Slot> = (0..ceilings.len())
                        .map(Slot::Ceiling)
                        .chain((0..modes.len()).map(Slot::Golconde))
                        .collect();
                    if run % 2 == 1 {
                        order.reverse();
                    }
                    for slot in order {
                        match slot {
                            Slot::Ceiling(i) => {
                                self.ceiling(ceilings[i], workload, &mut references[i])
                                    .await?;
                            }
                            Slot::Golconde(i) => {
                                let figure = &mut figures[i];
                                self.golconde(modes[i], workers, workload, &expected)
                                    .await
                                    .with_context(|| figure.name.clone())?
                                    .record(figure, workload.messages);
                            }
                        }
                    }
                }
                for figure in figures {
                    self.report.add(figure);
                }
            }
            for figure in references {
                self.report.add(figure);
            }
        }
        if self.plan.wants("latency") {
            self.latency().await?;
        }
        if self.plan.wants("memory") {
            for messages in self.plan.memory.clone() {
                let w = Workload {
                    messages,
                    keys: self.plan.workload.keys,
                };
                let e = w.expected();
                let workers = 4;
                let name = format!("memory: golconde amqp, workers={workers}");
                let mut figure = Figure::new(&name, messages);
                for _ in 0..runs {
                    self.golconde(Mode::AMQP, workers, w, &e)
                        .await
                        .with_context(|| format!("{name}, {messages} messages"))?
                        .record(&mut figure, messages);
                }
                figure.memory = true;
                figure.workers = workers;
                self.report.add(figure);
            }
        }
        if self.plan.wants("host") {
            self.host().await?;
        }
        Ok(())
    }

    /// Golconde's `batch.max_messages` in this run.
    fn batch(&self) -> u32 {
        self.plan.batch.unwrap_or(500)
    }

    /// Golconde's default prefetch for one worker: four batches (two for each of at least
    /// two workers).
    fn stomp_prefetch(&self) -> u32 {
        4 * self.batch()
    }

    /// Whether this bench has a turn of Golconde's AMQP runs.
    fn amqp_turn(&self) -> bool {
        ["amqp", "debezium", "process", "mysql"]
            .iter()
            .any(|part| self.plan.wants(part))
    }

    /// One run of `ceiling` on a freshly loaded queue, added to `figure`.
    ///
    /// Ceilings S and SB drain over STOMP by the bench's own client, with the `stomp`
    /// transport's subscription and acknowledgements under Golconde's defaults for one
    /// worker: `ack:client`, a prefetch of four batches, one cumulative ACK per batch.
    async fn ceiling(
        &mut self,
        ceiling: Ceiling,
        workload: Workload,
        figure: &mut Figure,
    ) -> Result<()> {
        let queue = self.loaded_queue(workload, Format::Golconde).await?;
        let through = matches!(ceiling, Ceiling::AmqpThrough | Ceiling::StompThrough);
        if through {
            db::truncate(&self.client).await?;
        }
        let cpu = daemon::own_cpu_time()?;
        let (t, label) = match ceiling {
            Ceiling::AmqpEach | Ceiling::AmqpEvery100 => {
                let every = if ceiling == Ceiling::AmqpEach { 1 } else { 100 };
                let t =
                    broker::ceiling(&self.amqp, &queue, workload.messages, PREFETCH, every).await?;
                (t, ceiling.name().to_owned())
            }
            Ceiling::AmqpThrough => {
                let batch = self.batch() as usize;
                let t = broker::through(
                    &self.amqp,
                    &self.client,
                    &queue,
                    workload.messages,
                    PREFETCH,
                    batch,
                )
                .await
                .context("ceiling AB")?;
                (t, format!("{} (ack per {batch})", ceiling.name()))
            }
            Ceiling::Stomp => {
                let (batch, prefetch) = (self.batch(), self.stomp_prefetch());
                let t = stomp::ceiling(&queue, workload.messages, prefetch, u64::from(batch))
                    .await
                    .context("ceiling S")?;
                (
                    t,
                    format!("ceiling S (STOMP, prefetch {prefetch}, ACK per {batch})"),
                )
            }
            Ceiling::StompThrough => {
                let (batch, prefetch) = (self.batch(), self.stomp_prefetch());
                let t = stomp::through(
                    &self.client,
                    &queue,
                    workload.messages,
                    prefetch,
                    batch as usize,
                )
                .await
                .context("ceiling SB")?;
                (
                    t,
                    format!("{} (prefetch {prefetch}, ACK per {batch})", ceiling.name()),
                )
            }
        };
        if through {
            let expected = workload.expected();
            db::verify(&self.client, &workload, &expected)
                .await
                .with_context(|| format!("after {}", ceiling.name()))?;
        }
        let cpu = daemon::own_cpu_time()?.saturating_sub(cpu);
        self.expect_empty(&queue)
            .await
            .with_context(|| format!("after {}", ceiling.name()))?;
        record_ceiling(figure, &label, t, cpu);
        Ok(())
    }

    /// The host part: per worker count, the daemon drains the in-memory transport's queue
    /// through the in-memory processor and database.
    async fn host(&mut self) -> Result<()> {
        let library = self
            .memory_library
            .clone()
            .context("the host part needs the in-memory plugins' library")?;
        let plugin_dir = host::plugin_dir(&self.scratch, &library)?;
        let messages = self.plan.host_messages;
        for workers in self.plan.workers.clone() {
            let name = format!("host: golconde memory -> memory, workers={workers}");
            let mut figure = Figure::new(&name, messages);
            figure.golconde = Some("memory".into());
            figure.processor = "memory".into();
            figure.database = "memory".into();
            figure.workers = workers;
            for run in 0..self.plan.runs {
                self.host_run(&plugin_dir, messages, workers, run)
                    .await
                    .with_context(|| name.clone())?
                    .record(&mut figure, messages);
            }
            self.report.add(figure);
        }
        Ok(())
    }

    async fn host_run(
        &mut self,
        plugin_dir: &Path,
        messages: u64,
        workers: u32,
        run: usize,
    ) -> Result<Run> {
        let result = self.scratch.join(format!("host-{workers}-{run}.result"));
        let setup = host::Setup {
            plugin_dir,
            messages,
            keys: (messages / 4).max(1),
            result: &result,
            workers,
            batch: self.plan.batch,
        };
        let path = self.scratch.join(format!("host-{workers}-{run}.toml"));
        let mut daemon = Daemon::start(&self.golconde, &path, &host::config(&setup))?;
        // A million messages a second is the target; a tenth of that is a slow debug build.
        let limit = Duration::from_secs(60 + messages / 100_000);
        let outcome = loop {
            daemon.check_alive()?;
            if let Some(outcome) = host::Outcome::read(&result)? {
                break outcome;
            }
            if daemon.spawned.elapsed() > limit {
                bail!(
                    "the in-memory queue was not drained after {limit:?}; the daemon's log ends:\n{}",
                    daemon.tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let cpu = daemon.cpu_since_consuming()?;
        let rss = daemon.peak_rss()?;
        let startup = daemon.consuming_since().unwrap_or(daemon.spawned) - daemon.spawned;
        daemon.stop()?;
        outcome.check(messages)?;
        progress(&format!(
            "host: golconde memory -> memory, workers={workers}: {messages} messages in {:.3} s \
             ({:.0}/s; startup {} ms), {} commits, CPU {:.2} us/msg, peak RSS {:.1} MB",
            outcome.elapsed.as_secs_f64(),
            messages as f64 / outcome.elapsed.as_secs_f64(),
            startup.as_millis(),
            outcome.commits,
            cpu.as_secs_f64() * 1e6 / messages as f64,
            rss.total() as f64 / 1048576.0,
        ));
        Ok(Run {
            elapsed: outcome.elapsed,
            rss,
            cpu,
        })
    }

    /// A fresh durable queue of the bench holding `workload` written in `format`, all
    /// confirmed.
    async fn loaded_queue(&mut self, workload: Workload, format: Format) -> Result<String> {
        let queue = self.fresh_queue().await?;
        broker::preload(&self.amqp, &queue, broker::bodies(workload, format)).await?;
        Ok(queue)
    }

    /// A fresh stream of the bench on `kind` holding `workload`, all confirmed.
    async fn stream_queue(
        &mut self,
        kind: streams::Kind,
        workload: Workload,
        format: Format,
    ) -> Result<String> {
        self.queues += 1;
        let queue = format!("golconde-bench-{}-{}", std::process::id(), self.queues);
        streams::preload(kind, &queue, broker::bodies(workload, format)).await?;
        Ok(queue)
    }

    /// The connection to the bench's MariaDB database.
    fn maria(&mut self) -> Result<&mut mysql_async::Conn> {
        match &mut self.maria {
            Some((_, conn)) => Ok(conn),
            None => bail!("MariaDB is used only by the ceilings and mysql parts"),
        }
    }

    /// Empties `users` in the database `database` (a database plugin's name) writes.
    async fn truncate(&mut self, database: &str) -> Result<()> {
        match database {
            "mysql" => mariadb::truncate(self.maria()?).await,
            _ => db::truncate(&self.client).await,
        }
    }

    async fn reached(&mut self, database: &str, expected: &Expected) -> Result<bool> {
        match database {
            "mysql" => mariadb::reached(self.maria()?, expected).await,
            _ => db::reached(&self.client, expected).await,
        }
    }

    async fn verify(
        &mut self,
        database: &str,
        workload: &Workload,
        expected: &Expected,
    ) -> Result<()> {
        match database {
            "mysql" => mariadb::verify(self.maria()?, workload, expected).await,
            _ => db::verify(&self.client, workload, expected).await,
        }
    }

    /// Deletes every queue this run declared, including those a failed part left behind.
    async fn delete_queues(&self) {
        for n in 1..=self.queues {
            let queue = format!("golconde-bench-{}-{n}", std::process::id());
            // A channel of its own each time: an error closes the channel it happens on.
            if let Ok(channel) = self.amqp.create_channel().await {
                let _ = broker::delete(&channel, &queue).await;
                channel.close(200, "cleaned".into()).await.ok();
            }
        }
    }

    async fn fresh_queue(&mut self) -> Result<String> {
        self.queues += 1;
        let queue = format!("golconde-bench-{}-{}", std::process::id(), self.queues);
        broker::declare(&self.channel, &queue).await?;
        Ok(queue)
    }

    /// Fails unless `queue` is empty (so every message was acknowledged), then deletes it.
    async fn expect_empty(&self, queue: &str) -> Result<()> {
        // Messages unacknowledged when a consumer leaves go back to ready asynchronously.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let left = broker::ready(&self.channel, queue).await?;
        broker::delete(&self.channel, queue).await?;
        if left != 0 {
            bail!("{left} messages were left unacknowledged on queue `{queue}`");
        }
        Ok(())
    }

    fn start(&self, mode: Mode, queue: &str, table: &str, workers: u32) -> Result<Daemon> {
        let dsn = match mode.database {
            "mysql" => self
                .maria
                .as_ref()
                .map(|(db, _)| db.dsn.as_str())
                .context("MariaDB is used only by the ceilings and mysql parts")?,
            _ => &self.db.dsn,
        };
        let setup = Setup {
            transport: mode.transport,
            queue,
            processor: mode.processor,
            database: mode.database,
            table,
            workers,
            dsn,
            batch: self.plan.batch,
            process: mode.process,
        };
        let path = self.scratch.join(format!("{queue}.toml"));
        Daemon::start(
            &self.golconde,
            &path,
            &daemon::config(&setup, &self.plugin_dir),
        )
    }

    /// One Golconde run over a pre-loaded queue: the time from the pipeline starting to
    /// consume until the queue is empty and the table holds the final state, the peak RSS
    /// of the daemon and of the pipeline's process (with `process`, the pipeline runs in
    /// one) and the CPU time they used meanwhile. Fails unless every row is right and every
    /// message acknowledged.
    async fn golconde(
        &mut self,
        mode: Mode,
        workers: u32,
        workload: Workload,
        expected: &Expected,
    ) -> Result<Run> {
        self.truncate(mode.database).await?;
        let queue = match mode.stream() {
            Some(kind) => self.stream_queue(kind, workload, mode.format()).await?,
            None => self.loaded_queue(workload, mode.format()).await?,
        };
        let mut daemon = self.start(mode, &queue, "users", workers)?;
        let limit = Duration::from_secs(60 + workload.messages / 500);
        loop {
            daemon.check_alive()?;
            if daemon.spawned.elapsed() > limit {
                bail!(
                    "queue `{queue}` not drained into table users after {limit:?}; the daemon's log ends:\n{}",
                    daemon.tail()
                );
            }
            let ready = match mode.stream() {
                // The pipeline, and so its consumer, is named `bench`.
                Some(kind) => streams::unacked(kind, &queue, "bench").await? != Some(0),
                None => broker::ready(&self.channel, &queue).await? != 0,
            };
            if !ready && self.reached(mode.database, expected).await? {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let end = Instant::now();
        let cpu = daemon.cpu_since_consuming()?;
        let start = daemon.consuming_since().unwrap_or(daemon.spawned);
        let rss = daemon.peak_rss()?;
        let mb = |bytes: u64| bytes as f64 / 1048576.0;
        let child = rss.child.map_or(String::new(), |child| {
            format!(
                " (daemon {:.1} MB + child {:.1} MB)",
                mb(rss.daemon),
                mb(child)
            )
        });
        if mode.process && rss.child.is_none() {
            bail!(
                "the pipeline ran in process isolation but the daemon (pid {}) had no child \
                 process to measure; its log ends:\n{}",
                daemon.pid(),
                daemon.tail()
            );
        }
        progress(&format!(
            "{}: {} messages in {:.3} s ({:.0}/s; startup {} ms), CPU {:.1} us/msg, peak RSS {:.1} MB{child}",
            mode.figure_name(workers),
            workload.messages,
            (end - start).as_secs_f64(),
            workload.messages as f64 / (end - start).as_secs_f64(),
            (start - daemon.spawned).as_millis(),
            cpu.as_secs_f64() * 1e6 / workload.messages as f64,
            mb(rss.total()),
        ));
        daemon.stop()?;
        self.verify(mode.database, &workload, expected).await?;
        match mode.stream() {
            Some(kind) => {
                let left = streams::settled(kind, &queue, "bench", Duration::from_secs(5)).await?;
                streams::delete(kind, &queue).await?;
                if left != Some(0) {
                    bail!("{left:?} messages were left unacknowledged on `{queue}`");
                }
            }
            None => self.expect_empty(&queue).await?,
        }
        Ok(Run {
            elapsed: end - start,
            rss,
            cpu,
        })
    }

    /// The latency part: at each rate (a quarter and half of the best AMQP end-to-end
    /// median, or `--latency-rate`), the broker alone and Golconde side by side, run by run
    /// taking turns, so that whatever else loads the machine weighs on both alike.
    async fn latency(&mut self) -> Result<()> {
        let best = self.report.best_golconde("amqp");
        let capacity = best.map(|(rate, _)| rate);
        let rates: Vec<f64> = match (&self.plan.latency_rates, capacity) {
            (Some(rates), _) => rates.clone(),
            (None, Some(capacity)) if self.plan.smoke => LATENCY_SHARES
                .iter()
                .map(|share| (capacity * share).min(SMOKE_LATENCY_CAP * share))
                .collect(),
            (None, Some(capacity)) => LATENCY_SHARES.iter().map(|s| capacity * s).collect(),
            (None, None) if self.plan.smoke => LATENCY_SHARES.iter().map(|s| 1000.0 * s).collect(),
            (None, None) => {
                bail!("the latency part needs the amqp part (for its rates) or --latency-rate")
            }
        };
        let workers = best.map_or(*self.plan.workers.last().unwrap_or(&4), |(_, w)| w);
        let duration = Duration::from_secs_f64(self.plan.latency_seconds);
        const CONSUMERS: [Consumer; 3] = [Consumer::Broker, Consumer::Database, Consumer::Golconde];
        for rate in rates {
            let mut figures = CONSUMERS.map(|consumer| {
                let load = Load {
                    rate,
                    share: capacity.map(|c| rate / c),
                    consumer,
                };
                let who = match consumer {
                    Consumer::Broker => "broker alone (lapin)".to_string(),
                    Consumer::Database => {
                        "broker and database alone (lapin, tokio-postgres)".to_string()
                    }
                    Consumer::Golconde => format!("golconde amqp, workers={workers}"),
                };
                let mut figure = Figure::new(&format!("latency: {who}, {}", load.label()), 0);
                figure.load = Some(load);
                figure
            });
            for run in 0..self.plan.runs {
                // Each run starts with the next consumer, so none always comes first.
                for turn in 0..CONSUMERS.len() {
                    let figure = &mut figures[(run + turn) % CONSUMERS.len()];
                    let consumer = figure.load.expect("set above").consumer;
                    let probe = db::CommitProbe::start(&self.db.dsn).await?;
                    let watch = machine::Watch::start();
                    let (who, samples) = match consumer {
                        Consumer::Broker => {
                            ("broker-only", self.broker_latency(rate, duration).await?)
                        }
                        Consumer::Database => (
                            "broker-and-database",
                            self.database_latency(rate, duration).await?,
                        ),
                        Consumer::Golconde => (
                            "golconde",
                            self.golconde_latency(rate, duration, workers).await?,
                        ),
                    };
                    let usage = watch.stop();
                    let ms = summarize(who, rate, &samples, &probe.stop().await?);
                    progress(&format!("{who} at {rate:.0}/s, {}", usage.describe()));
                    figure.messages = ms.len() as u64;
                    figure.latency(&ms);
                }
            }
            for figure in figures {
                self.report.add(figure);
            }
        }
        Ok(())
    }

    /// Publish-to-commit latencies of a bare lapin consumer upserting into the database
    /// what has arrived.
    async fn database_latency(&mut self, rate: f64, duration: Duration) -> Result<Vec<Sample>> {
        db::truncate(&self.client).await?;
        let queue = self.fresh_queue().await?;
        let database = db::connect(&self.db.dsn).await?;
        let total =
            broker::latency_into_database(&self.amqp, &queue, rate, duration, PREFETCH, database)
                .await?;
        self.expect_empty(&queue).await?;
        db::latencies(&self.client, total).await
    }

    /// Publish-to-delivery latencies of a bare lapin consumer.
    async fn broker_latency(&mut self, rate: f64, duration: Duration) -> Result<Vec<Sample>> {
        let queue = self.fresh_queue().await?;
        let samples = broker::latency(&self.amqp, &queue, rate, duration, PREFETCH).await?;
        self.expect_empty(&queue).await?;
        Ok(samples)
    }

    /// Publish-to-commit latencies of Golconde with `workers` on an empty queue, the bench
    /// publishing at `rate` meanwhile.
    async fn golconde_latency(
        &mut self,
        rate: f64,
        duration: Duration,
        workers: u32,
    ) -> Result<Vec<Sample>> {
        db::truncate(&self.client).await?;
        let queue = self.fresh_queue().await?;
        let mut daemon = self.start(Mode::AMQP, &queue, "users_latency", workers)?;
        while daemon.consuming_since().is_none() {
            daemon.check_alive()?;
            if daemon.spawned.elapsed() > Duration::from_secs(30) {
                bail!(
                    "golconde did not start consuming within 30 s:\n{}",
                    daemon.tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let total = broker::publish_at_rate(&self.amqp, &queue, rate, duration).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while db::latency_rows(&self.client).await? < total {
            daemon.check_alive()?;
            if Instant::now() > deadline {
                bail!("the latency run's {total} messages were not all applied within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        daemon.check_alive()?;
        let commits = daemon.commits()?;
        daemon.stop()?;
        self.expect_empty(&queue).await?;
        let samples = db::latencies(&self.client, total).await?;
        progress(&format!(
            "latency at {rate:.0}/s: {} batches of {:.1} messages on average, each applied \
             in {:.2} ms on average, 99% within {} ms",
            commits.batches, commits.mean_messages, commits.mean_apply_ms, commits.p99_apply_ms
        ));
        Ok(samples)
    }
}

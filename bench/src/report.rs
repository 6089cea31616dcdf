//! The figures of one bench run: medians with min and max over the runs, ratios to the
//! ceilings and the baseline, the targets of issue 6, of process isolation, of the `mysql`
//! plugin, of the stream transports and of issue 15 (STOMP against its own ceiling,
//! latency against the broker alone, with a bare consumer committing to the database
//! beside it, the host with in-memory plugins), the `debezium`
//! processor's cost against `autosql`'s, printed as one table and written as JSON.
//!
//! Depends on serde_json. Key decision: ratios are computed from medians measured in the
//! same run on the same machine, never from figures remembered from elsewhere.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::daemon::Rss;

pub const CEILING_A: &str = "ceiling A: broker, ack each";
pub const CEILING_A_CUMULATIVE: &str = "ceiling A: broker, ack every 100";
pub const CEILING_B: &str = "ceiling B: database, 1,000-row UNNEST";
pub const CEILING_C: &str = "ceiling C: mariadb, 1,000-row INSERT ... ON DUPLICATE KEY UPDATE";
pub const CEILING_N: &str = "ceiling N: nats-server alone (async-nats), ack each";
pub const CEILING_R: &str = "ceiling R: redis-server alone (redis-rs), XACK per 500";
pub const CEILING_NB: &str = "ceiling NB: nats-server -> PostgreSQL, hand-written, 1 conn.";
pub const CEILING_RB: &str = "ceiling RB: redis-server -> PostgreSQL, hand-written, 1 conn.";
pub const CEILING_AB: &str = "ceiling AB: RabbitMQ -> PostgreSQL, hand-written, 1 conn.";
pub const CEILING_S: &str = "ceiling S: broker over STOMP, ack:client per batch";
pub const CEILING_SB: &str = "ceiling SB: RabbitMQ/STOMP -> PostgreSQL, hand-written";
pub const BASELINE: &str = "baseline: 1 upsert + ack per message";

#[derive(Default)]
pub struct Figure {
    pub name: String,
    pub messages: u64,
    pub rates: Vec<f64>,
    /// Peak RSS in MiB: the daemon's plus its child's, when the pipeline has a process.
    pub rss: Vec<f64>,
    pub rss_daemon: Vec<f64>,
    /// The pipeline's own process (process isolation); empty in thread mode.
    pub rss_child: Vec<f64>,
    pub p50: Vec<f64>,
    pub p99: Vec<f64>,
    pub max: Vec<f64>,
    /// CPU time (user and system) of the daemon and its child per message, in µs, from
    /// the start of consuming to the end of the drain.
    pub cpu_us: Vec<f64>,
    /// The transport, for Golconde's throughput figures.
    pub golconde: Option<String>,
    /// The processor and database plugins of a Golconde figure (`autosql`, `postgres`
    /// unless set otherwise).
    pub processor: String,
    pub database: String,
    /// The pipeline ran in a process of its own (`isolation = "process"`).
    pub process: bool,
    pub workers: u32,
    pub memory: bool,
    /// What a latency figure was measured at; `None` for the others.
    pub load: Option<Load>,
}

/// The fixed publish rate of a latency figure, and who consumed the messages.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Load {
    /// Messages published per second.
    pub rate: f64,
    /// That rate over the best `golconde amqp` median of the same bench run (its
    /// end-to-end capacity), when that part ran.
    pub share: Option<f64>,
    pub consumer: Consumer,
}

/// Who took a latency figure's messages off the broker.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Consumer {
    /// A bare lapin consumer: the broker's own share of the latency.
    Broker,
    /// A bare lapin consumer upserting each batch into PostgreSQL before acknowledging it:
    /// what any queue-to-database path pays, the database's commits included.
    Database,
    Golconde,
}

impl Consumer {
    pub fn label(self) -> &'static str {
        match self {
            Consumer::Broker => "broker alone",
            Consumer::Database => "broker and database alone",
            Consumer::Golconde => "golconde",
        }
    }
}

impl Load {
    /// "5000 msgs/s (25%)", or without the share when capacity was not measured.
    pub fn label(&self) -> String {
        match self.share {
            Some(share) => format!("{:.0} msgs/s ({:.0}%)", self.rate, share * 100.0),
            None => format!("{:.0} msgs/s", self.rate),
        }
    }
}

/// Median, min and max of some runs.
#[derive(Clone, Copy)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

fn spread(values: &[f64]) -> Option<Spread> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Spread {
        median,
        min: v[0],
        max: v[n - 1],
    })
}

/// One message of a latency run: when it was published (µs since 1970) and its latency.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub published_us: i64,
    pub ms: f64,
}

/// The width of the windows [`Tail`] counts.
pub const TAIL_WINDOW_US: i64 = 100_000;

/// How a latency run's slowest 1% spread over the run: `messages` of them were published
/// within `windows` of the run's `of` 100-ms windows. A few windows mean stalls, which a
/// broker or database pausing (a flush, a checkpoint, a busy neighbour) inflicts on every
/// consumer alike; many mean a tail of the consumer's own. `in_stalls` of them were still
/// on their way while one of the run's [`Stall`]s lasted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tail {
    pub messages: usize,
    pub windows: usize,
    pub of: usize,
    pub in_stalls: usize,
}

/// A commit of the database's probe (see `db::CommitProbe`) that took `ms`, begun at
/// `start_us` (µs since 1970).
#[derive(Debug, Clone, Copy)]
pub struct Stall {
    pub start_us: i64,
    pub ms: f64,
}

impl Stall {
    fn end_us(&self) -> i64 {
        self.start_us + (self.ms * 1000.0) as i64
    }
}

/// The latencies of `samples`, sorted, and how their slowest 1% spread over the run and
/// over the database's `stalls`.
pub fn latencies(samples: &[Sample], stalls: &[Stall]) -> (Vec<f64>, Tail) {
    let mut by_latency = samples.to_vec();
    by_latency.sort_by(|a, b| a.ms.total_cmp(&b.ms));
    let slowest = &by_latency[by_latency.len() - by_latency.len().div_ceil(100)..];
    let first = samples.iter().map(|s| s.published_us).min().unwrap_or(0);
    let last = samples.iter().map(|s| s.published_us).max().unwrap_or(0);
    let window = |us: i64| (us - first) / TAIL_WINDOW_US;
    let windows: std::collections::BTreeSet<i64> =
        slowest.iter().map(|s| window(s.published_us)).collect();
    // A message was held up by a stall if it was on its way (published, not yet applied)
    // at any moment of it.
    let in_stall = |s: &Sample| {
        let arrived = s.published_us + (s.ms * 1000.0) as i64;
        stalls
            .iter()
            .any(|stall| s.published_us <= stall.end_us() && stall.start_us <= arrived)
    };
    let tail = Tail {
        messages: slowest.len(),
        windows: windows.len(),
        in_stalls: slowest.iter().filter(|s| in_stall(s)).count(),
        of: if samples.is_empty() {
            0
        } else {
            window(last) as usize + 1
        },
    };
    (by_latency.iter().map(|s| s.ms).collect(), tail)
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Figure {
    pub fn new(name: &str, messages: u64) -> Figure {
        Figure {
            name: name.to_string(),
            messages,
            processor: "autosql".into(),
            database: "postgres".into(),
            ..Figure::default()
        }
    }

    /// CPU time the daemon used to drain `messages` messages.
    pub fn cpu(&mut self, messages: u64, cpu: Duration) {
        self.cpu_us
            .push(cpu.as_secs_f64() * 1e6 / messages.max(1) as f64);
    }

    /// The pipeline the targets of issue 6 are about: autosql into PostgreSQL.
    fn is_reference(&self) -> bool {
        self.processor == "autosql" && self.database == "postgres"
    }

    /// Ratios to the ceilings apply to Golconde's autosql figures (PostgreSQL: A and B;
    /// MariaDB: A and C). The debezium figures have messages of another size than ceiling
    /// A's, so they are compared with autosql's instead.
    /// The ceiling of the stream broker a Golconde figure consumed from (NATS, Redis).
    fn stream_ceiling(&self) -> Option<&'static str> {
        match self.golconde.as_deref() {
            Some("nats") => Some(CEILING_N),
            Some("redis") => Some(CEILING_R),
            _ => None,
        }
    }

    /// The hand-written pipeline from that broker into PostgreSQL (NB, RB).
    fn stream_pipeline_ceiling(&self) -> Option<&'static str> {
        match self.golconde.as_deref() {
            Some("nats") => Some(CEILING_NB),
            Some("redis") => Some(CEILING_RB),
            _ => None,
        }
    }

    fn has_ratios(&self) -> bool {
        (self.golconde.is_some() || self.memory) && self.processor == "autosql"
    }

    pub fn rate(&mut self, messages: u64, elapsed: Duration) {
        self.rates.push(messages as f64 / elapsed.as_secs_f64());
    }

    pub fn rss(&mut self, rss: &Rss) {
        let mb = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
        self.rss.push(mb(rss.total()));
        self.rss_daemon.push(mb(rss.daemon));
        if let Some(child) = rss.child {
            self.rss_child.push(mb(child));
        }
    }

    /// One latency run's sorted latencies, in ms.
    pub fn latency(&mut self, sorted_ms: &[f64]) {
        self.p50.push(percentile(sorted_ms, 50.0));
        self.p99.push(percentile(sorted_ms, 99.0));
        self.max.push(*sorted_ms.last().unwrap_or(&f64::NAN));
    }
}

/// The debezium processor against autosql at one worker count: medians, debezium first.
struct Cost {
    workers: u32,
    cpu_us: (f64, f64),
    rate: (f64, f64),
}

impl Cost {
    fn text(&self) -> String {
        format!(
            "workers={}: CPU {:.1} vs {:.1} us per message = {:.2}x ({:+.1} us); {:.0} vs {:.0} msgs/s = {:.2}x",
            self.workers,
            self.cpu_us.0,
            self.cpu_us.1,
            self.cpu_us.0 / self.cpu_us.1,
            self.cpu_us.0 - self.cpu_us.1,
            self.rate.0,
            self.rate.1,
            self.rate.0 / self.rate.1
        )
    }
}

#[derive(Default)]
pub struct Report {
    pub figures: Vec<Figure>,
}

fn fmt_spread(s: Option<Spread>, digits: usize) -> String {
    match s {
        Some(s) => format!("{:.d$} [{:.d$}-{:.d$}]", s.median, s.min, s.max, d = digits),
        None => "-".into(),
    }
}

/// `N.N us/msg (N.NNx CLIENT bare client)`: Golconde's CPU per message, and against that
/// of the bare client of a ceiling measured in the same run (`bare`), when there is one.
/// Absolute microseconds follow the machine's speed; the ratio much less.
fn fmt_cpu(cpu: Option<f64>, bare: Option<f64>, client: &str) -> String {
    match (cpu, bare) {
        (None, _) => "-".into(),
        (Some(cpu), Some(bare)) if bare > 0.0 => {
            format!("{cpu:.1} us/msg ({:.2}x {client} bare client)", cpu / bare)
        }
        (Some(cpu), _) => format!("{cpu:.1} us/msg"),
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}"))
}

impl Report {
    pub fn add(&mut self, figure: Figure) {
        self.figures.push(figure);
    }

    fn median_rate(&self, name: &str) -> Option<f64> {
        self.median(name, |f| &f.rates)
    }

    /// The median CPU time per message of figure `name` (a ceiling's bare client).
    fn median_cpu(&self, name: &str) -> Option<f64> {
        self.median(name, |f| &f.cpu_us)
    }

    fn median(&self, name: &str, values: impl Fn(&Figure) -> &Vec<f64>) -> Option<f64> {
        let f = self.figures.iter().find(|f| f.name == name)?;
        spread(values(f)).map(|s| s.median)
    }

    /// The best median end-to-end rate over `transport` into PostgreSQL with autosql, in
    /// thread mode (the default), and its worker count.
    pub fn best_golconde(&self, transport: &str) -> Option<(f64, u32)> {
        self.best(|f| f.golconde.as_deref() == Some(transport) && !f.process && f.is_reference())
    }

    fn best(&self, pick: impl Fn(&Figure) -> bool) -> Option<(f64, u32)> {
        self.figures
            .iter()
            .filter(|f| pick(f))
            .filter_map(|f| spread(&f.rates).map(|s| (s.median, f.workers)))
            .max_by(|a, b| a.0.total_cmp(&b.0))
    }

    fn ratios(&self, figure: &Figure) -> Value {
        let Some(rate) = spread(&figure.rates).map(|s| s.median) else {
            return json!({});
        };
        if !figure.has_ratios() {
            return json!({});
        }
        let a = self.median_rate(CEILING_A);
        let ac = self.median_rate(CEILING_A_CUMULATIVE);
        let r = |c: Option<f64>| c.map(|c| rate / c);
        let lower = |c: Option<f64>| a.zip(c).map(|(a, c)| a.min(c));
        if figure.database == "mysql" {
            let c = self.median_rate(CEILING_C);
            return json!({
                "to_ceiling_a_ack_each": r(a),
                "to_ceiling_a_ack_every_100": r(ac),
                "to_ceiling_c": r(c),
                "to_min_ceiling_a_c": r(lower(c)),
            });
        }
        let b = self.median_rate(CEILING_B);
        if let Some(own) = figure.stream_ceiling() {
            let own = self.median_rate(own);
            let lower = own.zip(b).map(|(own, b)| own.min(b));
            let through = figure
                .stream_pipeline_ceiling()
                .and_then(|c| self.median_rate(c));
            return json!({
                "to_stream_ceiling": r(own),
                "to_ceiling_b": r(b),
                "to_min_stream_ceiling_b": r(lower),
                "to_stream_pipeline_ceiling": r(through),
            });
        }
        let base = self.median_rate(BASELINE);
        let mut ratios = json!({
            "to_ceiling_a_ack_each": r(a),
            "to_ceiling_a_ack_every_100": r(ac),
            "to_ceiling_b": r(b),
            "to_min_ceiling": r(lower(b)),
            "to_baseline": r(base),
        });
        // Each protocol's figures against the hand-written pipeline on the same protocol.
        if figure.golconde.as_deref() == Some("stomp") {
            ratios["to_ceiling_s"] = json!(r(self.median_rate(CEILING_S)));
            ratios["to_ceiling_sb"] = json!(r(self.median_rate(CEILING_SB)));
        } else {
            ratios["to_ceiling_ab"] = json!(r(self.median_rate(CEILING_AB)));
        }
        ratios
    }

    fn targets(&self) -> Vec<(String, Option<bool>)> {
        let mut out = Vec::new();
        let best = self.best_golconde("amqp").map(|(r, _)| r);
        let a = self.median_rate(CEILING_A);
        let b = self.median_rate(CEILING_B);
        let base = self.median_rate(BASELINE);
        let ceiling = match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            _ => None,
        };
        out.push((
            format!(
                "end-to-end AMQP >= 0.85 x min(ceiling A, ceiling B): {}",
                fmt_ratio(best.zip(ceiling).map(|(r, c)| r / c))
            ),
            best.zip(ceiling).map(|(r, c)| r >= 0.85 * c),
        ));
        out.push((
            format!(
                "end-to-end AMQP >= 10 x baseline: {}",
                fmt_ratio(best.zip(base).map(|(r, c)| r / c))
            ),
            best.zip(base).map(|(r, c)| r >= 10.0 * c),
        ));
        let half = self.half_load();
        let p99 = half.and_then(|f| spread(&f.p99)).map(|s| s.median);
        out.push((
            format!(
                "p99 latency at half load < 50 ms: {}{}",
                p99.map_or("-".into(), |p| format!("{p:.1} ms")),
                half.and_then(|f| f.load)
                    .map_or(String::new(), |l| format!(" (at {})", l.label()))
            ),
            p99.map(|p| p < 50.0),
        ));
        let peak = self
            .figures
            .iter()
            .flat_map(|f| f.rss.iter().copied())
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        out.push((
            format!(
                "peak RSS < 150 MB: {}",
                peak.map_or("-".into(), |p| format!("{p:.1} MB (highest of all runs)"))
            ),
            peak.map(|p| p < 150.0),
        ));
        out.extend(self.isolation_targets());
        for (transport, ceiling, through, letter) in [
            ("nats", CEILING_N, CEILING_NB, "N"),
            ("redis", CEILING_R, CEILING_RB, "R"),
        ] {
            let Some((rate, workers)) = self.best_golconde(transport) else {
                continue;
            };
            let own = self.median_rate(ceiling);
            let lower = own.zip(b).map(|(own, b)| own.min(b));
            out.push((
                format!(
                    "end-to-end {} >= 0.85 x ceiling {letter}: {} (workers={workers}); against \
                     min(ceiling {letter}, ceiling B): {}",
                    transport.to_uppercase(),
                    fmt_ratio(own.map(|c| rate / c)),
                    fmt_ratio(lower.map(|c| rate / c)),
                ),
                own.map(|c| rate >= 0.85 * c),
            ));
            let through = self.median_rate(through);
            out.push((
                format!(
                    "end-to-end {} >= 0.85 x ceiling {letter}B (a hand-written {0} -> \
                     PostgreSQL pipeline on the same machine): {} (workers={workers})",
                    transport.to_uppercase(),
                    fmt_ratio(through.map(|c| rate / c)),
                ),
                through.map(|c| rate >= 0.85 * c),
            ));
        }
        let mysql = self
            .best(|f| f.golconde.as_deref() == Some("amqp") && f.database == "mysql" && !f.process);
        let c = a.zip(self.median_rate(CEILING_C)).map(|(a, c)| a.min(c));
        out.push((
            format!(
                "end-to-end AMQP -> MariaDB >= 0.8 x min(ceiling A, ceiling C): {}{}",
                fmt_ratio(mysql.zip(c).map(|((r, _), c)| r / c)),
                mysql.map_or(String::new(), |(_, w)| format!(" (workers={w})"))
            ),
            mysql.zip(c).map(|((r, _), c)| r >= 0.8 * c),
        ));
        let memory: Vec<(u64, f64)> = self
            .figures
            .iter()
            .filter(|f| f.memory)
            .filter_map(|f| spread(&f.rss).map(|s| (f.messages, s.median)))
            .collect();
        if memory.len() >= 2 {
            let (small, large) = (memory[0], memory[memory.len() - 1]);
            out.push((
                format!(
                    "{} messages within 10% of {} in peak RSS: {:.2}x",
                    large.0,
                    small.0,
                    large.1 / small.1
                ),
                Some(large.1 <= small.1 * 1.10),
            ));
        }
        out.extend(self.amqp_targets());
        out.extend(self.stomp_targets());
        out.extend(self.latency_targets());
        let host = self.best(|f| f.golconde.as_deref() == Some("memory"));
        out.push((
            format!(
                "host with in-memory plugins >= 1,000,000 msgs/s: {}",
                host.map_or("-".into(), |(r, w)| format!("{r:.0} (workers={w})"))
            ),
            host.map(|(r, _)| r >= 1_000_000.0),
        ));
        out
    }

    /// Golconde's latency figure nearest half of its capacity (the highest rate when the
    /// capacity was not measured).
    fn half_load(&self) -> Option<&Figure> {
        let golconde = || {
            self.figures
                .iter()
                .filter(|f| f.load.is_some_and(|l| l.consumer == Consumer::Golconde))
        };
        let distance = |f: &&Figure| f.load.and_then(|l| l.share).map(|s| (s - 0.5).abs());
        golconde()
            .filter(|f| distance(f).is_some())
            .min_by(|a, b| {
                distance(a)
                    .unwrap_or(0.0)
                    .total_cmp(&distance(b).unwrap_or(0.0))
            })
            .or_else(|| {
                golconde().max_by(|a, b| {
                    let rate = |f: &Figure| f.load.map_or(0.0, |l| l.rate);
                    rate(a).total_cmp(&rate(b))
                })
            })
    }

    /// Every worker count of `golconde stomp` against ceiling S: the same queue drained over
    /// STOMP with the same acking, so that the STOMP figure is compared with its own kind.
    /// AMQP -> autosql -> postgres in thread mode, at each worker count: at most 8 µs of
    /// daemon CPU per message, at least 0.9 of ceiling A with cumulative acks; and the most
    /// workers measured no slower than one.
    fn amqp_targets(&self) -> Vec<(String, Option<bool>)> {
        let amqp: Vec<&Figure> = self
            .figures
            .iter()
            .filter(|f| {
                f.golconde.as_deref() == Some("amqp") && !f.process && !f.memory && f.is_reference()
            })
            .collect();
        if amqp.is_empty() {
            return vec![(
                "AMQP CPU <= 8 us/msg and >= 0.9 x ceiling A (ack every 100): not measured \
                 (needs the amqp part)"
                    .into(),
                None,
            )];
        }
        let cumulative = self.median_rate(CEILING_A_CUMULATIVE);
        let median = |v: &[f64]| spread(v).map(|s| s.median);
        let bare = self.median_cpu(CEILING_A_CUMULATIVE);
        let through = self.median_rate(CEILING_AB);
        let mut out = Vec::new();
        for f in &amqp {
            let cpu = median(&f.cpu_us);
            out.push((
                format!(
                    "golconde amqp, workers={} CPU <= 8 us/msg: {}",
                    f.workers,
                    fmt_cpu(cpu, bare, "ceiling A's (ack every 100)")
                ),
                cpu.map(|c| c <= 8.0),
            ));
            let rate = median(&f.rates);
            out.push((
                format!(
                    "golconde amqp, workers={} >= 0.9 x ceiling A (ack every 100): {}; \
                     against ceiling AB (a hand-written RabbitMQ -> PostgreSQL pipeline): {}",
                    f.workers,
                    fmt_ratio(rate.zip(cumulative).map(|(r, c)| r / c)),
                    fmt_ratio(rate.zip(through).map(|(r, c)| r / c))
                ),
                rate.zip(cumulative).map(|(r, c)| r >= 0.9 * c),
            ));
        }
        let one = amqp.iter().find(|f| f.workers == 1);
        let most = amqp
            .iter()
            .filter(|f| f.workers > 1)
            .max_by_key(|f| f.workers);
        if let (Some(one), Some(most)) = (one, most) {
            let ratio = median(&most.rates)
                .zip(median(&one.rates))
                .map(|(m, o)| m / o);
            out.push((
                format!(
                    "golconde amqp, workers={} no slower than workers=1: {}",
                    most.workers,
                    fmt_ratio(ratio)
                ),
                ratio.map(|r| r >= 1.0),
            ));
        }
        out
    }

    fn stomp_targets(&self) -> Vec<(String, Option<bool>)> {
        let ceiling = self.median_rate(CEILING_S);
        let stomp: Vec<(u32, f64, Option<f64>)> = self
            .figures
            .iter()
            .filter(|f| f.golconde.as_deref() == Some("stomp") && !f.process && f.is_reference())
            .filter_map(|f| {
                let cpu = spread(&f.cpu_us).map(|s| s.median);
                spread(&f.rates).map(|s| (f.workers, s.median, cpu))
            })
            .collect();
        if stomp.is_empty() {
            return vec![(
                "end-to-end STOMP >= 0.9 x ceiling S: not measured (needs the stomp part)".into(),
                None,
            )];
        }
        let bare = self.median_cpu(CEILING_S);
        let through = self.median_rate(CEILING_SB);
        stomp
            .into_iter()
            .map(|(workers, rate, cpu)| {
                (
                    format!(
                        "golconde stomp, workers={workers} >= 0.9 x ceiling S: {}; CPU {}; \
                         against ceiling SB (a hand-written STOMP -> PostgreSQL pipeline): {}",
                        fmt_ratio(ceiling.map(|c| rate / c)),
                        fmt_cpu(cpu, bare, "ceiling S's"),
                        fmt_ratio(through.map(|c| rate / c))
                    ),
                    ceiling.map(|c| rate >= 0.9 * c),
                )
            })
            .collect()
    }

    /// At each rate of the latency part: Golconde's p50 within 5 ms of the broker alone's,
    /// its p99 at most 1.5 times the broker alone's.
    fn latency_targets(&self) -> Vec<(String, Option<bool>)> {
        let median = |v: &[f64]| spread(v).map(|s| s.median);
        let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} ms"));
        let mut out = Vec::new();
        for golconde in &self.figures {
            let Some(load) = golconde.load.filter(|l| l.consumer == Consumer::Golconde) else {
                continue;
            };
            let at_rate = |consumer| {
                self.figures.iter().find(|f| {
                    f.load
                        .is_some_and(|l| l.consumer == consumer && l.rate == load.rate)
                })
            };
            let alone = at_rate(Consumer::Broker);
            let of = |pick: fn(&Figure) -> &Vec<f64>| {
                (median(pick(golconde)), alone.and_then(|a| median(pick(a))))
            };
            let (p50, p50_alone) = of(|f| &f.p50);
            let (p99, p99_alone) = of(|f| &f.p99);
            // Not a target: what a bare consumer committing to the same database gets, so
            // that a gap to the broker alone can be told apart from the database's own.
            let database = |pick: fn(&Figure) -> &Vec<f64>| {
                at_rate(Consumer::Database)
                    .and_then(|f| median(pick(f)))
                    .map_or(String::new(), |v| {
                        format!("; broker and database alone: {v:.1} ms")
                    })
            };
            let p50s = p50.zip(p50_alone);
            let p99s = p99.zip(p99_alone);
            out.push((
                format!(
                    "at {}: golconde p50 within 5 ms of broker-alone p50: {} vs {}{}{}",
                    load.label(),
                    ms(p50),
                    ms(p50_alone),
                    p50s.map_or(String::new(), |(g, b)| format!(" ({:+.1} ms)", g - b)),
                    database(|f| &f.p50)
                ),
                p50s.map(|(g, b)| g - b <= 5.0),
            ));
            out.push((
                format!(
                    "at {}: golconde p99 <= 1.5 x broker-alone p99: {} vs {}{}{}",
                    load.label(),
                    ms(p99),
                    ms(p99_alone),
                    p99s.map_or(String::new(), |(g, b)| format!(" ({:.2}x)", g / b)),
                    database(|f| &f.p99)
                ),
                p99s.map(|(g, b)| g <= 1.5 * b),
            ));
        }
        if out.is_empty() {
            out.push((
                "golconde latency at 25% and 50% of capacity against the broker alone's: not \
                 measured (needs the latency part)"
                    .into(),
                None,
            ));
        }
        out
    }

    /// Process isolation against thread mode, per worker count measured in both, over AMQP.
    fn isolation_targets(&self) -> Vec<(String, Option<bool>)> {
        let amqp = |process: bool| {
            self.figures
                .iter()
                .filter(move |f| {
                    f.golconde.as_deref() == Some("amqp")
                        && f.process == process
                        && f.is_reference()
                })
                .filter_map(|f| spread(&f.rates).map(|s| (f.workers, s.median)))
        };
        let thread: Vec<(u32, f64)> = amqp(false).collect();
        let pairs: Vec<(u32, f64)> = amqp(true)
            .filter_map(|(workers, process)| {
                let (_, thread) = thread.iter().find(|(w, _)| *w == workers)?;
                Some((workers, process / thread))
            })
            .collect();
        if pairs.is_empty() {
            return vec![(
                "AMQP in process isolation >= 0.95 x thread mode: not measured (needs the \
                 amqp and process parts, same worker counts)"
                    .into(),
                None,
            )];
        }
        pairs
            .into_iter()
            .map(|(workers, ratio)| {
                (
                    format!(
                        "AMQP in process isolation >= 0.95 x thread mode, workers={workers}: {ratio:.2}"
                    ),
                    Some(ratio >= 0.95),
                )
            })
            .collect()
    }

    /// The debezium processor against autosql, per worker count measured with both: the
    /// same rows over AMQP into PostgreSQL in thread mode, in the same run.
    fn processor_costs(&self) -> Vec<Cost> {
        let median = |v: &[f64]| spread(v).map(|s| s.median);
        let thread = |processor: &'static str| {
            self.figures.iter().filter(move |f| {
                f.golconde.as_deref() == Some("amqp")
                    && !f.process
                    && f.database == "postgres"
                    && f.processor == processor
            })
        };
        thread("debezium")
            .filter_map(|d| {
                let a = thread("autosql").find(|a| a.workers == d.workers)?;
                Some(Cost {
                    workers: d.workers,
                    cpu_us: (median(&d.cpu_us)?, median(&a.cpu_us)?),
                    rate: (median(&d.rates)?, median(&a.rates)?),
                })
            })
            .collect()
    }

    pub fn print(&self, plan: &Value) {
        println!();
        println!("Golconde bench: {plan}");
        println!();
        println!(
            "{:<66} {:>9} {:>24} {:>5} {:>5} {:>5} {:>5} {:>5} {:>6} {:>6} {:>5} {:>7} {:>6} {:>6} {:>6} {:>18} {:>18} {:>18} {:>8} {:>18} {:>11}",
            "part",
            "messages",
            "msgs/s median [min-max]",
            "/A",
            "/Acum",
            "/S",
            "/B",
            "/C",
            "/minAB",
            "/minAC",
            "/NR",
            "/minNRB",
            "/NRB",
            "/AB|SB",
            "x base",
            "CPU us/msg",
            "p50 ms",
            "p99 ms",
            "max ms",
            "peak RSS MB",
            "daemon+child"
        );
        for f in &self.figures {
            let ratios = self.ratios(f);
            let g = |k: &str| match ratios.get(k) {
                Some(v) => fmt_ratio(v.as_f64()),
                None => "".into(),
            };
            let split = match (spread(&f.rss_daemon), spread(&f.rss_child)) {
                (Some(d), Some(c)) => format!("{:.1}+{:.1}", d.median, c.median),
                _ => "-".into(),
            };
            println!(
                "{:<66} {:>9} {:>24} {:>5} {:>5} {:>5} {:>5} {:>5} {:>6} {:>6} {:>5} {:>7} {:>6} {:>6} {:>6} {:>18} {:>18} {:>18} {:>8} {:>18} {:>11}",
                f.name,
                f.messages,
                fmt_spread(spread(&f.rates), 0),
                g("to_ceiling_a_ack_each"),
                g("to_ceiling_a_ack_every_100"),
                g("to_ceiling_s"),
                g("to_ceiling_b"),
                g("to_ceiling_c"),
                g("to_min_ceiling"),
                g("to_min_ceiling_a_c"),
                g("to_stream_ceiling"),
                g("to_min_stream_ceiling_b"),
                g("to_stream_pipeline_ceiling"),
                match ratios.get("to_ceiling_sb") {
                    Some(_) => g("to_ceiling_sb"),
                    None => g("to_ceiling_ab"),
                },
                g("to_baseline"),
                fmt_spread(spread(&f.cpu_us), 1),
                fmt_spread(spread(&f.p50), 1),
                fmt_spread(spread(&f.p99), 1),
                spread(&f.max).map_or("-".into(), |s| format!("{:.1}", s.median)),
                fmt_spread(spread(&f.rss), 1),
                split,
            );
        }
        let costs = self.processor_costs();
        if !costs.is_empty() {
            println!();
            println!(
                "debezium against autosql (same rows over AMQP into PostgreSQL, same run; \
                 daemon CPU time per message, medians):"
            );
            for c in &costs {
                println!("  {}", c.text());
            }
        }
        println!();
        println!(
            "targets (issue 6, process isolation, mysql, nats, redis; issue 15: stomp, latency, \
             host):"
        );
        for (text, met) in self.targets() {
            let mark = match met {
                Some(true) => "met   ",
                Some(false) => "MISSED",
                None => "n/a   ",
            };
            println!("  {mark} {text}");
        }
    }

    pub fn write(&self, dir: &Path, plan: &Value) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let stamp = crate::workload::timestamp(now).replace(':', "-");
        let path = dir.join(format!("{stamp}.json"));
        let s = |v: &[f64]| {
            spread(v).map(|s| json!({"median": s.median, "min": s.min, "max": s.max, "runs": v}))
        };
        let figures: Vec<Value> = self
            .figures
            .iter()
            .map(|f| {
                json!({
                    "part": f.name,
                    "messages": f.messages,
                    "msgs_per_s": s(&f.rates),
                    "ratios": self.ratios(f),
                    "cpu_us_per_message": s(&f.cpu_us),
                    "processor": f.golconde.as_ref().map(|_| &f.processor),
                    "database": f.golconde.as_ref().map(|_| &f.database),
                    "p50_ms": s(&f.p50),
                    "p99_ms": s(&f.p99),
                    "max_ms": s(&f.max),
                    "peak_rss_mb": s(&f.rss),
                    "peak_rss_daemon_mb": s(&f.rss_daemon),
                    "peak_rss_child_mb": s(&f.rss_child),
                    "isolation": f.golconde.as_ref().map(|_| if f.process { "process" } else { "thread" }),
                    "latency_rate_msgs_per_s": f.load.map(|l| l.rate),
                    "latency_share_of_capacity": f.load.and_then(|l| l.share),
                    "latency_consumer": f.load.map(|l| l.consumer.label()),
                })
            })
            .collect();
        let targets: Vec<Value> = self
            .targets()
            .into_iter()
            .map(|(text, met)| json!({"target": text, "met": met}))
            .collect();
        let costs: Vec<Value> = self
            .processor_costs()
            .iter()
            .map(|c| {
                json!({
                    "workers": c.workers,
                    "cpu_us_per_message_debezium": c.cpu_us.0,
                    "cpu_us_per_message_autosql": c.cpu_us.1,
                    "cpu_ratio_debezium_to_autosql": c.cpu_us.0 / c.cpu_us.1,
                    "cpu_us_difference": c.cpu_us.0 - c.cpu_us.1,
                    "msgs_per_s_debezium": c.rate.0,
                    "msgs_per_s_autosql": c.rate.1,
                    "rate_ratio_debezium_to_autosql": c.rate.0 / c.rate.1,
                })
            })
            .collect();
        let doc = json!({"at": crate::workload::timestamp(now), "plan": plan,
                         "figures": figures, "targets": targets,
                         "debezium_against_autosql": costs});
        std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10 s of messages 1 ms apart, at 1 ms each but for the `slow` ones, at 50 ms.
    fn run(slow: impl Fn(i64) -> bool) -> Vec<Sample> {
        (0..10_000)
            .map(|i| Sample {
                published_us: 1_800_000_000_000_000 + i * 1000,
                ms: if slow(i) { 50.0 } else { 1.0 },
            })
            .collect()
    }

    #[test]
    fn a_stall_and_a_spread_tail_are_told_apart() {
        // The database stalled from 4,050 to 4,099 ms into the run, while messages 4,000
        // to 4,099 were on their way, and no other.
        let commit = Stall {
            start_us: 1_800_000_000_000_000 + 4_050 * 1000,
            ms: 49.0,
        };
        let (ms, stall) = latencies(&run(|i| (4_000..4_100).contains(&i)), &[commit]);
        assert_eq!(ms.len(), 10_000);
        assert!(ms.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(
            stall,
            Tail {
                messages: 100,
                windows: 1,
                of: 100,
                in_stalls: 100,
            }
        );
        let (_, spread) = latencies(&run(|i| i % 100 == 0), &[commit]);
        assert_eq!(
            spread,
            Tail {
                messages: 100,
                windows: 100,
                of: 100,
                // Only message 4,000 (published 50 ms before the stall, 50 ms on its way)
                // overlaps it.
                in_stalls: 1,
            }
        );
        let (ms, none) = latencies(&[], &[]);
        assert!(ms.is_empty());
        assert_eq!(none.of, 0);
    }

    #[test]
    fn medians_and_percentiles() {
        let s = spread(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(spread(&[1.0, 2.0, 3.0, 10.0]).unwrap().median, 2.5);
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 50.0), 50.0);
        assert_eq!(percentile(&sorted, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }

    fn amqp(process: bool, workers: u32, rates: &[f64]) -> Figure {
        let mut f = Figure::new("f", 1);
        f.rates = rates.to_vec();
        f.golconde = Some("amqp".into());
        f.process = process;
        f.workers = workers;
        f
    }

    #[test]
    fn amqp_is_held_to_its_cpu_the_cumulative_ceiling_and_its_worker_counts() {
        let mut report = Report::default();
        assert_eq!(report.amqp_targets()[0].1, None, "not measured");
        let mut ceiling = rated(CEILING_A_CUMULATIVE, &[1000.0]);
        ceiling.cpu_us = vec![3.0, 2.5, 4.0];
        report.add(ceiling);
        let mut one = amqp(false, 1, &[950.0]);
        one.cpu_us = vec![7.5];
        let mut four = amqp(false, 4, &[880.0]);
        four.cpu_us = vec![9.0];
        report.add(one);
        report.add(four);
        report.add(amqp(true, 4, &[10.0]));
        let targets = report.amqp_targets();
        let met: Vec<Option<bool>> = targets.iter().map(|(_, met)| *met).collect();
        assert_eq!(
            met,
            [
                Some(true),
                Some(true),
                Some(false),
                Some(false),
                Some(false)
            ],
            "{targets:?}"
        );
        assert!(
            targets[1].0.ends_with(
                "0.95; against ceiling AB (a hand-written RabbitMQ -> PostgreSQL pipeline): -"
            ),
            "{}",
            targets[1].0
        );
        report.add(rated(CEILING_AB, &[1100.0, 900.0, 1000.0]));
        let with_ab = report.amqp_targets();
        assert!(
            with_ab[1].0.ends_with("pipeline): 0.95"),
            "against ceiling AB's median: {}",
            with_ab[1].0
        );
        assert_eq!(with_ab[1].1, Some(true), "ceiling AB sets no target");
        assert!(
            targets[0]
                .0
                .ends_with("7.5 us/msg (2.50x ceiling A's (ack every 100) bare client)"),
            "against the bare client's median: {}",
            targets[0].0
        );
        assert!(targets[4]
            .0
            .contains("workers=4 no slower than workers=1: 0.93"));
    }

    #[test]
    fn process_isolation_is_compared_with_thread_mode_per_worker_count() {
        let mut report = Report::default();
        report.add(amqp(false, 1, &[100.0, 90.0, 110.0]));
        report.add(amqp(false, 4, &[200.0]));
        assert_eq!(report.isolation_targets().len(), 1);
        assert_eq!(report.isolation_targets()[0].1, None);
        assert!(report.isolation_targets()[0].0.contains("not measured"));
        report.add(amqp(true, 1, &[96.0]));
        report.add(amqp(true, 4, &[180.0]));
        let targets = report.isolation_targets();
        assert_eq!(targets.len(), 2);
        assert!(
            targets[0].0.ends_with("workers=1: 0.96"),
            "{}",
            targets[0].0
        );
        assert_eq!(targets[0].1, Some(true));
        assert!(
            targets[1].0.ends_with("workers=4: 0.90"),
            "{}",
            targets[1].0
        );
        assert_eq!(targets[1].1, Some(false));
        // Process mode never stands in for thread mode's best rate.
        assert_eq!(report.best_golconde("amqp"), Some((200.0, 4)));
    }

    fn rated(name: &str, rates: &[f64]) -> Figure {
        let mut f = Figure::new(name, 1);
        f.rates = rates.to_vec();
        f
    }

    #[test]
    fn mariadb_is_held_to_the_lower_of_the_broker_and_ceiling_c() {
        let mut report = Report::default();
        report.add(rated(CEILING_A, &[1000.0]));
        report.add(rated(CEILING_B, &[2000.0]));
        let mut mysql = amqp(false, 4, &[700.0]);
        mysql.database = "mysql".into();
        report.add(mysql);
        let target = |report: &Report| {
            report
                .targets()
                .into_iter()
                .find(|(t, _)| t.contains("MariaDB"))
                .unwrap()
        };
        // Without ceiling C there is nothing to compare with; ceiling B never stands in.
        assert_eq!(target(&report).1, None);
        report.add(rated(CEILING_C, &[900.0]));
        assert_eq!(
            target(&report),
            (
                "end-to-end AMQP -> MariaDB >= 0.8 x min(ceiling A, ceiling C): 0.78 (workers=4)"
                    .into(),
                Some(false)
            )
        );
        let ratios = report.ratios(&report.figures[2]);
        assert_eq!(ratios["to_ceiling_c"].as_f64(), Some(700.0 / 900.0));
        assert!(ratios.get("to_ceiling_b").is_none());
        // A MariaDB figure is not PostgreSQL's best.
        assert_eq!(report.best_golconde("amqp"), None);
    }

    #[test]
    fn debezium_is_compared_with_autosql_at_the_same_worker_count() {
        let mut report = Report::default();
        let mut autosql = amqp(false, 1, &[1000.0]);
        autosql.cpu_us = vec![40.0, 50.0, 60.0];
        report.add(autosql);
        let mut debezium = amqp(false, 1, &[800.0]);
        debezium.processor = "debezium".into();
        debezium.cpu_us = vec![75.0];
        report.add(debezium);
        let mut lone = amqp(false, 2, &[800.0]);
        lone.processor = "debezium".into();
        lone.cpu_us = vec![75.0];
        report.add(lone);
        let costs = report.processor_costs();
        assert_eq!(costs.len(), 1);
        assert_eq!(
            costs[0].text(),
            "workers=1: CPU 75.0 vs 50.0 us per message = 1.50x (+25.0 us); 800 vs 1000 msgs/s = 0.80x"
        );
        assert_eq!(report.best_golconde("amqp"), Some((1000.0, 1)));
        assert_eq!(report.ratios(&report.figures[1]), json!({}));
    }

    fn find(report: &Report, part: &str) -> Vec<(String, Option<bool>)> {
        report
            .targets()
            .into_iter()
            .filter(|(t, _)| t.contains(part))
            .collect()
    }

    #[test]
    fn stomp_is_held_to_ceiling_s_at_every_worker_count() {
        let mut report = Report::default();
        let stomp = |workers: u32, rate: f64| {
            let mut f = amqp(false, workers, &[rate]);
            f.golconde = Some("stomp".into());
            f
        };
        let mut one = stomp(1, 950.0);
        one.cpu_us = vec![6.0];
        report.add(one);
        report.add(stomp(4, 850.0));
        let targets = find(&report, "ceiling S");
        assert_eq!(targets.len(), 2);
        assert!(targets.iter().all(|(_, met)| met.is_none()), "{targets:?}");
        let mut ceiling = rated(CEILING_S, &[900.0, 1000.0, 1100.0]);
        ceiling.cpu_us = vec![4.0];
        report.add(ceiling);
        assert_eq!(
            find(&report, "ceiling S"),
            [
                (
                    "golconde stomp, workers=1 >= 0.9 x ceiling S: 0.95; CPU 6.0 us/msg \
                     (1.50x ceiling S's bare client); against ceiling SB (a hand-written \
                     STOMP -> PostgreSQL pipeline): -"
                        .into(),
                    Some(true)
                ),
                (
                    "golconde stomp, workers=4 >= 0.9 x ceiling S: 0.85; CPU -; against \
                     ceiling SB (a hand-written STOMP -> PostgreSQL pipeline): -"
                        .into(),
                    Some(false)
                ),
            ]
        );
        // Ceiling SB sets no target, it is only told beside ceiling S.
        report.add(rated(CEILING_SB, &[1000.0]));
        let with_sb = find(&report, "ceiling S");
        assert!(
            with_sb[1].0.ends_with("pipeline): 0.85"),
            "{}",
            with_sb[1].0
        );
        assert_eq!(with_sb[1].1, Some(false));
        assert_eq!(
            report.ratios(&report.figures[0])["to_ceiling_sb"].as_f64(),
            Some(0.95)
        );
        assert!(report
            .ratios(&report.figures[0])
            .get("to_ceiling_ab")
            .is_none());
        report.figures.pop();
        assert_eq!(
            report.ratios(&report.figures[0])["to_ceiling_s"].as_f64(),
            Some(0.95)
        );
        // Only STOMP figures are compared with ceiling S.
        report.add(amqp(false, 1, &[500.0]));
        assert!(report
            .ratios(&report.figures[3])
            .get("to_ceiling_s")
            .is_none());
        // Without the stomp part, one line says it was not measured.
        let none = Report::default();
        assert_eq!(find(&none, "ceiling S")[0].1, None);
    }

    fn latency(golconde: bool, rate: f64, share: Option<f64>, p50: f64, p99: f64) -> Figure {
        let consumer = if golconde {
            Consumer::Golconde
        } else {
            Consumer::Broker
        };
        latency_of(consumer, rate, share, p50, p99)
    }

    fn latency_of(consumer: Consumer, rate: f64, share: Option<f64>, p50: f64, p99: f64) -> Figure {
        let mut f = Figure::new("latency", 1);
        f.load = Some(Load {
            rate,
            share,
            consumer,
        });
        f.p50 = vec![p50];
        f.p99 = vec![p99];
        f
    }

    #[test]
    fn latency_is_compared_with_the_broker_alone_at_each_rate() {
        let mut report = Report::default();
        report.add(latency(false, 500.0, Some(0.25), 2.0, 10.0));
        report.add(latency(true, 500.0, Some(0.25), 6.5, 14.0));
        report.add(latency(false, 1000.0, Some(0.5), 3.0, 10.0));
        report.add(latency(true, 1000.0, Some(0.5), 9.0, 16.0));
        assert_eq!(
            find(&report, "broker-alone"),
            [
                (
                    "at 500 msgs/s (25%): golconde p50 within 5 ms of broker-alone p50: 6.5 ms \
                     vs 2.0 ms (+4.5 ms)"
                        .into(),
                    Some(true)
                ),
                (
                    "at 500 msgs/s (25%): golconde p99 <= 1.5 x broker-alone p99: 14.0 ms vs \
                     10.0 ms (1.40x)"
                        .into(),
                    Some(true)
                ),
                (
                    "at 1000 msgs/s (50%): golconde p50 within 5 ms of broker-alone p50: 9.0 ms \
                     vs 3.0 ms (+6.0 ms)"
                        .into(),
                    Some(false)
                ),
                (
                    "at 1000 msgs/s (50%): golconde p99 <= 1.5 x broker-alone p99: 16.0 ms vs \
                     10.0 ms (1.60x)"
                        .into(),
                    Some(false)
                ),
            ]
        );
        // The bare consumer applying to the database is context on the same lines, never
        // the reference.
        report.add(latency_of(Consumer::Database, 500.0, Some(0.25), 4.0, 13.0));
        let lines = find(&report, "at 500 msgs/s");
        assert_eq!(lines[0].1, Some(true));
        assert!(lines[0]
            .0
            .ends_with("(+4.5 ms); broker and database alone: 4.0 ms"));
        assert!(lines[1]
            .0
            .ends_with("(1.40x); broker and database alone: 13.0 ms"));
        assert!(!find(&report, "at 1000 msgs/s")[0].0.contains("database"));
        // Half load is the figure at 50% of capacity, not the last or the fastest.
        report.add(latency(true, 1500.0, Some(0.75), 40.0, 60.0));
        assert_eq!(
            find(&report, "half load"),
            [(
                "p99 latency at half load < 50 ms: 16.0 ms (at 1000 msgs/s (50%))".into(),
                Some(true)
            )]
        );
        // Rates given without a measured capacity: the highest one stands for half load,
        // and a rate without a broker-alone figure has nothing to be compared with.
        let mut given = Report::default();
        given.add(latency(true, 2000.0, None, 4.0, 70.0));
        given.add(latency(true, 700.0, None, 3.0, 9.0));
        assert_eq!(find(&given, "half load")[0].1, Some(false));
        assert!(find(&given, "broker-alone")
            .iter()
            .all(|(_, met)| met.is_none()));
        assert!(find(&given, "broker-alone")[0]
            .0
            .starts_with("at 2000 msgs/s: "));
    }

    #[test]
    fn the_host_is_held_to_a_million_messages_a_second() {
        let mut report = Report::default();
        assert_eq!(find(&report, "in-memory")[0].1, None);
        let host = |workers: u32, rate: f64| {
            let mut f = Figure::new("host", 1);
            f.rates = vec![rate];
            f.golconde = Some("memory".into());
            f.processor = "memory".into();
            f.database = "memory".into();
            f.workers = workers;
            f
        };
        report.add(host(1, 900_000.0));
        report.add(host(4, 1_200_000.0));
        assert_eq!(
            find(&report, "in-memory"),
            [(
                "host with in-memory plugins >= 1,000,000 msgs/s: 1200000 (workers=4)".into(),
                Some(true)
            )]
        );
        // It is no AMQP figure and has no ratios to the ceilings.
        assert_eq!(report.best_golconde("amqp"), None);
        assert_eq!(report.ratios(&report.figures[0]), json!({}));
    }

    #[test]
    fn rss_is_kept_in_total_and_per_process() {
        let mut f = Figure::new("f", 1);
        f.rss(&Rss {
            daemon: 10 << 20,
            child: Some(30 << 20),
        });
        f.rss(&Rss {
            daemon: 12 << 20,
            child: None,
        });
        assert_eq!(f.rss, [40.0, 12.0]);
        assert_eq!(f.rss_daemon, [10.0, 12.0]);
        assert_eq!(f.rss_child, [30.0]);
    }
}

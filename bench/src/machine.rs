//! Where the machine's CPU went during a latency run: how busy its cores were, how many
//! threads waited to run, and the shares of the broker, the database, the daemon and the
//! bench itself (which publishes, and in the bare runs consumes too). A latency tail on a
//! machine whose cores are oversubscribed is run-queue delay as much as anything the
//! consumer does, and this says whether they were.
//!
//! Depends on /proc (Linux) and the bench's `daemon` module for reading a stat line. Key
//! decision: processes are told apart by their command name (`beam.smp`, `postgres`,
//! `mariadbd`, `golconde`), so nothing needs to know their pids.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};
use std::time::Duration;

use crate::daemon::{as_time, cpu_ticks};

/// How often the number of runnable threads is read.
const RUNNABLE_EVERY: Duration = Duration::from_millis(50);

/// Every this many reads of the runnable threads, the processes' CPU times are read too:
/// a process that ends before the watch stops (the daemon, a database backend) keeps what
/// it had used by its last reading.
const PROCESSES_EVERY: u32 = 5;

/// Whose CPU time a process's counts as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    Broker,
    Database,
    Golconde,
    Bench,
}

const GROUPS: [Group; 4] = [
    Group::Broker,
    Group::Database,
    Group::Golconde,
    Group::Bench,
];

impl Group {
    fn of(comm: &str, pid: u32, own: u32) -> Option<Group> {
        if pid == own {
            return Some(Group::Bench);
        }
        match comm {
            "beam.smp" | "erl_child_setup" | "inet_gethost" | "epmd" => Some(Group::Broker),
            "postgres" | "mariadbd" | "mysqld" => Some(Group::Database),
            c if c.starts_with("golconde") && c != "golconde-bench" => Some(Group::Golconde),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Group::Broker => "broker",
            Group::Database => "database",
            Group::Golconde => "golconde",
            Group::Bench => "bench (publisher and bare consumers)",
        }
    }
}

/// The counters read at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
struct Counts {
    /// Clock ticks of all cores, and of those idle or waiting for I/O.
    total: u64,
    idle: u64,
    /// CPU ticks of every process of each group, by pid, so that a process that ends
    /// meanwhile (a daemon stopped, a database backend gone) is not counted as negative.
    groups: Vec<(Group, u32, u64)>,
}

/// Of the `cpu` line of /proc/stat: all ticks, and the idle and iowait ones.
fn parse_stat(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest ticks are within user's).
    let total = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).unwrap_or(&0);
    Some((total, idle))
}

/// The `procs_running` of /proc/stat, the calling thread included.
fn parse_running(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("procs_running "))?
        .trim()
        .parse()
        .ok()
}

impl Counts {
    /// Takes each process's latest CPU time from `newer`, keeping those that ended.
    fn merge(&mut self, newer: Counts) {
        self.total = newer.total;
        self.idle = newer.idle;
        for (group, pid, ticks) in newer.groups {
            match self
                .groups
                .iter_mut()
                .find(|(g, p, _)| *g == group && *p == pid)
            {
                Some(known) => known.2 = known.2.max(ticks),
                None => self.groups.push((group, pid, ticks)),
            }
        }
    }
}

fn read() -> Counts {
    let own = std::process::id();
    let (total, idle) = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| parse_stat(&s))
        .unwrap_or_default();
    let mut groups = Vec::new();
    for pid in std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
    {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let comm = stat
            .split_once('(')
            .and_then(|(_, rest)| rest.rsplit_once(')'))
            .map_or("", |(comm, _)| comm);
        if let (Some(group), Some(ticks)) = (Group::of(comm, pid, own), cpu_ticks(&stat)) {
            groups.push((group, pid, ticks));
        }
    }
    Counts {
        total,
        idle,
        groups,
    }
}

/// What the machine did between [`Watch::start`] and [`Watch::stop`].
#[derive(Debug, PartialEq)]
pub struct Usage {
    /// Share of all cores busy (not idle, not waiting for I/O).
    pub busy: f64,
    pub cores: usize,
    /// Threads runnable on average (running or waiting for a core), this bench's sampler
    /// not counted.
    pub runnable: f64,
    /// Each group's CPU time, as a share of one core over the interval.
    pub shares: Vec<(&'static str, f64)>,
}

impl Usage {
    fn between(before: &Counts, after: &Counts, seconds: f64, runnable: f64) -> Usage {
        let total = after.total.saturating_sub(before.total).max(1);
        let idle = after.idle.saturating_sub(before.idle);
        let shares = GROUPS
            .iter()
            .map(|&group| {
                let ticks: u64 = after
                    .groups
                    .iter()
                    .filter(|(g, _, _)| *g == group)
                    .map(|(_, pid, ticks)| {
                        let earlier = before
                            .groups
                            .iter()
                            .find(|(g, p, _)| *g == group && p == pid)
                            .map_or(0, |(_, _, t)| *t);
                        ticks.saturating_sub(earlier)
                    })
                    .sum();
                (
                    group.name(),
                    as_time(ticks).as_secs_f64() / seconds.max(f64::EPSILON),
                )
            })
            .collect();
        Usage {
            busy: 1.0 - idle as f64 / total as f64,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            runnable,
            shares,
        }
    }

    pub fn describe(&self) -> String {
        let shares: Vec<String> = self
            .shares
            .iter()
            .map(|(name, share)| format!("{name} {:.0}%", share * 100.0))
            .collect();
        format!(
            "the machine meanwhile: {:.0}% of its {} cores busy, {:.1} threads runnable on \
             average; of one core: {}",
            self.busy * 100.0,
            self.cores,
            self.runnable,
            shares.join(", ")
        )
    }
}

/// Watches the machine from `start` to `stop`; the count of runnable threads is sampled on
/// a thread of its own, as the bench's runtime is busy publishing.
pub struct Watch {
    before: Counts,
    started: std::time::Instant,
    stop: Arc<AtomicBool>,
    sampler: std::thread::JoinHandle<(u64, u64, Counts)>,
}

impl Watch {
    pub fn start() -> Watch {
        let before = read();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let mut seen = before.clone();
        let sampler = std::thread::spawn(move || {
            let (mut sum, mut samples) = (0, 0);
            for round in 1.. {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                if let Some(running) = std::fs::read_to_string("/proc/stat")
                    .ok()
                    .and_then(|s| parse_running(&s))
                {
                    // The sampler itself is running while it reads.
                    sum += running.saturating_sub(1);
                    samples += 1;
                }
                if round % PROCESSES_EVERY == 0 {
                    seen.merge(read());
                }
                std::thread::sleep(RUNNABLE_EVERY);
            }
            (sum, samples, seen)
        });
        Watch {
            before,
            started: std::time::Instant::now(),
            stop,
            sampler,
        }
    }

    pub fn stop(self) -> Usage {
        let seconds = self.started.elapsed().as_secs_f64();
        self.stop.store(true, Ordering::Relaxed);
        let (sum, samples, mut seen) = self
            .sampler
            .join()
            .unwrap_or_else(|_| (0, 0, self.before.clone()));
        seen.merge(read());
        let runnable = sum as f64 / samples.max(1) as f64;
        Usage::between(&self.before, &seen, seconds, runnable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n\
                        intr 1\nprocs_running 3\nprocs_blocked 0\n";

    #[test]
    fn proc_stat_is_read() {
        assert_eq!(parse_stat(STAT), Some((1000, 850)));
        assert_eq!(parse_running(STAT), Some(3));
        assert_eq!(parse_stat("intr 1\n"), None);
    }

    #[test]
    fn processes_are_grouped_by_name() {
        assert_eq!(Group::of("beam.smp", 10, 1), Some(Group::Broker));
        assert_eq!(Group::of("postgres", 10, 1), Some(Group::Database));
        assert_eq!(Group::of("golconde", 10, 1), Some(Group::Golconde));
        assert_eq!(Group::of("golconde-bench", 1, 1), Some(Group::Bench));
        assert_eq!(Group::of("golconde-bench", 10, 1), None);
        assert_eq!(Group::of("bash", 10, 1), None);
    }

    #[test]
    fn a_process_that_ended_keeps_its_last_reading() {
        let mut seen = Counts {
            total: 10,
            idle: 5,
            groups: vec![(Group::Golconde, 3, 40)],
        };
        seen.merge(Counts {
            total: 20,
            idle: 6,
            groups: vec![(Group::Database, 4, 7)],
        });
        assert_eq!(
            seen,
            Counts {
                total: 20,
                idle: 6,
                groups: vec![(Group::Golconde, 3, 40), (Group::Database, 4, 7)],
            }
        );
    }

    #[test]
    fn usage_counts_each_process_from_its_own_start() {
        let before = Counts {
            total: 1000,
            idle: 500,
            groups: vec![(Group::Broker, 7, 100), (Group::Database, 8, 40)],
        };
        // pid 8 ended and pid 9 began meanwhile; the broker used 50 ticks.
        let after = Counts {
            total: 1400,
            idle: 600,
            groups: vec![(Group::Broker, 7, 150), (Group::Database, 9, 20)],
        };
        let usage = Usage::between(&before, &after, 2.0, 4.0);
        assert!((usage.busy - 0.75).abs() < 1e-9);
        let share = |name: &str| usage.shares.iter().find(|(n, _)| *n == name).unwrap().1;
        let tick = as_time(1).as_secs_f64();
        assert!((share("broker") - 50.0 * tick / 2.0).abs() < 1e-9);
        assert!((share("database") - 20.0 * tick / 2.0).abs() < 1e-9);
        assert_eq!(share("golconde"), 0.0);
        assert!(
            usage.describe().contains("75% of its"),
            "{}",
            usage.describe()
        );
    }
}

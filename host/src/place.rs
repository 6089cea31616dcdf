//! Which database worker each part of a batch goes to.
//!
//! [`crate::route`] splits a batch into one partition per worker by row; this module
//! decides which worker applies each partition. Every job a worker takes costs the same
//! whatever its size (a transaction, its round trips, two thread wake-ups), so a batch is
//! split into only as many jobs as it has [`MIN_JOB`]s of changes: a light load's small
//! batches go to one worker in one transaction, a heavy load's full ones are spread over
//! all of them.
//!
//! **Invariant:** a partition goes to the worker of its last job while the batch of that
//! job is still in flight. A worker applies its jobs in the order it gets them, so one
//! row's changes, which are always in one partition, keep queue order; a partition whose
//! last batch is done may go anywhere.
//!
//! Depends on nothing but the standard library.

/// The fewest changes worth a job of their own. A job's fixed cost (the wake-ups, the
/// round trips, waiting for the commit to be flushed) measured about a millisecond on a
/// busy 2-core machine, where PostgreSQL upserts a row in about 9 us: at 256 rows that is a
/// third of the job, not a half as at 128. Draining with 4 workers, 256 took 1.6 us of CPU
/// less per message than 128 and drained about a tenth faster.
pub const MIN_JOB: usize = 256;

/// Remembers where each partition went last.
pub struct Placer {
    /// Per partition, the worker and batch of its last job.
    homes: Vec<Option<(usize, u64)>>,
}

impl Placer {
    /// A placer for `workers` partitions and workers.
    pub fn new(workers: usize) -> Placer {
        Placer {
            homes: vec![None; workers],
        }
    }

    /// The worker of each partition of batch `batch`, whose partition `p` holds `sizes[p]`
    /// changes (one entry per worker); `in_flight` tells whether an earlier batch still is.
    /// Empty partitions get a worker too, which nothing is sent to.
    pub fn place(
        &mut self,
        batch: u64,
        sizes: &[usize],
        in_flight: impl Fn(u64) -> bool,
    ) -> Vec<usize> {
        let workers = self.homes.len();
        assert_eq!(sizes.len(), workers, "one size per partition");
        let wanted = sizes
            .iter()
            .sum::<usize>()
            .div_ceil(MIN_JOB)
            .clamp(1, workers);
        let mut placement: Vec<usize> = (0..workers).collect();
        let mut load = vec![0usize; workers];
        for p in 0..workers {
            if let Some((w, last)) = self.homes[p] {
                if sizes[p] > 0 && in_flight(last) {
                    placement[p] = w;
                    load[w] += sizes[p];
                    self.homes[p] = Some((w, batch));
                }
            }
        }
        for p in 0..workers {
            let placed = self.homes[p].is_some_and(|(_, last)| last == batch);
            if sizes[p] == 0 || placed {
                continue;
            }
            let jobs = load.iter().filter(|&&l| l > 0).count();
            let w = if jobs < wanted {
                // A job of its own: its usual worker if that one has none yet.
                if load[p] == 0 {
                    p
                } else {
                    (0..workers)
                        .find(|&w| load[w] == 0)
                        .expect("fewer jobs than workers")
                }
            } else {
                (0..workers)
                    .filter(|&w| load[w] > 0)
                    .min_by_key(|&w| load[w])
                    .expect("at least one job")
            };
            placement[p] = w;
            load[w] += sizes[p];
            self.homes[p] = Some((w, batch));
        }
        placement
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    fn jobs(placement: &[usize], sizes: &[usize]) -> usize {
        let mut used: Vec<usize> = (0..placement.len())
            .filter(|&p| sizes[p] > 0)
            .map(|p| placement[p])
            .collect();
        used.sort_unstable();
        used.dedup();
        used.len()
    }

    #[test]
    fn a_small_batch_is_one_job_and_a_full_one_is_spread() {
        let mut placer = Placer::new(4);
        let small = [10, 20, 5, 30];
        let placement = placer.place(0, &small, |_| false);
        assert_eq!(jobs(&placement, &small), 1);
        let full = [MIN_JOB - 3, MIN_JOB + 2, MIN_JOB - 8, MIN_JOB - 3];
        let placement = placer.place(1, &full, |_| false);
        assert_eq!(placement, vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_partition_stays_with_its_worker_while_its_batch_is_in_flight() {
        let mut placer = Placer::new(4);
        let full = [MIN_JOB - 3, MIN_JOB + 2, MIN_JOB - 8, MIN_JOB - 3];
        assert_eq!(placer.place(0, &full, |_| false), vec![0, 1, 2, 3]);
        // Batch 0 still commits: batch 1's partitions must follow it, small as they are.
        let small = [1, 1, 1, 1];
        assert_eq!(placer.place(1, &small, |b| b == 0), vec![0, 1, 2, 3]);
        // Once batch 1 is done too, they gather on one worker.
        let placement = placer.place(2, &small, |_| false);
        assert_eq!(jobs(&placement, &small), 1);
    }

    /// Batches go through a model of the dispatcher (at most two in flight, each worker
    /// applying its jobs in order, answering at random moments); whenever a partition is
    /// in two batches in flight at once, both jobs are on one worker.
    #[test]
    fn no_partition_is_ever_on_two_workers_at_once() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for workers in [2usize, 3, 4, 8] {
            let mut placer = Placer::new(workers);
            // Batches in flight: (id, worker of each non-empty partition).
            let mut in_flight: VecDeque<(u64, Vec<Option<usize>>)> = VecDeque::new();
            for batch in 0..5_000u64 {
                if in_flight.len() == 2 || (!in_flight.is_empty() && random(3) == 0) {
                    in_flight.pop_front();
                }
                let sizes: Vec<usize> = (0..workers)
                    .map(|_| match random(4) {
                        0 => 0,
                        1 => random(8) as usize,
                        _ => random(300) as usize,
                    })
                    .collect();
                let flying: Vec<u64> = in_flight.iter().map(|(id, _)| *id).collect();
                let placement = placer.place(batch, &sizes, |b| flying.contains(&b));
                let placed: Vec<Option<usize>> = (0..workers)
                    .map(|p| (sizes[p] > 0).then_some(placement[p]))
                    .collect();
                for (_, earlier) in &in_flight {
                    for p in 0..workers {
                        if let (Some(then), Some(now)) = (earlier[p], placed[p]) {
                            assert_eq!(then, now, "partition {p} of batch {batch} moved");
                        }
                    }
                }
                let total: usize = sizes.iter().sum();
                let partitions = sizes.iter().filter(|&&s| s > 0).count();
                if in_flight.is_empty() && total > 0 {
                    assert_eq!(
                        jobs(&placement, &sizes),
                        total.div_ceil(MIN_JOB).min(partitions),
                        "batch {batch} of {sizes:?}"
                    );
                }
                in_flight.push_back((batch, placed));
            }
        }
    }
}

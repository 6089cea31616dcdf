//! The changes in doubt: those whose last attempts failed with an error that may or may
//! not pass on a retry (which errors those are is the database plugin's to say: a missing
//! privilege, a statement timeout), counted per change (by its content's
//! [`Fingerprint`]). Below `max_attempts` such a failure holds the batch back as
//! transient, since a grant or a quieter server may fix it; at `max_attempts` the change
//! is taken to be at fault and dead-lettered, so one message cannot block its queue
//! forever.
//!
//! Shared by every session of a database instance, since the host retries on a new
//! session. Bounded: past [`MAX_TRACKED`] changes the one that failed longest ago is
//! forgotten (it starts counting again if it fails again).

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use golconde_plugin_api::Change;

use crate::fingerprint::Fingerprint;

/// The most changes counted at once.
pub const MAX_TRACKED: usize = 4096;

/// The failure counts of one database instance.
#[derive(Debug, Default)]
pub struct Doubts {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    counts: HashMap<Fingerprint, Count>,
    /// Counts failures of all changes: orders them by recency.
    clock: u64,
}

/// What becomes of a change that failed alone with an error that may pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It has failed this many times, fewer than `max_attempts`: the batch is retried.
    Retry(u32),
    /// It has failed this many times, `max_attempts` or more: it is at fault, and is
    /// forgotten here since it is dead-lettered.
    AtFault(u32),
}

#[derive(Debug, Clone, Copy)]
struct Count {
    failures: u32,
    /// `clock` at the last failure.
    last: u64,
}

impl Doubts {
    /// Counts one more failure of `change`; answers how many it has had.
    pub fn failed(&self, change: Fingerprint) -> u32 {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        let counts = &mut inner.counts;
        if counts.len() >= MAX_TRACKED && !counts.contains_key(&change) {
            let oldest = counts
                .iter()
                .min_by_key(|(_, c)| c.last)
                .map(|(fingerprint, _)| *fingerprint);
            if let Some(oldest) = oldest {
                counts.remove(&oldest);
            }
        }
        let count = counts.entry(change).or_insert(Count {
            failures: 0,
            last: now,
        });
        count.failures = count.failures.saturating_add(1);
        count.last = now;
        count.failures
    }

    /// Counts one more failure of every change of a batch that failed as a whole (a
    /// change given twice counts once); answers the most failures any of them has had.
    pub fn failed_together<'c>(&self, changes: impl IntoIterator<Item = &'c Change>) -> u32 {
        let attempted: HashSet<Fingerprint> = changes.into_iter().map(Fingerprint::of).collect();
        attempted
            .into_iter()
            .map(|change| self.failed(change))
            .max()
            .unwrap_or(0)
    }

    /// Judges `change`, which failed alone. `counted`: this failure was already counted
    /// (by [`Doubts::failed_together`] for the batch it was in), so it is not counted
    /// again.
    pub fn judge(&self, change: &Change, counted: bool, max_attempts: u32) -> Verdict {
        let fingerprint = Fingerprint::of(change);
        let failures = if counted {
            self.failures(fingerprint)
        } else {
            self.failed(fingerprint)
        };
        if failures < max_attempts {
            return Verdict::Retry(failures);
        }
        self.forget([fingerprint]);
        Verdict::AtFault(failures)
    }

    /// Forgets `changes`, which committed; fingerprints nothing while no change is in doubt.
    pub fn forget_changes<'c>(&self, changes: impl IntoIterator<Item = &'c Change>) {
        if !self.is_empty() {
            self.forget(changes.into_iter().map(Fingerprint::of));
        }
    }

    /// How often `change` has failed so far.
    pub fn failures(&self, change: Fingerprint) -> u32 {
        self.lock().counts.get(&change).map_or(0, |c| c.failures)
    }

    /// Whether no change is in doubt (then nothing needs to be fingerprinted).
    pub fn is_empty(&self) -> bool {
        self.lock().counts.is_empty()
    }

    /// Forgets `changes`: they committed, or were dead-lettered.
    pub fn forget(&self, changes: impl IntoIterator<Item = Fingerprint>) {
        let mut inner = self.lock();
        for change in changes {
            inner.counts.remove(&change);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use golconde_plugin_api::{Action, Operation, ROption, RVec};

    use super::*;

    fn change(table: &str) -> Change {
        Change {
            id: ROption::RNone,
            operations: RVec::from(vec![Operation {
                action: Action::Insert,
                table: table.into(),
                data: RVec::new(),
                restriction: RVec::new(),
            }]),
        }
    }

    fn fingerprint(n: usize) -> Fingerprint {
        let mut bytes = [0; 32];
        bytes[..8].copy_from_slice(&(n as u64).to_be_bytes());
        Fingerprint(bytes)
    }

    #[test]
    fn failures_are_counted_per_change_and_forgotten() {
        let doubts = Doubts::default();
        assert_eq!(doubts.failed(fingerprint(1)), 1);
        assert_eq!(doubts.failed(fingerprint(1)), 2);
        assert_eq!(doubts.failed(fingerprint(2)), 1);
        assert_eq!(doubts.failures(fingerprint(1)), 2);
        doubts.forget([fingerprint(1)]);
        assert_eq!(doubts.failures(fingerprint(1)), 0);
        assert!(!doubts.is_empty());
    }

    #[test]
    fn the_count_is_bounded_and_drops_the_longest_quiet() {
        let doubts = Doubts::default();
        for n in 0..MAX_TRACKED {
            doubts.failed(fingerprint(n));
        }
        // The first one fails again: it is the most recent now.
        doubts.failed(fingerprint(0));
        doubts.failed(fingerprint(MAX_TRACKED));
        assert_eq!(doubts.lock().counts.len(), MAX_TRACKED);
        assert_eq!(doubts.failures(fingerprint(0)), 2);
        assert_eq!(doubts.failures(fingerprint(1)), 0);
        assert_eq!(doubts.failures(fingerprint(MAX_TRACKED)), 1);
    }

    #[test]
    fn a_batch_counts_each_change_once_and_a_lone_change_is_judged() {
        let doubts = Doubts::default();
        let (a, b) = (change("a"), change("b"));
        assert_eq!(doubts.failed_together([&a, &b, &a]), 1);
        assert_eq!(doubts.failed_together([&a]), 2);
        // Counted already with its batch: judged on the count as it stands.
        assert_eq!(doubts.judge(&a, true, 3), Verdict::Retry(2));
        assert_eq!(doubts.judge(&a, false, 3), Verdict::AtFault(3));
        assert_eq!(doubts.failures(Fingerprint::of(&a)), 0);
        assert_eq!(doubts.failures(Fingerprint::of(&b)), 1);
        doubts.forget_changes([&b]);
        assert!(doubts.is_empty());
    }
}

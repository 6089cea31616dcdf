//! Histograms a pipeline's threads fill without a lock: fixed bucket bounds, one atomic
//! per bucket, the sum kept as an integer in a fixed unit (microseconds, messages).
//!
//! A thread that has many values at once (the ages of a batch's messages) gathers them in
//! a [`Tally`] on its stack and adds it in one go: one atomic add per bucket it touched,
//! not three per value. A pipeline in a process of its own reports its histograms as
//! plain numbers ([`Snapshot`]); the daemon adds what grew since the last report.
//!
//! Depends on nothing but `std`.

use std::sync::atomic::{AtomicU64, Ordering};

/// The most bounds a histogram has; a [`Tally`] is sized for it.
pub const MAX_BOUNDS: usize = 16;

/// What one histogram measures, and how.
#[derive(Debug)]
pub struct Shape {
    /// Upper bounds of the buckets, ascending, in the unit shown (seconds, messages); a
    /// last bucket above them all is implied.
    pub bounds: &'static [f64],
    /// How many units of the stored sum make one unit shown (1e6: microseconds).
    pub scale: f64,
}

/// Seconds a database worker took to apply its share of a batch.
pub const APPLY_SECONDS: Shape = Shape {
    bounds: &[
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ],
    scale: 1e6,
};

/// Messages in a batch.
pub const BATCH_MESSAGES: Shape = Shape {
    bounds: &[
        1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
    ],
    scale: 1.0,
};

/// Seconds between a message's `timestamp` and its commit. The AMQP timestamp has whole
/// seconds, so nothing finer than a second means anything here.
pub const AGE_SECONDS: Shape = Shape {
    bounds: &[
        1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0,
        86400.0,
    ],
    scale: 1e3,
};

/// One histogram.
#[derive(Debug)]
pub struct Histogram {
    shape: &'static Shape,
    /// Per bucket, not cumulative; one more than there are bounds.
    buckets: [AtomicU64; MAX_BOUNDS + 1],
    /// The sum of the values, times `shape.scale`.
    sum: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(shape: &'static Shape) -> Histogram {
        debug_assert!(shape.bounds.len() <= MAX_BOUNDS);
        Histogram {
            shape,
            buckets: Default::default(),
            sum: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn shape(&self) -> &'static Shape {
        self.shape
    }

    pub fn observe(&self, value: f64) {
        let mut tally = Tally::default();
        tally.observe(self.shape, value);
        self.add(&tally);
    }

    /// Adds what a [`Tally`] gathered.
    pub fn add(&self, tally: &Tally) {
        if tally.count == 0 {
            return;
        }
        for (bucket, n) in self.buckets.iter().zip(tally.buckets) {
            if n > 0 {
                bucket.fetch_add(n, Ordering::Relaxed);
            }
        }
        self.sum.fetch_add(tally.sum, Ordering::Relaxed);
        self.count.fetch_add(tally.count, Ordering::Relaxed);
    }

    /// The histogram as it is now. Read bucket by bucket while others may add, so the
    /// count may lag the buckets by a value or two; it settles on the next read.
    pub fn snapshot(&self) -> Snapshot {
        let n = self.shape.bounds.len() + 1;
        Snapshot {
            buckets: self.buckets[..n]
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum: self.sum.load(Ordering::Relaxed),
            count: self.count.load(Ordering::Relaxed),
        }
    }

    /// Adds the growth from `before` to `now` (two reports of another process's
    /// histogram of the same shape). Nothing if they do not fit this shape.
    pub fn add_growth(&self, before: &Snapshot, now: &Snapshot) {
        let n = self.shape.bounds.len() + 1;
        if now.buckets.len() != n || before.buckets.len() != n {
            return;
        }
        for ((bucket, was), is) in self.buckets.iter().zip(&before.buckets).zip(&now.buckets) {
            bucket.fetch_add(is.saturating_sub(*was), Ordering::Relaxed);
        }
        self.sum
            .fetch_add(now.sum.saturating_sub(before.sum), Ordering::Relaxed);
        self.count
            .fetch_add(now.count.saturating_sub(before.count), Ordering::Relaxed);
    }
}

/// Values gathered on a thread's stack before they are added to a [`Histogram`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    buckets: [u64; MAX_BOUNDS + 1],
    sum: u64,
    count: u64,
}

impl Tally {
    pub fn observe(&mut self, shape: &Shape, value: f64) {
        let value = if value.is_finite() {
            value.max(0.0)
        } else {
            0.0
        };
        let index = shape
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(shape.bounds.len());
        self.buckets[index] += 1;
        self.sum += (value * shape.scale).round() as u64;
        self.count += 1;
    }
}

/// A histogram's numbers at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Per bucket, not cumulative; the last one is above every bound.
    pub buckets: Vec<u64>,
    /// The sum, in the shape's stored unit.
    pub sum: u64,
    pub count: u64,
}

impl Snapshot {
    /// An empty histogram of `shape`.
    pub fn zero(shape: &Shape) -> Snapshot {
        Snapshot {
            buckets: vec![0; shape.bounds.len() + 1],
            sum: 0,
            count: 0,
        }
    }

    /// The sum in the unit shown.
    pub fn sum_in(&self, shape: &Shape) -> f64 {
        self.sum as f64 / shape.scale
    }

    /// As a report carries it: `[[buckets…], sum, count]`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!([self.buckets, self.sum, self.count])
    }

    /// Reads [`Snapshot::to_json`]'s form; `None` for anything else.
    pub fn from_json(value: &serde_json::Value) -> Option<Snapshot> {
        let buckets = value[0]
            .as_array()?
            .iter()
            .map(serde_json::Value::as_u64)
            .collect::<Option<Vec<u64>>>()?;
        Some(Snapshot {
            buckets,
            sum: value[1].as_u64()?,
            count: value[2].as_u64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_first_bucket_that_holds_them() {
        let h = Histogram::new(&BATCH_MESSAGES);
        h.observe(1.0);
        h.observe(3.0);
        h.observe(50.0);
        h.observe(1e9);
        let s = h.snapshot();
        assert_eq!(s.buckets.len(), BATCH_MESSAGES.bounds.len() + 1);
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[2], 1);
        assert_eq!(s.buckets[5], 1);
        assert_eq!(*s.buckets.last().unwrap(), 1);
        assert_eq!(s.count, 4);
        assert_eq!(s.sum_in(&BATCH_MESSAGES), 1e9 + 54.0);
    }

    #[test]
    fn a_tally_adds_like_single_observations() {
        let one = Histogram::new(&APPLY_SECONDS);
        let many = Histogram::new(&APPLY_SECONDS);
        let mut tally = Tally::default();
        for v in [0.0005, 0.003, 0.003, 7.0, -1.0, f64::NAN] {
            one.observe(v);
            tally.observe(&APPLY_SECONDS, v);
        }
        many.add(&tally);
        assert_eq!(one.snapshot(), many.snapshot());
        assert_eq!(many.snapshot().sum, 500 + 3000 + 3000 + 7_000_000);
    }

    #[test]
    fn growth_between_reports_is_added_once() {
        let parent = Histogram::new(&AGE_SECONDS);
        let child = Histogram::new(&AGE_SECONDS);
        child.observe(3.0);
        let first = child.snapshot();
        parent.add_growth(&Snapshot::default(), &first);
        assert_eq!(
            parent.snapshot().count,
            0,
            "a shape that does not fit is ignored"
        );
        let zero = Histogram::new(&AGE_SECONDS).snapshot();
        parent.add_growth(&zero, &first);
        child.observe(4000.0);
        let second = child.snapshot();
        parent.add_growth(&first, &second);
        assert_eq!(parent.snapshot(), second);
        let back = Snapshot::from_json(&second.to_json()).unwrap();
        assert_eq!(back, second);
        assert!(Snapshot::from_json(&serde_json::json!("nope")).is_none());
    }
}

//! The last minutes of every pipeline, for the dashboard: a sampler thread reads each
//! pipeline once a second into a ring buffer of its own, so that a page opened late shows
//! the last ten minutes at once, and `GET /api/series?since=T` hands out what is newer
//! than T (the page asks once a second).
//!
//! The ring keeps raw cumulative numbers; rates (applied per second) and means (batch size,
//! apply time over the second) are worked out between neighbouring samples when asked.
//! Pipelines come and go with reloads: each sample takes the list as it is then; a series
//! whose pipeline is gone is dropped, and a series whose pipeline was registered anew
//! (another [`PipelineStats`]) starts its rates afresh rather than counting a drop.
//!
//! Depends on the parent module's types.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use super::{lock, ms_since_epoch, process_json, PipelineStats, Stats};

/// How often the sampler reads the pipelines.
pub const EVERY: Duration = Duration::from_secs(1);
/// How many samples a series keeps: ten minutes' worth.
pub const KEEP: usize = 600;

/// A bounded queue that forgets its oldest item to take a new one.
#[derive(Debug)]
pub struct Ring<T> {
    items: VecDeque<T>,
    capacity: usize,
}

impl<T> Ring<T> {
    pub fn new(capacity: usize) -> Ring<T> {
        Ring {
            items: VecDeque::with_capacity(capacity.min(1024)),
            capacity: capacity.max(1),
        }
    }

    pub fn push(&mut self, item: T) {
        if self.items.len() == self.capacity {
            self.items.pop_front();
        }
        self.items.push_back(item);
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + ExactSizeIterator {
        self.items.iter()
    }
}

/// One pipeline at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    at_ms: u64,
    /// Rates are not worked out across a change of [`PipelineStats`].
    fresh: bool,
    applied: u64,
    dead_lettered: u64,
    retries: u64,
    lag: Option<u64>,
    in_flight: u64,
    workers: u64,
    apply_sum_us: u64,
    apply_count: u64,
    size_sum: u64,
    size_count: u64,
}

impl Sample {
    fn of(p: &PipelineStats, at_ms: u64, fresh: bool) -> Sample {
        let apply = p.histograms().apply.snapshot();
        let size = p.histograms().batch_size.snapshot();
        let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        Sample {
            at_ms,
            fresh,
            applied: get(&p.applied),
            dead_lettered: get(&p.dead_lettered),
            retries: get(&p.retries),
            lag: p.lag(),
            in_flight: p.in_flight(),
            workers: p.workers(),
            apply_sum_us: apply.sum,
            apply_count: apply.count,
            size_sum: size.sum,
            size_count: size.count,
        }
    }
}

struct Series {
    stats: Arc<PipelineStats>,
    samples: Ring<Sample>,
}

/// Every pipeline's samples.
#[derive(Clone, Default)]
pub struct History {
    series: Arc<Mutex<Vec<Series>>>,
}

impl History {
    /// Samples every pipeline registered now.
    pub fn sample(&self, stats: &Stats) {
        self.sample_at(stats, ms_since_epoch(SystemTime::now()));
    }

    fn sample_at(&self, stats: &Stats, at_ms: u64) {
        let pipelines = stats.snapshot();
        let mut all = lock(&self.series);
        all.retain(|s| pipelines.iter().any(|p| p.name == s.stats.name));
        for p in pipelines {
            match all.iter_mut().find(|s| s.stats.name == p.name) {
                Some(series) => {
                    let fresh = !Arc::ptr_eq(&series.stats, &p);
                    series.stats = p.clone();
                    series.samples.push(Sample::of(&p, at_ms, fresh));
                }
                None => {
                    let mut samples = Ring::new(KEEP);
                    samples.push(Sample::of(&p, at_ms, true));
                    all.push(Series { stats: p, samples });
                }
            }
        }
        // In the order the pipelines were registered, as `/stats` lists them.
        let order = stats.snapshot();
        all.sort_by_key(|s| order.iter().position(|p| p.name == s.stats.name));
    }

    /// `GET /api/series`: every pipeline's state now, and its samples taken after
    /// `since_ms` (all of them without).
    pub fn json(&self, since_ms: Option<u64>) -> String {
        let all = lock(&self.series);
        let pipelines: Vec<serde_json::Value> = all
            .iter()
            .map(|series| {
                let p = &series.stats;
                let samples: Vec<&Sample> = series.samples.iter().collect();
                let mut points = Points::default();
                for (i, sample) in samples.iter().enumerate() {
                    if since_ms.is_some_and(|since| sample.at_ms <= since) {
                        continue;
                    }
                    let before = i
                        .checked_sub(1)
                        .map(|b| samples[b])
                        .filter(|_| !sample.fresh);
                    points.add(before, sample);
                }
                let error = p.shown_error().map(|(at, message)| {
                    serde_json::json!({
                        "at": humantime::format_rfc3339_millis(at).to_string(),
                        "message": message,
                    })
                });
                let totals: serde_json::Map<String, serde_json::Value> = p
                    .counters()
                    .iter()
                    .map(|(key, _, value)| (key.to_string(), (*value).into()))
                    .collect();
                let process = process_json(p, false);
                serde_json::json!({
                    "name": p.name,
                    "queue": p.queue(),
                    "isolation": if process.is_some() { "process" } else { "thread" },
                    "state": p.state().as_str(),
                    "error": error,
                    "workers": p.workers(),
                    "in_flight": p.in_flight(),
                    "lag": p.lag(),
                    "totals": totals,
                    "process": process,
                    "points": points,
                })
            })
            .collect();
        serde_json::json!({
            "now": ms_since_epoch(SystemTime::now()),
            "every_ms": EVERY.as_millis() as u64,
            "keep": KEEP,
            "pipelines": pipelines,
        })
        .to_string()
    }
}

/// A pipeline's samples, column by column, as the charts take them. Rates and means are
/// over the interval before each sample; `null` where there is none.
#[derive(Default, serde::Serialize)]
struct Points {
    /// Seconds since 1970.
    t: Vec<f64>,
    applied: Vec<Option<f64>>,
    dead_lettered: Vec<Option<f64>>,
    retried: Vec<Option<f64>>,
    lag: Vec<Option<u64>>,
    in_flight: Vec<u64>,
    workers: Vec<u64>,
    batch_size: Vec<Option<f64>>,
    apply_ms: Vec<Option<f64>>,
}

impl Points {
    fn add(&mut self, before: Option<&Sample>, now: &Sample) {
        self.t.push(now.at_ms as f64 / 1000.0);
        let seconds = before
            .map(|b| now.at_ms.saturating_sub(b.at_ms) as f64 / 1000.0)
            .filter(|s| *s > 0.0);
        let rate = |value: fn(&Sample) -> u64| {
            let (before, seconds) = (before?, seconds?);
            Some(value(now).saturating_sub(value(before)) as f64 / seconds)
        };
        self.applied.push(rate(|s| s.applied));
        self.dead_lettered.push(rate(|s| s.dead_lettered));
        self.retried.push(rate(|s| s.retries));
        self.lag.push(now.lag);
        self.in_flight.push(now.in_flight);
        self.workers.push(now.workers);
        let mean = |sum: fn(&Sample) -> u64, count: fn(&Sample) -> u64, scale: f64| {
            let before = before?;
            let n = count(now).checked_sub(count(before)).filter(|n| *n > 0)?;
            Some(sum(now).saturating_sub(sum(before)) as f64 / n as f64 / scale)
        };
        self.batch_size
            .push(mean(|s| s.size_sum, |s| s.size_count, 1.0));
        self.apply_ms
            .push(mean(|s| s.apply_sum_us, |s| s.apply_count, 1000.0));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_ring_forgets_the_oldest() {
        let mut ring = Ring::new(3);
        for i in 0..5 {
            ring.push(i);
        }
        assert_eq!(ring.iter().copied().collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!(ring.iter().len(), 3);
        assert_eq!(Ring::<u8>::new(0).capacity, 1);
    }

    #[test]
    fn a_series_keeps_ten_minutes() {
        let stats = Stats::default();
        stats.register("p");
        let history = History::default();
        for second in 0..(KEEP as u64 + 50) {
            history.sample_at(&stats, 1_000_000 + second * 1000);
        }
        let json: serde_json::Value = serde_json::from_str(&history.json(None)).unwrap();
        let t = json["pipelines"][0]["points"]["t"].as_array().unwrap();
        assert_eq!(t.len(), KEEP);
        assert_eq!(t[0], 1050.0);
    }

    #[test]
    fn rates_and_means_between_samples() {
        let stats = Stats::default();
        let p = stats.register("p");
        let history = History::default();
        history.sample_at(&stats, 10_000);
        PipelineStats::add(&p.applied, 30);
        p.batch_started(10);
        p.batch_started(20);
        p.applied_in(Duration::from_millis(4));
        p.applied_in(Duration::from_millis(8));
        p.set_lag(Some(7));
        history.sample_at(&stats, 12_000);
        let json: serde_json::Value = serde_json::from_str(&history.json(None)).unwrap();
        let points = &json["pipelines"][0]["points"];
        assert_eq!(points["applied"], serde_json::json!([null, 15.0]));
        assert_eq!(points["batch_size"], serde_json::json!([null, 15.0]));
        assert_eq!(points["apply_ms"], serde_json::json!([null, 6.0]));
        assert_eq!(points["lag"], serde_json::json!([null, 7]));
        assert_eq!(points["in_flight"], serde_json::json!([0, 30]));
        // Only what is newer than `since`, its rate still from the sample before.
        let json: serde_json::Value = serde_json::from_str(&history.json(Some(10_000))).unwrap();
        assert_eq!(
            json["pipelines"][0]["points"]["applied"],
            serde_json::json!([15.0])
        );
    }

    #[test]
    fn pipelines_come_and_go() {
        let stats = Stats::default();
        let first = stats.register("a");
        stats.register("b");
        let history = History::default();
        history.sample_at(&stats, 1000);
        PipelineStats::add(&first.applied, 100);
        history.sample_at(&stats, 2000);
        // A reload removes `b` and registers `a` anew, its counters from zero.
        stats.remove("b");
        stats.remove("a");
        let again = stats.register("a");
        stats.register("c");
        PipelineStats::add(&again.applied, 5);
        history.sample_at(&stats, 3000);
        let json: serde_json::Value = serde_json::from_str(&history.json(None)).unwrap();
        let names: Vec<&str> = json["pipelines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(
            json["pipelines"][0]["points"]["applied"],
            serde_json::json!([null, 100.0, null])
        );
        assert_eq!(json["pipelines"][0]["totals"]["applied"], 5);
    }
}

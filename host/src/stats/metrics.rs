//! `GET /metrics`: every pipeline's counters, gauges and histograms in the OpenMetrics
//! text format, which Prometheus scrapes.
//!
//! The numbers live in [`PipelineStats`] (atomics the pipelines bump); this module only
//! reads them at scrape time, through a `prometheus-client` collector, so that pipelines a
//! reload adds or removes appear and disappear with no registration of their own.
//! `prometheus-client` writes the format: names, units, escaping of label values, the
//! cumulative buckets and the closing `# EOF`.
//!
//! Depends on the parent module's types and `prometheus-client`.

use std::fmt;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet},
    metrics::{counter::ConstCounter, gauge::ConstGauge, MetricType},
    registry::{Registry, Unit},
};

use super::{histogram::Histogram, lock, PipelineStats, State, Stats, COUNTERS};

/// The content type of [`exposition`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The whole exposition, ending with `# EOF`.
pub fn exposition(stats: &Stats) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Pipelines(stats.clone())));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String does not fail");
    out
}

/// Reads every registered pipeline at scrape time.
struct Pipelines(Stats);

impl fmt::Debug for Pipelines {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("golconde pipelines")
    }
}

/// Counter names, with the `golconde_` prefix (`prometheus-client` adds `_total`).
const COUNTER_NAMES: [&str; 8] = [
    "golconde_received",
    "golconde_applied",
    "golconde_duplicates",
    "golconde_dead_lettered",
    "golconde_fanned_out",
    "golconde_acknowledged",
    "golconde_batches",
    "golconde_retries",
];

impl Collector for Pipelines {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let pipelines = self.0.snapshot();
        let messages = Unit::Other("messages".into());
        for (index, name) in COUNTER_NAMES.iter().enumerate() {
            let mut family =
                encoder.encode_descriptor(name, COUNTERS[index].1, None, MetricType::Counter)?;
            for p in &pipelines {
                let value = p.counters()[index].2;
                ConstCounter::new(value)
                    .encode(family.encode_family(&[("pipeline", &*p.name)])?)?;
            }
        }

        let restarts: Vec<(&str, u64)> = pipelines
            .iter()
            .filter_map(|p| Some((&*p.name, lock(&p.process).as_ref()?.restarts)))
            .collect();
        if !restarts.is_empty() {
            let mut family = encoder.encode_descriptor(
                "golconde_restarts",
                "times a pipeline's own process was started again",
                None,
                MetricType::Counter,
            )?;
            for (name, value) in restarts {
                ConstCounter::new(value).encode(family.encode_family(&[("pipeline", name)])?)?;
            }
        }

        let lags: Vec<(&PipelineStats, u64)> = pipelines
            .iter()
            .filter_map(|p| Some((&**p, p.lag()?)))
            .collect();
        if !lags.is_empty() {
            let mut family = encoder.encode_descriptor(
                "golconde_lag",
                "messages ready on the source queue, as its transport tells",
                Some(&messages),
                MetricType::Gauge,
            )?;
            for (p, lag) in lags {
                let queue = p.queue();
                let labels = [("pipeline", &*p.name), ("queue", queue.as_str())];
                ConstGauge::new(lag).encode(family.encode_family(&labels)?)?;
            }
        }

        gauge(
            &mut encoder,
            &pipelines,
            "golconde_in_flight",
            "messages received and not yet acknowledged",
            Some(&messages),
            PipelineStats::in_flight,
        )?;
        gauge(
            &mut encoder,
            &pipelines,
            "golconde_workers_alive",
            "database workers running, in the daemon or in the pipeline's own process",
            None,
            PipelineStats::workers,
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "golconde_pipeline_state",
                "1 for the state each pipeline is in (starting, running, retrying, \
                 crash-looping, stopped), 0 for the others",
                None,
                MetricType::Gauge,
            )?;
            for p in &pipelines {
                let now = p.state();
                for state in State::ALL {
                    let labels = [("pipeline", &*p.name), ("state", state.as_str())];
                    ConstGauge::new(u64::from(state == now))
                        .encode(family.encode_family(&labels)?)?;
                }
            }
        }

        let seconds = Unit::Seconds;
        histogram(
            &mut encoder,
            &pipelines,
            "golconde_batch_apply",
            "time a database worker took to apply its share of a batch in one transaction, \
             retries included",
            &seconds,
            |p| &p.histograms().apply,
        )?;
        histogram(
            &mut encoder,
            &pipelines,
            "golconde_batch_size",
            "messages per batch received",
            &messages,
            |p| &p.histograms().batch_size,
        )?;
        histogram(
            &mut encoder,
            &pipelines,
            "golconde_message_age",
            "time from a message's timestamp header to its acknowledgement (messages with a \
             timestamp only)",
            &seconds,
            |p| &p.histograms().age,
        )?;
        Ok(())
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    pipelines: &[std::sync::Arc<PipelineStats>],
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: fn(&PipelineStats) -> u64,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for p in pipelines {
        ConstGauge::new(value(p)).encode(family.encode_family(&[("pipeline", &*p.name)])?)?;
    }
    Ok(())
}

fn histogram(
    encoder: &mut DescriptorEncoder<'_>,
    pipelines: &[std::sync::Arc<PipelineStats>],
    name: &str,
    help: &str,
    unit: &Unit,
    which: fn(&PipelineStats) -> &Histogram,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, Some(unit), MetricType::Histogram)?;
    for p in pipelines {
        let histogram = which(p);
        let shape = histogram.shape();
        let snapshot = histogram.snapshot();
        let buckets: Vec<(f64, u64)> = shape
            .bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(snapshot.buckets.iter().copied())
            .collect();
        // The count is the buckets' total, so that the two always agree even when read
        // while a worker adds.
        let count = snapshot.buckets.iter().sum();
        family
            .encode_family(&[("pipeline", &*p.name)])?
            .encode_histogram::<NoLabelSet>(snapshot.sum_in(shape), count, &buckets, None)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn histograms_and_gauges_are_exposed() {
        let stats = Stats::default();
        let users = stats.register("users");
        users.starting("q.users");
        users.batch_started(3);
        users.applied_in(Duration::from_millis(20));
        users.applied_in(Duration::from_secs(100));
        users.committed(["1"]);
        users.set_lag(Some(42));
        let _worker = users.applying();
        stats.register("idle");
        let text = exposition(&stats);
        for line in [
            "# TYPE golconde_batch_apply_seconds histogram",
            "# UNIT golconde_batch_apply_seconds seconds",
            "golconde_batch_apply_seconds_bucket{le=\"0.025\",pipeline=\"users\"} 1",
            "golconde_batch_apply_seconds_bucket{le=\"60.0\",pipeline=\"users\"} 1",
            "golconde_batch_apply_seconds_bucket{le=\"+Inf\",pipeline=\"users\"} 2",
            "golconde_batch_apply_seconds_count{pipeline=\"users\"} 2",
            "golconde_batch_apply_seconds_sum{pipeline=\"users\"} 100.02",
            "golconde_batch_size_messages_bucket{le=\"5.0\",pipeline=\"users\"} 1",
            "golconde_batch_size_messages_count{pipeline=\"users\"} 1",
            "golconde_message_age_seconds_count{pipeline=\"users\"} 1",
            "golconde_message_age_seconds_count{pipeline=\"idle\"} 0",
            "golconde_lag_messages{pipeline=\"users\",queue=\"q.users\"} 42",
            "golconde_in_flight_messages{pipeline=\"users\"} 3",
            "golconde_workers_alive{pipeline=\"users\"} 1",
            "golconde_pipeline_state{pipeline=\"users\",state=\"running\"} 1",
            "golconde_pipeline_state{pipeline=\"users\",state=\"stopped\"} 0",
            "golconde_received_total{pipeline=\"idle\"} 0",
        ] {
            assert!(text.contains(line), "no `{line}` in:\n{text}");
        }
        assert!(!text.contains("pipeline=\"idle\",queue"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}

//! The transport suite: what the host's dispatcher relies on when it consumes, acknowledges
//! and publishes, against a real broker the author provides.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    abi::{ConsumerBox, PluginKind, TransportBox},
    data::{AckMode, ConsumeOptions, Delivery, Message},
    error::{ErrorKind, PluginError},
    ext::{consume_as::ConsumeAsV1, lag::LagV1, Interface},
    sdk::Transport,
    testing::{build_transport, Library},
};
use abi_stable::std_types::{RSlice, RStr};

use super::{
    bounded, config_object, configuration, describe, reachability, run_id, show, ConfigAt,
    DeleteQueue, Report, DEFAULT_TIME_LIMIT,
};

/// What [`transport`] needs to know about the transport under test, and the broker it runs
/// against.
pub struct TransportSuite {
    /// The plugin's configuration section, as a JSON object, pointing at a broker the suite
    /// may create queues on.
    pub config: String,
    /// The start of the name of every queue the suite uses (followed by `-` and a name no
    /// other run uses). Default `golconde-conformance`.
    pub queue_prefix: String,
    /// How many messages go through the queue (at least 4; default 10).
    pub messages: usize,
    /// Makes the plugin's configuration for a broker at a host and port, where the suite
    /// listens and never answers, or nothing listens. Keep the plugin's connect timeout
    /// below [`TransportSuite::time_limit`]. Leave it `None` for a transport with no server
    /// (files): those checks are then skipped.
    pub config_at: Option<ConfigAt>,
    /// Deletes a queue the suite used, by the name it gave the transport. The plugin API
    /// has no way to delete a queue, so without this the suite only leaves its queues
    /// empty.
    pub delete_queue: Option<DeleteQueue>,
    /// How long one call may take before it is reported as hung (default
    /// [`DEFAULT_TIME_LIMIT`]); also how long the suite waits for its messages to arrive.
    pub time_limit: Duration,
    /// The plugin's library, to check that it lists the transport:
    /// `Some(golconde_plugin_api::testing::library!(your_crate))`.
    pub library: Option<Library>,
}

impl Default for TransportSuite {
    fn default() -> TransportSuite {
        TransportSuite {
            config: "{}".into(),
            queue_prefix: "golconde-conformance".into(),
            messages: 10,
            config_at: None,
            delete_queue: None,
            time_limit: DEFAULT_TIME_LIMIT,
            library: None,
        }
    }
}

/// Checks transport `T` against the contract, on the broker the suite names, and panics
/// with a report of every check that failed.
///
/// Besides what every kind is checked for (see [`super`]):
/// - `ping` works;
/// - `messages` messages published with headers (one with `:`, `\` and a non-ASCII letter
///   in its value) and bodies of arbitrary bytes are consumed in order (a cumulative
///   consumer), with their bodies and headers, not flagged redelivered, at most `max` per
///   `receive`, with increasing tags;
/// - a cumulative ack of the third acknowledges the first three: after a close, a new
///   consumer gets the fourth and the rest, in order, and nothing before;
/// - a consumer closed without acknowledging gives its messages back: the next consumer
///   gets the same ones, in order, flagged redelivered, with increasing tags;
/// - once everything is acknowledged, nothing comes again;
/// - `receive` on an empty queue waits about its timeout (not much less, not much more)
///   and returns nothing; with a timeout of 0 it returns at once;
/// - a consumer with a prefetch of 0 is refused with a config error;
/// - given `library`, the library offers `golconde.consume_as` 1 for the transport, and a
///   consumer opened through it, for a named pipeline, receives what was published;
/// - given `library`, the library offers `golconde.lag` 1 for the transport, which says 3
///   for a pipeline with 3 messages waiting and 0 once it took them (or `None` for both:
///   the broker cannot tell).
///
/// The suite's queues are left empty, and deleted with [`TransportSuite::delete_queue`].
///
/// # Panics
/// When any check failed, with the list of them.
pub fn transport<T: Transport>(suite: TransportSuite) {
    let mut report = Report::new(PluginKind::Transport, T::NAME);
    let run = Run {
        suite: &suite,
        id: run_id(),
        queues: std::cell::RefCell::new(Vec::new()),
    };
    run.checks::<T>(&mut report);
    for queue in run.queues.borrow().iter() {
        if let Some(delete) = &suite.delete_queue {
            delete(queue);
        }
    }
    report.finish();
}

const INDEX: &str = "golconde-conformance-index";
const TEXT: &str = "golconde-conformance-text";
const TEXT_VALUE: &str = "colon: backslash \\ ü";

struct Run<'a> {
    suite: &'a TransportSuite,
    id: String,
    /// Every queue used, to delete at the end.
    queues: std::cell::RefCell<Vec<String>>,
}

impl Run<'_> {
    fn limit(&self) -> Duration {
        self.suite.time_limit
    }

    fn queue(&self, name: &str) -> String {
        let queue = format!("{}-{}-{name}", self.suite.queue_prefix, self.id);
        self.queues.borrow_mut().push(queue.clone());
        queue
    }

    fn message(&self, index: usize) -> Message {
        let mut body = format!("conformance message {index} of run {}\n", self.id).into_bytes();
        body.extend_from_slice(&[0, 0xff, b'\r', b'\n']);
        Message::new(body)
            .with_header(INDEX, index.to_string())
            .with_header(TEXT, TEXT_VALUE)
    }

    fn checks<T: Transport>(&self, report: &mut Report) {
        let suite = self.suite;
        describe::<T>(
            report,
            PluginKind::Transport,
            suite.library.as_ref(),
            &suite.config,
        );
        let config = match config_object(&suite.config) {
            Ok(config) => config,
            Err(why) => return report.check("builds from the suite's `config`", Err(why)),
        };
        let transport = match self.build::<T>() {
            Ok(transport) => {
                report.check("builds from the suite's `config`", Ok(()));
                transport
            }
            Err(why) => return report.check("builds from the suite's `config`", Err(why)),
        };
        configuration(report, &config, self.limit(), |json| {
            build_transport::<T>(&json).map(drop)
        });
        reachability(
            report,
            suite.config_at.as_ref(),
            self.limit(),
            |json| build_transport::<T>(&json),
            |transport: &TransportBox| transport.ping().into_result(),
            "`ping`",
        );
        report.check("`ping` works", {
            let transport = transport.clone();
            bounded(self.limit(), "`ping`", move || {
                transport.ping().into_result()
            })
            .and_then(|pinged| pinged.map_err(|e| show(&e)))
        });
        if suite.messages < 4 {
            return report.check(
                "the suite's `messages`",
                Err(format!("is {}; it must be at least 4", suite.messages)),
            );
        }
        self.round_trip(report, &transport);
        report.check(
            "a consumer with a prefetch of 0 is refused with a config error",
            match self.consume(&transport, &self.queue("prefetch"), 0) {
                Ok(consumer) => {
                    let _ = self.close(&consumer);
                    Err("it was opened".into())
                }
                Err(Ok(e)) if e.kind == ErrorKind::Config => Ok(()),
                Err(Ok(e)) => Err(format!("refused with {}", show(&e))),
                Err(Err(hung)) => Err(hung),
            },
        );
        report.check(
            "a new instance, built after the errors, publishes and consumes",
            self.build::<T>().and_then(|fresh| {
                let queue = self.queue("fresh");
                self.publish(&fresh, &queue, vec![self.message(0)])?;
                let consumer = self.consumer(&fresh, &queue)?;
                let got = self.receive_n(&consumer, 1, 1)?;
                self.expect_indices(&got, &[0], false)?;
                self.ack(&consumer, got[0].tag)?;
                self.close(&consumer)
            }),
        );
        if let Some(library) = &suite.library {
            report.check(
                "the library offers `golconde.consume_as` 1, which consumes for a named pipeline",
                self.consume_as::<T>(library, &transport),
            );
            report.check(
                "the library offers `golconde.lag` 1, which counts what waits for a pipeline \
                 (or says it cannot)",
                self.lag::<T>(library, &transport),
            );
        }
    }

    /// Asks for the lag through `golconde.lag` 1, as a host of ABI 1.3 or later does: 3
    /// messages published while the pipeline's consumer was closed wait for it; none once
    /// it took and acknowledged them. `None` (the broker cannot tell) passes, but then for
    /// every question.
    fn lag<T: Transport>(
        &self,
        library: &Library,
        transport: &Arc<TransportBox>,
    ) -> Result<(), String> {
        let lag = interface::<LagV1>(library, T::NAME)?;
        let consume_as = interface::<ConsumeAsV1>(library, T::NAME)?;
        let queue = self.queue("lag");
        let pipeline = format!("golconde-conformance-lag-{}", self.id);
        let ask = |what: &str| -> Result<Option<u64>, String> {
            let (transport, queue, pipeline) = (transport.clone(), queue.clone(), pipeline.clone());
            bounded(self.limit(), "`lag`", move || {
                (lag.lag)(
                    &transport,
                    RStr::from_str(&queue),
                    RStr::from_str(&pipeline),
                )
                .into_result()
                .map(|n| n.into_option())
            })?
            .map_err(|e| format!("`lag` {what} failed: {}", show(&e)))
        };
        let open = || self.open_as(consume_as, transport, &queue, &pipeline);
        // The consumer made once, so that brokers with named consumers know the pipeline.
        self.close(&open()?)?;
        self.publish(transport, &queue, (0..3).map(|i| self.message(i)).collect())?;
        let waiting = ask("with 3 messages waiting")?;
        let consumer = open()?;
        let got = self.receive_n(&consumer, 3, 3)?;
        self.expect_indices(&got, &[0, 1, 2], false)?;
        self.ack(&consumer, got[2].tag)?;
        self.close(&consumer)?;
        let drained = ask("once every message was taken")?;
        match (waiting, drained) {
            (None, None) | (Some(3), Some(0)) => Ok(()),
            _ => Err(format!(
                "with 3 messages waiting it said {waiting:?}, once they were taken \
                 {drained:?}: expected 3 and 0, or None for both"
            )),
        }
    }

    /// Consumes through `golconde.consume_as` 1, as a host of ABI 1.2 or later does.
    fn consume_as<T: Transport>(
        &self,
        library: &Library,
        transport: &Arc<TransportBox>,
    ) -> Result<(), String> {
        let table = interface::<ConsumeAsV1>(library, T::NAME)?;
        let queue = self.queue("consume-as");
        self.publish(transport, &queue, vec![self.message(0)])?;
        let pipeline = format!("golconde-conformance-{}", self.id);
        let consumer = self.open_as(table, transport, &queue, &pipeline)?;
        let got = self.receive_n(&consumer, 1, 1)?;
        self.expect_indices(&got, &[0], false)?;
        self.ack(&consumer, got[0].tag)?;
        self.close(&consumer)
    }

    /// Opens a cumulative consumer of `queue` for `pipeline` through `golconde.consume_as`.
    fn open_as(
        &self,
        table: &'static ConsumeAsV1,
        transport: &Arc<TransportBox>,
        queue: &str,
        pipeline: &str,
    ) -> Result<Arc<ConsumerBox>, String> {
        let (transport, queue, pipeline) =
            (transport.clone(), queue.to_string(), pipeline.to_string());
        let options = ConsumeOptions {
            prefetch: self.suite.messages as u32,
            ack_mode: AckMode::Cumulative,
        };
        bounded(self.limit(), "`consume_as`", move || {
            (table.consume_as)(
                &transport,
                RStr::from_str(&queue),
                options,
                RStr::from_str(&pipeline),
            )
            .into_result()
        })?
        .map(Arc::new)
        .map_err(|e| format!("`consume_as` failed: {}", show(&e)))
    }

    fn build<T: Transport>(&self) -> Result<Arc<TransportBox>, String> {
        let json = self.suite.config.clone();
        bounded(self.limit(), "building", move || {
            build_transport::<T>(&json).map(Arc::new)
        })?
        .map_err(|e| format!("building failed: {}", show(&e)))
    }

    fn publish(
        &self,
        transport: &Arc<TransportBox>,
        queue: &str,
        messages: Vec<Message>,
    ) -> Result<(), String> {
        let transport = transport.clone();
        let queue = queue.to_string();
        bounded(self.limit(), "`publish`", move || {
            transport
                .publish(RStr::from_str(&queue), RSlice::from_slice(&messages))
                .into_result()
        })?
        .map_err(|e| format!("`publish` failed: {}", show(&e)))
    }

    /// Opens a cumulative consumer; the plugin's error, or why the call did not return.
    fn consume(
        &self,
        transport: &Arc<TransportBox>,
        queue: &str,
        prefetch: u32,
    ) -> Result<Arc<ConsumerBox>, Result<PluginError, String>> {
        let transport = transport.clone();
        let queue = queue.to_string();
        let options = ConsumeOptions {
            prefetch,
            ack_mode: AckMode::Cumulative,
        };
        match bounded(self.limit(), "`consume`", move || {
            transport
                .consume(RStr::from_str(&queue), options)
                .into_result()
        }) {
            Ok(Ok(consumer)) => Ok(Arc::new(consumer)),
            Ok(Err(e)) => Err(Ok(e)),
            Err(hung) => Err(Err(hung)),
        }
    }

    fn consumer(
        &self,
        transport: &Arc<TransportBox>,
        queue: &str,
    ) -> Result<Arc<ConsumerBox>, String> {
        self.consume(transport, queue, self.suite.messages as u32)
            .map_err(|e| match e {
                Ok(e) => format!("`consume` failed: {}", show(&e)),
                Err(hung) => hung,
            })
    }

    fn receive(
        &self,
        consumer: &Arc<ConsumerBox>,
        max: usize,
        timeout: Duration,
    ) -> Result<Vec<Delivery>, String> {
        let consumer = consumer.clone();
        let got = bounded(self.limit() + timeout, "`receive`", move || {
            consumer
                .receive(max as u32, timeout.as_millis() as u64)
                .into_result()
        })?
        .map_err(|e| format!("`receive` failed: {}", show(&e)))?;
        if got.len() > max {
            return Err(format!(
                "`receive` with a `max` of {max} returned {} deliveries",
                got.len()
            ));
        }
        Ok(got.into_iter().collect())
    }

    /// Receives `n` deliveries, `max` at a time, within the time limit; checks that tags
    /// increase.
    fn receive_n(
        &self,
        consumer: &Arc<ConsumerBox>,
        n: usize,
        max: usize,
    ) -> Result<Vec<Delivery>, String> {
        let deadline = Instant::now() + self.limit();
        let mut got: Vec<Delivery> = Vec::new();
        while got.len() < n {
            if Instant::now() > deadline {
                return Err(format!(
                    "only {} of {n} deliveries came within {:?} (the suite's `time_limit`)",
                    got.len(),
                    self.limit()
                ));
            }
            let wanted = max.min(n - got.len());
            got.extend(self.receive(consumer, wanted, Duration::from_millis(500))?);
        }
        for pair in got.windows(2) {
            if pair[1].tag <= pair[0].tag {
                return Err(format!(
                    "delivery tags do not increase: {} came after {}",
                    pair[1].tag, pair[0].tag
                ));
            }
        }
        Ok(got)
    }

    /// Checks that `got` are the suite's messages `indices`, whole, flagged `redelivered`
    /// or not.
    fn expect_indices(
        &self,
        got: &[Delivery],
        indices: &[usize],
        redelivered: bool,
    ) -> Result<(), String> {
        let found: Vec<Option<&str>> = got.iter().map(|d| d.message.header(INDEX)).collect();
        let expected: Vec<String> = indices.iter().map(usize::to_string).collect();
        if found
            .iter()
            .map(|f| f.unwrap_or("none"))
            .ne(expected.iter().map(String::as_str))
        {
            return Err(format!(
                "expected messages {indices:?} in this order, got messages {found:?} (by their \
                 `{INDEX}` header)"
            ));
        }
        for (delivery, &index) in got.iter().zip(indices) {
            let sent = self.message(index);
            if delivery.message.body != sent.body {
                return Err(format!(
                    "message {index} came with body {:?}; it was sent as {:?}",
                    String::from_utf8_lossy(&delivery.message.body),
                    String::from_utf8_lossy(&sent.body)
                ));
            }
            if delivery.message.header(TEXT) != Some(TEXT_VALUE) {
                return Err(format!(
                    "message {index} came with header `{TEXT}` = {:?}; it was sent as {TEXT_VALUE:?}",
                    delivery.message.header(TEXT)
                ));
            }
            if delivery.redelivered != redelivered {
                return Err(format!(
                    "message {index} came with `redelivered` = {}; expected {redelivered}",
                    delivery.redelivered
                ));
            }
        }
        Ok(())
    }

    fn ack(&self, consumer: &Arc<ConsumerBox>, tag: u64) -> Result<(), String> {
        let consumer = consumer.clone();
        bounded(self.limit(), "`ack`", move || {
            consumer.ack(tag, true).into_result()
        })?
        .map_err(|e| format!("`ack` failed: {}", show(&e)))
    }

    fn close(&self, consumer: &Arc<ConsumerBox>) -> Result<(), String> {
        let consumer = consumer.clone();
        bounded(self.limit(), "`close`", move || {
            consumer.close().into_result()
        })?
        .map_err(|e| format!("`close` failed: {}", show(&e)))
    }

    /// Nothing arrives for a while.
    fn nothing_more(&self, consumer: &Arc<ConsumerBox>) -> Result<(), String> {
        let more = self.receive(consumer, 10, Duration::from_millis(500))?;
        if more.is_empty() {
            return Ok(());
        }
        let found: Vec<Option<&str>> = more.iter().map(|d| d.message.header(INDEX)).collect();
        Err(format!("messages {found:?} came as well"))
    }

    fn round_trip(&self, report: &mut Report, transport: &Arc<TransportBox>) {
        let n = self.suite.messages;
        let queue = self.queue("main");
        let all: Vec<usize> = (0..n).collect();
        let rest: Vec<usize> = (3..n).collect();

        let published = self.publish(
            transport,
            &queue,
            all.iter().map(|&i| self.message(i)).collect(),
        );
        let failed = published.is_err();
        report.check(&format!("publishes {n} messages"), published);
        if failed {
            return;
        }

        let first = self.consumer(transport, &queue).and_then(|consumer| {
            let got = self.receive_n(&consumer, n, 3)?;
            Ok((consumer, got))
        });
        let consumer = match first {
            Ok((consumer, got)) => {
                report.check(
                    "consumes them in order, with their bodies and headers, not redelivered",
                    self.expect_indices(&got, &all, false),
                );
                consumer
            }
            Err(why) => {
                return report.check(
                    "consumes them in order, with their bodies and headers, not redelivered",
                    Err(why),
                )
            }
        };
        let what = "a consumer closed without acknowledging gives its messages back, in \
                    order, flagged redelivered";
        let outcome = self
            .close(&consumer)
            .and_then(|()| self.consumer(transport, &queue))
            .and_then(|consumer| {
                let got = self.receive_n(&consumer, n, n)?;
                self.expect_indices(&got, &all, true)?;
                Ok((consumer, got))
            });
        let (second, got) = match outcome {
            Ok(second) => {
                report.check(what, Ok(()));
                second
            }
            Err(why) => return report.check(what, Err(why)),
        };
        let what = "a cumulative ack of the third acknowledges the first three, and only them";
        let outcome = self
            .ack(&second, got[2].tag)
            .and_then(|()| self.close(&second))
            .and_then(|()| self.consumer(transport, &queue))
            .and_then(|consumer| {
                let got = self.receive_n(&consumer, n - 3, n)?;
                self.expect_indices(&got, &rest, true)?;
                self.nothing_more(&consumer)?;
                Ok((consumer, got))
            });
        let (third, got) = match outcome {
            Ok(third) => {
                report.check(what, Ok(()));
                third
            }
            Err(why) => return report.check(what, Err(why)),
        };
        let what = "once everything is acknowledged, nothing comes again";
        let last = got.last().map_or(0, |d| d.tag);
        let outcome = self
            .ack(&third, last)
            .and_then(|()| self.close(&third))
            .and_then(|()| self.consumer(transport, &queue));
        let fourth = match outcome {
            Ok(fourth) => fourth,
            Err(why) => return report.check(what, Err(why)),
        };
        report.check(what, self.nothing_more(&fourth));
        let timeout = Duration::from_millis(800);
        let started = Instant::now();
        let outcome = self.receive(&fourth, 10, timeout);
        let waited = started.elapsed();
        report.check(
            "`receive` on an empty queue waits for its timeout, and returns nothing",
            match outcome {
                Err(why) => Err(why),
                Ok(got) if !got.is_empty() => Err(format!("{} deliveries came", got.len())),
                Ok(_) if waited < timeout.mul_f32(0.8) => Err(format!(
                    "it returned after {waited:?}, with a timeout of {timeout:?}: the host \
                     would spin"
                )),
                Ok(_) if waited > timeout + Duration::from_secs(2) => Err(format!(
                    "it returned after {waited:?}, with a timeout of {timeout:?}"
                )),
                Ok(_) => Ok(()),
            },
        );
        let started = Instant::now();
        let outcome = self.receive(&fourth, 10, Duration::ZERO);
        let waited = started.elapsed();
        report.check(
            "`receive` with a timeout of 0 returns at once",
            match outcome {
                Err(why) => Err(why),
                Ok(got) if !got.is_empty() => Err(format!("{} deliveries came", got.len())),
                Ok(_) if waited > Duration::from_secs(1) => {
                    Err(format!("it returned after {waited:?}"))
                }
                Ok(_) => Ok(()),
            },
        );
        if let Err(why) = self.close(&fourth) {
            report.check("closing a consumer", Err(why));
        }
    }
}

/// The table of interface `I` the library lists for transport `plugin`.
fn interface<I: Interface>(library: &Library, plugin: &str) -> Result<&'static I, String> {
    library
        .extensions()?
        .iter()
        .filter(|e| e.plugin.as_str() == plugin && e.kind.as_str() == "transport")
        .find_map(|e| e.get::<I>())
        .ok_or_else(|| format!("the library does not list `{}` for this transport", I::NAME))?
        .map_err(|e| format!("`{}`: its layout differs from this crate's: {e}", I::NAME))
}

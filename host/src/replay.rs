//! `golconde replay`: moves the messages of a pipeline's dead-letter queue back to its
//! source queue, once what made them fail (a missing column, a constraint, a limit) has
//! been fixed, so that the pipeline applies them after all.
//!
//! Each message goes back with its original body and headers, without the `x-golconde-*`
//! headers that dead-lettering added (the reason, the attempts, ...), and marked
//! [`REPLAYED_HEADER`] with the time of the replay. May depend on: [`crate::config`] (which
//! pipeline, which queues), [`crate::assemble`] and [`crate::loader`] (the transports, used
//! only through the plugin ABI, so that it works for every transport alike) and
//! [`crate::logging`]; nothing of the running daemon.
//!
//! Key decisions, and why:
//! - **Published and confirmed before acknowledged.** A batch is published to the source
//!   queue, the transport returns once the broker confirmed it, and only then is each
//!   message acknowledged on the dead-letter queue. A crash in between leaves a message on
//!   both queues, never on neither: replaying is at-least-once, like the rest of Golconde.
//! - **What is not moved is held, not given back.** A message that `--where-error` passes
//!   over stays unacknowledged until the end, when closing the consumer returns it to the
//!   broker in its place; giving each back at once (nack with requeue) would have the
//!   broker deliver it again, and the replay read it forever. Held messages count against
//!   the consumer's prefetch, so with `--where-error` (or `--dry-run`, which holds
//!   everything) the consumer is opened with [`HOLD_WINDOW`], the largest prefetch AMQP can
//!   express; a run that holds that many stops and says that the rest of the queue was not
//!   looked at. Without them, nothing is held and a prefetch of one batch is enough.
//! - **A message moved twice in one run is impossible.** A daemon running the pipeline
//!   while the cause is not fixed dead-letters each replayed message again, with the
//!   replay's own `x-golconde-replayed` value (one per run, to the nanosecond) among its
//!   headers. The first message that comes back carrying this run's value ends the run,
//!   and stays where it is. That value is exact, where a digest of body and headers would
//!   also stop at a producer's honest duplicate, and would miss a message whose headers a
//!   broker refused on the way (dead letters then travel with only their `x-golconde-*`
//!   headers).
//! - **The end of the queue is a quiet moment**: a receive that finds nothing for
//!   [`IDLE`]. A queue others keep feeding ends at `--limit` or at a message that came back.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, SystemTime},
};

use abi_stable::std_types::{RSlice, RStr};
use golconde_plugin_api::{
    abi::{ConsumerBox, TransportBox},
    AckMode, ConsumeOptions, Delivery, ErrorKind, Message, PluginError,
};

use crate::{
    assemble::{self, Problem},
    config::{ConfigError, ConfigFile, PipelineConfig},
    loader::Registry,
    logging,
};

/// The header a replayed message carries: when it was replayed (RFC 3339, UTC).
pub const REPLAYED_HEADER: &str = "x-golconde-replayed";
/// The header holding why a message was dead-lettered.
const ERROR_HEADER: &str = "x-golconde-error";
/// The prefix of every header Golconde adds.
const GOLCONDE_PREFIX: &str = "x-golconde-";
/// A receive that finds nothing for this long means the queue has nothing more.
const IDLE: Duration = Duration::from_millis(1500);
/// Messages published together (one confirmation round trip), then acknowledged.
const BATCH: u32 = 100;
/// The prefetch when messages may be held unacknowledged: AMQP's largest (a 16-bit count).
const HOLD_WINDOW: u32 = u16::MAX as u32;
/// Characters of `x-golconde-error` shown for each message.
const ERROR_CHARS: usize = 120;

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// The pipeline whose dead letters to replay.
    pub pipeline: String,
    /// Move at most this many.
    pub limit: Option<u64>,
    /// Move only messages whose `x-golconde-error` contains this, ignoring case.
    pub where_error: Option<String>,
    /// Say what would be moved; move and acknowledge nothing.
    pub dry_run: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: {log}")]
    Log { path: String, log: String },
    #[error("{path}: no pipeline named `{name}`; {known}")]
    UnknownPipeline {
        path: String,
        name: String,
        known: String,
    },
    #[error(
        "{location}: pipeline `{name}` has no dead-letter queue, so there is nothing to \
         replay: add `dead_letter = {{ transport = \"NAME\", queue = \"QUEUE\" }}` to its \
         [[pipelines]] entry (from then on, messages that cannot apply go there instead of \
         stopping the pipeline)"
    )]
    NoDeadLetter { location: String, name: String },
    #[error("cannot build {role}: {problem}")]
    Build { role: String, problem: Problem },
    #[error("cannot connect to transport `{transport}` ({role}): {error}; nothing was moved")]
    Connect {
        transport: String,
        role: String,
        error: PluginError,
    },
    #[error(
        "cannot consume dead-letter queue `{queue}` on transport `{transport}`: {error}; \
         nothing was moved"
    )]
    Consume {
        queue: String,
        transport: String,
        error: PluginError,
    },
    #[error(
        "receiving from dead-letter queue `{queue}` on transport `{transport}` failed after \
         {moved} message(s) were moved: {error}; what was not moved stays there"
    )]
    Receive {
        queue: String,
        transport: String,
        moved: u64,
        error: PluginError,
    },
    #[error(
        "publishing {count} message(s) to `{queue}` on transport `{transport}` failed after \
         {moved} message(s) were moved: {error}. They stay on the dead-letter queue, and \
         some may have reached `{queue}` too; run the replay again once `{transport}` works"
    )]
    Publish {
        queue: String,
        transport: String,
        count: usize,
        moved: u64,
        error: PluginError,
    },
    #[error(
        "message #{position} was published to `{source_queue}`, but acknowledging it on \
         dead-letter queue `{queue}` failed: {error}. It and the rest of its batch may now be \
         on both queues (applying them twice is harmless for upserts and for changes with \
         an `id` under `dedupe`); run the replay again for what is left"
    )]
    Ack {
        position: u64,
        source_queue: String,
        queue: String,
        error: PluginError,
    },
}

/// Runs `golconde replay` on the configuration file at `path`; `search` says where to look
/// for plugins once the file is read.
pub fn run(
    path: &Path,
    options: &Options,
    search: impl FnOnce(&ConfigFile) -> Vec<PathBuf>,
) -> Result<ExitCode, ReplayError> {
    let file = ConfigFile::load(path)?;
    logging::init(&file.config.log).map_err(|log| ReplayError::Log {
        path: path.display().to_string(),
        log,
    })?;
    let pipeline = find_pipeline(&file, &options.pipeline)?;
    let dead = pipeline
        .dead_letter
        .as_ref()
        .expect("checked by find_pipeline");
    let registry = Registry::discover(&search(&file));
    let build = |name: &str, role: String| {
        assemble::build_transport(&file, &registry, name)
            .map_err(|problem| ReplayError::Build { role, problem })
    };
    let dead_transport = build(
        &dead.transport,
        format!(
            "transport `{}` of dead-letter queue `{}`",
            dead.transport, dead.queue
        ),
    )?;
    let source_transport = if pipeline.transport == dead.transport {
        None
    } else {
        Some(build(
            &pipeline.transport,
            format!(
                "transport `{}` of source queue `{}`",
                pipeline.transport, pipeline.queue
            ),
        )?)
    };
    let source_transport = source_transport.as_ref().unwrap_or(&dead_transport);
    let source = source_transport.get();
    // Before anything is taken off the dead-letter queue: a source that cannot be reached
    // must cost nothing. A dry run publishes nothing, so it does not need the source.
    if !options.dry_run {
        source
            .ping()
            .into_result()
            .map_err(|error| ReplayError::Connect {
                transport: pipeline.transport.clone(),
                role: format!(
                    "the source queue `{}` of pipeline `{}` is on it",
                    pipeline.queue, pipeline.name
                ),
                error,
            })?;
    }
    let window = window(options);
    let dead_current = dead_transport.get();
    let consumer = dead_current
        .consume(
            RStr::from_str(&dead.queue),
            ConsumeOptions {
                prefetch: window,
                // Held messages sit before moved ones: each is settled alone.
                ack_mode: AckMode::Individual,
            },
        )
        .into_result()
        .map_err(|error| ReplayError::Consume {
            queue: dead.queue.clone(),
            transport: dead.transport.clone(),
            error,
        })?;
    let mut replay = Replay {
        options,
        pipeline,
        source: &source,
        source_name: &source_transport.name,
        consumer: &consumer,
        dead_queue: &dead.queue,
        dead_transport: &dead_transport.name,
        stamp: humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
        needle: options.where_error.as_ref().map(|t| t.to_lowercase()),
        window,
        held: 0,
        tally: Tally::default(),
    };
    let outcome = replay.drain();
    // Everything held goes back to the broker, in its place.
    if let Err(e) = consumer.close().into_result() {
        tracing::warn!(
            "closing the consumer of dead-letter queue `{}`: {e}",
            dead.queue
        );
    }
    replay.summarize(outcome.as_ref().ok());
    outcome.map(|_| ExitCode::SUCCESS)
}

/// The pipeline named `name`, which must have a dead-letter queue.
fn find_pipeline<'a>(file: &'a ConfigFile, name: &str) -> Result<&'a PipelineConfig, ReplayError> {
    let pipelines = &file.config.pipelines;
    let Some(section) = pipelines.iter().find(|p| p.get_ref().name == name) else {
        let names: Vec<String> = pipelines
            .iter()
            .map(|p| format!("`{}`", p.get_ref().name))
            .collect();
        return Err(ReplayError::UnknownPipeline {
            path: file.path.display().to_string(),
            name: name.to_string(),
            known: if names.is_empty() {
                "the file declares no pipeline".to_string()
            } else {
                format!("the file declares {}", names.join(", "))
            },
        });
    };
    let pipeline = section.get_ref();
    if pipeline.dead_letter.is_none() {
        return Err(ReplayError::NoDeadLetter {
            location: file.locate(section).to_string(),
            name: name.to_string(),
        });
    }
    Ok(pipeline)
}

/// The prefetch to consume the dead-letter queue with: room for everything the run may
/// hold unacknowledged, and no more than it will use.
fn window(options: &Options) -> u32 {
    let limit = |cap: u32| {
        options
            .limit
            .map_or(cap, |l| u32::try_from(l).unwrap_or(u32::MAX).min(cap))
    };
    if options.where_error.is_some() {
        // Passed-over messages are held: as many as may come before the ones that match.
        HOLD_WINDOW
    } else if options.dry_run {
        // Every message looked at is held, and only the first `limit` are looked at.
        limit(HOLD_WINDOW)
    } else {
        // Moved messages are acknowledged batch by batch: nothing else is held.
        limit(BATCH)
    }
}

/// What a run did so far.
#[derive(Default)]
struct Tally {
    /// Messages looked at: the position of the last one.
    seen: u64,
    /// Moved (or, in a dry run, that would be).
    moved: u64,
    /// Passed over by `--where-error`.
    not_matching: u64,
    /// Refused for good by the source queue: positions and reasons.
    refused: Vec<(u64, String)>,
}

/// Why a run ended.
#[derive(Debug)]
enum End {
    /// A receive found nothing for [`IDLE`].
    Drained,
    /// `--limit` messages were moved.
    Limit,
    /// This message was moved earlier in this run and has come back.
    CameBack { position: u64, error: String },
    /// As many messages are held as the consumer may hold.
    WindowFull,
}

struct Replay<'a> {
    options: &'a Options,
    pipeline: &'a PipelineConfig,
    source: &'a TransportBox,
    source_name: &'a str,
    consumer: &'a ConsumerBox,
    dead_queue: &'a str,
    dead_transport: &'a str,
    /// This run's `x-golconde-replayed` value.
    stamp: String,
    /// `--where-error`, lower-cased.
    needle: Option<String>,
    /// The consumer's prefetch.
    window: u32,
    /// Deliveries neither acknowledged nor to be: they go back when the consumer closes.
    held: u64,
    tally: Tally,
}

/// A message to move, and where it was on the dead-letter queue.
struct Chosen {
    position: u64,
    delivery: Delivery,
}

impl Replay<'_> {
    fn drain(&mut self) -> Result<End, ReplayError> {
        loop {
            if self.limit_reached(0) {
                return Ok(End::Limit);
            }
            if self.held >= u64::from(self.window) {
                return Ok(End::WindowFull);
            }
            let deliveries: Vec<Delivery> = self
                .consumer
                .receive(self.receive_max(), IDLE.as_millis() as u64)
                .into_result()
                .map_err(|error| ReplayError::Receive {
                    queue: self.dead_queue.to_string(),
                    transport: self.dead_transport.to_string(),
                    moved: self.tally.moved,
                    error,
                })?
                .into();
            if deliveries.is_empty() {
                return Ok(if self.held >= u64::from(self.window) {
                    End::WindowFull
                } else {
                    End::Drained
                });
            }
            let mut chosen = Vec::new();
            let mut end = None;
            for delivery in deliveries {
                // Whatever comes after the end is not looked at, and goes back.
                if end.is_some() {
                    self.held += 1;
                    continue;
                }
                if self.limit_reached(chosen.len()) {
                    end = Some(End::Limit);
                    self.held += 1;
                    continue;
                }
                self.tally.seen += 1;
                let position = self.tally.seen;
                let message = &delivery.message;
                if message.header(REPLAYED_HEADER) == Some(self.stamp.as_str()) {
                    end = Some(End::CameBack {
                        position,
                        error: excerpt(error_of(message).unwrap_or("")),
                    });
                    self.held += 1;
                } else if !self.wanted(message) {
                    self.tally.not_matching += 1;
                    self.held += 1;
                } else {
                    chosen.push(Chosen { position, delivery });
                }
            }
            self.settle(chosen)?;
            if let Some(end) = end {
                return Ok(end);
            }
        }
    }

    /// Whether `--limit` is reached with `pending` more moved.
    fn limit_reached(&self, pending: usize) -> bool {
        self.options
            .limit
            .is_some_and(|limit| self.tally.moved + pending as u64 >= limit)
    }

    /// How many deliveries to ask for: a batch, and without `--where-error` no more than
    /// the limit leaves, so that nothing is taken only to be given back.
    fn receive_max(&self) -> u32 {
        match (self.options.limit, &self.needle) {
            (Some(limit), None) => {
                let left = limit.saturating_sub(self.tally.moved);
                u32::try_from(left).unwrap_or(BATCH).clamp(1, BATCH)
            }
            _ => BATCH,
        }
    }

    fn wanted(&self, message: &Message) -> bool {
        match &self.needle {
            None => true,
            Some(needle) => error_of(message).is_some_and(|e| e.to_lowercase().contains(needle)),
        }
    }

    /// Moves `chosen`: publishes them to the source queue, confirmed, then acknowledges
    /// each on the dead-letter queue. A dry run only says so, and holds them.
    fn settle(&mut self, chosen: Vec<Chosen>) -> Result<(), ReplayError> {
        if chosen.is_empty() {
            return Ok(());
        }
        if self.options.dry_run {
            for c in &chosen {
                self.held += 1;
                self.tally.moved += 1;
                say(&format!(
                    "would move {}",
                    describe(c.position, &c.delivery.message)
                ));
            }
            return Ok(());
        }
        let copies: Vec<Message> = chosen
            .iter()
            .map(|c| replayed_copy(&c.delivery.message, &self.stamp))
            .collect();
        let refused = self.publish(&copies)?;
        for (index, c) in chosen.iter().enumerate() {
            if let Some(reason) = refused.get(&index) {
                self.held += 1;
                self.tally.refused.push((c.position, reason.clone()));
                say(&format!(
                    "not moved {}: `{}` refuses it: {reason}",
                    describe(c.position, &c.delivery.message),
                    self.pipeline.queue
                ));
                continue;
            }
            self.consumer
                .ack(c.delivery.tag, false)
                .into_result()
                .map_err(|error| ReplayError::Ack {
                    position: c.position,
                    source_queue: self.pipeline.queue.clone(),
                    queue: self.dead_queue.to_string(),
                    error,
                })?;
            self.tally.moved += 1;
            say(&format!(
                "moved {}",
                describe(c.position, &c.delivery.message)
            ));
        }
        Ok(())
    }

    /// Publishes `copies` to the source queue and waits for the broker's confirmation.
    /// Returns the ones the queue refuses for good (a permanent error: too large, say),
    /// by index, with the reason; any other failure ends the run.
    fn publish(&self, copies: &[Message]) -> Result<BTreeMap<usize, String>, ReplayError> {
        let queue = RStr::from_str(&self.pipeline.queue);
        let failed = |error: PluginError, count: usize| ReplayError::Publish {
            queue: self.pipeline.queue.clone(),
            transport: self.source_name.to_string(),
            count,
            moved: self.tally.moved,
            error,
        };
        let mut refused = BTreeMap::new();
        match self
            .source
            .publish(queue, RSlice::from_slice(copies))
            .into_result()
        {
            Ok(()) => {}
            Err(error) if error.kind == ErrorKind::Permanent && copies.len() == 1 => {
                refused.insert(0, error.message.to_string());
            }
            // One message spoils the batch: find which, and move the others.
            Err(error) if error.kind == ErrorKind::Permanent => {
                for (index, copy) in copies.iter().enumerate() {
                    match self
                        .source
                        .publish(queue, RSlice::from_ref(copy))
                        .into_result()
                    {
                        Ok(()) => {}
                        Err(error) if error.kind == ErrorKind::Permanent => {
                            refused.insert(index, error.message.to_string());
                        }
                        Err(error) => return Err(failed(error, copies.len())),
                    }
                }
            }
            Err(error) => return Err(failed(error, copies.len())),
        }
        Ok(refused)
    }

    /// Prints what the run did and left, and why it ended (`None`: on an error).
    fn summarize(&self, end: Option<&End>) {
        let t = &self.tally;
        let from_to = format!(
            "from `{}` (transport `{}`) to `{}` (transport `{}`)",
            self.dead_queue, self.dead_transport, self.pipeline.queue, self.source_name
        );
        if self.options.dry_run {
            say(&format!(
                "dry run: would move {} of {} message(s) looked at, {from_to}; nothing was \
                 moved or acknowledged",
                t.moved, t.seen
            ));
        } else {
            say(&format!(
                "moved {} of {} message(s) looked at, {from_to}, each marked \
                 {REPLAYED_HEADER}: {}",
                t.moved, t.seen, self.stamp
            ));
        }
        if t.not_matching > 0 {
            say(&format!(
                "left on `{}`: {} not matching --where-error {:?}",
                self.dead_queue,
                t.not_matching,
                self.options.where_error.as_deref().unwrap_or_default()
            ));
        }
        if !t.refused.is_empty() {
            let positions: Vec<String> = t.refused.iter().map(|(p, _)| format!("#{p}")).collect();
            say(&format!(
                "left on `{}`: {} refused by `{}` ({}; reasons above)",
                self.dead_queue,
                t.refused.len(),
                self.pipeline.queue,
                positions.join(", ")
            ));
        }
        match end {
            None => {}
            Some(End::Drained) => say(&format!(
                "`{}` had nothing more (none within {:.1} s)",
                self.dead_queue,
                IDLE.as_secs_f32()
            )),
            Some(End::Limit) => say(&format!(
                "stopped at --limit {}: what follows on `{}` was not looked at",
                self.options.limit.unwrap_or_default(),
                self.dead_queue
            )),
            Some(End::CameBack { position, error }) => say(&format!(
                "stopped at #{position}: a message this run moved is back on `{}` (a daemon \
                 running pipeline `{}` dead-lettered it again: {error}); it and what follows \
                 stay there. Fix the cause, then replay again",
                self.dead_queue, self.pipeline.name
            )),
            Some(End::WindowFull) => say(&format!(
                "stopped after holding {} message(s) unacknowledged, as many as one consumer \
                 may hold (its prefetch): what follows on `{}` was not looked at. Replay those \
                 held first (or remove them), then run again",
                self.held, self.dead_queue
            )),
        }
    }
}

/// Prints one line of the report, at once: a long replay shows its progress.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// `message` as it goes back to its source queue: without the headers Golconde added,
/// marked replayed at `stamp`.
pub fn replayed_copy(message: &Message, stamp: &str) -> Message {
    let mut copy = message.clone();
    copy.headers
        .retain(|h| !is_golconde_header(h.name.as_str()));
    copy.push_header(REPLAYED_HEADER, stamp);
    copy
}

fn is_golconde_header(name: &str) -> bool {
    name.get(..GOLCONDE_PREFIX.len())
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(GOLCONDE_PREFIX))
}

/// Why `message` was dead-lettered, if it says.
fn error_of(message: &Message) -> Option<&str> {
    message
        .headers
        .iter()
        .find(|h| h.name.as_str().eq_ignore_ascii_case(ERROR_HEADER))
        .map(|h| h.value.as_str())
}

/// One line for a message: its position, its `message-id` and why it failed.
fn describe(position: u64, message: &Message) -> String {
    let id = match message.header("message-id") {
        Some(id) => format!("message-id {}", excerpt(id)),
        None => "no message-id".to_string(),
    };
    let error = match error_of(message) {
        Some(error) => excerpt(error),
        None => format!("(no {ERROR_HEADER} header)"),
    };
    format!("#{position} ({id}): {error}")
}

/// At most [`ERROR_CHARS`] characters of a producer's or a database's text, on one line.
fn excerpt(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(ERROR_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(ERROR_CHARS).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(limit: Option<u64>, where_error: Option<&str>, dry_run: bool) -> Options {
        Options {
            pipeline: "p".into(),
            limit,
            where_error: where_error.map(String::from),
            dry_run,
        }
    }

    #[test]
    fn a_replayed_copy_keeps_the_producer_s_headers_and_drops_golconde_s() {
        let letter = Message::new(b"{}".to_vec())
            .with_header("message-id", "m-1")
            .with_header("x-trace", "abc")
            .with_header("x-golconde-error", "column `note` does not exist")
            .with_header("X-Golconde-Attempts", "1")
            .with_header("x-golconde-replayed", "earlier");
        let copy = replayed_copy(&letter, "now");
        let headers: Vec<(&str, &str)> = copy
            .headers
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str()))
            .collect();
        assert_eq!(
            headers,
            [
                ("message-id", "m-1"),
                ("x-trace", "abc"),
                ("x-golconde-replayed", "now")
            ]
        );
        assert_eq!(copy.body, letter.body);
    }

    #[test]
    fn the_window_has_room_for_what_a_run_holds() {
        assert_eq!(window(&options(None, None, false)), BATCH);
        assert_eq!(window(&options(Some(3), None, false)), 3);
        assert_eq!(window(&options(Some(3), Some("x"), false)), HOLD_WINDOW);
        assert_eq!(window(&options(None, None, true)), HOLD_WINDOW);
        assert_eq!(window(&options(Some(7), None, true)), 7);
        assert_eq!(window(&options(Some(u64::MAX), None, false)), BATCH);
    }

    #[test]
    fn excerpts_are_one_line_of_at_most_120_characters() {
        assert_eq!(excerpt("a\nb"), "a b");
        let long = "é".repeat(200);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), ERROR_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(excerpt(&"x".repeat(120)), "x".repeat(120));
    }

    #[test]
    fn golconde_headers_are_told_by_their_prefix_in_any_case() {
        assert!(is_golconde_header("x-golconde-error"));
        assert!(is_golconde_header("X-GOLCONDE-failed-at"));
        assert!(!is_golconde_header("x-golcond"));
        assert!(!is_golconde_header("x-trace"));
        assert!(!is_golconde_header("é-golconde-éé"));
    }
}

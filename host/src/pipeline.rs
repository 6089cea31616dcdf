//! A running pipeline: consume, process, route by row, apply in one transaction per worker,
//! fan out, dead-letter, acknowledge.
//!
//! One dispatcher worker owns the consumer and the processor; `workers` database workers
//! each own a session. The dispatcher takes a batch off the queue, turns every message into
//! a [`Change`], sends each change to the worker its row hashes to ([`crate::route`]), and
//! goes on with the next batch while that one commits ([`DEPTH`] batches in flight). For
//! the oldest batch it then waits for the commits, publishes the fan-out copies and the
//! dead letters, and only then acknowledges the batch with one cumulative ack.
//!
//! **Invariant:** nothing is acknowledged before it is committed (or dead-lettered) and its
//! fan-out copies are confirmed, and acknowledgements go back in delivery order. A crash
//! therefore replays a suffix of the queue, in order.
//!
//! **Invariant:** an error caused by one message costs that message only. It is
//! dead-lettered with the reason, or, when the pipeline has no dead-letter queue, the
//! pipeline stops naming it. Only infrastructure (a broker or database that cannot be
//! reached, a plugin that cannot be built) pauses a pipeline, and a pause retries until it
//! passes. Concretely:
//! - a processor or database session that panics is built anew and the same input tried
//!   again; at [`PANIC_LIMIT`] panics the input is the message's fault;
//! - a panic in a database's `connect` or `key_columns`, or in a transport's own methods,
//!   is the plugin's fault, never a message's: the instance is rebuilt and the work waits;
//! - a publish the broker refuses for good is retried message by message, so only the
//!   messages refused alone are set aside;
//! - nothing that happens after a batch committed sends the batch back to the broker
//!   (which would apply it again): enriching and publishing are retried in place.

use std::{
    collections::VecDeque,
    sync::{mpsc, Arc},
    time::{Duration, Instant, SystemTime},
};

use abi_stable::std_types::{RSlice, RStr};
use golconde_plugin_api::{
    abi::{ConsumerBox, DatabaseBox, ProcessorBox, SessionBox, TransportBox},
    AckMode, Action, Applied, Change, ConsumeOptions, Delivery, ErrorKind, Message, PluginError,
    CHANGE_ID_HEADER, TRANSPORT_ERROR_HEADER,
};

use crate::{
    assemble::{allowed_tables, Current, Instance, PipelineParts},
    place::Placer,
    pool::{Backoff, Shutdown, Stop, WorkerPool},
    route::Router,
    stats::{PipelineStats, RunGuard},
    tables::AllowedTables,
};

/// How often an idle dispatcher wakes up to look at the shutdown flag.
const IDLE_POLL: Duration = Duration::from_millis(250);

/// How many times a plugin may panic on the same input before the input is set aside as
/// permanently bad.
const PANIC_LIMIT: u32 = 3;

/// Batches a dispatcher keeps in flight: while one commits, the next is received and
/// processed, which matters when commits are slow (a remote or fsync-bound database).
/// Acknowledgements still go back batch by batch, in order.
const DEPTH: usize = 2;

/// How often a pipeline asks its transport for its lag: as often as the dashboard samples.
const LAG_EVERY: Duration = Duration::from_secs(1);

/// How often a filling batch, while it waits for the batch before it to commit, takes what
/// has arrived to see whether it is full.
const FILL_SLICE: Duration = Duration::from_millis(1);

/// Why a message cannot be applied or passed on, and how often it was tried.
#[derive(Clone, Debug)]
struct Failure {
    error: PluginError,
    attempts: u32,
}

impl Failure {
    fn once(error: PluginError) -> Failure {
        Failure { error, attempts: 1 }
    }

    /// The same failure, its message prefixed with what had already happened.
    fn after(self, what: &str) -> Failure {
        Failure {
            error: PluginError::new(self.error.kind, format!("{what}: {}", self.error.message)),
            attempts: self.attempts,
        }
    }
}

/// How many times a pipeline's process may die with a message in flight before the message
/// is taken to be the cause, and set aside unprocessed.
const CRASH_LIMIT: u32 = 3;

/// Who watches a pipeline from outside its process: with process isolation, the supervisor
/// in the parent (`crate::supervise`), which counts the native crashes (a segmentation
/// fault, an abort) of the child per message in flight, since a crash leaves nothing inside
/// the process to count with.
pub trait Watcher: Send + Sync {
    /// These deliveries are about to be processed and applied, as batch `batch`.
    fn started(&self, batch: u64, deliveries: &[Delivery]);
    /// Batch `batch` is done with: acknowledged, or left to the broker.
    fn finished(&self, batch: u64);
    /// How often the process died with `message` in flight, and how it died last.
    fn crashes(&self, message: &Message) -> Option<(u32, String)>;
}

/// A batch whose changes are with the appliers.
struct InFlight {
    /// Its number, for the [`Watcher`].
    id: u64,
    batch: Vec<Delivery>,
    outcomes: Vec<Outcome>,
    /// Each change's id, by position, kept for its fan-out copy (empty without fan-out).
    change_ids: Vec<Option<String>>,
    results: mpsc::Receiver<JobResult>,
    /// How many of the jobs the batch was split into have not answered yet.
    jobs_left: usize,
    /// Why the batch cannot finish, once an answer said so.
    failed: Option<Stop>,
    /// Sent to one worker because some row could not be told: nothing may be in flight
    /// beside it.
    alone: bool,
}

impl InFlight {
    /// Takes the answers that arrive within `wait`; true once every job has answered (or
    /// the batch failed).
    fn settled_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while self.failed.is_none() && self.jobs_left > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.results.recv_timeout(left) {
                Ok(result) => self.take(result),
                Err(mpsc::RecvTimeoutError::Timeout) => return false,
                Err(mpsc::RecvTimeoutError::Disconnected) => self.failed = Some(applier_died()),
            }
        }
        true
    }

    /// Waits for every job's answer.
    fn wait(&mut self) -> Result<(), Stop> {
        while self.failed.is_none() && self.jobs_left > 0 {
            match self.results.recv() {
                Ok(result) => self.take(result),
                Err(_) => self.failed = Some(applier_died()),
            }
        }
        match self.failed.take() {
            Some(stop) => Err(stop),
            None => Ok(()),
        }
    }

    fn take(&mut self, answer: JobResult) {
        let JobResult {
            positions,
            results,
            changes,
        } = answer;
        // Freed here, on the thread whose processor allocated them: freed on the applier's,
        // every change would take the allocator's lock of this thread's arena, against
        // this thread's own allocations for the next batch.
        drop(changes);
        self.jobs_left -= 1;
        let Ok(results) = results else {
            self.failed = Some(Stop::Done);
            return;
        };
        for (position, result) in positions.into_iter().zip(results) {
            self.outcomes[position] = match result {
                Ok(applied) => Outcome::Applied(applied),
                Err(failure) => Outcome::Failed(failure),
            };
        }
    }
}

/// An applier that dies drops its job and with it the reply sender.
fn applier_died() -> Stop {
    Stop::Restart(
        "a database worker failed in the middle of a batch; it will be redelivered".into(),
    )
}

/// A pipeline's threads.
pub struct RunningPipeline {
    dispatcher: WorkerPool,
    appliers: WorkerPool,
}

impl RunningPipeline {
    pub fn start(
        parts: PipelineParts,
        shutdown: &Shutdown,
        stats: Arc<PipelineStats>,
        watcher: Option<Arc<dyn Watcher>>,
    ) -> std::io::Result<RunningPipeline> {
        let name = parts.config.name.clone();
        let retry = parts.config.retry;
        stats.starting(&parts.config.queue);
        // As many slots per applier as batches in flight, so handing out a batch never
        // waits behind an earlier one, and nothing queues up unbounded.
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..parts.config.workers)
            .map(|_| mpsc::sync_channel::<Job>(DEPTH))
            .unzip();
        let mut receivers = receivers.into_iter();
        let appliers = WorkerPool::spawn(
            &name,
            "apply",
            parts.config.workers,
            retry,
            shutdown,
            |_| {
                let mut applier = Applier {
                    database: parts.database.clone(),
                    jobs: receivers.next().expect("one receiver per applier"),
                    retry: Backoff::new(&retry),
                    shutdown: shutdown.clone(),
                    session: None,
                    stats: stats.clone(),
                    _alive: stats.applying(),
                };
                move || applier.run()
            },
        )?;
        watch_lag(&parts, shutdown, stats.clone())?;
        let mut dispatcher = Some(Dispatcher {
            allowed: allowed_tables(&parts.config),
            router: Router::new(parts.config.workers),
            placer: Placer::new(parts.config.workers),
            parts,
            senders,
            processor: None,
            watcher,
            batches: 0,
            shutdown: shutdown.clone(),
            _alive: stats.running(),
            stats,
        });
        let dispatcher = WorkerPool::spawn(&name, "dispatch", 1, retry, shutdown, |_| {
            let mut dispatcher = dispatcher.take().expect("one dispatcher");
            move || {
                let stop = dispatcher.run();
                if let Stop::Restart(why) = &stop {
                    dispatcher.stats.error(why);
                }
                stop
            }
        })?;
        Ok(RunningPipeline {
            dispatcher,
            appliers,
        })
    }

    pub fn is_finished(&self) -> bool {
        self.dispatcher.is_finished() && self.appliers.is_finished()
    }

    /// Waits for the threads; the pipeline's fatal error, if it stopped on one.
    pub fn join(self) -> Result<(), String> {
        // The dispatcher's end drops the job senders, which ends the appliers.
        let dispatched = self.dispatcher.join();
        let applied = self.appliers.join();
        dispatched.and(applied)
    }
}

/// Asks the transport how many messages wait for the pipeline, every [`LAG_EVERY`], until
/// the pipeline is stopped; for a transport of ABI 1.3 or later only.
fn watch_lag(
    parts: &PipelineParts,
    shutdown: &Shutdown,
    stats: Arc<PipelineStats>,
) -> std::io::Result<()> {
    let Some(table) = parts.transport.plugin.lag else {
        return Ok(());
    };
    let transport = parts.transport.clone();
    let (queue, pipeline) = (parts.config.queue.clone(), parts.config.name.clone());
    let shutdown = shutdown.clone();
    let span = tracing::info_span!("worker", pipeline, role = "lag", index = 0);
    std::thread::Builder::new()
        .name(format!("{pipeline}/lag"))
        .spawn(move || {
            let _entered = span.enter();
            loop {
                let current = transport.get();
                let asked =
                    (table.lag)(&current, RStr::from_str(&queue), RStr::from_str(&pipeline));
                match asked.into_result() {
                    Ok(lag) => stats.set_lag(lag.into_option()),
                    // A panicked instance is never called again by this thread; the
                    // pipeline's own threads rebuild it when they meet it.
                    Err(e) if e.kind == ErrorKind::Panic => {
                        tracing::warn!(
                            "transport `{}` panicked telling the lag of queue `{queue}`; no \
                             lag is shown for this pipeline until it restarts: {}",
                            transport.name,
                            e.message
                        );
                        stats.set_lag(None);
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(
                            "transport `{}` cannot tell the lag of queue `{queue}`: {}",
                            transport.name,
                            e.message
                        );
                        stats.set_lag(None);
                    }
                }
                if shutdown.sleep(LAG_EVERY) {
                    return;
                }
            }
        })?;
    Ok(())
}

/// Changes for one applier, and where to send the results.
struct Job {
    /// Positions of the changes in the dispatcher's batch.
    positions: Vec<usize>,
    changes: Vec<Change>,
    reply: mpsc::Sender<JobResult>,
}

type ChangeResults = Vec<Result<Applied, Failure>>;

struct JobResult {
    positions: Vec<usize>,
    results: Result<ChangeResults, Interrupted>,
    /// The job's changes, handed back to be freed by the dispatcher (see [`InFlight::take`]).
    changes: Vec<Change>,
}

/// Shutdown came while a batch was still being retried: it is not acknowledged.
#[derive(Debug)]
struct Interrupted;

/// Why an attempt at a batch failed.
enum ApplyError {
    /// No session could be opened: the database's problem, never the changes'.
    Connect(PluginError),
    /// The session failed the batch.
    Apply(PluginError),
}

/// A database worker: applies the jobs it is sent, retrying transient failures itself so
/// that a job is never lost between restarts.
struct Applier {
    database: Arc<Instance<DatabaseBox>>,
    /// Owned by the worker's closure, so it outlives restarts of the worker.
    jobs: mpsc::Receiver<Job>,
    retry: Backoff,
    shutdown: Shutdown,
    session: Option<SessionBox>,
    stats: Arc<PipelineStats>,
    /// Counts the worker as alive for as long as its thread lives.
    _alive: RunGuard,
}

impl Applier {
    fn run(&mut self) -> Stop {
        while let Ok(job) = self.jobs.recv() {
            let started = Instant::now();
            let results = self.apply(&job.changes);
            if results.is_ok() {
                self.stats.applied_in(started.elapsed());
            }
            let _ = job.reply.send(JobResult {
                positions: job.positions,
                results,
                changes: job.changes,
            });
        }
        Stop::Done
    }

    /// Applies `changes` until it works, isolating the ones that can never apply.
    fn apply(&mut self, changes: &[Change]) -> Result<ChangeResults, Interrupted> {
        let mut panics = 0;
        loop {
            let error = match self.try_apply(changes) {
                Ok(results) => {
                    self.retry.reset();
                    return Ok(results
                        .into_iter()
                        .map(|r| r.map_err(Failure::once))
                        .collect());
                }
                Err(ApplyError::Connect(error)) => {
                    let message = format!(
                        "database `{}`: cannot open a session: {}; retrying",
                        self.database.name, error.message
                    );
                    tracing::warn!("{message}");
                    PipelineStats::add(&self.stats.retries, 1);
                    self.stats.error(&message);
                    if self.shutdown.sleep(self.retry.next_delay()) {
                        return Err(Interrupted);
                    }
                    continue;
                }
                Err(ApplyError::Apply(error)) => error,
            };
            match error.kind {
                ErrorKind::Panic => {
                    panics += 1;
                    self.session = None;
                    if panics >= PANIC_LIMIT {
                        return self.isolate(
                            changes,
                            Failure {
                                error,
                                attempts: panics,
                            },
                        );
                    }
                    tracing::error!(
                        "database `{}` {error}; opening a new session and retrying",
                        self.database.name
                    );
                }
                ErrorKind::Transient => {
                    self.session = None;
                    let message = format!(
                        "database `{}`: {}; retrying the batch of {} changes",
                        self.database.name,
                        error.message,
                        changes.len()
                    );
                    tracing::warn!("{message}");
                    PipelineStats::add(&self.stats.retries, 1);
                    self.stats.error(&message);
                }
                ErrorKind::Permanent | ErrorKind::Config => {
                    return self.isolate(changes, Failure::once(error))
                }
            }
            if self.shutdown.sleep(self.retry.next_delay()) {
                return Err(Interrupted);
            }
        }
    }

    /// A whole batch failed for good or kept panicking: apply each change alone, so only
    /// the bad ones are set aside.
    fn isolate(
        &mut self,
        changes: &[Change],
        failure: Failure,
    ) -> Result<ChangeResults, Interrupted> {
        if changes.len() == 1 {
            return Ok(vec![Err(failure)]);
        }
        tracing::warn!(
            "database `{}`: a batch of {} changes failed ({}); applying them one by one",
            self.database.name,
            changes.len(),
            failure.error
        );
        let mut results = Vec::with_capacity(changes.len());
        for change in changes {
            results.extend(self.apply(std::slice::from_ref(change))?);
        }
        Ok(results)
    }

    fn try_apply(
        &mut self,
        changes: &[Change],
    ) -> Result<Vec<Result<Applied, PluginError>>, ApplyError> {
        if self.session.is_none() {
            let database = self.database.get();
            match database.connect().into_result() {
                Ok(session) => self.session = Some(session),
                Err(e) => {
                    if e.kind == ErrorKind::Panic {
                        if let Err(rebuild) = self.database.rebuild(&database) {
                            tracing::error!(
                                "database `{}` cannot be built again: {rebuild}",
                                self.database.name
                            );
                        }
                    }
                    return Err(ApplyError::Connect(e));
                }
            }
        }
        let session = self.session.as_mut().expect("connected above");
        let results = session
            .apply(RSlice::from_slice(changes))
            .into_result()
            .map_err(ApplyError::Apply)?;
        if results.len() != changes.len() {
            return Err(ApplyError::Apply(PluginError::new(
                ErrorKind::Panic,
                format!(
                    "the database plugin returned {} results for {} changes",
                    results.len(),
                    changes.len()
                ),
            )));
        }
        Ok(results.into_iter().map(|r| r.into_result()).collect())
    }
}

/// What became of one delivery of a batch.
enum Outcome {
    Pending(Change),
    Applied(Applied),
    Failed(Failure),
}

/// The consumer's side: owns everything that must survive a restart of its worker.
struct Dispatcher {
    parts: PipelineParts,
    allowed: AllowedTables,
    router: Router,
    placer: Placer,
    senders: Vec<mpsc::SyncSender<Job>>,
    /// Built on first use, and again after it panicked.
    processor: Option<ProcessorBox>,
    watcher: Option<Arc<dyn Watcher>>,
    /// Batches started so far: the next one's number.
    batches: u64,
    shutdown: Shutdown,
    stats: Arc<PipelineStats>,
    /// Counts the pipeline as running for as long as the dispatcher's thread lives.
    _alive: RunGuard,
}

impl Dispatcher {
    fn run(&mut self) -> Stop {
        if let Err(e) = self.processor() {
            return Stop::Restart(format!("cannot build the processor: {e}"));
        }
        let config = &self.parts.config;
        let options = ConsumeOptions {
            prefetch: config.prefetch(),
            ack_mode: AckMode::Cumulative,
        };
        let transport = self.parts.transport.get();
        let queue = RStr::from_str(&config.queue);
        let opened = match self.parts.transport.plugin.consume_as {
            Some(table) => {
                (table.consume_as)(&transport, queue, options, RStr::from_str(&config.name))
            }
            None => transport.consume(queue, options),
        };
        let consumer = match opened.into_result() {
            Ok(consumer) => consumer,
            Err(e) => {
                return self.transport_failed(
                    &self.parts.transport,
                    &transport,
                    format!(
                        "cannot consume queue `{}` on transport `{}`",
                        config.queue, self.parts.transport.name
                    ),
                    e,
                )
            }
        };
        tracing::info!(
            "consuming queue `{}` on transport `{}`",
            config.queue,
            self.parts.transport.name
        );
        self.stats.progress();
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let stop = loop {
            let stopping = self.shutdown.is_triggered();
            if stopping && in_flight.is_empty() {
                break Stop::Done;
            }
            if !stopping && in_flight.len() < DEPTH {
                // With a batch in flight, take only what is already there: the batch's
                // completion must not wait for new messages.
                let wait = if in_flight.is_empty() {
                    IDLE_POLL
                } else {
                    Duration::ZERO
                };
                match self.collect(&consumer, wait, in_flight.front_mut()) {
                    Err(e) => {
                        let what = format!("receiving from `{}`", self.parts.config.queue);
                        break self.transport_failed(&self.parts.transport, &transport, what, e);
                    }
                    Ok(batch) if !batch.is_empty() => {
                        if let Err(stop) = self.start(&consumer, batch, &mut in_flight) {
                            break stop;
                        }
                        continue;
                    }
                    Ok(_) => {}
                }
            }
            if let Some(oldest) = in_flight.pop_front() {
                if let Err(stop) = self.finish(&consumer, oldest) {
                    break stop;
                }
            }
        };
        for abandoned in &in_flight {
            self.watch_finished(abandoned.id);
        }
        // Unacknowledged deliveries go back to the broker.
        if let Err(e) = consumer.close().into_result() {
            tracing::warn!("closing the consumer of `{}`: {e}", self.parts.config.queue);
        }
        self.stats.nothing_in_flight();
        stop
    }

    /// A transport call failed: restart the worker, and first rebuild the transport if it
    /// panicked.
    fn transport_failed(
        &self,
        instance: &Instance<TransportBox>,
        used: &Current<TransportBox>,
        what: String,
        error: PluginError,
    ) -> Stop {
        if error.kind == ErrorKind::Panic {
            if let Err(e) = instance.rebuild(used) {
                tracing::error!("transport `{}` cannot be built again: {e}", instance.name);
            }
        }
        Stop::Restart(format!("{what}: {error}"))
    }

    /// The processor, built if it is not.
    fn processor(&mut self) -> Result<&ProcessorBox, PluginError> {
        if self.processor.is_none() {
            self.processor = Some(self.parts.processor.build()?);
        }
        Ok(self.processor.as_ref().expect("built above"))
    }

    /// Waits up to `wait` for a first delivery, then gathers more while that costs no
    /// latency: while `busy` (the oldest batch in flight) is still committing, until the
    /// batch is full or `max_wait_ms` has passed since the first delivery. With nothing in
    /// flight the appliers are idle, so the batch goes at once with what has arrived.
    /// Batches thus grow with the load: one message each when it is light, full ones when
    /// the database is the bottleneck.
    fn collect(
        &self,
        consumer: &ConsumerBox,
        wait: Duration,
        mut busy: Option<&mut InFlight>,
    ) -> Result<Vec<Delivery>, PluginError> {
        let max = self.parts.config.batch.max_messages;
        let mut batch: Vec<Delivery> = consumer
            .receive(max, wait.as_millis() as u64)
            .into_result()?
            .into();
        if batch.is_empty() {
            return Ok(batch);
        }
        let deadline = Instant::now() + Duration::from_millis(self.parts.config.batch.max_wait_ms);
        while (batch.len() as u32) < max {
            let left = deadline.saturating_duration_since(Instant::now());
            // The thread sleeps on the commit, not on the queue: waiting in `receive`
            // would wake it for every few deliveries the transport reads, most of a
            // drain's context switches. What arrives meanwhile waits in the transport
            // (at most the prefetch) and is taken in one go, at the commit or every
            // [`FILL_SLICE`] to see whether the batch is full.
            let idle = left.is_zero()
                || busy
                    .as_mut()
                    .is_none_or(|oldest| oldest.settled_within(left.min(FILL_SLICE)));
            // What has already arrived is taken even when idle: it costs no waiting.
            let more = consumer
                .receive(max - batch.len() as u32, 0)
                .into_result()?;
            let drained = more.is_empty();
            batch.extend(more);
            if idle && drained {
                break;
            }
        }
        Ok(batch)
    }

    /// Processes a batch and hands its changes to the appliers. A batch that must run alone
    /// (see [`crate::route`]) first lets every batch in flight finish, and so does any
    /// batch after it.
    fn start(
        &mut self,
        consumer: &ConsumerBox,
        batch: Vec<Delivery>,
        in_flight: &mut VecDeque<InFlight>,
    ) -> Result<(), Stop> {
        let suspect = |d: &Delivery| {
            self.watcher
                .as_ref()
                .is_some_and(|w| w.crashes(&d.message).is_some())
        };
        if batch.len() > 1 && batch.iter().any(suspect) {
            // The process died with some of these in flight: one at a time, each alone, so
            // that another crash names its message and spares the others.
            self.finish_all(consumer, in_flight)?;
            for delivery in batch {
                self.start_batch(consumer, vec![delivery], in_flight)?;
                self.finish_all(consumer, in_flight)?;
            }
            return Ok(());
        }
        self.start_batch(consumer, batch, in_flight)
    }

    fn start_batch(
        &mut self,
        consumer: &ConsumerBox,
        batch: Vec<Delivery>,
        in_flight: &mut VecDeque<InFlight>,
    ) -> Result<(), Stop> {
        PipelineStats::add(&self.stats.received, batch.len());
        self.stats.batch_started(batch.len());
        let id = self.batches;
        self.batches += 1;
        if let Some(watcher) = &self.watcher {
            watcher.started(id, &batch);
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        for delivery in &batch {
            match self.process(delivery) {
                Ok(outcome) => outcomes.push(outcome),
                Err(stop) => {
                    // Left to the broker, which redelivers it; finish what is in flight
                    // before, so that only this batch comes again.
                    self.watch_finished(id);
                    self.finish_all(consumer, in_flight)?;
                    return Err(stop);
                }
            }
        }
        let database = &self.parts.database;
        let mut lookup = |table: &str| key_columns(database, table);
        let routes = self.router.route(
            outcomes.iter().map(|o| match o {
                Outcome::Pending(change) => Some(change),
                _ => None,
            }),
            &mut lookup,
        );
        if routes.alone || in_flight.back().is_some_and(|b| b.alone) {
            self.finish_all(consumer, in_flight)?;
        }
        let mut sizes = vec![0; self.senders.len()];
        for &partition in routes.partitions.iter().flatten() {
            sizes[partition] += 1;
        }
        let placement = self
            .placer
            .place(id, &sizes, |batch| in_flight.iter().any(|b| b.id == batch));
        let workers = routes
            .partitions
            .iter()
            .map(|partition| partition.map(|p| placement[p]))
            .collect();
        let change_ids = if self.parts.fan_out.is_empty() {
            Vec::new()
        } else {
            outcomes
                .iter()
                .map(|o| match o {
                    Outcome::Pending(change) => {
                        change.id.as_ref().into_option().map(|id| id.to_string())
                    }
                    _ => None,
                })
                .collect()
        };
        let (results, jobs) = self.send(&mut outcomes, workers).inspect_err(|_| {
            self.watch_finished(id);
        })?;
        in_flight.push_back(InFlight {
            id,
            batch,
            outcomes,
            change_ids,
            results,
            jobs_left: jobs,
            failed: None,
            alone: routes.alone,
        });
        Ok(())
    }

    fn finish_all(
        &mut self,
        consumer: &ConsumerBox,
        in_flight: &mut VecDeque<InFlight>,
    ) -> Result<(), Stop> {
        while let Some(oldest) = in_flight.pop_front() {
            self.finish(consumer, oldest)?;
        }
        Ok(())
    }

    /// Waits for a batch's commits, fans it out, dead-letters what cannot apply, and
    /// acknowledges it. `Err` stops the worker.
    fn finish(&mut self, consumer: &ConsumerBox, in_flight: InFlight) -> Result<(), Stop> {
        let (id, messages) = (in_flight.id, in_flight.batch.len());
        let finished = self.finish_batch(consumer, in_flight);
        self.watch_finished(id);
        self.stats.batch_finished(messages);
        finished
    }

    fn watch_finished(&self, id: u64) {
        if let Some(watcher) = &self.watcher {
            watcher.finished(id);
        }
    }

    fn finish_batch(
        &mut self,
        consumer: &ConsumerBox,
        mut in_flight: InFlight,
    ) -> Result<(), Stop> {
        in_flight.wait()?;
        let InFlight {
            batch,
            outcomes,
            change_ids,
            ..
        } = in_flight;

        // What cannot go on, by position; and the fan-out copy of everything else applied.
        let mut failures: Vec<(usize, Failure)> = Vec::new();
        let mut copies: Vec<(usize, Message)> = Vec::new();
        for (position, (delivery, outcome)) in batch.iter().zip(&outcomes).enumerate() {
            match outcome {
                Outcome::Applied(applied) if !self.parts.fan_out.is_empty() => {
                    match self.enrich(delivery, applied)? {
                        Ok(mut copy) => {
                            stamp_change_id(&mut copy, change_ids.get(position));
                            copies.push((position, copy))
                        }
                        Err(failure) => failures.push((
                            position,
                            failure.after("applied, but its fan-out copy could not be made"),
                        )),
                    }
                }
                Outcome::Applied(_) => {}
                Outcome::Failed(failure) => failures.push((position, failure.clone())),
                Outcome::Pending(_) => unreachable!("every change was applied"),
            }
        }
        // Without a dead-letter queue nothing after the first failure is passed on: it
        // stays on the broker with the failure.
        let mut done = batch.len();
        if self.parts.dead_letter.is_none() {
            if let Some((first, _)) = failures.first() {
                done = *first;
                copies.retain(|(position, _)| *position < done);
            }
        }

        for (transport, queue) in self.parts.fan_out.clone() {
            let messages: Vec<Message> = copies.iter().map(|(_, m)| m.clone()).collect();
            for (index, error) in self.publish(&transport, &queue, &messages)? {
                let position = copies[index].0;
                failures.push((
                    position,
                    Failure::once(error).after(&format!(
                        "applied, but its fan-out copy was refused by queue `{queue}` on \
                         transport `{}`",
                        transport.name
                    )),
                ));
            }
        }
        failures.sort_by_key(|(position, _)| *position);
        failures.dedup_by_key(|(position, _)| *position);

        let mut dead_lettered = 0;
        let mut fatal = None;
        match self.parts.dead_letter.clone() {
            Some((transport, queue)) => {
                let letters: Vec<Message> = failures
                    .iter()
                    .map(|(position, failure)| self.dead_letter_copy(&batch[*position], failure))
                    .collect();
                for (position, failure) in &failures {
                    let delivery = &batch[*position];
                    tracing::warn!(
                        "dead-lettering message {} of `{}`: {}",
                        describe(delivery),
                        self.parts.config.queue,
                        failure.error
                    );
                    self.stats.error(&format!(
                        "dead-lettered message {} of `{}` ({} error; the reason is in its \
                         `x-golconde-error` header and in the log)",
                        describe(delivery),
                        self.parts.config.queue,
                        failure.error.kind
                    ));
                }
                for (index, error) in self.publish(&transport, &queue, &letters)? {
                    // Refused as it is: the bare body with the reason is all that must
                    // reach the dead-letter queue.
                    let (position, failure) = &failures[index];
                    let bare = bare_copy(&letters[index]);
                    let refused = self.publish(&transport, &queue, std::slice::from_ref(&bare))?;
                    if refused.is_empty() {
                        tracing::warn!(
                            "the dead-letter copy of message {} was refused by `{queue}` \
                             ({error}); it went without its original headers",
                            describe(&batch[*position])
                        );
                        continue;
                    }
                    done = done.min(*position);
                    fatal = Some(format!(
                        "message {} of queue `{}` cannot be applied ({}), and dead-letter queue \
                         `{queue}` refuses it too ({error}). It stays on the broker, \
                         unacknowledged; see to the dead-letter queue, then restart",
                        describe(&batch[*position]),
                        self.parts.config.queue,
                        failure.error
                    ));
                    break;
                }
                dead_lettered = failures.iter().filter(|(p, _)| *p < done).count();
            }
            None => {
                if let Some((position, failure)) = failures.first() {
                    done = done.min(*position);
                    fatal = Some(format!(
                        "message {} of queue `{}` cannot be applied, and the pipeline has no \
                         `dead_letter` queue to set it aside: {}. It stays on the broker, \
                         unacknowledged; fix its cause or configure `dead_letter`, then restart",
                        describe(&batch[*position]),
                        self.parts.config.queue,
                        failure.error
                    ));
                }
            }
        }

        if done > 0 {
            if let Err(e) = consumer.ack(batch[done - 1].tag, true).into_result() {
                return Err(Stop::Restart(format!(
                    "acknowledging on `{}` failed, so the batch will be redelivered: {e}",
                    self.parts.config.queue
                )));
            }
            // The AMQP timestamp property, as the transports name it: seconds since 1970.
            let timestamps = batch[..done].iter();
            self.stats
                .committed(timestamps.filter_map(|d| d.message.header("timestamp")));
        }
        let fanned_out = copies.iter().filter(|(p, _)| *p < done).count();
        self.count(&outcomes[..done], fanned_out, dead_lettered, done);
        match fatal {
            Some(fatal) => {
                let position = done;
                self.stats.error(&format!(
                    "stopped at message {} of `{}`, which cannot be applied or set aside (the \
                     reason is in the log)",
                    describe(&batch[position]),
                    self.parts.config.queue
                ));
                Err(Stop::Fatal(fatal))
            }
            None => Ok(()),
        }
    }

    fn count(&self, outcomes: &[Outcome], fanned_out: usize, dead: usize, acknowledged: usize) {
        let stats = &self.stats;
        let (mut applied, mut duplicates) = (0, 0);
        for outcome in outcomes {
            if let Outcome::Applied(a) = outcome {
                applied += 1;
                duplicates += usize::from(a.duplicate);
            }
        }
        PipelineStats::add(&stats.applied, applied);
        PipelineStats::add(&stats.duplicates, duplicates);
        PipelineStats::add(&stats.fanned_out, fanned_out * self.parts.fan_out.len());
        PipelineStats::add(&stats.dead_lettered, dead);
        PipelineStats::add(&stats.acknowledged, acknowledged);
        PipelineStats::add(&stats.batches, 1);
    }

    /// Turns one delivery into a change, or into the reason it has none. A processor that
    /// panics is built anew and tried again, up to [`PANIC_LIMIT`] times for one message.
    fn process(&mut self, delivery: &Delivery) -> Result<Outcome, Stop> {
        if let Some((crashes, how)) = self
            .watcher
            .as_ref()
            .and_then(|w| w.crashes(&delivery.message))
        {
            if crashes >= CRASH_LIMIT {
                return Ok(Outcome::Failed(Failure {
                    error: PluginError::new(
                        ErrorKind::Panic,
                        format!(
                            "the pipeline's process crashed {crashes} times while this message \
                             was being processed or applied (it {how}); set aside unprocessed. \
                             A plugin crashes on it: report it to the plugin's authors with the \
                             log"
                        ),
                    ),
                    attempts: crashes,
                }));
            }
        }
        if let Some(why) = delivery.message.header(TRANSPORT_ERROR_HEADER) {
            return Ok(Outcome::Failed(Failure::once(PluginError::permanent(
                format!("the transport could not deliver this message whole: {why}"),
            ))));
        }
        let limit = self.parts.config.max_message_bytes;
        let size = delivery.message.body.len();
        if size > limit {
            return Ok(Outcome::Failed(Failure::once(PluginError::permanent(
                format!(
                    "the message is {size} bytes, more than pipeline `{}` reads \
                     (`max_message_bytes` = {limit}); it was not processed. Raise \
                     `max_message_bytes` if such messages are expected, then replay it",
                    self.parts.config.name
                ),
            ))));
        }
        let mut backoff = Backoff::new(&self.parts.config.retry);
        let mut panics = 0;
        loop {
            let processor = self
                .processor()
                .map_err(|e| Stop::Restart(format!("cannot build the processor again: {e}")))?;
            let error = match processor.process(&delivery.message).into_result() {
                Ok(change) => return Ok(self.check_tables(change)),
                Err(e) => e,
            };
            match error.kind {
                ErrorKind::Transient => {
                    tracing::warn!(
                        "processor: {}; retrying message {}",
                        error.message,
                        describe(delivery)
                    );
                    if self.shutdown.sleep(backoff.next_delay()) {
                        return Err(Stop::Done);
                    }
                }
                ErrorKind::Panic => {
                    panics += 1;
                    self.processor = None;
                    if panics >= PANIC_LIMIT {
                        return Ok(Outcome::Failed(Failure {
                            error,
                            attempts: panics,
                        }));
                    }
                    tracing::error!(
                        "processor {error}; building it anew and trying message {} again",
                        describe(delivery)
                    );
                }
                ErrorKind::Permanent | ErrorKind::Config => {
                    return Ok(Outcome::Failed(Failure::once(error)))
                }
            }
        }
    }

    /// The fan-out copy of a message whose change committed. The batch is committed, so a
    /// failure here never sends it back to the broker: a processor that panics is built
    /// anew and tried again, and at [`PANIC_LIMIT`] the copy is given up (the message is
    /// dead-lettered, applied but not passed on).
    fn enrich(
        &mut self,
        delivery: &Delivery,
        applied: &Applied,
    ) -> Result<Result<Message, Failure>, Stop> {
        let mut backoff = Backoff::new(&self.parts.config.retry);
        let mut panics = 0;
        loop {
            let error = match self.processor() {
                Ok(processor) => match processor.enrich(&delivery.message, applied).into_result() {
                    Ok(copy) => return Ok(Ok(copy)),
                    Err(e) => e,
                },
                Err(e) => PluginError::transient(format!("cannot build the processor: {e}")),
            };
            match error.kind {
                ErrorKind::Panic => {
                    panics += 1;
                    self.processor = None;
                    if panics >= PANIC_LIMIT {
                        return Ok(Err(Failure {
                            error,
                            attempts: panics,
                        }));
                    }
                    tracing::error!(
                        "processor {error}; building it anew and enriching message {} again",
                        describe(delivery)
                    );
                    continue;
                }
                ErrorKind::Transient => tracing::warn!(
                    "processor: {}; enriching message {} again",
                    error.message,
                    describe(delivery)
                ),
                ErrorKind::Permanent | ErrorKind::Config => return Ok(Err(Failure::once(error))),
            }
            if self.shutdown.sleep(backoff.next_delay()) {
                return Err(Stop::Done);
            }
        }
    }

    /// A pipeline writes only the tables it is configured for, whatever its processor says,
    /// and deletes every row of one only through a database that declared it can.
    fn check_tables(&self, change: Change) -> Outcome {
        let refuse = |why: String| {
            Outcome::Failed(Failure::once(PluginError::permanent(format!(
                "pipeline `{}`: {why}",
                self.parts.config.name
            ))))
        };
        for op in change.operations.iter() {
            if let Err(why) = self.allowed.check(op.table.as_str()) {
                return refuse(why);
            }
            let database = &self.parts.database;
            if op.action == Action::Delete
                && op.restriction.is_empty()
                && !database.plugin.deletes_all_rows
            {
                return refuse(format!(
                    "the change deletes every row of table `{}` (a delete with no \
                     restriction: a truncate), which database `{}` (plugin `{}` {}) cannot \
                     apply; use a database plugin that can (`postgres`, `mysql`), or have the \
                     processor refuse or skip truncates",
                    op.table, database.name, database.plugin.name, database.plugin.version
                ));
            }
        }
        Outcome::Pending(change)
    }

    /// Hands the pending changes to the appliers, each to its worker in queue order; the
    /// channel their results come back on, and how many jobs were sent.
    fn send(
        &mut self,
        outcomes: &mut [Outcome],
        routes: Vec<Option<usize>>,
    ) -> Result<(mpsc::Receiver<JobResult>, usize), Stop> {
        let mut jobs: Vec<(Vec<usize>, Vec<Change>)> = (0..self.senders.len())
            .map(|_| Default::default())
            .collect();
        for (position, worker) in routes.into_iter().enumerate() {
            let Some(worker) = worker else { continue };
            let Outcome::Pending(change) = std::mem::replace(
                &mut outcomes[position],
                Outcome::Failed(Failure::once(interrupted())),
            ) else {
                unreachable!("only pending changes are routed");
            };
            jobs[worker].0.push(position);
            jobs[worker].1.push(change);
        }
        let (reply, results) = mpsc::channel();
        let mut sent = 0;
        for (worker, (positions, changes)) in jobs.into_iter().enumerate() {
            if changes.is_empty() {
                continue;
            }
            let job = Job {
                positions,
                changes,
                reply: reply.clone(),
            };
            if self.senders[worker].send(job).is_err() {
                return Err(Stop::Restart("a database worker has stopped".into()));
            }
            sent += 1;
        }
        Ok((results, sent))
    }

    /// Publishes until the broker has confirmed every message or refused some for good;
    /// the refused ones by index, with why. Transient failures back off and retry. A batch
    /// refused for good is published again message by message, so that one bad message
    /// never holds back the others.
    fn publish(
        &self,
        transport: &Instance<TransportBox>,
        queue: &str,
        messages: &[Message],
    ) -> Result<Vec<(usize, PluginError)>, Stop> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let mut backoff = Backoff::new(&self.parts.config.retry);
        let mut panics = 0;
        loop {
            let current = transport.get();
            let error = match current
                .publish(RStr::from_str(queue), RSlice::from_slice(messages))
                .into_result()
            {
                Ok(()) => return Ok(Vec::new()),
                Err(e) => e,
            };
            let what = format!(
                "publishing {} messages to `{queue}` on transport `{}`",
                messages.len(),
                transport.name
            );
            let refused = match error.kind {
                ErrorKind::Permanent => true,
                ErrorKind::Panic => {
                    panics += 1;
                    if let Err(e) = transport.rebuild(&current) {
                        tracing::error!(
                            "transport `{}` cannot be built again: {e}",
                            transport.name
                        );
                    }
                    panics >= PANIC_LIMIT
                }
                // Not something a message can cause: the transport's configuration or the
                // broker. Wait for it.
                ErrorKind::Transient | ErrorKind::Config => false,
            };
            if refused {
                if messages.len() == 1 {
                    return Ok(vec![(0, error)]);
                }
                tracing::warn!("{what}: {error}; publishing them one by one");
                let mut refused = Vec::new();
                for (index, message) in messages.iter().enumerate() {
                    if let Some((_, error)) = self
                        .publish(transport, queue, std::slice::from_ref(message))?
                        .pop()
                    {
                        refused.push((index, error));
                    }
                }
                return Ok(refused);
            }
            let message = format!("{what}: {error}; retrying");
            tracing::warn!("{message}");
            PipelineStats::add(&self.stats.retries, 1);
            self.stats.error(&message);
            if self.shutdown.sleep(backoff.next_delay()) {
                return Err(Stop::Done);
            }
        }
    }

    /// The original message, with headers saying why it was set aside.
    fn dead_letter_copy(&self, delivery: &Delivery, failure: &Failure) -> Message {
        let mut copy = delivery.message.clone();
        copy.push_header("x-golconde-error", failure.error.message.as_str());
        copy.push_header("x-golconde-error-kind", failure.error.kind.as_str());
        copy.push_header("x-golconde-pipeline", self.parts.config.name.as_str());
        copy.push_header("x-golconde-source-queue", self.parts.config.queue.as_str());
        copy.push_header("x-golconde-attempts", failure.attempts.to_string());
        copy.push_header(
            "x-golconde-failed-at",
            humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        );
        copy
    }
}

/// A table's key columns, from the database; `None` when it cannot say (the batch then
/// runs alone). A database that panicked is rebuilt.
fn key_columns(database: &Instance<DatabaseBox>, table: &str) -> Option<Vec<String>> {
    let current = database.get();
    match current.key_columns(RStr::from_str(table)).into_result() {
        Ok(columns) => Some(columns.into_iter().map(|c| c.into_string()).collect()),
        Err(e) => {
            if e.kind == ErrorKind::Panic {
                tracing::error!("database `{}` {e}", database.name);
                if let Err(e) = database.rebuild(&current) {
                    tracing::error!("database `{}` cannot be built again: {e}", database.name);
                }
            } else {
                tracing::debug!("key columns of `{table}`: {e}");
            }
            None
        }
    }
}

/// A dead letter with only the headers Golconde added: what is left to try when the
/// broker refuses the message with its own headers.
fn bare_copy(letter: &Message) -> Message {
    let mut bare = Message::new(letter.body.to_vec());
    for header in letter.headers.iter() {
        if header.name.as_str().starts_with("x-golconde-") {
            bare.headers.push(header.clone());
        }
    }
    bare.push_header("x-golconde-headers-dropped", "true");
    bare
}

fn interrupted() -> PluginError {
    PluginError::transient("interrupted before it was applied")
}

/// Says on a fan-out copy which change it carries ([`CHANGE_ID_HEADER`]), replacing what
/// an upstream pipeline said: the processor may have made another id of it.
fn stamp_change_id(copy: &mut Message, id: Option<&Option<String>>) {
    copy.headers
        .retain(|h| !h.name.as_str().eq_ignore_ascii_case(CHANGE_ID_HEADER));
    if let Some(Some(id)) = id {
        copy.push_header(CHANGE_ID_HEADER, id.as_str());
    }
}

/// How a delivery is named in messages: its `message-id` if it has one, else its tag.
fn describe(delivery: &Delivery) -> String {
    match delivery.message.header("message-id") {
        Some(id) => format!("`{}`", excerpt(id)),
        None => format!("with delivery tag {}", delivery.tag),
    }
}

/// At most 100 characters of a producer's text, for log lines and errors.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(100) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

//! A running pipeline: consume, process, route by row, apply in one transaction per worker,
//! fan out, dead-letter, acknowledge.
//!
//! One dispatcher worker owns the consumer and the processor; `workers` database workers
//! each own a session. The dispatcher takes a batch off the queue, turns every message into
//! a [`Change`], sends each change to the worker its row hashes to (so changes to one row
//! keep queue order: each worker takes its jobs in order), and goes on with the next batch
//! while that one commits ([`DEPTH`] batches in flight). For the oldest batch it then waits
//! for the commits, publishes the fan-out copies and the dead letters, and only then
//! acknowledges the batch with one cumulative ack.
//!
//! **Invariant:** nothing is acknowledged before it is committed (or dead-lettered) and its
//! fan-out copies are confirmed, and acknowledgements go back in delivery order. A crash
//! therefore replays a suffix of the queue, in order.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    hash::{Hash, Hasher},
    sync::{mpsc, Arc},
    time::{Duration, Instant, SystemTime},
};

use abi_stable::std_types::{RSlice, RStr};
use golconde_plugin_api::{
    abi::{ConsumerBox, DatabaseBox, ProcessorBox, SessionBox, TransportBox},
    AckMode, Applied, Change, ConsumeOptions, Delivery, ErrorKind, Message, PluginError, Value,
};

use crate::{
    assemble::{allowed_tables, Instance, PipelineParts},
    pool::{Backoff, Shutdown, Stop, WorkerPool},
    stats::PipelineStats,
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

/// How often a filling batch checks whether the batch before it has committed.
const FILL_SLICE: Duration = Duration::from_millis(1);

/// A batch whose changes are with the appliers.
struct InFlight {
    batch: Vec<Delivery>,
    outcomes: Vec<Outcome>,
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
    /// Takes the answers that have arrived, without waiting; true once every job has
    /// answered (or the batch failed).
    fn settled(&mut self) -> bool {
        while self.failed.is_none() && self.jobs_left > 0 {
            match self.results.try_recv() {
                Ok(result) => self.take(result),
                Err(mpsc::TryRecvError::Empty) => return false,
                Err(mpsc::TryRecvError::Disconnected) => self.failed = Some(applier_died()),
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

    fn take(&mut self, JobResult { positions, results }: JobResult) {
        self.jobs_left -= 1;
        let Ok(results) = results else {
            self.failed = Some(Stop::Done);
            return;
        };
        for (position, result) in positions.into_iter().zip(results) {
            self.outcomes[position] = match result {
                Ok(applied) => Outcome::Applied(applied),
                Err(e) => Outcome::Failed(e),
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
    pub name: String,
    dispatcher: WorkerPool,
    appliers: WorkerPool,
}

impl RunningPipeline {
    pub fn start(
        parts: PipelineParts,
        shutdown: &Shutdown,
        stats: Arc<PipelineStats>,
    ) -> std::io::Result<RunningPipeline> {
        let name = parts.config.name.clone();
        let retry = parts.config.retry;
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
                };
                move || applier.run()
            },
        )?;
        let mut dispatcher = Some(Dispatcher {
            allowed: allowed_tables(&parts.config).into_iter().collect(),
            parts,
            senders,
            key_columns: HashMap::new(),
            panics: HashMap::new(),
            shutdown: shutdown.clone(),
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
            name,
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

/// Changes for one applier, and where to send the results.
struct Job {
    /// Positions of the changes in the dispatcher's batch.
    positions: Vec<usize>,
    changes: Vec<Change>,
    reply: mpsc::Sender<JobResult>,
}

struct JobResult {
    positions: Vec<usize>,
    results: Result<Vec<Result<Applied, PluginError>>, Interrupted>,
}

/// Shutdown came while a batch was still being retried: it is not acknowledged.
#[derive(Debug)]
struct Interrupted;

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
}

impl Applier {
    fn run(&mut self) -> Stop {
        while let Ok(job) = self.jobs.recv() {
            let results = self.apply(&job.changes);
            let _ = job.reply.send(JobResult {
                positions: job.positions,
                results,
            });
        }
        Stop::Done
    }

    /// Applies `changes` until it works, isolating the ones that can never apply.
    fn apply(
        &mut self,
        changes: &[Change],
    ) -> Result<Vec<Result<Applied, PluginError>>, Interrupted> {
        let mut panics = 0;
        loop {
            let error = match self.try_apply(changes) {
                Ok(results) => {
                    self.retry.reset();
                    return Ok(results);
                }
                Err(error) => error,
            };
            match error.kind {
                ErrorKind::Panic => {
                    panics += 1;
                    self.session = None;
                    if panics >= PANIC_LIMIT {
                        return self.isolate(changes, error);
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
                ErrorKind::Permanent | ErrorKind::Config => return self.isolate(changes, error),
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
        error: PluginError,
    ) -> Result<Vec<Result<Applied, PluginError>>, Interrupted> {
        if changes.len() == 1 {
            return Ok(vec![Err(error)]);
        }
        tracing::warn!(
            "database `{}`: a batch of {} changes failed ({error}); applying them one by one",
            self.database.name,
            changes.len()
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
    ) -> Result<Vec<Result<Applied, PluginError>>, PluginError> {
        if self.session.is_none() {
            let session =
                self.database
                    .value
                    .connect()
                    .into_result()
                    .map_err(|e| match e.kind {
                        ErrorKind::Panic => e,
                        // Not being able to connect says nothing about the changes: wait for the
                        // database rather than dead-letter anything.
                        _ => PluginError::transient(format!("cannot connect: {}", e.message)),
                    })?;
            self.session = Some(session);
        }
        let session = self.session.as_mut().expect("connected above");
        let results = session.apply(RSlice::from_slice(changes)).into_result()?;
        if results.len() != changes.len() {
            return Err(PluginError::new(
                ErrorKind::Panic,
                format!(
                    "the database plugin returned {} results for {} changes",
                    results.len(),
                    changes.len()
                ),
            ));
        }
        Ok(results.into_iter().map(|r| r.into_result()).collect())
    }
}

/// What became of one delivery of a batch.
enum Outcome {
    Pending(Change),
    Applied(Applied),
    Failed(PluginError),
}

/// The consumer's side: owns everything that must survive a restart of its worker.
struct Dispatcher {
    parts: PipelineParts,
    allowed: HashSet<String>,
    senders: Vec<mpsc::SyncSender<Job>>,
    key_columns: HashMap<String, Vec<String>>,
    /// Panics seen per message body, so a message that always panics is set aside.
    panics: HashMap<u64, u32>,
    shutdown: Shutdown,
    stats: Arc<PipelineStats>,
}

impl Dispatcher {
    fn run(&mut self) -> Stop {
        let processor = match self.parts.processor.build() {
            Ok(processor) => processor,
            Err(e) => return Stop::Restart(format!("cannot build the processor: {e}")),
        };
        let config = &self.parts.config;
        let options = ConsumeOptions {
            prefetch: config.prefetch.unwrap_or(
                config
                    .batch
                    .max_messages
                    .saturating_mul(2 * config.workers as u32),
            ),
            ack_mode: AckMode::Cumulative,
        };
        let consumer = match self
            .parts
            .transport
            .value
            .consume(RStr::from_str(&config.queue), options)
            .into_result()
        {
            Ok(consumer) => consumer,
            Err(e) => {
                return Stop::Restart(format!(
                    "cannot consume queue `{}` on transport `{}`: {e}",
                    config.queue, self.parts.transport.name
                ))
            }
        };
        tracing::info!(
            "consuming queue `{}` on transport `{}`",
            config.queue,
            self.parts.transport.name
        );
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
                        break Stop::Restart(format!(
                            "receiving from `{}`: {e}",
                            self.parts.config.queue
                        ))
                    }
                    Ok(batch) if !batch.is_empty() => {
                        if let Err(stop) = self.start(&processor, &consumer, batch, &mut in_flight)
                        {
                            break stop;
                        }
                        continue;
                    }
                    Ok(_) => {}
                }
            }
            if let Some(oldest) = in_flight.pop_front() {
                if let Some(stop) = self.finish(&processor, &consumer, oldest) {
                    break stop;
                }
            }
        };
        // Unacknowledged deliveries go back to the broker.
        if let Err(e) = consumer.close().into_result() {
            tracing::warn!("closing the consumer of `{}`: {e}", self.parts.config.queue);
        }
        stop
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
            let idle = busy.as_mut().is_none_or(|oldest| oldest.settled());
            // What has already arrived is taken even when idle: it costs no waiting.
            let slice = if idle || left.is_zero() {
                Duration::ZERO
            } else {
                left.min(FILL_SLICE)
            };
            let more = consumer
                .receive(max - batch.len() as u32, slice.as_millis() as u64)
                .into_result()?;
            let drained = more.is_empty();
            batch.extend(more);
            if slice.is_zero() && drained {
                break;
            }
        }
        Ok(batch)
    }

    /// Processes a batch and hands its changes to the appliers. A batch that must run alone
    /// (see [`Dispatcher::route`]) first lets every batch in flight finish, and so does any
    /// batch after it.
    fn start(
        &mut self,
        processor: &ProcessorBox,
        consumer: &ConsumerBox,
        batch: Vec<Delivery>,
        in_flight: &mut VecDeque<InFlight>,
    ) -> Result<(), Stop> {
        PipelineStats::add(&self.stats.received, batch.len());
        let mut outcomes = Vec::with_capacity(batch.len());
        for delivery in &batch {
            match self.process(processor, delivery) {
                Ok(outcome) => outcomes.push(outcome),
                Err(stop) => {
                    // Finish what is in flight, so that only this batch is redelivered.
                    self.finish_all(processor, consumer, in_flight)?;
                    return Err(stop);
                }
            }
        }
        let (routes, alone) = self.route(&outcomes);
        if alone || in_flight.back().is_some_and(|b| b.alone) {
            self.finish_all(processor, consumer, in_flight)?;
        }
        let (results, jobs) = self.send(&mut outcomes, routes)?;
        in_flight.push_back(InFlight {
            batch,
            outcomes,
            results,
            jobs_left: jobs,
            failed: None,
            alone,
        });
        Ok(())
    }

    fn finish_all(
        &mut self,
        processor: &ProcessorBox,
        consumer: &ConsumerBox,
        in_flight: &mut VecDeque<InFlight>,
    ) -> Result<(), Stop> {
        while let Some(oldest) = in_flight.pop_front() {
            if let Some(stop) = self.finish(processor, consumer, oldest) {
                return Err(stop);
            }
        }
        Ok(())
    }

    /// Waits for a batch's commits, fans it out, dead-letters what cannot apply, and
    /// acknowledges it. `Some` stops the worker.
    fn finish(
        &mut self,
        processor: &ProcessorBox,
        consumer: &ConsumerBox,
        mut in_flight: InFlight,
    ) -> Option<Stop> {
        if let Err(stop) = in_flight.wait() {
            return Some(stop);
        }
        let InFlight {
            batch, outcomes, ..
        } = in_flight;

        // Everything up to the first message that can be neither applied nor set aside is
        // finished below; that message and the rest stay on the broker.
        let mut done = batch.len();
        let mut fatal = None;
        let mut fan_out: Vec<Message> = Vec::new();
        let mut dead: Vec<Message> = Vec::new();
        for (position, (delivery, outcome)) in batch.iter().zip(&outcomes).enumerate() {
            let failure = match outcome {
                Outcome::Applied(applied) if !self.parts.fan_out.is_empty() => {
                    match processor.enrich(&delivery.message, applied).into_result() {
                        Ok(copy) => {
                            fan_out.push(copy);
                            continue;
                        }
                        Err(e) if e.kind == ErrorKind::Panic => {
                            return Some(Stop::Restart(format!("processor {e}")))
                        }
                        Err(e) => PluginError::new(
                            e.kind,
                            format!(
                                "applied, but its fan-out copy could not be made: {}",
                                e.message
                            ),
                        ),
                    }
                }
                Outcome::Applied(_) => continue,
                Outcome::Failed(e) => e.clone(),
                Outcome::Pending(_) => unreachable!("every change was applied"),
            };
            if self.parts.dead_letter.is_some() {
                let message = format!(
                    "dead-lettering message {} of `{}`: {failure}",
                    describe(delivery),
                    self.parts.config.queue
                );
                tracing::warn!("{message}");
                self.stats.error(&message);
                dead.push(self.dead_letter_copy(delivery, &failure));
            } else {
                done = position;
                fatal = Some(format!(
                    "message {} of queue `{}` cannot be applied, and the pipeline has no \
                     `dead_letter` queue to set it aside: {failure}. It stays on the broker, \
                     unacknowledged; fix its cause or configure `dead_letter`, then restart",
                    describe(delivery),
                    self.parts.config.queue
                ));
                break;
            }
        }

        for (transport, queue) in self.parts.fan_out.clone() {
            if let Err(stop) = self.publish(&transport, &queue, &fan_out) {
                return Some(stop);
            }
        }
        if let Some((transport, queue)) = self.parts.dead_letter.clone() {
            if let Err(stop) = self.publish(&transport, &queue, &dead) {
                return Some(stop);
            }
        }
        if done > 0 {
            if let Err(e) = consumer.ack(batch[done - 1].tag, true).into_result() {
                return Some(Stop::Restart(format!(
                    "acknowledging on `{}` failed, so the batch will be redelivered: {e}",
                    self.parts.config.queue
                )));
            }
        }
        self.count(&outcomes[..done], fan_out.len(), dead.len(), done);
        if let Some(fatal) = &fatal {
            self.stats.error(fatal);
        }
        fatal.map(Stop::Fatal)
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

    /// Turns one delivery into a change, or into the reason it has none.
    fn process(&mut self, processor: &ProcessorBox, delivery: &Delivery) -> Result<Outcome, Stop> {
        let mut backoff = Backoff::new(&self.parts.config.retry);
        loop {
            match processor.process(&delivery.message).into_result() {
                Ok(change) => {
                    if !self.panics.is_empty() {
                        self.panics.remove(&body_hash(&delivery.message));
                    }
                    return Ok(self.check_tables(change));
                }
                Err(e) if e.kind == ErrorKind::Transient => {
                    tracing::warn!(
                        "processor: {}; retrying message {}",
                        e.message,
                        describe(delivery)
                    );
                    if self.shutdown.sleep(backoff.next_delay()) {
                        return Err(Stop::Done);
                    }
                }
                Err(e) if e.kind == ErrorKind::Panic => {
                    let seen = self.panics.entry(body_hash(&delivery.message)).or_insert(0);
                    *seen += 1;
                    if *seen >= PANIC_LIMIT {
                        return Ok(Outcome::Failed(e));
                    }
                    return Err(Stop::Restart(format!("processor {e}")));
                }
                Err(e) => return Ok(Outcome::Failed(e)),
            }
        }
    }

    /// A pipeline writes only the tables it is configured for, whatever its processor says.
    fn check_tables(&self, change: Change) -> Outcome {
        if self.allowed.is_empty() {
            return Outcome::Pending(change);
        }
        if let Some(op) = change
            .operations
            .iter()
            .find(|op| !self.allowed.contains(op.table.as_str()))
        {
            let mut allowed: Vec<&str> = self.allowed.iter().map(String::as_str).collect();
            allowed.sort_unstable();
            return Outcome::Failed(PluginError::permanent(format!(
                "table `{}` is not among the tables pipeline `{}` may write ({})",
                op.table,
                self.parts.config.name,
                allowed.join(", ")
            )));
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
            let Outcome::Pending(change) =
                std::mem::replace(&mut outcomes[position], Outcome::Failed(interrupted()))
            else {
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

    /// Waits for the results of `jobs` jobs and puts them in place.
    /// The worker for each pending change: by a hash of its table and key, so that one
    /// row's changes stay in order. When any change's row cannot be told (no key columns,
    /// key missing from the message, several rows), the whole batch goes to one worker and
    /// must run alone (the second value): another worker may hold changes to the same rows.
    fn route(&mut self, outcomes: &[Outcome]) -> (Vec<Option<usize>>, bool) {
        let workers = self.senders.len();
        let mut routes = Vec::with_capacity(outcomes.len());
        let mut serial = workers == 1;
        for outcome in outcomes {
            let Outcome::Pending(change) = outcome else {
                routes.push(None);
                continue;
            };
            if serial {
                routes.push(Some(0));
                continue;
            }
            match self.row_hash(change) {
                Some(hash) => routes.push(Some((hash % workers as u64) as usize)),
                None => {
                    serial = true;
                    routes.push(Some(0));
                }
            }
        }
        if serial {
            for route in routes.iter_mut().flatten() {
                *route = 0;
            }
        }
        (routes, serial && workers > 1)
    }

    fn row_hash(&mut self, change: &Change) -> Option<u64> {
        let mut row = None;
        for op in change.operations.iter() {
            let table = op.table.as_str();
            if !self.key_columns.contains_key(table) {
                let columns = self
                    .parts
                    .database
                    .value
                    .key_columns(RStr::from_str(table))
                    .into_result()
                    .ok()?;
                self.key_columns.insert(
                    table.to_string(),
                    columns.into_iter().map(|c| c.into_string()).collect(),
                );
            }
            let columns = &self.key_columns[table];
            if columns.is_empty() {
                return None;
            }
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            table.hash(&mut hasher);
            for column in columns {
                let value = op
                    .restriction
                    .iter()
                    .chain(op.data.iter())
                    .find(|c| c.name.as_str() == column)?;
                hash_value(&value.value, &mut hasher);
            }
            let hash = hasher.finish();
            if *row.get_or_insert(hash) != hash {
                return None;
            }
        }
        Some(row.unwrap_or(0))
    }

    /// Publishes until the broker confirms, backing off on transient failures.
    fn publish(
        &self,
        transport: &Instance<TransportBox>,
        queue: &str,
        messages: &[Message],
    ) -> Result<(), Stop> {
        if messages.is_empty() {
            return Ok(());
        }
        let mut backoff = Backoff::new(&self.parts.config.retry);
        loop {
            let error = match transport
                .value
                .publish(RStr::from_str(queue), RSlice::from_slice(messages))
                .into_result()
            {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let what = format!(
                "publishing {} messages to `{queue}` on transport `{}`",
                messages.len(),
                transport.name
            );
            match error.kind {
                ErrorKind::Transient => {
                    let message = format!("{what}: {}; retrying", error.message);
                    tracing::warn!("{message}");
                    PipelineStats::add(&self.stats.retries, 1);
                    self.stats.error(&message);
                }
                ErrorKind::Panic => return Err(Stop::Restart(format!("{what}: {error}"))),
                _ => {
                    return Err(Stop::Fatal(format!(
                        "{what}: {error}; the batch stays on the broker, unacknowledged"
                    )))
                }
            }
            if self.shutdown.sleep(backoff.next_delay()) {
                return Err(Stop::Done);
            }
        }
    }

    /// The original message, with headers saying why it was set aside.
    fn dead_letter_copy(&self, delivery: &Delivery, error: &PluginError) -> Message {
        let mut copy = delivery.message.clone();
        let attempts = self
            .panics
            .get(&body_hash(&delivery.message))
            .copied()
            .unwrap_or(0)
            .max(1);
        copy.push_header("x-golconde-error", error.message.as_str());
        copy.push_header("x-golconde-error-kind", error.kind.as_str());
        copy.push_header("x-golconde-pipeline", self.parts.config.name.as_str());
        copy.push_header("x-golconde-source-queue", self.parts.config.queue.as_str());
        copy.push_header("x-golconde-attempts", attempts.to_string());
        copy.push_header(
            "x-golconde-failed-at",
            humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        );
        copy
    }
}

fn interrupted() -> PluginError {
    PluginError::transient("interrupted before it was applied")
}

/// How a delivery is named in messages: its `message-id` if it has one, else its tag.
fn describe(delivery: &Delivery) -> String {
    match delivery.message.header("message-id") {
        Some(id) => format!("`{id}`"),
        None => format!("with delivery tag {}", delivery.tag),
    }
}

fn body_hash(message: &Message) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    message.body.as_slice().hash(&mut hasher);
    hasher.finish()
}

/// Hashes a key value so that values equal as keys hash alike, whatever their
/// representation: `7`, `7.0`, `"7"` and `Numeric("7")` all name the row whose key is 7.
fn hash_value(value: &Value, hasher: &mut impl Hasher) {
    let int = |i: i64, hasher: &mut _| {
        1u8.hash(hasher);
        i.hash(hasher);
    };
    match value {
        Value::Null => 0u8.hash(hasher),
        Value::Bool(b) => b.hash(hasher),
        Value::Int(i) => int(*i, hasher),
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => int(*f as i64, hasher),
        Value::Float(f) => f.to_bits().hash(hasher),
        Value::Numeric(s) | Value::Text(s) | Value::Json(s) => match s.parse::<i64>() {
            Ok(i) => int(i, hasher),
            Err(_) => s.as_str().hash(hasher),
        },
        Value::Bytes(b) => b.as_slice().hash(hasher),
        Value::Array(items) => items.iter().for_each(|v| hash_value(v, hasher)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(v: &Value) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        hash_value(v, &mut h);
        h.finish()
    }

    #[test]
    fn equal_keys_hash_alike_across_representations() {
        assert_eq!(hash(&Value::Int(7)), hash(&Value::Float(7.0)));
        assert_eq!(hash(&Value::Int(7)), hash(&Value::Numeric("7".into())));
        assert_eq!(hash(&Value::Int(7)), hash(&Value::Text("7".into())));
        assert_ne!(hash(&Value::Int(7)), hash(&Value::Int(8)));
        assert_ne!(
            hash(&Value::Text("a".into())),
            hash(&Value::Text("b".into()))
        );
    }
}

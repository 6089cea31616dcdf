//! Consuming a queue: a durable pull consumer, pulled from by a task of the plugin's
//! runtime, with the delivery tags the host sees.
//!
//! **Pulling.** The task sends one pull request at a time (`$JS.API.CONSUMER.MSG.NEXT`,
//! reply to an inbox of its own) for as many messages as there is room for, waits for them
//! or for the request's end (a `408` status after `expires`), and pulls again.
//! **Invariant:** the consumer never holds more than the prefetch in deliveries that are not
//! settled: those waiting for the host (`ready`), those handed over (`held`), those held
//! back during a recovery (`blocked`), those settled but not yet acknowledgeable
//! (`parked`), and what the open pull request may still bring. A delivery beyond that (a server that sent more than asked) is given back at once
//! (`-NAK`).
//!
//! **Keeping deliveries.** Every delivery the consumer holds is kept alive with `+WPI` (work
//! in progress) three times per `ack_wait`, so a slow batch is never redelivered behind the
//! host's back; `ack_wait` only bounds how long after a crash unsettled deliveries come back.
//! JetStream acknowledgements name the message (its reply subject), not the connection, so
//! a delivery held across a reconnection is settled as usual afterwards.
//!
//! **Settling.** With ack policy `explicit` every delivery is acknowledged on its own, in
//! delivery order. With `all`, JetStream takes an acknowledgement as covering every message
//! of a lower stream sequence, so the consumer acknowledges the highest settled delivery
//! below every unsettled one it holds, and parks the others until that changes: an
//! acknowledgement never covers a message the host has not settled.
//!
//! **Recovery.** Deliveries that JetStream counts as pending but that no live consumer
//! holds (a crashed consumer's, or messages lost in flight when a connection dropped) come
//! back only after `ack_wait`; meanwhile JetStream would hand over newer messages, which
//! breaks the queue's order and, with ack policy `all`, would acknowledge the lost ones
//! unseen. So when a consumer starts, or reconnects, and JetStream counts more pending
//! deliveries than it holds (and no other client pulls from the consumer: then they are
//! that client's), it recovers first. Newer messages (stream sequence above the last one
//! delivered before) that come before the missing ones are held back, unseen by the host,
//! and pulling stops until `ack_wait` (and a second) has passed. Then one last pull: JetStream
//! serves its due redeliveries first, so the missing ones come, and the held-back ones
//! follow them; if that pull brings anything else, or nothing, the missing ones are given
//! up with a warning (deleted, or over `max_deliver`). Were the held-back ones to leave no
//! room for that pull, they are given back (`-NAK`), to come after the missing ones.
//! Deliveries that a closed consumer gave back are redelivered at once, so a restart
//! costs no wait.
//!
//! **Unreadable headers.** After a reconnection the consumer also looks for a stored
//! message the client could not parse, which would otherwise drop the connection each time
//! it is delivered (see [`crate::poison`]).
//!
//! **Tags.** The consumer's own counter, assigned when a delivery is handed to the host:
//! increasing in delivery order, never reused.
//!
//! May depend on: async-nats, tokio, `golconde-plugin-api`, [`crate::jetstream`],
//! [`crate::message`].

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use async_nats::{jetstream::AckKind, Client, Event, StatusCode, Subject, Subscriber};
use futures_util::{FutureExt, StreamExt};
use golconde_plugin_api::{
    Consumer, Delivery, Header, Message, PluginError, RVec, TRANSPORT_ERROR_HEADER,
};
use tokio::{
    sync::{mpsc, oneshot, Notify},
    task::JoinHandle,
    time::{sleep_until, Instant},
};
use tracing::instrument::WithSubscriber;

use crate::{
    error::NatsError,
    jetstream::{consumer_info, AckPolicy, ConsumerState},
    message::delivered_headers,
    poison::{reply_subject, salvage, stored_from, unreadable},
    Runtime,
};

/// How long one pull request waits for messages on the server.
const PULL_EXPIRES: Duration = Duration::from_secs(10);
/// How long past its expiry a pull request without an answer is taken for lost.
const PULL_GRACE: Duration = Duration::from_secs(2);
/// How long closing waits at most for what an open pull request is bringing, and how
/// often it asks JetStream meanwhile whether anything is still on its way.
const CLOSE_DRAIN: Duration = Duration::from_secs(2);
const CLOSE_DRAIN_STEP: Duration = Duration::from_millis(50);
/// How often a paused recovery asks JetStream how many deliveries are still pending: an
/// acknowledgement the earlier consumer sent just before it closed may reach JetStream
/// after this consumer counted it as missing, and then nothing is missing any more.
const RECOVERY_RECHECK: Duration = Duration::from_millis(250);
/// How long past `ack_wait` a recovery waits for the missing deliveries: JetStream checks
/// its pending deliveries on a timer, not the moment they expire.
const RECOVERY_MARGIN: Duration = Duration::from_secs(1);
/// How long the last pull of an overdue recovery waits: the missing deliveries, if they
/// come at all, are due and come at once.
const LAST_PULL: Duration = Duration::from_secs(1);

/// A delivery from the server that the host has not taken yet.
struct Incoming {
    sseq: u64,
    reply: Subject,
    redelivered: bool,
    message: Message,
}

/// A delivery handed to the host (or settled and parked), by tag.
struct Held {
    tag: u64,
    sseq: u64,
    reply: Subject,
}

/// A recovery in progress; see the module documentation.
struct Recovery {
    /// The last stream sequence delivered before: missing deliveries are at or below it.
    last_delivered: u64,
    /// How many are still missing.
    missing: u64,
    /// When they must have come back.
    until: Instant,
    /// Newer messages came first: pull nothing more until `until`.
    paused: bool,
    /// `until` has passed: one last pull may still bring the missing ones, JetStream
    /// serving its due redeliveries first; if it brings anything else, or nothing, they
    /// are given up.
    overdue: bool,
}

impl Recovery {
    fn new(last_delivered: u64, missing: u64, ack_wait: Duration) -> Recovery {
        Recovery {
            last_delivered,
            missing,
            until: Instant::now() + ack_wait + RECOVERY_MARGIN,
            paused: false,
            overdue: false,
        }
    }
}

/// What the host's threads and the task share.
struct State {
    next_tag: u64,
    ready: VecDeque<Incoming>,
    held: VecDeque<Held>,
    /// Settled by the host under ack policy `all`, not yet acknowledgeable (an unsettled
    /// delivery of a lower stream sequence is still held).
    parked: Vec<Held>,
    /// Newer messages held back during a recovery.
    blocked: VecDeque<Incoming>,
    recovery: Option<Recovery>,
    /// Why the consumer cannot go on (its consumer was deleted): `receive` reports it.
    failure: Option<NatsError>,
    closed: bool,
}

impl State {
    /// Deliveries the consumer holds and JetStream counts as pending.
    fn holding(&self) -> usize {
        self.ready.len() + self.held.len() + self.parked.len() + self.blocked.len()
    }

    /// Every reply subject the consumer holds, oldest delivery first.
    fn replies(&self) -> impl Iterator<Item = &Subject> {
        let mut settled: Vec<&Held> = self.held.iter().chain(self.parked.iter()).collect();
        settled.sort_unstable_by_key(|h| h.tag);
        settled
            .into_iter()
            .map(|h| &h.reply)
            .chain(self.ready.iter().map(|i| &i.reply))
            .chain(self.blocked.iter().map(|i| &i.reply))
    }

    /// A delivery of a message the consumer holds already (redelivered while the
    /// connection was down): its newest reply subject replaces the old one.
    fn refresh(&mut self, sseq: u64, reply: &Subject) -> bool {
        for held in self.held.iter_mut().chain(self.parked.iter_mut()) {
            if held.sseq == sseq {
                held.reply = reply.clone();
                return true;
            }
        }
        for incoming in self.ready.iter_mut().chain(self.blocked.iter_mut()) {
            if incoming.sseq == sseq {
                incoming.reply = reply.clone();
                return true;
            }
        }
        false
    }

    /// Whether the consumer holds stream message `sseq`.
    fn holds(&self, sseq: u64) -> bool {
        self.held
            .iter()
            .chain(self.parked.iter())
            .any(|h| h.sseq == sseq)
            || self
                .ready
                .iter()
                .chain(self.blocked.iter())
                .any(|i| i.sseq == sseq)
    }

    /// The smallest stream sequence the consumer holds unsettled.
    fn lowest_unsettled(&self) -> u64 {
        self.held
            .iter()
            .map(|h| h.sseq)
            .chain(self.ready.iter().map(|i| i.sseq))
            .chain(self.blocked.iter().map(|i| i.sseq))
            .min()
            .unwrap_or(u64::MAX)
    }
}

/// What the consumer's task is asked to do.
enum Command {
    /// Publish these acknowledgements, in order.
    Settle(Vec<(Subject, AckKind)>),
    /// Give back what is held and stop; answer when done.
    Close(oneshot::Sender<Result<(), NatsError>>),
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when deliveries are ready (or the consumer fails).
    arrived: Notify,
    policy: AckPolicy,
    /// "`q` (consumer `c` of stream `S`) on nats://..." for messages.
    place: String,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The delivery count, stream sequence, consumer sequence and the time the message was
/// stored (nanoseconds since 1970) in a JetStream reply subject:
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`,
/// or with domain and account hash after `$JS.ACK.` (11 tokens or more).
fn parse_reply(reply: &str) -> Option<(u64, u64, u64, u64)> {
    let rest = reply.strip_prefix("$JS.ACK.")?;
    // Counted first, then read: no allocation per delivery.
    let at = match rest.split('.').count() {
        7 => 2,
        n if n >= 9 => 4,
        _ => return None,
    };
    let mut tokens = rest.split('.').skip(at);
    Some((
        tokens.next()?.parse().ok()?,
        tokens.next()?.parse().ok()?,
        tokens.next()?.parse().ok()?,
        tokens.next()?.parse().ok()?,
    ))
}

/// A delivery's headers, with `timestamp` (the AMQP property's meaning: seconds since
/// 1970) set to when JetStream stored the message unless it carries one: the host measures
/// a message's age from it.
fn with_stored_time(mut headers: RVec<Header>, stored_ns: u64) -> RVec<Header> {
    if stored_ns > 0 && !headers.iter().any(|h| h.name.as_str() == "timestamp") {
        headers.push(Header {
            name: "timestamp".into(),
            value: (stored_ns / 1_000_000_000).to_string().into(),
        });
    }
    headers
}

/// What the consumer knows of its durable consumer, for the task.
pub struct Opened {
    pub client: Client,
    pub js: async_nats::jetstream::Context,
    pub events: mpsc::UnboundedReceiver<Event>,
    pub state: ConsumerState,
    pub subject: String,
    pub prefetch: u32,
    pub place: String,
    pub close_limit: Duration,
}

/// The open pull request.
struct Pull {
    remaining: usize,
    deadline: Instant,
}

/// The task that pulls, keeps deliveries alive and settles them.
struct Puller {
    client: Client,
    js: async_nats::jetstream::Context,
    events: mpsc::UnboundedReceiver<Event>,
    commands: mpsc::UnboundedReceiver<Command>,
    shared: Arc<Shared>,
    subscription: Subscriber,
    inbox: Subject,
    next_subject: String,
    /// The queue's subject.
    subject: String,
    stream: String,
    name: String,
    /// The highest stream sequence and the last consumer sequence read from the server.
    last_seen: u64,
    last_delivery: u64,
    prefetch: usize,
    max_batch: usize,
    expires: Duration,
    ack_wait: Duration,
    connected: bool,
    pull: Option<Pull>,
    keepalive_at: Instant,
}

impl Puller {
    async fn run(mut self) {
        loop {
            let pull_deadline = self.pull.as_ref().map(|p| p.deadline);
            let (recovery_until, recheck) = {
                let state = lock(&self.shared.state);
                let waiting = state.recovery.as_ref().filter(|r| !r.overdue);
                (waiting.map(|r| r.until), waiting.is_some_and(|r| r.paused))
            };
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                biased;
                command = self.commands.recv() => match command {
                    Some(Command::Settle(list)) => self.send(list).await,
                    Some(Command::Close(done)) => {
                        let result = self.close().await;
                        let _ = done.send(result);
                        return;
                    }
                    // Dropped without `close`: like a crash, what is held comes back
                    // after `ack_wait`.
                    None => return,
                },
                Some(event) = self.events.recv() => self.on_event(event).await,
                message = self.subscription.next() => match message {
                    Some(message) => {
                        let mut batch = vec![message];
                        while let Some(Some(more)) = self.subscription.next().now_or_never() {
                            batch.push(more);
                        }
                        self.on_messages(batch).await;
                    }
                    None => self.fail(NatsError::Unavailable(
                        "the connection's subscription ended".into(),
                    )),
                },
                _ = sleep_until(self.keepalive_at) => self.keepalive().await,
                _ = sleep_until(pull_deadline.unwrap_or(far)), if pull_deadline.is_some() => {
                    self.pull_ended();
                }
                _ = sleep_until(recovery_until.unwrap_or(far)), if recovery_until.is_some() => {
                    self.recovery_overdue().await;
                }
                _ = tokio::time::sleep(RECOVERY_RECHECK), if recheck => {
                    self.recheck_recovery().await;
                }
            }
            self.maybe_pull().await;
        }
    }

    async fn send(&self, list: Vec<(Subject, AckKind)>) {
        for (subject, kind) in list {
            // Queued on the connection; a message whose acknowledgement is lost with it
            // comes back, which the host allows for.
            if let Err(e) = self.client.publish(subject, kind.into()).await {
                tracing::debug!(
                    "consumer of {}: acknowledgement not sent: {e}",
                    self.shared.place
                );
            }
        }
    }

    fn fail(&self, failure: NatsError) {
        lock(&self.shared.state).failure = Some(failure);
        self.shared.arrived.notify_one();
    }

    async fn on_event(&mut self, event: Event) {
        let shared = self.shared.clone();
        let place = &shared.place;
        match event {
            Event::Disconnected => {
                if self.connected {
                    tracing::warn!(
                        "consumer of {place}: the connection is lost; reconnecting (deliveries \
                         held stay valid)"
                    );
                }
                self.connected = false;
                self.pull = None;
            }
            Event::Connected if !self.connected => {
                tracing::info!("consumer of {place}: reconnected");
                self.connected = true;
                if let Err(e) = self.resynchronise().await {
                    tracing::warn!("consumer of {place}: after reconnecting: {e}");
                    self.fail(e);
                }
            }
            Event::Connected => {}
            Event::ClientError(e) => {
                tracing::warn!("consumer of {place}: {e}");
            }
            Event::ServerError(e) => tracing::warn!("consumer of {place}: the server says: {e}"),
            Event::SlowConsumer(_) => tracing::warn!(
                "consumer of {place}: the connection dropped messages (slow consumer); they \
                 come back after `ack_wait`"
            ),
            other => tracing::debug!("consumer of {place}: {other}"),
        }
    }

    /// After a reconnection: a fresh inbox (a pull request of the lost connection must not
    /// deliver into the new one uncounted), and a recovery if JetStream counts pending
    /// deliveries the consumer does not hold (lost on the way).
    async fn resynchronise(&mut self) -> Result<(), NatsError> {
        let inbox = Subject::from(self.client.new_inbox());
        let subscription = self.client.subscribe(inbox.clone()).await.map_err(|e| {
            NatsError::Unavailable(format!("cannot subscribe to the consumer's inbox: {e}"))
        })?;
        let old = std::mem::replace(&mut self.subscription, subscription);
        drop(old);
        self.inbox = inbox;
        // Acknowledgements queued while the connection was down go first.
        let _ = self.client.flush().await;
        let state = consumer_info(&self.js, &self.stream, &self.name)
            .await?
            .ok_or_else(|| {
                NatsError::Unavailable(format!(
                    "consumer `{}` of stream `{}` no longer exists",
                    self.name, self.stream
                ))
            })?;
        if let Some(poison) = self.screen(&state).await {
            let mut shared = lock(&self.shared.state);
            self.admit(&mut shared, poison);
            drop(shared);
            self.shared.arrived.notify_one();
        }
        let mut shared = lock(&self.shared.state);
        let holding = shared.holding() as u64;
        let missing = state.num_ack_pending.saturating_sub(holding);
        if missing > 0 && state.num_waiting == 0 && shared.recovery.is_none() {
            tracing::info!(
                "consumer of {}: {missing} deliveries were lost with the connection; they come \
                 back within `ack_wait` ({} ms), before anything newer",
                self.shared.place,
                self.ack_wait.as_millis()
            );
            shared.recovery = Some(Recovery::new(
                state.delivered_stream_seq,
                missing,
                self.ack_wait,
            ));
        }
        Ok(())
    }

    /// Looks for a stored message the client cannot read among those that may have been on
    /// their way when the connection dropped (see [`crate::poison`]): the first after the
    /// last one read, then the first few after the acknowledgement floor that the consumer
    /// does not hold (a redelivery). Answers it as a delivery, marked.
    async fn screen(&mut self, state: &ConsumerState) -> Option<Incoming> {
        const REDELIVERIES_LOOKED_AT: usize = 16;
        // Messages the consumer holds are skipped, but cost a request each: bounded too.
        // What is not looked at now is the next time, the floor having moved on.
        const REQUESTS: usize = 64;
        let mut from = [self.last_seen + 1, state.ack_floor_stream_seq + 1];
        let (mut looked, mut requests) = (0, 0);
        for (round, start) in from.iter_mut().enumerate() {
            while looked < 1 + REDELIVERIES_LOOKED_AT && requests < REQUESTS {
                requests += 1;
                let stored = match stored_from(&self.js, &self.stream, &self.subject, *start).await
                {
                    Ok(Some(stored)) => stored,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!("consumer of {}: {e}", self.shared.place);
                        return None;
                    }
                };
                *start = stored.seq + 1;
                if lock(&self.shared.state).holds(stored.seq) {
                    continue;
                }
                looked += 1;
                if let Some(why) = stored.headers.as_deref().and_then(unreadable) {
                    // The delivery after the last one read; never past the server's last
                    // (an acknowledgement naming a later one would hide earlier ones from
                    // a cumulative acknowledgement).
                    self.last_delivery =
                        (self.last_delivery + 1).min(state.delivered_consumer_seq.max(1));
                    self.last_seen = self.last_seen.max(stored.seq);
                    tracing::warn!(
                        "consumer of {}: message {} of stream `{}` has headers the NATS client \
                         cannot read ({why}), which made the connection drop when it was \
                         delivered; it is handed over marked `{TRANSPORT_ERROR_HEADER}`, to be \
                         set aside",
                        self.shared.place,
                        stored.seq,
                        self.stream
                    );
                    return Some(Incoming {
                        sseq: stored.seq,
                        reply: Subject::from(reply_subject(
                            &self.stream,
                            &self.name,
                            stored.seq,
                            self.last_delivery,
                        )),
                        redelivered: true,
                        message: salvage(
                            stored.headers.as_deref().unwrap_or_default(),
                            stored.body,
                            &why,
                        ),
                    });
                }
                // A new message is looked at once; redeliveries, a few.
                if round == 0 {
                    break;
                }
            }
        }
        None
    }

    async fn on_messages(&mut self, batch: Vec<async_nats::Message>) {
        let mut give_back = Vec::new();
        let mut arrived = false;
        {
            let mut state = lock(&self.shared.state);
            for message in batch {
                // A delivery has JetStream's reply subject, whatever its header line says (a
                // producer may store one that looks like a status); the server's statuses
                // about the pull request have none.
                let parsed = message
                    .reply
                    .as_ref()
                    .and_then(|r| parse_reply(r.as_str()).map(|p| (r.clone(), p)));
                let Some((reply, (delivered, sseq, delivery, stored_ns))) = parsed else {
                    if let Some(status) = message.status.filter(|s| *s != StatusCode::OK) {
                        drop(state);
                        self.on_status(status, message.description.as_deref());
                        state = lock(&self.shared.state);
                    } else {
                        tracing::debug!(
                            "consumer of {}: a message that is not a JetStream delivery on the \
                             inbox; ignored",
                            self.shared.place
                        );
                    }
                    continue;
                };
                self.last_seen = self.last_seen.max(sseq);
                self.last_delivery = self.last_delivery.max(delivery);
                if let Some(pull) = &mut self.pull {
                    pull.remaining = pull.remaining.saturating_sub(1);
                    if pull.remaining == 0 {
                        // Fulfilled: nothing else ends it.
                        self.pull = None;
                    }
                }
                if delivered > 1 && state.refresh(sseq, &reply) {
                    continue;
                }
                if state.closed || state.holding() >= self.prefetch {
                    give_back.push((reply, AckKind::Nak(None)));
                    continue;
                }
                let incoming = Incoming {
                    sseq,
                    reply,
                    redelivered: delivered > 1,
                    message: Message {
                        body: RVec::from(message.payload.to_vec()),
                        headers: with_stored_time(
                            delivered_headers(message.headers.as_ref()),
                            stored_ns,
                        ),
                    },
                };
                arrived |= self.admit(&mut state, incoming);
            }
        }
        if arrived {
            self.shared.arrived.notify_one();
        }
        if !give_back.is_empty() {
            self.send(give_back).await;
        }
    }

    /// Places one delivery: ready for the host, or held back by a recovery. Answers whether
    /// anything became ready.
    fn admit(&self, state: &mut State, incoming: Incoming) -> bool {
        let Some(recovery) = &mut state.recovery else {
            state.ready.push_back(incoming);
            return true;
        };
        if incoming.sseq <= recovery.last_delivered {
            recovery.missing = recovery.missing.saturating_sub(1);
            let done = recovery.missing == 0;
            state.ready.push_back(incoming);
            if done {
                tracing::info!(
                    "consumer of {}: the pending deliveries are back; consuming on",
                    self.shared.place
                );
                self.end_recovery(state);
            }
        } else if recovery.overdue {
            // JetStream serves due redeliveries first: the missing ones are not coming.
            self.give_up(state);
            state.ready.push_back(incoming);
        } else {
            recovery.paused = true;
            state.blocked.push_back(incoming);
            return false;
        }
        true
    }

    /// Ends the recovery: what was held back follows what came back.
    fn end_recovery(&self, state: &mut State) {
        state.recovery = None;
        let blocked = std::mem::take(&mut state.blocked);
        state.ready.extend(blocked);
    }

    fn give_up(&self, state: &mut State) {
        if let Some(recovery) = &state.recovery {
            tracing::warn!(
                "consumer of {}: {} pending deliveries of an earlier consumer did not come back \
                 within `ack_wait` ({} ms); consuming on (they were deleted, exceeded \
                 `max_deliver`, or another process running this pipeline holds them)",
                self.shared.place,
                recovery.missing,
                self.ack_wait.as_millis()
            );
        }
        self.end_recovery(state);
    }

    /// The open pull request ended without being fulfilled (expired, refused, lost).
    fn pull_ended(&mut self) {
        self.pull = None;
        let mut state = lock(&self.shared.state);
        if state.recovery.as_ref().is_some_and(|r| r.overdue) {
            // The last pull brought nothing more: the missing ones are not coming.
            self.give_up(&mut state);
            drop(state);
            self.shared.arrived.notify_one();
        }
    }

    fn on_status(&mut self, status: StatusCode, description: Option<&str>) {
        let description = description.unwrap_or("");
        let place = &self.shared.place;
        match status {
            StatusCode::IDLE_HEARTBEAT => {}
            StatusCode::TIMEOUT | StatusCode::NOT_FOUND => self.pull_ended(),
            StatusCode::NO_RESPONDERS => {
                self.pull = None;
                self.fail(NatsError::Unavailable(format!(
                    "nothing answered the pull request: consumer `{}` of stream `{}` is gone",
                    self.name, self.stream
                )));
            }
            _ if description.contains("Consumer Deleted") => {
                self.pull = None;
                self.fail(NatsError::Unavailable(format!(
                    "consumer `{}` of stream `{}` was deleted",
                    self.name, self.stream
                )));
            }
            _ if description.contains("Exceeded MaxRequestBatch") => {
                self.pull = None;
                let limit = description
                    .rsplit(' ')
                    .next()
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(1);
                self.max_batch = limit.max(1);
            }
            _ if description.contains("Exceeded MaxRequestExpires") => {
                self.pull = None;
                self.expires = (self.expires / 2).max(Duration::from_millis(100));
            }
            _ => {
                tracing::debug!(
                    "consumer of {place}: pull request ended with {status} {description}"
                );
                self.pull_ended();
            }
        }
    }

    async fn maybe_pull(&mut self) {
        if !self.connected || self.pull.is_some() {
            return;
        }
        let (batch, expires) = {
            let state = lock(&self.shared.state);
            if state.closed || state.failure.is_some() {
                return;
            }
            let room = self.prefetch.saturating_sub(state.holding());
            let mut batch = room;
            if self.max_batch > 0 {
                batch = batch.min(self.max_batch);
            }
            let mut expires = self.expires;
            if let Some(recovery) = &state.recovery {
                if recovery.paused {
                    return;
                }
                batch = batch.min(usize::try_from(recovery.missing).unwrap_or(usize::MAX));
                if recovery.overdue {
                    expires = expires.min(LAST_PULL);
                }
            }
            (batch, expires)
        };
        if batch == 0 {
            return;
        }
        let request = format!("{{\"batch\":{batch},\"expires\":{}}}", expires.as_nanos());
        match self
            .client
            .publish_with_reply(
                self.next_subject.clone(),
                self.inbox.clone(),
                request.into(),
            )
            .await
        {
            Ok(()) => {
                self.pull = Some(Pull {
                    remaining: batch,
                    deadline: Instant::now() + expires + PULL_GRACE,
                });
            }
            Err(e) => tracing::debug!("consumer of {}: pull not sent: {e}", self.shared.place),
        }
    }

    /// `+WPI` for everything held, so JetStream redelivers none of it.
    async fn keepalive(&mut self) {
        self.keepalive_at = Instant::now() + self.ack_wait / 3;
        if !self.connected {
            return;
        }
        let replies: Vec<Subject> = lock(&self.shared.state).replies().cloned().collect();
        for reply in replies {
            let _ = self.client.publish(reply, AckKind::Progress.into()).await;
        }
    }

    /// Asks JetStream how many deliveries are pending: those beyond what this consumer
    /// holds are all that can still be missing. Fewer than the recovery counts means some
    /// were acknowledged by their consumer meanwhile; none means the recovery is over.
    async fn recheck_recovery(&mut self) {
        let Ok(Some(info)) = consumer_info(&self.js, &self.stream, &self.name).await else {
            return;
        };
        let mut state = lock(&self.shared.state);
        let others = info.num_ack_pending.saturating_sub(state.holding() as u64);
        let Some(recovery) = &mut state.recovery else {
            return;
        };
        if others >= recovery.missing {
            return;
        }
        recovery.missing = others;
        if others == 0 {
            tracing::info!(
                "consumer of {}: the pending deliveries were acknowledged by their consumer; \
                 consuming on",
                self.shared.place
            );
            self.end_recovery(&mut state);
            drop(state);
            self.shared.arrived.notify_one();
        }
    }

    /// `ack_wait` has passed: the missing deliveries are due, and the next pull brings them
    /// if they come at all. If what was held back leaves no room for that pull, it goes
    /// back to JetStream (`-NAK`), behind the due ones.
    async fn recovery_overdue(&mut self) {
        let naks: Vec<(Subject, AckKind)> = {
            let mut state = lock(&self.shared.state);
            let full = state.holding() >= self.prefetch;
            let Some(recovery) = &mut state.recovery else {
                return;
            };
            recovery.overdue = true;
            recovery.paused = false;
            if !full || state.blocked.is_empty() {
                return;
            }
            state
                .blocked
                .drain(..)
                .map(|incoming| (incoming.reply, AckKind::Nak(None)))
                .collect()
        };
        self.send(naks).await;
    }

    /// Gives back (`-NAK`, in delivery order) every delivery not acknowledged, so the next
    /// consumer gets them at once, and makes sure the server has read that before
    /// returning.
    ///
    /// An open pull request is dealt with first. What it brought is read (after a round
    /// trip, by which the server has served it) and given back last; then the inbox is
    /// unsubscribed and the server made to forget the request (reading the consumer's state
    /// has it drop requests nobody listens to). Otherwise the request would take the first
    /// given-back message straight back, or, unanswered, have JetStream put it behind the
    /// others; and what it brought unread would come back only after `ack_wait`.
    async fn close(&mut self) -> Result<(), NatsError> {
        lock(&self.shared.state).closed = true;
        self.shared.arrived.notify_one();
        let mut late = Vec::new();
        let open_pull = self.pull.take();
        if let Some(pull) = &open_pull {
            // What the open pull request brings must be seen and given back: a delivery to
            // an inbox no longer listened to would come back only after `ack_wait`, and
            // hold up the next consumer until then. While JetStream has delivered past what
            // arrived, or has messages the request will bring, they are waited for (a
            // while at most: another process pulling from the same consumer may take them).
            let mut remaining = pull.remaining;
            let mut seen = self.last_delivery;
            let until = Instant::now() + CLOSE_DRAIN;
            let _ = self.client.flush().await;
            'drain: while remaining > 0 && Instant::now() < until {
                let Ok(Some(info)) = consumer_info(&self.js, &self.stream, &self.name).await else {
                    break;
                };
                if info.delivered_consumer_seq <= seen && info.num_pending == 0 {
                    break;
                }
                let wait = (Instant::now() + CLOSE_DRAIN_STEP).min(until);
                while let Ok(Some(message)) =
                    tokio::time::timeout_at(wait, self.subscription.next()).await
                {
                    let delivery = message.reply.and_then(|r| {
                        let (_, _, delivery, _) = parse_reply(r.as_str())?;
                        Some((r, delivery))
                    });
                    match delivery {
                        Some((reply, delivery)) => {
                            remaining -= 1;
                            seen = seen.max(delivery);
                            late.push((reply, AckKind::Nak(None)));
                            if remaining == 0 {
                                break 'drain;
                            }
                        }
                        // A status: the request ended.
                        None if message.status.is_some_and(|s| s != StatusCode::OK) => break 'drain,
                        None => {}
                    }
                }
            }
        }
        let open_pull = open_pull.is_some();
        let _ = self.subscription.unsubscribe().await;
        if open_pull {
            let _ = self.client.flush().await;
            // Best effort: without it the first given-back message may only come later.
            let _ = consumer_info(&self.js, &self.stream, &self.name).await;
        }
        let mut naks: Vec<(Subject, AckKind)> = {
            let mut state = lock(&self.shared.state);
            let naks = state
                .replies()
                .map(|reply| (reply.clone(), AckKind::Nak(None)))
                .collect();
            state.ready.clear();
            state.held.clear();
            state.parked.clear();
            state.blocked.clear();
            state.recovery = None;
            naks
        };
        naks.extend(late);
        self.send(naks).await;
        self.client
            .flush()
            .await
            .map_err(|e| NatsError::Unavailable(format!("flushing the connection: {e}")))?;
        // A request on the same connection: once it is answered, the server has read every
        // NAK and the unsubscription before it.
        consumer_info(&self.js, &self.stream, &self.name).await?;
        Ok(())
    }
}

/// A subscription to one queue; see the module documentation.
pub struct NatsConsumer {
    runtime: Arc<Runtime>,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
    task: Mutex<Option<JoinHandle<()>>>,
    close_limit: Duration,
}

impl NatsConsumer {
    /// Starts the task of a consumer whose connection and durable consumer are ready.
    pub(crate) async fn start(
        runtime: Arc<Runtime>,
        opened: Opened,
    ) -> Result<NatsConsumer, NatsError> {
        let Opened {
            client,
            js,
            events,
            state,
            subject,
            prefetch,
            place,
            close_limit,
        } = opened;
        let inbox = Subject::from(client.new_inbox());
        let subscription = client.subscribe(inbox.clone()).await.map_err(|e| {
            NatsError::Unavailable(format!("cannot subscribe to the consumer's inbox: {e}"))
        })?;
        // Pending deliveries while another client pulls are that client's (the pipeline
        // runs in several processes), not lost ones.
        let recovery = (state.num_ack_pending > 0 && state.num_waiting == 0).then(|| {
            tracing::info!(
                "consumer of {place}: JetStream holds {} unacknowledged deliveries of an earlier \
                 consumer; they are delivered first (given back ones at once, those of a crashed \
                 consumer within `ack_wait`, {} ms)",
                state.num_ack_pending,
                state.ack_wait.as_millis()
            );
            Recovery::new(
                state.delivered_stream_seq,
                state.num_ack_pending,
                state.ack_wait,
            )
        });
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next_tag: 1,
                ready: VecDeque::new(),
                held: VecDeque::new(),
                parked: Vec::new(),
                blocked: VecDeque::new(),
                recovery,
                failure: None,
                closed: false,
            }),
            arrived: Notify::new(),
            policy: state.ack_policy,
            place,
        });
        let ack_wait = if state.ack_wait.is_zero() {
            Duration::from_secs(30)
        } else {
            state.ack_wait
        };
        let mut expires = PULL_EXPIRES;
        if !state.max_expires.is_zero() {
            expires = expires.min(state.max_expires);
        }
        let (commands, receiver) = mpsc::unbounded_channel();
        let puller = Puller {
            next_subject: format!("$JS.API.CONSUMER.MSG.NEXT.{}.{}", state.stream, state.name),
            subject: subject.clone(),
            last_seen: state.delivered_stream_seq,
            last_delivery: state.delivered_consumer_seq,
            stream: state.stream,
            name: state.name,
            client,
            js,
            events,
            commands: receiver,
            shared: shared.clone(),
            subscription,
            inbox,
            prefetch: prefetch as usize,
            max_batch: state.max_batch,
            expires,
            ack_wait,
            connected: true,
            pull: None,
            keepalive_at: Instant::now() + ack_wait / 3,
        };
        tracing::debug!("consuming `{subject}` as {}", shared.place);
        let task = runtime.spawn(puller.run().with_current_subscriber());
        Ok(NatsConsumer {
            runtime,
            shared,
            commands,
            task: Mutex::new(Some(task)),
            close_limit,
        })
    }

    /// How many deliveries wait for the host or are held back, never more than the
    /// prefetch.
    pub fn waiting(&self) -> usize {
        let state = lock(&self.shared.state);
        state.ready.len() + state.blocked.len()
    }

    fn closed(&self) -> PluginError {
        PluginError::transient(format!(
            "the consumer of {} is closed; open a new one",
            self.shared.place
        ))
    }

    fn settle(&self, tag: u64, multiple: bool, verdict: Verdict) -> Result<(), PluginError> {
        let list = {
            let mut state = lock(&self.shared.state);
            if state.closed {
                return Err(self.closed());
            }
            if tag == 0 || tag >= state.next_tag {
                return Err(PluginError::permanent(format!(
                    "delivery tag {tag} was never handed out by the consumer of {}",
                    self.shared.place
                )));
            }
            let at = state.held.partition_point(|h| h.tag < tag);
            let found = state.held.get(at).is_some_and(|h| h.tag == tag);
            let settled: Vec<Held> = if multiple {
                let end = if found { at + 1 } else { at };
                state.held.drain(..end).collect()
            } else {
                if !found {
                    return Err(PluginError::permanent(format!(
                        "delivery tag {tag} of {} was already settled",
                        self.shared.place
                    )));
                }
                state.held.remove(at).into_iter().collect()
            };
            if settled.is_empty() {
                return Ok(());
            }
            match (verdict, self.shared.policy) {
                (Verdict::Nack { requeue: true }, _) => settled
                    .into_iter()
                    .map(|h| (h.reply, AckKind::Nak(None)))
                    .collect(),
                (Verdict::Nack { requeue: false }, AckPolicy::Explicit) => settled
                    .into_iter()
                    .map(|h| (h.reply, AckKind::Term))
                    .collect(),
                (Verdict::Ack, AckPolicy::Explicit) => settled
                    .into_iter()
                    .map(|h| (h.reply, AckKind::Ack))
                    .collect(),
                // Under ack policy `all` a termination is an acknowledgement too, and
                // covers every lower sequence: both go through the parked list.
                (_, AckPolicy::All) => {
                    state.parked.extend(settled);
                    cumulative(&mut state)
                }
            }
        };
        if list.is_empty() {
            return Ok(());
        }
        self.commands
            .send(Command::Settle(list))
            .map_err(|_| self.closed())
    }
}

/// Under ack policy `all`: the one acknowledgement that covers as many parked deliveries
/// as possible without covering an unsettled one, and the parked deliveries it covers
/// removed.
fn cumulative(state: &mut State) -> Vec<(Subject, AckKind)> {
    let floor = state.lowest_unsettled();
    let Some(top) = state
        .parked
        .iter()
        .filter(|h| h.sseq < floor)
        .max_by_key(|h| h.sseq)
        .map(|h| (h.sseq, h.reply.clone()))
    else {
        return Vec::new();
    };
    state.parked.retain(|h| h.sseq > top.0);
    vec![(top.1, AckKind::Ack)]
}

#[derive(Clone, Copy)]
enum Verdict {
    Ack,
    Nack { requeue: bool },
}

impl Consumer for NatsConsumer {
    fn receive(&self, max: usize, timeout: Duration) -> Result<Vec<Delivery>, PluginError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut state = lock(&self.shared.state);
                if !state.ready.is_empty() {
                    let n = max.min(state.ready.len());
                    let mut out = Vec::with_capacity(n);
                    for _ in 0..n {
                        let Some(incoming) = state.ready.pop_front() else {
                            break;
                        };
                        let tag = state.next_tag;
                        state.next_tag += 1;
                        state.held.push_back(Held {
                            tag,
                            sseq: incoming.sseq,
                            reply: incoming.reply,
                        });
                        out.push(Delivery {
                            tag,
                            redelivered: incoming.redelivered,
                            message: incoming.message,
                        });
                    }
                    return Ok(out);
                }
                if let Some(failure) = &state.failure {
                    return Err(failure.to_plugin(&format!("consuming {}", self.shared.place)));
                }
                if state.closed {
                    return Err(self.closed());
                }
            }
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            let arrived = self.shared.arrived.notified();
            let _ = self
                .runtime
                .block_on(async { tokio::time::timeout_at(deadline, arrived).await });
        }
    }

    fn ack(&self, tag: u64, multiple: bool) -> Result<(), PluginError> {
        self.settle(tag, multiple, Verdict::Ack)
    }

    fn nack(&self, tag: u64, multiple: bool, requeue: bool) -> Result<(), PluginError> {
        self.settle(tag, multiple, Verdict::Nack { requeue })
    }

    /// Gives back (`-NAK`) every delivery not acknowledged, in delivery order, so that the
    /// next consumer gets them at once, flagged redelivered; every acknowledgement sent
    /// before has reached the server when it returns.
    fn close(&self) -> Result<(), PluginError> {
        let Some(task) = lock(&self.task).take() else {
            return Ok(());
        };
        let context = format!("closing the consumer of {}", self.shared.place);
        let (done, answer) = oneshot::channel();
        if self.commands.send(Command::Close(done)).is_err() {
            return Ok(());
        }
        let outcome = self.runtime.block_on(async {
            let outcome = tokio::time::timeout(self.close_limit, answer).await;
            if outcome.is_err() {
                task.abort();
            }
            outcome
        });
        lock(&self.shared.state).closed = true;
        match outcome {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(e.to_plugin(&format!(
                "{context} (what it gave back comes back after `ack_wait` instead)"
            ))),
            Ok(Err(_)) => Err(PluginError::transient(format!(
                "{context}: the consumer's task ended"
            ))),
            Err(_) => Err(PluginError::transient(format!(
                "{context}: not done within {} ms; what it held comes back after `ack_wait`",
                self.close_limit.as_millis()
            ))),
        }
    }
}

impl Drop for NatsConsumer {
    fn drop(&mut self) {
        // Without `close`, as after a crash: the task ends when it sees the channel closed,
        // and JetStream redelivers what was held after `ack_wait`.
        lock(&self.shared.state).closed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_subjects_give_the_delivery_count_and_sequence() {
        assert_eq!(
            parse_reply("$JS.ACK.ORDERS.pipeline.3.42.97.1796196706538873166.0"),
            Some((3, 42, 97, 1796196706538873166))
        );
        assert_eq!(
            parse_reply("$JS.ACK.hub.ACCHASH.ORDERS.pipeline.1.7.9.1796196706538873166.5.tok"),
            Some((1, 7, 9, 1796196706538873166))
        );
        assert_eq!(parse_reply("_INBOX.abc"), None);
        assert_eq!(parse_reply("$JS.ACK.a.b.x.y.z.t.p"), None);
        assert_eq!(parse_reply("$JS.ACK.a.b"), None);
    }

    #[test]
    fn a_delivery_carries_the_time_jetstream_stored_it_unless_it_has_one() {
        let stamped = with_stored_time(RVec::new(), 1_796_196_706_538_873_166);
        assert_eq!(stamped[0].value.as_str(), "1796196706");
        let own = RVec::from(vec![Header {
            name: "timestamp".into(),
            value: "42".into(),
        }]);
        let kept = with_stored_time(own, 1_796_196_706_538_873_166);
        assert_eq!((kept.len(), kept[0].value.as_str()), (1, "42"));
    }

    fn held(tag: u64, sseq: u64) -> Held {
        Held {
            tag,
            sseq,
            reply: Subject::from(format!("r{sseq}")),
        }
    }

    fn state() -> State {
        State {
            next_tag: 1,
            ready: VecDeque::new(),
            held: VecDeque::new(),
            parked: Vec::new(),
            blocked: VecDeque::new(),
            recovery: None,
            failure: None,
            closed: false,
        }
    }

    #[test]
    fn a_cumulative_ack_never_covers_an_unsettled_delivery() {
        let mut s = state();
        // Sequence 5 was given back and came again after 6: tags 1 (seq 6), 2 (seq 5).
        s.held.push_back(held(2, 5));
        s.parked.push(held(1, 6));
        assert!(cumulative(&mut s).is_empty(), "seq 6 would cover seq 5");
        assert_eq!(s.parked.len(), 1);
        s.held.clear();
        s.parked.push(held(2, 5));
        let acks = cumulative(&mut s);
        assert_eq!(acks.len(), 1);
        assert_eq!(acks[0].0.as_str(), "r6");
        assert!(s.parked.is_empty());

        // In order, the last one is acknowledged and covers the rest.
        let mut s = state();
        s.parked.extend([held(1, 1), held(2, 2), held(3, 3)]);
        s.held.push_back(held(4, 4));
        let acks = cumulative(&mut s);
        assert_eq!(acks[0].0.as_str(), "r3");
        assert!(s.parked.is_empty());
    }
}

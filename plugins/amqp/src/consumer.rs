//! A subscription to one queue that survives the loss of its connection.
//!
//! Each consumer has its own connection (named `<connection_name> consumer <queue>` on the
//! broker) and a task on the plugin's runtime that owns it: the task connects, sets the
//! prefetch, declares the queue, consumes, and moves deliveries into the [`Link`]'s inbox;
//! when the connection or channel dies it opens a new one with exponential backoff, on the
//! next broker of `url` that answers (`src/broker.rs`). The
//! host's threads never wait on the runtime to receive or acknowledge:
//!
//! - `receive` takes deliveries from the session's [`Inbox`], which the connection's stream
//!   fills as it reads them off the socket, before lapin sees them (`src/tap.rs`); it does
//!   so on the host's thread, and parks that thread when there are none; lapin's I/O thread
//!   unparks it as the next ones arrive. Deliveries thus cross one thread boundary, not two:
//!   handing them over through a task on the runtime cost a wake-up of a runtime thread per
//!   read from the socket and about a third of the consumer's CPU time. The broker's
//!   prefetch bounds what the inbox holds for a host that stops receiving. A prefetch of 0,
//!   which AMQP reads as "unlimited", is refused. lapin's consumer stream still tells when
//!   the subscription or the channel ended; the task only learns from `receive` that it did,
//!   and reconnects.
//! - `ack`/`nack` queue the frame on the channel directly (see [`start`]). Both
//!   [`golconde_plugin_api::AckMode`]s are served alike: AMQP acknowledges by tag, with
//!   `multiple` for cumulative.
//!
//! Key decision, and why: **the tags the host sees carry the channel's generation** in
//! their top 24 bits ([`BROKER_TAG_BITS`] for the broker's tag below). Broker tags restart
//! at 1 on every channel, so a tag from before a reconnection would acknowledge some other
//! message on the new channel, one the host may not even have seen yet. With the generation
//! in the tag, an acknowledgement for a dead channel is recognised and dropped (its messages
//! are requeued by the broker and come back as redeliveries), and a cumulative ack covers
//! only the current channel's deliveries. Tags still increase in delivery order, as the ABI
//! promises, and the mapping costs no memory per message.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll, Wake, Waker},
    thread::{Thread, ThreadId},
    time::{Duration, Instant},
};

use futures_lite::Stream as _;
use golconde_plugin_api::{ConsumeOptions, Consumer, Delivery, PluginError};
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions},
    types::{FieldTable, ShortString},
    Channel, Connection,
};
use tokio::{
    sync::{oneshot, watch, Notify},
    task::JoinHandle,
};
use tracing::{instrument::WithSubscriber, Instrument};

use crate::{
    broker::{self, queue_name, Connector, Engine},
    error::Error,
    queues::QueueType,
    tap::Inbox,
};

/// Bits of a host-visible tag that hold the broker's delivery tag; the generation of the
/// channel is above them.
pub const BROKER_TAG_BITS: u32 = 40;
const MAX_BROKER_TAG: u64 = (1 << BROKER_TAG_BITS) - 1;
const MAX_GENERATION: u64 = (1 << (64 - BROKER_TAG_BITS)) - 1;

/// The generation a host-visible tag belongs to.
pub fn generation_of(tag: u64) -> u64 {
    tag >> BROKER_TAG_BITS
}

/// A consumer as the host sees it.
pub struct AmqpConsumer {
    engine: Arc<Engine>,
    link: Arc<Link>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl AmqpConsumer {
    /// Starts consuming `queue`. The first connection is made while the caller waits, so
    /// that a wrong password or a missing queue is the answer to `consume` itself; later
    /// ones are the task's business.
    pub fn open(
        engine: Arc<Engine>,
        queue: &str,
        options: ConsumeOptions,
    ) -> Result<AmqpConsumer, Error> {
        if options.prefetch == 0 {
            return Err(Error::Prefetch {
                queue: queue.to_string(),
            });
        }
        let name = queue_name(queue)?;
        let spec = engine.settings.queues.spec(queue);
        if spec.queue_type == Some(QueueType::Stream) {
            return Err(Error::StreamConsumed {
                queue: queue.to_string(),
                key: spec.type_key.clone(),
            });
        }
        let prefetch = u16::try_from(options.prefetch).unwrap_or_else(|_| {
            tracing::warn!(
                "prefetch {} for queue `{queue}` is above AMQP's limit; using {}",
                options.prefetch,
                u16::MAX
            );
            u16::MAX
        });
        let connector = engine.connector()?;
        let link = Arc::new(Link::new(queue));
        let (stop, stopped) = watch::channel(false);
        let (opened, first) = oneshot::channel();
        let task = connector.handle.spawn(
            supervise(
                connector.clone(),
                link.clone(),
                name,
                prefetch,
                opened,
                stopped,
            )
            .instrument(tracing::info_span!("amqp", queue))
            .with_current_subscriber(),
        );
        let consumer = AmqpConsumer {
            engine,
            link,
            stop,
            task: Mutex::new(Some(task)),
        };
        // Every step of opening is bounded by the connect timeout; this is only a backstop.
        let limit = connector.settings.connect_timeout * 8;
        match consumer
            .engine
            .block_on(async { tokio::time::timeout(limit, first).await })?
        {
            Ok(Ok(Ok(()))) => Ok(consumer),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(Error::Stopped {
                queue: queue.to_string(),
                reason: "its task ended before it connected".into(),
            }),
            Err(_) => Err(connector.timeout(
                &connector.settings.endpoints(),
                &format!("starting to consume `{queue}`"),
                limit,
            )),
        }
    }

    /// Stops the task, which closes the connection: unacknowledged deliveries go back to
    /// the queue. Later calls do nothing.
    fn shut(&self) -> Result<(), Error> {
        let Some(task) = lock(&self.task).take() else {
            return Ok(());
        };
        self.link.end(
            Error::Closed {
                queue: self.link.queue.clone(),
            }
            .into(),
        );
        // Fails only if the task is gone already, which is what we want anyway.
        let _ = self.stop.send(true);
        let limit = self.engine.settings.connect_timeout + Duration::from_secs(1);
        // Timers belong to the runtime: made inside `block_on`, not before.
        match self
            .engine
            .block_on(async { tokio::time::timeout(limit, task).await })?
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Stopped {
                queue: self.link.queue.clone(),
                reason: format!("its task failed: {e}"),
            }),
            Err(_) => Err(Error::Timeout {
                action: format!("closing the consumer of `{}`", self.link.queue),
                endpoint: self.engine.settings.endpoints(),
                ms: limit.as_millis(),
                hint: "; the connection is closed in the background",
            }),
        }
    }
}

impl Consumer for AmqpConsumer {
    fn receive(&self, max: usize, timeout: Duration) -> Result<Vec<Delivery>, PluginError> {
        self.link.receive(max, timeout)
    }

    fn ack(&self, tag: u64, multiple: bool) -> Result<(), PluginError> {
        Ok(self.link.settle(tag, multiple, Settle::Ack)?)
    }

    fn nack(&self, tag: u64, multiple: bool, requeue: bool) -> Result<(), PluginError> {
        Ok(self.link.settle(tag, multiple, Settle::Nack { requeue })?)
    }

    fn close(&self) -> Result<(), PluginError> {
        Ok(self.shut()?)
    }
}

impl Drop for AmqpConsumer {
    fn drop(&mut self) {
        if let Err(e) = self.shut() {
            tracing::warn!("{e}");
        }
    }
}

/// What the host's threads and the consumer's task share.
pub struct Link {
    queue: String,
    current: Mutex<Current>,
    /// Signalled when `receive` finds the session's stream over: the task then reconnects.
    over: Notify,
    acks: Mutex<Acks>,
}

/// The session `receive` takes deliveries from, and who waits for them.
struct Current {
    /// `None` while (re)connecting.
    stream: Option<Stream>,
    /// Why and which session's stream ended, for the task; taken by it.
    over: Option<(u64, End)>,
    /// The host thread waiting in `receive`, woken when a session starts or the link ends.
    waiting: Option<Thread>,
    /// Wakes the thread that last polled the stream; made again only for another thread.
    waker: Option<(ThreadId, Waker)>,
    /// Set once the consumer is closed or its task gave up; `receive` reports it.
    end: Option<PluginError>,
}

/// The deliveries of one channel.
struct Stream {
    generation: u64,
    /// Where the deliveries arrive (`src/tap.rs`).
    inbox: Arc<Inbox>,
    /// lapin's consumer: it ends when the channel or the subscription does.
    consumer: lapin::Consumer,
}

impl Current {
    /// A waker that unparks the calling thread: lapin calls it as deliveries arrive after
    /// the stream answered `Pending`. Unparking a thread that is not parked costs one atomic
    /// operation, so a busy host pays nothing for the deliveries it will take anyway.
    fn waker(&mut self) -> Waker {
        let thread = std::thread::current();
        match &self.waker {
            Some((id, waker)) if *id == thread.id() => waker.clone(),
            _ => {
                let waker = Waker::from(Arc::new(Unpark(thread.clone())));
                self.waker = Some((thread.id(), waker.clone()));
                waker
            }
        }
    }
}

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// The live channel, and what acknowledging on it must respect.
struct Acks {
    /// Of the current (or last) channel; 0 before the first.
    generation: u64,
    /// `None` while reconnecting: acknowledgements are dropped.
    channel: Option<Channel>,
    /// The highest broker tag of this generation handed to the host.
    handed: u64,
    /// The highest broker tag of this generation acknowledged or rejected cumulatively:
    /// AMQP closes the channel on a second acknowledgement of the same tag.
    settled: u64,
}

#[derive(Debug, Clone, Copy)]
enum Settle {
    Ack,
    Nack { requeue: bool },
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data stays consistent at every unlock point, so a panicking holder left nothing
    // half-done.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Link {
    fn new(queue: &str) -> Link {
        Link {
            queue: queue.to_string(),
            current: Mutex::new(Current {
                stream: None,
                over: None,
                waiting: None,
                waker: None,
                end: None,
            }),
            over: Notify::new(),
            acks: Mutex::new(Acks {
                generation: 0,
                channel: None,
                handed: 0,
                settled: 0,
            }),
        }
    }

    /// Takes what lapin has ready, up to `max`, on the calling thread; with nothing ready,
    /// parks until lapin wakes it or `timeout` passes.
    fn receive(&self, max: usize, timeout: Duration) -> Result<Vec<Delivery>, PluginError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        // A timeout too large for an `Instant` means waiting for as long as it takes.
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let mut current = lock(&self.current);
            if let Some(end) = &current.end {
                return Err(end.clone());
            }
            if let Some(batch) = self.take(&mut current, max) {
                current.waiting = None;
                drop(current);
                self.handed(&batch);
                return Ok(batch);
            }
            // Set under the lock that `adopt` and `end` take, so neither can slip in
            // between this check and the park without its unpark being kept for it.
            current.waiting = Some(std::thread::current());
            drop(current);
            match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        lock(&self.current).waiting = None;
                        return Ok(Vec::new());
                    }
                    std::thread::park_timeout(left);
                }
                None => std::thread::park(),
            }
        }
    }

    /// Takes up to `max` deliveries from the current session's inbox, and looks whether
    /// lapin's consumer ended; `None` if there were none. A stream that ended is retired
    /// and the task told.
    fn take(&self, current: &mut Current, max: usize) -> Option<Vec<Delivery>> {
        let waker = current.waker();
        let stream = current.stream.as_mut()?;
        let generation = stream.generation;
        let mut batch = Vec::new();
        stream.inbox.take(max, &waker, &mut batch);
        let end = if batch.iter().any(|d| d.tag > MAX_BROKER_TAG) {
            Some(End::TagsExhausted)
        } else {
            // The broker sends nothing after a cancellation or a channel's end, so the
            // deliveries before it are all in the inbox by the time lapin's stream says so.
            match Pin::new(&mut stream.consumer).poll_next(&mut Context::from_waker(&waker)) {
                Poll::Pending => None,
                Poll::Ready(Some(Ok(_))) => Some(End::Stray),
                Poll::Ready(Some(Err(e))) => Some(End::Failed(e)),
                Poll::Ready(None) => Some(End::Cancelled),
            }
        };
        if let Some(end) = end {
            // Their channel is dead: the broker delivers them again on the next one, and
            // acknowledging them now would be dropped anyway.
            current.stream = None;
            current.over = Some((generation, end));
            self.over.notify_one();
            return None;
        }
        for delivery in &mut batch {
            delivery.tag |= generation << BROKER_TAG_BITS;
        }
        (!batch.is_empty()).then_some(batch)
    }

    /// Records the highest tag handed to the host, which `settle` checks against.
    fn handed(&self, batch: &[Delivery]) {
        if let Some(last) = batch.last() {
            let mut acks = lock(&self.acks);
            let broker_tag = last.tag & MAX_BROKER_TAG;
            if generation_of(last.tag) == acks.generation && broker_tag > acks.handed {
                acks.handed = broker_tag;
            }
        }
    }

    fn settle(&self, tag: u64, multiple: bool, how: Settle) -> Result<(), Error> {
        let generation = generation_of(tag);
        let broker_tag = tag & MAX_BROKER_TAG;
        let mut acks = lock(&self.acks);
        if generation == 0
            || broker_tag == 0
            || generation > acks.generation
            || (generation == acks.generation && broker_tag > acks.handed)
        {
            return Err(Error::UnknownTag {
                queue: self.queue.clone(),
                tag,
            });
        }
        let channel = match &acks.channel {
            Some(channel) if generation == acks.generation => channel,
            _ => {
                tracing::debug!(
                    tag,
                    "{how:?} for a delivery of a connection that is gone: dropped, the broker \
                     delivers the message again"
                );
                return Ok(());
            }
        };
        if broker_tag <= acks.settled {
            return Ok(());
        }
        // Sent under the lock, so that two threads' cumulative acks reach the broker in the
        // order `settled` saw them.
        let sent = match how {
            Settle::Ack => start(channel.basic_ack(broker_tag, BasicAckOptions { multiple })),
            Settle::Nack { requeue } => {
                start(channel.basic_nack(broker_tag, BasicNackOptions { multiple, requeue }))
            }
        };
        if multiple {
            acks.settled = broker_tag;
        }
        if let Some(Err(e)) = sent {
            // The channel closed under us: the broker requeues what it had not seen
            // acknowledged, so this message comes back, as after any connection loss.
            tracing::debug!(tag, "{how:?} not sent, the channel is closed ({e})");
        }
        Ok(())
    }

    /// A new channel is consuming: its deliveries get the next generation, and `receive`
    /// takes them from `consumer`.
    fn adopt(
        &self,
        channel: Channel,
        consumer: lapin::Consumer,
        inbox: Arc<Inbox>,
    ) -> Result<u64, Error> {
        let mut acks = lock(&self.acks);
        if acks.generation == MAX_GENERATION {
            return Err(Error::Stopped {
                queue: self.queue.clone(),
                reason: format!("it reconnected {MAX_GENERATION} times, all its tags are used"),
            });
        }
        acks.generation += 1;
        acks.channel = Some(channel);
        acks.handed = 0;
        acks.settled = 0;
        let generation = acks.generation;
        drop(acks);
        let mut current = lock(&self.current);
        current.stream = Some(Stream {
            generation,
            inbox,
            consumer,
        });
        current.over = None;
        if let Some(waiting) = current.waiting.take() {
            waiting.unpark();
        }
        Ok(generation)
    }

    /// Waits until `receive` finds the stream of `generation` over, and says why.
    async fn over(&self, generation: u64) -> End {
        loop {
            // Made before looking, so that a signal given in between is not lost.
            let signalled = self.over.notified();
            {
                let mut current = lock(&self.current);
                if current.over.as_ref().is_some_and(|(g, _)| *g == generation) {
                    return current.over.take().expect("checked above").1;
                }
            }
            signalled.await;
        }
    }

    /// The channel of `generation` is dead: acknowledgements for it are dropped from now
    /// on, and deliveries the host has not taken yet are forgotten (the broker requeues
    /// them).
    fn retire(&self, generation: u64) {
        let mut acks = lock(&self.acks);
        if acks.generation == generation {
            acks.channel = None;
        }
        drop(acks);
        let mut current = lock(&self.current);
        if current
            .stream
            .as_ref()
            .is_some_and(|s| s.generation == generation)
        {
            current.stream = None;
        }
    }

    /// No more deliveries, ever: `receive` answers `error`.
    fn end(&self, error: PluginError) {
        lock(&self.acks).channel = None;
        let mut current = lock(&self.current);
        current.stream = None;
        current.end.get_or_insert(error);
        if let Some(waiting) = current.waiting.take() {
            waiting.unpark();
        }
    }
}

/// Polls `future` once, without waiting for it to finish.
///
/// lapin queues an ack's or nack's frame for its I/O thread on the first poll; what is left
/// after that is waiting for the I/O thread to have written it to the socket. AMQP gives no
/// answer to an ack, so that wait guarantees nothing more (a connection lost before the
/// broker read the frame requeues the message either way), but it would cost a thread
/// round trip per acknowledgement on the host's hot path.
fn start<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// One connection consuming the queue.
struct Session {
    connection: Connection,
    /// The connection's events, listened to from before the channel opens.
    events: Events,
    channel: Channel,
    consumer: lapin::Consumer,
    inbox: Arc<Inbox>,
    /// The broker it is connected to, as it may be shown.
    endpoint: String,
}

impl Session {
    /// Connects to the broker at `*next` or, failing that, the following ones (see
    /// [`Connector::connect`]).
    async fn open(
        connector: &Connector,
        queue: &ShortString,
        prefetch: u16,
        next: &mut usize,
    ) -> Result<Session, Error> {
        let inbox = Arc::new(Inbox::default());
        let connected = connector
            .connect(&format!("consumer {queue}"), next, Some(inbox.clone()))
            .await?;
        let (connection, endpoint) = (connected.connection, connected.endpoint);
        let events = Box::pin(connection.events_listener());
        match Session::subscribe(connector, &endpoint, &connection, queue, prefetch).await {
            Ok((channel, consumer)) => Ok(Session {
                connection,
                events,
                channel,
                consumer,
                inbox,
                endpoint,
            }),
            Err(e) => {
                broker::close(&connection, connector.settings.connect_timeout, "giving up").await;
                Err(e)
            }
        }
    }

    async fn subscribe(
        connector: &Connector,
        endpoint: &str,
        connection: &Connection,
        queue: &ShortString,
        prefetch: u16,
    ) -> Result<(Channel, lapin::Consumer), Error> {
        let name = queue.as_str();
        let channel = connector
            .step(
                endpoint,
                "opening a channel",
                name,
                connection.create_channel(),
            )
            .await?;
        connector
            .step(
                endpoint,
                "setting the prefetch",
                name,
                channel.basic_qos(prefetch, BasicQosOptions::default()),
            )
            .await?;
        connector.declare(endpoint, &channel, queue).await?;
        let consumer = connector
            .step(
                endpoint,
                &format!("consuming queue `{queue}`"),
                name,
                channel.basic_consume(
                    queue.clone(),
                    "golconde".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
        Ok((channel, consumer))
    }
}

/// Why a session ended.
enum End {
    /// The host closed the consumer.
    Stopped,
    /// The broker cancelled the subscription (the queue was deleted, for one).
    Cancelled,
    Failed(lapin::Error),
    /// The broker's tags outgrew [`BROKER_TAG_BITS`]: a new channel starts them again.
    TagsExhausted,
    /// lapin got a delivery: the tap (`src/tap.rs`) takes every one, so this cannot
    /// happen; if it did, a new channel gets the message delivered again.
    Stray,
}

/// Owns the consumer's connections for its whole life: opens sessions, pumps them, and
/// reconnects with exponential backoff when one dies.
async fn supervise(
    connector: Connector,
    link: Arc<Link>,
    queue: ShortString,
    prefetch: u16,
    opened: oneshot::Sender<Result<(), Error>>,
    mut stop: watch::Receiver<bool>,
) {
    let _ended = Ended(&link);
    let settings = connector.settings.clone();
    let mut opened = Some(opened);
    let mut delay = settings.reconnect_initial;
    // Where the next round of connecting starts in the list of brokers.
    let mut next = 0;
    loop {
        let attempt = tokio::select! {
            biased;
            _ = stop.changed() => return,
            session = Session::open(&connector, &queue, prefetch, &mut next) => session,
        };
        match attempt {
            Err(e) => {
                if let Some(opened) = opened.take() {
                    let _ = opened.send(Err(e));
                    return;
                }
                match e {
                    // Each broker's failure was logged as it happened.
                    Error::Unreachable { failures } => tracing::warn!(
                        "none of the {} brokers answered for queue `{queue}`; trying them \
                         again in {} ms",
                        failures.len(),
                        delay.as_millis()
                    ),
                    e => tracing::warn!("{e}; trying again in {} ms", delay.as_millis()),
                }
            }
            Ok(session) => {
                let generation =
                    match link.adopt(session.channel.clone(), session.consumer, session.inbox) {
                        Ok(generation) => generation,
                        Err(e) => {
                            broker::close(&session.connection, settings.connect_timeout, "done")
                                .await;
                            link.end(e.into());
                            return;
                        }
                    };
                match opened.take() {
                    Some(opened) => {
                        let _ = opened.send(Ok(()));
                    }
                    None => {
                        tracing::info!("consuming queue `{queue}` again, on {}", session.endpoint)
                    }
                }
                delay = settings.reconnect_initial;
                // The host's threads take the deliveries (`Link::receive`) and learn there
                // that lapin's stream ended. The connection's own events are watched too, so
                // that its loss is noticed even if no stream ever says so.
                let mut events = session.events;
                let end = tokio::select! {
                    biased;
                    _ = stop.changed() => End::Stopped,
                    end = link.over(generation) => end,
                    e = lost(&session.connection, &mut events) => End::Failed(e),
                };
                link.retire(generation);
                let why = match end {
                    End::Stopped => "consumer closed by Golconde",
                    _ => "reconnecting",
                };
                broker::close(&session.connection, settings.connect_timeout, why).await;
                match end {
                    End::Stopped => return,
                    End::Cancelled => tracing::warn!(
                        "the broker {} cancelled consuming queue `{queue}` (was it deleted?); \
                         subscribing again in {} ms",
                        session.endpoint,
                        delay.as_millis()
                    ),
                    End::Failed(e) => tracing::warn!(
                        "connection to {} lost while consuming queue `{queue}` ({}); \
                         reconnecting in {} ms, unacknowledged messages come back as \
                         redeliveries",
                        session.endpoint,
                        crate::error::describe(&e),
                        delay.as_millis()
                    ),
                    End::TagsExhausted => tracing::info!(
                        "delivery tags of queue `{queue}` reached 2^{BROKER_TAG_BITS}; \
                         opening a new channel"
                    ),
                    End::Stray => tracing::error!(
                        "a delivery from queue `{queue}` reached lapin instead of the \
                         consumer's reader; reconnecting, the broker delivers it again"
                    ),
                }
            }
        }
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            biased;
            _ = stop.changed() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(settings.reconnect_max);
    }
}

/// A connection's events, as lapin hands them out.
type Events = Pin<Box<dyn futures_lite::Stream<Item = lapin::Event> + Send>>;

/// Returns once `connection` is no longer open: with the error lapin reported, or with
/// the state it is left in.
async fn lost(connection: &Connection, events: &mut Events) -> lapin::Error {
    loop {
        if !connection.status().connected() {
            return gone(connection);
        }
        // lapin reports an error as an event, but a close that is not an error only as
        // the connection's state: that is looked at every second.
        tokio::select! {
            event = futures_lite::StreamExt::next(events) => match event {
                Some(lapin::Event::Error(e)) => return e,
                Some(_) => {}
                None => return gone(connection),
            },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// What a connection that is no longer open is left as.
fn gone(connection: &Connection) -> lapin::Error {
    let status = connection.status();
    let state = if status.errored() {
        lapin::ConnectionState::Error
    } else if status.closing() {
        lapin::ConnectionState::Closing
    } else {
        lapin::ConnectionState::Closed
    };
    lapin::ErrorKind::InvalidConnectionState(state).into()
}

/// Ends the link when the task ends, however it ends (a panic included), so that the host's
/// `receive` reports it instead of waiting for deliveries that will never come.
struct Ended<'a>(&'a Link);

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        let reason = if std::thread::panicking() {
            "its task panicked"
        } else {
            "its task ended"
        };
        self.0.end(
            Error::Stopped {
                queue: self.0.queue.clone(),
                reason: reason.into(),
            }
            .into(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With no session, `receive` waits out its timeout and answers nothing.
    #[test]
    fn receive_without_a_session_waits_its_timeout() {
        let link = Link::new("q");
        let started = Instant::now();
        assert!(link
            .receive(10, Duration::from_millis(50))
            .unwrap()
            .is_empty());
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(
            lock(&link.current).waiting.is_none(),
            "no waiter left behind"
        );
    }

    /// A host thread parked in `receive` learns at once that the consumer was closed,
    /// however long its timeout.
    #[test]
    fn ending_the_link_wakes_a_waiting_receive() {
        let link = Arc::new(Link::new("q"));
        let waiting = {
            let link = link.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                let answer = link.receive(10, Duration::from_secs(3600));
                (answer, started.elapsed())
            })
        };
        while lock(&link.current).waiting.is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
        link.end(PluginError::permanent("closed"));
        let (answer, waited) = waiting.join().unwrap();
        assert_eq!(answer.unwrap_err().message.as_str(), "closed");
        assert!(waited < Duration::from_secs(60));
        // And whoever asks later hears the same.
        assert!(link.receive(1, Duration::ZERO).is_err());
    }

    /// The task learns only of its own session's end, and not before `receive` says so.
    #[test]
    fn the_task_hears_of_the_end_of_its_own_session_only() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let link = Link::new("q");
        let early = runtime.block_on(async {
            tokio::time::timeout(Duration::from_millis(30), link.over(1)).await
        });
        assert!(early.is_err(), "nothing ended yet");
        lock(&link.current).over = Some((1, End::Cancelled));
        link.over.notify_one();
        let stale = runtime.block_on(async {
            tokio::time::timeout(Duration::from_millis(30), link.over(2)).await
        });
        assert!(stale.is_err(), "another session's end is not this one's");
        let end = runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(5), link.over(1)).await });
        assert!(matches!(end, Ok(End::Cancelled)));
    }
}

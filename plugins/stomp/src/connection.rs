//! One STOMP connection: the CONNECT handshake, then a reader task and a writer task.
//!
//! The socket is split so that reading and writing never wait on each other: the writer
//! drains a queue of outgoing items (frames from the host's threads, heart-beats when
//! idle) and flushes once per burst, so a stream of ACKs costs one write per burst, not
//! one per ACK; the reader routes MESSAGE frames to the consumer's channel and RECEIPT
//! and ERROR frames to whoever waits for them. Each MESSAGE takes a place in the
//! consumer's inbox ([`Sink::room`], as many as the prefetch) before it is passed on, and
//! the host frees it by taking the delivery: waiting for a place pauses the reader, and
//! with it TCP, which is the backpressure, so the inbox never holds more than the
//! prefetch whatever the broker sends. The silence timer that enforces the broker's
//! heart-beats only runs while the reader waits on the socket, so a slow host is never
//! mistaken for a dead broker. While the host is busy (it has not taken the reader's last
//! batch) the reader naps for a millisecond after each batch, so that frames gather in the
//! socket and one read takes many: waking for every few frames cost more CPU than the
//! frames themselves. During the nap the socket's receive low-water mark is raised
//! ([`LowWater`]), or the broker's writes would wake the runtime's thread all the same.
//!
//! A connection fails once: the first failure (I/O error, malformed frame, ERROR frame,
//! missed heart-beats) is recorded, every waiting request gets it, both tasks stop, and
//! [`Connection::lost`] resolves. Reconnecting is the owner's job (consumer or
//! publisher), because only the owner knows what must be set up again.
//!
//! With several brokers, [`open_any`] tries each once, in the settings' order from a given
//! one on, and the owner remembers where to start next time: after the one it lost.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use futures_util::{FutureExt, SinkExt, StreamExt};
use golconde_plugin_support::low_water::LowWater;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
    sync::{mpsc, oneshot, Semaphore, TryAcquireError},
    time::{sleep, timeout},
};
use tokio_util::{
    codec::{FramedRead, FramedWrite},
    sync::CancellationToken,
};
use tracing::instrument::WithSubscriber;

use crate::{
    codec::{Item, StompCodec},
    config::{Broker, Settings},
    error::{describe_error_frame, tls_hint, StompError},
    frame::{Command, Frame},
    message::Incoming,
};

/// Where a consumer's connection delivers MESSAGE frames, in batches.
#[derive(Clone)]
pub struct Sink {
    /// Unbounded because [`Sink::room`] bounds it.
    pub deliveries: mpsc::UnboundedSender<Vec<Incoming>>,
    /// One permit per delivery the inbox may still take; the consumer adds them back as
    /// the host takes deliveries, and closes it when the consumer closes (then the reader
    /// drops deliveries instead of waiting, and the broker requeues them).
    pub room: Arc<Semaphore>,
    /// The permits [`Sink::room`] started with: the prefetch.
    pub capacity: usize,
    /// Stamped on every delivery, so the consumer can drop those of a dead connection.
    pub generation: u64,
    /// Rung after each batch, for a host thread waiting in `receive`.
    pub doorbell: Arc<Doorbell>,
}

/// The host thread waiting for deliveries, parked on its own: the reader unparks it
/// directly. Waiting inside the plugin's runtime instead (`block_on` of a receive with a
/// timeout) registered a timer with the runtime at every wait, which woke the runtime's
/// thread again and again for nothing; those wake-ups were most of the consumer's CPU time.
#[derive(Default)]
pub struct Doorbell {
    waiting: std::sync::Mutex<Option<std::thread::Thread>>,
}

impl Doorbell {
    /// The calling thread is about to park until rung.
    pub fn arm(&self) {
        *self.lock() = Some(std::thread::current());
    }

    /// No longer waiting (rung or not).
    pub fn disarm(&self) {
        self.lock().take();
    }

    /// Unparks the thread waiting, if one is; an unpark before its park is kept for it.
    pub fn ring(&self) {
        if let Some(thread) = self.lock().take() {
            thread.unpark();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<std::thread::Thread>> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Deliveries passed on that the host has not taken yet, of an inbox of `capacity` places
/// whose free places are `room`'s permits: never more than `capacity`.
pub fn waiting(room: &Semaphore, capacity: usize) -> usize {
    capacity.saturating_sub(room.available_permits())
}

impl Sink {
    /// Waits for a place in the inbox; `false` if the consumer is closing.
    async fn make_room(&self) -> bool {
        match self.room.acquire().await {
            Ok(permit) => {
                permit.forget();
                true
            }
            Err(_) => false,
        }
    }

    /// A place in the inbox, if there is one now; `None` if the consumer is closing.
    fn try_make_room(&self) -> Option<bool> {
        match self.room.try_acquire() {
            Ok(permit) => {
                permit.forget();
                Some(true)
            }
            Err(TryAcquireError::NoPermits) => None,
            Err(TryAcquireError::Closed) => Some(false),
        }
    }
}

type Waiter = oneshot::Sender<Result<(), StompError>>;

/// What the tasks of one connection share with its owner.
struct State {
    receipts: Mutex<Receipts>,
    /// Cancelled when the connection is gone, whichever side noticed.
    closed: CancellationToken,
}

#[derive(Default)]
struct Receipts {
    waiting: HashMap<String, Waiter>,
    lost: Option<StompError>,
}

impl State {
    fn receipts(&self) -> std::sync::MutexGuard<'_, Receipts> {
        self.receipts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records why the connection ended (the first reason wins) and fails every request
    /// still waiting.
    fn fail(&self, reason: StompError) {
        let waiting = {
            let mut receipts = self.receipts();
            if receipts.lost.is_none() {
                receipts.lost = Some(reason);
            }
            std::mem::take(&mut receipts.waiting)
        };
        let reason = self.lost_reason();
        for (_, waiter) in waiting {
            let _ = waiter.send(Err(reason.clone()));
        }
        self.closed.cancel();
    }

    fn settle(&self, receipt: &str, result: Result<(), StompError>) {
        let waiter = self.receipts().waiting.remove(receipt);
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(result);
            }
            None => tracing::debug!(receipt, "receipt nobody waits for"),
        }
    }

    fn lost_reason(&self) -> StompError {
        self.receipts().lost.clone().unwrap_or(StompError::Closed)
    }
}

/// An established STOMP 1.2 session. Dropping it closes the socket without DISCONNECT.
pub struct Connection {
    outgoing: mpsc::UnboundedSender<Item>,
    state: Arc<State>,
    next_receipt: AtomicU64,
    receipt_timeout: Duration,
}

/// The heart-beat intervals both sides agreed on: `(we send every, we hear at least
/// every)`, `None` for never (STOMP 1.2 §Heart-beating).
fn negotiate(
    offered: (u64, u64),
    answered: &str,
) -> Result<(Option<u64>, Option<u64>), StompError> {
    let parse = |text: &str| text.trim().parse::<u64>().ok();
    let (sx, sy) = answered
        .split_once(',')
        .and_then(|(a, b)| Some((parse(a)?, parse(b)?)))
        .ok_or_else(|| {
            StompError::Malformed(format!("CONNECTED has an invalid heart-beat `{answered}`"))
        })?;
    let agree = |ours: u64, theirs: u64| (ours != 0 && theirs != 0).then(|| ours.max(theirs));
    Ok((agree(offered.0, sy), agree(offered.1, sx)))
}

/// Connects to the first of the brokers that answers, trying each once in the order of
/// `settings.brokers` from position `start` on (wrapping around); answers the connection
/// and its broker's position. Each failure is logged with the broker's address while
/// others remain to be tried; when none answers, the error names every one (a single
/// broker's failure is returned as it is).
pub async fn open_any(
    settings: &Settings,
    start: usize,
    sink: Option<Sink>,
) -> Result<(Connection, usize), StompError> {
    let count = settings.brokers.len();
    let mut failures = Vec::new();
    for offset in 0..count {
        let at = (start + offset) % count;
        let broker = &settings.brokers[at];
        match Connection::open(settings, broker, sink.clone()).await {
            Ok(connection) => {
                if !failures.is_empty() {
                    tracing::info!(address = %broker.address, "connected to {}", broker.address);
                }
                return Ok((connection, at));
            }
            Err(e) => {
                if count > 1 {
                    let next = if offset + 1 < count {
                        format!("trying {} next", settings.brokers[(at + 1) % count].address)
                    } else {
                        format!("none of the {count} brokers answered")
                    };
                    tracing::warn!(
                        address = %broker.address,
                        "cannot connect to the broker at {}: {e}; {next}",
                        broker.address
                    );
                }
                failures.push((broker.address.clone(), e));
            }
        }
    }
    Err(match failures.len() {
        1 => failures.remove(0).1,
        _ => StompError::NoBroker(failures),
    })
}

impl Connection {
    /// Connects to `broker`, says CONNECT and waits for CONNECTED, then starts the
    /// connection's tasks on the current runtime.
    pub async fn open(
        settings: &Settings,
        broker: &Broker,
        sink: Option<Sink>,
    ) -> Result<Connection, StompError> {
        let connect_ms = settings.connect_timeout.as_millis() as u64;
        let stream = timeout(
            settings.connect_timeout,
            TcpStream::connect(&broker.address),
        )
        .await
        .map_err(|_| StompError::Timeout {
            what: "connecting",
            ms: connect_ms,
            key: "connect_timeout_ms",
        })?
        .map_err(|e| StompError::Connect {
            address: broker.address.clone(),
            source: Arc::new(e),
        })?;
        // ACKs and SENDs are small; waiting to coalesce them only adds latency.
        stream
            .set_nodelay(true)
            .map_err(|e| StompError::Io(Arc::new(e)))?;
        let low_water = LowWater::of(&stream);
        match &broker.tls {
            None => {
                let (read, write) = stream.into_split();
                Self::handshake(read, write, settings, broker, sink, low_water).await
            }
            Some(tls) => {
                let stream = timeout(settings.connect_timeout, tls.handshake(stream))
                    .await
                    .map_err(|_| StompError::Timeout {
                        what: "the TLS handshake",
                        ms: connect_ms,
                        key: "connect_timeout_ms",
                    })?
                    .map_err(|e| {
                        let reason = e.to_string();
                        StompError::Tls {
                            address: broker.address.clone(),
                            hint: tls_hint(&reason, tls.has_identity()),
                            reason,
                        }
                    })?;
                let (read, write) = tokio::io::split(stream);
                // A broker that wants a client certificate may accept the handshake and
                // then close the connection (TLS 1.3 checks it afterwards): say so.
                Self::handshake(read, write, settings, broker, sink, low_water)
                    .await
                    .map_err(|e| match e {
                        StompError::Closed | StompError::Io(_) => StompError::Tls {
                            address: broker.address.clone(),
                            hint: tls_hint(&e.to_string(), tls.has_identity()),
                            reason: format!(
                                "the broker closed the connection before CONNECTED ({e})"
                            ),
                        },
                        other => other,
                    })
            }
        }
    }

    /// Says CONNECT over an open stream and waits for CONNECTED, then starts the
    /// connection's tasks on it.
    async fn handshake<R, W>(
        read: R,
        write: W,
        settings: &Settings,
        broker: &Broker,
        sink: Option<Sink>,
        low_water: Option<LowWater>,
    ) -> Result<Connection, StompError>
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let connect_ms = settings.connect_timeout.as_millis() as u64;
        let codec = || StompCodec::new(settings.max_frame_bytes, settings.max_headers);
        // As large as what gathers in the socket during a nap, so that one read takes it
        // all; the default 8 KiB took eight reads for it.
        let mut frames = FramedRead::with_capacity(read, codec(), NAP_LOW_WATER as usize);
        let mut sink_out = FramedWrite::new(write, codec());

        let mut connect = Frame::new(Command::Connect)
            .with_header("accept-version", "1.2")
            .with_header("host", settings.virtual_host.as_str())
            .with_header(
                "heart-beat",
                format!("{},{}", settings.heartbeat.0, settings.heartbeat.1),
            );
        if let Some(login) = &settings.login {
            connect = connect.with_header("login", login.as_str());
        }
        if let Some(passcode) = &settings.passcode {
            connect = connect.with_header("passcode", passcode.as_str());
        }
        let handshake = async {
            sink_out.send(Item::Frame(connect)).await?;
            loop {
                match frames.next().await {
                    None => return Err(StompError::Closed),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(Item::Heartbeat)) => continue,
                    Some(Ok(Item::Frame(frame))) => match frame.command {
                        Command::Connected => return Ok(frame),
                        Command::Error => {
                            return Err(StompError::Refused(describe_error_frame(&frame)))
                        }
                        other => {
                            return Err(StompError::Malformed(format!(
                                "expected CONNECTED, got {other}"
                            )))
                        }
                    },
                }
            }
        };
        let connected = timeout(settings.connect_timeout, handshake)
            .await
            .map_err(|_| StompError::Timeout {
                what: "waiting for CONNECTED",
                ms: connect_ms,
                key: "connect_timeout_ms",
            })??;
        match connected.header("version") {
            Some("1.2") => {}
            other => {
                return Err(StompError::Protocol(format!(
                    "the broker at {} speaks STOMP {}, this plugin needs 1.2",
                    broker.address,
                    other.unwrap_or("1.0")
                )))
            }
        }
        let (send_every, hear_every) = negotiate(
            settings.heartbeat,
            connected.header("heart-beat").unwrap_or("0,0"),
        )?;
        tracing::debug!(
            address = %broker.address,
            server = connected.header("server").unwrap_or("unknown"),
            ?send_every,
            ?hear_every,
            "connected"
        );

        let state = Arc::new(State {
            receipts: Mutex::new(Receipts::default()),
            closed: CancellationToken::new(),
        });
        let (outgoing, queue) = mpsc::unbounded_channel();
        // Beat at half the agreed period so that a late timer never looks like silence.
        let beat = send_every.map(|ms| Duration::from_millis((ms / 2).max(1)));
        // The broker may be late too: allow two periods before giving up on it.
        let silence = hear_every.map(|ms| Duration::from_millis(ms.saturating_mul(2)));
        tokio::spawn(write_loop(sink_out, queue, state.clone(), beat).with_current_subscriber());
        tokio::spawn(
            read_loop(frames, state.clone(), sink, silence, low_water).with_current_subscriber(),
        );
        Ok(Connection {
            outgoing,
            state,
            next_receipt: AtomicU64::new(1),
            receipt_timeout: settings.receipt_timeout,
        })
    }

    /// The queue the writer drains, for senders that outlive a borrow of the connection
    /// (the consumer's acknowledgements).
    pub fn outgoing(&self) -> mpsc::UnboundedSender<Item> {
        self.outgoing.clone()
    }

    /// Queues a frame; no confirmation.
    pub fn send(&self, frame: Frame) -> Result<(), StompError> {
        self.outgoing
            .send(Item::Frame(frame))
            .map_err(|_| self.state.lost_reason())
    }

    /// Queues a frame with a `receipt` header; the returned channel says when the broker
    /// confirmed it (RECEIPT) or refused it (ERROR), or that the connection was lost.
    pub fn request(
        &self,
        frame: Frame,
    ) -> Result<oneshot::Receiver<Result<(), StompError>>, StompError> {
        let id = self
            .next_receipt
            .fetch_add(1, Ordering::Relaxed)
            .to_string();
        let (waiter, answer) = oneshot::channel();
        {
            let mut receipts = self.state.receipts();
            if let Some(lost) = &receipts.lost {
                return Err(lost.clone());
            }
            receipts.waiting.insert(id.clone(), waiter);
        }
        self.send(frame.with_header("receipt", id))?;
        Ok(answer)
    }

    /// Sends a frame and waits for its receipt, at most `receipt_timeout_ms`.
    pub async fn call(&self, frame: Frame, what: &'static str) -> Result<(), StompError> {
        let answer = self.request(frame)?;
        self.await_receipt(answer, self.receipt_deadline(), what)
            .await
    }

    pub fn receipt_deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.receipt_timeout
    }

    pub async fn await_receipt(
        &self,
        answer: oneshot::Receiver<Result<(), StompError>>,
        deadline: tokio::time::Instant,
        what: &'static str,
    ) -> Result<(), StompError> {
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.state.lost_reason()),
            Err(_) => Err(StompError::Timeout {
                what,
                ms: self.receipt_timeout.as_millis() as u64,
                key: "receipt_timeout_ms",
            }),
        }
    }

    /// Resolves when the connection is gone, with the reason.
    pub async fn lost(&self) -> StompError {
        self.state.closed.cancelled().await;
        self.state.lost_reason()
    }

    pub fn is_lost(&self) -> bool {
        self.state.closed.is_cancelled()
    }

    /// Says DISCONNECT and waits for its receipt: the broker sends it only after it has
    /// processed every frame before it, so once this returns every ACK sent earlier has
    /// taken effect.
    pub async fn disconnect(self) -> Result<(), StompError> {
        let result = self
            .call(
                Frame::new(Command::Disconnect),
                "waiting for the receipt of DISCONNECT",
            )
            .await;
        self.state.fail(StompError::Closed);
        result
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.state.fail(StompError::Closed);
    }
}

/// Receives one outgoing item, or a heart-beat once `beat` passed without any.
async fn next_outgoing(
    queue: &mut mpsc::UnboundedReceiver<Item>,
    beat: Option<Duration>,
) -> Option<Item> {
    match beat {
        None => queue.recv().await,
        Some(beat) => timeout(beat, queue.recv())
            .await
            .unwrap_or(Some(Item::Heartbeat)),
    }
}

/// How many queued items go into one write before it is flushed.
const BURST: usize = 4096;

async fn write_loop<W: AsyncWrite + Unpin>(
    mut out: FramedWrite<W, StompCodec>,
    mut queue: mpsc::UnboundedReceiver<Item>,
    state: Arc<State>,
    beat: Option<Duration>,
) {
    let result: Result<(), StompError> = async {
        loop {
            let item = tokio::select! {
                biased;
                _ = state.closed.cancelled() => return Ok(()),
                item = next_outgoing(&mut queue, beat) => item,
            };
            let Some(item) = item else { return Ok(()) };
            out.feed(item).await?;
            for _ in 0..BURST {
                match queue.try_recv() {
                    Ok(item) => out.feed(item).await?,
                    Err(_) => break,
                }
            }
            out.flush().await?;
        }
    }
    .await;
    if let Err(e) = result {
        state.fail(e);
    }
}

/// How long the reader lets deliveries gather in the socket while the host is busy.
const NAP: Duration = Duration::from_millis(1);

/// The most deliveries passed to the consumer in one batch.
const BATCH: usize = 256;

/// What the reader makes of one frame.
enum Step {
    Deliver(Incoming),
    Continue,
    Stop(StompError),
}

fn handle(frame: Frame, state: &State, sink: Option<&Sink>) -> Step {
    if let Some(why) = &frame.incomplete {
        tracing::warn!(
            "a {} frame did not arrive whole: {why}{}",
            frame.command,
            if frame.command == Command::Message {
                "; it is handed over marked `x-golconde-transport-error`"
            } else {
                ""
            }
        );
    }
    match frame.command {
        Command::Message => match sink {
            Some(sink) => match Incoming::from_frame(frame, sink.generation) {
                Ok(incoming) => Step::Deliver(incoming),
                Err(e) => Step::Stop(e),
            },
            None => {
                tracing::debug!("ignoring a MESSAGE on a connection without subscription");
                Step::Continue
            }
        },
        Command::Receipt => {
            match frame.header("receipt-id") {
                Some(id) => state.settle(id, Ok(())),
                None => tracing::debug!("RECEIPT without receipt-id"),
            }
            Step::Continue
        }
        Command::Error => {
            let text = describe_error_frame(&frame);
            if let Some(id) = frame.header("receipt-id") {
                state.settle(id, Err(StompError::Rejected(text.clone())));
            }
            // Brokers do not always name the request an ERROR answers (RabbitMQ never
            // does), so it is charged to whatever is waiting, if anything.
            let waiting = !state.receipts().waiting.is_empty();
            Step::Stop(if waiting {
                StompError::Rejected(text)
            } else {
                StompError::Broker(text)
            })
        }
        other => {
            tracing::debug!("ignoring an unexpected {other} frame");
            Step::Continue
        }
    }
}

/// Reads frames until the connection ends. Deliveries go to the consumer in batches of
/// whatever one read brought (frames already buffered are taken without waiting), so the
/// host's thread is woken once per batch rather than once per message.
async fn read_loop<R: AsyncRead + Unpin>(
    mut frames: FramedRead<R, StompCodec>,
    state: Arc<State>,
    sink: Option<Sink>,
    silence: Option<Duration>,
    low_water: Option<LowWater>,
) {
    let mut batch = Vec::new();
    let reason = 'read: loop {
        let next = match silence {
            None => tokio::select! {
                biased;
                _ = state.closed.cancelled() => break None,
                next = frames.next() => next,
            },
            Some(limit) => tokio::select! {
                biased;
                _ = state.closed.cancelled() => break None,
                next = timeout(limit, frames.next()) => match next {
                    Ok(next) => next,
                    Err(_) => break Some(StompError::HeartbeatMissed(limit.as_millis() as u64)),
                },
            },
        };
        let mut next = Some(next);
        while let Some(item) = next.take() {
            match item {
                None => break 'read Some(StompError::Closed),
                Some(Err(e)) => break 'read Some(e.into()),
                Some(Ok(Item::Heartbeat)) => {}
                Some(Ok(Item::Frame(frame))) => match handle(frame, &state, sink.as_ref()) {
                    Step::Deliver(incoming) => {
                        let sink = sink
                            .as_ref()
                            .expect("only a consumer's connection delivers");
                        let room = match sink.try_make_room() {
                            Some(room) => room,
                            None => {
                                // The inbox is full: pass on what is batched, then wait
                                // for the host to take some.
                                if !batch.is_empty() && !send(sink, &mut batch) {
                                    break 'read None;
                                }
                                tokio::select! {
                                    biased;
                                    _ = state.closed.cancelled() => break 'read None,
                                    room = sink.make_room() => room,
                                }
                            }
                        };
                        // Without room the consumer is closing; the broker requeues it.
                        if room {
                            batch.push(incoming);
                        }
                    }
                    Step::Continue => {}
                    Step::Stop(reason) => break 'read Some(reason),
                },
            }
            if batch.len() < BATCH {
                next = frames.next().now_or_never();
            }
        }
        if let (Some(sink), false) = (&sink, batch.is_empty()) {
            let sent = batch.len();
            if !send(sink, &mut batch) {
                break None;
            }
            // The host has not taken the batch before this one: it is busy, and has work
            // for a while. The reader then lets the broker's frames gather in the socket
            // for [`NAP`], to take many in one read rather than waking for each few; the
            // low-water mark keeps the socket from waking the runtime's thread meanwhile
            // (see [`LowWater`]).
            if waiting(&sink.room, sink.capacity) > sent {
                let raised = low_water.as_ref().filter(|w| w.set(NAP_LOW_WATER).is_ok());
                tokio::select! {
                    biased;
                    _ = state.closed.cancelled() => break None,
                    _ = sleep(NAP) => {}
                }
                // A socket left quiet would hold back the next few frames for good: a new
                // connection is the safe way out, should the mark not go back.
                if let Some(Err(e)) = raised.map(|w| w.set(1)) {
                    break Some(StompError::Io(Arc::new(e)));
                }
            }
        }
    };
    state.fail(reason.unwrap_or(StompError::Closed));
}

/// Bytes that must be waiting in the socket for it to count as readable while the reader
/// naps: the broker's frames then gather without waking the runtime's thread for each.
const NAP_LOW_WATER: i32 = 64 * 1024;

/// Passes the batch on; `false` if the consumer is gone.
fn send(sink: &Sink, batch: &mut Vec<Incoming>) -> bool {
    // The next batch is likely about as large: sized up front, it is not grown step by step
    // (each step a larger allocation and a copy) for every batch of a drain.
    let next = Vec::with_capacity(batch.len());
    let sent = sink.deliveries.send(std::mem::replace(batch, next)).is_ok();
    sink.doorbell.ring();
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_are_the_larger_of_both_wishes_or_none() {
        assert_eq!(
            negotiate((1000, 2000), "3000,500").unwrap(),
            (Some(1000), Some(3000))
        );
        assert_eq!(
            negotiate((0, 2000), "3000,500").unwrap(),
            (None, Some(3000))
        );
        assert_eq!(negotiate((1000, 2000), "0,0").unwrap(), (None, None));
        assert!(negotiate((1000, 1000), "soon").is_err());
    }
}

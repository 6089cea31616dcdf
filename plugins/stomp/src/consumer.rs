//! A subscription that survives connection loss, and the delivery tags the host sees.
//!
//! A supervisor task owns the connection: when it is lost (socket closed, ERROR frame,
//! missed heart-beats) the supervisor reconnects with exponential backoff and subscribes
//! again; the broker redelivers whatever was not acknowledged. With several brokers, each
//! round of reconnection tries every broker once, starting with the one after the broker
//! that was lost (a node lost mid-stream is tried last), and the backoff is only between
//! rounds. The host's threads never
//! wait on the runtime per message: the connection's reader fills a channel with batches
//! (what one socket read brought) and `Consumer::receive` drains it in bulk, entering the
//! runtime only to wait when the channel is empty. **Invariant:** the inbox (that channel
//! and what `receive` holds back of a batch) never holds more than `prefetch` deliveries:
//! each takes a permit of [`Sink::room`] before the reader passes it on, and `receive`
//! gives it back when the host takes it, so a broker that ignores the prefetch (or a
//! `prefetch_header` of `""`) fills TCP buffers, not memory.
//!
//! Delivery tags are the consumer's, not the broker's: a counter that never restarts,
//! assigned when a delivery is handed to the host, so tags increase in delivery order and
//! stay unique across reconnections. The `Ledger` maps each tag still pending to the
//! MESSAGE's `ack` id on the connection it came from. **Invariant:** a tag of a connection
//! that is gone is never acknowledged on another one: when a connection is lost its
//! pending tags are forgotten (acknowledging them is an error, and the broker redelivers
//! those messages), and deliveries still in the channel from it are dropped unseen.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use golconde_plugin_api::{AckMode, ConsumeOptions, Consumer, Delivery, PluginError};
use tokio::{
    sync::{mpsc, Semaphore},
    task::JoinHandle,
    time::{sleep, timeout},
};
use tokio_util::sync::CancellationToken;
use tracing::instrument::WithSubscriber;

use crate::{
    codec::Item,
    config::Settings,
    connection::{self, open_any, Connection, Doorbell, Sink},
    error::StompError,
    frame::{Command, Frame},
    message::Incoming,
    Runtime,
};

/// The live connection's queue of outgoing frames, and which connection it is.
struct Link {
    generation: u64,
    outgoing: mpsc::UnboundedSender<Item>,
}

/// Which delivery tags are pending, and on which connection.
struct Ledger {
    next_tag: u64,
    /// Tags below this came over a connection that is gone.
    first_live_tag: u64,
    live: Option<Link>,
    /// Tags handed to the host and not yet settled, in tag order, with their `ack` ids.
    pending: VecDeque<(u64, String)>,
}

impl Ledger {
    fn switch(&mut self, live: Option<Link>) {
        self.live = live;
        self.pending.clear();
        self.first_live_tag = self.next_tag;
    }
}

/// What the host's threads and the supervisor share.
struct Shared {
    ledger: Mutex<Ledger>,
    /// Why the last reconnection attempt failed, while the consumer has no connection.
    failure: Mutex<Option<StompError>>,
    mode: AckMode,
    /// "`/queue/q` on 127.0.0.1:61613" (or on `[a:61613, b:61613]`), for messages.
    place: String,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Clone, Copy)]
enum Verdict {
    Ack,
    Nack { requeue: bool },
}

impl Shared {
    fn go_live(&self, generation: u64, outgoing: mpsc::UnboundedSender<Item>) {
        lock(&self.ledger).switch(Some(Link {
            generation,
            outgoing,
        }));
    }

    fn go_dead(&self) {
        lock(&self.ledger).switch(None);
    }

    /// Gives tags to deliveries of the live connection; those of dead ones are dropped,
    /// since the broker will deliver them again.
    fn hand_over(&self, items: &mut Vec<Incoming>) -> Vec<Delivery> {
        let mut ledger = lock(&self.ledger);
        let live = ledger.live.as_ref().map(|l| l.generation);
        let mut out = Vec::with_capacity(items.len());
        for item in items.drain(..) {
            if Some(item.generation) != live {
                continue;
            }
            let tag = ledger.next_tag;
            ledger.next_tag += 1;
            ledger.pending.push_back((tag, item.ack_id));
            out.push(Delivery {
                tag,
                redelivered: item.redelivered,
                message: item.message,
            });
        }
        out
    }

    fn settle(&self, tag: u64, multiple: bool, verdict: Verdict) -> Result<(), PluginError> {
        let mut ledger = lock(&self.ledger);
        if tag == 0 || tag >= ledger.next_tag {
            return Err(PluginError::permanent(format!(
                "delivery tag {tag} was never handed out by the consumer of {}",
                self.place
            )));
        }
        if tag < ledger.first_live_tag {
            return Err(self.lost_tag(tag));
        }
        let Ledger { live, pending, .. } = &mut *ledger;
        let Some(link) = live else {
            return Err(self.lost_tag(tag));
        };
        let at = pending.partition_point(|(t, _)| *t < tag);
        let found = pending.get(at).is_some_and(|(t, _)| *t == tag);
        let ids: Vec<String> = if multiple {
            let end = if found { at + 1 } else { at };
            let mut settled = pending.drain(..end).map(|(_, id)| id);
            match self.mode {
                // `ack:client`: settling the last one settles all before it (dropping the
                // drain removes the rest from the ledger).
                AckMode::Cumulative => settled.next_back().into_iter().collect(),
                AckMode::Individual => settled.collect(),
            }
        } else {
            if !found {
                return Err(PluginError::permanent(format!(
                    "delivery tag {tag} of {} was already acknowledged or rejected",
                    self.place
                )));
            }
            if self.mode == AckMode::Cumulative && at > 0 {
                return Err(PluginError::permanent(format!(
                    "cannot settle delivery tag {tag} of {} on its own: the consumer \
                     acknowledges cumulatively (STOMP `ack:client`), which would also settle \
                     the {at} earlier deliveries still pending; settle those first, pass \
                     `multiple`, or consume with AckMode::Individual",
                    self.place
                )));
            }
            pending.remove(at).map(|(_, id)| id).into_iter().collect()
        };
        for id in ids {
            let frame = match verdict {
                Verdict::Ack => Frame::new(Command::Ack).with_header("id", id),
                Verdict::Nack { requeue } => {
                    let frame = Frame::new(Command::Nack).with_header("id", id);
                    // RabbitMQ's extension; other brokers apply their redelivery policy.
                    if requeue {
                        frame
                    } else {
                        frame.with_header("requeue", "false")
                    }
                }
            };
            if link.outgoing.send(Item::Frame(frame)).is_err() {
                return Err(self.lost_tag(tag));
            }
        }
        Ok(())
    }

    fn lost_tag(&self, tag: u64) -> PluginError {
        PluginError::transient(format!(
            "delivery tag {tag} of {} came over a connection that has since been lost; it \
             cannot be settled, and the broker will deliver the message again",
            self.place
        ))
    }
}

/// What it takes to (re)open the subscription.
struct Subscription {
    settings: Settings,
    destination: String,
    options: ConsumeOptions,
    deliveries: mpsc::UnboundedSender<Vec<Incoming>>,
    room: Arc<Semaphore>,
    shared: Arc<Shared>,
    /// The position in `settings.brokers` the next connection attempt starts at.
    next_broker: usize,
    /// Last, so that it rings after `deliveries` is dropped: the supervisor is done, and a
    /// host thread waiting in `receive` finds the channel closed.
    doorbell: Ringer,
}

/// Rings its doorbell when dropped.
struct Ringer(Arc<Doorbell>);

impl Drop for Ringer {
    fn drop(&mut self) {
        self.0.ring();
    }
}

impl Subscription {
    /// Connects to the first broker that answers from `next_broker` on and subscribes.
    /// Answers the connection and the address of its broker.
    async fn open(&mut self, generation: u64) -> Result<(Connection, String), StompError> {
        let sink = Sink {
            deliveries: self.deliveries.clone(),
            room: self.room.clone(),
            capacity: self.options.prefetch as usize,
            generation,
            doorbell: self.doorbell.0.clone(),
        };
        let (connection, at) = open_any(&self.settings, self.next_broker, Some(sink)).await?;
        // Whatever becomes of this connection, the next one is tried elsewhere first.
        self.next_broker = (at + 1) % self.settings.brokers.len();
        let address = self.settings.brokers[at].address.clone();
        // Live before SUBSCRIBE: its deliveries must not be taken for a dead connection's.
        self.shared.go_live(generation, connection.outgoing());
        let ack = match self.options.ack_mode {
            AckMode::Cumulative => "client",
            AckMode::Individual => "client-individual",
        };
        let mut subscribe = Frame::new(Command::Subscribe)
            .with_header("id", "0")
            .with_header("destination", self.destination.as_str())
            .with_header("ack", ack);
        if let Some(header) = &self.settings.prefetch_header {
            subscribe = subscribe.with_header(header.as_str(), self.options.prefetch.to_string());
        }
        match connection
            .call(subscribe, "waiting for the receipt of SUBSCRIBE")
            .await
        {
            Ok(()) => Ok((connection, address)),
            Err(e) => {
                self.shared.go_dead();
                Err(e)
            }
        }
    }
}

/// Doubling delays between reconnection attempts.
struct Backoff {
    next: Duration,
    initial: Duration,
    max: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            next: initial,
            initial,
            max,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }
}

async fn supervise(
    mut subscription: Subscription,
    mut connection: Connection,
    mut address: String,
    stop: CancellationToken,
) -> Result<(), StompError> {
    let shared = subscription.shared.clone();
    let settings = &subscription.settings;
    let mut backoff = Backoff::new(settings.reconnect_initial, settings.reconnect_max);
    let mut generation = 1;
    loop {
        let reason = tokio::select! {
            biased;
            _ = stop.cancelled() => {
                let result = connection.disconnect().await;
                shared.go_dead();
                return result;
            }
            reason = connection.lost() => reason,
        };
        shared.go_dead();
        drop(connection);
        tracing::warn!(
            address = %address,
            "consumer of {}: the connection to {address} is lost: {reason}; reconnecting \
             (unacknowledged messages will be redelivered)",
            shared.place
        );
        (connection, address) = loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(()),
                _ = sleep(backoff.next_delay()) => {}
            }
            generation += 1;
            // Not abandoned when the consumer is closed meanwhile: the broker may already
            // have delivered on the new connection and the host acknowledged it. The loop
            // above then says DISCONNECT, so those acknowledgements take effect.
            let attempt = subscription.open(generation).await;
            match attempt {
                Ok((connection, address)) => {
                    backoff.reset();
                    *lock(&shared.failure) = None;
                    tracing::info!(
                        address = %address,
                        "consumer of {}: reconnected to {address}",
                        shared.place
                    );
                    break (connection, address);
                }
                Err(e) => {
                    tracing::warn!(
                        "consumer of {}: cannot reconnect: {e}; retrying",
                        shared.place
                    );
                    *lock(&shared.failure) = Some(e);
                }
            }
        };
    }
}

/// Deliveries on their way to the host: the channel from the connection, and what is left
/// of a batch larger than the host asked for. Only `try_recv` is used on the channel: the
/// host's thread waits on the [`Doorbell`], never in the runtime.
struct Inbox {
    channel: mpsc::UnboundedReceiver<Vec<Incoming>>,
    spill: VecDeque<Incoming>,
    /// Where `receive` gathers a batch; kept, with its capacity, for the next one.
    scratch: Vec<Incoming>,
}

impl Inbox {
    /// Moves what is already there, up to `max` in all, into `items`, without waiting.
    fn drain_into(&mut self, items: &mut Vec<Incoming>, max: usize) {
        while items.len() < max {
            if let Some(item) = self.spill.pop_front() {
                items.push(item);
                continue;
            }
            match self.channel.try_recv() {
                Ok(batch) => self.spill.extend(batch),
                Err(_) => break,
            }
        }
    }
}

/// A subscription to one destination; see the module documentation.
pub struct StompConsumer {
    runtime: Arc<Runtime>,
    inbox: Mutex<Inbox>,
    /// The inbox's free places; see the module documentation.
    room: Arc<Semaphore>,
    prefetch: usize,
    shared: Arc<Shared>,
    doorbell: Arc<Doorbell>,
    stop: CancellationToken,
    supervisor: Mutex<Option<JoinHandle<Result<(), StompError>>>>,
    close_limit: Duration,
}

impl StompConsumer {
    /// Connects and subscribes before returning, so that a bad login or destination is
    /// reported here, by `consume`.
    pub(crate) fn start(
        runtime: Arc<Runtime>,
        settings: Settings,
        destination: String,
        options: ConsumeOptions,
    ) -> Result<StompConsumer, PluginError> {
        let place = format!("`{destination}` on {}", settings.target());
        if options.prefetch == 0 {
            return Err(PluginError::config(format!(
                "consuming {place}: a `prefetch` of 0 (no limit) is refused: the consumer \
                 holds at most `prefetch` deliveries the host has not taken yet, so it must be \
                 at least 1; set the pipeline's `prefetch`"
            )));
        }
        let prefetch = options.prefetch as usize;
        let room = Arc::new(Semaphore::new(prefetch));
        let (sender, channel) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            ledger: Mutex::new(Ledger {
                next_tag: 1,
                first_live_tag: 1,
                live: None,
                pending: VecDeque::new(),
            }),
            failure: Mutex::new(None),
            mode: options.ack_mode,
            place: place.clone(),
        });
        let close_limit = settings.receipt_timeout + Duration::from_secs(1);
        let doorbell = Arc::new(Doorbell::default());
        let mut subscription = Subscription {
            settings,
            destination,
            options,
            deliveries: sender,
            room: room.clone(),
            shared: shared.clone(),
            next_broker: 0,
            doorbell: Ringer(doorbell.clone()),
        };
        let (connection, address) = runtime
            .block_on(subscription.open(1))
            .map_err(|e| e.to_plugin(&format!("subscribing to {place}")))?;
        let stop = CancellationToken::new();
        let supervisor = runtime.spawn(
            supervise(subscription, connection, address.clone(), stop.clone())
                .with_current_subscriber(),
        );
        tracing::debug!("consuming {place} from {address}");
        Ok(StompConsumer {
            runtime,
            inbox: Mutex::new(Inbox {
                channel,
                spill: VecDeque::new(),
                scratch: Vec::new(),
            }),
            room,
            prefetch,
            shared,
            doorbell,
            stop,
            supervisor: Mutex::new(Some(supervisor)),
            close_limit,
        })
    }

    /// How many deliveries have come from the broker and wait for the host to take them:
    /// never more than the prefetch.
    pub fn waiting(&self) -> usize {
        connection::waiting(&self.room, self.prefetch)
    }

    fn stopped(&self) -> PluginError {
        PluginError::transient(format!(
            "the consumer of {} is closed; open a new one",
            self.shared.place
        ))
    }
}

impl Consumer for StompConsumer {
    fn receive(&self, max: usize, timeout: Duration) -> Result<Vec<Delivery>, PluginError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        // A timeout too large for an `Instant` means waiting for as long as it takes.
        let deadline = Instant::now().checked_add(timeout);
        let mut inbox = lock(&self.inbox);
        let mut items = std::mem::take(&mut inbox.scratch);
        loop {
            inbox.drain_into(&mut items, max);
            // Taken off the inbox, whether handed over or dropped as a dead connection's.
            self.room.add_permits(items.len());
            let handed = self.shared.hand_over(&mut items);
            if !handed.is_empty() {
                inbox.scratch = items;
                return Ok(handed);
            }
            if let Some(failure) = lock(&self.shared.failure).as_ref() {
                return Err(failure.to_plugin(&format!(
                    "consumer of {} has lost its connection and is reconnecting",
                    self.shared.place
                )));
            }
            if self.stop.is_cancelled() {
                return Err(self.stopped());
            }
            // Armed before looking again, so that a batch sent in between rings for it.
            self.doorbell.arm();
            if !inbox.channel.is_empty() {
                self.doorbell.disarm();
                continue;
            }
            if inbox.channel.is_closed() {
                self.doorbell.disarm();
                return Err(self.stopped());
            }
            match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        self.doorbell.disarm();
                        return Ok(Vec::new());
                    }
                    std::thread::park_timeout(left);
                }
                None => std::thread::park(),
            }
            self.doorbell.disarm();
        }
    }

    fn ack(&self, tag: u64, multiple: bool) -> Result<(), PluginError> {
        self.shared.settle(tag, multiple, Verdict::Ack)
    }

    fn nack(&self, tag: u64, multiple: bool, requeue: bool) -> Result<(), PluginError> {
        self.shared.settle(tag, multiple, Verdict::Nack { requeue })
    }

    /// Says DISCONNECT and waits for its receipt, so every acknowledgement sent before has
    /// taken effect; unacknowledged messages go back to the queue.
    fn close(&self) -> Result<(), PluginError> {
        // The reader must not wait for room while DISCONNECT's receipt is on its way.
        self.room.close();
        self.stop.cancel();
        let Some(supervisor) = lock(&self.supervisor).take() else {
            return Ok(());
        };
        let context = format!("closing the consumer of {}", self.shared.place);
        match self
            .runtime
            .block_on(async { timeout(self.close_limit, supervisor).await })
        {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(e.to_plugin(&format!(
                "{context} (acknowledgements sent just before may be lost; those messages \
                 will be redelivered)"
            ))),
            Ok(Err(e)) => Err(PluginError::transient(format!("{context}: {e}"))),
            Err(_) => Err(PluginError::transient(format!(
                "{context}: the broker did not confirm DISCONNECT in time"
            ))),
        }
    }
}

impl Drop for StompConsumer {
    fn drop(&mut self) {
        // The supervisor says DISCONNECT on its own; nothing waits for it.
        self.room.close();
        self.stop.cancel();
    }
}

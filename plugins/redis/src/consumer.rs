//! A consumer of one stream in one consumer group: what it reads first, what it holds,
//! how it acknowledges, and how it survives a lost connection.
//!
//! Redis remembers, per consumer name, every entry delivered and not yet acknowledged
//! (the pending list), whatever happens to connections. That makes a consumer simple and
//! its tags durable:
//! - **Reading order.** A consumer reads its own pending list first (`XREADGROUP ... 0`),
//!   in id order, flagged redelivered: what this process was given before (by a consumer
//!   closed since, or on a connection lost before the reply arrived) and never
//!   acknowledged. Then, every `claim_idle_ms`, it claims with `XAUTOCLAIM` what other
//!   consumers left idle that long (a process that died), also flagged redelivered. Then
//!   new entries (`XREADGROUP ... >`), waiting with `BLOCK`.
//! - **Nothing newer before what others held.** Consumer names are per process, so the
//!   process that replaces a killed one cannot read the dead one's entries as its own:
//!   they wait for `XAUTOCLAIM`, and new entries read meanwhile would be applied first,
//!   an older version of a row overwriting a newer one. So when a consumer starts, and
//!   again on each new connection, it looks up (`XPENDING` summary) the entries pending
//!   for other consumers and the highest id pending (`Earlier`). Until none up to that
//!   id is another's (each acknowledged by its owner or claimed by this consumer), it
//!   reads its pending list and claims, never `>`: `receive` returns empty at its
//!   timeout. It looks every `EARLIER_POLL` (`XPENDING key g - last n`), and sets its
//!   claim round for when the idlest of them can be claimed, so a dead consumer's entries
//!   come `claim_idle_ms` after it last touched them. Entries another consumer takes
//!   after the look have higher ids (`>` reads past the group's last delivered id), so a
//!   competing live consumer is waited for once, not forever.
//! - **Holding.** A delivery the host has not settled is *held*: its entry is pending for
//!   this consumer. At most `prefetch` are held at once (`COUNT` is the room left).
//!   Every third of `claim_idle_ms` a background task resets the idle time of the held
//!   entries that are still this consumer's (a Lua script: `XPENDING` per id, then
//!   `XCLAIM ... JUSTID` of those it owns), so that another process's `XAUTOCLAIM` never
//!   takes an entry whose batch is in flight. That is why `claim_idle_ms` is safe however
//!   long a batch takes, as long as this process lives and reaches Redis.
//! - **Tags** are the consumer's: a counter, increasing in delivery order, never reused.
//!   Each maps to an entry id, and `XACK` names ids, not connections: a tag handed over
//!   before a reconnection still settles exactly its own entry afterwards. After a
//!   reconnection the consumer reads its pending list again, skipping held entries, so an
//!   entry whose `XREADGROUP` reply was lost with the connection comes next.
//! - **Acknowledging** is one `XACK` of every id settled. `nack` with requeue forgets the
//!   deliveries (nothing is sent: the entries stay pending) and makes the next `receive`
//!   read the pending list again, so they come first; without requeue it acknowledges
//!   them (the entry stays in the stream, the group never delivers it again). `close`
//!   sends nothing: what was held stays pending under this consumer name.
//!
//! **Consumer names.** A process consumes under `consumer_name` (by default
//! `<hostname>-<pid>`). Two consumers of the same group open at once in one process (a
//! tool beside a pipeline, or an older host naming groups after queues) must not share a
//! pending list, so the second gets `<name>-1`, the third `<name>-2`; a name is free again
//! when its consumer is closed, so the consumer a restarted dispatcher opens takes the
//! first name back and its predecessor's pending list with it.
//!
//! May depend on: [`crate::resp`], [`crate::publisher`] (the pool, the refresh script),
//! [`crate::entry`], [`crate::config`], tokio.

use std::{
    collections::{BTreeSet, HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError},
    time::Duration,
};

use golconde_plugin_api::{ConsumeOptions, Consumer, Delivery, PluginError};
use tokio::{
    sync::watch,
    task::JoinHandle,
    time::{sleep, sleep_until, Instant},
};
use tracing::instrument::WithSubscriber;

use crate::{
    config::{Declare, Settings},
    entry::EntryId,
    error::Error,
    publisher::{refresh, Pool},
    resp::{within, Batch, Conn, Entry, Limits, Reply},
    Runtime,
};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The consumer names in use in this process, per server, stream, group and base name:
/// the suffixes taken (0 for the base name itself).
fn names() -> &'static Mutex<HashMap<String, BTreeSet<usize>>> {
    static NAMES: OnceLock<Mutex<HashMap<String, BTreeSet<usize>>>> = OnceLock::new();
    NAMES.get_or_init(Default::default)
}

/// A consumer name held by one open consumer of this process.
struct NameSlot {
    scope: String,
    index: usize,
}

impl NameSlot {
    /// The first name of `base` free in `scope`.
    fn take(scope: String, base: &str) -> (NameSlot, String) {
        let mut names = lock(names());
        let taken = names.entry(scope.clone()).or_default();
        let index = (0..).find(|i| !taken.contains(i)).unwrap_or(0);
        taken.insert(index);
        let name = if index == 0 {
            base.to_string()
        } else {
            format!("{base}-{index}")
        };
        (NameSlot { scope, index }, name)
    }
}

impl Drop for NameSlot {
    fn drop(&mut self) {
        let mut names = lock(names());
        if let Some(taken) = names.get_mut(&self.scope) {
            taken.remove(&self.index);
            if taken.is_empty() {
                names.remove(&self.scope);
            }
        }
    }
}

/// The deliveries the host has not settled, in tag order, and the next tag.
struct Held {
    next_tag: u64,
    entries: VecDeque<(u64, EntryId)>,
}

/// What the host's calls and the refresh task share.
struct Shared {
    settings: Arc<Settings>,
    pool: Arc<Pool>,
    key: String,
    group: String,
    consumer: String,
    /// "stream `k` (group `g`, consumer `c`) on redis://...", for messages.
    place: String,
    held: Mutex<Held>,
}

/// Where the next read starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// This consumer's own pending list, after this id.
    Own(EntryId),
    /// New entries (`>`).
    New,
}

/// Entries other consumers of the group held when this consumer connected: until they
/// settle, no new entry is read (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Earlier {
    /// Not looked up yet on this connection.
    Unknown,
    /// Entries up to `last` were pending for other consumers; some may still be.
    Pending {
        last: EntryId,
        since: Instant,
        /// When to look again whether they are.
        check_at: Instant,
    },
    /// None is pending for another consumer any more (or none was).
    Settled,
}

/// How often a consumer waiting for [`Earlier`] entries looks whether they settled. A
/// dead consumer's entries are claimed as soon as they are idle for `claim_idle_ms`
/// whatever this is (the wait asks how idle they are); this bounds how late a live
/// consumer's acknowledgement is noticed.
const EARLIER_POLL: Duration = Duration::from_millis(250);

/// Added to the moment an entry becomes claimable when its claim round is set: that moment
/// is counted from before `XPENDING` measured the entry's idle time, so it is a little
/// early, and a round run too early finds nothing.
const CLAIM_MARGIN: Duration = Duration::from_millis(10);

/// The most entries of the pending list looked at in one `XPENDING` when checking
/// whether the earlier entries settled.
const EARLIER_PAGE: usize = 500;

/// The state of the host's side: the reading connection and where reading stands.
struct State {
    conn: Option<Conn>,
    phase: Phase,
    /// What must settle before new entries are read, on this connection.
    earlier: Earlier,
    /// When the next `XAUTOCLAIM` round is due.
    claim_due: Instant,
    /// Where the `XAUTOCLAIM` round under way stands.
    claim_cursor: EntryId,
    backoff: Backoff,
    /// When the next connection attempt may be made, after a failed one.
    retry_at: Option<Instant>,
    /// Why the last connection attempt failed, while there is no connection.
    failure: Option<Error>,
    closed: bool,
}

/// Doubling delays between reconnection attempts.
struct Backoff {
    next: Duration,
    initial: Duration,
    max: Duration,
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// A consumer of one stream; see the module documentation.
pub struct RedisConsumer {
    runtime: Arc<Runtime>,
    shared: Arc<Shared>,
    state: Mutex<State>,
    prefetch: usize,
    stop: watch::Sender<bool>,
    refresher: Mutex<Option<JoinHandle<()>>>,
    slot: Mutex<Option<NameSlot>>,
}

impl Shared {
    fn limits(&self) -> Limits {
        Limits {
            max_entry_bytes: self.settings.max_entry_bytes,
            max_headers: self.settings.max_headers,
        }
    }

    /// Opens a connection and makes sure the group is there, as `declare` says.
    async fn open(&self) -> Result<Conn, Error> {
        let mut conn = Conn::open(&self.settings).await?;
        self.declare(&mut conn).await?;
        Ok(conn)
    }

    async fn declare(&self, conn: &mut Conn) -> Result<(), Error> {
        let (key, group) = (self.key.as_bytes(), self.group.as_bytes());
        let limit = self.settings.response_timeout;
        match self.settings.declare {
            Declare::Create => {
                // From id 0: entries written before the group existed are consumed too.
                let created = conn
                    .call(
                        &[b"XGROUP", b"CREATE", key, group, b"0", b"MKSTREAM"],
                        limit,
                        "creating the consumer group",
                    )
                    .await;
                match created {
                    Ok(_) => {
                        tracing::info!("created the consumer group of {}", self.place);
                        Ok(())
                    }
                    Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Declare::Passive => {
                let groups = conn
                    .call(
                        &[b"XINFO", b"GROUPS", key],
                        limit,
                        "looking up the consumer group",
                    )
                    .await;
                let groups = match groups {
                    Ok(Reply::Array(groups)) => groups,
                    Ok(other) => {
                        return Err(Error::Malformed(format!("XINFO GROUPS answered {other:?}")))
                    }
                    Err(e) if e.to_string().contains("no such key") => {
                        return Err(Error::Missing(format!(
                            "the stream `{}` does not exist, and `declare = \"passive\"` does \
                             not create it: create it and its group with `XGROUP CREATE {} {} 0 \
                             MKSTREAM`, or set `declare = \"create\"`",
                            self.key, self.key, self.group
                        )))
                    }
                    Err(e) => return Err(e),
                };
                let named = |info: &Reply| match info {
                    Reply::Array(fields) => fields.chunks(2).any(|pair| {
                        pair[0].text() == Some("name")
                            && pair.get(1).and_then(Reply::text) == Some(self.group.as_str())
                    }),
                    _ => false,
                };
                if groups.iter().any(named) {
                    Ok(())
                } else {
                    Err(Error::Missing(format!(
                        "the stream `{}` has no consumer group `{}`, and `declare = \
                         \"passive\"` does not create it: create it with `XGROUP CREATE {} {} \
                         0` (0: from the first entry; $: only entries added from then on), or \
                         set `declare = \"create\"`",
                        self.key, self.group, self.key, self.group
                    )))
                }
            }
        }
    }

    fn held_ids(&self) -> Vec<EntryId> {
        lock(&self.held).entries.iter().map(|(_, id)| *id).collect()
    }

    /// Gives tags to the entries of a reply, skipping those already held (a pending list
    /// read again) and setting aside those gone from the stream.
    fn hand_over(
        &self,
        entries: Vec<Entry>,
        redelivered: bool,
        gone: &mut Vec<EntryId>,
    ) -> Vec<Delivery> {
        let mut held = lock(&self.held);
        let already: HashSet<EntryId> = if redelivered {
            held.entries.iter().map(|(_, id)| *id).collect()
        } else {
            HashSet::new()
        };
        let mut deliveries = Vec::with_capacity(entries.len());
        for entry in entries {
            if already.contains(&entry.id) {
                continue;
            }
            let Some(message) = entry.message else {
                gone.push(entry.id);
                continue;
            };
            let tag = held.next_tag;
            held.next_tag += 1;
            held.entries.push_back((tag, entry.id));
            deliveries.push(Delivery {
                tag,
                redelivered,
                message,
            });
        }
        deliveries
    }

    /// The ids of the held deliveries `tag` (and with `multiple`, every earlier one)
    /// settles; empty if `multiple` and they are all settled already.
    fn settling(&self, tag: u64, multiple: bool) -> Result<Vec<EntryId>, PluginError> {
        let held = lock(&self.held);
        if tag == 0 || tag >= held.next_tag {
            return Err(PluginError::permanent(format!(
                "delivery tag {tag} was never handed out by the consumer of {}",
                self.place
            )));
        }
        if multiple {
            return Ok(held
                .entries
                .iter()
                .take_while(|(t, _)| *t <= tag)
                .map(|(_, id)| *id)
                .collect());
        }
        match held.entries.iter().find(|(t, _)| *t == tag) {
            Some((_, id)) => Ok(vec![*id]),
            None => Err(PluginError::permanent(format!(
                "delivery tag {tag} of {} was already acknowledged or rejected",
                self.place
            ))),
        }
    }

    /// Forgets settled deliveries.
    fn settled(&self, tag: u64, multiple: bool) {
        let mut held = lock(&self.held);
        if multiple {
            while held.entries.front().is_some_and(|(t, _)| *t <= tag) {
                held.entries.pop_front();
            }
        } else if let Some(at) = held.entries.iter().position(|(t, _)| *t == tag) {
            held.entries.remove(at);
        }
    }

    /// `XREADGROUP GROUP g c COUNT n [BLOCK ms] STREAMS key id`.
    async fn read_group(
        &self,
        conn: &mut Conn,
        count: usize,
        block: Option<Duration>,
        from: Phase,
    ) -> Result<Batch, Error> {
        conn.begin(if block.is_some() { 11 } else { 9 });
        conn.arg(b"XREADGROUP");
        conn.arg(b"GROUP");
        conn.arg(self.group.as_bytes());
        conn.arg(self.consumer.as_bytes());
        conn.arg(b"COUNT");
        conn.arg_u64(count as u64);
        if let Some(block) = block {
            conn.arg(b"BLOCK");
            conn.arg_u64(block.as_millis() as u64);
        }
        conn.arg(b"STREAMS");
        conn.arg(self.key.as_bytes());
        match from {
            Phase::Own(after) => conn.arg(after.text().as_bytes()),
            Phase::New => conn.arg(b">"),
        }
        let limit = self.settings.response_timeout + block.unwrap_or_default();
        let limits = self.limits();
        within(limit, "reading entries", "response_timeout_ms", async {
            conn.send().await?;
            conn.read_group_reply(limits).await
        })
        .await?
    }

    /// `XAUTOCLAIM key g c claim_idle_ms cursor COUNT n`.
    async fn auto_claim(
        &self,
        conn: &mut Conn,
        cursor: EntryId,
        count: usize,
    ) -> Result<Batch, Error> {
        conn.begin(8);
        conn.arg(b"XAUTOCLAIM");
        conn.arg(self.key.as_bytes());
        conn.arg(self.group.as_bytes());
        conn.arg(self.consumer.as_bytes());
        conn.arg_u64(self.settings.claim_idle.as_millis() as u64);
        conn.arg(cursor.text().as_bytes());
        conn.arg(b"COUNT");
        conn.arg_u64(count as u64);
        let limits = self.limits();
        within(
            self.settings.response_timeout,
            "claiming idle entries",
            "response_timeout_ms",
            async {
                conn.send().await?;
                conn.auto_claim_reply(limits).await
            },
        )
        .await?
    }

    /// Looks up, with `XPENDING key g`, the entries pending for other consumers of the
    /// group now; logs what it finds, since reading new entries waits for them.
    async fn survey(&self, conn: &mut Conn) -> Result<Earlier, Error> {
        let reply = conn
            .call(
                &[b"XPENDING", self.key.as_bytes(), self.group.as_bytes()],
                self.settings.response_timeout,
                "looking up the entries pending for other consumers",
            )
            .await?;
        let malformed = || Error::Malformed(format!("XPENDING (summary) answered {reply:?}"));
        let Reply::Array(summary) = &reply else {
            return Err(malformed());
        };
        match summary.first() {
            Some(Reply::Int(0)) => return Ok(Earlier::Settled),
            Some(Reply::Int(_)) => {}
            _ => return Err(malformed()),
        }
        let (Some(Reply::Bulk(last)), Some(Reply::Array(consumers))) =
            (summary.get(2), summary.get(3))
        else {
            return Err(malformed());
        };
        let last = EntryId::parse(last).ok_or_else(malformed)?;
        let mut others = 0u64;
        for consumer in consumers {
            let Reply::Array(pair) = consumer else {
                return Err(malformed());
            };
            let (Some(Reply::Bulk(name)), Some(count)) = (pair.first(), pair.get(1)) else {
                return Err(malformed());
            };
            if name.as_slice() != self.consumer.as_bytes() {
                others += count
                    .text()
                    .and_then(|n| n.parse::<u64>().ok())
                    .ok_or_else(malformed)?;
            }
        }
        if others == 0 {
            return Ok(Earlier::Settled);
        }
        // The highest id pending for anyone, ours included: an entry up to it that is
        // another's later can only be one pending at this moment (ours too, if another
        // claims it), since `>` reads past the group's last delivered id, at least this.
        tracing::info!(
            "consumer `{}` on {}: waiting up to {} s for {others} {} another consumer of group \
             `{}` left pending on `{}` (a process that stopped?), so that they apply before \
             newer ones (longer only if that consumer is alive and still holds them)",
            self.consumer,
            self.settings.target(),
            self.settings.claim_idle.as_secs_f64(),
            if others == 1 { "entry" } else { "entries" },
            self.group,
            self.key,
        );
        let now = Instant::now();
        Ok(Earlier::Pending {
            last,
            since: now,
            check_at: now,
        })
    }

    /// Whether an entry up to `last` is still pending for another consumer (`XPENDING key g
    /// - last n`, a page at a time past this consumer's own): the longest time one
    /// of those of the first page holding any has been idle, or `None` when none is left.
    async fn idlest_of_others(
        &self,
        conn: &mut Conn,
        last: EntryId,
    ) -> Result<Option<Duration>, Error> {
        let last = last.text();
        let mut start = b"-".to_vec();
        loop {
            let page = EARLIER_PAGE.to_string();
            let reply = conn
                .call(
                    &[
                        b"XPENDING",
                        self.key.as_bytes(),
                        self.group.as_bytes(),
                        start.as_slice(),
                        last.as_bytes(),
                        page.as_bytes(),
                    ],
                    self.settings.response_timeout,
                    "looking up the entries pending for other consumers",
                )
                .await?;
            let malformed = || Error::Malformed(format!("XPENDING (range) answered {reply:?}"));
            let Reply::Array(entries) = &reply else {
                return Err(malformed());
            };
            let mut idlest: Option<Duration> = None;
            let mut after = None;
            for entry in entries {
                let Reply::Array(fields) = entry else {
                    return Err(malformed());
                };
                let (Some(Reply::Bulk(id)), Some(Reply::Bulk(owner)), Some(Reply::Int(idle))) =
                    (fields.first(), fields.get(1), fields.get(2))
                else {
                    return Err(malformed());
                };
                after = Some(id);
                if owner.as_slice() != self.consumer.as_bytes() {
                    let idle = Duration::from_millis(u64::try_from(*idle).unwrap_or(0));
                    idlest = Some(idlest.map_or(idle, |longest| longest.max(idle)));
                }
            }
            if idlest.is_some() {
                return Ok(idlest);
            }
            match after {
                // A full page of this consumer's own: look past it.
                Some(id) if entries.len() >= EARLIER_PAGE => {
                    start = [b"(".as_slice(), id.as_slice()].concat();
                }
                _ => return Ok(None),
            }
        }
    }

    /// `XACK key g id...`.
    async fn xack(&self, conn: &mut Conn, ids: &[EntryId]) -> Result<(), Error> {
        conn.begin(3 + ids.len());
        conn.arg(b"XACK");
        conn.arg(self.key.as_bytes());
        conn.arg(self.group.as_bytes());
        for id in ids {
            conn.arg(id.text().as_bytes());
        }
        within(
            self.settings.response_timeout,
            "acknowledging",
            "response_timeout_ms",
            async {
                conn.send().await?;
                conn.reply().await
            },
        )
        .await??
        .ok()
        .map(drop)
    }
}

impl RedisConsumer {
    /// Connects and prepares the group before returning, so that a bad login or a missing
    /// group (`declare = "passive"`) is reported here, by `consume`.
    pub(crate) fn start(
        runtime: Arc<Runtime>,
        settings: Arc<Settings>,
        pool: Arc<Pool>,
        key: &str,
        group: &str,
        options: ConsumeOptions,
    ) -> Result<RedisConsumer, PluginError> {
        if key.is_empty() {
            return Err(PluginError::config(format!(
                "consuming on {}: the queue name (the stream's key) is empty",
                settings.target()
            )));
        }
        // The server and database, not the URL: two transports logging in as different
        // users still share the server's pending lists.
        let scope = format!(
            "{}/{}\0{key}\0{group}\0{}",
            settings.address(),
            settings.db,
            settings.consumer_name
        );
        let (slot, consumer) = NameSlot::take(scope, &settings.consumer_name);
        let place = format!(
            "stream `{key}` (group `{group}`, consumer `{consumer}`) on {}",
            settings.target()
        );
        if options.prefetch == 0 {
            return Err(PluginError::config(format!(
                "consuming {place}: a `prefetch` of 0 (no limit) is refused: the consumer \
                 holds at most `prefetch` unacknowledged entries, so it must be at least 1; \
                 set the pipeline's `prefetch`"
            )));
        }
        let shared = Arc::new(Shared {
            settings: settings.clone(),
            pool,
            key: key.to_string(),
            group: group.to_string(),
            consumer,
            place: place.clone(),
            held: Mutex::new(Held {
                next_tag: 1,
                entries: VecDeque::new(),
            }),
        });
        // What others hold is looked up now, before this consumer can read anything: an
        // entry another consumer takes from here on is newer than all of it.
        let (conn, earlier) = runtime
            .block_on(async {
                let mut conn = shared.open().await?;
                let earlier = shared.survey(&mut conn).await?;
                Ok::<_, Error>((conn, earlier))
            })
            .map_err(|e| e.to_plugin(&format!("consuming {place}")))?;
        let (stop, stopped) = watch::channel(false);
        let refresher =
            runtime.spawn(keep_fresh(shared.clone(), stopped).with_current_subscriber());
        tracing::debug!("consuming {place}");
        Ok(RedisConsumer {
            runtime,
            shared,
            state: Mutex::new(State {
                conn: Some(conn),
                phase: Phase::Own(EntryId::ZERO),
                earlier,
                claim_due: Instant::now(),
                claim_cursor: EntryId::ZERO,
                backoff: Backoff {
                    next: settings.reconnect_initial,
                    initial: settings.reconnect_initial,
                    max: settings.reconnect_max,
                },
                retry_at: None,
                failure: None,
                closed: false,
            }),
            prefetch: options.prefetch as usize,
            stop,
            refresher: Mutex::new(Some(refresher)),
            slot: Mutex::new(Some(slot)),
        })
    }

    /// The consumer name this consumer reads under.
    pub fn consumer_name(&self) -> &str {
        &self.shared.consumer
    }

    /// How many deliveries the host holds unsettled: never more than the prefetch.
    pub fn held(&self) -> usize {
        lock(&self.shared.held).entries.len()
    }

    fn closed_error(&self) -> PluginError {
        PluginError::transient(format!(
            "the consumer of {} is closed; open a new one",
            self.shared.place
        ))
    }

    /// Drops the reading connection after `error`: the next read starts again from the
    /// pending list, once reconnected, and what other consumers hold then is waited for
    /// again (another may have claimed what this one held, if the outage was long).
    fn lose(&self, state: &mut State, error: &Error) {
        if state.conn.take().is_some() {
            tracing::warn!(
                "consumer of {}: {error}; reconnecting (entries held stay pending for this \
                 consumer and can still be acknowledged)",
                self.shared.place
            );
        }
        state.phase = Phase::Own(EntryId::ZERO);
        state.earlier = Earlier::Unknown;
    }

    async fn receive_until(
        &self,
        state: &mut State,
        max: usize,
        deadline: Instant,
    ) -> Result<Vec<Delivery>, PluginError> {
        let mut recreated = false;
        loop {
            let room = max.min(self.prefetch.saturating_sub(self.held()));
            if room == 0 {
                // Nothing can come before the host settles something.
                sleep_until(deadline).await;
                return Ok(Vec::new());
            }
            if state.conn.is_none() {
                if let Some(at) = state.retry_at.filter(|at| *at > Instant::now()) {
                    if at >= deadline {
                        sleep_until(deadline).await;
                        return Err(self.reconnecting(state));
                    }
                    sleep_until(at).await;
                }
                match self.shared.open().await {
                    Ok(conn) => {
                        if state.failure.take().is_some() || state.retry_at.is_some() {
                            tracing::info!("consumer of {}: reconnected", self.shared.place);
                        }
                        state.conn = Some(conn);
                        state.retry_at = None;
                    }
                    Err(e) if !e.passes() => {
                        return Err(e.to_plugin(&format!("consuming {}", self.shared.place)))
                    }
                    Err(e) => {
                        tracing::warn!(
                            "consumer of {}: cannot reconnect: {e}; retrying",
                            self.shared.place
                        );
                        state.retry_at = Some(Instant::now() + state.backoff.next_delay());
                        state.failure = Some(e);
                        if Instant::now() >= deadline {
                            return Err(self.reconnecting(state));
                        }
                        continue;
                    }
                }
            }
            let read = self.step(state, room, deadline).await;
            if read.is_ok() {
                // Only a read that worked ends the backoff: a server that lets us in but
                // refuses to serve (a replica, one still loading) must not be hammered.
                state.backoff.reset();
            }
            match read {
                Ok(deliveries) if !deliveries.is_empty() => return Ok(deliveries),
                Ok(_) if Instant::now() >= deadline => return Ok(Vec::new()),
                Ok(_) => {}
                Err(e) if e.code() == Some("NOGROUP") && !recreated => {
                    // The group went away under the consumer: deleted, or the server
                    // restarted without the data.
                    if self.shared.settings.declare == Declare::Passive {
                        return Err(e.to_plugin(&format!("consuming {}", self.shared.place)));
                    }
                    tracing::warn!(
                        "consumer of {}: the consumer group is gone ({e}); creating it again \
                         from the first entry of the stream",
                        self.shared.place
                    );
                    recreated = true;
                    state.phase = Phase::Own(EntryId::ZERO);
                    state.earlier = Earlier::Unknown;
                    if let Some(conn) = state.conn.as_mut() {
                        if let Err(e) = self.shared.declare(conn).await {
                            self.lose(state, &e);
                        }
                    }
                }
                Err(e) if e.passes() => {
                    self.lose(state, &e);
                    state.retry_at = Some(Instant::now() + state.backoff.next_delay());
                    state.failure = Some(e);
                }
                Err(e) => return Err(e.to_plugin(&format!("consuming {}", self.shared.place))),
            }
        }
    }

    fn reconnecting(&self, state: &State) -> PluginError {
        let context = format!(
            "consumer of {} has lost its connection and is reconnecting",
            self.shared.place
        );
        match &state.failure {
            Some(failure) => failure.to_plugin(&context),
            None => PluginError::transient(context),
        }
    }

    /// One read: the pending list, else a claim round if one is due, else new entries once
    /// what other consumers held when this connection started has settled.
    async fn step(
        &self,
        state: &mut State,
        room: usize,
        deadline: Instant,
    ) -> Result<Vec<Delivery>, Error> {
        let shared = &self.shared;
        let Some(conn) = state.conn.as_mut() else {
            return Ok(Vec::new());
        };
        if state.earlier == Earlier::Unknown {
            state.earlier = shared.survey(conn).await?;
        }
        let mut gone = Vec::new();
        if let Phase::Own(after) = state.phase {
            let batch = shared.read_group(conn, room, None, state.phase).await?;
            let Some(last) = batch.entries.last().map(|e| e.id) else {
                state.phase = Phase::New;
                return Ok(Vec::new());
            };
            debug_assert!(last > after);
            state.phase = Phase::Own(last);
            let deliveries = shared.hand_over(batch.entries, true, &mut gone);
            if !gone.is_empty() {
                tracing::warn!(
                    "consumer of {}: entries {} were pending for this consumer but are gone \
                     from the stream (trimmed by `maxlen`/MAXLEN, or deleted) before they \
                     were acknowledged; they cannot be delivered again",
                    shared.place,
                    ids(&gone)
                );
                shared.xack(conn, &gone).await?;
            }
            return Ok(deliveries);
        }
        let now = Instant::now();
        if let Earlier::Pending {
            last,
            since,
            check_at,
        } = &mut state.earlier
        {
            if now >= *check_at {
                match shared.idlest_of_others(conn, *last).await? {
                    None => {
                        tracing::debug!(
                            "consumer of {}: what other consumers held when it connected is \
                             settled, after {:?}; reading new entries",
                            shared.place,
                            since.elapsed()
                        );
                        state.earlier = Earlier::Settled;
                    }
                    Some(idle) => {
                        // A dead consumer's entries are claimed as soon as they can be, not
                        // at the next regular round, which may be up to `claim_idle_ms` off.
                        let claimable =
                            now + shared.settings.claim_idle.saturating_sub(idle) + CLAIM_MARGIN;
                        state.claim_due = state.claim_due.min(claimable);
                        *check_at = now + EARLIER_POLL;
                    }
                }
            }
        }
        if now >= state.claim_due {
            let batch = shared.auto_claim(conn, state.claim_cursor, room).await?;
            match batch.cursor {
                Some(cursor) if cursor != EntryId::ZERO => state.claim_cursor = cursor,
                _ => {
                    state.claim_cursor = EntryId::ZERO;
                    state.claim_due = now + shared.settings.claim_idle;
                }
            }
            if !batch.deleted.is_empty() {
                tracing::warn!(
                    "consumer of {}: entries {} were left pending by another consumer but are \
                     gone from the stream (trimmed or deleted); they cannot be delivered",
                    shared.place,
                    ids(&batch.deleted)
                );
            }
            let deliveries = shared.hand_over(batch.entries, true, &mut gone);
            if !deliveries.is_empty() {
                if let Earlier::Pending { check_at, .. } = &mut state.earlier {
                    // These may have been the last: look again at the next read.
                    *check_at = now;
                }
                tracing::info!(
                    "consumer of {}: claimed {} entries another consumer left unacknowledged \
                     for more than `claim_idle_ms` ({} ms)",
                    shared.place,
                    deliveries.len(),
                    shared.settings.claim_idle.as_millis()
                );
                return Ok(deliveries);
            }
        }
        if let Earlier::Pending { check_at, .. } = state.earlier {
            // Nothing newer may come before them: wait for the next look, or for the claim
            // round that takes them.
            sleep_until(deadline.min(check_at).min(state.claim_due)).await;
            return Ok(Vec::new());
        }
        // New entries, waiting until the deadline or the next claim round.
        let until = deadline.min(state.claim_due);
        let wait = until.saturating_duration_since(Instant::now());
        let block = if wait.is_zero() {
            None
        } else {
            // Milliseconds, rounded up: a wait of less than one must not become "forever"
            // (BLOCK 0) nor a busy loop.
            Some(Duration::from_millis(wait.as_micros().div_ceil(1000) as u64))
        };
        let batch = shared.read_group(conn, room, block, Phase::New).await?;
        Ok(shared.hand_over(batch.entries, false, &mut gone))
    }

    /// Sends `XACK` for `ids` on the reading connection. `XACK` names entries, not
    /// deliveries of a connection, and acknowledging twice is harmless: when the
    /// connection turns out to be lost, it is sent once more on a new one.
    fn acknowledge(&self, ids: &[EntryId], what: &str) -> Result<(), PluginError> {
        let mut state = lock(&self.state);
        if state.closed {
            return Err(self.closed_error());
        }
        let shared = &self.shared;
        let result = self.runtime.block_on(async {
            if let Some(conn) = state.conn.as_mut() {
                match shared.xack(conn, ids).await {
                    Err(e) if e.is_lost() => self.lose(&mut state, &e),
                    done => return done,
                }
            }
            let mut conn = shared.open().await?;
            shared.xack(&mut conn, ids).await?;
            state.conn = Some(conn);
            Ok(())
        });
        result.map_err(|e| {
            e.to_plugin(&format!(
                "{what} {} entries of {} (they stay pending and will be delivered again)",
                ids.len(),
                shared.place
            ))
        })
    }
}

/// `1-0, 2-0, ...`, the first few.
fn ids(ids: &[EntryId]) -> String {
    let mut text: Vec<String> = ids.iter().take(10).map(EntryId::to_string).collect();
    if ids.len() > 10 {
        text.push(format!("and {} more", ids.len() - 10));
    }
    text.join(", ")
}

/// The background task keeping held entries this consumer's; see the module
/// documentation.
async fn keep_fresh(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let period = shared.settings.claim_idle / 3;
    loop {
        tokio::select! {
            biased;
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { return },
            _ = sleep(period) => {}
        }
        let held = shared.held_ids();
        if held.is_empty() {
            continue;
        }
        let settings = &shared.settings;
        let (key, group, consumer) = (&shared.key, &shared.group, &shared.consumer);
        let refreshed = shared
            .pool
            .run(|mut conn| {
                let held = &held;
                async move {
                    let result = refresh(&mut conn, settings, key, group, consumer, held).await;
                    (conn, result)
                }
            })
            .await;
        match refreshed {
            Ok(n) => tracing::trace!(
                "consumer of {}: kept {n} of {} held entries",
                shared.place,
                held.len()
            ),
            Err(e) => tracing::warn!(
                "consumer of {}: cannot keep the {} held entries from being claimed: {e}; if \
                 this lasts longer than `claim_idle_ms` ({} ms), another consumer may take \
                 them and they would be processed twice",
                shared.place,
                held.len(),
                settings.claim_idle.as_millis()
            ),
        }
    }
}

impl Consumer for RedisConsumer {
    fn receive(&self, max: usize, timeout: Duration) -> Result<Vec<Delivery>, PluginError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + timeout;
        let mut state = lock(&self.state);
        if state.closed {
            return Err(self.closed_error());
        }
        self.runtime
            .block_on(self.receive_until(&mut state, max, deadline))
    }

    fn ack(&self, tag: u64, multiple: bool) -> Result<(), PluginError> {
        let ids = self.shared.settling(tag, multiple)?;
        if ids.is_empty() {
            return Ok(());
        }
        self.acknowledge(&ids, "acknowledging")?;
        self.shared.settled(tag, multiple);
        Ok(())
    }

    /// With `requeue`, the deliveries are forgotten and come again first (their entries
    /// stay pending for this consumer); without, they are acknowledged: Redis has no
    /// dead-letter of its own, the entry stays in the stream, and the group never
    /// delivers it again.
    fn nack(&self, tag: u64, multiple: bool, requeue: bool) -> Result<(), PluginError> {
        let ids = self.shared.settling(tag, multiple)?;
        if ids.is_empty() {
            return Ok(());
        }
        if requeue {
            let mut state = lock(&self.state);
            self.shared.settled(tag, multiple);
            state.phase = Phase::Own(EntryId::ZERO);
            return Ok(());
        }
        self.acknowledge(&ids, "dropping (nack without requeue)")?;
        self.shared.settled(tag, multiple);
        Ok(())
    }

    /// Sends nothing: what is held stays pending for this consumer name, which the next
    /// consumer of this process takes first; a process that ends leaves it to
    /// `XAUTOCLAIM` by the others.
    fn close(&self) -> Result<(), PluginError> {
        let mut state = lock(&self.state);
        state.closed = true;
        state.conn = None;
        let _ = self.stop.send(true);
        if let Some(refresher) = lock(&self.refresher).take() {
            refresher.abort();
        }
        lock(&self.slot).take();
        Ok(())
    }
}

impl Drop for RedisConsumer {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

//! In-memory plugins for the bench's `host` part: a transport, a processor and a database,
//! all named `memory`, that do as little as a plugin honestly can, so that running them
//! through the real `golconde` daemon measures the host (dispatcher, routing, workers,
//! acknowledgements) and the plugin ABI alone, with no broker, database or JSON parser to
//! hide behind.
//!
//! - transport `memory`: each queue holds `messages` messages generated on the fly, the
//!   same bodies as the bench workload's Golconde `set` messages (120 to 160 bytes, over
//!   `keys` keys, by default a quarter of the messages). It behaves like a broker where the
//!   host can tell: at most the prefetch unacknowledged, cumulative and single
//!   acknowledgements, rejected or abandoned deliveries given out again (marked
//!   redelivered) before new ones. When the last message is acknowledged it writes the
//!   `result` file: the messages, the nanoseconds from the first `receive` to that last
//!   acknowledgement (measured here, in the daemon's process, so the bench's own polling
//!   is left out), and what the database counted.
//! - processor `memory`: takes `id` (the key) and `score` out of such a body by searching
//!   for them, and makes of them an upsert of one row of the pipeline's table. Not a JSON
//!   parser, and two integer columns rather than autosql's five: what a processor costs is
//!   measured end to end by the other parts; here it should cost as little as a real
//!   change can, so that what remains is the host's.
//! - database `memory`: `id` is the key column; a session counts the rows and the
//!   commits it was given and applies nothing.
//!
//! May depend on: `golconde-plugin-api` and serde (its configuration) only; the bench links
//! it as a library too, for the workload's keys and bytes ([`Workload`]). Key decision:
//! the three plugins live in one library so that the transport can read what the database
//! counted (statics of the library) when it writes the result; every daemon the bench
//! starts is a process of its own, so the counts are that run's.

use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Condvar, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use golconde_plugin_api::{
    export_plugins, Action, Change, Column, ConsumeOptions, Consumer, Database, Delivery, Host,
    Message, Operation, Plugin, PluginError, Processor, ROption, RString, RVec, Session, Transport,
    Value,
};
use serde::Deserialize;

/// Rows and commits the `memory` database's sessions were given, in this process.
static ROWS: AtomicU64 = AtomicU64::new(0);
static COMMITS: AtomicU64 = AtomicU64::new(0);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportConfig {
    /// Messages in each queue.
    messages: u64,
    /// Distinct keys they are spread over; a quarter of `messages` by default.
    keys: Option<u64>,
    /// Where to write the result once a queue is drained.
    result: PathBuf,
}

pub struct MemoryTransport {
    messages: u64,
    keys: u64,
    result: PathBuf,
    /// Queues by name, kept across consumers as a broker keeps them: what one consumer
    /// left unacknowledged is delivered to the next.
    queues: Mutex<HashMap<String, Arc<Queue>>>,
}

impl Plugin for MemoryTransport {
    const NAME: &'static str = "memory";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "bench transport: generated messages, acknowledged in memory, timed in process";
    type Config = TransportConfig;

    fn new(config: TransportConfig, host: &Host) -> Result<Self, PluginError> {
        if config.messages == 0 {
            return Err(PluginError::config("`messages` must be at least 1"));
        }
        let keys = config.keys.unwrap_or(config.messages / 4).max(1);
        if keys > config.messages {
            return Err(PluginError::config(format!(
                "`keys` ({keys}) must not be more than `messages` ({})",
                config.messages
            )));
        }
        Ok(MemoryTransport {
            messages: config.messages,
            keys,
            result: host.resolve("result", &config.result)?,
            queues: Mutex::new(HashMap::new()),
        })
    }
}

impl Transport for MemoryTransport {
    type Consumer = MemoryConsumer;

    fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<MemoryConsumer, PluginError> {
        if options.prefetch == 0 {
            return Err(PluginError::config(
                "consuming with a prefetch of 0 (no limit) is refused, as brokers would hand \
                 over the whole queue",
            ));
        }
        let queue = lock(&self.queues)
            .entry(queue.to_string())
            .or_insert_with(|| {
                Arc::new(Queue {
                    name: queue.to_string(),
                    workload: Workload::new(self.messages, self.keys),
                    result: self.result.clone(),
                    state: Mutex::new(State::default()),
                    changed: Condvar::new(),
                })
            })
            .clone();
        let id = {
            let mut state = lock(&queue.state);
            state.consumers.push(Some(Ledger {
                pending: VecDeque::new(),
                next_tag: 1,
                prefetch: options.prefetch as usize,
            }));
            state.consumers.len() - 1
        };
        Ok(MemoryConsumer { queue, id })
    }

    fn publish(&self, queue: &str, _messages: &[Message]) -> Result<(), PluginError> {
        Err(PluginError::config(format!(
            "the `memory` transport only generates messages; it cannot publish to `{queue}` \
             (give the pipeline no `fan_out` or `dead_letter` on it)"
        )))
    }

    fn ping(&self) -> Result<(), PluginError> {
        Ok(())
    }
}

/// One queue's messages and who holds them.
struct Queue {
    name: String,
    workload: Workload,
    result: PathBuf,
    state: Mutex<State>,
    /// Signalled when a delivery is settled or given back: a waiting `receive` may go on.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// The next message never delivered.
    fresh: u64,
    /// Messages given back (rejected with requeue, or left by a closed consumer), in queue
    /// order, delivered before fresh ones.
    requeued: VecDeque<u64>,
    acked: u64,
    /// Rejected without requeue: settled, but not acknowledged.
    dropped: u64,
    redelivered: u64,
    /// Each consumer's unacknowledged deliveries, by consumer id; `None` once closed.
    consumers: Vec<Option<Ledger>>,
    started: Option<Instant>,
    finished: bool,
}

struct Ledger {
    /// Tags handed out and not settled, with their messages, in tag order.
    pending: VecDeque<(u64, u64)>,
    next_tag: u64,
    prefetch: usize,
}

impl State {
    fn ledger(&mut self, id: usize, queue: &str) -> Result<&mut Ledger, PluginError> {
        self.consumers
            .get_mut(id)
            .and_then(Option::as_mut)
            .ok_or_else(|| PluginError::permanent(format!("the consumer of `{queue}` was closed")))
    }

    /// Takes the deliveries `tag` names out of the ledger: `tag` alone, or with `multiple`
    /// every earlier one too, and hands each one's message to `each`. Fails unless `tag`
    /// is pending, as a broker refuses an unknown delivery tag.
    fn settle(
        &mut self,
        id: usize,
        queue: &str,
        tag: u64,
        multiple: bool,
        mut each: impl FnMut(u64),
    ) -> Result<u64, PluginError> {
        let ledger = self.ledger(id, queue)?;
        let at = ledger.pending.partition_point(|(t, _)| *t < tag);
        if ledger.pending.get(at).is_none_or(|(t, _)| *t != tag) {
            return Err(PluginError::permanent(format!(
                "delivery tag {tag} of `{queue}` is not pending: never handed out, or \
                 already settled"
            )));
        }
        if !multiple {
            ledger
                .pending
                .remove(at)
                .into_iter()
                .for_each(|(_, seq)| each(seq));
            return Ok(1);
        }
        // Handed over one by one, not collected: a pending batch's worth of messages would
        // be an allocation large enough for glibc to consolidate its free lists each time.
        ledger.pending.drain(..=at).for_each(|(_, seq)| each(seq));
        Ok(at as u64 + 1)
    }

    /// Puts `seqs` back in front of the fresh messages, in queue order.
    fn requeue(&mut self, seqs: impl IntoIterator<Item = u64>) {
        self.requeued.extend(seqs);
        self.requeued.make_contiguous().sort_unstable();
    }

    /// Whether every message is settled now, for the first time.
    fn drained(&mut self, total: u64) -> bool {
        if !self.finished && self.acked + self.dropped == total {
            self.finished = true;
            return true;
        }
        false
    }
}

impl Queue {
    /// Writes the result file, through a temporary file so that the bench never reads
    /// half of it.
    fn write_result(&self, elapsed: Duration, acked: u64, dropped: u64, redelivered: u64) {
        let text = format!(
            "messages {}\nelapsed_ns {}\nacked {acked}\ndropped {dropped}\nredelivered \
             {redelivered}\nrows {}\ncommits {}\n",
            self.workload.messages,
            elapsed.as_nanos(),
            ROWS.load(Ordering::SeqCst),
            COMMITS.load(Ordering::SeqCst),
        );
        let partial = self.result.with_extension("partial");
        let written =
            std::fs::write(&partial, text).and_then(|()| std::fs::rename(&partial, &self.result));
        // The last ack has nobody to answer to, so this goes to the daemon's standard error,
        // which the bench shows when it gives up waiting for the file.
        if let Err(e) = written {
            eprintln!(
                "golconde-bench-memory: writing the result of `{}` to {}: {e}",
                self.name,
                self.result.display()
            );
        }
    }
}

pub struct MemoryConsumer {
    queue: Arc<Queue>,
    id: usize,
}

impl MemoryConsumer {
    /// After settling: signals waiting receivers, and writes the result if that was the
    /// last message.
    fn settled(&self, mut state: MutexGuard<'_, State>) {
        let done = state.drained(self.queue.workload.messages).then(|| {
            let elapsed = state.started.map_or(Duration::ZERO, |s| s.elapsed());
            (elapsed, state.acked, state.dropped, state.redelivered)
        });
        drop(state);
        self.queue.changed.notify_all();
        if let Some((elapsed, acked, dropped, redelivered)) = done {
            self.queue
                .write_result(elapsed, acked, dropped, redelivered);
        }
    }
}

impl Consumer for MemoryConsumer {
    fn receive(&self, max: usize, timeout: Duration) -> Result<Vec<Delivery>, PluginError> {
        let queue = &*self.queue;
        let total = queue.workload.messages;
        let mut state = lock(&queue.state);
        state.started.get_or_insert_with(Instant::now);
        let deadline = Instant::now() + timeout;
        // Made under the lock, which only this pipeline's dispatcher thread takes anyway:
        // a list of what to make, to make it after, would be one more large allocation.
        let mut taken: Vec<Delivery> = Vec::new();
        loop {
            let State {
                fresh,
                requeued,
                redelivered,
                consumers,
                ..
            } = &mut *state;
            let ledger = consumers
                .get_mut(self.id)
                .and_then(Option::as_mut)
                .ok_or_else(|| {
                    PluginError::permanent(format!("the consumer of `{}` was closed", queue.name))
                })?;
            let room = ledger.prefetch.saturating_sub(ledger.pending.len());
            let want = max.min(room);
            taken.reserve_exact(want);
            while taken.len() < want {
                let (seq, again) = match requeued.pop_front() {
                    Some(seq) => (seq, true),
                    None if *fresh < total => {
                        *fresh += 1;
                        (*fresh - 1, false)
                    }
                    None => break,
                };
                *redelivered += u64::from(again);
                let tag = ledger.next_tag;
                ledger.next_tag += 1;
                ledger.pending.push_back((tag, seq));
                taken.push(Delivery {
                    tag,
                    redelivered: again,
                    message: Message::new(queue.workload.body(seq)),
                });
            }
            let now = Instant::now();
            if !taken.is_empty() || now >= deadline {
                break;
            }
            state = queue
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(taken)
    }

    fn ack(&self, tag: u64, multiple: bool) -> Result<(), PluginError> {
        let mut state = lock(&self.queue.state);
        let count = state.settle(self.id, &self.queue.name, tag, multiple, |_| ())?;
        state.acked += count;
        self.settled(state);
        Ok(())
    }

    fn nack(&self, tag: u64, multiple: bool, requeue: bool) -> Result<(), PluginError> {
        let mut state = lock(&self.queue.state);
        let mut seqs = Vec::new();
        let count = state.settle(self.id, &self.queue.name, tag, multiple, |seq| {
            seqs.push(seq)
        })?;
        if requeue {
            state.requeue(seqs);
        } else {
            state.dropped += count;
        }
        self.settled(state);
        Ok(())
    }

    /// What was not acknowledged goes back to the queue, as a broker does when a consumer
    /// leaves.
    fn close(&self) -> Result<(), PluginError> {
        let mut state = lock(&self.queue.state);
        if let Some(ledger) = state.consumers.get_mut(self.id).and_then(Option::take) {
            state.requeue(ledger.pending.into_iter().map(|(_, seq)| seq));
        }
        drop(state);
        self.queue.changed.notify_all();
        Ok(())
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// 2026-01-01T00:00:00Z: `updated_at` of message `i` is this plus `i` seconds.
pub const EPOCH: i64 = 1_767_225_600;

/// The bench workload's keys and messages, without formatting machinery: this runs once
/// per message inside the measured daemon. The bench builds its own queues and checks its
/// rows with this same code (it links this crate), so both always agree.
#[derive(Clone, Copy)]
pub struct Workload {
    messages: u64,
    keys: u64,
    /// An odd multiplier coprime with `keys`, to visit every key once in a scattered order.
    step: u64,
}

fn step(keys: u64) -> u64 {
    (1..)
        .map(|k| 7919 * k + 1)
        .find(|s| gcd(*s, keys) == 1)
        .unwrap_or(1)
}

impl Workload {
    /// `messages` messages over `keys` keys (at least one).
    pub fn new(messages: u64, keys: u64) -> Workload {
        let keys = keys.max(1);
        Workload {
            messages,
            keys,
            step: step(keys),
        }
    }

    /// The first `keys` messages name every key once, the rest pick keys at random.
    pub fn key(&self, i: u64) -> u64 {
        if i < self.keys {
            (i * self.step) % self.keys
        } else {
            mix(i) % self.keys
        }
    }

    /// `{"action":"set","data":{"id":…,"name":"user I","email":"uID.vI@example.com",
    /// "score":I,"updated_at":"…"}}`.
    pub fn body(&self, i: u64) -> Vec<u8> {
        let id = self.key(i);
        // Never grown below ten billion messages (10-digit numbers: at most 168 bytes).
        let mut b = Vec::with_capacity(176);
        b.extend_from_slice(br#"{"action":"set","data":{"id":"#);
        decimal(&mut b, id as i64);
        b.extend_from_slice(br#","name":"user "#);
        decimal(&mut b, i as i64);
        b.extend_from_slice(br#"","email":"u"#);
        decimal(&mut b, id as i64);
        b.extend_from_slice(b".v");
        decimal(&mut b, i as i64);
        b.extend_from_slice(br#"@example.com","score":"#);
        decimal(&mut b, i64::from(i as i32));
        b.extend_from_slice(br#","updated_at":""#);
        timestamp(&mut b, EPOCH + i as i64);
        b.extend_from_slice(br#""}}"#);
        b
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// splitmix64, as the bench workload spreads sequence numbers over the keys.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn decimal(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    let mut n = n.unsigned_abs();
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Byte by byte: a few digits are cheaper pushed than handed to memcpy.
    for &digit in &digits[at..] {
        out.push(digit);
    }
}

fn two_digits(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&[b'0' + (n / 10) as u8, b'0' + (n % 10) as u8]);
}

/// `seconds` since 1970 as `YYYY-MM-DDTHH:MM:SSZ` (UTC), for years 1000 to 9999.
pub fn timestamp(out: &mut Vec<u8>, seconds: i64) {
    let (days, rest) = (
        seconds.div_euclid(86_400),
        seconds.rem_euclid(86_400) as u32,
    );
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    decimal(out, year);
    out.push(b'-');
    two_digits(out, month);
    out.push(b'-');
    two_digits(out, day);
    out.push(b'T');
    two_digits(out, rest / 3600);
    out.push(b':');
    two_digits(out, rest / 60 % 60);
    out.push(b':');
    two_digits(out, rest % 60);
    out.push(b'Z');
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorConfig {
    /// The pipeline's `table`, which the host adds: where the rows go.
    table: Option<String>,
    /// The pipeline's `tables`, which the host adds; the host enforces them.
    #[serde(default)]
    #[allow(dead_code)]
    tables: Vec<String>,
}

pub struct MemoryProcessor {
    table: RString,
}

impl Plugin for MemoryProcessor {
    const NAME: &'static str = "memory";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str =
        "bench processor: the `id` and `score` of the bench's `set` messages, upserted";
    type Config = ProcessorConfig;

    fn new(config: ProcessorConfig, _host: &Host) -> Result<Self, PluginError> {
        let table = config
            .table
            .ok_or_else(|| PluginError::config("the pipeline needs a `table`"))?;
        Ok(MemoryProcessor {
            table: table.into(),
        })
    }
}

/// The raw value of `"key":` in `body` at or after `*from`, moving `*from` past it: the
/// text of a string without its quotes, or a number. Keys are looked for in the order the
/// bench writes them, so the body is scanned once.
fn field<'a>(body: &'a [u8], from: &mut usize, key: &str) -> Result<&'a [u8], PluginError> {
    let missing = || PluginError::permanent(format!("not a bench `set` message: no `{key}`"));
    let key = key.as_bytes();
    let mut at = *from;
    let start = loop {
        let quote = body
            .get(at..)
            .and_then(|rest| rest.iter().position(|&b| b == b'"'))
            .ok_or_else(missing)?;
        let name = at + quote + 1;
        let after = name + key.len();
        // The first byte first: most quotes open another key or a value.
        if body.get(name) == key.first()
            && body.get(name..after) == Some(key)
            && body.get(after..after + 2) == Some(b"\":")
        {
            break after + 2;
        }
        at = name;
    };
    let (start, end) = if body.get(start) == Some(&b'"') {
        let len = body[start + 1..]
            .iter()
            .position(|&b| b == b'"')
            .ok_or_else(missing)?;
        (start + 1, start + 1 + len)
    } else {
        let len = body[start..]
            .iter()
            .position(|&b| b == b',' || b == b'}')
            .ok_or_else(missing)?;
        (start, start + len)
    };
    *from = end;
    Ok(&body[start..end])
}

fn integer(raw: &[u8], key: &str) -> Result<i64, PluginError> {
    let wrong = || PluginError::permanent(format!("`{key}` is not an integer"));
    let (negative, digits) = match raw.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, raw),
    };
    if digits.is_empty() || digits.len() > 18 {
        return Err(wrong());
    }
    let mut n: i64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return Err(wrong());
        }
        n = n * 10 + i64::from(b - b'0');
    }
    Ok(if negative { -n } else { n })
}

impl Processor for MemoryProcessor {
    fn process(&self, message: &Message) -> Result<Change, PluginError> {
        let body = message.body.as_slice();
        let mut at = 0;
        let id = integer(field(body, &mut at, "id")?, "id")?;
        let score = integer(field(body, &mut at, "score")?, "score")?;
        Ok(Change {
            id: ROption::RNone,
            operations: RVec::from(vec![Operation {
                action: Action::Upsert,
                table: self.table.clone(),
                data: RVec::from(vec![
                    Column::new("id", Value::Int(id)),
                    Column::new("score", Value::Int(score)),
                ]),
                restriction: RVec::new(),
            }]),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {}

#[derive(Clone)]
pub struct MemoryDatabase;

impl Plugin for MemoryDatabase {
    const NAME: &'static str = "memory";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "bench database: counts the rows and commits it is given";
    type Config = DatabaseConfig;

    fn new(_config: DatabaseConfig, _host: &Host) -> Result<Self, PluginError> {
        Ok(MemoryDatabase)
    }
}

impl Database for MemoryDatabase {
    type Session = MemoryDatabase;

    fn connect(&self) -> Result<MemoryDatabase, PluginError> {
        Ok(MemoryDatabase)
    }

    fn key_columns(&self, _table: &str) -> Result<Vec<String>, PluginError> {
        Ok(vec!["id".into()])
    }
}

impl Session for MemoryDatabase {
    fn apply(
        &mut self,
        changes: &[Change],
    ) -> Result<Vec<Result<golconde_plugin_api::Applied, PluginError>>, PluginError> {
        let rows: usize = changes.iter().map(|c| c.operations.len()).sum();
        ROWS.fetch_add(rows as u64, Ordering::Relaxed);
        COMMITS.fetch_add(1, Ordering::Relaxed);
        Ok(changes.iter().map(|_| Ok(Default::default())).collect())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

export_plugins! {
    transport: MemoryTransport,
    processor: MemoryProcessor,
    database: MemoryDatabase,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(messages: u64) -> Workload {
        Workload::new(messages, messages / 4)
    }

    #[test]
    fn bodies_are_the_bench_workloads_messages() {
        let w = workload(200_000);
        // Message 7 and message 123,456 of 200,000, as written out by hand.
        let id = w.key(7);
        assert_eq!(
            String::from_utf8(w.body(7)).unwrap(),
            format!(
                r#"{{"action":"set","data":{{"id":{id},"name":"user 7","email":"u{id}.v7@example.com","score":7,"updated_at":"2026-01-01T00:00:07Z"}}}}"#
            )
        );
        let late = String::from_utf8(w.body(123_456)).unwrap();
        assert!(
            late.ends_with(r#""score":123456,"updated_at":"2026-01-02T10:17:36Z"}}"#),
            "{late}"
        );
        let mut keys: Vec<u64> = (0..w.keys).map(|i| w.key(i)).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(
            keys.len() as u64,
            w.keys,
            "the first messages name every key"
        );
    }

    #[test]
    fn the_processor_makes_one_row_of_a_body() {
        let w = workload(1000);
        let processor = MemoryProcessor {
            table: "public.users".into(),
        };
        let change = processor.process(&Message::new(w.body(600))).unwrap();
        assert_eq!(change.operations.len(), 1);
        let op = &change.operations[0];
        assert_eq!(op.action, Action::Upsert);
        assert_eq!(op.table.as_str(), "public.users");
        let data: Vec<(&str, &Value)> = op
            .data
            .iter()
            .map(|c| (c.name.as_str(), &c.value))
            .collect();
        let id = w.key(600) as i64;
        assert_eq!(data, [("id", &Value::Int(id)), ("score", &Value::Int(600))]);
        let wrong = processor.process(&Message::new(&b"{\"key\":1}"[..]));
        assert!(wrong.unwrap_err().message.contains("no `id`"));
    }

    fn queue(messages: u64, result: PathBuf) -> Arc<Queue> {
        Arc::new(Queue {
            name: "q".into(),
            workload: workload(messages),
            result,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        })
    }

    fn consumer(queue: &Arc<Queue>, prefetch: usize) -> MemoryConsumer {
        let mut state = lock(&queue.state);
        state.consumers.push(Some(Ledger {
            pending: VecDeque::new(),
            next_tag: 1,
            prefetch,
        }));
        MemoryConsumer {
            queue: queue.clone(),
            id: state.consumers.len() - 1,
        }
    }

    fn seqs(deliveries: &[Delivery], w: &Workload) -> Vec<u64> {
        deliveries
            .iter()
            .map(|d| {
                (0..w.messages)
                    .find(|i| w.body(*i) == d.message.body.as_slice())
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn a_queue_keeps_the_prefetch_and_gives_back_what_was_not_acknowledged() {
        let dir =
            std::env::temp_dir().join(format!("golconde-bench-memory-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let result = dir.join("result");
        let _ = std::fs::remove_file(&result);
        let q = queue(10, result.clone());
        let w = q.workload;
        let c = consumer(&q, 4);
        let zero = Duration::ZERO;
        let first = c.receive(3, zero).unwrap();
        assert_eq!(first.iter().map(|d| d.tag).collect::<Vec<_>>(), [1, 2, 3]);
        // The prefetch leaves room for one more.
        assert_eq!(c.receive(10, zero).unwrap().len(), 1);
        let waited = Instant::now();
        assert!(c.receive(10, Duration::from_millis(30)).unwrap().is_empty());
        assert!(waited.elapsed() >= Duration::from_millis(30));
        c.ack(2, true).unwrap();
        assert!(c.ack(1, false).is_err(), "tag 1 went with tag 2");
        // Tag 3 back to the queue: delivered again, first, under a new tag.
        c.nack(3, false, true).unwrap();
        let again = c.receive(10, zero).unwrap();
        assert_eq!(again[0].tag, 5);
        assert!(again[0].redelivered);
        assert_eq!(seqs(&again, &w), [2, 4, 5]);
        // A consumer that leaves gives back what it holds; the next one gets it first.
        c.close().unwrap();
        assert!(c.receive(1, zero).is_err());
        let d = consumer(&q, 100);
        let rest = d.receive(100, zero).unwrap();
        assert_eq!(seqs(&rest, &w), [2, 3, 4, 5, 6, 7, 8, 9]);
        assert!(rest[..4].iter().all(|d| d.redelivered));
        assert!(!result.exists());
        d.nack(rest[0].tag, false, false).unwrap();
        d.ack(rest[7].tag, true).unwrap();
        let written = std::fs::read_to_string(&result).unwrap();
        assert!(written.starts_with("messages 10\nelapsed_ns "), "{written}");
        assert!(
            written.contains("\nacked 9\ndropped 1\nredelivered 5\n"),
            "{written}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_waiting_receive_wakes_when_room_is_made() {
        let q = queue(10, std::env::temp_dir().join("never-written"));
        let c = Arc::new(consumer(&q, 2));
        assert_eq!(c.receive(5, Duration::ZERO).unwrap().len(), 2);
        let acker = {
            let c = c.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                c.ack(2, true).unwrap();
            })
        };
        let more = c.receive(5, Duration::from_secs(10)).unwrap();
        acker.join().unwrap();
        assert_eq!(more.iter().map(|d| d.tag).collect::<Vec<_>>(), [3, 4]);
    }
}

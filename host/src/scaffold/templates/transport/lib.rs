//! `{{name}}`: a Golconde transport plugin, which consumes queues with acknowledgements and
//! publishes to them with confirmation.
//!
//! This is the starting point `golconde new-plugin` wrote: queues that are files in the
//! folder `dir`. It is small, but it keeps every promise of a broker that the host relies
//! on, so you can keep its shape when you put a real broker behind it:
//! - `publish` returns only once the messages are on disk: the host acknowledges a message
//!   only after the copies it published are confirmed;
//! - a consumer hands messages out in order, at most `prefetch` unacknowledged at a time,
//!   and an acknowledgement covers every delivery up to its tag (cumulative);
//! - what a consumer did not acknowledge before it closed (or its process died) goes to the
//!   next consumer again, in order, flagged `redelivered`.
//!
//! Queue `Q` is three files: `Q.queue` (one JSON line per message, appended to), `Q.state`
//! (how far it was acknowledged, and delivered) and `Q.lock` (held by its one consumer:
//! one at a time keeps the order, like a single-active-consumer queue).
//!
//! How the host uses a transport: one instance per `[transports.NAME]` section, shared by
//! every pipeline that names it. Each pipeline opens a consumer from its dispatcher thread;
//! `receive`, `ack` and `close` may come from different threads. Every call is blocking and
//! plain Rust: a client library that is async runs its own runtime inside the plugin.

use std::{
    collections::VecDeque,
    fs::{self, File},
    io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _},
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use golconde_plugin_api::{
    export_plugins, ConsumeOptions, Consumer, Delivery, Host, Message, Plugin, PluginError,
    Transport, TRANSPORT_ERROR_HEADER,
};
use serde::{Deserialize, Serialize};

/// The transport's section of the configuration file:
///
/// ```toml
/// [transports.files]
/// plugin = "{{name}}"
/// dir = "queues"
/// ```
///
/// `deny_unknown_fields` makes a misspelt key an error that names it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The folder of the queue files, relative to the configuration file's folder.
    dir: PathBuf,
}

/// The plugin: what `new` validated, and nothing open. A real transport would keep its
/// connection settings here, and a publishing connection made on first use.
pub struct FileQueue {
    dir: PathBuf,
}

impl Plugin for FileQueue {
    /// What configuration files say: `plugin = "{{name}}"`.
    const NAME: &'static str = "{{name}}";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    /// One line for `golconde plugins`.
    const DESCRIPTION: &'static str = "queues that are files, one line per message";
    type Config = Config;

    /// Validates the configuration. Never connect or open anything here: `golconde check`
    /// builds every plugin to validate a configuration, on a machine that may reach
    /// nothing. A bad value is a config error that names its key and says what to do.
    fn new(config: Config, host: &Host) -> Result<Self, PluginError> {
        // Relative paths mean relative to the configuration file, not to wherever the
        // daemon was started.
        let dir = host.resolve("dir", &config.dir)?;
        Ok(FileQueue { dir })
    }
}

impl FileQueue {
    /// The path of one of `queue`'s files. A queue name becomes a file name, so it may hold
    /// only what a file name safely can: a name the protocol refuses is a config error.
    fn file(&self, queue: &str, extension: &str) -> Result<PathBuf, PluginError> {
        let safe = !queue.is_empty()
            && !queue.starts_with('.')
            && queue
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !safe {
            return Err(PluginError::config(format!(
                "queue {queue:?}: a {{name}} queue name holds only ASCII letters, digits, \
                 `.`, `-` and `_`, and does not start with `.`"
            )));
        }
        Ok(self.dir.join(format!("{queue}.{extension}")))
    }

    /// The folder plays the broker: without it there is nothing to talk to. That is the
    /// infrastructure's trouble, so it is transient: the host waits and tries again.
    fn reachable(&self) -> Result<(), PluginError> {
        if self.dir.is_dir() {
            return Ok(());
        }
        Err(PluginError::transient(format!(
            "the folder {} (`dir`) does not exist: create it",
            self.dir.display()
        )))
    }
}

impl Transport for FileQueue {
    type Consumer = FileConsumer;

    /// Opens the queue's one consumer. Any error here makes the host close and retry after
    /// a backoff; nothing is lost, since nothing was acknowledged. (A broker whose
    /// consumers are named and durable on the server would also implement
    /// `Transport::consume_as`, which tells the pipeline's name, and name them after it.)
    fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<FileConsumer, PluginError> {
        if options.prefetch == 0 {
            return Err(PluginError::config(format!(
                "queue `{queue}`: a prefetch of 0, which brokers take for \"no limit\", is \
                 refused: give at least 1"
            )));
        }
        let lock_path = self.file(queue, "lock")?;
        let path = self.file(queue, "queue")?;
        let state_path = self.file(queue, "state")?;
        self.reachable()?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_error(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            // Transient: the other consumer may be on its way out (a pipeline restarting).
            Err(fs::TryLockError::WouldBlock) => {
                return Err(PluginError::transient(format!(
                    "queue `{queue}` has a consumer already, and takes one at a time"
                )))
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_error(&lock_path, e)),
        }
        let state = State::read(&state_path)?;
        let next = Mark {
            line: state.acked,
            end: state.offset,
        };
        tracing::debug!(queue, acked = state.acked, "consuming");
        Ok(FileConsumer {
            queue: queue.to_string(),
            path,
            state_path,
            prefetch: options.prefetch as usize,
            open: Mutex::new(Some(Open {
                _lock: lock,
                state,
                next,
                next_tag: 1,
                unacked: VecDeque::new(),
            })),
        })
    }

    /// Appends `messages` and returns once they are on disk: a broker's confirmation.
    ///
    /// An error here is transient (the disk, the folder: the host retries the whole slice,
    /// so a message may arrive twice) or config (a queue name this transport refuses). A
    /// *permanent* error would tell the host that one of these messages can never be
    /// published: keep it for something a message carries, never for the broker's state.
    fn publish(&self, queue: &str, messages: &[Message]) -> Result<(), PluginError> {
        let path = self.file(queue, "queue")?;
        self.reachable()?;
        let mut text = Vec::new();
        for message in messages {
            serde_json::to_writer(&mut text, &Line::from(message)).expect("lines serialize");
            text.push(b'\n');
        }
        let mut file = File::options()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        // Publishers take turns, so that their lines never interleave.
        lock(&file, &path)?;
        let appended = cut_torn_line(&mut file).and_then(|start| {
            let mut written = file.write_all(&text).and_then(|()| file.sync_data());
            if start == 0 && written.is_ok() {
                // A new file is on disk only once its folder's entry for it is.
                written = File::open(&self.dir).and_then(|dir| dir.sync_all());
            }
            if written.is_err() {
                // Leave no partial line behind to be glued to the next one.
                let _ = file.set_len(start);
            }
            written
        });
        appended.map_err(|e| io_error(&path, e))
    }

    /// What `golconde check --connect` calls: a real transport connects and disconnects,
    /// within a timeout, and says what to fix (address, credentials) when it cannot.
    fn ping(&self) -> Result<(), PluginError> {
        self.reachable()
    }
}

/// A line of a queue file. A body that is UTF-8 is stored as text, so a queue file is easy
/// to read; any other as its bytes.
#[derive(Serialize, Deserialize)]
struct Line {
    body: Body,
    headers: Vec<(String, String)>,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Body {
    Text(String),
    Bytes(Vec<u8>),
}

impl From<&Message> for Line {
    fn from(message: &Message) -> Line {
        let body = match String::from_utf8(message.body.to_vec()) {
            Ok(text) => Body::Text(text),
            Err(e) => Body::Bytes(e.into_bytes()),
        };
        let headers = message
            .headers
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_string()))
            .collect();
        Line { body, headers }
    }
}

impl Line {
    /// The message a line holds. Only a transport may set [`TRANSPORT_ERROR_HEADER`], so
    /// one that a producer sent is dropped. A line that cannot be read is still delivered,
    /// with that header saying why: the host dead-letters it, and the queue moves on.
    fn message(bytes: &[u8]) -> Message {
        match serde_json::from_slice::<Line>(bytes) {
            Ok(line) => {
                let mut message = Message::new(match line.body {
                    Body::Text(text) => text.into_bytes(),
                    Body::Bytes(bytes) => bytes,
                });
                for (name, value) in line.headers {
                    if name != TRANSPORT_ERROR_HEADER {
                        message.push_header(name, value);
                    }
                }
                message
            }
            Err(e) => Message::new(bytes.to_vec())
                .with_header(TRANSPORT_ERROR_HEADER, format!("not a queue line: {e}")),
        }
    }
}

/// How far a queue was acknowledged and delivered, kept in `Q.state` across consumers.
#[derive(Serialize, Deserialize, Default, Clone, Copy)]
struct State {
    /// Lines acknowledged, from the start of the file...
    acked: u64,
    /// ...and the byte offset where the first one not acknowledged starts.
    offset: u64,
    /// Lines ever handed out: one of these handed out again is a redelivery.
    delivered: u64,
}

impl State {
    fn read(path: &Path) -> Result<State, PluginError> {
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| PluginError::transient(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(io_error(path, e)),
        }
    }

    /// Replaces the file at once (written aside, then renamed), so that a crash leaves the
    /// old state or the new one. Not synced: losing an acknowledgement in a power cut only
    /// means its messages are delivered again, which the host allows for.
    fn write(&self, path: &Path) -> Result<(), PluginError> {
        let aside = path.with_extension("state.new");
        fs::write(&aside, serde_json::to_vec(self).expect("state serializes"))
            .and_then(|()| fs::rename(&aside, path))
            .map_err(|e| io_error(path, e))
    }
}

/// A line handed out: its number (from 1) and the offset just past it.
#[derive(Clone, Copy)]
struct Mark {
    line: u64,
    end: u64,
}

/// The one consumer of a queue.
pub struct FileConsumer {
    queue: String,
    path: PathBuf,
    state_path: PathBuf,
    prefetch: usize,
    /// `None` once closed. A mutex, because the host receives on one thread while it
    /// acknowledges on another; no call holds it while it waits.
    open: Mutex<Option<Open>>,
}

struct Open {
    /// Held while the consumer is open; dropping it lets the next consumer in.
    _lock: File,
    state: State,
    /// The next line to hand out.
    next: Mark,
    /// Tags increase with every delivery of this consumer, redeliveries included.
    next_tag: u64,
    /// Deliveries not acknowledged yet, oldest first, by tag.
    unacked: VecDeque<(u64, Mark)>,
}

impl FileConsumer {
    fn open(&self) -> Result<MutexGuard<'_, Option<Open>>, PluginError> {
        // A panic while the lock was held is reported by the SDK; the state it guards is
        // only ever changed after the file operations that can fail, so it is whole.
        let guard = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if guard.is_none() {
            return Err(PluginError::transient(format!(
                "the consumer of queue `{}` is closed",
                self.queue
            )));
        }
        Ok(guard)
    }

    /// Hands out what has arrived, at most `max`, keeping within the prefetch.
    fn poll(&self, max: usize) -> Result<Vec<Delivery>, PluginError> {
        let mut guard = self.open()?;
        let open = guard.as_mut().expect("checked by `open`");
        let room = max.min(self.prefetch.saturating_sub(open.unacked.len()));
        if room == 0 {
            return Ok(Vec::new());
        }
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            // Nothing was ever published to the queue.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&self.path, e)),
        };
        file.seek(SeekFrom::Start(open.next.end))
            .map_err(|e| io_error(&self.path, e))?;
        let mut reader = BufReader::new(file);
        let mut deliveries = Vec::new();
        let mut handed = Vec::new();
        let mut next = open.next;
        while deliveries.len() < room {
            let mut bytes = Vec::new();
            let read = reader
                .read_until(b'\n', &mut bytes)
                .map_err(|e| io_error(&self.path, e))?;
            // Nothing more, or a line still being written.
            if bytes.last() != Some(&b'\n') {
                break;
            }
            next = Mark {
                line: next.line + 1,
                end: next.end + read as u64,
            };
            let tag = open.next_tag + deliveries.len() as u64;
            handed.push((tag, next));
            deliveries.push(Delivery {
                tag,
                redelivered: next.line <= open.state.delivered,
                message: Line::message(&bytes[..bytes.len() - 1]),
            });
        }
        // The state changes only once nothing can fail any more: after an error, the next
        // call finds it as it was.
        if next.line > open.state.delivered {
            let state = State {
                delivered: next.line,
                ..open.state
            };
            state.write(&self.state_path)?;
            open.state = state;
        }
        open.next = next;
        open.next_tag += deliveries.len() as u64;
        open.unacked.extend(handed);
        Ok(deliveries)
    }

    /// Where `tag` is among the unacknowledged deliveries; an error naming the queue if it
    /// is not one of them, or if it is not the oldest and `multiple` is not set (a queue
    /// kept as an offset can only be acknowledged in order).
    fn position(&self, open: &Open, tag: u64, multiple: bool) -> Result<usize, PluginError> {
        let index = open
            .unacked
            .iter()
            .position(|(t, _)| *t == tag)
            .ok_or_else(|| {
                PluginError::permanent(format!(
                    "queue `{}`: tag {tag} is not an unacknowledged delivery of this consumer",
                    self.queue
                ))
            })?;
        if index > 0 && !multiple {
            return Err(PluginError::permanent(format!(
                "queue `{}`: tag {tag} has older deliveries not acknowledged; {{name}} \
                 acknowledges in order, so set `multiple`",
                self.queue
            )));
        }
        Ok(index)
    }
}

/// How long `receive` sleeps between looks at the file. A real broker pushes deliveries
/// down a socket, and `receive` waits on that instead.
const POLL: Duration = Duration::from_millis(10);

impl Consumer for FileConsumer {
    /// Waits up to `timeout` for deliveries, and returns at most `max`: an empty list means
    /// the time ran out. Honour the timeout: the host's dispatcher waits on this call, and
    /// checks for shutdown between calls.
    fn receive(&self, max: usize, timeout: Duration) -> Result<Vec<Delivery>, PluginError> {
        let deadline = Instant::now() + timeout;
        loop {
            let deliveries = self.poll(max)?;
            let now = Instant::now();
            if !deliveries.is_empty() || now >= deadline {
                return Ok(deliveries);
            }
            std::thread::sleep(POLL.min(deadline - now));
        }
    }

    /// Acknowledges `tag`, and with `multiple` every delivery before it. The host calls it
    /// after the messages' changes committed and their copies were published; an error
    /// makes it close this consumer and open another, which gets them again.
    fn ack(&self, tag: u64, multiple: bool) -> Result<(), PluginError> {
        let mut guard = self.open()?;
        let open = guard.as_mut().expect("checked by `open`");
        let index = self.position(open, tag, multiple)?;
        let (_, mark) = open.unacked[index];
        let state = State {
            acked: mark.line,
            offset: mark.end,
            delivered: open.state.delivered,
        };
        state.write(&self.state_path)?;
        open.state = state;
        open.unacked.drain(..=index);
        Ok(())
    }

    /// Gives deliveries back. With `requeue`, every delivery not acknowledged comes again,
    /// in order (a queue kept as an offset cannot skip one); without, those up to `tag` are
    /// dropped, which here is acknowledging them. Pipelines do not call it: they close.
    fn nack(&self, tag: u64, multiple: bool, requeue: bool) -> Result<(), PluginError> {
        if !requeue {
            return self.ack(tag, multiple);
        }
        let mut guard = self.open()?;
        let open = guard.as_mut().expect("checked by `open`");
        self.position(open, tag, multiple)?;
        open.next = Mark {
            line: open.state.acked,
            end: open.state.offset,
        };
        open.unacked.clear();
        Ok(())
    }

    /// Stops consuming: what was not acknowledged goes to the next consumer.
    fn close(&self) -> Result<(), PluginError> {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        Ok(())
    }
}

/// Removes a line left unfinished at the end of the queue by a publisher that died while
/// writing: it was never confirmed, and would otherwise spoil the next line. Returns the
/// file's length after that. Called with the publishers' lock held.
fn cut_torn_line(file: &mut File) -> std::io::Result<u64> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(len);
    }
    // Only after a crash: worth reading the whole file.
    let mut all = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut all)?;
    let keep = all
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i as u64 + 1);
    file.set_len(keep)?;
    Ok(keep)
}

/// How long a publisher waits for another to finish.
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Takes `file`'s lock, waiting a bounded time, as every wait in a plugin must be: a call
/// that never returns stalls its pipeline with nothing in the log. Released when the file
/// is closed.
fn lock(file: &File, path: &Path) -> Result<(), PluginError> {
    let deadline = Instant::now() + LOCK_TIMEOUT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(fs::TryLockError::WouldBlock) => {
                return Err(PluginError::transient(format!(
                    "{} stayed locked for {LOCK_TIMEOUT:?}: another publisher is stuck",
                    path.display()
                )))
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_error(path, e)),
        }
    }
}

/// A file that cannot be read or written is the infrastructure's trouble: transient.
fn io_error(path: &Path, e: std::io::Error) -> PluginError {
    PluginError::transient(format!("{}: {e}", path.display()))
}

// Makes this library loadable by the host. One library may export several plugins, of any
// kinds: `export_plugins! { transport: A, processor: B }`.
export_plugins! {
    transport: FileQueue,
}

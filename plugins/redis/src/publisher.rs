//! Publishing, and the small pool of connections it shares with the consumers' background
//! work (keeping held entries fresh, see [`crate::consumer`]).
//!
//! A batch is one round trip: every `XADD` of the slice is written at once (a pipeline; no
//! MULTI, since each entry stands alone), then every reply is read; an id in reply to each
//! is the confirmation that Redis has the entry. With `wait_replicas`, a `WAIT` ends the
//! pipeline, so the confirmation also means "on that many replicas". A connection lost
//! midway leaves it unknown which entries were added: the error is transient and the host
//! publishes the whole slice again, so an entry may be added twice.
//!
//! Connections are pooled rather than multiplexed: each publish has one to itself for its
//! round trip, several dispatchers publish at once on several connections, and an idle one
//! is kept for the next. A pooled connection may have been closed by the server meanwhile
//! (a restart, `timeout` in redis.conf): when a reused one fails, the batch is tried once
//! more on a new one before the error is reported.
//!
//! May depend on: [`crate::resp`], [`crate::entry`], [`crate::config`], tokio.

use std::{
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use golconde_plugin_api::{Message, PluginError};

use crate::{
    config::Settings,
    entry::{entry_bytes, fields, EntryId},
    error::Error,
    resp::{within, Conn, Reply},
};

/// How many idle connections the pool keeps.
const MAX_IDLE: usize = 4;
/// A batch's commands are written out whenever this much is waiting.
const SEND_AT: usize = 1024 * 1024;

/// Idle connections to the server, for publishing and housekeeping.
pub struct Pool {
    settings: Arc<Settings>,
    idle: Mutex<Vec<Conn>>,
}

impl Pool {
    pub fn new(settings: Arc<Settings>) -> Pool {
        Pool {
            settings,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn take_idle(&self) -> Option<Conn> {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
    }

    fn give_back(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// Drops every idle connection (the transport is going away).
    pub fn clear(&self) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Runs `work` on a connection of the pool, or a new one; `work` hands the connection
    /// back with its result. A connection returns to the pool unless it was lost; when a
    /// reused one was lost, `work` runs once more on a new one.
    pub async fn run<T, F, Fut>(&self, mut work: F) -> Result<T, Error>
    where
        F: FnMut(Conn) -> Fut,
        Fut: Future<Output = (Conn, Result<T, Error>)>,
    {
        let (conn, reused) = match self.take_idle() {
            Some(conn) => (conn, true),
            None => (Conn::open(&self.settings).await?, false),
        };
        let (mut conn, mut result) = work(conn).await;
        if reused && matches!(&result, Err(e) if e.is_lost()) {
            (conn, result) = work(Conn::open(&self.settings).await?).await;
        }
        match &result {
            Err(e) if e.is_lost() => {}
            _ => self.give_back(conn),
        }
        result
    }
}

/// Checks that every message fits `max_entry_bytes` as an entry: consumers of this
/// transport would drop the body of a larger one, and Redis refuses values over 512 MiB.
pub fn check_sizes(
    settings: &Settings,
    key: &str,
    messages: &[Message],
) -> Result<(), PluginError> {
    for (index, message) in messages.iter().enumerate() {
        let size = entry_bytes(message);
        if size > settings.max_entry_bytes {
            return Err(PluginError::permanent(format!(
                "message {index} of the batch for stream `{key}` on {} would be a {size}-byte \
                 entry (body, header names and values), more than `max_entry_bytes` ({}); a \
                 consumer would drop its body. Raise `max_entry_bytes` on both sides if such \
                 messages are expected",
                settings.target(),
                settings.max_entry_bytes
            )));
        }
    }
    Ok(())
}

/// Writes `XADD key [MAXLEN ~ n] * body <body> <header> <value> ...` for each message,
/// then `WAIT` if asked, and reads the replies. Returns the ids Redis gave.
pub async fn publish(
    conn: &mut Conn,
    settings: &Settings,
    key: &str,
    messages: &[Message],
) -> Result<Vec<EntryId>, Error> {
    let wait = settings.wait_replicas > 0;
    let limit = settings.response_timeout
        + if wait {
            settings.wait_timeout
        } else {
            Duration::ZERO
        };
    within(
        limit,
        "waiting for the confirmation of a batch",
        "response_timeout_ms",
        async {
            for message in messages {
                let trim = if settings.maxlen.is_some() { 3 } else { 0 };
                conn.begin(3 + trim + 2 * (1 + message.headers.len()));
                conn.arg(b"XADD");
                conn.arg(key.as_bytes());
                if let Some(maxlen) = settings.maxlen {
                    conn.arg(b"MAXLEN");
                    conn.arg(b"~");
                    conn.arg_u64(maxlen);
                }
                conn.arg(b"*");
                for (name, value) in fields(message) {
                    conn.arg(name.as_bytes());
                    conn.arg(value);
                }
                // A large batch goes out as it is written, rather than as one copy of
                // the whole; Redis answers in order all the same.
                if conn.unsent() >= SEND_AT {
                    conn.send().await?;
                }
            }
            if wait {
                conn.begin(3);
                conn.arg(b"WAIT");
                conn.arg_u64(u64::from(settings.wait_replicas));
                conn.arg_u64(settings.wait_timeout.as_millis() as u64);
            }
            conn.send().await?;
            let mut ids = Vec::with_capacity(messages.len());
            let mut refused = None;
            // Every reply is read, also after an error, so the connection stays in step.
            for _ in messages {
                match conn.reply().await? {
                    Reply::Bulk(id) => match EntryId::parse(&id) {
                        Some(id) => ids.push(id),
                        None => {
                            return Err(Error::Malformed(format!(
                                "XADD answered `{}`, not an entry id",
                                String::from_utf8_lossy(&id)
                            )))
                        }
                    },
                    Reply::Error(line) => {
                        refused.get_or_insert(line);
                    }
                    other => return Err(Error::Malformed(format!("XADD answered {other:?}"))),
                }
            }
            let acknowledged = if wait {
                conn.reply().await?.ok()?.int()
            } else {
                None
            };
            if let Some(line) = refused {
                return Err(Error::server(line));
            }
            if let Some(replicas) = acknowledged {
                if replicas < i64::from(settings.wait_replicas) {
                    return Err(Error::Replicas {
                        acknowledged: replicas,
                        wanted: settings.wait_replicas,
                        ms: settings.wait_timeout.as_millis() as u64,
                    });
                }
            }
            Ok(ids)
        },
    )
    .await?
}

/// Keeps held entries with their owner: resets the idle time of those of `ids` that are
/// still pending for `consumer`, so that no other consumer's `XAUTOCLAIM` takes them while
/// their batch is in flight. An entry another consumer has claimed meanwhile is left to it.
/// Returns how many were refreshed.
const REFRESH: &str = r"
local key, group, me = KEYS[1], ARGV[1], ARGV[2]
local mine = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', key, group, ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == me then mine[#mine + 1] = ARGV[i] end
end
if #mine == 0 then return 0 end
mine[#mine + 1] = 'JUSTID'
local claimed = redis.call('XCLAIM', key, group, me, 0, unpack(mine))
return #claimed
";

/// At most this many ids per script call (Lua's `unpack` has a limit of its own).
const REFRESH_CHUNK: usize = 1000;

/// Keeps `ids` with `consumer` (the script above), in chunks.
pub async fn refresh(
    conn: &mut Conn,
    settings: &Settings,
    key: &str,
    group: &str,
    consumer: &str,
    ids: &[EntryId],
) -> Result<i64, Error> {
    let mut refreshed = 0;
    for chunk in ids.chunks(REFRESH_CHUNK) {
        conn.begin(6 + chunk.len());
        conn.arg(b"EVAL");
        conn.arg(REFRESH.as_bytes());
        conn.arg(b"1");
        conn.arg(key.as_bytes());
        conn.arg(group.as_bytes());
        conn.arg(consumer.as_bytes());
        for id in chunk {
            conn.arg(id.text().as_bytes());
        }
        refreshed += within(
            settings.response_timeout,
            "refreshing held entries",
            "response_timeout_ms",
            async {
                conn.send().await?;
                conn.reply().await
            },
        )
        .await??
        .ok()?
        .int()
        .unwrap_or(0);
    }
    Ok(refreshed)
}

/// The `lag` of consumer group `group` of stream `key`, as `XINFO GROUPS` tells (Redis 7 or
/// later; `None` before, and when Redis cannot count it, after deletions in the stream or
/// when the stream or group does not exist yet).
pub async fn group_lag(
    conn: &mut Conn,
    settings: &Settings,
    key: &str,
    group: &str,
) -> Result<Option<u64>, Error> {
    let groups = conn
        .call(
            &[b"XINFO", b"GROUPS", key.as_bytes()],
            settings.response_timeout,
            "reading the consumer groups",
        )
        .await;
    let groups = match groups {
        Ok(Reply::Array(groups)) => groups,
        Ok(_) => return Ok(None),
        Err(Error::Server { line }) if line.contains("no such key") => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(groups.iter().find_map(|info| {
        let Reply::Array(fields) = info else {
            return None;
        };
        let field = |name: &str| {
            fields
                .chunks(2)
                .find(|pair| pair[0].text() == Some(name))
                .and_then(|pair| pair.get(1))
        };
        if field("name").and_then(Reply::text) != Some(group) {
            return None;
        }
        field("lag")
            .and_then(Reply::int)
            .and_then(|n| u64::try_from(n).ok())
    }))
}

//! A connection to Redis speaking RESP2: opening it (TCP, TLS, AUTH, SELECT), writing
//! commands, and reading replies with every size bounded.
//!
//! Why not a Redis client library: a general client reads each reply whole before handing
//! it over (redis-rs 1.8 took about 200 MB of new memory to read one 100 MB stream entry,
//! with no limit to set), while a consumer must never hold an entry larger than
//! `max_entry_bytes` however large the entry a producer wrote. Here the entries of `XREADGROUP` and
//! `XAUTOCLAIM` replies are read field by field into [`crate::entry::Decoder`], which
//! says beforehand whether it wants each one; an unwanted field is skipped as it arrives,
//! so a consumer holds at most its prefetch times `max_entry_bytes`. Commands are written
//! straight from the message's bytes into one buffer, so a published body is copied once.
//! Every other reply is read with small fixed bounds ([`Conn::reply`]).
//!
//! A [`Conn`] is used by one task at a time and is not safe to use again after an error
//! for which [`Error::is_lost`] is true (a reply may be half read): drop it.
//!
//! May depend on: tokio, [`crate::tls`], [`crate::entry`], [`crate::config`].

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use golconde_plugin_api::Message;
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf},
    net::TcpStream,
    time::timeout,
};
use tokio_rustls::client::TlsStream;

use crate::{
    config::Settings,
    entry::{Decoder, EntryId, Field},
    error::{tls_hint, Error},
};

/// A TCP connection, with or without TLS.
pub enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// One end of an in-memory pipe, the other end playing the server: what the fuzz
    /// target `redis_reply` and this module's tests read replies from.
    #[doc(hidden)]
    Memory(tokio::io::DuplexStream),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Memory(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Memory(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Memory(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Memory(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A reply other than stream entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    /// An error reply, without its `-`.
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Reply>),
}

impl Reply {
    /// An error reply as an [`Error`], anything else as it is.
    pub fn ok(self) -> Result<Reply, Error> {
        match self {
            Reply::Error(line) => Err(Error::server(line)),
            other => Ok(other),
        }
    }

    pub fn int(&self) -> Option<i64> {
        match self {
            Reply::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// A bulk or simple string as text.
    pub fn text(&self) -> Option<&str> {
        match self {
            Reply::Bulk(bytes) => std::str::from_utf8(bytes).ok(),
            Reply::Simple(text) => Some(text),
            _ => None,
        }
    }
}

/// Stream entries read from one reply.
#[derive(Default)]
pub struct Batch {
    pub entries: Vec<Entry>,
    /// `XAUTOCLAIM`'s cursor: where the next call starts (`0-0` when the scan is done).
    pub cursor: Option<EntryId>,
    /// `XAUTOCLAIM`'s ids of entries that were pending but are gone from the stream.
    pub deleted: Vec<EntryId>,
}

/// One entry of a reply.
pub struct Entry {
    pub id: EntryId,
    /// `None` for an entry that was pending but is gone from the stream (deleted, or
    /// trimmed away): Redis gives its id without fields.
    pub message: Option<Message>,
}

/// The limits an entry is read with.
#[derive(Clone, Copy)]
pub struct Limits {
    pub max_entry_bytes: usize,
    pub max_headers: usize,
}

/// The longest status line, error line or number line read.
const MAX_LINE: usize = 64 * 1024;
/// The longest bulk string read in a reply other than entries (ids, names, `INFO` text).
const MAX_SMALL_BULK: usize = 1024 * 1024;
/// The most elements of an array in a reply other than entries.
const MAX_ARRAY: i64 = 1 << 20;
/// The deepest nesting of a reply other than entries.
const MAX_DEPTH: usize = 8;
/// What the command buffer shrinks back to after a large command.
const OUT_CAPACITY: usize = 64 * 1024;
/// The most elements of an array that room is made for before they arrive: its length
/// is only what the server claims.
const PREALLOCATED_ELEMENTS: usize = 64;
/// The room made for a bulk string before its bytes arrive, when they are not buffered
/// already; it doubles as they come, up to the string's length.
const FIRST_BULK_ROOM: usize = 64 * 1024;

/// The first line of a reply element.
enum Head {
    Simple,
    Error,
    Int(i64),
    Bulk(i64),
    Array(i64),
}

/// One connection; see the module documentation.
pub struct Conn {
    io: BufReader<Stream>,
    /// The commands being written.
    out: Vec<u8>,
    /// The last line read, without its CRLF.
    line: Vec<u8>,
}

impl Conn {
    /// Connects, logs in and selects the database, all within `connect_timeout_ms`.
    pub async fn open(settings: &Settings) -> Result<Conn, Error> {
        let ms = settings.connect_timeout.as_millis() as u64;
        timeout(settings.connect_timeout, Conn::open_unbounded(settings))
            .await
            .map_err(|_| Error::Timeout {
                what: "connecting and logging in",
                ms,
                key: "connect_timeout_ms",
            })?
    }

    async fn open_unbounded(settings: &Settings) -> Result<Conn, Error> {
        let address = settings.address();
        let tcp = TcpStream::connect((settings.host.as_str(), settings.port))
            .await
            .map_err(|source| Error::Connect {
                address: address.clone(),
                source,
            })?;
        // Commands go out whole and at once; waiting to coalesce only adds latency.
        tcp.set_nodelay(true)?;
        let stream = match &settings.tls {
            None => Stream::Tcp(tcp),
            Some(tls) => match tls.handshake(tcp).await {
                Ok(stream) => Stream::Tls(Box::new(stream)),
                Err(e) => {
                    let reason = e.to_string();
                    return Err(Error::Tls {
                        address,
                        hint: tls_hint(&reason, tls.has_identity()),
                        reason,
                    });
                }
            },
        };
        let mut conn = Conn::over(stream);
        match conn.log_in(settings).await {
            Ok(()) => Ok(conn),
            // With TLS 1.3 a server that refuses the client's certificate says so only
            // after the handshake, on the first read.
            Err(e @ (Error::Io(_) | Error::Closed)) if settings.tls.is_some() => {
                let reason = e.to_string();
                let identity = settings.tls.as_ref().is_some_and(|t| t.has_identity());
                Err(Error::Tls {
                    address,
                    hint: tls_hint(&reason, identity),
                    reason,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// A connection on `stream`, as it is: nothing is sent.
    pub(crate) fn over(stream: Stream) -> Conn {
        Conn {
            io: BufReader::with_capacity(64 * 1024, stream),
            out: Vec::with_capacity(OUT_CAPACITY),
            line: Vec::new(),
        }
    }

    /// AUTH (if a password is set), SELECT (if the database is not 0) and PING, in one
    /// round trip; PING proves the server speaks RESP and lets us in.
    async fn log_in(&mut self, settings: &Settings) -> Result<(), Error> {
        let mut replies = 1;
        if let Some(password) = &settings.password {
            match &settings.username {
                Some(user) => self.command(&[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => self.command(&[b"AUTH", password.as_bytes()]),
            }
            replies += 1;
        }
        if settings.db != 0 {
            let db = settings.db.to_string();
            self.command(&[b"SELECT", db.as_bytes()]);
            replies += 1;
        }
        self.command(&[b"PING"]);
        self.send().await?;
        let mut first_error = None;
        for i in 0..replies {
            let reply = self.reply().await?;
            if let (Reply::Error(line), None) = (reply, &first_error) {
                let auth = settings.password.is_some() && i == 0;
                let select = settings.db != 0 && i == replies - 2;
                first_error = Some(if auth || line.starts_with("NOAUTH") {
                    Error::Auth(line)
                } else if select {
                    Error::Database {
                        db: settings.db,
                        reply: line,
                    }
                } else {
                    Error::server(line)
                });
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Starts a command of `argc` arguments; add them with [`Conn::arg`].
    pub fn begin(&mut self, argc: usize) {
        self.out.push(b'*');
        push_decimal(&mut self.out, argc as u64);
        self.out.extend_from_slice(b"\r\n");
    }

    pub fn arg(&mut self, arg: &[u8]) {
        self.out.push(b'$');
        push_decimal(&mut self.out, arg.len() as u64);
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(arg);
        self.out.extend_from_slice(b"\r\n");
    }

    pub fn arg_u64(&mut self, n: u64) {
        let mut digits = [0u8; 20];
        let at = decimal(&mut digits, n);
        self.arg(&digits[at..]);
    }

    /// The bytes of the commands begun and not yet sent.
    pub fn unsent(&self) -> usize {
        self.out.len()
    }

    /// A whole command.
    pub fn command(&mut self, args: &[&[u8]]) {
        self.begin(args.len());
        for arg in args {
            self.arg(arg);
        }
    }

    /// Writes the commands begun so far.
    pub async fn send(&mut self) -> Result<(), Error> {
        let written = self.io.get_mut().write_all(&self.out).await;
        self.out.clear();
        if self.out.capacity() > 16 * OUT_CAPACITY {
            self.out = Vec::with_capacity(OUT_CAPACITY);
        }
        written?;
        Ok(())
    }

    /// Sends one command and reads its reply, within `limit`; an error reply is an
    /// [`Error::Server`].
    pub async fn call(
        &mut self,
        args: &[&[u8]],
        limit: Duration,
        what: &'static str,
    ) -> Result<Reply, Error> {
        self.command(args);
        within(limit, what, "response_timeout_ms", async {
            self.send().await?;
            self.reply().await
        })
        .await??
        .ok()
    }

    /// Reads the next line into `self.line`, without its CRLF.
    async fn read_line(&mut self) -> Result<(), Error> {
        let Conn { io, line, .. } = self;
        line.clear();
        // Most lines are already buffered: no wait, no loop.
        if let Some(end) = io.buffer().iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&io.buffer()[..end]);
            io.consume(end + 1);
            if line.pop() != Some(b'\r') {
                return Err(Error::Malformed("a reply line not ended by CRLF".into()));
            }
            return Ok(());
        }
        loop {
            let buf = io.fill_buf().await?;
            if buf.is_empty() {
                return Err(Error::Closed);
            }
            match buf.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    line.extend_from_slice(&buf[..end]);
                    io.consume(end + 1);
                    break;
                }
                None => {
                    let n = buf.len();
                    line.extend_from_slice(buf);
                    io.consume(n);
                }
            }
            if line.len() > MAX_LINE {
                return Err(Error::Malformed(format!(
                    "a reply line longer than {MAX_LINE} bytes"
                )));
            }
        }
        if line.pop() != Some(b'\r') {
            return Err(Error::Malformed("a reply line not ended by CRLF".into()));
        }
        Ok(())
    }

    async fn head(&mut self) -> Result<Head, Error> {
        self.read_line().await?;
        let Some((&kind, rest)) = self.line.split_first() else {
            return Err(Error::Malformed("an empty reply line".into()));
        };
        let number = || {
            std::str::from_utf8(rest)
                .ok()
                .and_then(|text| text.parse::<i64>().ok())
                .ok_or_else(|| {
                    Error::Malformed(format!(
                        "`{}` where a number was expected",
                        String::from_utf8_lossy(rest)
                    ))
                })
        };
        Ok(match kind {
            b'+' => Head::Simple,
            b'-' => Head::Error,
            b':' => Head::Int(number()?),
            b'$' => Head::Bulk(number()?),
            b'*' => Head::Array(number()?),
            other => {
                return Err(Error::Malformed(format!(
                    "a reply starting with {:?} (this client speaks RESP2)",
                    char::from(other)
                )))
            }
        })
    }

    /// The text of the line just read, after its type byte.
    fn line_text(&self) -> String {
        String::from_utf8_lossy(&self.line[1..]).into_owned()
    }

    async fn crlf(&mut self) -> Result<(), Error> {
        let mut end = [0u8; 2];
        self.io.read_exact(&mut end).await?;
        if &end != b"\r\n" {
            return Err(Error::Malformed("a bulk string not ended by CRLF".into()));
        }
        Ok(())
    }

    /// Reads a bulk string's `len` bytes and its CRLF. Room is made as the bytes arrive
    /// (see [`FIRST_BULK_ROOM`]), so that a length the server claims and does not send
    /// costs no more than what did come.
    async fn bulk_bytes(&mut self, len: usize) -> Result<Vec<u8>, Error> {
        let buffered = self.io.buffer();
        if buffered.len() >= len + 2 {
            if &buffered[len..len + 2] != b"\r\n" {
                return Err(Error::Malformed("a bulk string not ended by CRLF".into()));
            }
            let bytes = buffered[..len].to_vec();
            self.io.consume(len + 2);
            return Ok(bytes);
        }
        let mut bytes = Vec::new();
        while bytes.len() < len {
            let start = bytes.len();
            let end = len.min(start.saturating_mul(2).max(FIRST_BULK_ROOM));
            bytes.reserve_exact(end - start);
            bytes.resize(end, 0);
            // Once the read buffer is empty, a read this large goes straight into `bytes`.
            self.io.read_exact(&mut bytes[start..]).await?;
        }
        self.crlf().await?;
        Ok(bytes)
    }

    /// Reads past a bulk string's `len` bytes without keeping them.
    async fn skip(&mut self, len: usize) -> Result<(), Error> {
        let mut left = len;
        while left > 0 {
            let buf = self.io.fill_buf().await?;
            if buf.is_empty() {
                return Err(Error::Closed);
            }
            let n = buf.len().min(left);
            self.io.consume(n);
            left -= n;
        }
        self.crlf().await
    }

    /// Reads one reply other than stream entries, with small bounds.
    pub fn reply(&mut self) -> Pin<Box<dyn Future<Output = Result<Reply, Error>> + Send + '_>> {
        self.reply_at(0)
    }

    fn reply_at(
        &mut self,
        depth: usize,
    ) -> Pin<Box<dyn Future<Output = Result<Reply, Error>> + Send + '_>> {
        Box::pin(async move {
            Ok(match self.head().await? {
                Head::Simple => Reply::Simple(self.line_text()),
                Head::Error => Reply::Error(self.line_text()),
                Head::Int(n) => Reply::Int(n),
                Head::Bulk(-1) | Head::Array(-1) => Reply::Nil,
                Head::Bulk(len) if (0..=MAX_SMALL_BULK as i64).contains(&len) => {
                    Reply::Bulk(self.bulk_bytes(len as usize).await?)
                }
                Head::Bulk(len) => {
                    return Err(Error::Malformed(format!(
                        "a {len}-byte string where at most {MAX_SMALL_BULK} were expected"
                    )))
                }
                Head::Array(len) if (0..=MAX_ARRAY).contains(&len) && depth < MAX_DEPTH => {
                    let mut items = Vec::with_capacity((len as usize).min(PREALLOCATED_ELEMENTS));
                    for _ in 0..len {
                        items.push(self.reply_at(depth + 1).await?);
                    }
                    Reply::Array(items)
                }
                Head::Array(len) => {
                    return Err(Error::Malformed(format!(
                        "an array of {len} elements at depth {depth}, more than expected"
                    )))
                }
            })
        })
    }

    /// A short bulk string: an id, a key, a cursor.
    async fn short_bulk(&mut self, what: &str) -> Result<Vec<u8>, Error> {
        match self.head().await? {
            Head::Bulk(len) if (0..=1024).contains(&len) => self.bulk_bytes(len as usize).await,
            _ => Err(Error::Malformed(format!("{what} is not a short string"))),
        }
    }

    /// An entry id, read without allocating (one per entry).
    async fn entry_id(&mut self) -> Result<EntryId, Error> {
        let mut text = [0u8; 64];
        let len = match self.head().await? {
            Head::Bulk(len) if (0..=64).contains(&len) => len as usize,
            _ => return Err(Error::Malformed("an entry id is not a short string".into())),
        };
        self.io.read_exact(&mut text[..len]).await?;
        self.crlf().await?;
        EntryId::parse(&text[..len]).ok_or_else(|| {
            Error::Malformed(format!(
                "`{}` is not an entry id",
                String::from_utf8_lossy(&text[..len])
            ))
        })
    }

    /// The reply to `XREADGROUP ... STREAMS key id`: nil when nothing came (BLOCK ran
    /// out), else the one stream's entries.
    pub async fn read_group_reply(&mut self, limits: Limits) -> Result<Batch, Error> {
        let mut batch = Batch::default();
        match self.head().await? {
            Head::Error => return Err(Error::server(self.line_text())),
            Head::Array(-1) | Head::Bulk(-1) => {}
            Head::Array(streams) if (0..=1).contains(&streams) => {
                for _ in 0..streams {
                    self.expect_array(2, "a stream of XREADGROUP's reply")
                        .await?;
                    self.short_bulk("the stream's key").await?;
                    self.entries(limits, &mut batch.entries).await?;
                }
            }
            _ => {
                return Err(Error::Malformed(
                    "XREADGROUP's reply is not a list of streams".into(),
                ))
            }
        }
        Ok(batch)
    }

    /// The reply to `XAUTOCLAIM`: the next cursor, the entries claimed, and (Redis 7) the
    /// ids of pending entries gone from the stream.
    pub async fn auto_claim_reply(&mut self, limits: Limits) -> Result<Batch, Error> {
        let mut batch = Batch::default();
        let parts = match self.head().await? {
            Head::Error => return Err(Error::server(self.line_text())),
            Head::Array(parts) if (2..=3).contains(&parts) => parts,
            _ => {
                return Err(Error::Malformed(
                    "XAUTOCLAIM's reply is not a cursor and entries".into(),
                ))
            }
        };
        batch.cursor = Some(self.entry_id().await?);
        self.entries(limits, &mut batch.entries).await?;
        if parts == 3 {
            match self.head().await? {
                Head::Array(len) if (0..=MAX_ARRAY).contains(&len) => {
                    for _ in 0..len {
                        batch.deleted.push(self.entry_id().await?);
                    }
                }
                _ => {
                    return Err(Error::Malformed(
                        "XAUTOCLAIM's deleted ids are not a list".into(),
                    ))
                }
            }
        }
        Ok(batch)
    }

    async fn expect_array(&mut self, len: i64, what: &str) -> Result<(), Error> {
        match self.head().await? {
            Head::Array(n) if n == len => Ok(()),
            _ => Err(Error::Malformed(format!("{what} is not a list of {len}"))),
        }
    }

    /// A list of entries, each `[id, [field, value, ...]]` or `[id, nil]`.
    async fn entries(&mut self, limits: Limits, out: &mut Vec<Entry>) -> Result<(), Error> {
        let count = match self.head().await? {
            Head::Array(n) if (0..=MAX_ARRAY).contains(&n) => n as usize,
            _ => return Err(Error::Malformed("the entries are not a list".into())),
        };
        out.reserve(count.min(PREALLOCATED_ELEMENTS));
        for _ in 0..count {
            self.expect_array(2, "an entry").await?;
            let id = self.entry_id().await?;
            let items = match self.head().await? {
                Head::Array(-1) | Head::Bulk(-1) => {
                    out.push(Entry { id, message: None });
                    continue;
                }
                Head::Array(n) if n >= 0 && n % 2 == 0 => n as usize,
                _ => {
                    return Err(Error::Malformed(format!(
                        "the fields of entry {id} are not a list of names and values"
                    )))
                }
            };
            let mut decoder = Decoder::new(limits.max_entry_bytes, limits.max_headers, items / 2);
            for _ in 0..items / 2 {
                let len = self.field_len(id).await?;
                let name = if decoder.wants_name(len) {
                    Field::Kept(self.bulk_bytes(len).await?)
                } else {
                    self.skip(len).await?;
                    Field::Skipped(len)
                };
                decoder.name(name);
                let len = self.field_len(id).await?;
                let value = if decoder.wants_value(len) {
                    Field::Kept(self.bulk_bytes(len).await?)
                } else {
                    self.skip(len).await?;
                    Field::Skipped(len)
                };
                decoder.value(value);
            }
            out.push(Entry {
                id,
                message: Some(decoder.finish(id)),
            });
        }
        Ok(())
    }

    async fn field_len(&mut self, id: EntryId) -> Result<usize, Error> {
        match self.head().await? {
            Head::Bulk(len) if len >= 0 => Ok(len as usize),
            _ => Err(Error::Malformed(format!(
                "a field of entry {id} is not a string"
            ))),
        }
    }
}

/// Runs `work` within `limit`, naming the key that sets it when it does not finish.
pub async fn within<T>(
    limit: Duration,
    what: &'static str,
    key: &'static str,
    work: impl Future<Output = T>,
) -> Result<T, Error> {
    timeout(limit, work).await.map_err(|_| Error::Timeout {
        what,
        ms: limit.as_millis() as u64,
        key,
    })
}

/// Writes `n` in decimal at the end of `digits`; returns where it starts.
fn decimal(digits: &mut [u8; 20], mut n: u64) -> usize {
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return i;
        }
    }
}

fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let at = decimal(&mut digits, n);
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use std::{
        alloc::{GlobalAlloc, Layout, System},
        cell::Cell,
    };

    use super::*;
    use crate::fuzzing::{Outcome, Read, Replayer};

    /// Counts, per thread, the bytes held and the most held at once, so that a test sees
    /// what its own reads cost while other tests run on other threads. A [`Replayer`]
    /// reads on the caller's thread.
    struct PerThread;

    thread_local! {
        static HELD: Cell<isize> = const { Cell::new(0) };
        static PEAK: Cell<isize> = const { Cell::new(0) };
    }

    fn count(change: isize) {
        let _ = HELD.try_with(|held| {
            held.set(held.get() + change);
            let _ = PEAK.try_with(|peak| peak.set(peak.get().max(held.get())));
        });
    }

    unsafe impl GlobalAlloc for PerThread {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let p = System.alloc(layout);
            if !p.is_null() {
                count(layout.size() as isize);
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            System.dealloc(ptr, layout);
            count(-(layout.size() as isize));
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            let p = System.realloc(ptr, layout, new_size);
            if !p.is_null() {
                count(new_size as isize - layout.size() as isize);
            }
            p
        }
    }

    #[global_allocator]
    static ALLOCATOR: PerThread = PerThread;

    /// What `f` returns, and the most bytes it held at once on this thread.
    fn held_while<T>(f: impl FnOnce() -> T) -> (T, usize) {
        let start = HELD.get();
        PEAK.set(start);
        let out = f();
        (out, (PEAK.get() - start) as usize)
    }

    const LIMITS: Limits = Limits {
        max_entry_bytes: 512 * 1024 * 1024,
        max_headers: 1 << 20,
    };

    /// The most a read may hold beyond what arrived: the read and command buffers, and
    /// the first room made for a bulk string.
    const FIXED: usize = 512 * 1024;

    #[test]
    fn a_length_or_count_claimed_and_not_sent_costs_nothing() {
        let replayer = Replayer::new();
        let nested = "*1048576\r\n".repeat(MAX_DEPTH);
        let cases: [(&str, &[u8], Read); 5] = [
            ("nested arrays", nested.as_bytes(), Read::Reply),
            ("a string", b"$1048576\r\nabc", Read::Reply),
            (
                "entries",
                b"*1\r\n*2\r\n$1\r\nk\r\n*1048576\r\n",
                Read::Group,
            ),
            (
                "fields",
                b"*3\r\n$3\r\n0-0\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*4000000\r\n",
                Read::AutoClaim,
            ),
            (
                "a body",
                b"*1\r\n*2\r\n$1\r\nk\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n\
                  $4\r\nbody\r\n$500000000\r\nabc",
                Read::Group,
            ),
        ];
        for (what, bytes, read) in cases {
            for chunk in [1, 7, 1 << 16] {
                let (outcomes, held) =
                    held_while(|| replayer.replay(bytes, chunk, &[read], LIMITS));
                assert!(
                    matches!(outcomes.last(), Some(Err(e)) if e.is_lost()),
                    "{what}: the bytes ran out, and the read must say so"
                );
                assert!(
                    held <= FIXED,
                    "{what} ({chunk}-byte reads): {held} bytes held for {} bytes read",
                    bytes.len()
                );
            }
        }
    }

    #[test]
    fn long_strings_arriving_in_pieces_are_read_whole() {
        let replayer = Replayer::new();
        let text: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut bytes = format!("${}\r\n", text.len()).into_bytes();
        bytes.extend_from_slice(&text);
        bytes.extend_from_slice(b"\r\n");
        let body_at = bytes.len();
        bytes.extend_from_slice(b"*1\r\n*2\r\n$1\r\nk\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n");
        bytes.extend_from_slice(b"$4\r\nbody\r\n");
        bytes.extend_from_within(..body_at);
        for chunk in [1000, 1 << 16, 1 << 20] {
            let outcomes = replayer.replay(&bytes, chunk, &[Read::Reply, Read::Group], LIMITS);
            let [Ok(Outcome::Reply(reply)), Ok(Outcome::Batch(batch)), Err(Error::Closed)] =
                &outcomes[..]
            else {
                panic!("{chunk}-byte reads: not a string, a batch and the end");
            };
            assert_eq!(reply, &Reply::Bulk(text.clone()));
            let message = batch.entries[0].message.as_ref().expect("fields");
            assert_eq!(message.body.as_slice(), &text[..]);
        }
    }

    #[test]
    fn decimals() {
        for n in [0u64, 7, 10, 1234567890, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}

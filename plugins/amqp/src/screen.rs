//! What lapin is allowed to read: every byte from the broker passes through [`Screened`],
//! which rewrites the content header frames lapin could not survive before lapin parses
//! them.
//!
//! Why here, and not with bigger stacks: lapin parses frames on an I/O thread it spawns
//! itself (`lapin-io-loop`) with the default 2 MiB stack, which no setting of lapin's
//! changes, and amq-protocol's parser recurses once per level of a nested header table,
//! taking some 10 KiB of stack a level in a debug build and 1 to 2 KiB in a release one. A
//! table nested a few thousand levels deep fits in RabbitMQ's default 128 KiB frame (5 bytes
//! a level) and overflows that stack, which aborts the whole process. The stack size of a
//! thread spawned with `std::thread::Builder::new()` can only be changed through
//! `RUST_MIN_STACK`, read once per process, which a plugin cannot set soundly. So the bytes
//! are made safe before they reach the parser instead: lapin then only ever holds (and
//! drops, and the consumer converts) tables at most [`MAX_HEADER_DEPTH`] deep, whatever
//! thread it happens on.
//!
//! [`screen_header`] rewrites a content header frame (the one frame type whose contents the
//! publisher chooses) only where lapin would otherwise fail, and so close the connection and
//! get the same message again, forever, or crash:
//! - a header value nested deeper than [`MAX_HEADER_DEPTH`] becomes [`TOO_DEEP`];
//! - a property string or table key that is not UTF-8 (RabbitMQ passes them on, amq-protocol
//!   refuses them) is read as lossy UTF-8;
//! - a frame larger than the connection's frame_max (RabbitMQ sends a publisher's header
//!   frame as it came, even above the consumer's frame_max, and lapin refuses it) loses its
//!   largest headers, named in [`DROPPED`];
//! - a header table that cannot be read at all is replaced by a [`DROPPED`] note.
//!
//! Everything else, including every frame of another type, passes unchanged, mostly without
//! being copied. The broker's method frames are trusted: they carry no publisher's data.
//!
//! On a consumer's connection ([`Screened::tapped`]) the frames of each delivery, its header
//! frame screened as above, go to the consumer's [`Tap`] instead of lapin (`src/tap.rs`).
//!
//! [`Kit`] is the runtime glue: lapin takes its streams from a connect function whose
//! stream type is fixed by the runtime kit, so the plugin's kit is tokio's with
//! [`Screened`] around its streams.

use std::{
    borrow::Cow,
    future::Future,
    io::{self, Read, Write},
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
    time::{Duration, Instant},
};

use async_rs::{
    traits::{Executor, Reactor, RuntimeKit},
    util::Task,
    Tokio,
};
use futures_lite::{
    io::{AsyncRead, AsyncWrite},
    Stream,
};
use golconde_plugin_support::low_water::LowWater;
use lapin::tcp::AsyncTcpStream;

use crate::{
    properties::{DROPPED, MAX_HEADER_DEPTH, TOO_DEEP},
    tap::{Inbox, Napping, Tap},
};

pub(crate) const FRAME_METHOD: u8 = 1;
pub(crate) const FRAME_HEADER: u8 = 2;
pub(crate) const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;
pub(crate) const FRAME_END: u8 = 0xCE;
/// Type, channel and payload size.
pub(crate) const FRAME_HEAD: usize = 7;

/// Property flags of class `basic` for the properties that are not short strings.
const HEADERS: u16 = 1 << 13;
const DELIVERY_MODE: u16 = 1 << 12;
const PRIORITY: u16 = 1 << 11;
const TIMESTAMP: u16 = 1 << 6;

/// Bytes read from the socket at a time when frames are being screened.
const READ_CHUNK: usize = 64 * 1024;

/// A header frame (and on a consumer's connection, every frame of a delivery) is held whole
/// until it can be read; one larger than this (which no RabbitMQ sends unless its
/// `frame_max` is set above it) ends the connection instead.
const MAX_HELD: usize = 64 * 1024 * 1024;

/// The broker's side of a connection, as lapin gets to read it.
pub struct Screened<S> {
    inner: S,
    /// The connection's frame_max, as asked for and then as tuned with the broker: a header
    /// frame larger than this is cut down to it.
    frame_max: usize,
    /// Bytes read from the socket and not yet screened: `input[start..end]`. They begin at
    /// a frame boundary, unless `pass` says that a frame's rest comes first.
    input: Vec<u8>,
    start: usize,
    end: usize,
    /// Screened bytes for lapin, from `output_at` on.
    output: Vec<u8>,
    output_at: usize,
    /// Bytes of the current frame that go through untouched.
    pass: usize,
    /// Not AMQP frames (the broker refused the protocol version with a protocol header of
    /// its own): everything goes through untouched, for lapin to make sense of.
    raw: bool,
    /// On a consumer's connection: what takes the deliveries instead of lapin.
    tap: Option<Tap>,
}

impl<S> Screened<S> {
    pub fn new(inner: S, frame_max: usize) -> Screened<S> {
        Screened {
            inner,
            frame_max,
            input: Vec::new(),
            start: 0,
            end: 0,
            output: Vec::new(),
            output_at: 0,
            pass: 0,
            raw: false,
            tap: None,
        }
    }

    /// The same stream, with the frames of deliveries going to `inbox` instead of lapin
    /// (`src/tap.rs`).
    /// With `napping`, it naps while the host is busy (see [`Tap::poll_nap`]).
    pub fn tapped(mut self, inbox: Arc<Inbox>, napping: Option<Napping>) -> Screened<S> {
        self.tap = Some(Tap::new(inbox, napping));
        self
    }

    /// Moves what can be decided from `input` to `output`.
    fn screen(&mut self) -> io::Result<()> {
        loop {
            let input = &self.input[self.start..self.end];
            if input.is_empty() {
                break;
            }
            if self.raw {
                self.output.extend_from_slice(input);
                self.start += input.len();
                break;
            }
            if self.pass > 0 {
                let count = self.pass.min(input.len());
                self.output.extend_from_slice(&input[..count]);
                self.start += count;
                self.pass -= count;
                continue;
            }
            if input.len() < FRAME_HEAD {
                break;
            }
            let kind = input[0];
            if !matches!(
                kind,
                FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
            ) {
                self.raw = true;
                continue;
            }
            let size = u32::from_be_bytes(input[3..7].try_into().expect("4 bytes")) as usize;
            let total = FRAME_HEAD + size + 1;
            // The connection's own methods are held too, to learn the frame_max it tunes to.
            let control = kind == FRAME_METHOD && input[1..3] == [0, 0];
            let tapped = match &self.tap {
                Some(tap) => match tap.claims(kind, input) {
                    Some(claimed) => claimed,
                    None => break,
                },
                None => false,
            };
            if kind != FRAME_HEADER && !control && !tapped {
                self.pass = total;
                continue;
            }
            if total > MAX_HELD {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "the broker sent a frame of {total} bytes (type {kind}), more than \
                         the {MAX_HELD} Golconde reads; lower the broker's frame_max"
                    ),
                ));
            }
            if input.len() < total {
                break;
            }
            if tapped {
                if let Some(tap) = &mut self.tap {
                    if let Err(e) = tap.read(&input[..total], self.frame_max) {
                        // The deliveries before it are whole: the host may have them.
                        tap.flush(&mut self.output);
                        return Err(e);
                    }
                }
                self.start += total;
                continue;
            }
            if control {
                if let Some(tuned) = tune_frame_max(&input[..total]) {
                    // What lapin settles on: the broker's when it is lower, never below
                    // AMQP's minimum; 0 is the broker's "no limit".
                    if tuned != 0 {
                        self.frame_max = self.frame_max.min(tuned.max(4096));
                    }
                }
                self.output.extend_from_slice(&input[..total]);
                self.start += total;
                continue;
            }
            match screen_header(&input[..total], self.frame_max) {
                Cow::Borrowed(frame) => self.output.extend_from_slice(frame),
                Cow::Owned(frame) => self.output.extend_from_slice(&frame),
            }
            self.start += total;
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if let Some(tap) = &mut self.tap {
            tap.flush(&mut self.output);
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Screened<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            if this.output_at < this.output.len() {
                let count = buf.len().min(this.output.len() - this.output_at);
                buf[..count].copy_from_slice(&this.output[this.output_at..][..count]);
                this.output_at += count;
                if this.output_at == this.output.len() {
                    this.output.clear();
                    this.output_at = 0;
                }
                return Poll::Ready(Ok(count));
            }
            if let Some(tap) = &mut this.tap {
                ready!(tap.poll_nap(cx))?;
            }
            let idle = this.start == this.end;
            if idle && (this.raw || this.pass > 0) {
                // The rest of a body (or anything not framed): straight into lapin's buffer.
                let limit = if this.raw {
                    buf.len()
                } else {
                    buf.len().min(this.pass)
                };
                let count = ready!(Pin::new(&mut this.inner).poll_read(cx, &mut buf[..limit]))?;
                if !this.raw {
                    this.pass -= count;
                }
                return Poll::Ready(Ok(count));
            }
            // What is waiting (part of a frame) moves to the front; the buffer grows only for
            // a header frame larger than it.
            if this.start > 0 {
                this.input.copy_within(this.start..this.end, 0);
                this.end -= this.start;
                this.start = 0;
            }
            if this.end == this.input.len() {
                this.input.resize(this.input.len() + READ_CHUNK, 0);
            }
            let count =
                ready!(Pin::new(&mut this.inner).poll_read(cx, &mut this.input[this.end..]))?;
            this.end += count;
            if count == 0 {
                // End of stream: what is left is an incomplete frame; lapin may say so.
                this.raw = true;
                if this.start == this.end {
                    return Poll::Ready(Ok(0));
                }
            }
            this.screen()?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Screened<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

/// The frame_max a `connection.tune` method frame (whole) offers; `None` for other frames.
fn tune_frame_max(frame: &[u8]) -> Option<usize> {
    let mut r = Reader::new(frame.get(FRAME_HEAD..)?);
    if (r.u16()?, r.u16()?) != (10, 30) {
        return None;
    }
    r.u16()?; // channel-max
    r.u32().map(|n| n as usize)
}

/// A content header frame (`frame`, whole, from its type byte to its end byte) as lapin may
/// read it: unchanged unless it holds something lapin would fail on (see the module's doc),
/// and never larger than `frame_max`. A frame too broken to find its properties in is left
/// as it is, for lapin to refuse.
pub fn screen_header(frame: &[u8], frame_max: usize) -> Cow<'_, [u8]> {
    match rebuild(frame, frame_max) {
        Some(rebuilt) => Cow::Owned(rebuilt),
        None => Cow::Borrowed(frame),
    }
}

/// One property of the list, as found in the frame.
enum Property<'a> {
    /// A short string: its bytes.
    Short(&'a [u8]),
    /// The headers table: its contents, without the length.
    Table(&'a [u8]),
    /// Octets and the timestamp: as they are.
    Fixed(&'a [u8]),
}

/// The rebuilt frame, or `None` if it is fine as it is, or so broken that lapin refuses it
/// before it reads any property (then no table was parsed either).
fn rebuild(frame: &[u8], frame_max: usize) -> Option<Vec<u8>> {
    let payload = frame.get(FRAME_HEAD..frame.len().checked_sub(1)?)?;
    if frame.last() != Some(&FRAME_END) {
        return None;
    }
    let mut r = Reader::new(payload);
    // Class, weight, body size.
    let fixed = r.take(12)?;
    let flags = r.u16()?;
    // The properties that could be read, in order, with their flags. A property list cut
    // short (no RabbitMQ forwards one) loses what follows the cut, and says so: lapin would
    // parse a deep table before it found the cut.
    let mut properties = Vec::new();
    let mut cut = None;
    for bit in (2..16).rev().map(|i| 1u16 << i) {
        if flags & bit == 0 {
            continue;
        }
        let property = match bit {
            HEADERS => r
                .u32()
                .and_then(|len| r.take(len as usize))
                .map(Property::Table),
            DELIVERY_MODE | PRIORITY => r.take(1).map(Property::Fixed),
            TIMESTAMP => r.take(8).map(Property::Fixed),
            _ => r.short().map(Property::Short),
        };
        match property {
            Some(property) => properties.push((bit, property)),
            None => {
                cut = Some(bit);
                break;
            }
        }
    }
    let trailing = cut.is_none() && !r.rest().is_empty();

    let mut table: Option<Cow<[u8]>> = None;
    let mut changed = trailing || cut.is_some();
    for (_, property) in &properties {
        match property {
            Property::Short(bytes) => changed |= std::str::from_utf8(bytes).is_err(),
            Property::Table(contents) => {
                let screened = screen_table(contents);
                changed |= matches!(screened, Cow::Owned(_));
                table = Some(screened);
            }
            Property::Fixed(_) => {}
        }
    }
    if !changed && frame.len() <= frame_max {
        return None;
    }
    if let Some(bit) = cut {
        let mut contents = table.map(Cow::into_owned).unwrap_or_default();
        entry(
            &mut contents,
            DROPPED,
            &format!(
                "the message's properties were cut short (at flag {bit:#06x}); what followed \
                 was left out"
            ),
        );
        table = Some(Cow::Owned(contents));
        if !properties.iter().any(|(bit, _)| *bit == HEADERS) {
            // Its place: after content-type and content-encoding, the only ones before it.
            let at = properties.iter().filter(|(bit, _)| *bit > HEADERS).count();
            properties.insert(at, (HEADERS, Property::Table(&[])));
        }
    }
    let flags = properties
        .iter()
        .fold(flags & 0b11, |all, (bit, _)| all | bit);

    let mut out = Vec::with_capacity(frame.len().min(frame_max));
    out.push(FRAME_HEADER);
    out.extend_from_slice(&frame[1..3]);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(fixed);
    out.extend_from_slice(&flags.to_be_bytes());
    let mut table_at = None;
    for (_, property) in &properties {
        match property {
            Property::Short(bytes) => short(&mut out, bytes),
            Property::Fixed(bytes) => out.extend_from_slice(bytes),
            Property::Table(_) => {
                table_at = Some(out.len());
                let contents = table.as_deref().unwrap_or_default();
                out.extend_from_slice(&(contents.len() as u32).to_be_bytes());
                out.extend_from_slice(contents);
            }
        }
    }
    // The frame end, and the payload size.
    if out.len() + 1 > frame_max {
        if let Some(at) = table_at {
            let contents = table.as_deref().unwrap_or_default();
            let tail = out.split_off(at + 4 + contents.len());
            out.truncate(at);
            let room = frame_max.saturating_sub(out.len() + 4 + tail.len() + 1);
            let fitted = fit_table(contents, room, frame_max);
            out.extend_from_slice(&(fitted.len() as u32).to_be_bytes());
            out.extend_from_slice(&fitted);
            out.extend_from_slice(&tail);
        }
    }
    out.push(FRAME_END);
    let size = (out.len() - FRAME_HEAD - 1) as u32;
    out[3..7].copy_from_slice(&size.to_be_bytes());
    Some(out)
}

/// Appends `bytes` as a short string, made UTF-8 (lossily) and cut to 255 bytes at a
/// character boundary if need be.
fn short(out: &mut Vec<u8>, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let mut end = text.len().min(255);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out.push(end as u8);
    out.extend_from_slice(&text.as_bytes()[..end]);
}

/// A container being copied: where it ends in the input, and where its length goes in the
/// output.
#[derive(Clone, Copy)]
struct Open {
    table: bool,
    end: usize,
    length_at: usize,
}

/// The contents of a header table as lapin may read them: values nested deeper than
/// [`MAX_HEADER_DEPTH`] replaced by [`TOO_DEEP`], keys made UTF-8. Borrowed if nothing
/// changed. Iterative: `contents` may nest as deep as a frame allows.
fn screen_table(contents: &[u8]) -> Cow<'_, [u8]> {
    match copy_table(contents) {
        Some((copy, false)) => {
            drop(copy);
            Cow::Borrowed(contents)
        }
        Some((copy, true)) => Cow::Owned(copy),
        None => {
            let mut out = Vec::new();
            entry(
                &mut out,
                DROPPED,
                &format!(
                    "the message's header table ({} bytes) could not be read and was left out",
                    contents.len()
                ),
            );
            Cow::Owned(out)
        }
    }
}

/// The screened copy of a table's contents and whether it differs, or `None` if they are
/// malformed.
fn copy_table(input: &[u8]) -> Option<(Vec<u8>, bool)> {
    let mut out = Vec::with_capacity(input.len());
    let mut changed = false;
    let mut stack = vec![Open {
        table: true,
        end: input.len(),
        length_at: usize::MAX,
    }];
    let mut pos = 0;
    // Where the value of the current top-level entry starts in `out`.
    let mut value_at = 0;
    while let Some(&top) = stack.last() {
        if pos == top.end {
            let done = stack.pop().expect("not empty");
            if done.length_at != usize::MAX {
                let len = (out.len() - done.length_at - 4) as u32;
                out[done.length_at..done.length_at + 4].copy_from_slice(&len.to_be_bytes());
            }
            continue;
        }
        let mut r = Reader::new(input.get(pos..top.end)?);
        if top.table {
            let key = r.short()?;
            changed |= std::str::from_utf8(key).is_err();
            short(&mut out, key);
        }
        if stack.len() == 1 {
            value_at = out.len();
        }
        let kind = r.u8()?;
        let size = match kind {
            b'S' | b'x' => 4 + r.clone().u32()? as usize,
            b'A' | b'F' => {
                let len = r.u32()? as usize;
                r.take(len)?;
                let end = top.end - r.rest().len();
                if stack.len() > MAX_HEADER_DEPTH {
                    // Too deep: the whole top-level value goes, not just this part of it.
                    let outer_end = stack.get(1).map_or(end, |open| open.end);
                    stack.truncate(1);
                    out.truncate(value_at);
                    out.push(b'S');
                    out.extend_from_slice(&(TOO_DEEP.len() as u32).to_be_bytes());
                    out.extend_from_slice(TOO_DEEP.as_bytes());
                    changed = true;
                    pos = outer_end;
                    continue;
                }
                out.push(kind);
                stack.push(Open {
                    table: kind == b'F',
                    end,
                    length_at: out.len(),
                });
                out.extend_from_slice(&[0; 4]);
                pos = end - len;
                continue;
            }
            scalar => fixed_size(scalar)?,
        };
        out.push(kind);
        out.extend_from_slice(r.take(size)?);
        pos = top.end - r.rest().len();
    }
    Some((out, changed))
}

/// Top-level entries of well-formed table `contents` (as [`copy_table`] makes them), in
/// order, as many as fit `room` bytes with a [`DROPPED`] entry naming the others.
fn fit_table(contents: &[u8], room: usize, frame_max: usize) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut r = Reader::new(contents);
    while !r.rest().is_empty() {
        let at = contents.len() - r.rest().len();
        let key = r.short();
        let Some(size) = key.and_then(|_| value_size(&mut r)) else {
            break;
        };
        let key = key.expect("checked");
        entries.push((at, 1 + key.len() + size, String::from_utf8_lossy(key)));
    }
    // Largest first, as the publisher does, so that most headers stay.
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(entries[i].1));
    let note_room = 1 + DROPPED.len() + 1 + 4 + 512;
    let available = room.saturating_sub(note_room);
    let mut total: usize = entries.iter().map(|e| e.1).sum();
    let mut gone = vec![false; entries.len()];
    for i in order {
        if total <= available {
            break;
        }
        total -= entries[i].1;
        gone[i] = true;
    }
    let mut out = Vec::with_capacity(total + note_room);
    let mut names = Vec::new();
    for ((at, size, name), gone) in entries.iter().zip(&gone) {
        if *gone {
            names.push(name.to_string());
        } else {
            out.extend_from_slice(&contents[*at..at + size]);
        }
    }
    let mut note = format!(
        "{} header(s) did not fit in one frame ({frame_max} bytes, the connection's frame_max) \
         and were left out:",
        names.len()
    );
    for (i, name) in names.iter().enumerate() {
        let sep = if i == 0 { " " } else { ", " };
        let name = crate::properties::shown(name);
        if note.len() + 2 * sep.len() + name.len() + '…'.len_utf8() > 512 {
            note.push_str(sep);
            note.push('…');
            break;
        }
        note.push_str(sep);
        note.push_str(&name);
    }
    entry(&mut out, DROPPED, &note);
    out
}

/// The size of the value at `r` (type byte included), moving past it.
fn value_size(r: &mut Reader<'_>) -> Option<usize> {
    let kind = r.u8()?;
    let size = match kind {
        b'S' | b'x' | b'A' | b'F' => 4 + r.clone().u32()? as usize,
        scalar => fixed_size(scalar)?,
    };
    r.take(size)?;
    Some(1 + size)
}

/// The size of a field value of fixed size, by its type byte; `None` for an unknown type.
fn fixed_size(kind: u8) -> Option<usize> {
    Some(match kind {
        b't' | b'b' | b'B' => 1,
        b's' | b'u' | b'U' => 2,
        b'I' | b'i' | b'f' => 4,
        b'D' => 5,
        b'l' | b'L' | b'd' | b'T' => 8,
        b'V' => 0,
        _ => return None,
    })
}

/// Appends the table entry `name` = long string `value`.
fn entry(out: &mut Vec<u8>, name: &str, value: &str) {
    short(out, name.as_bytes());
    out.push(b'S');
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value.as_bytes());
}

/// Reads big-endian numbers and slices off the front of a byte slice.
#[derive(Clone)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    fn rest(&self) -> &'a [u8] {
        self.rest
    }

    pub(crate) fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if len > self.rest.len() {
            return None;
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some(taken)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
    }

    pub(crate) fn short(&mut self) -> Option<&'a [u8]> {
        let len = self.u8()? as usize;
        self.take(len)
    }
}

/// async-rs' tokio kit with [`Screened`] around its TCP streams: the runtime type lapin's
/// connection is built with, so that the connect function may hand it screened streams.
#[derive(Clone, Debug)]
pub struct Kit {
    tokio: Tokio,
    frame_max: usize,
}

impl Kit {
    pub fn new(handle: tokio::runtime::Handle, frame_max: usize) -> Kit {
        Kit {
            tokio: Tokio::default().with_handle(handle),
            frame_max,
        }
    }
}

/// A handle on the socket beneath `stream`, for its low-water mark.
pub fn low_water(stream: &AsyncTcpStream<<Tokio as Reactor>::TcpStream>) -> Option<LowWater> {
    match stream {
        AsyncTcpStream::Plain(tcp) => LowWater::of(tcp.get_ref()),
        AsyncTcpStream::Rustls(tls) => LowWater::of(tls.get_ref().0.get_ref()),
        // Kinds of stream this build does not make: the consumer does not nap on them.
        _ => None,
    }
}

/// What a connection reads from: a TCP (or TLS) stream, screened.
pub type BrokerStream = Screened<AsyncTcpStream<<Tokio as Reactor>::TcpStream>>;

impl RuntimeKit for Kit {}

impl Executor for Kit {
    type Task<T: Send + 'static> = <Tokio as Executor>::Task<T>;

    fn block_on<T, F: Future<Output = T>>(&self, f: F) -> T {
        self.tokio.block_on(f)
    }

    fn spawn<T: Send + 'static, F: Future<Output = T> + Send + 'static>(
        &self,
        f: F,
    ) -> Task<Self::Task<T>> {
        self.tokio.spawn(f)
    }

    fn spawn_blocking<T: Send + 'static, F: FnOnce() -> T + Send + 'static>(
        &self,
        f: F,
    ) -> Task<Self::Task<T>> {
        self.tokio.spawn_blocking(f)
    }
}

impl Reactor for Kit {
    type TcpStream = BrokerStream;
    type Sleep = <Tokio as Reactor>::Sleep;

    /// lapin never registers raw handles; the bound is looser than the trait's because the
    /// trait's names a type async-rs keeps private.
    fn register<H: Read + Write + Send + 'static>(
        &self,
        _socket: H,
    ) -> io::Result<impl AsyncRead + AsyncWrite + Send + Unpin + 'static> {
        Err::<async_rs::util::DummyIO, _>(io::Error::new(
            io::ErrorKind::Unsupported,
            "the amqp plugin's runtime registers no raw handles",
        ))
    }

    fn sleep(&self, dur: Duration) -> Self::Sleep {
        self.tokio.sleep(dur)
    }

    fn interval(&self, dur: Duration) -> impl Stream<Item = Instant> + Send + 'static {
        self.tokio.interval(dur)
    }

    fn tcp_connect_addr(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<Self::TcpStream>> + Send + 'static {
        let connecting = self.tokio.tcp_connect_addr(addr);
        let frame_max = self.frame_max;
        async move {
            let stream = connecting.await?;
            Ok(Screened::new(AsyncTcpStream::Plain(stream), frame_max))
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_lite::{future::block_on, io::AsyncReadExt};
    use lapin::types::AMQPValue;

    use super::*;

    const FRAME_MAX: usize = 131_072;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![kind, 0, 1];
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out.push(FRAME_END);
        out
    }

    /// A content header frame with `properties` (already encoded) under `flags`.
    fn header_frame(flags: u16, properties: &[u8]) -> Vec<u8> {
        let mut payload = vec![0, 60, 0, 0];
        payload.extend_from_slice(&5u64.to_be_bytes());
        payload.extend_from_slice(&flags.to_be_bytes());
        payload.extend_from_slice(properties);
        frame(FRAME_HEADER, &payload)
    }

    fn long(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
    }

    fn table(entries: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        long(&mut out, entries);
        out
    }

    /// An entry `name` holding arrays nested `depth` deep, without recursion.
    fn deep(out: &mut Vec<u8>, name: &[u8], depth: usize) {
        short(out, name);
        for level in 0..depth {
            out.push(b'A');
            out.extend_from_slice(&((5 * (depth - 1 - level)) as u32).to_be_bytes());
        }
    }

    /// What lapin makes of a (screened) header frame.
    fn parse(frame: &[u8]) -> lapin::BasicProperties {
        let payload = &frame[FRAME_HEAD + 12..frame.len() - 1];
        let (rest, properties) = lapin::protocol::basic::parse_properties(payload)
            .unwrap_or_else(|e| panic!("lapin refuses the frame: {e}"));
        assert!(rest.is_empty(), "{} bytes left over", rest.len());
        properties
    }

    fn headers(properties: &lapin::BasicProperties) -> Vec<(String, String)> {
        crate::properties::headers(properties)
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_string()))
            .collect()
    }

    #[test]
    fn a_frame_lapin_can_read_passes_as_it_is() {
        let mut entries = Vec::new();
        entry(&mut entries, "x-a", "b");
        deep(&mut entries, b"limit", MAX_HEADER_DEPTH);
        let mut properties = Vec::new();
        short(&mut properties, b"text/plain");
        properties.extend(table(&entries));
        let frame = header_frame(CONTENT_TYPE_FLAG | HEADERS, &properties);
        assert!(matches!(screen_header(&frame, FRAME_MAX), Cow::Borrowed(_)));
    }

    const CONTENT_TYPE_FLAG: u16 = 1 << 15;
    const MESSAGE_ID_FLAG: u16 = 1 << 7;

    #[test]
    fn a_value_nested_too_deep_becomes_the_marker_and_the_rest_stays() {
        let mut entries = Vec::new();
        entry(&mut entries, "a", "first");
        // 100,000 levels: more than a frame holds, to be sure of the bound.
        deep(&mut entries, b"deep", 100_000);
        deep(&mut entries, b"over", MAX_HEADER_DEPTH + 1);
        deep(&mut entries, b"limit", MAX_HEADER_DEPTH);
        entry(&mut entries, "z", "last");
        let mut properties = table(&entries);
        short(&mut properties, b"id-1");
        let frame = header_frame(HEADERS | MESSAGE_ID_FLAG, &properties);
        let screened = screen_header(&frame, usize::MAX);
        let got = headers(&parse(&screened));
        let limit = format!(
            "{}{}",
            "[".repeat(MAX_HEADER_DEPTH),
            "]".repeat(MAX_HEADER_DEPTH)
        );
        let expected: Vec<(String, String)> = [
            ("message-id", "id-1"),
            ("a", "first"),
            ("deep", TOO_DEEP),
            ("limit", &limit),
            ("over", TOO_DEEP),
            ("z", "last"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn deep_tables_inside_tables_and_arrays_are_bounded_too() {
        // {"t": {"k": [{"k": [ ... ]}]}}, alternating, 10,000 levels.
        let mut value = Vec::new();
        for level in 0..10_000 {
            let table = level % 2 == 0;
            value.push(if table { b'F' } else { b'A' });
            value.extend_from_slice(&[0; 4]);
            if table && level + 1 < 10_000 {
                short(&mut value, b"k");
            }
        }
        let value = relength(&value);
        let mut entries = Vec::new();
        short(&mut entries, b"t");
        entries.extend_from_slice(&value);
        let frame = header_frame(HEADERS, &table(&entries));
        let got = headers(&parse(&screen_header(&frame, usize::MAX)));
        assert_eq!(got, [("t".to_string(), TOO_DEEP.to_string())]);
    }

    /// Fixes the length fields of a chain of nested containers, each holding only the next
    /// (after a key, in a table).
    fn relength(value: &[u8]) -> Vec<u8> {
        let mut out = value.to_vec();
        let mut starts = Vec::new();
        let mut pos = 0;
        while pos < out.len() {
            let table = out[pos] == b'F';
            starts.push(pos);
            pos += 5;
            if table && pos < out.len() {
                pos += 1 + out[pos] as usize;
            }
        }
        for &start in starts.iter().rev() {
            let len = (out.len() - start - 5) as u32;
            out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
        }
        out
    }

    #[test]
    fn strings_and_keys_that_are_not_utf8_are_made_lossy() {
        let mut inner = Vec::new();
        short(&mut inner, b"in\xfe");
        inner.push(b'S');
        long(&mut inner, b"v\xff");
        let mut entries = Vec::new();
        short(&mut entries, b"k\xff");
        entries.push(b'F');
        long(&mut entries, &inner);
        let mut properties = Vec::new();
        short(&mut properties, b"text/\xff");
        properties.extend(table(&entries));
        short(&mut properties, &[0xC3; 255]);
        let frame = header_frame(CONTENT_TYPE_FLAG | HEADERS | MESSAGE_ID_FLAG, &properties);
        let properties = parse(&screen_header(&frame, FRAME_MAX));
        let got = headers(&properties);
        let id = &got[0].1;
        assert!(
            id.len() <= 255 && id.chars().all(|c| c == '\u{fffd}'),
            "{id}"
        );
        assert_eq!(got[1], ("content-type".into(), "text/\u{fffd}".into()));
        assert_eq!(
            got[2],
            ("k\u{fffd}".into(), "{\"in\u{fffd}\":\"v\u{fffd}\"}".into())
        );
    }

    #[test]
    fn a_table_that_cannot_be_read_is_replaced_by_a_note() {
        for entries in [
            &b"\x01kZ"[..],                     // unknown type
            b"\x01kS\x00\x00\x00\x09abc",       // string longer than the table
            b"\x05k",                           // key longer than the table
            b"\x01kA\x00\x00\x00\x03\x01\x02x", // array element that runs past the array
            b"\x01kF\x00\x00\x00\x02\x01k",     // table entry without a value
        ] {
            let mut properties = table(entries);
            short(&mut properties, b"id");
            let frame = header_frame(HEADERS | MESSAGE_ID_FLAG, &properties);
            let got = headers(&parse(&screen_header(&frame, FRAME_MAX)));
            assert_eq!(got[0], ("message-id".into(), "id".into()));
            assert_eq!(got[1].0, DROPPED, "{entries:?}");
            assert!(got[1].1.contains("could not be read"), "{}", got[1].1);
        }
    }

    #[test]
    fn a_frame_larger_than_frame_max_loses_its_largest_headers() {
        let mut entries = Vec::new();
        entry(&mut entries, "x-small", "s");
        entry(&mut entries, "x-big", &"b".repeat(10_000));
        entry(&mut entries, "x-bigger", &"b".repeat(20_000));
        entry(&mut entries, "x-medium", &"m".repeat(1_000));
        let mut properties = table(&entries);
        short(&mut properties, b"id-1");
        let frame = header_frame(HEADERS | MESSAGE_ID_FLAG, &properties);
        let screened = screen_header(&frame, 8192);
        assert!(screened.len() <= 8192, "{}", screened.len());
        let got = headers(&parse(&screened));
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message-id",
                "x-golconde-dropped-headers",
                "x-medium",
                "x-small"
            ]
        );
        assert!(got[1].1.contains("2 header(s)"), "{}", got[1].1);
        assert!(got[1].1.contains("8192"), "{}", got[1].1);
        assert!(got[1].1.contains("x-big, x-bigger"), "{}", got[1].1);
    }

    #[test]
    fn frames_too_broken_to_screen_pass_for_lapin_to_refuse() {
        // lapin refuses these before it reads any property.
        for frame in [frame(FRAME_HEADER, b""), frame(FRAME_HEADER, &[0; 13])] {
            assert!(matches!(screen_header(&frame, FRAME_MAX), Cow::Borrowed(_)));
        }
        let mut unterminated = header_frame(0, b"");
        *unterminated.last_mut().unwrap() = 0;
        assert!(matches!(
            screen_header(&unterminated, FRAME_MAX),
            Cow::Borrowed(_)
        ));
    }

    /// lapin would parse the deep table before it found the cut, so the cut cannot be left
    /// to lapin.
    #[test]
    fn a_property_list_cut_short_keeps_what_came_before_and_says_so() {
        let mut entries = Vec::new();
        deep(&mut entries, b"deep", 10_000);
        entry(&mut entries, "x-a", "b");
        let mut properties = Vec::new();
        short(&mut properties, b"text/plain");
        properties.extend(table(&entries));
        properties.push(9); // A message-id of 9 bytes, of which 2 came.
        properties.extend_from_slice(b"id");
        let frame = header_frame(CONTENT_TYPE_FLAG | HEADERS | MESSAGE_ID_FLAG, &properties);
        let got = headers(&parse(&screen_header(&frame, FRAME_MAX)));
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-type", "deep", "x-a", DROPPED]);
        assert_eq!(got[1].1, TOO_DEEP);
        assert!(got[3].1.contains("cut short"), "{}", got[3].1);

        // Cut inside the table's length, or before it: the note is all that is left.
        for properties in [&b"\x04text\x00\x00\x01\x00"[..], b"\x09te"] {
            let frame = header_frame(CONTENT_TYPE_FLAG | HEADERS, properties);
            let got = headers(&parse(&screen_header(&frame, FRAME_MAX)));
            assert_eq!(got.last().unwrap().0, DROPPED, "{properties:?}");
        }
    }

    /// A socket that hands out its bytes in the given sizes of read, round-robin.
    struct Chunked {
        bytes: Vec<u8>,
        at: usize,
        sizes: Vec<usize>,
        turn: usize,
    }

    impl AsyncRead for Chunked {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let size = this.sizes[this.turn % this.sizes.len()];
            this.turn += 1;
            let count = size.min(buf.len()).min(this.bytes.len() - this.at);
            buf[..count].copy_from_slice(&this.bytes[this.at..this.at + count]);
            this.at += count;
            Poll::Ready(Ok(count))
        }
    }

    fn read_through(bytes: &[u8], sizes: &[usize], lapin_reads: usize) -> io::Result<Vec<u8>> {
        let socket = Chunked {
            bytes: bytes.to_vec(),
            at: 0,
            sizes: sizes.to_vec(),
            turn: 0,
        };
        let mut screened = Screened::new(socket, FRAME_MAX);
        let mut out = Vec::new();
        let mut buf = vec![0; lapin_reads];
        block_on(async {
            loop {
                let count = screened.read(&mut buf).await?;
                if count == 0 {
                    return Ok(out);
                }
                out.extend_from_slice(&buf[..count]);
            }
        })
    }

    #[test]
    fn the_stream_screens_header_frames_however_the_bytes_arrive() {
        let mut entries = Vec::new();
        deep(&mut entries, b"deep", 20_000);
        let deep_frame = header_frame(HEADERS, &table(&entries));
        let clean = header_frame(CONTENT_TYPE_FLAG, b"\x04text");
        let body = frame(FRAME_BODY, &vec![7u8; 300_000]);
        let method = frame(FRAME_METHOD, b"\x00\x3c\x00\x3c");
        let heartbeat = frame(FRAME_HEARTBEAT, b"");
        let stream: Vec<u8> = [
            &method[..],
            &deep_frame,
            &body,
            &heartbeat,
            &method,
            &clean,
            &body,
        ]
        .concat();
        let screened_deep = screen_header(&deep_frame, FRAME_MAX).into_owned();
        assert_ne!(screened_deep, deep_frame);
        let expected: Vec<u8> = [
            &method[..],
            &screened_deep,
            &body,
            &heartbeat,
            &method,
            &clean,
            &body,
        ]
        .concat();
        for (sizes, lapin_reads) in [
            (vec![1], 7),
            (vec![3, 1, 70_000], 4096),
            (vec![usize::MAX], 1 << 20),
            (vec![6, 7, 8], 100),
        ] {
            let got = read_through(&stream, &sizes, lapin_reads).unwrap();
            assert!(got == expected, "reads of {sizes:?} into {lapin_reads}");
        }
    }

    /// A frame_max the broker tunes lower than asked is the one lapin holds header frames
    /// to, so it is the one they are cut down to.
    #[test]
    fn header_frames_are_cut_to_the_frame_max_the_broker_tunes_to() {
        let tune = |frame_max: u32| {
            let mut payload = vec![0, 10, 0, 30, 0, 0];
            payload.extend_from_slice(&frame_max.to_be_bytes());
            payload.extend_from_slice(&[0, 60]);
            let mut out = vec![FRAME_METHOD, 0, 0];
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            out.extend_from_slice(&payload);
            out.push(FRAME_END);
            out
        };
        let mut entries = Vec::new();
        entry(&mut entries, "x-big", &"b".repeat(10_000));
        let big = header_frame(HEADERS, &table(&entries));
        for (offered, limit) in [
            (8192, 8192),
            (0, FRAME_MAX),
            (1 << 20, FRAME_MAX),
            (100, 4096),
        ] {
            let stream = [tune(offered), big.clone()].concat();
            let got = read_through(&stream, &[usize::MAX], 1 << 20).unwrap();
            let header = &got[tune(offered).len()..];
            let expected = screen_header(&big, limit);
            assert!(header == &expected[..], "offered {offered}");
        }
    }

    #[test]
    fn what_is_not_frames_passes_untouched() {
        // A broker refusing the protocol version answers with its own protocol header.
        let refusal = b"AMQP\x00\x00\x09\x01".to_vec();
        assert_eq!(read_through(&refusal, &[3], 64).unwrap(), refusal);
        // A stream cut in the middle of a header frame: what came is passed on.
        let mut cut = header_frame(HEADERS, &table(b"\x01kS\x00\x00\x00\x01v"));
        cut.truncate(cut.len() - 4);
        assert_eq!(read_through(&cut, &[5], 64).unwrap(), cut);
    }

    #[test]
    fn a_header_frame_beyond_what_is_held_ends_the_connection() {
        let mut head = vec![FRAME_HEADER, 0, 1];
        head.extend_from_slice(&(MAX_HELD as u32).to_be_bytes());
        let err = read_through(&head, &[64], 64).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("frame_max"), "{err}");
    }

    #[test]
    fn header_values_of_every_type_are_copied_exactly() {
        let mut entries = Vec::new();
        for (kind, bytes) in [
            (b't', &b"\x01"[..]),
            (b'b', b"\xff"),
            (b'B', b"\x01"),
            (b's', b"\x00\x01"),
            (b'u', b"\x00\x01"),
            (b'I', b"\x00\x00\x00\x01"),
            (b'i', b"\x00\x00\x00\x01"),
            (b'l', b"\x00\x00\x00\x00\x00\x00\x00\x01"),
            (b'f', b"\x3f\x80\x00\x00"),
            (b'd', b"\x3f\xf0\x00\x00\x00\x00\x00\x00"),
            (b'D', b"\x02\x00\x00\x01\x00"),
            (b'T', b"\x00\x00\x00\x00\x00\x00\x00\x01"),
            (b'V', b""),
            (b'x', b"\x00\x00\x00\x02\xff\x00"),
        ] {
            short(&mut entries, &[kind]);
            entries.push(kind);
            entries.extend_from_slice(bytes);
        }
        let frame = header_frame(HEADERS, &table(&entries));
        assert!(matches!(screen_header(&frame, FRAME_MAX), Cow::Borrowed(_)));
        let properties = parse(&frame);
        let parsed = properties.headers().as_ref().unwrap();
        assert_eq!(parsed.inner().len(), 14);
        let decimal = lapin::types::DecimalValue {
            scale: 2,
            value: 256,
        };
        assert_eq!(
            parsed.inner().get("D"),
            Some(&AMQPValue::DecimalValue(decimal))
        );
        // The same bytes with one key not UTF-8: copied the same, but that key.
        let mut bad = entries.clone();
        bad[1] = 0xff;
        let frame = header_frame(HEADERS, &table(&bad));
        let back = parse(&screen_header(&frame, FRAME_MAX));
        assert_eq!(back.headers().as_ref().unwrap().inner().len(), 14);
    }
}

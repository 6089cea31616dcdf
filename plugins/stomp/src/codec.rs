//! The STOMP 1.2 wire format as a `tokio-util` codec: bytes to [`Item`]s and back.
//!
//! Decoding is incremental and never rescans: header lines are parsed and dropped from the
//! buffer as each one completes, and the decoder remembers how far it has looked for the
//! end of a line or for the NUL that ends a body without `content-length`, so a peer
//! dribbling a large frame costs linear time.
//!
//! **A frame over a limit costs that frame only.** The limits bound what one frame may
//! hold in memory: `max_frame_bytes` (command line, headers, body and NUL together) and
//! `max_headers` (header lines). Past them the decoder does not fail, which would drop the
//! connection and have the broker redeliver the same message first, for ever; it reads on
//! without keeping: a body that does not fit is skipped as it arrives (never buffered),
//! header lines past `max_headers` or past the byte limit are dropped (except the few the
//! client needs, such as `ack`, see [`PROTOCOL_HEADERS`]), and so is a header line that
//! cannot be read (not UTF-8, a bad escape, no colon). The frame then comes out with
//! [`Frame::incomplete`] saying what was left out, for the consumer to hand over marked.
//! What remains a [`CodecError`], dropping the connection, is what only a broken peer
//! sends: an unknown command, a bad `content-length`, a body not followed by NUL, a
//! connection ending mid-frame. Never a panic.
//!
//! End-of-lines between frames are heart-beats. The decoder reports a run of them as one
//! [`Item::Heartbeat`] (so the reader can tell the peer is alive), except the EOLs that
//! directly follow a frame in the same read: brokers pad every frame with one, and the
//! frame itself already proved liveness.

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::frame::{Command, Frame};

/// What travels on a STOMP connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Frame(Frame),
    /// One or more EOLs between frames.
    Heartbeat,
}

/// Why bytes could not be decoded or a frame encoded. Decoding errors end the connection,
/// so they are kept to what a broken peer sends; see the module documentation.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("unknown command `{0}`")]
    UnknownCommand(String),
    #[error("content-length `{0}` is not a byte count")]
    BadContentLength(String),
    #[error("the {length}-byte body given by content-length is not followed by NUL")]
    MissingNul { length: usize },
    #[error("the connection ended in the middle of a frame ({0} bytes unread)")]
    Truncated(usize),
    #[error("cannot encode header `{name}` of a {command} frame: {why}")]
    Unencodable {
        command: Command,
        name: String,
        why: &'static str,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Headers the client needs whatever else is dropped: to acknowledge a message and say
/// which it was (`ack`, `subscription`, the ids, `destination`, redelivery), to match a
/// RECEIPT or ERROR to its request and read it, to finish the handshake. The first of
/// each is kept past `max_headers`, and past `max_frame_bytes` if its line is short
/// ([`PROTOCOL_LINE_BYTES`]).
pub const PROTOCOL_HEADERS: [&str; 11] = [
    "ack",
    "subscription",
    "message-id",
    "amqp-message-id",
    "destination",
    "redelivered",
    "redeliveries",
    "receipt-id",
    "message",
    "version",
    "heart-beat",
];

/// Past `max_frame_bytes`, the longest header line still read (for [`PROTOCOL_HEADERS`]);
/// longer ones are skipped unread.
pub const PROTOCOL_LINE_BYTES: usize = 1024;

/// The longest command line: a line that long without an end is no STOMP command.
const COMMAND_LINE_BYTES: usize = 64;

/// Header lines of a typical MESSAGE (RabbitMQ sends seven or eight).
const TYPICAL_HEADERS: usize = 10;

/// The frame being read, from its command line on.
#[derive(Debug)]
struct Head {
    command: Command,
    headers: Vec<(String, String)>,
    /// Bytes of the frame so far, dropped ones included.
    size: usize,
    /// Bytes of the header section, once it is complete.
    head_size: usize,
    /// Header lines read, dropped ones included (`content-length` too).
    lines: usize,
    /// Header lines dropped for `max_headers`, for `max_frame_bytes`, and unreadable.
    over_count: usize,
    over_size: usize,
    unreadable: usize,
    first_unreadable: Option<String>,
    length: Option<usize>,
    seen_length: bool,
    /// Which of [`PROTOCOL_HEADERS`] have been kept.
    protocol_kept: [bool; PROTOCOL_HEADERS.len()],
    /// The body does not fit and is being skipped.
    oversized: bool,
}

impl Head {
    fn new(command: Command, size: usize) -> Head {
        Head {
            command,
            // A broker's MESSAGE carries about this many: one allocation, no regrowth.
            headers: Vec::with_capacity(TYPICAL_HEADERS),
            size,
            head_size: 0,
            lines: 0,
            over_count: 0,
            over_size: 0,
            unreadable: 0,
            first_unreadable: None,
            length: None,
            seen_length: false,
            protocol_kept: [false; PROTOCOL_HEADERS.len()],
            oversized: false,
        }
    }

    fn unreadable(&mut self, why: String) {
        self.unreadable += 1;
        self.first_unreadable.get_or_insert(why);
    }

    /// Reads one complete header line (without its EOL) into the frame, within the limits
    /// `max_frame_bytes` and `max_headers`.
    fn header_line(
        &mut self,
        line: &[u8],
        max_frame_bytes: usize,
        max_headers: usize,
    ) -> Result<(), CodecError> {
        self.lines += 1;
        let Some(colon) = memchr::memchr(b':', line) else {
            self.unreadable(format!("header line `{}` has no colon", preview(line)));
            return Ok(());
        };
        if colon == 0 {
            self.unreadable(format!("header line `{}` has an empty name", preview(line)));
            return Ok(());
        }
        let escaped = self.command.escapes_headers();
        // One check of the whole line, not one of each half: the colon is ASCII, so both
        // halves of a valid line are valid. A line that is not is read half by half, as
        // each half's error names what it is.
        let text = std::str::from_utf8(line).ok();
        let half = |range: std::ops::Range<usize>| match text {
            Some(text) => unescape(&text[range], escaped, line),
            None => decode_text(&line[range], escaped, line),
        };
        let name = match half(0..colon) {
            Ok(name) => name,
            Err(why) => {
                self.unreadable(why);
                return Ok(());
            }
        };
        if name == "content-length" {
            // The first occurrence wins; later ones are dropped like any repeated header.
            if !self.seen_length {
                self.seen_length = true;
                // A value that is not UTF-8 left `text` unset: no length either way.
                let length = text
                    .and_then(|text| text[colon + 1..].parse::<usize>().ok())
                    .ok_or_else(|| CodecError::BadContentLength(preview(&line[colon + 1..])))?;
                self.length = Some(length);
            }
            return Ok(());
        }
        let protocol = PROTOCOL_HEADERS
            .iter()
            .position(|p| *p == name)
            .filter(|&i| !self.protocol_kept[i]);
        let fits = self.size <= max_frame_bytes;
        let room = self.headers.len() < max_headers;
        if !(fits && room) && protocol.is_none() {
            if fits {
                self.over_count += 1;
            } else {
                self.over_size += 1;
            }
            return Ok(());
        }
        let value = match half(colon + 1..line.len()) {
            Ok(value) => value,
            Err(why) => {
                self.unreadable(why);
                return Ok(());
            }
        };
        if let Some(i) = protocol {
            self.protocol_kept[i] = true;
        }
        self.headers.push((name, value));
        Ok(())
    }

    /// What was left out of the frame, in words, or `None` if nothing was.
    fn incomplete(&self, max_frame_bytes: usize, max_headers: usize) -> Option<String> {
        let mut parts = Vec::new();
        if self.oversized {
            let body = self.size.saturating_sub(self.head_size + 1);
            let dropped = match self.over_size {
                0 => format!("its {body}-byte body was dropped"),
                n => format!("its {body}-byte body and {n} header lines were dropped"),
            };
            parts.push(format!(
                "the STOMP frame is {} bytes, more than `max_frame_bytes` ({max_frame_bytes}); \
                 {dropped}",
                self.size
            ));
        }
        if self.over_count > 0 {
            parts.push(format!(
                "the STOMP frame has {} header lines, more than `max_headers` ({max_headers}); \
                 the {} past the limit were dropped",
                self.lines, self.over_count
            ));
        }
        if self.unreadable > 0 {
            parts.push(format!(
                "{} header lines could not be read and were dropped (the first: {})",
                self.unreadable,
                self.first_unreadable.as_deref().unwrap_or("?")
            ));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// Where the decoder is within a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between frames, or reading the command line or a header line.
    Lines,
    /// Skipping the rest of a header line too long to keep.
    LongLine,
    /// Waiting for a body that fits.
    Body,
    /// Skipping a body that does not fit; `Some(n)`: n bytes to go, NUL included.
    SkipBody(Option<usize>),
}

/// Encodes and decodes STOMP 1.2. One instance per direction: the decoder keeps state
/// between reads.
#[derive(Debug)]
pub struct StompCodec {
    max_frame_bytes: usize,
    max_headers: usize,
    head: Option<Head>,
    phase: Phase,
    /// How far the current line, or the NUL of a body, has been looked for.
    scanned: usize,
}

impl StompCodec {
    pub fn new(max_frame_bytes: usize, max_headers: usize) -> StompCodec {
        StompCodec {
            max_frame_bytes,
            max_headers,
            head: None,
            phase: Phase::Lines,
            scanned: 0,
        }
    }

    /// The header section is complete: decides whether the body fits.
    fn start_body(&mut self) {
        let head = self.head.as_mut().expect("a frame is being read");
        head.head_size = head.size;
        // A length no frame could have (past `usize`) is just over any limit.
        let frame_size = head
            .length
            .map(|length| head.size.checked_add(length)?.checked_add(1));
        head.oversized = head.size > self.max_frame_bytes
            || frame_size.is_some_and(|size| size.is_none_or(|size| size > self.max_frame_bytes));
        self.phase = match (head.oversized, head.length) {
            (false, _) => Phase::Body,
            (true, Some(length)) => Phase::SkipBody(Some(length.saturating_add(1))),
            (true, None) => Phase::SkipBody(None),
        };
        self.scanned = 0;
    }

    /// The frame read, with `body`; the decoder is ready for the next one.
    fn finish(&mut self, body: bytes::Bytes, src: &mut BytesMut) -> Item {
        let head = self.head.take().expect("a frame is being read");
        self.phase = Phase::Lines;
        self.scanned = 0;
        src.advance(eol_run(src));
        Item::Frame(Frame {
            incomplete: head.incomplete(self.max_frame_bytes, self.max_headers),
            command: head.command,
            headers: head.headers,
            body,
        })
    }
}

/// The body of `length` bytes at the start of `src`, which is then skipped with its NUL.
/// Copied out rather than split off: a split would make the read buffer shared, and a
/// shared buffer cannot take back the room of frames already read, so every read would
/// allocate anew; the consumer needs the body in a buffer of its own anyway, and this one
/// passes on without another copy (`Vec::from` of a `Bytes` made from a `Vec`).
fn take_body(src: &mut BytesMut, length: usize) -> bytes::Bytes {
    let body = bytes::Bytes::from(src[..length].to_vec());
    src.advance(length + 1);
    body
}

/// How many bytes at the start of `src` are complete EOLs (`\n` or `\r\n`).
fn eol_run(src: &[u8]) -> usize {
    let mut at = 0;
    loop {
        match src.get(at..at + 2) {
            _ if src.get(at) == Some(&b'\n') => at += 1,
            Some(b"\r\n") => at += 2,
            _ => return at,
        }
    }
}

/// Text for an error message: the start of a line, lossily decoded.
fn preview(bytes: &[u8]) -> String {
    const MAX: usize = 80;
    let shown = &bytes[..bytes.len().min(MAX)];
    let mut text: String = String::from_utf8_lossy(shown).escape_debug().collect();
    if bytes.len() > MAX {
        text.push('…');
    }
    text
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A header name or value; the error says why the line cannot be read.
fn decode_text(raw: &[u8], escaped: bool, line: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(raw)
        .map_err(|_| format!("header line `{}` is not UTF-8", preview(line)))?;
    unescape(text, escaped, line)
}

/// A header name or value already known to be text, with STOMP's escapes undone if the
/// frame's command has them.
fn unescape(text: &str, escaped: bool, line: &[u8]) -> Result<String, String> {
    if !escaped || !text.contains('\\') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next() {
            Some('r') => '\r',
            Some('n') => '\n',
            Some('c') => ':',
            Some('\\') => '\\',
            _ => {
                return Err(format!(
                    "header line `{}` has an escape STOMP 1.2 lacks (it has \\r \\n \\c \\\\)",
                    preview(line)
                ))
            }
        });
    }
    Ok(out)
}

impl Decoder for StompCodec {
    type Item = Item;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Item>, CodecError> {
        loop {
            match self.phase {
                Phase::Lines => {
                    if self.head.is_none() && self.scanned == 0 {
                        let eols = eol_run(src);
                        if eols > 0 {
                            src.advance(eols);
                            return Ok(Some(Item::Heartbeat));
                        }
                        // A lone CR may be the first half of a heart-beat.
                        if src.is_empty() || &src[..] == b"\r" {
                            return Ok(None);
                        }
                    }
                    let Some(offset) = memchr::memchr(b'\n', &src[self.scanned..]) else {
                        self.scanned = src.len();
                        match &mut self.head {
                            None if src.len() > COMMAND_LINE_BYTES => {
                                return Err(CodecError::UnknownCommand(preview(src)))
                            }
                            Some(head)
                                if src.len() > PROTOCOL_LINE_BYTES
                                    && head.size + src.len() > self.max_frame_bytes =>
                            {
                                // Too long to keep: skip it as it arrives.
                                head.size += src.len();
                                head.lines += 1;
                                head.over_size += 1;
                                src.clear();
                                self.scanned = 0;
                                self.phase = Phase::LongLine;
                            }
                            _ => {}
                        }
                        return Ok(None);
                    };
                    let end = self.scanned + offset + 1;
                    self.scanned = 0;
                    // Read in place and skipped after: splitting each line off as a handle
                    // of its own would cost two atomic reference counts per header.
                    let content = strip_cr(&src[..end - 1]);
                    match self.head.as_mut() {
                        None => {
                            let command = Command::parse(content)
                                .ok_or_else(|| CodecError::UnknownCommand(preview(content)))?;
                            self.head = Some(Head::new(command, end));
                        }
                        Some(head) => {
                            head.size += end;
                            if content.is_empty() {
                                self.start_body();
                            } else {
                                head.header_line(content, self.max_frame_bytes, self.max_headers)?;
                            }
                        }
                    }
                    src.advance(end);
                }
                Phase::LongLine => {
                    let head = self.head.as_mut().expect("a frame is being read");
                    match memchr::memchr(b'\n', src) {
                        None => {
                            head.size += src.len();
                            src.clear();
                            return Ok(None);
                        }
                        Some(offset) => {
                            head.size += offset + 1;
                            src.advance(offset + 1);
                            self.phase = Phase::Lines;
                        }
                    }
                }
                Phase::Body => {
                    let head = self.head.as_mut().expect("a frame is being read");
                    match head.length {
                        Some(length) => {
                            if src.len() <= length {
                                src.reserve(length + 1 - src.len());
                                return Ok(None);
                            }
                            if src[length] != 0 {
                                return Err(CodecError::MissingNul { length });
                            }
                            head.size += length + 1;
                            let body = take_body(src, length);
                            return Ok(Some(self.finish(body, src)));
                        }
                        None => match memchr::memchr(0, &src[self.scanned..]) {
                            Some(offset)
                                if head.size + self.scanned + offset < self.max_frame_bytes =>
                            {
                                let at = self.scanned + offset;
                                head.size += at + 1;
                                let body = take_body(src, at);
                                return Ok(Some(self.finish(body, src)));
                            }
                            found => {
                                // Within the limit so far: wait for more.
                                if found.is_none() && head.size + src.len() < self.max_frame_bytes {
                                    self.scanned = src.len();
                                    return Ok(None);
                                }
                                // The body does not fit: skip it, from what is buffered on.
                                head.oversized = true;
                                self.scanned = 0;
                                self.phase = Phase::SkipBody(None);
                            }
                        },
                    }
                }
                Phase::SkipBody(Some(remaining)) => {
                    let head = self.head.as_mut().expect("a frame is being read");
                    let take = remaining.min(src.len());
                    if take == remaining {
                        if src[take - 1] != 0 {
                            return Err(CodecError::MissingNul {
                                length: remaining - 1,
                            });
                        }
                        head.size += take;
                        src.advance(take);
                        return Ok(Some(self.finish(bytes::Bytes::new(), src)));
                    }
                    head.size += take;
                    src.advance(take);
                    self.phase = Phase::SkipBody(Some(remaining - take));
                    return Ok(None);
                }
                Phase::SkipBody(None) => {
                    let head = self.head.as_mut().expect("a frame is being read");
                    match memchr::memchr(0, src) {
                        None => {
                            head.size += src.len();
                            src.clear();
                            return Ok(None);
                        }
                        Some(at) => {
                            head.size += at + 1;
                            src.advance(at + 1);
                            return Ok(Some(self.finish(bytes::Bytes::new(), src)));
                        }
                    }
                }
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Item>, CodecError> {
        if let Some(item) = self.decode(src)? {
            return Ok(Some(item));
        }
        if self.head.is_none() && (src.is_empty() || &src[..] == b"\r") {
            src.clear();
            return Ok(None);
        }
        Err(CodecError::Truncated(src.len()))
    }
}

fn needs_escape(b: u8) -> bool {
    matches!(b, b'\\' | b'\r' | b'\n' | b':')
}

fn put_escaped(dst: &mut BytesMut, text: &str) {
    if !text.bytes().any(needs_escape) {
        dst.put_slice(text.as_bytes());
        return;
    }
    for b in text.bytes() {
        match b {
            b'\\' => dst.put_slice(b"\\\\"),
            b'\r' => dst.put_slice(b"\\r"),
            b'\n' => dst.put_slice(b"\\n"),
            b':' => dst.put_slice(b"\\c"),
            _ => dst.put_u8(b),
        }
    }
}

/// Whether a header can be written on a frame of this command; handshake frames are not
/// escaped, so they cannot carry line breaks, nor a colon in a name.
fn check_header(command: Command, name: &str, value: &str) -> Result<(), CodecError> {
    let why = if name.is_empty() {
        Some("the name is empty")
    } else if command.escapes_headers() {
        None
    } else if name.contains([':', '\r', '\n']) {
        Some("handshake frames are not escaped, so the name cannot hold `:` or a line break")
    } else if value.contains(['\r', '\n']) {
        Some("handshake frames are not escaped, so the value cannot hold a line break")
    } else {
        None
    };
    match why {
        Some(why) => Err(CodecError::Unencodable {
            command,
            name: name.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

impl Encoder<Item> for StompCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Item, dst: &mut BytesMut) -> Result<(), CodecError> {
        match item {
            Item::Heartbeat => {
                dst.put_u8(b'\n');
                Ok(())
            }
            Item::Frame(frame) => encode_frame(&frame, dst),
        }
    }
}

/// Writes one frame; nothing is written if it cannot be encoded.
pub fn encode_frame(frame: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
    let headers = || {
        frame
            .headers
            .iter()
            .filter(|(name, _)| name != "content-length")
    };
    for (name, value) in headers() {
        check_header(frame.command, name, value)?;
    }
    let escaped = frame.command.escapes_headers();
    dst.reserve(
        frame.command.as_str().len()
            + headers().map(|(n, v)| n.len() + v.len() + 2).sum::<usize>()
            + frame.body.len()
            + 40,
    );
    dst.put_slice(frame.command.as_str().as_bytes());
    dst.put_u8(b'\n');
    for (name, value) in headers() {
        if escaped {
            put_escaped(dst, name);
            dst.put_u8(b':');
            put_escaped(dst, value);
        } else {
            dst.put_slice(name.as_bytes());
            dst.put_u8(b':');
            dst.put_slice(value.as_bytes());
        }
        dst.put_u8(b'\n');
    }
    if !frame.body.is_empty() {
        dst.put_slice(b"content-length:");
        dst.put_slice(frame.body.len().to_string().as_bytes());
        dst.put_u8(b'\n');
    }
    dst.put_u8(b'\n');
    dst.put_slice(&frame.body);
    dst.put_u8(0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8], max: usize) -> Result<Vec<Item>, CodecError> {
        let mut codec = StompCodec::new(max, 1024);
        let mut buf = BytesMut::from(bytes);
        let mut items = Vec::new();
        while let Some(item) = codec.decode_eof(&mut buf)? {
            items.push(item);
        }
        Ok(items)
    }

    fn frames(bytes: &[u8]) -> Vec<Frame> {
        frames_under(bytes, 1 << 20, 1024)
    }

    fn frames_under(bytes: &[u8], max_frame_bytes: usize, max_headers: usize) -> Vec<Frame> {
        let mut codec = StompCodec::new(max_frame_bytes, max_headers);
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(item) = codec.decode_eof(&mut buf).unwrap() {
            if let Item::Frame(frame) = item {
                frames.push(frame);
            }
        }
        frames
    }

    /// Feeds `stream` in chunks of `chunk` bytes as a socket would, decoding after each;
    /// returns the frames and the most the buffer ever held.
    fn trickle(
        stream: &[u8],
        chunk: usize,
        max_frame_bytes: usize,
        max_headers: usize,
    ) -> (Vec<Frame>, usize) {
        let mut codec = StompCodec::new(max_frame_bytes, max_headers);
        let mut buf = BytesMut::new();
        let (mut frames, mut held) = (Vec::new(), 0);
        for piece in stream.chunks(chunk) {
            buf.extend_from_slice(piece);
            held = held.max(buf.len());
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                if let Item::Frame(frame) = item {
                    frames.push(frame);
                }
            }
        }
        assert!(buf.is_empty(), "{} bytes left", buf.len());
        (frames, held)
    }

    #[test]
    fn a_message_with_content_length_may_hold_nul_bytes() {
        let f = &frames(b"MESSAGE\ndestination:/queue/a\ncontent-length:5\n\na\0b\0c\0\n")[0];
        assert_eq!(f.command, Command::Message);
        assert_eq!(&f.body[..], b"a\0b\0c");
        assert_eq!(f.header("destination"), Some("/queue/a"));
        assert_eq!(
            f.header("content-length"),
            None,
            "the codec owns the length"
        );
        assert_eq!(f.incomplete, None);
    }

    #[test]
    fn without_content_length_the_body_ends_at_nul() {
        let f = &frames(b"MESSAGE\r\nx:1\r\n\r\nhello\0")[0];
        assert_eq!(&f.body[..], b"hello");
        assert_eq!(f.header("x"), Some("1"));
    }

    #[test]
    fn escapes_are_decoded_except_in_handshake_frames() {
        let f = &frames(b"MESSAGE\na\\cb:c\\\\d\\ne\\rf\n\n\0")[0];
        assert_eq!(f.header("a:b"), Some("c\\d\ne\rf"));
        let f = &frames(b"CONNECTED\nserver:a\\cb:c\n\n\0")[0];
        assert_eq!(f.header("server"), Some("a\\cb:c"));
    }

    #[test]
    fn unreadable_header_lines_are_dropped_and_said() {
        // Not UTF-8 in the value, then in the name; UTF-8 beyond ASCII is text.
        let f = &frames(
            b"MESSAGE\nack:1\na:b\\t\nnocolon\n:v\nc:\xff\n\xffn:v\nd:ok\n\xc3\xa9:\xc3\xbc\n\nbody\0",
        )[0];
        assert_eq!(
            f.headers,
            [("ack", "1"), ("d", "ok"), ("é", "ü")].map(|(n, v)| (n.to_string(), v.to_string()))
        );
        assert_eq!(&f.body[..], b"body");
        let why = f.incomplete.as_deref().expect("marked");
        assert!(
            why.starts_with("5 header lines could not be read and were dropped (the first: header line `a:b\\\\t` has an escape"),
            "{why}"
        );
    }

    #[test]
    fn repeated_headers_are_kept_and_the_first_wins() {
        let f = &frames(b"MESSAGE\nfoo:1\nfoo:2\n\n\0")[0];
        assert_eq!(f.header("foo"), Some("1"));
        assert_eq!(f.headers.len(), 2);
    }

    #[test]
    fn eols_between_frames_are_heartbeats() {
        let items = decode_all(b"\n\r\n\nRECEIPT\nreceipt-id:1\n\n\0\n\n", 1024).unwrap();
        assert_eq!(items.len(), 2, "{items:?}");
        assert_eq!(items[0], Item::Heartbeat);
        assert!(matches!(&items[1], Item::Frame(f) if f.command == Command::Receipt));
    }

    /// The frame after an oversized one, which must come out whole.
    const NEXT: &[u8] = b"MESSAGE\nack:2\ncontent-length:4\n\nnext\0\n";

    fn assert_next(frame: &Frame) {
        assert_eq!(frame.header("ack"), Some("2"));
        assert_eq!(&frame.body[..], b"next");
        assert_eq!(frame.incomplete, None);
    }

    #[test]
    fn a_body_over_the_limit_is_skipped_as_it_arrives_and_the_frame_marked() {
        const BODY: usize = 1 << 20;
        for with_length in [true, false] {
            let mut stream = b"MESSAGE\nack:1\nx:y\n".to_vec();
            if with_length {
                stream.extend_from_slice(format!("content-length:{BODY}\n").as_bytes());
            }
            stream.push(b'\n');
            stream.extend(std::iter::repeat_n(b'b', BODY));
            stream.extend_from_slice(b"\0\n");
            let size = stream.len() - 1;
            stream.extend_from_slice(NEXT);
            let (frames, held) = trickle(&stream, 4096, 8192, 1024);
            assert_eq!(frames.len(), 2, "{with_length}");
            let big = &frames[0];
            assert_eq!(big.header("ack"), Some("1"));
            assert_eq!(big.header("x"), Some("y"));
            assert!(big.body.is_empty());
            assert_eq!(
                big.incomplete.as_deref(),
                Some(
                    format!(
                        "the STOMP frame is {size} bytes, more than `max_frame_bytes` (8192); \
                         its {BODY}-byte body was dropped"
                    )
                    .as_str()
                )
            );
            assert!(held <= 8192 + 4096, "buffered {held} bytes");
            assert_next(&frames[1]);
        }
        // Whole in the buffer, past the limit, it is still not kept.
        let mut stream = b"MESSAGE\nack:1\n\n".to_vec();
        stream.extend_from_slice(&[b'b'; 100]);
        stream.push(0);
        stream.extend_from_slice(NEXT);
        let frames = frames_under(&stream, 64, 1024);
        assert!(frames[0].body.is_empty() && frames[0].incomplete.is_some());
        assert_next(&frames[1]);
    }

    #[test]
    fn the_frame_limit_is_exact() {
        for frame in [
            &b"MESSAGE\nack:1\n\n0123456789\0"[..],
            b"MESSAGE\nack:1\ncontent-length:10\n\n0123456789\0",
        ] {
            let fits = &frames_under(frame, frame.len(), 1024)[0];
            assert_eq!(fits.incomplete, None);
            assert_eq!(&fits.body[..], b"0123456789");
            let over = &frames_under(frame, frame.len() - 1, 1024)[0];
            assert!(
                over.incomplete.is_some() && over.body.is_empty(),
                "{over:?}"
            );
        }
    }

    #[test]
    fn a_huge_content_length_is_over_any_limit() {
        let frame = format!("MESSAGE\nack:1\ncontent-length:{}\n\nab", usize::MAX - 1);
        let mut codec = StompCodec::new(usize::MAX, 1024);
        let mut buf = BytesMut::from(frame.as_bytes());
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.is_empty(), "skipped, not buffered");
    }

    #[test]
    fn fifty_thousand_headers_keep_the_first_and_the_ones_the_client_needs() {
        let mut stream = b"MESSAGE\nsubscription:0\n".to_vec();
        for i in 0..50_000 {
            stream.extend_from_slice(format!("x-h{i}:{i}\n").as_bytes());
        }
        stream.extend_from_slice(b"ack:1\nmessage-id:m-1\nx-h0:again\n\nbody\0\n");
        stream.extend_from_slice(NEXT);
        let started = std::time::Instant::now();
        let (frames, _) = trickle(&stream, 64 * 1024, 16 << 20, 1024);
        eprintln!("{} bytes decoded in {:?}", stream.len(), started.elapsed());
        let f = &frames[0];
        assert_eq!(f.headers.len(), 1024 + 2);
        assert_eq!(f.header("subscription"), Some("0"));
        assert_eq!(f.header("x-h1022"), Some("1022"));
        assert_eq!(f.header("x-h1023"), None);
        assert_eq!(f.header("ack"), Some("1"));
        assert_eq!(f.header("message-id"), Some("m-1"));
        assert_eq!(&f.body[..], b"body", "the frame fits: its body is kept");
        assert_eq!(
            f.incomplete.as_deref(),
            Some(
                "the STOMP frame has 50004 header lines, more than `max_headers` (1024); the \
                 48978 past the limit were dropped"
            )
        );
        assert_next(&frames[1]);
    }

    #[test]
    fn a_header_section_over_the_limit_is_read_without_being_kept() {
        let mut stream = b"MESSAGE\n".to_vec();
        for i in 0..10_000 {
            stream.extend_from_slice(format!("x-h{i}:0123456789\n").as_bytes());
        }
        // One line longer than the whole limit, then what the client needs.
        stream.extend_from_slice(b"x-long:");
        stream.extend(std::iter::repeat_n(b'l', 100_000));
        stream.extend_from_slice(b"\nack:1\ncontent-length:3\n\nabc\0");
        stream.extend_from_slice(NEXT);
        let (frames, held) = trickle(&stream, 4096, 8192, 100_000);
        assert!(held <= 8192 + 4096, "buffered {held} bytes");
        let f = &frames[0];
        assert_eq!(f.header("ack"), Some("1"));
        assert_eq!(f.header("x-long"), None);
        assert!(f.body.is_empty());
        let why = f.incomplete.as_deref().unwrap();
        assert!(
            why.contains("more than `max_frame_bytes` (8192); its 3-byte body and"),
            "{why}"
        );
        assert!(
            f.headers.len() < 8192 / 10,
            "{} headers kept",
            f.headers.len()
        );
        assert_next(&frames[1]);
    }

    #[test]
    fn what_only_a_broken_peer_sends_is_an_error() {
        for (bytes, what) in [
            (&b"HELLO\n\n\0"[..], "unknown command"),
            (&[b'M'; 100][..], "unknown command"),
            (b"MESSAGE\ncontent-length:x\n\n\0", "content-length"),
            (b"MESSAGE\ncontent-length:1\xff\n\n\0", "content-length"),
            (b"MESSAGE\ncontent-length:1\n\nab\0", "not followed by NUL"),
            (b"MESSAGE\na:b\n\nunfinished", "middle of a frame"),
        ] {
            let err = decode_all(bytes, 1024).unwrap_err();
            assert!(err.to_string().contains(what), "{err} for {bytes:?}");
        }
        // Also while skipping a body too large to keep.
        let err = decode_all(b"MESSAGE\ncontent-length:100\n\n", 64).unwrap_err();
        assert!(err.to_string().contains("middle of a frame"), "{err}");
        let mut frame = b"MESSAGE\ncontent-length:100\n\n".to_vec();
        frame.extend_from_slice(&[b'x'; 101]);
        let err = decode_all(&frame, 64).unwrap_err();
        assert!(err.to_string().contains("not followed by NUL"), "{err}");
    }

    #[test]
    fn handshake_frames_refuse_what_they_cannot_carry() {
        let mut dst = BytesMut::new();
        let frame = Frame::new(Command::Connect).with_header("passcode", "a\nb");
        let err = encode_frame(&frame, &mut dst).unwrap_err();
        assert!(err.to_string().contains("passcode"), "{err}");
        assert!(
            dst.is_empty(),
            "nothing is written for a frame that cannot be encoded"
        );
        let frame = Frame::new(Command::Send).with_header("", "v");
        assert!(encode_frame(&frame, &mut dst).is_err());
    }

    #[test]
    fn encoding_escapes_and_adds_the_length() {
        let mut dst = BytesMut::new();
        let frame = Frame::new(Command::Send)
            .with_header("a:b", "c\nd\\")
            .with_header("content-length", "99")
            .with_body(&b"x\0y"[..]);
        encode_frame(&frame, &mut dst).unwrap();
        assert_eq!(
            &dst[..],
            b"SEND\na\\cb:c\\nd\\\\\ncontent-length:3\n\nx\0y\0"
        );
    }
}

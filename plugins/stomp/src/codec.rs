//! The STOMP 1.2 wire format as a `tokio-util` codec: bytes to [`Item`]s and back.
//!
//! Decoding is incremental and never rescans: the decoder remembers how far it has looked
//! for the end of the header section or for the NUL that ends a body without
//! `content-length`, so a peer dribbling a large frame costs linear time. Every frame is
//! bounded by `max_frame_bytes` (header section, body and NUL together), checked as soon
//! as the size is known or exceeded, so a hostile or broken peer cannot make us buffer
//! more than that. Malformed input is a [`CodecError`], never a panic: the connection that
//! produced it is dropped.
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

/// Why bytes could not be decoded or a frame encoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame exceeds {limit} bytes (`max_frame_bytes`)")]
    TooLarge { limit: usize },
    #[error("unknown command `{0}`")]
    UnknownCommand(String),
    #[error("header line `{0}` has no colon")]
    MissingColon(String),
    #[error("header line `{0}` has an empty name")]
    EmptyName(String),
    #[error("invalid escape sequence in header line `{0}` (STOMP 1.2 allows \\r \\n \\c \\\\)")]
    BadEscape(String),
    #[error("header line `{0}` is not UTF-8")]
    NotUtf8(String),
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

/// A frame whose header section has been read, waiting for its body.
#[derive(Debug)]
struct Pending {
    command: Command,
    headers: Vec<(String, String)>,
    body_start: usize,
    length: Option<usize>,
}

/// Encodes and decodes STOMP 1.2. One instance per direction: the decoder keeps state
/// between reads.
#[derive(Debug)]
pub struct StompCodec {
    max_frame_bytes: usize,
    pending: Option<Pending>,
    /// Where to resume: the start of the first header line not yet looked at, or (with a
    /// pending frame) how far the NUL has been looked for.
    scanned: usize,
}

impl StompCodec {
    pub fn new(max_frame_bytes: usize) -> StompCodec {
        StompCodec {
            max_frame_bytes,
            pending: None,
            scanned: 0,
        }
    }

    fn too_large(&self) -> CodecError {
        CodecError::TooLarge {
            limit: self.max_frame_bytes,
        }
    }

    /// Looks for the empty line that ends the header section; returns where it starts and
    /// where the body starts.
    fn find_header_end(&mut self, src: &BytesMut) -> Result<Option<(usize, usize)>, CodecError> {
        let mut line_start = self.scanned;
        while let Some(offset) = memchr::memchr(b'\n', &src[line_start..]) {
            let lf = line_start + offset;
            let line = &src[line_start..lf];
            if line_start > 0 && (line.is_empty() || line == b"\r") {
                if lf + 1 > self.max_frame_bytes {
                    return Err(self.too_large());
                }
                return Ok(Some((line_start, lf + 1)));
            }
            line_start = lf + 1;
        }
        self.scanned = line_start;
        if src.len() >= self.max_frame_bytes {
            return Err(self.too_large());
        }
        Ok(None)
    }

    /// Finishes the frame whose header section is parsed, if its body is all there.
    fn take_body(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        let pending = self.pending.as_ref().expect("called with a pending frame");
        let (body_end, frame_end) = match pending.length {
            Some(length) => {
                // Checked when the header was read: cannot overflow, fits the limit.
                let frame_end = pending.body_start + length + 1;
                if src.len() < frame_end {
                    src.reserve(frame_end - src.len());
                    return Ok(None);
                }
                if src[frame_end - 1] != 0 {
                    return Err(CodecError::MissingNul { length });
                }
                (frame_end - 1, frame_end)
            }
            None => {
                let from = self.scanned.max(pending.body_start);
                match memchr::memchr(0, &src[from..]) {
                    Some(offset) => (from + offset, from + offset + 1),
                    None => {
                        self.scanned = src.len();
                        if src.len() >= self.max_frame_bytes {
                            return Err(self.too_large());
                        }
                        return Ok(None);
                    }
                }
            }
        };
        if frame_end > self.max_frame_bytes {
            return Err(self.too_large());
        }
        let pending = self.pending.take().expect("checked above");
        let bytes = src.split_to(frame_end).freeze();
        self.scanned = 0;
        src.advance(eol_run(src));
        Ok(Some(Frame {
            command: pending.command,
            headers: pending.headers,
            body: bytes.slice(pending.body_start..body_end),
        }))
    }
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

fn decode_text(raw: &[u8], escaped: bool, line: &[u8]) -> Result<String, CodecError> {
    let text = std::str::from_utf8(raw).map_err(|_| CodecError::NotUtf8(preview(line)))?;
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
            _ => return Err(CodecError::BadEscape(preview(line))),
        });
    }
    Ok(out)
}

/// Parses a complete header section (command line and header lines, without the empty
/// line that ends it).
fn parse_head(section: &[u8], max_frame_bytes: usize) -> Result<Pending, CodecError> {
    let mut lines = section
        .strip_suffix(b"\n")
        .unwrap_or(section)
        .split(|&b| b == b'\n')
        .map(strip_cr);
    let command_line = lines.next().unwrap_or_default();
    let command = Command::parse(command_line)
        .ok_or_else(|| CodecError::UnknownCommand(preview(command_line)))?;
    let escaped = command.escapes_headers();
    let mut headers = Vec::new();
    let mut length = None;
    let mut seen_length = false;
    for line in lines {
        let colon =
            memchr::memchr(b':', line).ok_or_else(|| CodecError::MissingColon(preview(line)))?;
        if colon == 0 {
            return Err(CodecError::EmptyName(preview(line)));
        }
        let name = decode_text(&line[..colon], escaped, line)?;
        let value = decode_text(&line[colon + 1..], escaped, line)?;
        if name == "content-length" {
            // The first occurrence wins; later ones are dropped like any repeated header.
            if !seen_length {
                seen_length = true;
                let parsed: usize = value
                    .parse()
                    .map_err(|_| CodecError::BadContentLength(preview(value.as_bytes())))?;
                if parsed >= max_frame_bytes {
                    return Err(CodecError::TooLarge {
                        limit: max_frame_bytes,
                    });
                }
                length = Some(parsed);
            }
            continue;
        }
        headers.push((name, value));
    }
    Ok(Pending {
        command,
        headers,
        body_start: 0,
        length,
    })
}

impl Decoder for StompCodec {
    type Item = Item;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Item>, CodecError> {
        if self.pending.is_none() {
            if self.scanned == 0 {
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
            let Some((head_end, body_start)) = self.find_header_end(src)? else {
                return Ok(None);
            };
            let mut pending = parse_head(&src[..head_end], self.max_frame_bytes)?;
            if let Some(length) = pending.length {
                let frame_end = body_start
                    .checked_add(length)
                    .and_then(|end| end.checked_add(1));
                match frame_end {
                    Some(end) if end <= self.max_frame_bytes => {}
                    _ => return Err(self.too_large()),
                }
            }
            pending.body_start = body_start;
            self.pending = Some(pending);
            self.scanned = body_start;
        }
        Ok(self.take_body(src)?.map(Item::Frame))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Item>, CodecError> {
        if let Some(item) = self.decode(src)? {
            return Ok(Some(item));
        }
        if src.is_empty() || &src[..] == b"\r" {
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
        let mut codec = StompCodec::new(max);
        let mut buf = BytesMut::from(bytes);
        let mut items = Vec::new();
        while let Some(item) = codec.decode_eof(&mut buf)? {
            items.push(item);
        }
        Ok(items)
    }

    fn frames(bytes: &[u8]) -> Vec<Frame> {
        decode_all(bytes, 1 << 20)
            .unwrap()
            .into_iter()
            .filter_map(|i| match i {
                Item::Frame(f) => Some(f),
                Item::Heartbeat => None,
            })
            .collect()
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
    fn an_undefined_escape_is_an_error() {
        let err = decode_all(b"MESSAGE\na:b\\t\n\n\0", 1024).unwrap_err();
        assert!(matches!(err, CodecError::BadEscape(_)), "{err}");
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

    #[test]
    fn oversized_frames_are_refused_before_buffering_them() {
        let err = decode_all(b"MESSAGE\ncontent-length:5000\n\n", 1024).unwrap_err();
        assert!(matches!(err, CodecError::TooLarge { limit: 1024 }), "{err}");
        let mut codec = StompCodec::new(64);
        let mut buf = BytesMut::from(&b"MESSAGE\n"[..]);
        buf.extend_from_slice(&[b'x'; 100]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::TooLarge { .. })
        ));
        let mut codec = StompCodec::new(64);
        let mut buf = BytesMut::from(&b"MESSAGE\n\n"[..]);
        buf.extend_from_slice(&[b'x'; 100]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_huge_content_length_is_refused_even_without_a_limit() {
        let frame = format!("MESSAGE\ncontent-length:{}\n\n", usize::MAX - 1);
        let err = decode_all(frame.as_bytes(), usize::MAX).unwrap_err();
        assert!(matches!(err, CodecError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn malformed_frames_are_errors() {
        for (bytes, what) in [
            (&b"HELLO\n\n\0"[..], "unknown command"),
            (b"MESSAGE\nnocolon\n\n\0", "no colon"),
            (b"MESSAGE\n:v\n\n\0", "empty name"),
            (b"MESSAGE\ncontent-length:x\n\n\0", "content-length"),
            (b"MESSAGE\ncontent-length:1\n\nab\0", "not followed by NUL"),
            (b"MESSAGE\na:\xff\n\n\0", "not UTF-8"),
            (b"MESSAGE\na:b\n\nunfinished", "middle of a frame"),
        ] {
            let err = decode_all(bytes, 1024).unwrap_err();
            assert!(err.to_string().contains(what), "{err} for {bytes:?}");
        }
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

//! Between stream entries and the host's [`Message`]: the entry format, both ways.
//!
//! An entry written by the transport has the field `body` (the message body, any bytes)
//! first, then one field per header, named as the header and in its order. A header whose
//! name would be taken for `body` travels under an escaped name: `body`, `_body`,
//! `__body`... are sent with one more leading underscore (`_body`, `__body`, ...), and
//! a field of that shape loses one underscore on receipt. Any other name travels as it is,
//! so entries stay readable with `redis-cli` and writable by other producers.
//!
//! Reading is streamed: [`Decoder`] is fed one field name or value at a time by
//! [`crate::resp`], and says beforehand whether it wants the bytes, so that an entry
//! over `max_entry_bytes` is never held whole: what does not fit is skipped as it arrives.
//! An entry that cannot be handed over whole (too large, no `body`, more fields than
//! `max_headers`, text fields that are not UTF-8) is delivered anyway with
//! [`TRANSPORT_ERROR_HEADER`] saying what was left out, so the host dead-letters it
//! alone. That header is the transport's own: a field of that name in an entry is dropped.
//!
//! May depend on: `golconde-plugin-api` (its data types).

use std::{borrow::Cow, fmt};

use golconde_plugin_api::{Header, Message, RString, RVec, TRANSPORT_ERROR_HEADER};

/// The field holding the message body.
pub const BODY: &str = "body";

/// The header a delivery gets, when the entry has none, with the time Redis stored it in
/// seconds since 1970 (from an id Redis made), the AMQP `timestamp` property's meaning: the
/// host measures a message's age from it.
pub const TIMESTAMP: &str = "timestamp";

/// Ids before 2001-09-09 (10^12 ms) were not made by Redis from its clock (a producer chose
/// them): they carry no time.
const FIRST_TIME_ID_MS: u64 = 1_000_000_000_000;

/// A stream entry's id, `<milliseconds>-<sequence>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryId {
    pub ms: u64,
    pub seq: u64,
}

impl EntryId {
    /// When Redis made the id, in whole seconds since 1970, if it made it from its clock.
    pub fn seconds(self) -> Option<u64> {
        (self.ms >= FIRST_TIME_ID_MS).then_some(self.ms / 1000)
    }

    /// Below every real id: where a consumer's own pending list is read from.
    pub const ZERO: EntryId = EntryId { ms: 0, seq: 0 };

    /// Reads an id as Redis writes it.
    pub fn parse(text: &[u8]) -> Option<EntryId> {
        let dash = text.iter().position(|&b| b == b'-')?;
        Some(EntryId {
            ms: digits(&text[..dash])?,
            seq: digits(&text[dash + 1..])?,
        })
    }

    /// The id as text, without allocating.
    pub fn text(&self) -> IdText {
        let mut text = IdText {
            buf: [0; 41],
            len: 0,
        };
        text.push(self.ms);
        text.buf[text.len] = b'-';
        text.len += 1;
        text.push(self.seq);
        text
    }
}

fn digits(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// An entry id's text on the stack (two 20-digit numbers and a dash).
pub struct IdText {
    buf: [u8; 41],
    len: usize,
}

impl IdText {
    fn push(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let count = digits.len() - i;
        self.buf[self.len..self.len + count].copy_from_slice(&digits[i..]);
        self.len += count;
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Whether `name`, with its leading underscores taken off, is `body`.
fn is_body_shaped(name: &str) -> bool {
    name.trim_start_matches('_') == BODY
}

/// The field a header travels under.
pub fn field_name(header: &str) -> Cow<'_, str> {
    if is_body_shaped(header) {
        Cow::Owned(format!("_{header}"))
    } else {
        Cow::Borrowed(header)
    }
}

/// The header a field (other than `body`) stands for.
fn header_name(field: String) -> String {
    if field.starts_with('_') && is_body_shaped(&field) {
        field[1..].to_string()
    } else {
        field
    }
}

/// The fields of the entry `message` is written as, in order: `body`, then the headers.
pub fn fields(message: &Message) -> impl Iterator<Item = (Cow<'_, str>, &[u8])> {
    std::iter::once((Cow::Borrowed(BODY), message.body.as_slice())).chain(
        message
            .headers
            .iter()
            .map(|h| (field_name(h.name.as_str()), h.value.as_bytes())),
    )
}

/// The size of the entry `message` is written as, counted as [`Decoder`] counts: every
/// field name and value.
pub fn entry_bytes(message: &Message) -> usize {
    fields(message)
        .map(|(name, value)| name.len() + value.len())
        .sum()
}

/// The most headers [`Decoder`] makes room for before they arrive.
const PREALLOCATED_HEADERS: usize = 64;

/// What the reader has of one field name or value.
pub enum Field {
    /// The bytes, read.
    Kept(Vec<u8>),
    /// Skipped as it arrived, because [`Decoder`] did not want it: only its length.
    Skipped(usize),
}

/// What the value after the current field name is for.
enum Next {
    Body,
    Header(String),
    /// Dropped: a second `body`, a forged transport-error header, a field past
    /// `max_headers`, a name that was skipped or is not UTF-8.
    Drop,
}

/// Builds one entry's [`Message`] from its fields as they arrive; see the module
/// documentation.
pub struct Decoder {
    max_bytes: usize,
    max_headers: usize,
    /// Bytes kept so far.
    kept: usize,
    /// Bytes of every name and value, kept or not.
    total: u64,
    body: Option<Vec<u8>>,
    /// The length of the `body` field, read or skipped.
    body_len: Option<usize>,
    headers: Vec<Header>,
    next: Next,
    oversize: bool,
    extra_bodies: usize,
    extra_headers: usize,
    not_text: usize,
}

impl Decoder {
    /// For an entry of `fields` fields.
    pub fn new(max_bytes: usize, max_headers: usize, fields: usize) -> Decoder {
        Decoder {
            max_bytes,
            max_headers,
            kept: 0,
            total: 0,
            body: None,
            body_len: None,
            // `fields` is what the server claims: room for more is made as they come.
            headers: Vec::with_capacity(
                fields
                    .saturating_sub(1)
                    .min(max_headers)
                    .min(PREALLOCATED_HEADERS),
            ),
            next: Next::Drop,
            oversize: false,
            extra_bodies: 0,
            extra_headers: 0,
            not_text: 0,
        }
    }

    fn fits(&self, len: usize) -> bool {
        self.kept.saturating_add(len) <= self.max_bytes
    }

    /// Whether to read a field name of `len` bytes (else it is skipped).
    pub fn wants_name(&self, len: usize) -> bool {
        self.fits(len)
    }

    /// Whether to read the value of `len` bytes that follows the last name.
    pub fn wants_value(&self, len: usize) -> bool {
        !matches!(self.next, Next::Drop) && self.fits(len)
    }

    fn count(&mut self, field: &Field) {
        match field {
            Field::Kept(bytes) => {
                self.kept += bytes.len();
                self.total += bytes.len() as u64;
            }
            Field::Skipped(len) => self.total += *len as u64,
        }
    }

    pub fn name(&mut self, name: Field) {
        self.count(&name);
        self.next = match name {
            Field::Skipped(_) => {
                self.oversize = true;
                Next::Drop
            }
            Field::Kept(bytes) if bytes == BODY.as_bytes() => {
                if self.body_len.is_some() {
                    self.extra_bodies += 1;
                    Next::Drop
                } else {
                    Next::Body
                }
            }
            Field::Kept(bytes) if bytes == TRANSPORT_ERROR_HEADER.as_bytes() => Next::Drop,
            Field::Kept(bytes) => match String::from_utf8(bytes) {
                Err(_) => {
                    self.not_text += 1;
                    Next::Drop
                }
                Ok(_) if self.headers.len() >= self.max_headers => {
                    self.extra_headers += 1;
                    Next::Drop
                }
                Ok(name) => Next::Header(header_name(name)),
            },
        };
    }

    pub fn value(&mut self, value: Field) {
        self.count(&value);
        let next = std::mem::replace(&mut self.next, Next::Drop);
        match (next, value) {
            (Next::Drop, _) => {}
            (Next::Body, Field::Kept(bytes)) => {
                self.body_len = Some(bytes.len());
                self.body = Some(bytes);
            }
            (Next::Body, Field::Skipped(len)) => {
                self.body_len = Some(len);
                self.oversize = true;
            }
            (Next::Header(name), Field::Kept(bytes)) => match String::from_utf8(bytes) {
                Ok(value) => self.headers.push(Header {
                    name: RString::from(name),
                    value: RString::from(value),
                }),
                Err(_) => self.not_text += 1,
            },
            (Next::Header(_), Field::Skipped(_)) => self.oversize = true,
        }
    }

    /// The message, marked with [`TRANSPORT_ERROR_HEADER`] if it is not whole.
    pub fn finish(mut self, id: EntryId) -> Message {
        let mut problems = Vec::new();
        if self.oversize {
            self.body = None;
            let body = match self.body_len {
                Some(len) => format!("its {len}-byte body was dropped"),
                None => "it has no `body` field".to_string(),
            };
            problems.push(format!(
                "the stream entry {id} is {} bytes (field names and values), more than \
                 `max_entry_bytes` ({}): {body}, and the fields past the limit were not read",
                self.total, self.max_bytes
            ));
        } else if self.body_len.is_none() {
            problems.push(format!(
                "the stream entry {id} has no `{BODY}` field, so it was not written by a \
                 Golconde transport; it is delivered with an empty body and its fields as \
                 headers"
            ));
        }
        if self.extra_bodies > 0 {
            problems.push(format!(
                "it has {} `{BODY}` fields; the first was taken as the body",
                self.extra_bodies + 1
            ));
        }
        if self.extra_headers > 0 {
            problems.push(format!(
                "it has {} fields more than `max_headers` ({}); they were dropped",
                self.extra_headers, self.max_headers
            ));
        }
        if self.not_text > 0 {
            problems.push(format!(
                "{} of its fields have a name or a value that is not UTF-8 text (only `{BODY}` \
                 may hold any bytes); they were dropped",
                self.not_text
            ));
        }
        // Before the mark, which stays last.
        if let Some(seconds) = id.seconds() {
            if !self.headers.iter().any(|h| h.name.as_str() == TIMESTAMP) {
                self.headers.push(Header {
                    name: RString::from(TIMESTAMP),
                    value: RString::from(seconds.to_string()),
                });
            }
        }
        if !problems.is_empty() {
            self.headers.push(Header {
                name: RString::from(TRANSPORT_ERROR_HEADER),
                value: RString::from(problems.join("; ")),
            });
        }
        Message {
            body: self.body.map(RVec::from).unwrap_or_default(),
            headers: RVec::from(self.headers),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const ID: EntryId = EntryId { ms: 1700, seq: 3 };

    /// Decodes fields as the reader would, with everything kept that the decoder wants.
    fn decode(fields: &[(&[u8], &[u8])], max_bytes: usize, max_headers: usize) -> Message {
        decode_at(fields, max_bytes, max_headers, ID)
    }

    fn decode_at(
        fields: &[(&[u8], &[u8])],
        max_bytes: usize,
        max_headers: usize,
        id: EntryId,
    ) -> Message {
        let mut decoder = Decoder::new(max_bytes, max_headers, fields.len());
        for (name, value) in fields {
            let name = if decoder.wants_name(name.len()) {
                Field::Kept(name.to_vec())
            } else {
                Field::Skipped(name.len())
            };
            decoder.name(name);
            let value = if decoder.wants_value(value.len()) {
                Field::Kept(value.to_vec())
            } else {
                Field::Skipped(value.len())
            };
            decoder.value(value);
        }
        decoder.finish(id)
    }

    fn round_trip(message: &Message, max_bytes: usize) -> Message {
        let fields: Vec<(Vec<u8>, Vec<u8>)> = fields(message)
            .map(|(n, v)| (n.as_bytes().to_vec(), v.to_vec()))
            .collect();
        let borrowed: Vec<(&[u8], &[u8])> = fields
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
            .collect();
        decode(&borrowed, max_bytes, 1 << 20)
    }

    fn error(message: &Message) -> Option<&str> {
        message.header(TRANSPORT_ERROR_HEADER)
    }

    #[test]
    fn ids_read_and_write() {
        let id = EntryId::parse(b"1700000000000-42").unwrap();
        assert_eq!(
            id,
            EntryId {
                ms: 1_700_000_000_000,
                seq: 42
            }
        );
        assert_eq!(id.text().as_bytes(), b"1700000000000-42");
        assert_eq!(EntryId::ZERO.text().as_bytes(), b"0-0");
        let max = EntryId {
            ms: u64::MAX,
            seq: u64::MAX,
        };
        assert_eq!(EntryId::parse(max.text().as_bytes()), Some(max));
        assert_eq!(max.to_string().as_bytes(), max.text().as_bytes());
        for bad in [
            &b"12"[..],
            b"-1",
            b"1-",
            b"a-1",
            b"1-2-3",
            b"99999999999999999999999-0",
        ] {
            assert_eq!(
                EntryId::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(EntryId { ms: 2, seq: 0 } > EntryId { ms: 1, seq: 9 });
    }

    #[test]
    fn headers_named_like_the_body_are_escaped_and_restored() {
        let message = Message::new(&b"payload"[..])
            .with_header("body", "a header named body")
            .with_header("_body", "one underscore")
            .with_header("__body", "two")
            .with_header("_other", "left alone")
            .with_header("message-id", "m-1");
        let names: Vec<String> = fields(&message).map(|(n, _)| n.into_owned()).collect();
        assert_eq!(
            names,
            ["body", "_body", "__body", "___body", "_other", "message-id"]
        );
        assert_eq!(round_trip(&message, 1 << 20), message);
    }

    #[test]
    fn an_entry_without_a_body_is_delivered_marked() {
        let got = decode(&[(b"action", b"add"), (b"table", b"t")], 4096, 16);
        assert!(got.body.is_empty());
        assert_eq!(got.header("action"), Some("add"));
        let why = error(&got).expect("marked");
        assert!(why.contains("1700-3 has no `body` field"), "{why}");
    }

    #[test]
    fn an_entry_over_the_limit_loses_its_body_and_says_which_key_to_raise() {
        let body = vec![b'x'; 5000];
        let got = decode(&[(b"body", &body), (b"message-id", b"m")], 4096, 16);
        assert!(got.body.is_empty());
        assert_eq!(got.header("message-id"), Some("m"));
        let why = error(&got).expect("marked");
        assert!(
            why.contains("is 5015 bytes") && why.contains("`max_entry_bytes` (4096)"),
            "{why}"
        );
        assert!(why.contains("its 5000-byte body was dropped"), "{why}");

        // The body fits, a header after it does not: the entry is not whole, so the body
        // goes too.
        let big = vec![b'h'; 3000];
        let got = decode(&[(b"body", &[b'b'; 2000][..]), (b"big", &big)], 4096, 16);
        assert!(got.body.is_empty());
        assert!(got.header("big").is_none());
        assert!(error(&got).unwrap().contains("2000-byte body was dropped"));

        // A huge name is skipped with its value.
        let name = vec![b'n'; 5000];
        let got = decode(&[(&name, b"v"), (b"body", b"ok")], 4096, 16);
        assert!(got.body.is_empty());
        assert!(error(&got).unwrap().contains("more than `max_entry_bytes`"));
    }

    #[test]
    fn odd_fields_are_dropped_and_said() {
        let got = decode(
            &[
                (b"body", b"first"),
                (b"body", b"second"),
                (b"\xff\xfe", b"v"),
                (b"bin", b"\xff"),
                (TRANSPORT_ERROR_HEADER.as_bytes(), b"forged"),
                (b"a", b"1"),
                (b"b", b"2"),
                (b"c", b"3"),
            ],
            4096,
            2,
        );
        assert_eq!(got.body.as_slice(), b"first");
        let names: Vec<&str> = got.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["a", "b", TRANSPORT_ERROR_HEADER]);
        let why = error(&got).unwrap();
        assert!(!why.contains("forged"), "{why}");
        assert!(why.contains("2 `body` fields"), "{why}");
        assert!(
            why.contains("1 fields more than `max_headers` (2)"),
            "{why}"
        );
        assert!(
            why.contains("2 of its fields have a name or a value that is not UTF-8"),
            "{why}"
        );
    }

    #[test]
    fn room_for_headers_is_made_as_they_come_not_as_claimed() {
        // The field count is what the server says the entry has; an entry of 4 million
        // fields under `max_headers` 1048576 once made room for a million headers (64 MiB)
        // before the first arrived.
        let decoder = Decoder::new(4096, 1 << 20, 4_000_000);
        assert!(decoder.headers.capacity() <= PREALLOCATED_HEADERS);
        let got = decode(&[(b"body", b"b"), (b"k", b"v")], 4096, 1 << 20);
        assert_eq!(got, Message::new(&b"b"[..]).with_header("k", "v"));
    }

    #[test]
    fn a_whole_entry_is_not_marked() {
        let message = Message::new(vec![0u8, 255, 13, 10]).with_header("k", "v");
        let got = round_trip(&message, 4096);
        assert_eq!(got, message);
        assert_eq!(entry_bytes(&message), 4 + 4 + 1 + 1);
    }

    fn header_name_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("body".to_string()),
            Just("_body".to_string()),
            Just("__body".to_string()),
            Just("message-id".to_string()),
            "_{0,3}[a-z\\-]{0,6}",
            any::<String>(),
        ]
        .prop_filter("the transport's own header", |n| {
            n != TRANSPORT_ERROR_HEADER
        })
    }

    proptest! {
        #[test]
        fn any_headers_and_body_round_trip(
            body in proptest::collection::vec(any::<u8>(), 0..200),
            headers in proptest::collection::vec((header_name_strategy(), any::<String>()), 0..12),
        ) {
            let mut message = Message::new(body);
            for (name, value) in headers {
                message.push_header(name, value);
            }
            prop_assert_eq!(round_trip(&message, 1 << 20), message);
        }

        #[test]
        fn an_entry_is_whole_exactly_when_it_fits(
            body in proptest::collection::vec(any::<u8>(), 0..300),
            headers in proptest::collection::vec(("[a-z]{1,8}", "[a-z]{0,40}"), 0..8),
            limit in 4usize..400,
        ) {
            let mut message = Message::new(body);
            for (name, value) in headers {
                message.push_header(name, value);
            }
            let got = round_trip(&message, limit);
            if entry_bytes(&message) <= limit {
                prop_assert_eq!(got, message);
            } else {
                prop_assert!(got.body.is_empty());
                let why = error(&got).unwrap_or_default().to_string();
                let expected = format!("is {} bytes", entry_bytes(&message));
                prop_assert!(why.contains(&expected), "{}", why);
            }
        }
    }

    #[test]
    fn a_delivery_carries_the_time_redis_stored_it_unless_it_has_one() {
        let stored = EntryId {
            ms: 1_700_000_000_123,
            seq: 0,
        };
        let body: (&[u8], &[u8]) = (b"body", b"b");
        let m = decode_at(&[body], 1 << 20, 16, stored);
        assert_eq!(m.header(TIMESTAMP), Some("1700000000"));
        let own = decode_at(&[body, (b"timestamp", b"42")], 1 << 20, 16, stored);
        assert_eq!(own.header(TIMESTAMP), Some("42"));
        assert_eq!(own.headers.len(), 1);
        // An id a producer chose is no time.
        assert_eq!(decode_at(&[body], 1 << 20, 16, ID).header(TIMESTAMP), None);
        // A marked delivery gets the time too, and its mark stays last.
        let marked = decode_at(&[body, body], 1 << 20, 16, stored);
        let names: Vec<&str> = marked.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, [TIMESTAMP, TRANSPORT_ERROR_HEADER]);
    }
}

//! Bytes as the Redis server's side of a consumer's connection, read by the `redis`
//! transport's RESP2 reader: as replies to `XREADGROUP` and `XAUTOCLAIM`, decoded into
//! deliveries, and as the small replies to every other command, under limits chosen by
//! the input and with the bytes arriving a few at a time. Two control bytes come first:
//! the first says what the rest is (bit 2 set: the structured mode below; else bits 0-1:
//! which reads are made, in turn), how many bytes arrive at a time (bits 3-5: 1 to
//! 65536) and `max_entry_bytes` (bits 6-7: 16, 64, 512 or 4096); the second says
//! `max_headers` (1 to 8).
//!
//! Checked, beyond never panicking and always ending: while the bytes are read, no more
//! memory is held than a constant plus a multiple of their number, so a length or a
//! count the bytes claim but do not deliver costs nothing; every delivery keeps within
//! `max_entry_bytes` and `max_headers`, with at most one `x-golconde-transport-error`
//! header, last; a delivery without it is the whole entry (written again as the
//! transport writes entries, it reads back the same). In the structured mode the input
//! describes entries, written as Redis would send them: each must come back, whole
//! exactly when it fits the limits (and is otherwise marked), in order and with its id.

#![no_main]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::{
        atomic::{AtomicUsize, Ordering},
        OnceLock,
    },
};

use golconde_plugin_api::{Message, TRANSPORT_ERROR_HEADER};
use golconde_redis::{
    entry::{fields, EntryId, BODY, TIMESTAMP},
    fuzzing::{Outcome, Read, Replayer},
    resp::{Batch, Limits},
};
use libfuzzer_sys::{
    arbitrary::{self, Arbitrary, Unstructured},
    fuzz_target,
};

/// Counts the bytes allocated, and the most held at once since the last reset.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let live = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What reading may hold whatever the input: the connection's 64 KiB read buffer and
/// 64 KiB command buffer, the first 64 KiB of room made for a bulk string, the pipe's
/// buffer (up to 64 KiB), and the runtime's own. The seeds peak at about 200 KiB.
const FIXED_BYTES: usize = 512 * 1024;
/// What reading may hold per byte read: the replies and deliveries built, and the error
/// messages quoting what was read.
const BYTES_PER_BYTE: usize = 64;

const CHUNKS: [usize; 8] = [1, 2, 3, 5, 8, 64, 1024, 65536];
const ENTRY_BYTES: [usize; 4] = [16, 64, 512, 4096];

fn replayer() -> &'static Replayer {
    static REPLAYER: OnceLock<Replayer> = OnceLock::new();
    REPLAYER.get_or_init(Replayer::new)
}

/// A field of an entry, as a producer wrote it.
type RawField = (Vec<u8>, Vec<u8>);

/// An entry as Redis sends it: `None` for one deleted while pending.
struct RawEntry {
    id: EntryId,
    fields: Option<Vec<RawField>>,
}

/// Field names that mean something to the decoder, so the fuzzer need not guess them.
const NAMES: &[&str] = &[
    BODY,
    "_body",
    "__body",
    "___body",
    TRANSPORT_ERROR_HEADER,
    "k",
];

/// The most bytes of fields in the structured mode: past every limit, yet quick to read a
/// byte at a time.
const STRUCTURED_BYTES: usize = 32 * 1024;

fn bytes(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<u8>> {
    Ok(match u.int_in_range(0u8..=3)? {
        // Long, to cross every limit.
        0 => {
            let unit = <&[u8]>::arbitrary(u)?;
            let len = u.int_in_range(0usize..=6000)?;
            unit.iter().copied().cycle().take(len).collect()
        }
        1 => <&[u8]>::arbitrary(u)?.to_vec(),
        _ => String::arbitrary(u)?.into_bytes(),
    })
}

fn raw_entries(u: &mut Unstructured<'_>) -> arbitrary::Result<Vec<RawEntry>> {
    let mut entries = Vec::new();
    let mut total = 0;
    for _ in 0..u.int_in_range(0usize..=6)? {
        let id = EntryId {
            ms: u64::arbitrary(u)?,
            seq: u64::arbitrary(u)?,
        };
        if u.ratio(1u8, 8)? {
            entries.push(RawEntry { id, fields: None });
            continue;
        }
        let mut fields = Vec::new();
        for _ in 0..u.int_in_range(0usize..=12)? {
            let name = if u.ratio(1u8, 2)? {
                NAMES[u.choose_index(NAMES.len())?].as_bytes().to_vec()
            } else {
                bytes(u)?
            };
            let value = bytes(u)?;
            total += name.len() + value.len();
            if total > STRUCTURED_BYTES {
                break;
            }
            fields.push((name, value));
        }
        entries.push(RawEntry {
            id,
            fields: Some(fields),
        });
    }
    Ok(entries)
}

fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", bytes.len()).as_bytes());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// `entries` as Redis sends them in reply to `XAUTOCLAIM` (`claim`) or `XREADGROUP`.
fn encode<'a>(
    entries: impl ExactSizeIterator<Item = (EntryId, Option<Vec<(&'a [u8], &'a [u8])>>)>,
    claim: bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    if claim {
        out.extend_from_slice(b"*3\r\n");
        bulk(&mut out, b"0-0");
    } else {
        out.extend_from_slice(b"*1\r\n*2\r\n");
        bulk(&mut out, b"a-stream");
    }
    out.extend_from_slice(format!("*{}\r\n", entries.len()).as_bytes());
    for (id, fields) in entries {
        out.extend_from_slice(b"*2\r\n");
        bulk(&mut out, id.to_string().as_bytes());
        match fields {
            None => out.extend_from_slice(b"*-1\r\n"),
            Some(fields) => {
                out.extend_from_slice(format!("*{}\r\n", 2 * fields.len()).as_bytes());
                for (name, value) in fields {
                    bulk(&mut out, name);
                    bulk(&mut out, value);
                }
            }
        }
    }
    if claim {
        out.extend_from_slice(b"*0\r\n");
    }
    out
}

/// `message` without the `timestamp` header the transport adds (the time in `id`, just
/// before the mark or last), when `added` says the entry had none of its own.
fn without_stamp(message: &Message, id: EntryId, added: bool) -> Message {
    let mut message = message.clone();
    let Some(seconds) = id.seconds().filter(|_| added) else {
        return message;
    };
    let marked = message
        .headers
        .last()
        .is_some_and(|h| h.name.as_str() == TRANSPORT_ERROR_HEADER);
    let at = message.headers.len().checked_sub(1 + usize::from(marked));
    if let Some(at) = at {
        let h = &message.headers[at];
        if h.name.as_str() == TIMESTAMP && h.value.as_str() == seconds.to_string() {
            message.headers.remove(at);
        }
    }
    message
}

/// Whether `message` is marked, after checking that it keeps within `limits`.
fn check_limits(message: &Message, limits: Limits) -> bool {
    let marks: Vec<usize> = (message.headers.iter().enumerate())
        .filter(|(_, h)| h.name.as_str() == TRANSPORT_ERROR_HEADER)
        .map(|(i, _)| i)
        .collect();
    assert!(
        marks.len() <= 1 && marks.iter().all(|&i| i == message.headers.len() - 1),
        "transport-error headers at {marks:?} of {}",
        message.headers.len()
    );
    let headers = message.headers.len() - marks.len();
    assert!(
        headers <= limits.max_headers,
        "{headers} headers kept, max_headers {}",
        limits.max_headers
    );
    let bytes = message.body.len()
        + message.headers[..headers]
            .iter()
            .map(|h| h.name.len() + h.value.len())
            .sum::<usize>();
    assert!(
        bytes <= limits.max_entry_bytes,
        "{bytes} bytes kept, max_entry_bytes {}",
        limits.max_entry_bytes
    );
    !marks.is_empty()
}

/// Reads `entries` as one reply, whole.
fn read_back<'a>(
    entries: impl ExactSizeIterator<Item = (EntryId, Option<Vec<(&'a [u8], &'a [u8])>>)>,
    claim: bool,
    chunk: usize,
    limits: Limits,
) -> Batch {
    let bytes = encode(entries, claim);
    let read = if claim { Read::AutoClaim } else { Read::Group };
    match replayer()
        .replay(&bytes, chunk, &[read], limits)
        .into_iter()
        .next()
    {
        Some(Ok(Outcome::Batch(batch))) => batch,
        Some(Err(e)) => panic!("a well-formed reply refused: {e}"),
        _ => unreachable!("entries read as a batch"),
    }
}

/// A delivery without the transport-error header is the whole entry (and the time the
/// transport adds): written again as the transport writes it, it reads back the same.
fn check_whole(id: EntryId, message: &Message, limits: Limits) {
    // Written without the time the transport added, which reading adds again.
    let entry = without_stamp(message, id, true);
    let fields: Vec<(Vec<u8>, Vec<u8>)> = fields(&entry)
        .map(|(name, value)| (name.into_owned().into_bytes(), value.to_vec()))
        .collect();
    let borrowed = fields
        .iter()
        .map(|(n, v)| (n.as_slice(), v.as_slice()))
        .collect();
    let batch = read_back(std::iter::once((id, Some(borrowed))), false, 65536, limits);
    assert_eq!(batch.entries.len(), 1);
    assert_eq!(batch.entries[0].message.as_ref(), Some(message));
}

/// What reading the raw entry `fields` with `limits` must deliver: `Some(Ok(message))`
/// the whole entry, `Some(Err(()))` a marked one, `None` either (a forged transport-error
/// field is dropped without a word, and its value is not counted against the limit).
fn expected(fields: &[RawField], limits: Limits) -> Option<Result<Message, ()>> {
    let is = |name: &[u8], what: &str| name == what.as_bytes();
    if fields.iter().any(|(n, _)| is(n, TRANSPORT_ERROR_HEADER)) {
        return None;
    }
    let total: usize = fields.iter().map(|(n, v)| n.len() + v.len()).sum();
    let bodies: Vec<&RawField> = fields.iter().filter(|(n, _)| is(n, BODY)).collect();
    let mut headers = Vec::new();
    for (name, value) in fields.iter().filter(|(n, _)| !is(n, BODY)) {
        let (Ok(name), Ok(value)) = (std::str::from_utf8(name), std::str::from_utf8(value)) else {
            return Some(Err(()));
        };
        // `_body` stands for a header named `body`, `__body` for `_body`, and so on.
        let name = match name.strip_prefix('_') {
            Some(rest) if rest.trim_start_matches('_') == BODY => rest,
            _ => name,
        };
        headers.push((name, value));
    }
    if total > limits.max_entry_bytes || bodies.len() != 1 || headers.len() > limits.max_headers {
        return Some(Err(()));
    }
    let mut message = Message::new(bodies[0].1.clone());
    for (name, value) in headers {
        message.push_header(name, value);
    }
    Some(Ok(message))
}

fuzz_target!(|data: &[u8]| {
    let [control, headers, rest @ ..] = data else {
        return;
    };
    let (control, headers) = (*control as usize, *headers as usize);
    let chunk = CHUNKS[(control >> 3) & 7];
    let limits = Limits {
        max_entry_bytes: ENTRY_BYTES[control >> 6],
        max_headers: 1 + headers % 8,
    };
    let replayer = replayer();

    if control & 4 != 0 {
        // Structured: entries written as Redis writes them.
        let claim = control & 1 != 0;
        let Ok(entries) = raw_entries(&mut Unstructured::new(rest)) else {
            return;
        };
        let batch = read_back(
            entries.iter().map(|e| {
                let fields = e.fields.as_ref().map(|fields| {
                    fields
                        .iter()
                        .map(|(n, v)| (n.as_slice(), v.as_slice()))
                        .collect()
                });
                (e.id, fields)
            }),
            claim,
            chunk,
            limits,
        );
        assert_eq!(batch.entries.len(), entries.len());
        for (raw, got) in entries.iter().zip(&batch.entries) {
            assert_eq!(raw.id, got.id);
            match (&raw.fields, &got.message) {
                (None, None) => {}
                (Some(fields), Some(message)) => {
                    let own = fields.iter().any(|(n, _)| n == TIMESTAMP.as_bytes());
                    let message = &without_stamp(message, raw.id, !own);
                    let marked = check_limits(message, limits);
                    match expected(fields, limits) {
                        Some(Ok(whole)) => assert_eq!(message, &whole),
                        Some(Err(())) => assert!(marked, "{message:?} not marked"),
                        None => {}
                    }
                }
                _ => panic!("entry {} read with or without fields wrongly", raw.id),
            }
        }
        return;
    }

    // Raw: whatever the bytes say, read as the reads the plan names, in turn.
    let reads: &[Read] = match control & 3 {
        0 => &[Read::Group],
        1 => &[Read::AutoClaim],
        2 => &[Read::Reply],
        _ => &[Read::Group, Read::Reply, Read::AutoClaim],
    };
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let outcomes = replayer.replay(rest, chunk, reads, limits);
    let held = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    let allowed = FIXED_BYTES + BYTES_PER_BYTE * rest.len();
    assert!(
        held <= allowed,
        "{held} bytes held reading {} bytes (at most {allowed} allowed)",
        rest.len()
    );
    for outcome in outcomes {
        let Ok(Outcome::Batch(batch)) = outcome else {
            continue;
        };
        for entry in &batch.entries {
            if let Some(message) = &entry.message {
                // Whether the entry had a `timestamp` of its own is not known here: at most
                // the transport's is left out of the counts.
                if !check_limits(&without_stamp(message, entry.id, true), limits) {
                    check_whole(entry.id, message, limits);
                }
            }
        }
    }
});

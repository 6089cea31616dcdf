//! Entry points for the fuzz targets `fuzz/fuzz_targets/amqp_*.rs`, so that they need no
//! lapin of their own. Not part of the plugin's interface.
//!
//! Where amq-protocol's parser has to read input that was not screened, it runs on a thread
//! with a big stack (it recurses once per level, see `src/screen.rs`), and so does dropping
//! what it built: the targets look for faults in this crate's code, not in that one. The
//! conversions under test run on the caller's thread.

use golconde_plugin_api::{Header, Message, RVec};
use lapin::{
    protocol::basic,
    types::{parsing::parse_field_table, AMQPValue, FieldTable},
    BasicProperties,
};

use crate::{properties, screen};

/// What [`publish_and_read`] found.
pub struct RoundTrip {
    /// The headers as a consumer reads them back.
    pub headers: Vec<(String, String)>,
    /// What `properties` left out for lack of room.
    pub dropped: Vec<String>,
    /// Bytes of the encoded property list, its flags included.
    pub encoded: usize,
}

/// Maps `headers` to properties as publishing does, encodes them as lapin would on the
/// wire, parses them back as lapin would on delivery, and reads the headers out.
pub fn publish_and_read(headers: &[(String, String)], room: usize) -> RoundTrip {
    let mut message = Message::new("");
    for (name, value) in headers {
        message.push_header(name.clone(), value.clone());
    }
    let out = properties::properties(&message, room);
    let mut buffer = vec![0u8; 2 * room + 65_536];
    let encoded = {
        let encode = basic::gen_properties(&out.properties);
        encode(std::io::Cursor::new(&mut buffer[..]).into())
            .expect("the property list encodes")
            .position as usize
    };
    let (rest, parsed) =
        basic::parse_properties(&buffer[..encoded]).expect("lapin reads what lapin wrote");
    assert!(rest.is_empty());
    RoundTrip {
        headers: pairs(&properties::headers(&parsed)),
        dropped: out.dropped,
        encoded,
    }
}

/// Parses `bytes` as a field table the way lapin does (on a big stack), and reads it as a
/// delivered message's headers (on this thread). `None` if amq-protocol refuses it.
pub fn read_table(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    let bytes = bytes.to_vec();
    let table = on_big_stack(move || parse_field_table(&bytes[..]).ok().map(|(_, t)| t))?;
    let properties = BasicProperties::default().with_headers(table);
    let headers = pairs(&properties::headers(&properties));
    on_big_stack(move || drop(properties));
    Some(headers)
}

/// Screens a content header frame holding `properties` (a property list, encoded) under
/// `flags` for a connection of `frame_max`, then parses the result as lapin does and reads
/// its headers on this thread. Panics if lapin refuses a frame the screen
/// rebuilt, if the screen made it larger than `frame_max` or let a table deeper than
/// [`properties::MAX_HEADER_DEPTH`] through (the parse runs on a 1 MiB stack, which such a
/// table may also overflow). `None` if lapin refuses a frame the screen left as it was.
pub fn screen_and_read(
    flags: u16,
    properties: &[u8],
    frame_max: usize,
) -> Option<Vec<(String, String)>> {
    let mut frame = vec![2, 0, 1, 0, 0, 0, 0, 0, 60, 0, 0];
    frame.extend_from_slice(&0u64.to_be_bytes());
    frame.extend_from_slice(&flags.to_be_bytes());
    frame.extend_from_slice(properties);
    frame.push(0xCE);
    let size = (frame.len() - 8) as u32;
    frame[3..7].copy_from_slice(&size.to_be_bytes());
    let screened = screen::screen_header(&frame, frame_max);
    let rebuilt = matches!(screened, std::borrow::Cow::Owned(_));
    if rebuilt {
        assert!(
            screened.len() <= frame_max,
            "a rebuilt frame of {} bytes",
            screened.len()
        );
    }
    // On a small stack: whatever the screen lets through, changed or not, must be shallow
    // enough for lapin's parser (some 2 KiB a level in a release build).
    let payload = screened[7 + 12..screened.len() - 1].to_vec();
    let parsed = on_stack(1 << 20, move || {
        basic::parse_properties(&payload[..]).map(|(_, parsed)| parsed)
    });
    let parsed = match parsed {
        Ok(parsed) => parsed,
        Err(e) if rebuilt => panic!("lapin refuses a frame the screen rebuilt: {e}"),
        Err(_) => return None,
    };
    if let Some(table) = parsed.headers() {
        let depth = depth(table);
        assert!(
            depth <= properties::MAX_HEADER_DEPTH,
            "the screen let a table {depth} levels deep through"
        );
    }
    let headers = pairs(&properties::headers(&parsed));
    on_big_stack(move || drop(parsed));
    Some(headers)
}

fn pairs(headers: &RVec<Header>) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_string()))
        .collect()
}

/// How deep `table`'s values nest (a table or array is a level), without recursion.
fn depth(table: &FieldTable) -> usize {
    let mut deepest = 0;
    let mut open: Vec<(&AMQPValue, usize)> = table.inner().values().map(|v| (v, 1)).collect();
    while let Some((value, level)) = open.pop() {
        match value {
            AMQPValue::FieldTable(t) => {
                deepest = deepest.max(level);
                open.extend(t.inner().values().map(|v| (v, level + 1)));
            }
            AMQPValue::FieldArray(a) => {
                deepest = deepest.max(level);
                open.extend(a.as_slice().iter().map(|v| (v, level + 1)));
            }
            _ => {}
        }
    }
    deepest
}

fn on_big_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    on_stack(256 << 20, f)
}

fn on_stack<T: Send + 'static>(size: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(size)
        .spawn(f)
        .expect("a thread")
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// What [`tap`] read.
pub struct Tapped {
    /// The deliveries taken, in order.
    pub deliveries: Vec<Taken>,
    /// The bytes lapin would have read.
    pub lapin: Vec<u8>,
    /// Why the stream ended early, if it did.
    pub error: Option<std::io::Error>,
}

/// One delivery [`tap`] took.
pub struct Taken {
    pub tag: u64,
    pub redelivered: bool,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

/// Reads `bytes` (frames from the broker) through a consumer's screen and tap, in pieces of
/// the sizes `pieces` gives in turn (a size of 0 counts as 1), as lapin's I/O loop reads them.
pub fn tap(bytes: &[u8], pieces: &[usize]) -> Tapped {
    use futures_lite::io::AsyncReadExt;

    let inbox = std::sync::Arc::new(crate::tap::Inbox::default());
    let reader = Pieces {
        bytes: bytes.to_vec(),
        at: 0,
        pieces: if pieces.is_empty() {
            vec![usize::MAX]
        } else {
            pieces.to_vec()
        },
        next: 0,
    };
    // No socket: the tap never naps here.
    let mut screened = screen::Screened::new(reader, 131_072).tapped(inbox.clone(), None);
    let mut lapin = Vec::new();
    let error = futures_lite::future::block_on(screened.read_to_end(&mut lapin)).err();
    let mut taken = Vec::new();
    inbox.take(usize::MAX, std::task::Waker::noop(), &mut taken);
    Tapped {
        deliveries: taken
            .into_iter()
            .map(|d| Taken {
                tag: d.tag,
                redelivered: d.redelivered,
                headers: pairs(&d.message.headers),
                body: d.message.body.to_vec(),
            })
            .collect(),
        lapin,
        error,
    }
}

/// A stream that yields its bytes in pieces of given sizes.
struct Pieces {
    bytes: Vec<u8>,
    at: usize,
    pieces: Vec<usize>,
    next: usize,
}

impl futures_lite::io::AsyncRead for Pieces {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let piece = this.pieces[this.next % this.pieces.len()].max(1);
        this.next += 1;
        let count = piece.min(buf.len()).min(this.bytes.len() - this.at);
        buf[..count].copy_from_slice(&this.bytes[this.at..this.at + count]);
        this.at += count;
        std::task::Poll::Ready(Ok(count))
    }
}

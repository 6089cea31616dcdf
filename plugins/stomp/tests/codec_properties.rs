//! Properties of the STOMP codec over generated frames and byte streams: what is encoded
//! decodes to the same frame however the bytes are split, the frame limit is exact (a
//! frame over it comes out marked, without its body), and no input, however malformed,
//! makes the decoder panic.

use bytes::BytesMut;
use golconde_stomp::{
    codec::{encode_frame, CodecError, Item, StompCodec},
    frame::{Command, Frame},
};
use proptest::prelude::*;
use tokio_util::codec::Decoder;

const LIMIT: usize = 1 << 20;

/// Text that exercises escaping: the four escaped characters, a backslash-like letter
/// sequence, NUL, and non-ASCII.
fn text(min: usize, handshake: bool) -> impl Strategy<Value = String> {
    let chars = if handshake {
        prop::sample::select(vec![
            'a', 'Z', '0', '-', ' ', '\\', 'c', 'é', '€', '\0', ':',
        ])
    } else {
        prop::sample::select(vec![
            'a', 'Z', '0', '-', ' ', '\\', 'c', 'n', 'r', 'é', '€', '\0', ':', '\n', '\r',
        ])
    };
    prop::collection::vec(chars, min..12).prop_map(|c| c.into_iter().collect())
}

fn frame() -> impl Strategy<Value = Frame> {
    prop::sample::select(Command::ALL.to_vec()).prop_flat_map(|command| {
        let handshake = !command.escapes_headers();
        let name = text(1, handshake)
            .prop_filter("names without `:` in handshake frames", move |n| {
                !(handshake && n.contains(':')) && n != "content-length"
            });
        let headers = prop::collection::vec((name, text(0, handshake)), 0..6);
        let body = prop::collection::vec(any::<u8>(), 0..80);
        (headers, body).prop_map(move |(headers, body)| Frame {
            command,
            headers,
            body: body.into(),
            incomplete: None,
        })
    })
}

fn encode(frame: &Frame) -> BytesMut {
    let mut buf = BytesMut::new();
    encode_frame(frame, &mut buf).expect("generated frames are encodable");
    buf
}

/// Feeds `chunks` one after the other, decoding as far as possible after each, as a
/// socket reader would; returns the frames, or the first error.
fn decode_chunks<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
    limit: usize,
) -> Result<Vec<Frame>, CodecError> {
    let mut codec = StompCodec::new(limit, 1024);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(item) = codec.decode(&mut buf)? {
            if let Item::Frame(frame) = item {
                frames.push(frame);
            }
        }
    }
    while let Some(item) = codec.decode_eof(&mut buf)? {
        if let Item::Frame(frame) = item {
            frames.push(frame);
        }
    }
    Ok(frames)
}

proptest! {
    #[test]
    fn any_frame_round_trips(frame in frame()) {
        let bytes = encode(&frame);
        let decoded = decode_chunks([&bytes[..]], LIMIT).unwrap();
        prop_assert_eq!(decoded, vec![frame]);
    }

    #[test]
    fn a_stream_split_anywhere_decodes_to_the_same_frames(
        frames in prop::collection::vec(frame(), 1..6),
        beats in prop::collection::vec(prop::sample::select(vec!["", "\n", "\r\n", "\n\n\r\n"]), 6),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut stream = Vec::new();
        for (frame, beat) in frames.iter().zip(&beats) {
            stream.extend_from_slice(beat.as_bytes());
            stream.extend_from_slice(&encode(frame));
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.push(0);
        cuts.push(stream.len());
        cuts.sort_unstable();
        let chunks = cuts.windows(2).map(|w| &stream[w[0]..w[1]]);
        prop_assert_eq!(decode_chunks(chunks, LIMIT).unwrap(), frames);
    }

    #[test]
    fn the_frame_limit_is_exact(frame in frame(), limit in 16usize..400) {
        let bytes = encode(&frame);
        let decoded = decode_chunks([&bytes[..]], limit).unwrap();
        if bytes.len() <= limit {
            prop_assert_eq!(decoded, vec![frame]);
        } else {
            prop_assert_eq!(decoded.len(), 1);
            let cut = &decoded[0];
            prop_assert_eq!(cut.command, frame.command);
            prop_assert!(cut.body.is_empty());
            let why = cut.incomplete.as_deref().unwrap_or_default();
            let expected = format!("the STOMP frame is {} bytes", bytes.len());
            prop_assert!(why.starts_with(&expected), "{}", why);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        limit in 8usize..512,
        cut in any::<prop::sample::Index>(),
    ) {
        let at = cut.index(bytes.len() + 1);
        let _ = decode_chunks([&bytes[..at], &bytes[at..]], limit);
    }

    #[test]
    fn damaged_frames_give_an_error_or_frames_never_a_panic(
        frame in frame(),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        truncate in any::<prop::sample::Index>(),
    ) {
        let mut bytes = encode(&frame).to_vec();
        for (at, byte) in damage {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        let _ = decode_chunks([&bytes[..]], LIMIT);
        let cut = truncate.index(bytes.len());
        // A frame cut short is never mistaken for a complete one.
        let original = encode(&frame);
        if let Ok(frames) = decode_chunks([&original[..cut]], LIMIT) {
            prop_assert!(frames.is_empty(), "{frames:?} from {cut} of {} bytes", original.len());
        }
    }
}

#[test]
fn an_endless_header_section_costs_bounded_memory() {
    // A peer that keeps sending header lines is read on, but neither its lines nor its
    // headers past the limits are kept.
    let mut codec = StompCodec::new(4096, 1024);
    let mut buf = BytesMut::from(&b"MESSAGE\n"[..]);
    let mut held = 0;
    for _ in 0..100_000 {
        buf.extend_from_slice(b"x-padding:0123456789\n");
        held = held.max(buf.len());
        assert!(codec.decode(&mut buf).unwrap().is_none());
    }
    buf.extend_from_slice(b"ack:1\n\n\0");
    let Some(Item::Frame(frame)) = codec.decode(&mut buf).unwrap() else {
        panic!("the frame ends");
    };
    assert!(held <= 64, "buffered {held} bytes");
    // What fits in the frame limit, and `ack`.
    assert!(
        frame.headers.len() <= 4096 / 21 + 1,
        "{} headers kept",
        frame.headers.len()
    );
    assert_eq!(frame.header("ack"), Some("1"));
    assert!(frame.incomplete.is_some());
}

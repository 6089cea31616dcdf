//! Feeds arbitrary bytes to the STOMP decoder, split in two reads and under a frame limit
//! and a header limit all chosen by the input. The decoder may answer with frames, "need
//! more" or an error, never a panic, and never holds more than the limits allow; every
//! frame it decodes must encode and decode back to itself (except handshake frames holding
//! a carriage return, which cannot be written again), and one marked incomplete must
//! respect the limits it was cut to.

#![no_main]

use bytes::BytesMut;
use golconde_stomp::{
    codec::{encode_frame, Item, StompCodec, PROTOCOL_HEADERS},
    frame::Frame,
};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fn decode(chunks: &[&[u8]], limit: usize, max_headers: usize) -> Vec<Frame> {
    let mut codec = StompCodec::new(limit, max_headers);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(Item::Frame(frame))) => frames.push(frame),
                Ok(Some(Item::Heartbeat)) => {}
                Ok(None) => break,
                Err(_) => return frames,
            }
        }
    }
    while let Ok(Some(item)) = codec.decode_eof(&mut buf) {
        if let Item::Frame(frame) = item {
            frames.push(frame);
        }
    }
    frames
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let limit = 16 + (control as usize) * 64;
    let max_headers = 1 + (control as usize % 8);
    let at = if rest.is_empty() {
        0
    } else {
        (control as usize * 7) % (rest.len() + 1)
    };
    for frame in decode(&[&rest[..at], &rest[at..]], limit, max_headers) {
        // Past the limit, only the headers the client needs are kept, once each.
        assert!(
            frame.headers.len() <= max_headers + PROTOCOL_HEADERS.len(),
            "{} headers kept",
            frame.headers.len()
        );
        assert!(
            frame.body.len() < limit,
            "a {}-byte body kept",
            frame.body.len()
        );
        let mut bytes = BytesMut::new();
        if encode_frame(&frame, &mut bytes).is_ok() {
            let whole = Frame {
                incomplete: None,
                ..frame
            };
            assert_eq!(decode(&[&bytes[..]], 1 << 30, usize::MAX), vec![whole]);
        }
    }
});

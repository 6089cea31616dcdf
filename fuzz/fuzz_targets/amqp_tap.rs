//! A consumer's connection as the broker may fill it: deliveries (their bodies split into
//! frames of any size, their property lists well formed or not) between other frames, read
//! through the `amqp` plugin's screen and tap in pieces of any size. Never a panic; every
//! delivery comes out whole, in order, with its tag and message id; lapin reads exactly the
//! other frames (and heartbeats); a property list that cannot be read ends the stream with an
//! error, after the deliveries before it.

#![no_main]

use golconde_amqp::fuzzing::{tap, Tapped};
use libfuzzer_sys::{
    arbitrary::{Arbitrary, Unstructured},
    fuzz_target,
};

fn frame(out: &mut Vec<u8>, kind: u8, channel: u16, payload: &[u8]) {
    out.push(kind);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out.push(0xCE);
}

/// The frames lapin reads, heartbeats left out.
fn frames(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while bytes.len() >= 8 {
        let size = u32::from_be_bytes(bytes[3..7].try_into().unwrap()) as usize;
        let total = 8 + size;
        if bytes[0] != 8 {
            out.push(bytes[..total].to_vec());
        }
        bytes = &bytes[total..];
    }
    assert!(bytes.is_empty(), "lapin reads a frame cut short");
    out
}

struct Expected {
    tag: u64,
    redelivered: bool,
    body: Vec<u8>,
    id: Id,
}

enum Id {
    /// The property list is arbitrary bytes.
    Broken,
    /// A message id that is UTF-8.
    Exact(String),
    /// One that is not: it arrives read lossily (and cut to 255 bytes).
    Lossy,
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut wire = Vec::new();
    let mut others = Vec::new();
    let mut expected = Vec::new();
    let count = u.int_in_range(0usize..=20).unwrap_or(0);
    for _ in 0..count {
        if u.ratio(1, 4).unwrap_or(false) {
            // Another method (any class but basic.deliver's), on the connection or the channel.
            let channel = u.int_in_range(0u16..=1).unwrap_or(1);
            let mut payload = Vec::<u8>::arbitrary(&mut u).unwrap_or_default();
            payload.splice(0..0, [0, 20, 0, 40]);
            let mut one = Vec::new();
            frame(&mut one, 1, channel, &payload);
            wire.extend_from_slice(&one);
            others.push(one);
            continue;
        }
        let tag = u64::arbitrary(&mut u).unwrap_or(1);
        let redelivered = bool::arbitrary(&mut u).unwrap_or(false);
        let body = Vec::<u8>::arbitrary(&mut u).unwrap_or_default();
        let piece = u.int_in_range(1usize..=4096).unwrap_or(1);
        let mut deliver = vec![0, 60, 0, 60, 3, b'c', b't', b'g'];
        deliver.extend_from_slice(&tag.to_be_bytes());
        deliver.push(u8::from(redelivered));
        deliver.extend_from_slice(&[1, b'x', 1, b'q']);
        frame(&mut wire, 1, 1, &deliver);
        let mut header = vec![0, 60, 0, 0];
        header.extend_from_slice(&(body.len() as u64).to_be_bytes());
        let id = if u.ratio(1, 5).unwrap_or(false) {
            // Whatever a broken broker might send as the property list.
            header.extend(Vec::<u8>::arbitrary(&mut u).unwrap_or_default());
            Id::Broken
        } else {
            let id: Vec<u8> = Vec::<u8>::arbitrary(&mut u).unwrap_or_default();
            let id = &id[..id.len().min(255)];
            header.extend_from_slice(&(1u16 << 7).to_be_bytes());
            header.push(id.len() as u8);
            header.extend_from_slice(id);
            match std::str::from_utf8(id) {
                Ok(id) => Id::Exact(id.to_string()),
                Err(_) => Id::Lossy,
            }
        };
        frame(&mut wire, 2, 1, &header);
        for part in body.chunks(piece) {
            frame(&mut wire, 3, 1, part);
        }
        expected.push(Expected {
            tag,
            redelivered,
            body,
            id,
        });
    }
    let pieces: Vec<usize> = Vec::<u16>::arbitrary(&mut u)
        .unwrap_or_default()
        .into_iter()
        .map(usize::from)
        .collect();

    let Tapped {
        deliveries,
        lapin,
        error,
    } = tap(&wire, &pieces);
    assert!(deliveries.len() <= expected.len());
    for (got, want) in deliveries.iter().zip(&expected) {
        let tag = got.tag;
        assert_eq!((tag, got.redelivered), (want.tag, want.redelivered));
        assert_eq!(got.body, want.body, "the body of delivery {tag}");
        match &want.id {
            Id::Exact(id) => assert!(
                got.headers.contains(&("message-id".to_string(), id.clone())),
                "message id {id:?} of delivery {tag}: {:?}",
                got.headers
            ),
            Id::Lossy => assert!(got.headers.iter().any(|(name, _)| name == "message-id")),
            Id::Broken => {}
        }
    }
    match error {
        None => {
            assert_eq!(deliveries.len(), expected.len(), "deliveries lost");
            assert_eq!(frames(&lapin), others);
        }
        Some(error) => assert!(
            expected
                .get(deliveries.len())
                .is_some_and(|e| matches!(e.id, Id::Broken)),
            "the stream ended on a delivery that was well formed: {error:?} after {} of {}",
            deliveries.len(),
            expected.len()
        ),
    }
});

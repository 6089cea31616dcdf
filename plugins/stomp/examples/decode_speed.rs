//! How long the consumer's side of the STOMP plugin takes per MESSAGE, without a broker:
//! decoding 200,000 frames shaped as RabbitMQ sends them (the bench's workload as bodies),
//! read in 16 KiB chunks as from a socket, and turning each into the host's message.
//!
//! `cargo run --release -p golconde-stomp --example decode_speed`; it prints nanoseconds
//! per frame for five rounds (the first warms up). Compare two builds on one machine; the
//! end-to-end figures are `scripts/bench`'s.
//!
//! May depend on: this crate, `bytes` and `tokio-util`.

use bytes::BytesMut;
use golconde_stomp::{
    codec::{Item, StompCodec},
    message::Incoming,
};
use tokio_util::codec::Decoder;

const FRAMES: u32 = 200_000;
const KEYS: u32 = 50_000;
const READ: usize = 16 * 1024;

fn main() {
    let mut wire = Vec::new();
    for i in 0..FRAMES {
        let id = i % KEYS;
        // The bench's body (`golconde_bench_memory::Workload::body`), written out: that crate is a
        // plugin library too, and two plugin libraries cannot link into one program (both export
        // the root module's symbol).
        let body = format!(
            r#"{{"action":"set","data":{{"id":{id},"name":"user {i}","email":"u{id}.v{i}@example.com","score":{i},"updated_at":"2026-01-01T00:00:07Z"}}}}"#
        );
        let head = format!(
            "MESSAGE\nsubscription:0\ndestination:/queue/bench\nmessage-id:T_0@@session-x@@{i}\n\
             redelivered:false\nack:T_0@@session-x@@{i}\npersistent:true\n\
             content-length:{}\n\n",
            body.len()
        );
        wire.extend_from_slice(head.as_bytes());
        wire.extend_from_slice(body.as_bytes());
        wire.extend_from_slice(b"\0\n");
    }
    for round in 0..5 {
        let mut codec = StompCodec::new(4 << 20, 1000);
        let mut buffer = BytesMut::with_capacity(8 * 1024);
        let clock = std::time::Instant::now();
        let (mut frames, mut bytes) = (0u32, 0usize);
        for chunk in wire.chunks(READ) {
            buffer.extend_from_slice(chunk);
            while let Some(item) = codec.decode(&mut buffer).expect("the frames are valid") {
                if let Item::Frame(frame) = item {
                    let incoming = Incoming::from_frame(frame, 1).expect("the frames have `ack`");
                    bytes += incoming.message.body.len();
                    frames += 1;
                }
            }
        }
        assert_eq!(frames, FRAMES);
        println!(
            "round {round}: {:.0} ns per frame ({bytes} body bytes)",
            clock.elapsed().as_nanos() as f64 / f64::from(frames)
        );
    }
}

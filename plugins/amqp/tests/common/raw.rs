//! A publisher that writes AMQP 0-9-1 frames byte by byte, for messages no well-behaved
//! client library would send: header tables nested thousands of levels deep (lapin's own
//! encoder recurses once per level and would overflow its I/O thread's stack before the
//! broker ever saw them), or property strings that are not UTF-8.
//!
//! It speaks just enough of the protocol to log in as guest, open a channel with publisher
//! confirms, and publish to the default exchange; everything else (content header properties
//! included) is the caller's bytes.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

const METHOD: u8 = 1;
const HEADER: u8 = 2;
const BODY: u8 = 3;
const FRAME_END: u8 = 0xCE;

/// Content header property flags of class `basic` (AMQP 0-9-1, 4.2.6.1).
pub const CONTENT_TYPE: u16 = 1 << 15;
pub const HEADERS: u16 = 1 << 13;
pub const MESSAGE_ID: u16 = 1 << 7;

/// A connection with one channel (1) in confirm mode.
pub struct RawPublisher {
    socket: TcpStream,
    /// As tuned with the broker: the largest frame either side may send.
    pub frame_max: u32,
}

impl RawPublisher {
    /// Connects to the local broker as guest, taking the broker's `frame_max`.
    pub fn connect() -> RawPublisher {
        let mut socket = TcpStream::connect("127.0.0.1:5672").expect("RabbitMQ on 5672");
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        socket.write_all(b"AMQP\x00\x00\x09\x01").unwrap();
        let mut publisher = RawPublisher {
            socket,
            frame_max: 4096,
        };
        publisher.expect(0, 10, 10); // connection.start
        let mut start_ok = method(10, 11);
        start_ok.extend(0u32.to_be_bytes()); // client properties: none
        short(&mut start_ok, b"PLAIN");
        long(&mut start_ok, b"\0guest\0guest");
        short(&mut start_ok, b"en_US");
        publisher.send(METHOD, 0, &start_ok);
        let tune = publisher.expect(0, 10, 30);
        publisher.frame_max = u32::from_be_bytes(tune[2..6].try_into().unwrap());
        let mut tune_ok = method(10, 31);
        tune_ok.extend(&tune[0..2]); // channel max
        tune_ok.extend(publisher.frame_max.to_be_bytes());
        tune_ok.extend(0u16.to_be_bytes()); // no heartbeats: the test is short
        publisher.send(METHOD, 0, &tune_ok);
        let mut open = method(10, 40);
        short(&mut open, b"/");
        short(&mut open, b"");
        open.push(0);
        publisher.send(METHOD, 0, &open);
        publisher.expect(0, 10, 41);
        let mut channel_open = method(20, 10);
        short(&mut channel_open, b"");
        publisher.send(METHOD, 1, &channel_open);
        publisher.expect(1, 20, 11);
        let mut select = method(85, 10);
        select.push(0);
        publisher.send(METHOD, 1, &select);
        publisher.expect(1, 85, 11);
        publisher
    }

    /// Bytes a content header frame has around its property list: frame header and end,
    /// class, weight, body size and property flags.
    pub const HEADER_OVERHEAD: usize = 7 + 1 + 2 + 2 + 8 + 2;

    /// Publishes `body` to `queue` with `flags` and the property list `properties`, already
    /// encoded, and waits for the broker's confirmation.
    pub fn publish(&mut self, queue: &str, flags: u16, properties: &[u8], body: &[u8]) {
        let mut publish = method(60, 40);
        publish.extend(0u16.to_be_bytes());
        short(&mut publish, b"");
        short(&mut publish, queue.as_bytes());
        publish.push(0);
        self.send(METHOD, 1, &publish);
        let mut header = Vec::with_capacity(14 + properties.len());
        header.extend(60u16.to_be_bytes());
        header.extend(0u16.to_be_bytes());
        header.extend((body.len() as u64).to_be_bytes());
        header.extend(flags.to_be_bytes());
        header.extend(properties);
        assert!(
            header.len() + 8 <= self.frame_max as usize,
            "a header frame of {} bytes does not fit frame_max {}",
            header.len() + 8,
            self.frame_max
        );
        self.send(HEADER, 1, &header);
        for chunk in body.chunks(self.frame_max as usize - 8) {
            self.send(BODY, 1, chunk);
        }
        self.expect(1, 60, 80); // basic.ack
    }

    fn send(&mut self, kind: u8, channel: u16, payload: &[u8]) {
        let mut frame = Vec::with_capacity(payload.len() + 8);
        frame.push(kind);
        frame.extend(channel.to_be_bytes());
        frame.extend((payload.len() as u32).to_be_bytes());
        frame.extend(payload);
        frame.push(FRAME_END);
        self.socket.write_all(&frame).unwrap();
    }

    /// Reads frames until the method `class.method` on `channel`, returning its arguments.
    /// Any other method (a `close` with the broker's complaint) fails the test.
    fn expect(&mut self, channel: u16, class: u16, id: u16) -> Vec<u8> {
        loop {
            let mut head = [0u8; 7];
            self.socket.read_exact(&mut head).unwrap();
            let size = u32::from_be_bytes(head[3..7].try_into().unwrap()) as usize;
            let mut payload = vec![0; size + 1];
            self.socket.read_exact(&mut payload).unwrap();
            assert_eq!(payload.pop(), Some(FRAME_END));
            if head[0] != METHOD {
                continue;
            }
            let got = (
                u16::from_be_bytes(head[1..3].try_into().unwrap()),
                u16::from_be_bytes(payload[0..2].try_into().unwrap()),
                u16::from_be_bytes(payload[2..4].try_into().unwrap()),
            );
            assert_eq!(
                got,
                (channel, class, id),
                "the broker answered {}",
                String::from_utf8_lossy(&payload)
            );
            return payload.split_off(4);
        }
    }
}

impl Drop for RawPublisher {
    fn drop(&mut self) {
        let mut close = method(10, 50);
        close.extend(200u16.to_be_bytes());
        short(&mut close, b"done");
        close.extend([0, 0, 0, 0]);
        self.send(METHOD, 0, &close);
        let _ = self.socket.shutdown(std::net::Shutdown::Write);
        // Wait for close-ok (or anything) so the broker has the whole conversation.
        let _ = self.socket.read(&mut [0u8; 64]);
    }
}

fn method(class: u16, id: u16) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend(class.to_be_bytes());
    payload.extend(id.to_be_bytes());
    payload
}

/// Appends an AMQP short string.
pub fn short(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(u8::try_from(bytes.len()).expect("a short string"));
    out.extend(bytes);
}

/// Appends an AMQP long string (the argument form, without a type tag).
pub fn long(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend((bytes.len() as u32).to_be_bytes());
    out.extend(bytes);
}

/// Appends a field table entry `name` = long string `value`.
pub fn string_entry(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    short(out, name);
    out.push(b'S');
    long(out, value);
}

/// Appends a field table entry `name` holding arrays nested `depth` levels deep (the
/// innermost empty), built without recursion: 5 bytes a level.
pub fn deep_array_entry(out: &mut Vec<u8>, name: &[u8], depth: usize) {
    short(out, name);
    for level in 0..depth {
        out.push(b'A');
        out.extend(((5 * (depth - 1 - level)) as u32).to_be_bytes());
    }
}

/// Appends a field table entry `name` holding tables nested `depth` levels deep, each
/// holding the next under the key `k` (the innermost empty): 7 bytes a level.
pub fn deep_table_entry(out: &mut Vec<u8>, name: &[u8], depth: usize) {
    short(out, name);
    for level in 0..depth {
        out.push(b'F');
        out.extend(((7 * (depth - 1 - level)) as u32).to_be_bytes());
        if level + 1 < depth {
            short(out, b"k");
        }
    }
}

/// A property list holding the field table `entries` (already encoded) as `headers`.
pub fn table(entries: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() + 4);
    long(&mut out, entries);
    out
}

/// How many levels of [`deep_array_entry`] (5 bytes each) named `name` fit in one header
/// frame of `frame_max` bytes beside `besides` bytes of other properties and table entries.
pub fn deepest(frame_max: u32, name: &[u8], besides: usize) -> usize {
    let used = RawPublisher::HEADER_OVERHEAD + 4 + besides + 1 + name.len();
    (frame_max as usize - used) / 5
}

//! Ceiling S: RabbitMQ drained over STOMP by the bench's own STOMP 1.2 client, a frame codec
//! and a consumer written here in a few hundred lines, subscribing and acknowledging the
//! way the `stomp` plugin does under Golconde's defaults: the queue as `/queue/NAME`,
//! `ack:client` (cumulative), the prefetch in `prefetch-count`, one ACK for the last message
//! of each batch.
//!
//! Ceiling SB is the same client feeding PostgreSQL: ceiling AB's hand-written pipeline over
//! STOMP instead of AMQP.
//!
//! Depends on tokio, and on the bench's `db` module for ceiling SB. Key decision: a client
//! of the bench's own rather than the plugin's code, so that the ceiling is what RabbitMQ's
//! STOMP adapter can deliver on this machine, not what the plugin does (that is what is
//! compared with it); and no STOMP crate, since no well-kept one exists (the plugin carries
//! its own for the same reason).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::db::Columns;

/// RabbitMQ's STOMP listener, the one the daemon's `stomp` transport uses in the bench.
pub const ADDRESS: &str = "127.0.0.1:61613";

/// How long any one frame may take to arrive before the ceiling gives up.
const SILENCE: Duration = Duration::from_secs(30);

/// One frame as read: its command, its headers (escapes undone) and its body.
#[derive(Debug, PartialEq)]
struct Frame {
    command: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Frame {
    /// The first header named `name`, as STOMP 1.2 says repeated headers are read.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Where a frame starting at `bytes[0]` ends: `Some(length)` once all of it is there,
/// counting heart-beat EOLs before it, its headers, its body and its NUL; `None` while
/// some of it has yet to arrive.
fn frame_length(bytes: &[u8]) -> Result<Option<usize>> {
    let Some(start) = bytes.iter().position(|&b| b != b'\n' && b != b'\r') else {
        return Ok(None);
    };
    let mut line = start;
    let mut content_length = None;
    // The command line, then header lines until an empty one.
    let mut first = true;
    loop {
        let Some(eol) = bytes[line..].iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        let raw = &bytes[line..line + eol];
        let text = raw.strip_suffix(b"\r").unwrap_or(raw);
        line += eol + 1;
        if !first && text.is_empty() {
            break;
        }
        if !first && content_length.is_none() {
            if let Some(value) = text.strip_prefix(b"content-length:") {
                let value = String::from_utf8_lossy(value);
                content_length =
                    Some(value.trim().parse::<usize>().with_context(|| {
                        format!("a STOMP frame with the content-length `{value}`")
                    })?);
            }
        }
        first = false;
    }
    let nul = match content_length {
        Some(n) => line.saturating_add(n),
        None => match bytes[line..].iter().position(|&b| b == 0) {
            Some(at) => line + at,
            None => return Ok(None),
        },
    };
    match bytes.get(nul) {
        None => Ok(None),
        Some(0) => Ok(Some(nul + 1)),
        Some(_) => bail!("a STOMP frame whose body does not end with NUL after its content-length"),
    }
}

/// Reads a whole frame, as [`frame_length`] found it.
fn parse(bytes: &[u8]) -> Result<Frame> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let start = bytes
        .iter()
        .position(|&b| b != b'\n' && b != b'\r')
        .context("a STOMP frame without a command")?;
    let mut lines = bytes[start..].split(|&b| b == b'\n');
    let mut consumed = start;
    let mut next = || {
        let line = lines.next()?;
        consumed += line.len() + 1;
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    };
    let command = text(next().context("a STOMP frame without a command")?);
    let mut headers = Vec::new();
    loop {
        let line = next().context("a STOMP frame whose headers do not end")?;
        if line.is_empty() {
            break;
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .with_context(|| format!("a STOMP header line without a colon: `{}`", text(line)))?;
        headers.push((unescape(&line[..colon])?, unescape(&line[colon + 1..])?));
    }
    // The NUL that ends the frame is its last byte.
    let body = bytes[consumed..bytes.len() - 1].to_vec();
    Ok(Frame {
        command,
        headers,
        body,
    })
}

/// Undoes STOMP 1.2's header escapes (`\r`, `\n`, `\c`, `\\`).
fn unescape(raw: &[u8]) -> Result<String> {
    let raw = std::str::from_utf8(raw).context("a STOMP header that is not UTF-8")?;
    if !raw.contains('\\') {
        return Ok(raw.to_string());
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
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
            other => bail!("a STOMP header with the undefined escape `\\{other:?}`: `{raw}`"),
        });
    }
    Ok(out)
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('\r', "\\r")
        .replace('\n', "\\n")
        .replace(':', "\\c")
}

/// A frame as sent: no body, headers escaped (CONNECT's are not, as STOMP 1.2 says).
fn encode(command: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = format!("{command}\n");
    for (name, value) in headers {
        if command == "CONNECT" {
            out.push_str(&format!("{name}:{value}\n"));
        } else {
            out.push_str(&format!("{}:{}\n", escape(name), escape(value)));
        }
    }
    out.push('\n');
    let mut out = out.into_bytes();
    out.push(0);
    out
}

/// One STOMP connection, in halves, so that one task can read while another acknowledges.
struct Connection {
    reader: Reader,
    writer: Writer,
}

/// The reading half: the socket's and what was read from it but not yet taken.
struct Reader {
    stream: OwnedReadHalf,
    buffer: Vec<u8>,
    /// Where the next frame starts in `buffer`.
    at: usize,
}

struct Writer(OwnedWriteHalf);

impl Connection {
    /// Connects as guest, without heart-beats (a drain of a few seconds needs none).
    async fn open() -> Result<Connection> {
        let stream = TcpStream::connect(ADDRESS)
            .await
            .with_context(|| format!("connecting to RabbitMQ's STOMP listener at {ADDRESS}"))?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        let mut connection = Connection {
            reader: Reader {
                stream: read,
                buffer: Vec::with_capacity(1 << 16),
                at: 0,
            },
            writer: Writer(write),
        };
        connection
            .send(
                "CONNECT",
                &[
                    ("accept-version", "1.2"),
                    ("host", "/"),
                    ("login", "guest"),
                    ("passcode", "guest"),
                    ("heart-beat", "0,0"),
                ],
            )
            .await?;
        let answer = connection.next().await?;
        if answer.command != "CONNECTED" {
            bail!(
                "RabbitMQ's STOMP listener at {ADDRESS} answered CONNECT with {}: {}",
                answer.command,
                describe(&answer)
            );
        }
        Ok(connection)
    }

    async fn send(&mut self, command: &str, headers: &[(&str, &str)]) -> Result<()> {
        self.writer.send(command, headers).await
    }

    async fn next_bytes(&mut self) -> Result<&[u8]> {
        self.reader.next_bytes().await
    }

    async fn next(&mut self) -> Result<Frame> {
        self.reader.next().await
    }

    /// DISCONNECT with a receipt, so every ACK sent before has taken effect.
    async fn close(mut self) -> Result<()> {
        self.send("DISCONNECT", &[("receipt", "bye")]).await?;
        self.reader.until_receipt("bye").await
    }
}

impl Writer {
    async fn send(&mut self, command: &str, headers: &[(&str, &str)]) -> Result<()> {
        self.0
            .write_all(&encode(command, headers))
            .await
            .with_context(|| format!("sending {command} to {ADDRESS}"))
    }
}

impl Reader {
    /// The next frame's bytes; fails if none comes within [`SILENCE`] or the broker hangs
    /// up.
    async fn next_bytes(&mut self) -> Result<&[u8]> {
        loop {
            if let Some(frame) = self.arrived()? {
                return Ok(&self.buffer[frame]);
            }
            // Keep only the frame begun, then read more after it.
            self.buffer.drain(..self.at);
            self.at = 0;
            self.buffer.reserve(1 << 16);
            let read = tokio::time::timeout(SILENCE, self.stream.read_buf(&mut self.buffer))
                .await
                .with_context(|| format!("no STOMP frame from {ADDRESS} within {SILENCE:?}"))?
                .with_context(|| format!("reading from {ADDRESS}"))?;
            if read == 0 {
                bail!("RabbitMQ's STOMP listener at {ADDRESS} closed the connection");
            }
        }
    }

    /// Where the next frame is in `buffer`, taken, if all of it has arrived already.
    fn arrived(&mut self) -> Result<Option<std::ops::Range<usize>>> {
        let Some(length) = frame_length(&self.buffer[self.at..])? else {
            return Ok(None);
        };
        let start = self.at;
        self.at += length;
        Ok(Some(start..self.at))
    }

    /// The next frame if all of it has arrived already, without waiting for more.
    fn next_arrived(&mut self) -> Result<Option<Frame>> {
        self.arrived()?
            .map(|frame| parse(&self.buffer[frame]))
            .transpose()
    }

    async fn next(&mut self) -> Result<Frame> {
        parse(self.next_bytes().await?)
    }

    /// Reads until the RECEIPT `id`, failing on an ERROR.
    async fn until_receipt(&mut self, id: &str) -> Result<()> {
        loop {
            let frame = self.next().await?;
            match frame.command.as_str() {
                "RECEIPT" if frame.header("receipt-id") == Some(id) => return Ok(()),
                "ERROR" => bail!(
                    "RabbitMQ's STOMP adapter sent ERROR while waiting for receipt `{id}`: {}",
                    describe(&frame)
                ),
                _ => {}
            }
        }
    }
}

/// Whether a whole frame is a MESSAGE, read without parsing it.
fn is_message(frame: &[u8]) -> bool {
    let start = frame.iter().position(|&b| b != b'\n' && b != b'\r');
    let command = &frame[start.unwrap_or(frame.len())..];
    command.starts_with(b"MESSAGE\n") || command.starts_with(b"MESSAGE\r\n")
}

/// An ERROR (or unexpected) frame's `message` header and body, for an error message.
fn describe(frame: &Frame) -> String {
    format!(
        "{} {}",
        frame.header("message").unwrap_or(""),
        String::from_utf8_lossy(&frame.body).trim()
    )
}

/// Ceiling S: subscribes to the pre-loaded durable queue `queue` with `ack:client` and
/// `prefetch-count: prefetch`, and takes `count` messages, acknowledging the last of every
/// `ack_every` (and the very last) with one cumulative ACK. Returns the time from sending
/// SUBSCRIBE to the receipt of the last ACK, so every message is acknowledged when the
/// clock stops.
pub async fn ceiling(queue: &str, count: u64, prefetch: u32, ack_every: u64) -> Result<Duration> {
    let mut connection = Connection::open().await?;
    let clock = Instant::now();
    let destination = subscribe(&mut connection, queue, prefetch).await?;
    let mut seen = 0;
    let elapsed = loop {
        let bytes = connection
            .next_bytes()
            .await
            .with_context(|| format!("draining `{destination}` after {seen} messages"))?;
        // Most messages need no more than counting: only a batch's last one is read.
        let message = is_message(bytes);
        seen += u64::from(message);
        if message && seen % ack_every != 0 && seen != count {
            continue;
        }
        let frame = parse(bytes)?;
        match frame.command.as_str() {
            "MESSAGE" => {
                let id = frame
                    .header("ack")
                    .with_context(|| format!("a MESSAGE of `{destination}` without `ack`"))?;
                let mut ack = vec![("id", id)];
                // The last one's receipt stops the clock.
                if seen == count {
                    ack.push(("receipt", "drained"));
                }
                connection.send("ACK", &ack).await?;
            }
            "RECEIPT" if frame.header("receipt-id") == Some("drained") => break clock.elapsed(),
            "RECEIPT" => {}
            "ERROR" => bail!(
                "RabbitMQ's STOMP adapter sent ERROR while `{destination}` was drained, after \
                 {seen} messages: {}",
                describe(&frame)
            ),
            other => bail!("an unexpected {other} frame while draining `{destination}`"),
        }
    };
    if seen != count {
        bail!("`{destination}` delivered {seen} messages, expected {count}");
    }
    connection.close().await?;
    Ok(elapsed)
}

/// Subscribes to the queue `queue` as the `stomp` transport does: `ack:client` with
/// `prefetch-count: prefetch`. Returns the destination.
async fn subscribe(connection: &mut Connection, queue: &str, prefetch: u32) -> Result<String> {
    let destination = format!("/queue/{queue}");
    connection
        .send(
            "SUBSCRIBE",
            &[
                ("id", "0"),
                ("destination", &destination),
                ("ack", "client"),
                ("prefetch-count", &prefetch.to_string()),
                ("receipt", "subscribed"),
            ],
        )
        .await?;
    Ok(destination)
}

/// Ceiling SB: ceiling AB's hand-written pipeline into PostgreSQL, fed over STOMP by this
/// client. A reader takes what has arrived, up to `batch` MESSAGEs, subscribed as ceiling S
/// is, and parses them into the rows of one UNNEST upsert (`client`); a writer, at the same
/// time, writes each batch and then acknowledges it with one cumulative ACK, as Golconde
/// does. Returns the time from SUBSCRIBE to the receipt of the last ACK.
pub async fn through(
    client: &tokio_postgres::Client,
    queue: &str,
    count: u64,
    prefetch: u32,
    batch: usize,
) -> Result<Duration> {
    let upsert = crate::db::prepare_upsert(client).await?;
    let mut connection = Connection::open().await?;
    let clock = Instant::now();
    let destination = subscribe(&mut connection, queue, prefetch).await?;
    let Connection { reader, writer } = &mut connection;
    let mut seen = 0u64;
    let next = async || {
        if seen == count {
            return Ok(None);
        }
        let mut bodies = Vec::with_capacity(batch);
        let mut last = String::new();
        while bodies.len() < batch && seen < count {
            let frame = if bodies.is_empty() {
                reader.next().await?
            } else {
                match reader.next_arrived()? {
                    Some(frame) => frame,
                    None => break,
                }
            };
            match frame.command.as_str() {
                "MESSAGE" => {
                    last = frame
                        .header("ack")
                        .with_context(|| format!("a MESSAGE of `{destination}` without `ack`"))?
                        .to_owned();
                    bodies.push(frame.body);
                    seen += 1;
                }
                "RECEIPT" => {}
                "ERROR" => bail!(
                    "RabbitMQ's STOMP adapter sent ERROR while `{destination}` was drained, \
                     after {seen} messages: {}",
                    describe(&frame)
                ),
                other => bail!("an unexpected {other} frame while draining `{destination}`"),
            }
        }
        let rows = Columns::parse(bodies.iter().map(|b| &b[..]))?;
        Ok(Some((rows, (last, seen == count))))
    };
    let ack = async |(id, last): (String, bool)| {
        let mut headers = vec![("id", id.as_str())];
        // The last one's receipt stops the clock.
        if last {
            headers.push(("receipt", "drained"));
        }
        writer.send("ACK", &headers).await
    };
    crate::db::pipeline(client, &upsert, next, ack).await?;
    connection.reader.until_receipt("drained").await?;
    let elapsed = clock.elapsed();
    connection.close().await?;
    Ok(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] =
        b"MESSAGE\r\nsubscription:0\nack:T_0@@s\\c1@@7\ncontent-length:5\n\na\0b\0c\0";

    #[test]
    fn frames_are_found_whole_and_read() {
        let mut stream = b"\n\r\n".to_vec();
        stream.extend_from_slice(MESSAGE);
        stream.extend_from_slice(b"\nRECEIPT\nreceipt-id:drained\n\n\0");
        let first = frame_length(&stream).unwrap().unwrap();
        assert_eq!(first, 3 + MESSAGE.len());
        for cut in 0..first {
            assert_eq!(frame_length(&stream[..cut]).unwrap(), None, "cut at {cut}");
        }
        let message = parse(&stream[..first]).unwrap();
        assert_eq!(message.command, "MESSAGE");
        assert_eq!(message.header("ack"), Some("T_0@@s:1@@7"));
        assert_eq!(message.body, b"a\0b\0c");
        let rest = &stream[first..];
        let receipt = parse(&rest[..frame_length(rest).unwrap().unwrap()]).unwrap();
        assert_eq!(receipt.command, "RECEIPT");
        assert_eq!(receipt.header("receipt-id"), Some("drained"));
        assert!(receipt.body.is_empty());
    }

    #[test]
    fn a_frame_without_content_length_ends_at_its_nul() {
        let frame = b"ERROR\nmessage:no\n\nwhy\0MESSAGE";
        assert_eq!(frame_length(frame).unwrap(), Some(22));
        assert_eq!(describe(&parse(&frame[..22]).unwrap()), "no why");
        assert!(frame_length(b"MESSAGE\ncontent-length:1\n\nab\0").is_err());
        assert!(frame_length(b"MESSAGE\ncontent-length:x\n\na\0").is_err());
    }

    #[test]
    fn headers_are_escaped_both_ways() {
        assert_eq!(
            encode("ACK", &[("id", "a:b\\c\nd")]),
            b"ACK\nid:a\\cb\\\\c\\nd\n\n\0"
        );
        assert_eq!(unescape(b"a\\cb\\\\c\\nd\\r").unwrap(), "a:b\\c\nd\r");
        assert!(unescape(b"a\\t").is_err());
        // CONNECT's headers are sent as they are.
        assert_eq!(
            encode("CONNECT", &[("login", "a:b")]),
            b"CONNECT\nlogin:a:b\n\n\0"
        );
    }
}

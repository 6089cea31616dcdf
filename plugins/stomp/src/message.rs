//! Between STOMP frames and the host's [`Message`]: destinations, headers both ways.
//!
//! Header names are kept as the broker spells them, so a message published over AMQP and
//! consumed over STOMP (or the reverse) on RabbitMQ carries the same names
//! (`correlation-id`, `content-type`, `timestamp`, custom ones). One exception makes that
//! true for the message id: RabbitMQ refuses `message-id` on SEND (it is the broker's
//! per-delivery id on MESSAGE) and carries the AMQP `message_id` as `amqp-message-id`. So
//! the host's `message-id` is sent as `amqp-message-id`, and on delivery
//! `amqp-message-id` becomes `message-id` again, replacing the broker's own id. ActiveMQ
//! keeps `amqp-message-id` as an ordinary header, so the same mapping round-trips there.
//!
//! A MESSAGE the codec could not take whole (see [`crate::codec`]) is handed over with
//! what was kept and the [`INCOMPLETE`] header saying what was left out, so that the
//! host dead-letters it; that header is the plugin's own, never one the broker sent.

use std::collections::HashSet;

use bytes::Bytes;
use golconde_plugin_api::{Header, Message, RString, RVec};

use crate::{
    error::StompError,
    frame::{Command, Frame},
};

/// The header RabbitMQ uses for the AMQP `message_id` property.
const AMQP_MESSAGE_ID: &str = "amqp-message-id";

/// The header of a delivery that did not arrive whole (a frame over `max_frame_bytes`
/// without its body, headers past `max_headers` dropped): its value says what was left
/// out and which limit to raise. The host dead-letters such a delivery.
pub const INCOMPLETE: &str = golconde_plugin_api::TRANSPORT_ERROR_HEADER;

/// Headers of a MESSAGE that only mean something on the connection that received it
/// (RabbitMQ also echoes the sender's `receipt`); they are not passed to the host.
const CONNECTION_HEADERS: [&str; 3] = ["subscription", "ack", "receipt"];

/// Up to this many headers, repeats are found by a scan rather than a hash set.
const SCAN_HEADERS: usize = 16;

/// Headers of a host message that the plugin sets itself on SEND, or that would change
/// what SEND means (`transaction` would hold the message back until a COMMIT).
const RESERVED_ON_SEND: [&str; 8] = [
    "content-length",
    "destination",
    "receipt",
    "transaction",
    "persistent",
    "subscription",
    "ack",
    "redelivered",
];

/// The STOMP destination of a pipeline's queue: a plain name is a queue (`foo` becomes
/// `/queue/foo`, which RabbitMQ and ActiveMQ both read as the queue `foo`); a name
/// starting with `/` is already a destination (`/exchange/x/key`, `/topic/t`,
/// `/amq/queue/q`) and is used as it is.
pub fn destination(queue: &str) -> Result<String, StompError> {
    if queue.is_empty() {
        return Err(StompError::Invalid("the queue name is empty".into()));
    }
    if queue.starts_with('/') {
        Ok(queue.to_string())
    } else {
        Ok(format!("/queue/{queue}"))
    }
}

/// A MESSAGE as the consumer's connection hands it over, before it gets a delivery tag.
#[derive(Debug)]
pub struct Incoming {
    pub generation: u64,
    /// The MESSAGE's `ack` header, which ACK and NACK quote.
    pub ack_id: String,
    pub redelivered: bool,
    pub message: Message,
}

impl Incoming {
    pub fn from_frame(mut frame: Frame, generation: u64) -> Result<Incoming, StompError> {
        // Taken rather than copied: `ack` is a connection header, not passed to the host.
        let ack_id = frame
            .headers
            .iter_mut()
            .find(|(name, _)| name == "ack")
            .map(|(_, value)| std::mem::take(value))
            .ok_or_else(|| {
                StompError::Malformed(
                    "MESSAGE without an `ack` header on a client-acknowledged subscription".into(),
                )
            })?;
        // RabbitMQ says `redelivered:true`; ActiveMQ counts in `redeliveries`.
        let redelivered = frame.header("redelivered") == Some("true")
            || frame
                .header("redeliveries")
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n > 0);
        let has_app_id = frame.header(AMQP_MESSAGE_ID).is_some();
        let mut headers: Vec<Header> = Vec::with_capacity(frame.headers.len() + 1);
        // A broker's usual handful of headers is checked for repeats by looking through
        // those kept; only a frame with many (up to `max_headers`) pays for hashing.
        let mut seen: Option<HashSet<String>> = (frame.headers.len() > SCAN_HEADERS)
            .then(|| HashSet::with_capacity(frame.headers.len()));
        for (name, value) in frame.headers {
            if CONNECTION_HEADERS.contains(&name.as_str())
                || (has_app_id && name == "message-id")
                || name == INCOMPLETE
            {
                continue;
            }
            let name = if name == AMQP_MESSAGE_ID {
                "message-id".to_string()
            } else {
                name
            };
            // The first of repeated headers wins, as STOMP reads them.
            let repeated = match &mut seen {
                Some(seen) => !seen.insert(name.clone()),
                None => headers.iter().any(|kept| kept.name.as_str() == name),
            };
            if repeated {
                continue;
            }
            headers.push(Header {
                name: RString::from(name),
                value: RString::from(value),
            });
        }
        if let Some(why) = frame.incomplete {
            headers.push(Header {
                name: INCOMPLETE.into(),
                value: why.into(),
            });
        }
        Ok(Incoming {
            generation,
            ack_id,
            redelivered,
            message: Message {
                // The codec's body owns its buffer alone: this takes it without a copy.
                body: RVec::from(Vec::from(frame.body)),
                headers: RVec::from(headers),
            },
        })
    }
}

/// The SEND frame publishing `message` persistently to `destination`, without its
/// receipt; an error says why the message cannot be sent.
pub fn send_frame(destination: &str, message: &Message) -> Result<Frame, String> {
    let mut frame = Frame::new(Command::Send)
        .with_header("destination", destination)
        .with_header("persistent", "true");
    let mut seen: HashSet<&str> = HashSet::with_capacity(message.headers.len());
    for header in message.headers.iter() {
        let name = header.name.as_str();
        if name.is_empty() {
            return Err("it has a header with an empty name".into());
        }
        if RESERVED_ON_SEND.contains(&name) {
            continue;
        }
        let name = if name == "message-id" {
            AMQP_MESSAGE_ID
        } else {
            name
        };
        // The first of repeated headers wins.
        if !seen.insert(name) {
            continue;
        }
        frame
            .headers
            .push((name.to_string(), header.value.to_string()));
    }
    frame.body = Bytes::copy_from_slice(&message.body);
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_are_queues_and_paths_pass_through() {
        assert_eq!(destination("orders").unwrap(), "/queue/orders");
        assert_eq!(destination("/exchange/x/k").unwrap(), "/exchange/x/k");
        assert!(destination("").is_err());
    }

    #[test]
    fn a_message_keeps_its_headers_but_not_the_connections() {
        let frame = Frame::new(Command::Message)
            .with_header("subscription", "0")
            .with_header("destination", "/queue/q")
            .with_header("message-id", "T_0@@session@@1")
            .with_header("redelivered", "true")
            .with_header("ack", "T_0@@session@@1")
            .with_header("x-a", "1")
            .with_header("receipt", "77")
            .with_header("x-a", "2")
            .with_header("amqp-message-id", "app-1")
            .with_body(&b"{}"[..]);
        let incoming = Incoming::from_frame(frame, 3).unwrap();
        assert_eq!(incoming.ack_id, "T_0@@session@@1");
        assert!(incoming.redelivered);
        assert_eq!(incoming.generation, 3);
        let m = &incoming.message;
        assert_eq!(m.header("message-id"), Some("app-1"));
        assert_eq!(m.header("x-a"), Some("1"));
        assert_eq!(m.header("destination"), Some("/queue/q"));
        for gone in ["subscription", "ack", "receipt", "amqp-message-id"] {
            assert_eq!(m.header(gone), None, "{gone}");
        }
        assert_eq!(m.headers.iter().filter(|h| h.name == "x-a").count(), 1);
        assert_eq!(&m.body[..], b"{}");
    }

    #[test]
    fn without_an_application_id_the_brokers_id_stays() {
        let frame = Frame::new(Command::Message)
            .with_header("message-id", "ID:host-1:1")
            .with_header("ack", "a")
            .with_header("redeliveries", "0");
        let incoming = Incoming::from_frame(frame, 1).unwrap();
        assert!(!incoming.redelivered);
        assert_eq!(incoming.message.header("message-id"), Some("ID:host-1:1"));
        let frame = Frame::new(Command::Message)
            .with_header("ack", "a")
            .with_header("redeliveries", "2");
        assert!(Incoming::from_frame(frame, 1).unwrap().redelivered);
        let frame = Frame::new(Command::Message).with_header("message-id", "m");
        assert!(Incoming::from_frame(frame, 1).is_err());
    }

    #[test]
    fn an_incomplete_frame_is_marked_by_the_plugin_alone() {
        let mut frame = Frame::new(Command::Message)
            .with_header("ack", "a")
            .with_header(INCOMPLETE, "forged by a producer")
            .with_header("x-a", "1");
        let whole = Incoming::from_frame(frame.clone(), 1).unwrap().message;
        assert_eq!(whole.header(INCOMPLETE), None);
        assert_eq!(whole.header("x-a"), Some("1"));
        frame.incomplete = Some("its body was dropped".into());
        let cut = Incoming::from_frame(frame, 1).unwrap().message;
        assert_eq!(cut.header(INCOMPLETE), Some("its body was dropped"));
        assert_eq!(
            cut.headers.iter().filter(|h| h.name == INCOMPLETE).count(),
            1
        );
    }

    /// Repeated names are found by hashing: comparing each header with every earlier one
    /// took seconds for a frame like this.
    #[test]
    fn many_headers_cost_linear_time_both_ways() {
        const N: usize = 100_000;
        let mut frame = Frame::new(Command::Message).with_header("ack", "a");
        let mut message = Message::new(&b""[..]);
        for i in 0..N {
            frame = frame.with_header(format!("x-{}", i % (N / 2)), i.to_string());
            message.push_header(format!("x-{}", i % (N / 2)), i.to_string());
        }
        let started = std::time::Instant::now();
        let incoming = Incoming::from_frame(frame, 1).unwrap();
        assert_eq!(incoming.message.headers.len(), N / 2);
        assert_eq!(incoming.message.header("x-7"), Some("7"));
        let sent = send_frame("/queue/q", &message).unwrap();
        assert_eq!(sent.headers.len(), 2 + N / 2);
        eprintln!("{N} headers each way in {:?}", started.elapsed());
    }

    #[test]
    fn sending_maps_the_message_id_and_keeps_protocol_headers_to_itself() {
        let message = Message::new(&b"body"[..])
            .with_header("message-id", "m-1")
            .with_header("destination", "/queue/elsewhere")
            .with_header("content-length", "1")
            .with_header("receipt", "x")
            .with_header("persistent", "false")
            .with_header("correlation-id", "c:1")
            .with_header("correlation-id", "c-2");
        let frame = send_frame("/queue/q", &message).unwrap();
        assert_eq!(
            frame.headers,
            [
                ("destination", "/queue/q"),
                ("persistent", "true"),
                ("amqp-message-id", "m-1"),
                ("correlation-id", "c:1"),
            ]
            .map(|(n, v)| (n.to_string(), v.to_string()))
        );
        assert_eq!(&frame.body[..], b"body");
        let bad = Message::new(&b""[..]).with_header("", "v");
        assert!(send_frame("/queue/q", &bad).is_err());
    }
}

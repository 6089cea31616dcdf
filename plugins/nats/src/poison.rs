//! Stored messages whose header block the NATS client cannot read, found and handed over
//! anyway, so that one such message costs only itself.
//!
//! nats-server stores a message's header block as the producer wrote it, and async-nats
//! drops the whole connection on one it cannot parse (not UTF-8, no `NATS/1.0` line, a line
//! without `:`, a name with a space or a control character, a bad status code): delivered,
//! such a message would make the consumer reconnect, come back after `ack_wait`, and again,
//! for ever, while the pipeline waits. So after every reconnection the consumer looks, with
//! JetStream's message API (which sends headers base64-encoded, out of the parser's way),
//! at the message that was on its way when the connection dropped ([`stored_from`]); one the
//! client cannot read ([`unreadable`]) is handed over with what can be read of its headers
//! and `x-golconde-transport-error` saying why ([`salvage`]), and the host dead-letters it.
//!
//! It is settled through the reply subject JetStream would have given it, made here: the
//! subject carries the stream and consumer sequences, and the consumer sequence of the
//! lost delivery is the one after the last delivery the consumer read (one consumer pulls,
//! and every delivery takes the next one).
//!
//! May depend on: async-nats (its JetStream context, header and status types), base64,
//! serde, `golconde-plugin-api`.

use std::str::FromStr;

use async_nats::{jetstream, jetstream::response::Response, HeaderName, StatusCode};
use base64::Engine;
use golconde_plugin_api::{Header, Message, RString, RVec, TRANSPORT_ERROR_HEADER};
use serde::Deserialize;
use serde_json::json;

use crate::error::{api_error, request_failed, NatsError};

/// Why async-nats would refuse this header block, or `None` if it reads it. Follows the
/// client's parser (`connection.rs` of async-nats 0.51) step by step.
pub fn unreadable(block: &[u8]) -> Option<String> {
    let Ok(text) = std::str::from_utf8(block) else {
        return Some("the headers are not UTF-8".into());
    };
    let mut lines = text.lines().peekable();
    let Some(version) = lines.next() else {
        return Some("the headers have no version line".into());
    };
    let Some(suffix) = version.strip_prefix("NATS/1.0").map(str::trim) else {
        return Some("the headers do not start with `NATS/1.0`".into());
    };
    let status = suffix
        .split_once(' ')
        .map_or(suffix, |(status, _)| status.trim());
    if !status.is_empty() && StatusCode::from_str(status).is_err() {
        return Some(format!(
            "the status `{status}` of the header line is not a number"
        ));
    }
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        let Some((name, _)) = line.split_once(':') else {
            return Some(format!("a header line without `:` ({})", shown(line)));
        };
        if HeaderName::from_str(name).is_err() {
            return Some(format!(
                "the header name {} has characters other than printable ASCII",
                shown(name)
            ));
        }
        // Continuation lines belong to this header, whatever they hold.
        while lines
            .next_if(|l| l.starts_with(char::is_whitespace))
            .is_some()
        {}
    }
    None
}

/// At most 64 characters of `text`, quoted, for a message.
fn shown(text: &str) -> String {
    let mut short: String = text.chars().take(64).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    format!("{short:?}")
}

/// What can be read of an unreadable header block: every `name: value` line, lossily
/// decoded, except the transport-error header, which is added saying `why`.
pub fn salvage(block: &[u8], body: Vec<u8>, why: &str) -> Message {
    let text = String::from_utf8_lossy(block);
    let mut headers = RVec::new();
    for line in text.lines().skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if !name.is_empty() && name != TRANSPORT_ERROR_HEADER {
                headers.push(Header {
                    name: RString::from(name),
                    value: RString::from(value.trim()),
                });
            }
        }
    }
    headers.push(Header {
        name: RString::from(TRANSPORT_ERROR_HEADER),
        value: RString::from(format!(
            "the NATS client cannot read this message's headers ({why}), so it could not be \
             delivered as it is; it comes with the headers that could be read"
        )),
    });
    Message {
        body: RVec::from(body),
        headers,
    }
}

/// A message as JetStream's message API gives it.
pub struct Stored {
    pub seq: u64,
    pub headers: Option<Vec<u8>>,
    pub body: Vec<u8>,
}

#[derive(Deserialize)]
struct Got {
    message: Raw,
}

#[derive(Deserialize)]
struct Raw {
    seq: u64,
    #[serde(default)]
    hdrs: Option<String>,
    #[serde(default)]
    data: Option<String>,
}

/// The first message of `subject` in `stream` at or after sequence `from`, if any.
pub async fn stored_from(
    js: &jetstream::Context,
    stream: &str,
    subject: &str,
    from: u64,
) -> Result<Option<Stored>, NatsError> {
    let what = format!("reading message {from} of stream `{stream}`");
    let answer = js
        .request::<_, _, Response<Got>>(
            format!("STREAM.MSG.GET.{stream}"),
            &json!({ "seq": from, "next_by_subj": subject }),
        )
        .await
        .map_err(|e| request_failed(&what, &crate::error::describe(&e)))?;
    let raw = match answer {
        Response::Ok(got) => got.message,
        // No message there (10037).
        Response::Err { error } if error.code() == 404 => return Ok(None),
        Response::Err { error } => return Err(api_error(&what, &error)),
    };
    let decode = |text: Option<String>| {
        text.map(|t| base64::engine::general_purpose::STANDARD.decode(t))
            .transpose()
            .map_err(|e| NatsError::Unavailable(format!("{what}: not base64: {e}")))
    };
    Ok(Some(Stored {
        seq: raw.seq,
        headers: decode(raw.hdrs)?,
        body: decode(raw.data)?.unwrap_or_default(),
    }))
}

/// The reply subject JetStream gives delivery number `consumer_seq` of stream message
/// `stream_seq` by consumer `consumer` of `stream`: what its acknowledgement goes to.
pub fn reply_subject(stream: &str, consumer: &str, stream_seq: u64, consumer_seq: u64) -> String {
    format!("$JS.ACK.{stream}.{consumer}.1.{stream_seq}.{consumer_seq}.0.0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_client_cannot_read_is_recognised() {
        for good in [
            &b"NATS/1.0\r\nname: value\r\n\r\n"[..],
            b"NATS/1.0\r\nname: folded\r\n  on two lines\r\n\r\n",
            b"NATS/1.0 503\r\n\r\n",
            b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 3\r\n\r\n",
            b"NATS/1.0\r\nempty:\r\n\r\n",
            "NATS/1.0\r\nx: välue\r\n\r\n".as_bytes(),
        ] {
            assert_eq!(
                unreadable(good),
                None,
                "{:?}",
                String::from_utf8_lossy(good)
            );
        }
        for (bad, why) in [
            (&b"NATS/1.0\r\nbad name: x\r\n\r\n"[..], "printable ASCII"),
            (b"NATS/1.0\r\nno colon\r\n\r\n", "without `:`"),
            (b"NATS/1.0\r\nx: \xff\r\n\r\n", "not UTF-8"),
            (b"garbage\r\n\r\n", "`NATS/1.0`"),
            (b"NATS/1.0 abc\r\n\r\n", "not a number"),
            ("NATS/1.0\r\nnäme: x\r\n\r\n".as_bytes(), "printable ASCII"),
        ] {
            let reason = unreadable(bad).unwrap_or_else(|| panic!("{bad:?} passed"));
            assert!(reason.contains(why), "{reason}");
        }
    }

    #[test]
    fn salvage_keeps_what_can_be_read_and_says_why() {
        let message = salvage(
            b"NATS/1.0\r\nbad name: x\r\nmessage-id: m-1\r\nx-golconde-transport-error: forged\r\n\r\n",
            b"body".to_vec(),
            "the header name \"bad name\" has characters other than printable ASCII",
        );
        assert_eq!(message.body.as_slice(), b"body");
        assert_eq!(message.header("bad name"), Some("x"));
        assert_eq!(message.header("message-id"), Some("m-1"));
        let error = message.header(TRANSPORT_ERROR_HEADER).expect("marked");
        assert!(error.contains("bad name"), "{error}");
        assert_eq!(
            message
                .headers
                .iter()
                .filter(|h| h.name.as_str() == TRANSPORT_ERROR_HEADER)
                .count(),
            1,
            "the forged one is dropped"
        );
    }

    #[test]
    fn reply_subjects_are_what_jetstream_makes() {
        assert_eq!(
            reply_subject("ORDERS", "sync", 42, 97),
            "$JS.ACK.ORDERS.sync.1.42.97.0.0"
        );
    }
}

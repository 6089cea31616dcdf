//! AMQP message properties and headers, as the string headers of a [`Message`].
//!
//! Properties travel under the names RabbitMQ's STOMP adapter gives them (`message-id`,
//! `correlation-id`, `content-type`, `timestamp`, ...), so a pipeline reads the same headers
//! whichever protocol brought the message. Custom headers follow, stringified; publishing
//! maps the same names back to properties and everything else to string headers.
//!
//! Two properties are deliberately not written back: `delivery_mode` (Golconde always
//! publishes persistent messages) and `user-id`, which RabbitMQ checks against the
//! publishing user, so that a fan-out copy of a message another user sent would be refused
//! and close the channel; it goes out as an ordinary header instead.

use golconde_plugin_api::{Header, Message, RString, RVec};
use lapin::{
    types::{AMQPValue, FieldTable, LongString, ShortString},
    BasicProperties,
};

/// Persistent, in AMQP's `delivery_mode`.
const PERSISTENT: u8 = 2;

/// The headers of a delivered message: properties first, then custom headers.
pub fn headers(properties: &BasicProperties) -> RVec<Header> {
    let mut headers = RVec::new();
    let mut short = |name: &str, value: &Option<ShortString>| {
        if let Some(value) = value {
            headers.push(header(name, value.as_str().to_string()));
        }
    };
    short("message-id", properties.message_id());
    short("correlation-id", properties.correlation_id());
    short("content-type", properties.content_type());
    short("content-encoding", properties.content_encoding());
    short("reply-to", properties.reply_to());
    short("expiration", properties.expiration());
    short("type", properties.kind());
    short("app-id", properties.app_id());
    short("user-id", properties.user_id());
    if let Some(timestamp) = properties.timestamp() {
        headers.push(header("timestamp", timestamp.to_string()));
    }
    if let Some(priority) = properties.priority() {
        headers.push(header("priority", priority.to_string()));
    }
    if let Some(table) = properties.headers() {
        for (name, value) in table {
            headers.push(header(name.as_str(), text(value)));
        }
    }
    headers
}

fn header(name: &str, value: String) -> Header {
    Header {
        name: RString::from(name),
        value: RString::from(value),
    }
}

/// A header value as text: numbers in decimal, byte strings as UTF-8 (lossy), nested
/// tables and arrays as JSON.
fn text(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_string(),
        AMQPValue::FieldTable(_) | AMQPValue::FieldArray(_) => json(value).to_string(),
        AMQPValue::Void => String::new(),
        other => match json(other) {
            serde_json::Value::String(s) => s,
            v => v.to_string(),
        },
    }
}

fn json(value: &AMQPValue) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        AMQPValue::Boolean(b) => J::Bool(*b),
        AMQPValue::ShortShortInt(n) => J::from(*n),
        AMQPValue::ShortShortUInt(n) => J::from(*n),
        AMQPValue::ShortInt(n) => J::from(*n),
        AMQPValue::ShortUInt(n) => J::from(*n),
        AMQPValue::LongInt(n) => J::from(*n),
        AMQPValue::LongUInt(n) => J::from(*n),
        AMQPValue::LongLongInt(n) => J::from(*n),
        AMQPValue::Timestamp(n) => J::from(*n),
        AMQPValue::Float(x) => J::from(*x),
        AMQPValue::Double(x) => J::from(*x),
        AMQPValue::DecimalValue(d) => J::String(decimal(d.value, d.scale)),
        AMQPValue::ShortString(s) => J::String(s.as_str().to_string()),
        AMQPValue::LongString(s) => J::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ByteArray(b) => J::String(String::from_utf8_lossy(b.as_slice()).into_owned()),
        AMQPValue::FieldArray(a) => J::Array(a.as_slice().iter().map(json).collect()),
        AMQPValue::FieldTable(t) => J::Object(
            t.into_iter()
                .map(|(k, v)| (k.as_str().to_string(), json(v)))
                .collect(),
        ),
        AMQPValue::Void => J::Null,
    }
}

/// `value / 10^scale` in decimal, without going through a float.
fn decimal(value: u32, scale: u8) -> String {
    let digits = value.to_string();
    let scale = scale as usize;
    if scale == 0 {
        return digits;
    }
    let digits = format!("{digits:0>width$}", width = scale + 1);
    let (whole, fraction) = digits.split_at(digits.len() - scale);
    format!("{whole}.{fraction}")
}

/// The properties to publish `message` with: persistent, and its headers mapped back.
/// `index` and `count` place the message in its batch for error messages.
pub fn properties(
    message: &Message,
    queue: &str,
    index: usize,
    count: usize,
) -> Result<BasicProperties, crate::error::Error> {
    let bad = |header: &str, problem: String| crate::error::Error::BadHeader {
        queue: queue.to_string(),
        index,
        count,
        header: header.to_string(),
        problem,
    };
    let short = |name: &str, value: &str| {
        ShortString::try_new(value).map_err(|_| {
            bad(
                name,
                format!(
                    "is {} bytes long; AMQP allows at most 255 for this property",
                    value.len()
                ),
            )
        })
    };
    let mut properties = BasicProperties::default().with_delivery_mode(PERSISTENT);
    let mut table = FieldTable::default();
    for h in message.headers.iter() {
        let (name, value) = (h.name.as_str(), h.value.as_str());
        // The first header of a name wins, as with `Message::header`.
        let set = match name {
            "message-id" => properties.message_id().is_some(),
            "correlation-id" => properties.correlation_id().is_some(),
            "content-type" => properties.content_type().is_some(),
            "content-encoding" => properties.content_encoding().is_some(),
            "reply-to" => properties.reply_to().is_some(),
            "expiration" => properties.expiration().is_some(),
            "type" => properties.kind().is_some(),
            "app-id" => properties.app_id().is_some(),
            "timestamp" => properties.timestamp().is_some(),
            "priority" => properties.priority().is_some(),
            _ => table.contains_key(name),
        };
        if set {
            continue;
        }
        properties =
            match name {
                "message-id" => properties.with_message_id(short(name, value)?),
                "correlation-id" => properties.with_correlation_id(short(name, value)?),
                "content-type" => properties.with_content_type(short(name, value)?),
                "content-encoding" => properties.with_content_encoding(short(name, value)?),
                "reply-to" => properties.with_reply_to(short(name, value)?),
                "expiration" => properties.with_expiration(short(name, value)?),
                "type" => properties.with_type(short(name, value)?),
                "app-id" => properties.with_app_id(short(name, value)?),
                "timestamp" => properties.with_timestamp(value.parse().map_err(|_| {
                    bad(
                        name,
                        format!("is \"{value}\"; give seconds since 1970 as a whole number"),
                    )
                })?),
                "priority" => properties.with_priority(value.parse().map_err(|_| {
                    bad(name, format!("is \"{value}\"; give a number from 0 to 255"))
                })?),
                _ => {
                    let key = ShortString::try_new(name).map_err(|_| {
                        bad(
                            name,
                            format!(
                                "has a name {} bytes long; AMQP allows at most 255",
                                name.len()
                            ),
                        )
                    })?;
                    table.insert(key, AMQPValue::LongString(LongString::from(value)));
                    properties
                }
            };
    }
    if !table.inner().is_empty() {
        properties = properties.with_headers(table);
    }
    Ok(properties)
}

#[cfg(test)]
mod tests {
    use golconde_plugin_api::ErrorKind;
    use lapin::types::{DecimalValue, FieldArray};

    use super::*;

    fn pairs(headers: &RVec<Header>) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_string()))
            .collect()
    }

    #[test]
    fn properties_and_headers_round_trip() {
        let message = Message::new("x")
            .with_header("message-id", "m-1")
            .with_header("correlation-id", "c-1")
            .with_header("content-type", "application/json")
            .with_header("timestamp", "1700000000")
            .with_header("priority", "3")
            .with_header("reply-to", "replies")
            .with_header("x-trace", "abc")
            .with_header("x-trace", "ignored: the first one wins")
            .with_header("message-id", "ignored too");
        let properties = properties(&message, "q", 1, 1).unwrap();
        assert_eq!(properties.delivery_mode(), &Some(PERSISTENT));
        let back = pairs(&headers(&properties));
        let expected: Vec<(String, String)> = [
            ("message-id", "m-1"),
            ("correlation-id", "c-1"),
            ("content-type", "application/json"),
            ("reply-to", "replies"),
            ("timestamp", "1700000000"),
            ("priority", "3"),
            ("x-trace", "abc"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        assert_eq!(back, expected);
    }

    #[test]
    fn user_id_goes_out_as_a_plain_header() {
        let message = Message::new("x").with_header("user-id", "alice");
        let properties = properties(&message, "q", 1, 1).unwrap();
        assert_eq!(properties.user_id(), &None);
        assert_eq!(
            pairs(&headers(&properties)),
            vec![("user-id".to_string(), "alice".to_string())]
        );
    }

    #[test]
    fn typed_header_values_are_stringified() {
        let mut table = FieldTable::default();
        table.insert("b".into(), AMQPValue::Boolean(true));
        table.insert("i".into(), AMQPValue::LongLongInt(-7));
        table.insert(
            "d".into(),
            AMQPValue::DecimalValue(DecimalValue {
                scale: 3,
                value: 1234,
            }),
        );
        table.insert(
            "a".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![
                AMQPValue::LongUInt(1),
                AMQPValue::LongString("two".into()),
            ])),
        );
        table.insert("v".into(), AMQPValue::Void);
        let properties = BasicProperties::default().with_headers(table);
        assert_eq!(
            pairs(&headers(&properties)),
            [
                ("a", "[1,\"two\"]"),
                ("b", "true"),
                ("d", "1.234"),
                ("i", "-7"),
                ("v", "")
            ]
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect::<Vec<_>>()
        );
        assert_eq!(decimal(5, 2), "0.05");
        assert_eq!(decimal(500, 0), "500");
    }

    #[test]
    fn bad_headers_are_permanent_errors_naming_message_and_header() {
        let long = "x".repeat(256);
        let cases = [
            Message::new("x").with_header("priority", "high"),
            Message::new("x").with_header("timestamp", "yesterday"),
            Message::new("x").with_header("message-id", long.clone()),
            Message::new("x").with_header(long.clone(), "v"),
        ];
        for message in cases {
            let err: golconde_plugin_api::PluginError =
                properties(&message, "orders", 2, 5).unwrap_err().into();
            assert_eq!(err.kind, ErrorKind::Permanent);
            assert!(err.message.contains("message 2 of 5"), "{err}");
            assert!(err.message.contains("`orders`"), "{err}");
            let name = message.headers[0].name.as_str();
            assert!(err.message.contains(&format!("`{name}`")), "{err}");
        }
    }
}

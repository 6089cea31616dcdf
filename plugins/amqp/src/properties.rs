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
//!
//! Key decision, and why: **publishing never fails because of what a header says.** A
//! refused publish would stop the pipeline on a fan-out copy or a dead letter, for good, so
//! [`properties`] is infallible and lossless where AMQP allows:
//! - a header that names a property but whose value does not fit it exactly (`priority:
//!   urgent`, `timestamp: 0012`, a `message-id` over 255 bytes, an `expiration` RabbitMQ
//!   would refuse) travels as a plain header of the same name;
//! - a header that cannot be a table entry at all (a name over 255 bytes; `CC` and `BCC`,
//!   which RabbitMQ reads as routing lists and refuses as text; [`PACKED`] and [`DROPPED`],
//!   Golconde's own) travels inside [`PACKED`], a JSON object that [`headers`] unpacks again;
//! - headers too large for one frame with the rest of the message's properties (the broker
//!   closes the connection on a larger frame) are left out, largest first, and named in
//!   [`DROPPED`]. The publisher logs a warning for both of the last two.
//!
//! Headers arriving from the broker were screened on the way in (`src/screen.rs`): nothing
//! nests deeper than [`MAX_HEADER_DEPTH`]; [`headers`] checks that bound again for values
//! that did not come off the wire, so it never recurses deeper.

use std::collections::{BTreeMap, HashSet};

use golconde_plugin_api::{Header, Message, RString, RVec};
use lapin::{
    types::{AMQPValue, FieldTable, LongString, ShortString},
    BasicProperties,
};

/// Persistent, in AMQP's `delivery_mode`.
const PERSISTENT: u8 = 2;

/// The deepest a header value may nest (a table or array counts one level); a deeper one is
/// delivered as [`TOO_DEEP`]. lapin's parser takes a few KiB of stack per level on a thread
/// of its own whose stack size cannot be set, so this keeps far below where it overflows.
pub const MAX_HEADER_DEPTH: usize = 64;

/// What a header nested deeper than [`MAX_HEADER_DEPTH`] is delivered as.
pub const TOO_DEEP: &str = "(removed by Golconde: nested more than 64 levels deep)";

/// The header that carries, as a JSON object, the headers that cannot be AMQP table entries.
pub const PACKED: &str = "x-golconde-packed-headers";

/// The header that names the headers left out because they did not fit in a frame.
pub const DROPPED: &str = "x-golconde-dropped-headers";

/// Bytes of a content header frame besides its property list: frame type, channel, size and
/// end, then class, weight, body size and property flags.
pub const HEADER_FRAME_OVERHEAD: usize = 8 + 14;

/// Room kept for the [`DROPPED`] entry: key, type, length and at most this much text.
const DROPPED_TEXT: usize = 512;
const DROPPED_ROOM: usize = 1 + DROPPED.len() + 1 + 4 + DROPPED_TEXT;

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
            if name.as_str() == PACKED {
                if let Some(packed) = unpack(value) {
                    headers.extend(packed.into_iter().map(|(n, v)| header(&n, v)));
                    continue;
                }
            }
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

/// The headers inside a [`PACKED`] value; `None` if it is not what [`properties`] writes
/// (then it is shown as it is).
fn unpack(value: &AMQPValue) -> Option<BTreeMap<String, String>> {
    match value {
        // serde_json stops at 128 levels of nesting: no deep recursion here either.
        AMQPValue::LongString(s) => serde_json::from_slice(s.as_bytes()).ok(),
        _ => None,
    }
}

/// A header value as text: numbers in decimal, byte strings as UTF-8 (lossy), nested
/// tables and arrays as JSON, or [`TOO_DEEP`].
fn text(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_string(),
        AMQPValue::FieldTable(_) | AMQPValue::FieldArray(_) => match json(value, 0) {
            Some(json) => json.to_string(),
            None => TOO_DEEP.to_string(),
        },
        AMQPValue::Void => String::new(),
        other => match json(other, 0) {
            Some(serde_json::Value::String(s)) => s,
            Some(v) => v.to_string(),
            None => TOO_DEEP.to_string(),
        },
    }
}

/// `value` as JSON, or `None` if it nests deeper than [`MAX_HEADER_DEPTH`] below `depth`:
/// the recursion is bounded by construction.
fn json(value: &AMQPValue, depth: usize) -> Option<serde_json::Value> {
    use serde_json::Value as J;
    let nested = matches!(value, AMQPValue::FieldArray(_) | AMQPValue::FieldTable(_));
    if nested && depth >= MAX_HEADER_DEPTH {
        return None;
    }
    Some(match value {
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
        AMQPValue::FieldArray(a) => J::Array(
            a.as_slice()
                .iter()
                .map(|v| json(v, depth + 1))
                .collect::<Option<_>>()?,
        ),
        AMQPValue::FieldTable(t) => J::Object(
            t.into_iter()
                .map(|(k, v)| Some((k.as_str().to_string(), json(v, depth + 1)?)))
                .collect::<Option<_>>()?,
        ),
        AMQPValue::Void => J::Null,
    })
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

/// What a message is published with, and what had to give for it.
pub struct Outgoing {
    pub properties: BasicProperties,
    /// Headers carried inside [`PACKED`], and why.
    pub packed: Vec<(String, &'static str)>,
    /// Headers left out because they did not fit in a frame, as [`DROPPED`] says.
    pub dropped: Vec<String>,
}

/// A custom header on its way into the table.
struct Entry<'a> {
    name: &'a str,
    value: &'a str,
    /// Why it cannot be a table entry of its own, if it cannot.
    packed: Option<&'static str>,
    /// What it adds to the property list, in bytes.
    size: usize,
}

impl<'a> Entry<'a> {
    fn new(name: &'a str, value: &'a str) -> Entry<'a> {
        let packed = if name.len() > 255 {
            Some("its name is longer than the 255 bytes AMQP allows")
        } else if name == "CC" || name == "BCC" {
            Some("RabbitMQ reads it as a list of queues to route to and refuses it as text")
        } else if name == PACKED || name == DROPPED {
            Some("Golconde uses that name itself")
        } else {
            None
        };
        let size = match packed {
            // `"name":"value",` in the JSON object.
            Some(_) => json_len(name) + json_len(value) + 2,
            // Key, type, length, bytes.
            None => 1 + name.len() + 1 + 4 + value.len(),
        };
        Entry {
            name,
            value,
            packed,
            size,
        }
    }
}

fn json_len(s: &str) -> usize {
    serde_json::Value::from(s).to_string().len()
}

/// The properties to publish `message` with: persistent, its headers mapped back. `room` is
/// what a content header frame leaves for the property list (the connection's frame_max
/// less [`HEADER_FRAME_OVERHEAD`]).
pub fn properties(message: &Message, room: usize) -> Outgoing {
    let mut properties = BasicProperties::default().with_delivery_mode(PERSISTENT);
    let mut seen = HashSet::new();
    let mut entries = Vec::new();
    for h in message.headers.iter() {
        let (name, value) = (h.name.as_str(), h.value.as_str());
        // The first header of a name wins, as with `Message::header`.
        if !seen.insert(name) {
            continue;
        }
        if !property(&mut properties, name, value) {
            entries.push(Entry::new(name, value));
        }
    }

    let pack_overhead = 1 + PACKED.len() + 1 + 4 + 2;
    let fixed = fixed_size(&properties) + 4;
    let needed = |entries: &[Entry]| {
        let sum: usize = entries.iter().map(|e| e.size).sum();
        let packs = entries.iter().any(|e| e.packed.is_some());
        sum + if packs { pack_overhead } else { 0 }
    };
    let mut dropped = Vec::new();
    if fixed + needed(&entries) > room {
        let available = room.saturating_sub(fixed + DROPPED_ROOM + pack_overhead);
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(entries[i].size));
        let mut total: usize = entries.iter().map(|e| e.size).sum();
        let mut gone = vec![false; entries.len()];
        for i in order {
            if total <= available {
                break;
            }
            total -= entries[i].size;
            gone[i] = true;
        }
        let mut kept = Vec::with_capacity(entries.len());
        for (entry, gone) in entries.into_iter().zip(gone) {
            if gone {
                dropped.push(entry.name.to_string());
            } else {
                kept.push(entry);
            }
        }
        entries = kept;
    }

    let mut table = FieldTable::default();
    let mut pack = serde_json::Map::new();
    let mut packed = Vec::new();
    for entry in &entries {
        match entry.packed {
            Some(why) => {
                pack.insert(entry.name.to_string(), entry.value.into());
                packed.push((entry.name.to_string(), why));
            }
            None => {
                let key =
                    ShortString::try_new(entry.name).expect("names over 255 bytes are packed");
                table.insert(key, AMQPValue::LongString(LongString::from(entry.value)));
            }
        }
    }
    if !pack.is_empty() {
        let json = serde_json::Value::Object(pack).to_string();
        table.insert(
            ShortString::from(PACKED),
            AMQPValue::LongString(json.into()),
        );
    }
    if !dropped.is_empty() {
        let text = dropped_text(&dropped, room + HEADER_FRAME_OVERHEAD);
        table.insert(
            ShortString::from(DROPPED),
            AMQPValue::LongString(text.into()),
        );
    }
    if !table.inner().is_empty() {
        properties = properties.with_headers(table);
    }
    Outgoing {
        properties,
        packed,
        dropped,
    }
}

/// Sets property `name` to `value` if it is a property and `value` fits it exactly (so that
/// it reads back the same); says whether it did.
fn property(properties: &mut BasicProperties, name: &str, value: &str) -> bool {
    type Set = fn(BasicProperties, ShortString) -> BasicProperties;
    let short: Option<Set> = match name {
        "message-id" => Some(BasicProperties::with_message_id),
        "correlation-id" => Some(BasicProperties::with_correlation_id),
        "content-type" => Some(BasicProperties::with_content_type),
        "content-encoding" => Some(BasicProperties::with_content_encoding),
        "reply-to" => Some(BasicProperties::with_reply_to),
        "type" => Some(BasicProperties::with_type),
        "app-id" => Some(BasicProperties::with_app_id),
        // RabbitMQ refuses the whole message for an expiration that is not a number of
        // milliseconds.
        "expiration" if is_expiration(value) => Some(BasicProperties::with_expiration),
        _ => None,
    };
    let taken = std::mem::take(properties);
    let (set, done) = match (name, short) {
        (_, Some(set)) => match ShortString::try_new(value) {
            Ok(value) => (set(taken, value), true),
            Err(_) => (taken, false),
        },
        ("timestamp", None) => match exact::<u64>(value) {
            Some(t) => (taken.with_timestamp(t), true),
            None => (taken, false),
        },
        ("priority", None) => match exact::<u8>(value) {
            Some(p) => (taken.with_priority(p), true),
            None => (taken, false),
        },
        _ => (taken, false),
    };
    *properties = set;
    done
}

/// `value` as a number, if it is one written the way the number prints.
fn exact<T: std::str::FromStr + ToString>(value: &str) -> Option<T> {
    value.parse().ok().filter(|n: &T| n.to_string() == value)
}

/// Digits only, at most 2^32 - 1: what every RabbitMQ version takes as an expiration.
fn is_expiration(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 10
        && value.bytes().all(|b| b.is_ascii_digit())
        && value
            .parse::<u64>()
            .is_ok_and(|ms| ms <= u64::from(u32::MAX))
}

/// Bytes of the property list without the headers table.
fn fixed_size(p: &BasicProperties) -> usize {
    let short = |s: &Option<ShortString>| s.as_ref().map_or(0, |s| 1 + s.as_str().len());
    short(p.content_type())
        + short(p.content_encoding())
        + short(p.correlation_id())
        + short(p.reply_to())
        + short(p.expiration())
        + short(p.message_id())
        + short(p.kind())
        + short(p.user_id())
        + short(p.app_id())
        + short(p.cluster_id())
        + p.delivery_mode().map_or(0, |_| 1)
        + p.priority().map_or(0, |_| 1)
        + p.timestamp().map_or(0, |_| 8)
}

/// The text of [`DROPPED`]: how many, and their names as far as [`DROPPED_TEXT`] allows.
fn dropped_text(names: &[String], frame_max: usize) -> String {
    let mut text = format!(
        "{} header(s) did not fit in one frame ({frame_max} bytes, the connection's \
         frame_max) with the rest of the message and were left out:",
        names.len()
    );
    for (i, name) in names.iter().enumerate() {
        let sep = if i == 0 { " " } else { ", " };
        let name = shown(name);
        // Room for the separator and an ellipsis after this name.
        if text.len() + 2 * sep.len() + name.len() + '…'.len_utf8() > DROPPED_TEXT {
            text.push_str(sep);
            text.push('…');
            break;
        }
        text.push_str(sep);
        text.push_str(&name);
    }
    text
}

/// `name` as a log line may show it: at most 64 characters.
pub fn shown(name: &str) -> String {
    match name.char_indices().nth(64) {
        Some((cut, _)) => format!("{}… ({} bytes)", &name[..cut], name.len()),
        None => name.to_string(),
    }
}

/// Says so when a message's headers were cut down on the way (`src/screen.rs`, or a
/// publisher's frame limit): the message itself is delivered as usual.
pub fn warn_screened(headers: &[Header], tag: u64) {
    let message = || match headers.iter().find(|h| h.name.as_str() == "message-id") {
        Some(id) => format!("message `{}` (delivery tag {tag})", shown(&id.value)),
        None => format!("the message with delivery tag {tag}"),
    };
    for h in headers {
        if h.value.as_str() == TOO_DEEP {
            tracing::warn!(
                "{}: header `{}` nests more than {} levels deep; it is delivered as \"{}\"",
                message(),
                shown(&h.name),
                MAX_HEADER_DEPTH,
                TOO_DEEP
            );
        } else if h.name.as_str() == DROPPED {
            tracing::warn!(
                "{}: headers were left out on the way: {}",
                message(),
                h.value
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use lapin::types::{DecimalValue, FieldArray};

    use super::*;

    /// Room for the property list in RabbitMQ's default frame.
    const ROOM: usize = 131_072 - HEADER_FRAME_OVERHEAD;

    fn pairs(headers: &RVec<Header>) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_string()))
            .collect()
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
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
            .with_header("expiration", "60000")
            .with_header("x-trace", "abc")
            .with_header("x-trace", "ignored: the first one wins")
            .with_header("message-id", "ignored too");
        let out = properties(&message, ROOM);
        assert_eq!(out.properties.delivery_mode(), &Some(PERSISTENT));
        assert_eq!(out.properties.priority(), &Some(3));
        assert!(out.packed.is_empty() && out.dropped.is_empty());
        assert_eq!(
            pairs(&headers(&out.properties)),
            owned(&[
                ("message-id", "m-1"),
                ("correlation-id", "c-1"),
                ("content-type", "application/json"),
                ("reply-to", "replies"),
                ("expiration", "60000"),
                ("timestamp", "1700000000"),
                ("priority", "3"),
                ("x-trace", "abc"),
            ])
        );
    }

    #[test]
    fn user_id_goes_out_as_a_plain_header() {
        let message = Message::new("x").with_header("user-id", "alice");
        let properties = properties(&message, ROOM).properties;
        assert_eq!(properties.user_id(), &None);
        assert_eq!(pairs(&headers(&properties)), owned(&[("user-id", "alice")]));
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
            owned(&[
                ("a", "[1,\"two\"]"),
                ("b", "true"),
                ("d", "1.234"),
                ("i", "-7"),
                ("v", "")
            ])
        );
        assert_eq!(decimal(5, 2), "0.05");
        assert_eq!(decimal(500, 0), "500");
    }

    /// Once `properties` refused these with a permanent error, and the host stopped the
    /// pipeline on a fan-out copy or a dead letter carrying one. Now each travels as a plain
    /// header (or, when it cannot be a table entry, packed) and reads back unchanged.
    #[test]
    fn headers_that_fit_no_property_travel_as_plain_headers() {
        let long = "x".repeat(256);
        let cases = [
            ("priority", "high".to_string()),
            ("priority", "300".to_string()),
            ("priority", "03".to_string()),
            ("timestamp", "yesterday".to_string()),
            ("timestamp", "0012".to_string()),
            ("timestamp", "-1".to_string()),
            ("expiration", "soon".to_string()),
            ("expiration", "-1".to_string()),
            ("expiration", " 5".to_string()),
            ("expiration", "99999999999".to_string()),
            ("message-id", long.clone()),
            ("correlation-id", long.clone()),
            ("content-type", long.clone()),
            ("content-encoding", long.clone()),
            ("reply-to", long.clone()),
            ("type", long.clone()),
            ("app-id", long.clone()),
            (long.as_str(), "v".to_string()),
            ("CC", "queue-a".to_string()),
            ("BCC", "queue-b".to_string()),
            (PACKED, "{\"a\":\"b\"}".to_string()),
            (DROPPED, "anything".to_string()),
        ];
        for (name, value) in cases {
            let message = Message::new("x").with_header(name, value.clone());
            let out = properties(&message, ROOM);
            assert!(out.dropped.is_empty());
            let back = pairs(&headers(&out.properties));
            assert_eq!(back, vec![(name.to_string(), value.clone())], "{name}");
            let table = out.properties.headers().as_ref().expect("a header table");
            let keys: Vec<&str> = table.inner().keys().map(|k| k.as_str()).collect();
            let expected = if out.packed.is_empty() { name } else { PACKED };
            assert_eq!(keys, [expected], "{name} travels plain or packed");
        }
    }

    #[test]
    fn a_foreign_packed_header_that_is_not_ours_is_shown_as_it_is() {
        for value in ["not json", "{\"a\": 1}", "[\"a\"]"] {
            let mut table = FieldTable::default();
            table.insert(PACKED.into(), AMQPValue::LongString(value.into()));
            let properties = BasicProperties::default().with_headers(table);
            assert_eq!(pairs(&headers(&properties)), owned(&[(PACKED, value)]));
        }
    }

    #[test]
    fn headers_too_large_for_a_frame_are_left_out_largest_first_and_named() {
        let room = 4096 - HEADER_FRAME_OVERHEAD;
        let message = Message::new("x")
            .with_header("message-id", "m-1")
            .with_header("x-small", "s")
            .with_header("x-big", "b".repeat(3000))
            .with_header("x-bigger", "b".repeat(5000))
            .with_header("x-other", "o".repeat(500))
            .with_header("y".repeat(300), "packed and kept");
        let out = properties(&message, room);
        assert_eq!(out.dropped, ["x-big", "x-bigger"]);
        let back = headers(&out.properties);
        let find = |name: &str| {
            back.iter()
                .find(|h| h.name.as_str() == name)
                .map(|h| h.value.to_string())
        };
        assert_eq!(find("message-id").as_deref(), Some("m-1"));
        assert_eq!(find("x-small").as_deref(), Some("s"));
        assert_eq!(find("x-other").map(|v| v.len()), Some(500));
        assert_eq!(find(&"y".repeat(300)).as_deref(), Some("packed and kept"));
        assert_eq!(find("x-big"), None);
        let note = find(DROPPED).expect("the dropped headers are named");
        assert!(note.contains("2 header(s)"), "{note}");
        assert!(note.contains("x-big, x-bigger"), "{note}");
        assert!(note.contains("4096"), "{note}");

        // What lapin sends fits in the frame.
        let mut encoded = vec![0u8; 2 * room];
        let encode = lapin::protocol::basic::gen_properties(&out.properties);
        let written = encode(std::io::Cursor::new(&mut encoded[..]).into())
            .unwrap()
            .position as usize;
        // The list's flags are in `written`; the frame's own bytes are not.
        let frame = 8 + 12 + written;
        assert!(frame <= 4096, "a header frame of {frame} bytes");
    }

    #[test]
    fn many_dropped_headers_are_named_within_bounds() {
        let mut message = Message::new("x");
        for i in 0..500 {
            message.push_header(format!("x-header-{i}-{}", "n".repeat(300)), "v".repeat(100));
        }
        let out = properties(&message, 4096 - HEADER_FRAME_OVERHEAD);
        assert!(!out.dropped.is_empty());
        let back = headers(&out.properties);
        let note = back.iter().find(|h| h.name.as_str() == DROPPED).unwrap();
        assert!(note.value.len() <= DROPPED_TEXT, "{}", note.value.len());
        assert!(note.value.ends_with('…'), "{}", note.value);
    }

    /// Nested arrays `depth` levels deep, built without recursion.
    fn nested(depth: usize) -> AMQPValue {
        let mut value = AMQPValue::FieldArray(FieldArray::default());
        for _ in 1..depth {
            value = AMQPValue::FieldArray(FieldArray::from(vec![value]));
        }
        value
    }

    /// Drops `value` on a thread with a stack big enough for its recursive `Drop` (lapin's
    /// types have no other), so that only the code under test runs on a test's stack.
    fn drop_deep<T: Send + 'static>(value: T) {
        std::thread::Builder::new()
            .stack_size(1 << 30)
            .spawn(move || drop(value))
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn values_nested_too_deep_become_a_marker_without_deep_recursion() {
        let mut table = FieldTable::default();
        table.insert("deep".into(), nested(100_000));
        table.insert("limit".into(), nested(MAX_HEADER_DEPTH));
        table.insert("over".into(), nested(MAX_HEADER_DEPTH + 1));
        let mut inner = FieldTable::default();
        inner.insert("k".into(), nested(MAX_HEADER_DEPTH));
        table.insert("table".into(), AMQPValue::FieldTable(inner));
        table.insert("z".into(), AMQPValue::LongString("after".into()));
        let properties = BasicProperties::default().with_headers(table);
        // On the test's own stack: nothing recurses more than MAX_HEADER_DEPTH levels.
        let back = pairs(&headers(&properties));
        let limit = format!(
            "{}{}",
            "[".repeat(MAX_HEADER_DEPTH),
            "]".repeat(MAX_HEADER_DEPTH)
        );
        assert_eq!(
            back,
            owned(&[
                ("deep", TOO_DEEP),
                ("limit", &limit),
                ("over", TOO_DEEP),
                ("table", TOO_DEEP),
                ("z", "after"),
            ])
        );
        assert!(TOO_DEEP.contains(&MAX_HEADER_DEPTH.to_string()));
        drop_deep(properties);
    }
}

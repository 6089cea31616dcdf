//! Golconde messages as NATS messages and back: headers, the packed headers NATS cannot
//! carry, and the `Nats-Msg-Id` that lets JetStream drop a replayed fan-out copy.
//!
//! NATS headers are lines of `Name: value`, which async-nats keeps in a hash map. So:
//! - **Order.** Delivered headers come sorted by name (byte order), the values of a repeated
//!   name in the order they were sent: a hash map keeps no order, and a fixed one is better
//!   than a random one. Packed headers (below) follow, in the order they were sent.
//! - **What cannot be a NATS header travels packed**, as JSON `[[name, value], ...]` in the
//!   header `x-golconde-packed-headers`, and is unpacked on delivery: a name that is empty or
//!   has characters other than printable ASCII or has `:`; a value with a line break or with
//!   whitespace at either end (which NATS trims); a name starting with `Nats-` (JetStream
//!   reads those as instructions: an upstream producer's `Nats-Expected-Last-Sequence` must
//!   not make our fan-out copy fail, nor its `Nats-Msg-Id` make JetStream drop it); and a
//!   header named `x-golconde-packed-headers` itself. Publishing never fails because of a
//!   header.
//! - **`x-golconde-transport-error` is the plugin's own**: one that arrives is dropped.
//!
//! May depend on: async-nats' header types, serde_json (the packed headers), sha2.

use async_nats::{HeaderMap, HeaderName, HeaderValue};
use golconde_plugin_api::{
    Header, Message, RString, RVec, CHANGE_ID_HEADER, TRANSPORT_ERROR_HEADER,
};
use sha2::{Digest, Sha256};

/// The header carrying, as JSON `[[name, value], ...]`, the headers NATS cannot carry.
pub const PACKED: &str = "x-golconde-packed-headers";

/// JetStream's deduplication header.
pub const MSG_ID: &str = "Nats-Msg-Id";

/// Whether `name` can travel as a NATS header name as it is.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        && !name
            .get(..5)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case("nats-"))
        && name != PACKED
}

/// Whether `value` comes back from a NATS header exactly as it was sent.
fn plain_value(value: &str) -> bool {
    !value.contains(['\r', '\n'])
        && !value.starts_with(char::is_whitespace)
        && !value.ends_with(char::is_whitespace)
}

/// The NATS headers for `message`, and how many bytes they take on the wire (for the
/// `max_payload` check); `None` when there are none.
pub fn headers_of(message: &Message) -> Option<(HeaderMap, usize)> {
    let change_id = message.header(CHANGE_ID_HEADER);
    if message.headers.is_empty() && change_id.is_none() {
        return None;
    }
    let mut map = HeaderMap::new();
    // "NATS/1.0\r\n" and the blank line that ends the headers.
    let mut size = 12;
    let mut packed: Vec<(&str, &str)> = Vec::new();
    for header in message.headers.iter() {
        let (name, value) = (header.name.as_str(), header.value.as_str());
        if !(plain_name(name) && plain_value(value)) {
            packed.push((name, value));
            continue;
        }
        // Both were just checked: these conversions cannot fail.
        match (HeaderName::try_from(name), value.parse::<HeaderValue>()) {
            (Ok(n), Ok(v)) => {
                map.append(n, v);
                size += name.len() + value.len() + 4;
            }
            _ => packed.push((name, value)),
        }
    }
    if !packed.is_empty() {
        let json = serde_json::to_string(&packed).unwrap_or_default();
        size += PACKED.len() + json.len() + 4;
        if let Ok(value) = json.parse::<HeaderValue>() {
            map.append(PACKED, value);
        }
    }
    if let Some(id) = change_id.and_then(|id| msg_id(id, &message.body)) {
        size += MSG_ID.len() + id.len() + 4;
        if let Ok(value) = id.parse::<HeaderValue>() {
            map.insert(MSG_ID, value);
        }
    }
    Some((map, size))
}

/// The `Nats-Msg-Id` of a message whose change has id `id`: the id and the first 32 hex
/// digits of the SHA-256 of the body. The id alone would have JetStream drop, silently, a
/// different change that reuses an id within the duplicate window (the databases apply such
/// a change, with a warning); with the digest only a true replay (same id, same body) is
/// dropped. `None` for an id that cannot be a header value.
pub fn msg_id(id: &str, body: &[u8]) -> Option<String> {
    if !plain_value(id) || id.is_empty() {
        return None;
    }
    let digest = Sha256::digest(body);
    let mut text = String::with_capacity(id.len() + 33);
    text.push_str(id);
    text.push(':');
    for byte in &digest[..16] {
        text.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        text.push(char::from_digit(u32::from(byte & 0xf), 16).unwrap_or('0'));
    }
    Some(text)
}

/// The headers of a delivered message, as the module documentation says.
pub fn delivered_headers(map: Option<&HeaderMap>) -> RVec<Header> {
    let Some(map) = map else {
        return RVec::new();
    };
    let mut names: Vec<(&str, &Vec<HeaderValue>)> = map
        .iter()
        .map(|(name, values)| (<HeaderName as AsRef<str>>::as_ref(name), values))
        .collect();
    names.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut headers = RVec::with_capacity(names.len());
    let mut packed: Vec<HeaderValue> = Vec::new();
    for (name, values) in names {
        if name == PACKED {
            packed.extend(values.iter().cloned());
            continue;
        }
        if name == TRANSPORT_ERROR_HEADER {
            continue;
        }
        for value in values {
            headers.push(header(name, value.as_str()));
        }
    }
    for value in packed {
        match serde_json::from_str::<Vec<(String, String)>>(value.as_str()) {
            Ok(pairs) => {
                for (name, value) in pairs {
                    if name != TRANSPORT_ERROR_HEADER {
                        headers.push(Header {
                            name: RString::from(name),
                            value: RString::from(value),
                        });
                    }
                }
            }
            // Not ours: shown as it came.
            Err(_) => headers.push(header(PACKED, value.as_str())),
        }
    }
    headers
}

fn header(name: &str, value: &str) -> Header {
    Header {
        name: RString::from(name),
        value: RString::from(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(message: &Message) -> Vec<(String, String)> {
        let map = headers_of(message).map(|(map, _)| map);
        delivered_headers(map.as_ref())
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_string()))
            .collect()
    }

    #[test]
    fn plain_headers_come_back_sorted_by_name() {
        let message = Message::new(b"x".to_vec())
            .with_header("message-id", "m-1")
            .with_header("content-type", "application/json")
            .with_header("x-repeated", "first")
            .with_header("correlation-id", "c")
            .with_header("x-repeated", "second");
        assert_eq!(
            round_trip(&message),
            [
                ("content-type", "application/json"),
                ("correlation-id", "c"),
                ("message-id", "m-1"),
                ("x-repeated", "first"),
                ("x-repeated", "second"),
            ]
            .map(|(n, v)| (n.to_string(), v.to_string()))
        );
    }

    #[test]
    fn what_nats_cannot_carry_travels_packed() {
        let odd = [
            ("with space", "v"),
            ("colon:name", "v"),
            ("", "empty name"),
            ("ünïcode", "v"),
            ("x-line", "a\r\nb"),
            ("x-padded", "  spaces  "),
            ("Nats-Msg-Id", "upstream-id"),
            ("nats-expected-last-sequence", "7"),
            (PACKED, "a header of that name"),
        ];
        let mut message = Message::new(Vec::new()).with_header("plain", "ünï value");
        for (name, value) in odd {
            message.push_header(name, value);
        }
        let (map, _) = headers_of(&message).expect("headers");
        // Nothing JetStream would read as an instruction goes out as a header.
        assert!(map.get("Nats-Msg-Id").is_none());
        assert!(map.get("nats-expected-last-sequence").is_none());
        let back = round_trip(&message);
        let mut expected = vec![("plain".to_string(), "ünï value".to_string())];
        expected.extend(odd.map(|(n, v)| (n.to_string(), v.to_string())));
        assert_eq!(back, expected);
    }

    #[test]
    fn the_transport_error_header_is_the_plugins_own() {
        let message = Message::new(Vec::new())
            .with_header(TRANSPORT_ERROR_HEADER, "forged")
            .with_header("a b", "packed")
            .with_header("kept", "yes");
        let mut packed = message.clone();
        packed.push_header(TRANSPORT_ERROR_HEADER, "a\nforged too");
        for m in [message, packed] {
            let back = round_trip(&m);
            assert!(
                back.iter().all(|(n, _)| n != TRANSPORT_ERROR_HEADER),
                "{back:?}"
            );
            assert_eq!(back.len(), 2, "{back:?}");
        }
    }

    #[test]
    fn a_packed_header_that_is_not_ours_is_shown_as_it_came() {
        let mut map = HeaderMap::new();
        map.insert(PACKED, "not json");
        let back = delivered_headers(Some(&map));
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].value.as_str(), "not json");
    }

    #[test]
    fn msg_id_is_the_change_id_and_a_digest_of_the_body() {
        let id = msg_id("change-7", b"body").expect("an id");
        // The first 16 bytes of SHA-256("body"), in hex.
        assert_eq!(id, "change-7:230d8358dc8e8890b4c58deeb62912ee");
        assert_ne!(msg_id("change-7", b"other body"), Some(id.clone()));
        assert_eq!(msg_id("change-7", b"body"), Some(id));
        assert_eq!(msg_id("a\nb", b"body"), None);
        assert_eq!(msg_id("", b"body"), None);

        let message = Message::new(b"body".to_vec()).with_header(CHANGE_ID_HEADER, "change-7");
        let (map, _) = headers_of(&message).expect("headers");
        assert_eq!(
            map.get(MSG_ID).map(|v| v.as_str()),
            Some("change-7:230d8358dc8e8890b4c58deeb62912ee")
        );
        assert!(headers_of(&Message::new(b"body".to_vec())).is_none());
        let (map, _) = headers_of(&Message::new(Vec::new()).with_header("a", "b")).unwrap();
        assert!(map.get(MSG_ID).is_none());
    }

    #[test]
    fn the_size_counts_what_goes_on_the_wire() {
        let message = Message::new(Vec::new()).with_header("ab", "cd");
        let (_, size) = headers_of(&message).unwrap();
        assert_eq!(size, "NATS/1.0\r\nab: cd\r\n\r\n".len());
    }
}

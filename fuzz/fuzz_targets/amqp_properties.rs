//! Headers of any names and values (any length, any Unicode) mapped to AMQP properties as
//! the `amqp` plugin publishes them, encoded and parsed back as lapin does on the wire, and
//! read as a consumer reads them. Never a panic; the header frame always fits the
//! connection's frame_max; and every header (the first of each name) comes back with its
//! value, except those left out for room, which are named in `x-golconde-dropped-headers`.

#![no_main]

use std::collections::HashSet;

use golconde_amqp::fuzzing::{publish_and_read, RoundTrip};
use libfuzzer_sys::{
    arbitrary::{self, Arbitrary, Unstructured},
    fuzz_target,
};

/// Names that mean something to the mapping, so that the fuzzer does not have to guess them.
const NAMES: &[&str] = &[
    "message-id",
    "correlation-id",
    "content-type",
    "content-encoding",
    "reply-to",
    "expiration",
    "type",
    "app-id",
    "user-id",
    "timestamp",
    "priority",
    "CC",
    "BCC",
    "x-golconde-packed-headers",
    "x-golconde-dropped-headers",
];

fn text(u: &mut Unstructured<'_>) -> arbitrary::Result<String> {
    Ok(match u.int_in_range(0u8..=5)? {
        0 => NAMES[u.choose_index(NAMES.len())?].to_string(),
        // Long, to cross the 255-byte and frame limits.
        1 => {
            let unit = String::arbitrary(u)?;
            unit.repeat(u.int_in_range(1usize..=300)?)
        }
        2 => u.int_in_range(0u64..=u64::MAX)?.to_string(),
        _ => String::arbitrary(u)?,
    })
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(count) = u.int_in_range(0usize..=40) else {
        return;
    };
    let mut headers = Vec::new();
    for _ in 0..count {
        let (Ok(name), Ok(value)) = (text(&mut u), text(&mut u)) else {
            break;
        };
        headers.push((name, value));
    }
    // A frame of AMQP's smallest frame_max up to RabbitMQ's default, less the header
    // frame's own bytes.
    let frame_max = u.int_in_range(4096usize..=131_072).unwrap_or(131_072);
    let room = frame_max - 22;
    let RoundTrip {
        headers: back,
        dropped,
        encoded,
    } = publish_and_read(&headers, room);
    // Frame type, channel, size and end; class, weight and body size; then the property
    // list, flags included.
    let frame = 8 + 12 + encoded;
    assert!(
        frame <= frame_max,
        "a header frame of {frame} bytes for {frame_max}"
    );

    let mut seen = HashSet::new();
    let mut expected = 0;
    for (name, value) in &headers {
        if !seen.insert(name.as_str()) {
            continue;
        }
        if dropped.contains(name) {
            assert!(
                !back.iter().any(|(n, _)| n == name) || name == "x-golconde-dropped-headers",
                "{name} was dropped yet came back"
            );
            continue;
        }
        expected += 1;
        assert!(
            back.contains(&(name.clone(), value.clone())),
            "{name:?} = {value:?} did not come back: {back:?}"
        );
    }
    let note = usize::from(!dropped.is_empty());
    assert_eq!(back.len(), expected + note, "{back:?}");
});

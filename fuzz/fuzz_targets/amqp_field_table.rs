//! Bytes from the broker as the `amqp` plugin reads them:
//! - as a field table parsed by amq-protocol (on a big stack: its parser recurses) and read
//!   as a delivered message's headers: never a panic;
//! - as the property list of a content header frame, screened for a connection of some
//!   frame_max and then parsed by lapin's parser on this thread's ordinary stack: never a
//!   panic nor a stack overflow, a rebuilt frame always parses and fits, and reading its
//!   headers never panics.

#![no_main]

use golconde_amqp::fuzzing::{read_table, screen_and_read};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((control, rest)) = data.split_first_chunk::<3>() else {
        return;
    };
    let _ = read_table(rest);

    // A table as the headers property, with or without the properties around it.
    let mut with_length = (rest.len() as u32).to_be_bytes().to_vec();
    with_length.extend_from_slice(rest);
    let flags = u16::from_be_bytes([control[0], control[1]]);
    let frame_max = 4096 + usize::from(control[2]) * 512;
    let _ = screen_and_read(1 << 13, &with_length, frame_max);
    let _ = screen_and_read(flags, rest, frame_max);
});

//! `golconde send`: publishes JSON change messages, one per line, through a configured
//! transport, the job of the first Golconde's client classes.
//!
//! Lines go out in chunks, each chunk confirmed by the broker before the next, so memory
//! stays flat on a file of any size and "sent" always means "confirmed". Every message gets
//! a fresh `message-id`. A line that is not JSON is reported with its number and skipped.

use std::io::BufRead;

use abi_stable::std_types::{RSlice, RStr};
use golconde_plugin_api::{abi::TransportBox, Message};

/// Messages per confirmed chunk.
const CHUNK: usize = 500;

/// What a run of `send` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sent {
    pub confirmed: u64,
    /// Line numbers and reasons of the lines that were not sent.
    pub rejected: Vec<(u64, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("reading {source_name} at line {line}: {error}")]
    Read {
        source_name: String,
        line: u64,
        error: std::io::Error,
    },
    #[error(
        "publishing to queue `{queue}` failed after {confirmed} confirmed messages \
         (lines up to {last_confirmed_line}); {error}"
    )]
    Publish {
        queue: String,
        confirmed: u64,
        last_confirmed_line: u64,
        error: golconde_plugin_api::PluginError,
    },
}

/// Publishes every JSON line of `input` to `queue`.
pub fn send(
    transport: &TransportBox,
    queue: &str,
    input: impl BufRead,
    source_name: &str,
) -> Result<Sent, SendError> {
    let mut sent = Sent::default();
    let mut chunk: Vec<Message> = Vec::with_capacity(CHUNK);
    let mut last_line = 0;
    let mut last_confirmed_line = 0;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut flush = |chunk: &mut Vec<Message>, sent: &mut Sent, upto: u64| {
        if chunk.is_empty() {
            return Ok(());
        }
        transport
            .publish(RStr::from_str(queue), RSlice::from_slice(chunk))
            .into_result()
            .map_err(|error| SendError::Publish {
                queue: queue.to_string(),
                confirmed: sent.confirmed,
                last_confirmed_line,
                error,
            })?;
        sent.confirmed += chunk.len() as u64;
        last_confirmed_line = upto;
        chunk.clear();
        Ok(())
    };
    for (index, line) in input.lines().enumerate() {
        let number = index as u64 + 1;
        let line = line.map_err(|error| SendError::Read {
            source_name: source_name.to_string(),
            line: number,
            error,
        })?;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(text) {
            sent.rejected.push((number, format!("not JSON: {e}")));
            continue;
        }
        chunk.push(
            Message::new(text.as_bytes().to_vec())
                .with_header("message-id", format!("golconde-send-{run}-{number}"))
                .with_header("content-type", "application/json"),
        );
        last_line = number;
        if chunk.len() == CHUNK {
            flush(&mut chunk, &mut sent, last_line)?;
        }
    }
    flush(&mut chunk, &mut sent, last_line)?;
    Ok(sent)
}

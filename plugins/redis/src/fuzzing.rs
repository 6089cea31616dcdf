//! Entry points for the fuzz target `fuzz/fuzz_targets/redis_reply.rs`, so that it needs
//! no tokio of its own. Not part of the plugin's interface.
//!
//! [`Replayer::replay`] plays the server: the bytes it is given are everything Redis
//! sends, written into an in-memory pipe a few bytes at a time (so that every read
//! path of [`crate::resp`] is taken: a line or a string split across reads, as well as
//! one already buffered), and a [`Conn`] on the other end reads them as a consumer
//! does. It runs on a current-thread runtime, so the reads, the writes and every
//! allocation happen on the caller's thread; reads that have not ended after
//! [`HANG`] are a hang, and a panic.
//!
//! May depend on: tokio, [`crate::resp`], [`crate::error`].

use std::time::Duration;

use tokio::{
    io::{duplex, AsyncWriteExt},
    runtime::{Builder, Runtime},
    time::timeout,
};

use crate::{
    error::Error,
    resp::{Batch, Conn, Limits, Reply, Stream},
};

/// How long reading a few kilobytes from memory may take before it counts as a hang.
pub const HANG: Duration = Duration::from_secs(10);

/// A read a consumer makes on its connection.
#[derive(Clone, Copy, Debug)]
pub enum Read {
    /// The reply to `XREADGROUP` ([`Conn::read_group_reply`]).
    Group,
    /// The reply to `XAUTOCLAIM` ([`Conn::auto_claim_reply`]).
    AutoClaim,
    /// Any other reply, with small bounds ([`Conn::reply`]).
    Reply,
}

/// What one read gave.
pub enum Outcome {
    Batch(Batch),
    Reply(Reply),
}

/// Reads replies from bytes; see the module documentation.
pub struct Replayer {
    runtime: Runtime,
}

impl Replayer {
    pub fn new() -> Replayer {
        Replayer {
            runtime: Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a current-thread runtime"),
        }
    }

    /// Sends `bytes` as the server, at most `chunk` of them at a time, then closes the
    /// connection; reads with `limits` as `reads` says (in turn, from the first again
    /// after the last) on one connection until it is lost ([`Error::is_lost`]), as a
    /// consumer drops its connection then: an error reply leaves it in step, and the
    /// reads go on. The last outcome is the error that lost it, if only because the
    /// bytes ran out. Panics if that takes longer than [`HANG`].
    pub fn replay(
        &self,
        bytes: &[u8],
        chunk: usize,
        reads: &[Read],
        limits: Limits,
    ) -> Vec<Result<Outcome, Error>> {
        assert!(!reads.is_empty(), "no read to make");
        let (client, mut server) = duplex(chunk.max(1));
        let consumer = async move {
            let mut conn = Conn::over(Stream::Memory(client));
            let mut outcomes = Vec::new();
            for read in reads.iter().cycle() {
                let outcome = match read {
                    Read::Group => conn.read_group_reply(limits).await.map(Outcome::Batch),
                    Read::AutoClaim => conn.auto_claim_reply(limits).await.map(Outcome::Batch),
                    Read::Reply => conn.reply().await.map(Outcome::Reply),
                };
                let lost = outcome.as_ref().is_err_and(Error::is_lost);
                outcomes.push(outcome);
                if lost {
                    break;
                }
            }
            // Dropping the connection here, not after the server is done: a server
            // still writing learns that nobody reads any more, and stops.
            outcomes
        };
        let server = async move {
            // Fails once the consumer has stopped reading: what it did not read is lost,
            // as on a connection the consumer drops.
            let _ = server.write_all(bytes).await;
        };
        let both = async { tokio::join!(consumer, server) };
        match self.runtime.block_on(async { timeout(HANG, both).await }) {
            Ok((outcomes, ())) => outcomes,
            Err(_) => panic!("reading {} bytes did not end within {HANG:?}", bytes.len()),
        }
    }
}

impl Default for Replayer {
    fn default() -> Replayer {
        Replayer::new()
    }
}

//! `memory-queue`: queues in memory with acknowledgements and redelivery, with a `flaw` to
//! switch on one broken rule at a time.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use serde::Deserialize;

use super::{failures, reach};
use crate::{
    testing::{conformance, library},
    ConsumeOptions, Consumer, Delivery, Host, Message, Plugin, PluginError, Transport,
};

/// Queue → ready messages, each with whether it was delivered before.
static QUEUES: Mutex<BTreeMap<String, VecDeque<(Message, bool)>>> = Mutex::new(BTreeMap::new());

fn queues() -> MutexGuard<'static, BTreeMap<String, VecDeque<(Message, bool)>>> {
    QUEUES.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// What the instance is for; only there to make the section a required one.
    #[allow(dead_code)]
    name: String,
    #[serde(default)]
    flaw: String,
    /// A broker to reach before anything else (never one that answers).
    #[serde(default)]
    address: Option<String>,
}

pub struct MemoryQueue {
    flaw: String,
    address: Option<String>,
}

impl Plugin for MemoryQueue {
    const NAME: &'static str = "memory-queue";
    const VERSION: &'static str = "1.0.0";
    const DESCRIPTION: &'static str = "queues in memory";
    type Config = QueueConfig;

    fn new(config: QueueConfig, _host: &Host) -> Result<Self, PluginError> {
        Ok(MemoryQueue {
            flaw: config.flaw,
            address: config.address,
        })
    }
}

impl MemoryQueue {
    fn reach(&self) -> Result<(), PluginError> {
        self.address.as_deref().map_or(Ok(()), reach)
    }
}

impl Transport for MemoryQueue {
    type Consumer = MemoryConsumer;

    fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<MemoryConsumer, PluginError> {
        self.reach()?;
        if options.prefetch == 0 && self.flaw != "prefetch_zero" {
            return Err(PluginError::config("a prefetch of 0 is refused"));
        }
        Ok(MemoryConsumer {
            queue: queue.to_string(),
            prefetch: options.prefetch.max(1) as usize,
            flaw: self.flaw.clone(),
            next: AtomicU64::new(1),
            unacked: Mutex::new(Vec::new()),
        })
    }

    fn publish(&self, queue: &str, messages: &[Message]) -> Result<(), PluginError> {
        self.reach()?;
        let mut queues = queues();
        let ready = queues.entry(queue.to_string()).or_default();
        ready.extend(messages.iter().map(|m| (m.clone(), false)));
        Ok(())
    }

    fn ping(&self) -> Result<(), PluginError> {
        self.reach()
    }
}

pub struct MemoryConsumer {
    queue: String,
    prefetch: usize,
    flaw: String,
    next: AtomicU64,
    unacked: Mutex<Vec<(u64, Message)>>,
}

impl MemoryConsumer {
    fn unacked(&self) -> MutexGuard<'_, Vec<(u64, Message)>> {
        self.unacked.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Consumer for MemoryConsumer {
    fn receive(&self, max: usize, timeout: Duration) -> Result<Vec<Delivery>, PluginError> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut got = Vec::new();
            {
                let mut queues = queues();
                let ready = queues.entry(self.queue.clone()).or_default();
                let mut unacked = self.unacked();
                let room = self.prefetch.saturating_sub(unacked.len()).min(max);
                for (message, redelivered) in ready.drain(..room.min(ready.len())) {
                    let tag = self.next.fetch_add(1, Ordering::Relaxed);
                    unacked.push((tag, message.clone()));
                    got.push(Delivery {
                        tag,
                        redelivered: redelivered && self.flaw != "no_redelivered",
                        message,
                    });
                }
            }
            let now = Instant::now();
            if !got.is_empty() || self.flaw == "early" || now >= deadline {
                return Ok(got);
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(5)));
        }
    }

    fn ack(&self, tag: u64, multiple: bool) -> Result<(), PluginError> {
        let cumulative = multiple && self.flaw != "ack_one";
        self.unacked()
            .retain(|(t, _)| if cumulative { *t > tag } else { *t != tag });
        Ok(())
    }

    fn nack(&self, tag: u64, multiple: bool, _requeue: bool) -> Result<(), PluginError> {
        self.ack(tag, multiple)
    }

    fn close(&self) -> Result<(), PluginError> {
        let unacked = std::mem::take(&mut *self.unacked());
        let mut queues = queues();
        let ready = queues.entry(self.queue.clone()).or_default();
        for (_, message) in unacked.into_iter().rev() {
            ready.push_front((message, true));
        }
        Ok(())
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// The checks that failed for `flaw`, after checking that the suite deleted its queues.
fn run(prefix: &str, flaw: &str) -> Vec<String> {
    let failed = failures(|| {
        conformance::transport::<MemoryQueue>(conformance::TransportSuite {
            config: serde_json::json!({"name": "test", "flaw": flaw}).to_string(),
            queue_prefix: prefix.into(),
            config_at: Some(Box::new(|host, port| {
                serde_json::json!({"name": "test", "address": format!("{host}:{port}")}).to_string()
            })),
            delete_queue: Some(Box::new(|queue| {
                queues().remove(queue);
            })),
            library: Some(library!(crate::testing::conformance::tests)),
            ..Default::default()
        })
    });
    let left: Vec<String> = queues()
        .keys()
        .filter(|q| q.starts_with(prefix))
        .cloned()
        .collect();
    assert!(left.is_empty(), "the suite left queues behind: {left:?}");
    failed
}

#[test]
fn a_transport_that_keeps_the_contract_passes_and_leaves_no_queue() {
    assert_eq!(run("kept", ""), Vec::<String>::new());
}

#[test]
fn an_ack_that_is_not_cumulative_is_reported() {
    assert_eq!(
        run("one", "ack_one"),
        ["a cumulative ack of the third acknowledges the first three, and only them"]
    );
}

#[test]
fn redeliveries_not_flagged_are_reported() {
    assert_eq!(
        run("flag", "no_redelivered"),
        [
            "a consumer closed without acknowledging gives its messages back, in order, \
             flagged redelivered"
        ]
    );
}

#[test]
fn a_prefetch_of_zero_accepted_is_reported() {
    assert_eq!(
        run("zero", "prefetch_zero"),
        ["a consumer with a prefetch of 0 is refused with a config error"]
    );
}

#[test]
fn a_receive_that_does_not_wait_is_reported() {
    assert_eq!(
        run("early", "early"),
        ["`receive` on an empty queue waits for its timeout, and returns nothing"]
    );
}

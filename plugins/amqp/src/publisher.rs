//! Publishing with publisher confirms: `publish` returns once the broker confirmed every
//! message of the batch.
//!
//! Publishing has its own connection (`<connection_name> publisher`), opened on first use
//! and shared by every caller, apart from the consumers' connections: RabbitMQ throttles a
//! publishing connection under memory pressure, and that must not stall acknowledgements.
//! When it is lost, the next batch connects to the next broker of `url` that answers.
//!
//! Key decision, and why: **a batch is pipelined.** Every message's frames are queued
//! before any confirmation is awaited, so a batch costs one round trip to the broker (and
//! one disk sync there), not one per message. Messages are published `mandatory`, so a
//! message for a queue that vanished comes back as unroutable (an error) instead of being
//! confirmed and silently dropped.

use std::{collections::HashSet, sync::Arc};

use futures_lite::future::poll_once;
use golconde_plugin_api::Message;
use lapin::{
    options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions},
    types::{FieldTable, ShortString},
    BasicProperties, Channel, Confirmation, Connection,
};

use crate::{
    broker::{self, queue_name, Connector, Engine},
    error::{classify, Error},
    properties,
};

/// The transport's publishing side.
#[derive(Default)]
pub struct Publisher {
    slot: tokio::sync::Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    outlet: Option<Arc<Outlet>>,
    /// Where the next round of connecting starts in the list of brokers.
    next: usize,
}

/// A publishing connection and channel, with confirms on.
struct Outlet {
    connection: Connection,
    channel: Channel,
    /// The broker it is connected to, as it may be shown.
    endpoint: String,
    /// Queues declared (or checked) on this connection.
    declared: std::sync::Mutex<HashSet<String>>,
}

impl Publisher {
    pub fn publish(&self, engine: &Engine, queue: &str, messages: &[Message]) -> Result<(), Error> {
        if messages.is_empty() {
            return Ok(());
        }
        let name = queue_name(queue)?;
        let count = messages.len();
        let connector = engine.connector()?;
        engine.block_on(async {
            let outlet = self.outlet(&connector).await?;
            // What a content header frame leaves for the properties on this connection; lapin
            // never lets the negotiated frame_max fall below AMQP's minimum of 4096.
            let room = (outlet.connection.configuration().frame_max() as usize)
                .saturating_sub(properties::HEADER_FRAME_OVERHEAD);
            let properties = messages
                .iter()
                .enumerate()
                .map(|(i, message)| outgoing(message, room, queue, i + 1, count))
                .collect();
            let limit = connector.settings.publish_timeout;
            let publishing = outlet.publish(&connector, &name, messages, properties);
            let result = match tokio::time::timeout(limit, publishing).await {
                Ok(result) => result,
                Err(_) => Err(Error::Timeout {
                    action: format!("publishing {count} messages to queue `{queue}`"),
                    endpoint: outlet.endpoint.clone(),
                    ms: limit.as_millis(),
                    hint: ", or raise `publish_timeout_ms`",
                }),
            };
            match &result {
                // The channel is fine; the broker only refused these messages.
                Ok(()) | Err(Error::Nacked { .. }) => {}
                Err(Error::Unroutable { .. }) => {
                    // Declare it again next time (which recreates it in durable mode).
                    lock(&outlet.declared).remove(queue);
                }
                Err(_) => self.discard(&outlet, &connector).await,
            }
            result
        })?
    }

    /// Messages ready on `queue` (delivered to no consumer yet), by a passive declare on a
    /// channel of its own: a declare of a queue that does not exist closes the channel it
    /// is made on, which must not be the publishing one. `None` for a queue that does not
    /// exist (yet) or that this user may not see.
    pub fn ready(&self, engine: &Engine, queue: &str) -> Result<Option<u64>, Error> {
        let name = queue_name(queue)?;
        let connector = engine.connector()?;
        engine.block_on(async {
            let outlet = self.outlet(&connector).await?;
            let asking = async {
                let channel = outlet.connection.create_channel().await?;
                let options = QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                };
                let declared = channel
                    .queue_declare(name, options, FieldTable::default())
                    .await;
                if channel.status().connected() {
                    let _ = channel.close(200, "lag read".into()).await;
                }
                declared
            };
            let limit = connector.settings.connect_timeout;
            match tokio::time::timeout(limit, asking).await {
                Ok(Ok(declared)) => Ok(Some(u64::from(declared.message_count()))),
                Ok(Err(_)) => Ok(None),
                Err(_) => Err(Error::Timeout {
                    action: format!("counting the messages of queue `{queue}`"),
                    endpoint: outlet.endpoint.clone(),
                    ms: limit.as_millis(),
                    hint: "",
                }),
            }
        })?
    }

    /// The open outlet, or a new one.
    async fn outlet(&self, connector: &Connector) -> Result<Arc<Outlet>, Error> {
        let mut slot = self.slot.lock().await;
        if let Some(outlet) = slot.outlet.as_ref() {
            if outlet.connection.status().connected() && outlet.channel.status().connected() {
                return Ok(outlet.clone());
            }
            // Lost since the last batch (broker restart, heartbeat timeout).
            let dead = slot.outlet.take().expect("checked above");
            broker::close(
                &dead.connection,
                connector.settings.connect_timeout,
                "replaced",
            )
            .await;
        }
        let connected = connector.connect("publisher", &mut slot.next, None).await?;
        let (connection, endpoint) = (connected.connection, connected.endpoint);
        let channel = async {
            let channel = connector
                .step(
                    &endpoint,
                    "opening a channel",
                    "",
                    connection.create_channel(),
                )
                .await?;
            connector
                .step(
                    &endpoint,
                    "enabling publisher confirms",
                    "",
                    channel.confirm_select(ConfirmSelectOptions::default()),
                )
                .await?;
            Ok::<_, Error>(channel)
        }
        .await;
        let channel = match channel {
            Ok(channel) => channel,
            Err(e) => {
                broker::close(&connection, connector.settings.connect_timeout, "giving up").await;
                return Err(e);
            }
        };
        let outlet = Arc::new(Outlet {
            connection,
            channel,
            endpoint,
            declared: Default::default(),
        });
        slot.outlet = Some(outlet.clone());
        Ok(outlet)
    }

    /// Forgets `outlet` after a failure that may have broken its channel; the next batch
    /// opens a new one.
    async fn discard(&self, outlet: &Arc<Outlet>, connector: &Connector) {
        let mut slot = self.slot.lock().await;
        if slot
            .outlet
            .as_ref()
            .is_some_and(|open| Arc::ptr_eq(open, outlet))
        {
            slot.outlet.take();
        }
        drop(slot);
        broker::close(
            &outlet.connection,
            connector.settings.connect_timeout,
            "failed",
        )
        .await;
    }

    /// Closes the publishing connection, if there is one.
    pub async fn close(&self, connector: &Connector) {
        if let Some(outlet) = self.slot.lock().await.outlet.take() {
            broker::close(
                &outlet.connection,
                connector.settings.connect_timeout,
                "shutdown",
            )
            .await;
        }
    }
}

/// The properties of message `index` of `count` for `queue`, with a warning for each header
/// that could not travel as itself.
fn outgoing(
    message: &Message,
    room: usize,
    queue: &str,
    index: usize,
    count: usize,
) -> BasicProperties {
    let out = properties::properties(message, room);
    for (name, why) in &out.packed {
        tracing::warn!(
            "message {index} of {count} for queue `{queue}`: header `{}` cannot be an AMQP \
             header of its own ({why}); it travels inside `{}`, which Golconde unpacks again \
             when it consumes the message",
            properties::shown(name),
            properties::PACKED
        );
    }
    if !out.dropped.is_empty() {
        let names: Vec<String> = out.dropped.iter().map(|n| properties::shown(n)).collect();
        tracing::warn!(
            "message {index} of {count} for queue `{queue}`: headers `{}` do not fit in one \
             frame ({} bytes, the broker's frame_max) with the rest of its properties; they \
             are left out and named in `{}`",
            names.join("`, `"),
            room + properties::HEADER_FRAME_OVERHEAD,
            properties::DROPPED
        );
    }
    out.properties
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Outlet {
    async fn publish(
        &self,
        connector: &Connector,
        queue: &ShortString,
        messages: &[Message],
        properties: Vec<BasicProperties>,
    ) -> Result<(), Error> {
        let name = queue.as_str();
        let endpoint = &self.endpoint;
        if !lock(&self.declared).contains(name) {
            connector.declare(endpoint, &self.channel, queue).await?;
            lock(&self.declared).insert(name.to_string());
        }
        let count = messages.len();
        let options = BasicPublishOptions {
            mandatory: true,
            immediate: false,
        };
        let failed = |e: lapin::Error| {
            classify(
                &format!("publishing {count} messages to queue `{queue}`"),
                name,
                endpoint,
                &e,
            )
        };

        // The first poll of `basic_publish` queues the message's frames, so polling each
        // once, in order, sends the whole batch in order before anything is awaited.
        let mut writes = Vec::with_capacity(count);
        for (message, properties) in messages.iter().zip(properties) {
            let mut write = Box::pin(self.channel.basic_publish(
                ShortString::default(),
                queue.clone(),
                options,
                &message.body,
                properties,
            ));
            let done = poll_once(&mut write).await;
            writes.push((write, done));
        }
        let mut confirms = Vec::with_capacity(count);
        for (write, done) in writes {
            let written = match done {
                Some(written) => written,
                None => write.await,
            };
            confirms.push(written.map_err(failed)?);
        }
        for (index, confirm) in confirms.into_iter().enumerate() {
            match confirm.await.map_err(failed)? {
                Confirmation::Ack(None) => {}
                Confirmation::Ack(Some(returned)) => {
                    return Err(Error::Unroutable {
                        queue: name.to_string(),
                        endpoint: endpoint.clone(),
                        index: index + 1,
                        count,
                        reason: format!("{} {}", returned.reply_code, returned.reply_text),
                    })
                }
                Confirmation::Nack(_) => {
                    return Err(Error::Nacked {
                        queue: name.to_string(),
                        endpoint: endpoint.clone(),
                        index: index + 1,
                        count,
                    })
                }
                Confirmation::NotRequested => {
                    return Err(Error::Lost {
                        action: format!("publishing to queue `{queue}`"),
                        endpoint: endpoint.clone(),
                        reason: "the channel has publisher confirms off".into(),
                    })
                }
            }
        }
        Ok(())
    }
}

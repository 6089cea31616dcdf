//! Publishing with confirmation: every SEND carries a `receipt`, and a batch is published
//! when every RECEIPT has come back.
//!
//! A batch is sent whole before any receipt is awaited, so its cost is one round trip, not
//! one per message. RabbitMQ sends the RECEIPT of a SEND only once the message is
//! confirmed (persisted to a durable queue), which makes it a publisher confirm. One
//! connection serves every publish of the transport, one batch at a time; it is opened
//! on first use and replaced after any failure, since a connection that failed mid-batch
//! is in no known state. With several brokers the replacement is tried on the broker after
//! the one that failed first, each broker once per publish; the host's retry backoff is
//! the pause between those rounds.

use tokio::sync::Mutex;

use crate::{
    config::Settings,
    connection::{open_any, Connection},
    error::StompError,
    frame::Frame,
};

#[derive(Default)]
pub struct Publisher {
    slot: Mutex<Slot>,
}

#[derive(Default)]
struct Slot {
    connection: Option<Connection>,
    /// The position in `settings.brokers` the next connection attempt starts at.
    next_broker: usize,
}

impl Publisher {
    pub async fn publish(&self, settings: &Settings, frames: Vec<Frame>) -> Result<(), StompError> {
        let mut slot = self.slot.lock().await;
        if slot.connection.as_ref().is_some_and(Connection::is_lost) {
            slot.connection = None;
        }
        let connection = match slot.connection.take() {
            Some(connection) => connection,
            None => {
                let (connection, at) = open_any(settings, slot.next_broker, None).await?;
                slot.next_broker = (at + 1) % settings.brokers.len();
                connection
            }
        };
        let result = async {
            let mut answers = Vec::with_capacity(frames.len());
            for frame in frames {
                answers.push(connection.request(frame)?);
            }
            let deadline = connection.receipt_deadline();
            for answer in answers {
                connection
                    .await_receipt(answer, deadline, "waiting for the receipt of SEND")
                    .await?;
            }
            Ok(())
        }
        .await;
        if result.is_ok() {
            slot.connection = Some(connection);
        }
        result
    }

    /// Closes the connection politely, if there is one.
    pub async fn close(&self) -> Result<(), StompError> {
        match self.slot.lock().await.connection.take() {
            Some(connection) if !connection.is_lost() => connection.disconnect().await,
            _ => Ok(()),
        }
    }
}

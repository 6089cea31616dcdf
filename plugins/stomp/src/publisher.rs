//! Publishing with confirmation: every SEND carries a `receipt`, and a batch is published
//! when every RECEIPT has come back.
//!
//! A batch is sent whole before any receipt is awaited, so its cost is one round trip, not
//! one per message. RabbitMQ sends the RECEIPT of a SEND only once the message is
//! confirmed (persisted to a durable queue), which makes it a publisher confirm. One
//! connection serves every publish of the transport, one batch at a time; it is opened
//! on first use and replaced after any failure, since a connection that failed mid-batch
//! is in no known state.

use tokio::sync::Mutex;

use crate::{config::Settings, connection::Connection, error::StompError, frame::Frame};

#[derive(Default)]
pub struct Publisher {
    connection: Mutex<Option<Connection>>,
}

impl Publisher {
    pub async fn publish(&self, settings: &Settings, frames: Vec<Frame>) -> Result<(), StompError> {
        let mut slot = self.connection.lock().await;
        if slot.as_ref().is_some_and(Connection::is_lost) {
            *slot = None;
        }
        let connection = match slot.take() {
            Some(connection) => connection,
            None => Connection::open(settings, None).await?,
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
            *slot = Some(connection);
        }
        result
    }

    /// Closes the connection politely, if there is one.
    pub async fn close(&self) -> Result<(), StompError> {
        match self.connection.lock().await.take() {
            Some(connection) if !connection.is_lost() => connection.disconnect().await,
            _ => Ok(()),
        }
    }
}

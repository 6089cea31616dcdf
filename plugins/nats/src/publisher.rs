//! Publishing with JetStream's publish acknowledgement as the confirmation.
//!
//! A batch is pipelined: every message is sent, then every acknowledgement awaited (in
//! windows of 1024, so that a huge batch does not hold every acknowledgement future
//! at once), all within one `request_timeout_ms`. A missing acknowledgement fails the whole
//! batch as transient and the host publishes it again; an acknowledgement saying
//! `duplicate` (JetStream dropped a replay by its `Nats-Msg-Id`) is a success.
//!
//! No stream captures a subject until one is made: the first publish to such a subject is
//! answered "no responders", and then, with `declare = "create"`, the stream is made and
//! the batch sent again (a fan-out target must take the first copy); with `"passive"` it is
//! a configuration error naming the subject.
//!
//! The publishing connection is opened on first use and shared by every publish of the
//! transport; async-nats re-establishes it when lost.
//!
//! May depend on: async-nats, tokio, [`crate::jetstream`], [`crate::message`].

use std::{collections::VecDeque, time::Duration};

use async_nats::{
    jetstream::{
        self,
        context::{PublishAckFuture, PublishErrorKind},
        message::PublishMessage,
        ErrorCode,
    },
    Client, HeaderMap,
};
use bytes::Bytes;
use golconde_plugin_api::Message;

use crate::{
    config::Settings,
    connection::{connect, jetstream},
    error::{api_error, describe, NatsError},
    jetstream::{check_subject, consumer_info, ensure_stream, find_stream},
    message::headers_of,
};

/// The most acknowledgements awaited at once.
const WINDOW: usize = 1024;

/// The publishing connection, opened on first use.
#[derive(Default)]
pub struct Publisher {
    link: tokio::sync::Mutex<Option<(Client, jetstream::Context)>>,
}

enum Failure {
    /// No stream captures the subject.
    NoStream,
    Other(NatsError),
}

impl From<NatsError> for Failure {
    fn from(e: NatsError) -> Failure {
        Failure::Other(e)
    }
}

impl Publisher {
    async fn link(
        &self,
        settings: &Settings,
        instance: &str,
    ) -> Result<(Client, jetstream::Context), NatsError> {
        let mut link = self.link.lock().await;
        if let Some((client, js)) = link.as_ref() {
            return Ok((client.clone(), js.clone()));
        }
        let client = connect(settings, instance, "publisher", None).await?;
        let js = jetstream(client.clone(), settings);
        *link = Some((client.clone(), js.clone()));
        Ok((client, js))
    }

    /// Messages on subject `queue` not yet delivered to consumer `consumer`, asked on the
    /// publishing connection; `None` when no stream captures the subject or the consumer
    /// does not exist yet.
    pub async fn pending(
        &self,
        settings: &Settings,
        instance: &str,
        queue: &str,
        consumer: &str,
    ) -> Result<Option<u64>, NatsError> {
        let (_, js) = self.link(settings, instance).await?;
        let Some(stream) = find_stream(&js, queue).await? else {
            return Ok(None);
        };
        Ok(consumer_info(&js, &stream, consumer)
            .await?
            .map(|state| state.num_pending))
    }

    /// Publishes `messages` to subject `queue` and returns once JetStream stored each.
    pub async fn publish(
        &self,
        settings: &Settings,
        instance: &str,
        queue: &str,
        messages: &[Message],
    ) -> Result<(), NatsError> {
        check_subject(queue)?;
        let (client, js) = self.link(settings, instance).await?;
        let max_payload = client.server_info().max_payload;
        let mut headers = Vec::with_capacity(messages.len());
        for (index, message) in messages.iter().enumerate() {
            let prepared = headers_of(message);
            let header_bytes = prepared.as_ref().map_or(0, |(_, size)| *size);
            let size = message.body.len() + header_bytes;
            if max_payload > 0 && size > max_payload {
                return Err(NatsError::Refused(format!(
                    "message {index} of the batch is {size} bytes ({} of body, {header_bytes} of \
                     headers), more than the server's `max_payload` ({max_payload} bytes): raise \
                     `max_payload` in nats-server's configuration, or send smaller messages",
                    message.body.len()
                )));
            }
            headers.push(prepared.map(|(map, _)| map));
        }
        let deadline = tokio::time::Instant::now() + settings.request_timeout;
        match send_all(&js, queue, messages, headers, deadline).await {
            Ok(()) => return Ok(()),
            Err(Failure::Other(e)) => return Err(e),
            Err(Failure::NoStream) => {}
        }
        ensure_stream(&js, settings, queue).await?;
        let headers = messages
            .iter()
            .map(|m| headers_of(m).map(|(map, _)| map))
            .collect();
        let deadline = tokio::time::Instant::now() + settings.request_timeout;
        match send_all(&js, queue, messages, headers, deadline).await {
            Ok(()) => Ok(()),
            Err(Failure::Other(e)) => Err(e),
            Err(Failure::NoStream) => Err(NatsError::Unavailable(format!(
                "a stream for `{queue}` was made, but JetStream still answers that none \
                 captures it"
            ))),
        }
    }

    /// Drops the publishing connection after sending what is queued on it.
    pub async fn close(&self) {
        if let Some((client, _)) = self.link.lock().await.take() {
            let _ = client.flush().await;
        }
    }
}

async fn send_all(
    js: &jetstream::Context,
    queue: &str,
    messages: &[Message],
    headers: Vec<Option<HeaderMap>>,
    deadline: tokio::time::Instant,
) -> Result<(), Failure> {
    let work = async {
        let mut pending: VecDeque<(usize, PublishAckFuture)> = VecDeque::new();
        let mut duplicates = 0usize;
        for (index, (message, headers)) in messages.iter().zip(headers).enumerate() {
            let mut publish =
                PublishMessage::build().payload(Bytes::copy_from_slice(&message.body));
            if let Some(headers) = headers {
                publish = publish.headers(headers);
            }
            let ack = js
                .send_publish(queue.to_string(), publish)
                .await
                .map_err(|e| publish_failure(index, e.kind(), &e))?;
            pending.push_back((index, ack));
            if pending.len() >= WINDOW {
                if let Some((index, ack)) = pending.pop_front() {
                    duplicates += usize::from(confirm(index, ack).await?);
                }
            }
        }
        while let Some((index, ack)) = pending.pop_front() {
            duplicates += usize::from(confirm(index, ack).await?);
        }
        if duplicates > 0 {
            tracing::debug!(
                "publishing {} messages to `{queue}`: JetStream dropped {duplicates} as \
                 replays (same `Nats-Msg-Id` within the duplicate window)",
                messages.len()
            );
        }
        Ok(())
    };
    match tokio::time::timeout_at(deadline, work).await {
        Ok(outcome) => outcome,
        Err(_) => Err(Failure::Other(NatsError::Unavailable(format!(
            "not every message to `{queue}` was acknowledged by JetStream within \
             `request_timeout_ms`; the server may be down or overloaded"
        )))),
    }
}

/// Awaits one acknowledgement: whether JetStream took the message for a duplicate.
async fn confirm(index: usize, ack: PublishAckFuture) -> Result<bool, Failure> {
    match ack.await {
        Ok(ack) => Ok(ack.duplicate),
        Err(e) => Err(publish_failure(index, e.kind(), &e)),
    }
}

fn publish_failure(index: usize, kind: PublishErrorKind, error: &dyn std::error::Error) -> Failure {
    let what = format!("message {index} of the batch");
    match kind {
        PublishErrorKind::StreamNotFound => Failure::NoStream,
        PublishErrorKind::MaxPayloadExceeded => Failure::Other(NatsError::Refused(format!(
            "{what} is larger than the server's `max_payload` ({}); raise `max_payload` in \
             nats-server's configuration, or send smaller messages",
            describe(error)
        ))),
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
            Failure::Other(NatsError::Unavailable(format!(
                "{what}: no publish acknowledgement from JetStream ({}); the server may be down",
                describe(error)
            )))
        }
        _ => {
            let refusal = error
                .source()
                .and_then(|s| s.downcast_ref::<jetstream::Error>());
            match refusal {
                Some(refusal)
                    if refusal.error_code() == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM
                        || refusal.error_code() == ErrorCode::STREAM_HEADER_EXCEEDS_MAXIMUM =>
                {
                    Failure::Other(NatsError::Refused(format!(
                        "{what} is larger than the stream allows ({}): raise the stream's \
                         `max_msg_size`, or send smaller messages",
                        refusal
                    )))
                }
                Some(refusal) => Failure::Other(match api_error(&what, refusal) {
                    // Whatever JetStream refused here is its state (storage full, limits),
                    // not the message's: the host retries.
                    NatsError::Misconfigured(text) => NatsError::Unavailable(text),
                    other => other,
                }),
                None => Failure::Other(NatsError::Unavailable(format!(
                    "{what}: publishing failed: {}",
                    describe(error)
                ))),
            }
        }
    }
}

/// How long closing the publishing connection may take.
pub const CLOSE_LIMIT: Duration = Duration::from_secs(2);

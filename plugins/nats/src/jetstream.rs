//! The JetStream side of a queue: which stream captures its subject, making that stream
//! and the durable consumer when `declare = "create"`, and checking that what exists can be
//! used.
//!
//! The requests are JetStream's JSON API, sent through async-nats' `Context::request` with
//! the few fields this plugin reads or writes spelt out here: what is sent is exactly what
//! the documentation promises, and a stream's configuration is changed (a subject added)
//! by sending back the configuration the server gave, untouched but for that field. The
//! consumer is made with `$JS.API.CONSUMER.DURABLE.CREATE`, which every JetStream server
//! understands.
//!
//! May depend on: async-nats' JetStream context, serde and serde_json, [`crate::config`].

use std::time::Duration;

use async_nats::jetstream::{self, response::Response, ErrorCode};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{
    config::{is_valid_name, Declare, Retention, Settings},
    error::{api_error, request_failed, NatsError},
};

/// How a consumer wants its deliveries settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckPolicy {
    /// Each delivery on its own.
    Explicit,
    /// Settling one settles every earlier one (by stream sequence).
    All,
}

/// What the plugin needs to know of a durable consumer.
#[derive(Clone, Debug)]
pub struct ConsumerState {
    pub stream: String,
    pub name: String,
    pub ack_policy: AckPolicy,
    pub ack_wait: Duration,
    /// The consumer's `max_batch`, 0 for none: the most a pull request may ask for.
    pub max_batch: usize,
    /// The consumer's `max_expires`, zero for none: the longest a pull request may wait.
    pub max_expires: Duration,
    pub max_ack_pending: i64,
    /// The consumer's `filter_subject`, if any.
    pub filter_subject: Option<String>,
    /// The stream sequence of the last message delivered.
    pub delivered_stream_seq: u64,
    /// The consumer sequence of the last delivery: every delivery takes the next one.
    pub delivered_consumer_seq: u64,
    /// Every message up to this stream sequence is acknowledged.
    pub ack_floor_stream_seq: u64,
    /// Deliveries not yet acknowledged.
    pub num_ack_pending: u64,
    /// Pull requests waiting on the server.
    pub num_waiting: u64,
    /// Messages of the stream the consumer's filter takes that it has not delivered yet.
    pub num_pending: u64,
}

#[derive(Deserialize)]
struct StreamNames {
    #[serde(default)]
    streams: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct StreamInfo {
    config: Value,
}

#[derive(Deserialize)]
struct ConsumerInfo {
    stream_name: String,
    name: String,
    config: ConsumerConfig,
    delivered: Sequences,
    #[serde(default)]
    ack_floor: Option<Sequences>,
    #[serde(default)]
    num_ack_pending: u64,
    #[serde(default)]
    num_waiting: u64,
    #[serde(default)]
    num_pending: u64,
}

#[derive(Deserialize)]
struct Sequences {
    #[serde(default)]
    stream_seq: u64,
    #[serde(default)]
    consumer_seq: u64,
}

#[derive(Deserialize)]
struct ConsumerConfig {
    #[serde(default)]
    deliver_subject: Option<String>,
    #[serde(default)]
    ack_policy: Option<String>,
    #[serde(default)]
    ack_wait: u64,
    #[serde(default)]
    filter_subject: Option<String>,
    #[serde(default)]
    max_ack_pending: i64,
    #[serde(default)]
    max_batch: i64,
    #[serde(default)]
    max_expires: u64,
}

#[derive(Deserialize)]
struct AccountInfo {}

#[derive(Serialize)]
struct NewConsumer<'a> {
    durable_name: &'a str,
    deliver_policy: &'static str,
    ack_policy: &'static str,
    ack_wait: u64,
    max_deliver: i64,
    filter_subject: &'a str,
    replay_policy: &'static str,
    max_ack_pending: i64,
}

/// Sends one JetStream API request: the answer, JetStream's refusal, or why there was none.
async fn api<T: DeserializeOwned>(
    js: &jetstream::Context,
    subject: String,
    payload: &impl Serialize,
    what: &str,
) -> Result<Result<T, jetstream::Error>, NatsError> {
    match js.request::<_, _, Response<T>>(subject, payload).await {
        Ok(Response::Ok(value)) => Ok(Ok(value)),
        Ok(Response::Err { error }) => Ok(Err(error)),
        Err(e) => {
            use async_nats::jetstream::context::RequestErrorKind;
            Err(match e.kind() {
                RequestErrorKind::NoResponders => NatsError::Misconfigured(format!(
                    "{what}: nothing answers JetStream's API; enable JetStream on the server \
                     (`-js`, or `jetstream {{}}` in its configuration) and for the account"
                )),
                RequestErrorKind::TimedOut => request_failed(what, "no answer in time"),
                _ => request_failed(what, &crate::error::describe(&e)),
            })
        }
    }
}

/// Checks that `subject` can be a queue: a NATS subject one publishes to.
pub fn check_subject(subject: &str) -> Result<(), NatsError> {
    let bad = subject.is_empty()
        || subject
            .split('.')
            .any(|token| token.is_empty() || token == "*" || token == ">")
        || subject.chars().any(|c| c.is_whitespace() || c.is_control());
    if bad {
        return Err(NatsError::Misconfigured(format!(
            "`{subject}` cannot be a NATS subject (dot-separated non-empty tokens, no \
             whitespace, no wildcards `*` or `>`); name the queue differently"
        )));
    }
    Ok(())
}

/// A name JetStream accepts for a stream or consumer, made from `text`: every character
/// it does not allow (whitespace, `.`, `*`, `>`, `/`, `\`, control characters) becomes
/// `_`, and an empty result `_`. So subject `golconde.users` gets stream `golconde_users`,
/// and pipeline `users sync` consumer `users_sync`.
pub fn sanitize(text: &str) -> String {
    let mut name: String = text
        .chars()
        .map(|c| {
            if c.is_whitespace() || c.is_control() || ".*>/\\".contains(c) {
                '_'
            } else {
                c
            }
        })
        .collect();
    if name.is_empty() {
        name.push('_');
    }
    while name.len() > 255 {
        name.pop();
    }
    name
}

/// The stream that captures `subject`, if any.
pub async fn find_stream(
    js: &jetstream::Context,
    subject: &str,
) -> Result<Option<String>, NatsError> {
    let what = format!("looking up the stream of subject `{subject}`");
    let names: StreamNames = api(
        js,
        "STREAM.NAMES".into(),
        &json!({ "subject": subject }),
        &what,
    )
    .await?
    .map_err(|e| api_error(&what, &e))?;
    Ok(names.streams.and_then(|s| s.into_iter().next()))
}

/// The stream capturing `subject`, made (or, with `stream` set, extended with the subject)
/// when none does and `declare = "create"`.
pub async fn ensure_stream(
    js: &jetstream::Context,
    settings: &Settings,
    subject: &str,
) -> Result<String, NatsError> {
    if let Some(name) = find_stream(js, subject).await? {
        return Ok(name);
    }
    let name = settings.stream.clone().unwrap_or_else(|| sanitize(subject));
    if settings.declare == Declare::Passive {
        return Err(NatsError::Misconfigured(format!(
            "no JetStream stream captures subject `{subject}`, and `declare = \"passive\"` makes \
             none: create one (`nats stream add {name} --subjects {subject}`), or set `declare = \
             \"create\"`"
        )));
    }
    let what = format!("making stream `{name}` for subject `{subject}`");
    if settings.stream.is_some() {
        let info: Result<StreamInfo, _> =
            api(js, format!("STREAM.INFO.{name}"), &json!({}), &what).await?;
        match info {
            Ok(info) => return add_subject(js, &name, info.config, subject).await,
            Err(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND => {}
            Err(e) => return Err(api_error(&what, &e)),
        }
    }
    let mut config = json!({
        "name": name,
        "subjects": [subject],
        "retention": match settings.retention {
            Retention::WorkQueue => "workqueue",
            Retention::Limits => "limits",
            Retention::Interest => "interest",
        },
        "storage": "file",
        "num_replicas": settings.replicas,
        "duplicate_window": settings.duplicate_window.as_nanos() as u64,
        "max_consumers": -1,
        "max_msgs": -1,
        "max_bytes": settings.max_bytes.unwrap_or(-1),
        "max_age": settings.max_age.map_or(0, |age| age.as_nanos() as u64),
        // A full queue refuses new messages (the publisher retries) rather than dropping
        // the oldest, which nobody has consumed yet.
        "discard": if settings.max_bytes.is_some() { "new" } else { "old" },
    });
    if settings.duplicate_window.is_zero() {
        // JetStream's own default (two minutes) rather than none at all.
        if let Some(fields) = config.as_object_mut() {
            fields.remove("duplicate_window");
        }
    }
    let created: Result<StreamInfo, _> =
        api(js, format!("STREAM.CREATE.{name}"), &config, &what).await?;
    match created {
        Ok(_) => {
            tracing::info!("made JetStream stream `{name}` for subject `{subject}`");
            Ok(name)
        }
        Err(e) if e.error_code() == ErrorCode::STREAM_NAME_EXIST => {
            // Made by someone else meanwhile, or a stream of that name for other subjects.
            match find_stream(js, subject).await? {
                Some(found) => Ok(found),
                None => Err(NatsError::Misconfigured(format!(
                    "{what}: a stream named `{name}` exists already, for other subjects; set \
                     `stream` to another name, or make a stream for `{subject}` yourself"
                ))),
            }
        }
        Err(e) => Err(api_error(&what, &e)),
    }
}

/// Adds `subject` to stream `name`, whose configuration is `config` as the server gave it.
async fn add_subject(
    js: &jetstream::Context,
    name: &str,
    mut config: Value,
    subject: &str,
) -> Result<String, NatsError> {
    let what = format!("adding subject `{subject}` to stream `{name}` (`stream`)");
    match config.get_mut("subjects") {
        Some(Value::Array(subjects)) => subjects.push(Value::from(subject)),
        _ => {
            return Err(NatsError::Misconfigured(format!(
                "{what}: the stream has no list of subjects (a mirror?); name another stream \
                 in `stream`"
            )))
        }
    }
    let updated: Result<StreamInfo, _> =
        api(js, format!("STREAM.UPDATE.{name}"), &config, &what).await?;
    updated.map_err(|e| api_error(&what, &e))?;
    // Another process may have changed the subjects at the same moment: check.
    match find_stream(js, subject).await? {
        Some(found) => {
            tracing::info!("added subject `{subject}` to JetStream stream `{found}`");
            Ok(found)
        }
        None => Err(NatsError::Unavailable(format!(
            "{what}: the subject is still not captured after the update (changed concurrently?)"
        ))),
    }
}

fn retention_of(config: &Value) -> Option<&str> {
    config.get("retention").and_then(Value::as_str)
}

fn consumer_state(info: ConsumerInfo, what: &str) -> Result<ConsumerState, NatsError> {
    let config = info.config;
    if config.deliver_subject.is_some_and(|s| !s.is_empty()) {
        return Err(NatsError::Misconfigured(format!(
            "{what}: consumer `{}` of stream `{}` is a push consumer (it has a deliver \
             subject); Golconde pulls: delete it or name another pipeline",
            info.name, info.stream_name
        )));
    }
    let ack_policy = match config.ack_policy.as_deref() {
        Some("all") => AckPolicy::All,
        Some("explicit") | None => AckPolicy::Explicit,
        Some(other) => {
            return Err(NatsError::Misconfigured(format!(
                "{what}: consumer `{}` of stream `{}` has ack policy `{other}`; Golconde \
                 acknowledges what it applied, so it needs \"explicit\" or \"all\": delete \
                 the consumer (it is made again with \"all\" or \"explicit\") or make it with \
                 one of those",
                info.name, info.stream_name
            )))
        }
    };
    Ok(ConsumerState {
        stream: info.stream_name,
        name: info.name,
        ack_policy,
        ack_wait: Duration::from_nanos(config.ack_wait),
        max_batch: usize::try_from(config.max_batch.max(0)).unwrap_or(usize::MAX),
        max_expires: Duration::from_nanos(config.max_expires),
        max_ack_pending: config.max_ack_pending,
        filter_subject: config.filter_subject.filter(|f| !f.is_empty()),
        delivered_stream_seq: info.delivered.stream_seq,
        delivered_consumer_seq: info.delivered.consumer_seq,
        ack_floor_stream_seq: info.ack_floor.map_or(0, |f| f.stream_seq),
        num_ack_pending: info.num_ack_pending,
        num_waiting: info.num_waiting,
        num_pending: info.num_pending,
    })
}

/// The state of consumer `name` of `stream`, `None` if there is none.
pub async fn consumer_info(
    js: &jetstream::Context,
    stream: &str,
    name: &str,
) -> Result<Option<ConsumerState>, NatsError> {
    let what = format!("reading consumer `{name}` of stream `{stream}`");
    let info: Result<ConsumerInfo, _> = api(
        js,
        format!("CONSUMER.INFO.{stream}.{name}"),
        &json!({}),
        &what,
    )
    .await?;
    match info {
        Ok(info) => consumer_state(info, &what).map(Some),
        Err(e)
            if e.error_code() == ErrorCode::CONSUMER_NOT_FOUND
                || e.error_code() == ErrorCode::STREAM_NOT_FOUND =>
        {
            Ok(None)
        }
        Err(e) => Err(api_error(&what, &e)),
    }
}

/// The durable pull consumer `name` of the stream capturing `subject`, made when missing
/// and `declare = "create"`; checked when it exists.
pub async fn ensure_consumer(
    js: &jetstream::Context,
    settings: &Settings,
    subject: &str,
    name: &str,
    prefetch: u32,
) -> Result<ConsumerState, NatsError> {
    let stream = ensure_stream(js, settings, subject).await?;
    let what = format!("consuming subject `{subject}` with consumer `{name}` of stream `{stream}`");
    let state = match consumer_info(js, &stream, name).await? {
        Some(state) => state,
        None if settings.declare == Declare::Passive => {
            return Err(NatsError::Misconfigured(format!(
                "{what}: the consumer does not exist, and `declare = \"passive\"` makes none: \
                 create a durable pull consumer (`nats consumer add {stream} {name} --pull \
                 --filter {subject} --ack explicit`), or set `declare = \"create\"`"
            )))
        }
        None => create_consumer(js, settings, &stream, subject, name, prefetch, &what).await?,
    };
    // The filter that was asked for, or none on a stream that holds only this subject.
    let fits = match state.filter_subject.as_deref() {
        Some(filter) => filter == subject,
        None => {
            let info: StreamInfo = api(js, format!("STREAM.INFO.{stream}"), &json!({}), &what)
                .await?
                .map_err(|e| api_error(&what, &e))?;
            info.config
                .get("subjects")
                .and_then(Value::as_array)
                .is_some_and(|s| s.len() == 1 && s[0].as_str() == Some(subject))
        }
    };
    if !fits {
        return Err(NatsError::Misconfigured(format!(
            "{what}: the consumer takes {} of the stream, not just `{subject}`; delete it (it is \
             made again with the right filter) or name another pipeline",
            match state.filter_subject.as_deref() {
                Some(f) => format!("subject `{f}`"),
                None => "every subject".to_string(),
            }
        )));
    }
    if (state.max_ack_pending as u64) < u64::from(prefetch) && state.max_ack_pending > 0 {
        tracing::warn!(
            "{what}: the consumer's max_ack_pending ({}) is below the pipeline's prefetch \
             ({prefetch}); JetStream will hand over at most {} unacknowledged messages at a time",
            state.max_ack_pending,
            state.max_ack_pending
        );
    }
    Ok(state)
}

async fn create_consumer(
    js: &jetstream::Context,
    settings: &Settings,
    stream: &str,
    subject: &str,
    name: &str,
    prefetch: u32,
    what: &str,
) -> Result<ConsumerState, NatsError> {
    let info: StreamInfo = api(js, format!("STREAM.INFO.{stream}"), &json!({}), what)
        .await?
        .map_err(|e| api_error(what, &e))?;
    let retention = retention_of(&info.config).unwrap_or("limits").to_string();
    // JetStream refuses cumulative acknowledgement on a work queue.
    let ack_policy = if retention == "workqueue" {
        "explicit"
    } else {
        "all"
    };
    let config = NewConsumer {
        durable_name: name,
        deliver_policy: "all",
        ack_policy,
        ack_wait: settings.ack_wait.as_nanos() as u64,
        max_deliver: settings.max_deliver,
        filter_subject: subject,
        replay_policy: "instant",
        max_ack_pending: settings
            .max_ack_pending
            .unwrap_or(1000)
            .max(i64::from(prefetch)),
    };
    let created: Result<ConsumerInfo, _> = api(
        js,
        format!("CONSUMER.DURABLE.CREATE.{stream}.{name}"),
        &json!({ "stream_name": stream, "config": config }),
        what,
    )
    .await?;
    match created {
        Ok(info) => {
            tracing::info!(
                "made durable consumer `{name}` of JetStream stream `{stream}` for subject \
                 `{subject}` (ack policy {ack_policy})"
            );
            consumer_state(info, what)
        }
        Err(e)
            if e.error_code() == ErrorCode::CONSUMER_WQ_MULTIPLE_UNFILTERED
                || e.error_code() == ErrorCode::CONSUMER_WQ_CONSUMER_NOT_UNIQUE =>
        {
            Err(NatsError::Misconfigured(format!(
                "{what}: stream `{stream}` has retention \"workqueue\", where only one consumer \
                 may take each subject, and another consumer takes `{subject}` already (another \
                 pipeline on the same queue?). Give this pipeline its own queue, or keep the \
                 queue on a stream with retention \"limits\" or \"interest\" (`retention`, for \
                 a stream the plugin makes; `stream` to name a new one)"
            )))
        }
        Err(e) => Err(api_error(what, &e)),
    }
}

/// Checks that JetStream answers for this account: what `ping` calls.
pub async fn account_info(js: &jetstream::Context) -> Result<(), NatsError> {
    let what = "asking JetStream for the account's information";
    let _: AccountInfo = api(js, "INFO".into(), &json!({}), what)
        .await?
        .map_err(|e| api_error(what, &e))?;
    Ok(())
}

/// A consumer name JetStream accepts, for messages when it is not.
pub fn consumer_name(base: &str) -> String {
    if is_valid_name(base) {
        base.to_string()
    } else {
        sanitize(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_acceptable() {
        assert_eq!(sanitize("golconde.users"), "golconde_users");
        assert_eq!(sanitize("users sync"), "users_sync");
        assert_eq!(sanitize("a*b>c/d\\e\tf"), "a_b_c_d_e_f");
        assert_eq!(sanitize(""), "_");
        assert_eq!(sanitize(&"x".repeat(300)).len(), 255);
        assert_eq!(consumer_name("orders"), "orders");
        assert_eq!(consumer_name("orders.eu"), "orders_eu");
        for name in ["golconde.users", "a b", "", "x.>"] {
            assert!(is_valid_name(&sanitize(name)), "{name}");
        }
    }

    #[test]
    fn subjects_are_checked() {
        for good in ["orders", "golconde.users", "a-b.c_d", "ü.x"] {
            assert!(check_subject(good).is_ok(), "{good}");
        }
        for bad in ["", "a..b", ".a", "a.", "a.*", ">", "a b", "a\tb"] {
            assert!(check_subject(bad).is_err(), "{bad}");
        }
    }
}

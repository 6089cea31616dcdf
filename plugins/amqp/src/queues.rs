//! What Golconde declares each queue as: its type (`queue_type`) and its arguments
//! (`arguments`), for the transport as a whole and per queue (`queues`), and what to tell
//! the operator when the broker refuses a declaration because the queue it has differs.
//!
//! Key decisions, and why:
//! - **A queue whose type is not configured is declared without `x-queue-type`**, as before
//!   these keys existed, so that queues Golconde declared then are still equivalent now.
//!   `queue_type = "classic"` sends it explicitly, which RabbitMQ takes as the same queue.
//! - **A queue's own `arguments` replace the transport's as a whole** rather than merging
//!   key by key: arguments that fit one queue type are refused by another (a classic queue
//!   takes no `x-delivery-limit`), and only replacement lets one queue go without them.
//! - **`x-queue-type` in `arguments` is the same setting as `queue_type`**: it is taken out
//!   of the table and checked against `queue_type`, so there is one answer to "which type".
//! - **Mismatches are explained from the broker's own words** ([`explain`]): RabbitMQ names
//!   the argument, what it received and what the queue has in its PRECONDITION_FAILED text;
//!   the operator gets that in plain terms, with the key to change.

use std::{collections::BTreeMap, collections::HashMap, fmt};

use golconde_plugin_api::PluginError;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde_json::Value;

/// RabbitMQ's queue types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    Classic,
    /// Replicated over the cluster's nodes (Raft); durable by definition.
    Quorum,
    /// An append-only log read by offset: Golconde publishes to it but does not consume it.
    Stream,
}

impl QueueType {
    fn parse(name: &str) -> Option<QueueType> {
        match name {
            "classic" => Some(QueueType::Classic),
            "quorum" => Some(QueueType::Quorum),
            "stream" => Some(QueueType::Stream),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
            QueueType::Stream => "stream",
        }
    }
}

/// One queue argument's value, as the configuration gives it.
#[derive(Debug, Clone, PartialEq)]
pub enum Argument {
    String(String),
    Integer(i64),
    Boolean(bool),
    Float(f64),
}

impl Argument {
    /// The AMQP field value of the matching type: long string, signed 64-bit integer,
    /// boolean, double. RabbitMQ compares integer arguments by value whatever their width,
    /// so a queue declared elsewhere with a 32-bit `x-max-length` is still equivalent.
    pub fn amqp(&self) -> AMQPValue {
        match self {
            Argument::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
            Argument::Integer(i) => AMQPValue::LongLongInt(*i),
            Argument::Boolean(b) => AMQPValue::Boolean(*b),
            Argument::Float(f) => AMQPValue::Double(*f),
        }
    }
}

impl fmt::Display for Argument {
    /// As it would be written in the configuration file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Argument::String(s) => write!(f, "{s:?}"),
            Argument::Integer(i) => write!(f, "{i}"),
            Argument::Boolean(b) => write!(f, "{b}"),
            Argument::Float(x) => write!(f, "{x:?}"),
        }
    }
}

/// How one queue is declared with `declare = "durable"`.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSpec {
    /// `None`: not configured; declared without `x-queue-type`, which makes it classic.
    pub queue_type: Option<QueueType>,
    /// The key `queue_type` came from, for messages: `` `queue_type` `` or
    /// `` `queues."q".queue_type` ``.
    pub type_key: String,
    /// Without `x-queue-type`, which `queue_type` stands for.
    pub arguments: BTreeMap<String, Argument>,
    /// The key `arguments` came from, likewise.
    pub arguments_key: String,
}

impl QueueSpec {
    /// The arguments as sent with `queue.declare`, `x-queue-type` included when configured.
    pub fn table(&self) -> FieldTable {
        let mut table = FieldTable::default();
        if let Some(queue_type) = self.queue_type {
            table.insert(
                ShortString::from("x-queue-type"),
                AMQPValue::LongString(LongString::from(queue_type.as_str())),
            );
        }
        for (name, value) in &self.arguments {
            table.insert(ShortString::from(name.as_str()), value.amqp());
        }
        table
    }

    /// What Golconde declares, in words: `durable, x-queue-type = "quorum", x-max-length = 10`.
    pub fn describe(&self) -> String {
        let mut out = String::from("durable");
        if let Some(queue_type) = self.queue_type {
            out.push_str(&format!(", x-queue-type = \"{}\"", queue_type.as_str()));
        }
        if self.arguments.is_empty() && self.queue_type.is_none() {
            out.push_str(", no arguments");
        }
        for (name, value) in &self.arguments {
            out.push_str(&format!(", {name} = {value}"));
        }
        out
    }

    fn type_shown(&self) -> &'static str {
        self.queue_type.unwrap_or(QueueType::Classic).as_str()
    }
}

/// Every queue's declaration: the transport's, and the queues' own.
#[derive(Debug, Clone, PartialEq)]
pub struct Queues {
    default: QueueSpec,
    each: HashMap<String, QueueSpec>,
}

impl Queues {
    /// Reads `queue_type`, `arguments` and `queues`. `passive` (`declare = "passive"`)
    /// declares nothing, so arguments there would never be used: they are refused rather
    /// than ignored. `queue_type` is still read then, to refuse consuming a stream.
    pub fn parse(
        queue_type: Option<Value>,
        arguments: Option<Value>,
        queues: Option<Value>,
        passive: bool,
    ) -> Result<Queues, PluginError> {
        let (default_type, default_arguments) =
            level(queue_type, arguments, "queue_type", "arguments", passive)?;
        let default = QueueSpec {
            queue_type: default_type,
            type_key: "`queue_type`".into(),
            arguments: default_arguments.unwrap_or_default(),
            arguments_key: "`arguments`".into(),
        };
        let mut each = HashMap::new();
        let table = match queues {
            None => serde_json::Map::new(),
            Some(Value::Object(table)) => table,
            Some(other) => {
                return Err(PluginError::config(format!(
                    "`queues` is {}; give a table keyed by queue name, e.g. \
                     queues = {{ \"golconde.users\" = {{ queue_type = \"quorum\" }} }}",
                    kind(&other)
                )))
            }
        };
        for (queue, entry) in table {
            let at = format!("queues.{}", toml_key(&queue));
            if queue.is_empty() || queue.len() > 255 {
                return Err(PluginError::config(format!(
                    "`{at}`: a queue name is 1 to 255 bytes long, this one is {}",
                    queue.len()
                )));
            }
            let Value::Object(mut entry) = entry else {
                return Err(PluginError::config(format!(
                    "`{at}` is {}; give a table with `queue_type` and/or `arguments`",
                    kind(&entry)
                )));
            };
            let queue_type = entry.remove("queue_type");
            let arguments = entry.remove("arguments");
            if let Some(unknown) = entry.keys().next() {
                return Err(PluginError::config(format!(
                    "`{at}.{}` is not a key of a queue; a queue takes `queue_type` and \
                     `arguments`",
                    toml_key(unknown)
                )));
            }
            let (own_type, own_arguments) = level(
                queue_type,
                arguments,
                &format!("{at}.queue_type"),
                &format!("{at}.arguments"),
                passive,
            )?;
            let mut spec = default.clone();
            if own_type.is_some() {
                spec.queue_type = own_type;
                spec.type_key = format!("`{at}.queue_type`");
            }
            if let Some(own_arguments) = own_arguments {
                spec.arguments = own_arguments;
                spec.arguments_key = format!("`{at}.arguments`");
            }
            each.insert(queue, spec);
        }
        Ok(Queues { default, each })
    }

    /// How `queue` is declared.
    pub fn spec(&self, queue: &str) -> &QueueSpec {
        self.each.get(queue).unwrap_or(&self.default)
    }
}

/// One level's `queue_type` and `arguments` (the transport's or one queue's); `arguments`
/// is `None` when not given, so that a queue's own empty table still replaces the
/// transport's.
#[allow(clippy::type_complexity)]
fn level(
    queue_type: Option<Value>,
    arguments: Option<Value>,
    type_key: &str,
    arguments_key: &str,
    passive: bool,
) -> Result<(Option<QueueType>, Option<BTreeMap<String, Argument>>), PluginError> {
    let named = match queue_type {
        None => None,
        Some(Value::String(name)) => Some(type_named(&name, type_key)?),
        Some(other) => {
            return Err(PluginError::config(format!(
                "`{type_key}` is {}; give \"classic\", \"quorum\" or \"stream\"",
                kind(&other)
            )))
        }
    };
    let Some(arguments) = arguments else {
        return Ok((named, None));
    };
    if passive {
        return Err(PluginError::config(format!(
            "`{arguments_key}` is set but `declare = \"passive\"` declares no queue, so the \
             arguments would never be used; remove them, or set `declare = \"durable\"`"
        )));
    }
    let mut table = arguments_table(arguments, arguments_key)?;
    let in_table = match table.remove("x-queue-type") {
        None => None,
        Some(Argument::String(name)) => {
            Some(type_named(&name, &format!("{arguments_key}.x-queue-type"))?)
        }
        Some(other) => {
            return Err(PluginError::config(format!(
                "`{arguments_key}.x-queue-type` is {other}; give \"classic\", \"quorum\" or \
                 \"stream\", or set `{type_key}` instead"
            )))
        }
    };
    let queue_type = match (named, in_table) {
        (Some(a), Some(b)) if a != b => {
            return Err(PluginError::config(format!(
                "`{type_key}` is \"{}\" but `{arguments_key}` has \"x-queue-type\" = \"{}\"; \
                 they are the same setting: keep one",
                a.as_str(),
                b.as_str()
            )))
        }
        (a, b) => a.or(b),
    };
    Ok((queue_type, Some(table)))
}

fn type_named(name: &str, key: &str) -> Result<QueueType, PluginError> {
    QueueType::parse(name).ok_or_else(|| {
        PluginError::config(format!(
            "`{key}` is \"{name}\"; give \"classic\" (the default), \"quorum\" (replicated, \
             durable) or \"stream\" (publishing only)"
        ))
    })
}

/// Converts a configuration table of queue arguments; every refusal names the argument.
pub fn arguments_table(value: Value, key: &str) -> Result<BTreeMap<String, Argument>, PluginError> {
    let Value::Object(table) = value else {
        return Err(PluginError::config(format!(
            "`{key}` is {}; give a table of queue arguments, e.g. \
             {{ \"x-max-length\" = 100000, \"x-single-active-consumer\" = true }}",
            kind(&value)
        )));
    };
    let mut out = BTreeMap::new();
    for (name, value) in table {
        let at = || format!("{key}.{}", toml_key(&name));
        if name.is_empty() || name.len() > 255 {
            return Err(PluginError::config(format!(
                "`{}`: an argument name is 1 to 255 bytes long, this one is {}",
                at(),
                name.len()
            )));
        }
        let argument = match value {
            Value::String(s) => Argument::String(s),
            Value::Bool(b) => Argument::Boolean(b),
            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Argument::Integer(i),
                (None, _) if n.is_u64() => {
                    return Err(PluginError::config(format!(
                        "`{}` is {n}, above the largest integer AMQP carries ({})",
                        at(),
                        i64::MAX
                    )))
                }
                (None, Some(f)) => Argument::Float(f),
                (None, None) => {
                    return Err(PluginError::config(format!(
                        "`{}`: {n} is not a number",
                        at()
                    )))
                }
            },
            other => {
                return Err(PluginError::config(format!(
                    "`{}` is {}; a queue argument is a string, an integer, a boolean or a float",
                    at(),
                    kind(&other)
                )))
            }
        };
        out.insert(name, argument);
    }
    Ok(out)
}

/// `name` as a TOML key: bare when it can be, quoted otherwise (`"golconde.users"`).
fn toml_key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table",
    }
}

/// What RabbitMQ's refusal of a declaration says, read from its reply text.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// `inequivalent arg 'A' for queue 'q' in vhost 'v': received R but current is C`:
    /// the queue exists with another value of `A` (`None`: without it).
    Inequivalent {
        argument: String,
        asked: Option<String>,
        current: Option<String>,
    },
    /// `invalid arg 'A' for queue 'q' ...`: the broker does not take `A` as given.
    Invalid { argument: String, why: String },
}

fn refusal(reason: &str) -> Option<Refusal> {
    if let Some(at) = reason.find("inequivalent arg '") {
        let rest = &reason[at + "inequivalent arg '".len()..];
        let argument = &rest[..rest.find('\'')?];
        let received = rest.find(": received ")? + ": received ".len();
        let (asked, current) = rest[received..].rsplit_once(" but current is ")?;
        return Some(Refusal::Inequivalent {
            argument: argument.to_string(),
            asked: value_in(asked),
            current: value_in(current),
        });
    }
    let at = reason.find("invalid arg '")?;
    let rest = &reason[at + "invalid arg '".len()..];
    let argument = &rest[..rest.find('\'')?];
    let why = if let Some(of_type) = rest.find(" of queue type ") {
        let queue_type = rest[of_type + " of queue type ".len()..].trim();
        let queue_type = queue_type
            .strip_prefix("rabbit_")
            .and_then(|t| t.strip_suffix("_queue"))
            .unwrap_or(queue_type);
        format!("a {queue_type} queue does not take it")
    } else if let Some(detail) = rest.split_once("': ").map(|(_, d)| d.trim()) {
        format!("the broker refuses its value ({detail})")
    } else {
        "the broker refuses it".to_string()
    };
    Some(Refusal::Invalid {
        argument: argument.to_string(),
        why,
    })
}

/// `'x'`, `the value 'x' of type 't'` or `none`, as RabbitMQ writes a value.
fn value_in(text: &str) -> Option<String> {
    let text = text.trim();
    if text == "none" {
        return None;
    }
    let text = text.strip_prefix("the value ").unwrap_or(text);
    let text = text.strip_prefix('\'').unwrap_or(text);
    let end = text.rfind("' of type '").or_else(|| text.rfind('\''));
    Some(match end {
        Some(end) => text[..end].to_string(),
        None => text.to_string(),
    })
}

/// A value as RabbitMQ wrote it, as it would be written in the configuration file.
fn toml_value(value: &str) -> String {
    let plain = value.parse::<i64>().is_ok()
        || value.parse::<f64>().is_ok_and(f64::is_finite)
        || value == "true"
        || value == "false";
    if plain {
        value.to_string()
    } else {
        format!("{value:?}")
    }
}

const KEEP_IT: &str = "or set `declare = \"passive\"` to use the queue as it is, or delete the \
                       queue (its messages go with it) so that Golconde declares it anew";

/// Says, after "queue `q` on <broker> ", why the broker refused to declare `queue` as
/// `spec` has it, what the queue has, what was asked, and what to set. `reason` is the
/// broker's reply text.
pub fn explain(spec: &QueueSpec, queue: &str, reason: &str) -> String {
    let own = format!("`queues.{}", toml_key(queue));
    match refusal(reason) {
        Some(Refusal::Inequivalent {
            argument,
            asked,
            current,
        }) if argument == "x-queue-type" => {
            let has = current.as_deref().unwrap_or("classic");
            let asked = asked.as_deref().unwrap_or("classic");
            format!(
                "exists as a {has} queue, but Golconde declares it as a {asked} queue ({} is \
                 \"{}\"); a queue's type cannot change: set {own}.queue_type` = \"{has}\" to \
                 match it, {KEEP_IT}",
                spec.type_key,
                spec.type_shown()
            )
        }
        Some(Refusal::Inequivalent {
            argument,
            asked,
            current,
        }) if argument == "durable" => format!(
            "exists with durable = {}, but Golconde declares every queue durable = {}; a \
             queue's durability cannot change: {}",
            current.as_deref().unwrap_or("false"),
            asked.as_deref().unwrap_or("true"),
            KEEP_IT.trim_start_matches("or ")
        ),
        Some(Refusal::Inequivalent {
            argument,
            asked,
            current,
        }) => {
            let fix = match &current {
                Some(value) => format!(
                    "make \"{argument}\" = {} in {} (or in {own}.arguments`, which \
                     replaces the transport's for this queue)",
                    toml_value(value),
                    spec.arguments_key
                ),
                None => format!(
                    "remove \"{argument}\" from {} (or give this queue its own \
                     {own}.arguments` without it)",
                    spec.arguments_key
                ),
            };
            let has = match &current {
                Some(value) => format!("with argument `{argument}` = `{value}`"),
                None => format!("without argument `{argument}`"),
            };
            let asked = match &asked {
                Some(value) => format!("with `{argument}` = `{value}`"),
                None => format!("without `{argument}`"),
            };
            format!(
                "exists {has}, but Golconde declares it {asked} (from {}); a queue's arguments \
                 cannot change: {fix}, {KEEP_IT}",
                spec.arguments_key
            )
        }
        Some(Refusal::Invalid { argument, why }) => format!(
            "cannot be declared with argument `{argument}` (from {}) as a {} queue ({} is \
             \"{}\"): {why}; change or remove it there",
            spec.arguments_key,
            spec.type_shown(),
            spec.type_key,
            spec.type_shown()
        ),
        None => format!(
            "exists with other settings than Golconde declares ({}): match them in \
             {own}.queue_type` and {own}.arguments`, {KEEP_IT}",
            spec.describe()
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn queues(config: Value) -> Result<Queues, PluginError> {
        let mut config = config;
        let mut take = |key: &str| config.as_object_mut().unwrap().remove(key);
        let passive = take("declare").is_some_and(|d| d == "passive");
        Queues::parse(
            take("queue_type"),
            take("arguments"),
            take("queues"),
            passive,
        )
    }

    fn error(config: Value) -> String {
        let err = queues(config).unwrap_err();
        assert_eq!(err.kind, golconde_plugin_api::ErrorKind::Config, "{err}");
        err.message.to_string()
    }

    #[test]
    fn nothing_configured_declares_as_before() {
        let q = queues(json!({})).unwrap();
        let spec = q.spec("any");
        assert_eq!(spec.queue_type, None);
        assert!(spec.arguments.is_empty());
        assert_eq!(spec.table(), FieldTable::default(), "no x-queue-type sent");
        assert_eq!(spec.describe(), "durable, no arguments");
    }

    #[test]
    fn arguments_become_field_values_of_the_matching_type() {
        let q = queues(json!({
            "queue_type": "quorum",
            "arguments": {
                "x-single-active-consumer": true,
                "x-delivery-limit": 5,
                "x-max-length": 100000,
                "x-overflow": "reject-publish",
                "x-ratio": 0.5,
                "x-negative": -3,
            }
        }))
        .unwrap();
        let table = q.spec("q").table();
        let get = |name: &str| table.inner().get(name).cloned();
        assert_eq!(
            get("x-queue-type"),
            Some(AMQPValue::LongString("quorum".into()))
        );
        assert_eq!(
            get("x-single-active-consumer"),
            Some(AMQPValue::Boolean(true))
        );
        assert_eq!(get("x-delivery-limit"), Some(AMQPValue::LongLongInt(5)));
        assert_eq!(get("x-max-length"), Some(AMQPValue::LongLongInt(100_000)));
        assert_eq!(
            get("x-overflow"),
            Some(AMQPValue::LongString("reject-publish".into()))
        );
        assert_eq!(get("x-ratio"), Some(AMQPValue::Double(0.5)));
        assert_eq!(get("x-negative"), Some(AMQPValue::LongLongInt(-3)));
        assert_eq!(table.inner().len(), 7);
        assert_eq!(
            q.spec("q").describe(),
            "durable, x-queue-type = \"quorum\", x-delivery-limit = 5, x-max-length = 100000, \
             x-negative = -3, x-overflow = \"reject-publish\", x-ratio = 0.5, \
             x-single-active-consumer = true"
        );
    }

    #[test]
    fn integers_stay_integers_and_floats_stay_floats() {
        let table = arguments_table(json!({"a": 1, "b": 1.0, "c": i64::MIN}), "arguments").unwrap();
        assert_eq!(table["a"], Argument::Integer(1));
        assert_eq!(table["b"], Argument::Float(1.0));
        assert_eq!(table["c"], Argument::Integer(i64::MIN));
    }

    #[test]
    fn a_queue_s_own_settings_replace_the_transport_s() {
        let q = queues(json!({
            "queue_type": "quorum",
            "arguments": {"x-delivery-limit": 5, "x-max-length": 10},
            "queues": {
                "golconde.users": {"arguments": {"x-max-length": 20}},
                "classic.one": {"queue_type": "classic", "arguments": {}},
                "stream.out": {"queue_type": "stream"},
            }
        }))
        .unwrap();
        let other = q.spec("elsewhere");
        assert_eq!(other.queue_type, Some(QueueType::Quorum));
        assert_eq!(other.arguments.len(), 2);
        assert_eq!(other.type_key, "`queue_type`");

        let users = q.spec("golconde.users");
        assert_eq!(users.queue_type, Some(QueueType::Quorum), "type inherited");
        assert_eq!(
            users.arguments,
            BTreeMap::from([("x-max-length".to_string(), Argument::Integer(20))]),
            "arguments replaced, not merged"
        );
        assert_eq!(users.arguments_key, "`queues.\"golconde.users\".arguments`");
        assert_eq!(users.type_key, "`queue_type`");

        let classic = q.spec("classic.one");
        assert_eq!(classic.queue_type, Some(QueueType::Classic));
        assert!(classic.arguments.is_empty(), "an empty table clears them");

        let stream = q.spec("stream.out");
        assert_eq!(stream.queue_type, Some(QueueType::Stream));
        assert_eq!(stream.type_key, "`queues.\"stream.out\".queue_type`");
        assert_eq!(stream.arguments.len(), 2, "arguments inherited");
    }

    #[test]
    fn x_queue_type_in_arguments_is_queue_type() {
        let q = queues(json!({"arguments": {"x-queue-type": "quorum"}})).unwrap();
        assert_eq!(q.spec("q").queue_type, Some(QueueType::Quorum));
        assert!(
            q.spec("q").arguments.is_empty(),
            "sent once, as x-queue-type"
        );
        let q = queues(json!({"queue_type": "stream", "arguments": {"x-queue-type": "stream"}}))
            .unwrap();
        assert_eq!(q.spec("q").queue_type, Some(QueueType::Stream));
        let q = queues(json!({"queue_type": "quorum",
            "queues": {"q": {"arguments": {"x-queue-type": "classic"}}}}))
        .unwrap();
        assert_eq!(
            q.spec("q").queue_type,
            Some(QueueType::Classic),
            "a queue's own arguments override the transport's type"
        );
    }

    #[test]
    fn every_mistake_names_its_key() {
        let cases = [
            (
                json!({"queue_type": "quorum", "arguments": {"x-queue-type": "classic"}}),
                "`queue_type` is \"quorum\" but `arguments` has \"x-queue-type\" = \"classic\"",
            ),
            (
                json!({"queues": {"q": {"queue_type": "stream", "arguments": {"x-queue-type": "quorum"}}}}),
                "`queues.q.queue_type` is \"stream\" but `queues.q.arguments` has",
            ),
            (json!({"queue_type": "lazy"}), "`queue_type` is \"lazy\""),
            (json!({"queue_type": 3}), "`queue_type` is a number"),
            (
                json!({"arguments": {"x-queue-type": "delayed"}}),
                "`arguments.x-queue-type` is \"delayed\"",
            ),
            (
                json!({"arguments": {"x-queue-type": 1}}),
                "`arguments.x-queue-type` is 1",
            ),
            (json!({"arguments": [1]}), "`arguments` is an array"),
            (
                json!({"arguments": {"x-list": [1, 2]}}),
                "`arguments.x-list` is an array",
            ),
            (
                json!({"arguments": {"x-table": {"a": 1}}}),
                "`arguments.x-table` is a table",
            ),
            (
                json!({"arguments": {"x-null": null}}),
                "`arguments.x-null` is empty",
            ),
            (
                json!({"arguments": {"x-big": u64::MAX}}),
                "`arguments.x-big` is 18446744073709551615, above the largest integer",
            ),
            (
                json!({"arguments": {"": 1}}),
                "an argument name is 1 to 255 bytes",
            ),
            (json!({"queues": ["q"]}), "`queues` is an array"),
            (
                json!({"queues": {"q": "quorum"}}),
                "`queues.q` is a string; give a table",
            ),
            (
                json!({"queues": {"golconde.users": {"queue-type": "quorum"}}}),
                "`queues.\"golconde.users\".queue-type` is not a key of a queue",
            ),
            (
                json!({"queues": {"q": {"arguments": {"x-a": [true]}}}}),
                "`queues.q.arguments.x-a` is an array",
            ),
            (
                json!({"queues": {"": {"queue_type": "quorum"}}}),
                "a queue name is 1 to 255 bytes long",
            ),
            (
                json!({"declare": "passive", "arguments": {"x-max-length": 1}}),
                "`arguments` is set but `declare = \"passive\"`",
            ),
            (
                json!({"declare": "passive", "queues": {"q": {"arguments": {}}}}),
                "`queues.q.arguments` is set but `declare = \"passive\"`",
            ),
        ];
        for (config, expected) in cases {
            let message = error(config.clone());
            assert!(message.contains(expected), "{config}: {message}");
        }
    }

    #[test]
    fn passive_still_knows_the_queue_type() {
        let q = queues(json!({"declare": "passive", "queues": {"s": {"queue_type": "stream"}}}))
            .unwrap();
        assert_eq!(q.spec("s").queue_type, Some(QueueType::Stream));
    }

    #[test]
    fn rabbitmq_s_refusals_are_read_in_every_form_it_writes() {
        let cases = [
            (
                "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q' in vhost '/': \
                 received 'quorum' but current is 'classic'",
                Refusal::Inequivalent {
                    argument: "x-queue-type".into(),
                    asked: Some("quorum".into()),
                    current: Some("classic".into()),
                },
            ),
            (
                "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'q' in vhost '/': \
                 received the value 'quorum' of type 'longstr' but current is none",
                Refusal::Inequivalent {
                    argument: "x-queue-type".into(),
                    asked: Some("quorum".into()),
                    current: None,
                },
            ),
            (
                "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'a b' in vhost \
                 '/': received '20' but current is '10'",
                Refusal::Inequivalent {
                    argument: "x-max-length".into(),
                    asked: Some("20".into()),
                    current: Some("10".into()),
                },
            ),
            (
                "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'q' in vhost '/': \
                 received none but current is the value '10' of type 'long'",
                Refusal::Inequivalent {
                    argument: "x-max-length".into(),
                    asked: None,
                    current: Some("10".into()),
                },
            ),
            (
                "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'q' in vhost '/': \
                 received 'true' but current is 'false'",
                Refusal::Inequivalent {
                    argument: "durable".into(),
                    asked: Some("true".into()),
                    current: Some("false".into()),
                },
            ),
            (
                "PRECONDITION_FAILED - invalid arg 'x-delivery-limit' for queue 'q' in vhost '/' \
                 of queue type rabbit_classic_queue",
                Refusal::Invalid {
                    argument: "x-delivery-limit".into(),
                    why: "a classic queue does not take it".into(),
                },
            ),
            (
                "PRECONDITION_FAILED - invalid arg 'x-max-length' for queue 'q' in vhost '/': \
                 {unacceptable_type,longstr}",
                Refusal::Invalid {
                    argument: "x-max-length".into(),
                    why: "the broker refuses its value ({unacceptable_type,longstr})".into(),
                },
            ),
        ];
        for (reason, expected) in cases {
            assert_eq!(refusal(reason), Some(expected), "{reason}");
        }
        assert_eq!(
            refusal("RESOURCE_LOCKED - cannot obtain exclusive access"),
            None
        );
    }

    #[test]
    fn a_mismatch_says_what_differs_what_was_asked_and_what_to_set() {
        let q = queues(
            json!({"queue_type": "quorum", "arguments": {"x-max-length": 20},
            "queues": {"golconde.users": {"queue_type": "quorum"}}}),
        )
        .unwrap();
        let text = explain(
            q.spec("golconde.users"),
            "golconde.users",
            "PRECONDITION_FAILED - inequivalent arg 'x-queue-type' for queue 'golconde.users' in \
             vhost '/': received 'quorum' but current is 'classic'",
        );
        for part in [
            "exists as a classic queue",
            "as a quorum queue",
            "`queues.\"golconde.users\".queue_type` is \"quorum\"",
            "set `queues.\"golconde.users\".queue_type` = \"classic\"",
            "`declare = \"passive\"`",
            "delete the queue",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }

        let text = explain(
            q.spec("other"),
            "other",
            "PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'other' in vhost \
             '/': received '20' but current is '10'",
        );
        for part in [
            "argument `x-max-length` = `10`",
            "with `x-max-length` = `20` (from `arguments`)",
            "make \"x-max-length\" = 10 in `arguments`",
            "`declare = \"passive\"`",
            "delete the queue",
        ] {
            assert!(text.contains(part), "{part}: {text}");
        }

        let text = explain(
            q.spec("other"),
            "other",
            "PRECONDITION_FAILED - inequivalent arg 'x-single-active-consumer' for queue 'other' \
             in vhost '/': received none but current is the value 'true' of type 'bool'",
        );
        assert!(
            text.contains(
                "exists with argument `x-single-active-consumer` = `true`, but Golconde \
                 declares it without `x-single-active-consumer` (from `arguments`)"
            ),
            "{text}"
        );
        assert!(
            text.contains("make \"x-single-active-consumer\" = true in `arguments`"),
            "{text}"
        );

        let text = explain(
            q.spec("other"),
            "other",
            "PRECONDITION_FAILED - inequivalent arg 'x-overflow' for queue 'other' \
             in vhost '/': received the value 'drop-head' of type 'longstr' but current is none",
        );
        assert!(
            text.contains("exists without argument `x-overflow`, but Golconde declares it with `x-overflow` = `drop-head`"),
            "{text}"
        );
        assert!(
            text.contains("remove \"x-overflow\" from `arguments`"),
            "{text}"
        );

        let text = explain(
            q.spec("other"),
            "other",
            "PRECONDITION_FAILED - inequivalent arg 'x-overflow' for queue 'other' \
             in vhost '/': received 'reject-publish' but current is 'drop-head'",
        );
        assert!(
            text.contains("make \"x-overflow\" = \"drop-head\" in `arguments`"),
            "strings quoted as in the file: {text}"
        );

        let text = explain(
            q.spec("other"),
            "other",
            "PRECONDITION_FAILED - inequivalent arg 'durable' for queue 'other' in vhost '/': \
             received 'true' but current is 'false'",
        );
        assert!(text.contains("durable = false"), "{text}");
        assert!(text.contains("`declare = \"passive\"`"), "{text}");

        let text = explain(q.spec("other"), "other", "RESOURCE_LOCKED - exclusive");
        assert!(
            text.contains("durable, x-queue-type = \"quorum\", x-max-length = 20"),
            "{text}"
        );
    }
}

//! Reading a Golconde message into a [`Change`], and writing generated keys back into it.
//!
//! The message is read as an ordered list of fields whose values stay raw JSON text
//! ([`RawValue`]) until each is converted, which keeps numbers exact and lets `enrich`
//! rewrite one field while copying every other one verbatim.

use std::collections::{HashMap, HashSet};

use base64::Engine;
use golconde_plugin_api::{
    Action, Applied, Change, Column, Operation, PluginError, RString, RVec, Value,
};
use golconde_plugin_support::{
    json::{excerpt, Object},
    number,
};
use serde_json::value::RawValue;

use crate::{limits, limits::Limits};

/// The top-level fields a message may have.
const FIELDS: [&str; 5] = ["action", "data", "restriction", "table", "id"];

/// Reads an object; `what` names it in errors ("the message", "`data`"). A field given
/// twice is refused.
fn object<'a>(text: &'a str, what: &str) -> Result<Object<'a>, String> {
    let object = Object::parse(text, what)?;
    match object.repeated() {
        Some(name) => Err(format!("{what} has the field `{name}` twice")),
        None => Ok(object),
    }
}

/// The parts of a message, checked for shape but not yet for the action's needs.
struct Envelope {
    action: Action,
    data: Vec<Column>,
    restriction: Vec<Column>,
    table: Option<String>,
    id: Option<String>,
}

/// Reads a message body into a change; `table` resolves the message's `table` field (or
/// its absence) to the table to write, or refuses it. A message over `limits` is refused
/// before it is parsed.
pub fn parse_change(
    body: &[u8],
    limits: &Limits,
    table: impl FnOnce(Option<&str>) -> Result<String, PluginError>,
) -> Result<Change, PluginError> {
    let envelope = parse_envelope(body, limits).map_err(PluginError::permanent)?;
    let table = table(envelope.table.as_deref())?;
    let Envelope {
        action,
        mut data,
        restriction,
        id,
        ..
    } = envelope;
    let restriction = match action {
        Action::Upsert if restriction.is_empty() => restriction,
        Action::Upsert => {
            // The first Golconde's producers may name the row of a `set` in `restriction`:
            // those columns are the row's key, so they belong in the upserted data.
            let in_data: HashMap<String, usize> = data
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name.to_string(), i))
                .collect();
            for column in restriction {
                match in_data.get(column.name.as_str()).map(|&i| &data[i]) {
                    Some(c) if c.value != column.value => {
                        return Err(PluginError::permanent(format!(
                            "`set` has column `{}` in both `data` and `restriction`, with \
                             different values; give it once",
                            column.name
                        )))
                    }
                    Some(_) => {}
                    None => data.push(column),
                }
            }
            Vec::new()
        }
        _ => restriction,
    };
    Ok(Change {
        id: id.map(RString::from).into(),
        operations: RVec::from(vec![Operation {
            action,
            table: table.into(),
            data: data.into(),
            restriction: restriction.into(),
        }]),
    })
}

fn parse_envelope(body: &[u8], limits: &Limits) -> Result<Envelope, String> {
    let text = std::str::from_utf8(body)
        .map_err(|e| format!("the message body is not UTF-8 text: {e}"))?;
    // Before anything recursive or allocating looks at the message.
    limits::check(text, limits)?;
    let fields = object(text, "the message")?;
    if let Some((name, _)) = fields
        .fields
        .iter()
        .find(|(name, _)| !FIELDS.contains(&name.as_ref()))
    {
        return Err(format!(
            "the message has an unknown field `{name}`; a message has only {}",
            FIELDS.join(", ")
        ));
    }

    let action = match fields.get("action") {
        None => {
            return Err(
                "the message has no `action`; it must be one of add, set, update, delete".into(),
            )
        }
        Some(raw) => match serde_json::from_str::<&str>(raw.get()) {
            Ok("add") => Action::Insert,
            Ok("set") => Action::Upsert,
            Ok("update") => Action::Update,
            Ok("delete") => Action::Delete,
            _ => {
                return Err(format!(
                    "unknown action {}; it must be one of \"add\", \"set\", \"update\", \"delete\"",
                    excerpt(raw.get())
                ))
            }
        },
    };
    let verb = verb(action);
    let data = columns(fields.get("data"), "data", "`data`")?;
    let restriction = columns(fields.get("restriction"), "restriction", "`restriction`")?;
    let table = match fields.get("table").filter(|raw| raw.get() != "null") {
        None => None,
        Some(raw) => match serde_json::from_str::<String>(raw.get()) {
            Ok(t) if !t.trim().is_empty() => Some(t),
            _ => {
                return Err(format!(
                    "`table` must be a non-empty string such as \"schema.table\", not {}",
                    excerpt(raw.get())
                ))
            }
        },
    };
    let id = match fields.get("id").filter(|raw| raw.get() != "null") {
        None => None,
        Some(raw) => Some(parse_id(raw)?),
    };

    match action {
        Action::Insert | Action::Upsert | Action::Update if data.is_empty() => {
            return Err(format!(
                "`{verb}` needs a non-empty `data` object of column: value"
            ))
        }
        Action::Update | Action::Delete if restriction.is_empty() => {
            return Err(format!(
                "`{verb}` needs a non-empty `restriction` object of column: value selecting \
                 the rows; it never applies to all rows"
            ))
        }
        Action::Insert if !restriction.is_empty() => {
            return Err(
                "`add` inserts a new row and takes no `restriction`; use `set` to write a \
                 row by its key, or `update`"
                    .into(),
            )
        }
        Action::Delete if !data.is_empty() => {
            return Err(
                "`delete` takes no `data`; the rows to delete are selected by `restriction`".into(),
            )
        }
        _ => {}
    }
    Ok(Envelope {
        action,
        data,
        restriction,
        table,
        id,
    })
}

fn parse_id(raw: &RawValue) -> Result<String, String> {
    let text = raw.get();
    let id = match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(text).ok(),
        Some(b'-' | b'0'..=b'9') if !text.contains(['.', 'e', 'E']) => Some(text.to_string()),
        _ => None,
    };
    match id {
        Some(id) if !id.is_empty() => Ok(id),
        _ => Err(format!(
            "`id` must be a non-empty string or an integer, not {}",
            excerpt(text)
        )),
    }
}

/// The columns of `data` or `restriction`; absent or `null` is no columns. `quoted` is
/// `what` in backticks, given rather than formatted for each message.
fn columns(raw: Option<&RawValue>, what: &str, quoted: &str) -> Result<Vec<Column>, String> {
    let Some(raw) = raw.filter(|raw| raw.get() != "null") else {
        return Ok(Vec::new());
    };
    let fields =
        object(raw.get(), quoted).map_err(|e| format!("{e} (an object of column: value)"))?;
    // A loop into a vector of the right size: collecting the fields' iterator into one
    // moved each value through the stack several times over.
    let mut columns = Vec::with_capacity(fields.fields.len());
    for (name, value) in fields.fields {
        if name.is_empty() {
            return Err(format!("`{what}` has a column with an empty name"));
        }
        let value = to_value(value).map_err(|e| format!("`{what}.{name}`: {e}"))?;
        columns.push(Column::new(name.into_owned(), value));
    }
    Ok(columns)
}

/// A JSON value as a database-neutral value: objects stay JSON text, arrays become arrays.
/// Nested arrays are converted with a stack of their own, not by recursion, so the
/// dispatcher's stack does not grow with `max_depth`.
fn to_value(raw: &RawValue) -> Result<Value, String> {
    let mut open: Vec<OpenArray> = Vec::new();
    let mut value = start_value(raw, &mut open)?;
    loop {
        if let Some(value) = value {
            match open.last_mut() {
                None => return Ok(value),
                Some(array) => array.done.push(value),
            }
        }
        let array = open.last_mut().expect("an array is open");
        value = match array.rest.next() {
            Some(item) => start_value(item, &mut open)?,
            None => {
                let array = open.pop().expect("an array is open");
                Some(Value::Array(array.done.into()))
            }
        };
    }
}

/// An array being converted: the elements still to go, and those done.
struct OpenArray<'a> {
    rest: std::vec::IntoIter<&'a RawValue>,
    done: Vec<Value>,
}

/// The value of a scalar or an object; for an array, `None` after opening it on `open`.
fn start_value<'a>(
    raw: &'a RawValue,
    open: &mut Vec<OpenArray<'a>>,
) -> Result<Option<Value>, String> {
    let text = raw.get();
    Ok(Some(match text.as_bytes().first() {
        Some(b'n') => Value::Null,
        Some(b't') => Value::Bool(true),
        Some(b'f') => Value::Bool(false),
        // Without escapes, the string is the text between the quotes.
        Some(b'"') if !text.contains('\\') => Value::Text(text[1..text.len() - 1].into()),
        Some(b'"') => Value::Text(
            serde_json::from_str::<String>(text)
                .map_err(|e| e.to_string())?
                .into(),
        ),
        Some(b'{') => Value::Json(text.into()),
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| e.to_string())?;
            open.push(OpenArray {
                done: Vec::with_capacity(items.len()),
                rest: items.into_iter(),
            });
            return Ok(None);
        }
        _ => number::to_value(text),
    }))
}

fn verb(action: Action) -> &'static str {
    match action {
        Action::Insert => "add",
        Action::Upsert => "set",
        Action::Update => "update",
        Action::Delete => "delete",
    }
}

/// The body of the fan-out copy of an `add` message: its `data` with the columns the
/// database returned (generated keys) written in, so that replicas insert the same keys.
/// `None` when the message needs no change.
pub fn enrich_body(
    body: &[u8],
    limits: &Limits,
    applied: &Applied,
) -> Result<Option<String>, PluginError> {
    let returned: Vec<&Column> = applied.returned.iter().flatten().collect();
    if returned.is_empty() {
        return Ok(None);
    }
    let envelope = parse_envelope(body, limits).map_err(PluginError::permanent)?;
    if envelope.action != Action::Insert {
        return Ok(None);
    }
    let text = std::str::from_utf8(body).expect("checked by parse_envelope");
    let fields = object(text, "the message").map_err(PluginError::permanent)?;
    let mut out = String::with_capacity(text.len() + 32);
    out.push('{');
    for (i, (name, raw)) in fields.fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, name);
        out.push(':');
        if name != "data" {
            out.push_str(raw.get());
            continue;
        }
        let data = object(raw.get(), "`data`").map_err(PluginError::permanent)?;
        // The first value returned for a column wins, as it did before hashing.
        let mut by_name: HashMap<&str, &Column> = HashMap::with_capacity(returned.len());
        for column in &returned {
            by_name.entry(column.name.as_str()).or_insert(column);
        }
        let in_data: HashSet<&str> = data.fields.iter().map(|(name, _)| name.as_ref()).collect();
        out.push('{');
        let mut first = true;
        let mut separate = |out: &mut String| {
            if !std::mem::take(&mut first) {
                out.push(',');
            }
        };
        for (column, value) in &data.fields {
            separate(&mut out);
            push_json_string(&mut out, column);
            out.push(':');
            match by_name.get(column.as_ref()) {
                Some(c) => push_json_value(&mut out, &c.value),
                None => out.push_str(value.get()),
            }
        }
        let mut added = HashSet::new();
        for column in &returned {
            let name = column.name.as_str();
            if !in_data.contains(name) && added.insert(name) {
                separate(&mut out);
                push_json_string(&mut out, &column.name);
                out.push(':');
                push_json_value(&mut out, &column.value);
            }
        }
        out.push('}');
    }
    out.push('}');
    Ok(Some(out))
}

fn push_json_string(out: &mut String, text: &str) {
    out.push_str(&serde_json::to_string(text).expect("a string always serialises"));
}

fn push_json_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::Float(f) if f.is_finite() => out.push_str(&f.to_string()),
        Value::Float(f) => push_json_string(out, &f.to_string()),
        Value::Numeric(text) if serde_json::from_str::<serde_json::Number>(text).is_ok() => {
            out.push_str(text)
        }
        Value::Numeric(text) | Value::Text(text) => push_json_string(out, text),
        Value::Json(text) => out.push_str(text),
        Value::Bytes(bytes) => push_json_string(
            out,
            &base64::engine::general_purpose::STANDARD.encode(bytes.as_slice()),
        ),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_value(out, item);
            }
            out.push(']');
        }
    }
}

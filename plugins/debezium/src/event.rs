//! One Debezium change event into one [`Change`].
//!
//! The event is read as ordered lists of fields ([`Object`]) whose values stay raw JSON
//! text until each is decoded: numbers stay exact, and the raw text of key values makes
//! the change's id. Every refusal is a permanent error saying what is wrong and where (the
//! field, the table, the column).

use std::borrow::Cow;

use golconde_plugin_api::{
    Action, Change, Column, Message, Operation, PluginError, RString, RVec, Value,
};
use golconde_plugin_support::json::{excerpt, Object};
use sha2::{Digest, Sha256};

use crate::{
    limits,
    schema::{Row, Schema},
    settings::{Rules, Truncate},
    value,
};

/// The header Debezium puts on the delete event of a primary key change: the row's new
/// key, whose fields are the table's key columns.
pub const NEW_KEY_HEADER: &str = "__debezium.newkey";

/// A change's id past this length is replaced by a digest of it: ids are kept in a
/// database's primary key (`golconde.applied`), where long ones cost.
const MAX_KEY_TEXT: usize = 128;

/// What the event asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `c`: a row was inserted.
    Create,
    /// `r`: a row was read by a snapshot.
    Read,
    /// `u`: a row was updated.
    Update,
    /// `d`: a row was deleted.
    Delete,
    /// `t`: a table was truncated.
    Truncate,
    /// `m`: a logical decoding message (PostgreSQL's `pg_logical_emit_message`).
    Message,
}

impl Op {
    fn word(self) -> &'static str {
        match self {
            Op::Create => "create event (op `c`)",
            Op::Read => "snapshot read event (op `r`)",
            Op::Update => "update event (op `u`)",
            Op::Delete => "delete event (op `d`)",
            Op::Truncate => "truncate event (op `t`)",
            Op::Message => "message event (op `m`)",
        }
    }
}

/// The change of `message`: one operation, or none for a tombstone and a skipped truncate.
pub fn change(rules: &Rules, message: &Message) -> Result<Change, PluginError> {
    read(rules, message).map_err(PluginError::permanent)
}

/// A change that writes nothing: the message is acknowledged.
fn nothing() -> Change {
    Change {
        id: None.into(),
        operations: RVec::new(),
    }
}

fn read(rules: &Rules, message: &Message) -> Result<Change, String> {
    let body = message.body.as_slice();
    if body == rules.null_value.as_bytes() {
        tracing::debug!("a tombstone (the body is the `null_value`): nothing to apply");
        return Ok(nothing());
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| format!("the message body is not UTF-8 text: {e}"))?;
    match text.trim() {
        // A Kafka tombstone has no value at all: a producer that carries it over a queue
        // sends an empty body (or Debezium Server its `null.value`, above).
        "" => {
            tracing::debug!("a tombstone (an empty body): nothing to apply");
            return Ok(nothing());
        }
        "null" => {
            tracing::debug!("a tombstone (a JSON null): nothing to apply");
            return Ok(nothing());
        }
        _ => {}
    }
    // Before anything recursive or allocating looks at the event.
    limits::check(text, &rules.limits)?;
    let top = object(text, "the event")?;
    let (schema, payload) = if top.get("payload").is_some() || top.get("schema").is_some() {
        if let Some((name, _)) = top
            .fields
            .iter()
            .find(|(n, _)| n != "schema" && n != "payload")
        {
            return Err(format!(
                "the event has `schema` and `payload`, and also `{}`: a Kafka Connect JSON \
                 envelope has those two fields only",
                excerpt(name)
            ));
        }
        let payload = top.get("payload").ok_or(
            "the event has a `schema` but no `payload`: the JSON converter writes the change \
             itself in `payload`",
        )?;
        if payload.get() == "null" {
            tracing::debug!("a tombstone (a null `payload`): nothing to apply");
            return Ok(nothing());
        }
        let schema = match top.get("schema").filter(|raw| raw.get() != "null") {
            Some(raw) => Some(Schema::parse(raw.get())?),
            None => None,
        };
        (schema, object(payload.get(), "the event's `payload`")?)
    } else {
        (None, top)
    };
    Event::read(rules, message, &payload, schema.as_ref())
}

/// A change event's parts, checked.
struct Event<'a> {
    op: Op,
    connector: String,
    /// The source table as `key_columns` and `table_map` name it.
    source_table: String,
    target: String,
    source: Object<'a>,
    before: Option<Vec<Cell<'a>>>,
    after: Option<Vec<Cell<'a>>>,
}

/// One column of a row image: its name, its value, and its JSON as written.
struct Cell<'a> {
    name: Cow<'a, str>,
    value: Value,
    raw: &'a str,
}

impl<'a> Event<'a> {
    fn read(
        rules: &Rules,
        message: &Message,
        payload: &Object<'a>,
        schema: Option<&Schema>,
    ) -> Result<Change, String> {
        let op = op(payload)?;
        if op == Op::Message {
            return Err(
                "the event is a logical decoding message (op `m`), not a row change: Golconde \
                 applies row changes only; route the connector's message events to another \
                 queue"
                    .into(),
            );
        }
        let source = match payload.get("source").filter(|raw| raw.get() != "null") {
            Some(raw) => object(raw.get(), "`source`")?,
            None => {
                return Err(format!(
                    "the {} has no `source`, which names the table it changed",
                    op.word()
                ))
            }
        };
        let connector = field_text(&source, "connector")?
            .ok_or("`source` has no `connector` (postgresql, mysql, …)")?;
        let (source_table, table) = source_table(&connector, &source)?;
        let target = rules.target(&source_table, &table);
        if op == Op::Truncate {
            return match rules.truncate {
                Truncate::Refuse => Err(format!(
                    "the event truncates table `{source_table}` (op `t`), and Golconde does \
                     not apply them unless told to: set the processor's `truncate = \"apply\"` \
                     to delete every row of `{target}`, or `truncate = \"skip\"` to \
                     acknowledge and skip them, or leave them out at the source with the \
                     connector's `skipped.operations=t`"
                )),
                Truncate::Skip => {
                    tracing::info!(
                        "skipped a truncate of `{source_table}` (`truncate = \"skip\"`): \
                         `{target}` keeps its rows"
                    );
                    Ok(nothing())
                }
                // A delete with no restriction: every row of the target (ABI 1.1
                // `golconde.delete_all`; the host refuses it for a database without it).
                Truncate::Apply => {
                    let event = Event {
                        op,
                        connector,
                        source_table,
                        target,
                        source,
                        before: None,
                        after: None,
                    };
                    Ok(Change {
                        id: event.id(&[]).map(RString::from).into(),
                        operations: RVec::from(vec![event.operation(
                            Action::Delete,
                            Vec::new(),
                            Vec::new(),
                        )]),
                    })
                }
            };
        }
        let row = |name: &str| image(payload, name, schema, &source_table);
        let event = Event {
            op,
            connector,
            before: row("before")?,
            after: row("after")?,
            source_table,
            target,
            source,
        };
        let (operation, key) = match op {
            Op::Create | Op::Read => event.upsert(rules)?,
            Op::Update => event.update(rules)?,
            Op::Delete => event.delete(rules, message)?,
            Op::Truncate | Op::Message => unreachable!("answered above"),
        };
        Ok(Change {
            id: event.id(&key).map(RString::from).into(),
            operations: RVec::from(vec![operation]),
        })
    }

    /// `c` and `r`: the row as it is now, written whole.
    fn upsert(&self, rules: &Rules) -> Result<(Operation, Vec<&'a str>), String> {
        let after = self.image(&self.after, "after")?;
        let key = self.key_in(rules, after)?;
        let data = after
            .iter()
            .map(|c| Column::new(c.name.as_ref(), c.value.clone()))
            .collect();
        Ok((self.operation(Action::Upsert, data, Vec::new()), key))
    }

    /// `u`: an upsert of `after`, or, when `before` shows the row had another key, an
    /// update of the row with the old key. Values Debezium did not have are left out.
    fn update(&self, rules: &Rules) -> Result<(Operation, Vec<&'a str>), String> {
        let after = self.image(&self.after, "after")?;
        let key = self.key_in(rules, after)?;
        let data: Vec<Column> = after
            .iter()
            .filter(|c| !rules.placeholder.is(&c.value))
            .map(|c| Column::new(c.name.as_ref(), c.value.clone()))
            .collect();
        if data.is_empty() {
            return Err(format!(
                "the update event (op `u`) of table `{}` has no value Debezium had in \
                 `after`: every column holds the placeholder for an unavailable value",
                self.source_table
            ));
        }
        let old_key = match (&self.before, self.known_key(rules, after)) {
            (Some(before), Some(columns)) => {
                let old: Option<Vec<&Cell>> =
                    columns.iter().map(|k| usable(rules, before, k)).collect();
                old.filter(|old| {
                    old.iter()
                        .any(|c| find(after, &c.name).map(|a| &a.value) != Some(&c.value))
                })
            }
            _ => None,
        };
        match old_key {
            Some(old) => {
                let restriction = old
                    .iter()
                    .map(|c| Column::new(c.name.as_ref(), c.value.clone()))
                    .collect();
                Ok((self.operation(Action::Update, data, restriction), key))
            }
            None => Ok((self.operation(Action::Upsert, data, Vec::new()), key)),
        }
    }

    /// `d`: the row selected by its key in `before`: the configured key, the key Debezium
    /// names in the `__debezium.newkey` header, or the default key; with none of them, the
    /// event is refused.
    fn delete(
        &self,
        rules: &Rules,
        message: &Message,
    ) -> Result<(Operation, Vec<&'a str>), String> {
        let table = &self.source_table;
        let Some(before) = &self.before else {
            return Err(format!(
                "the delete event (op `d`) of table `{table}` has no `before`, so nothing \
                 says which row it deleted: give the source table a primary key or \
                 `REPLICA IDENTITY FULL` (PostgreSQL), or `binlog_row_image=FULL` (MySQL)"
            ));
        };
        let selected: Vec<&Cell> = if let Some(columns) = rules.key_columns.get(table) {
            columns
                .iter()
                .map(|k| {
                    usable(rules, before, k).ok_or_else(|| {
                        format!(
                            "the delete event (op `d`) of table `{table}` has no value in \
                             `before` for key column `{k}` (from the processor's \
                             `key_columns`): set `key_columns` to the table's primary key, \
                             which Debezium always sends, or give the source table \
                             `REPLICA IDENTITY FULL`"
                        )
                    })
                })
                .collect::<Result<_, _>>()?
        } else if let Some(columns) = header_key(rules, message)? {
            columns
                .iter()
                .map(|k| {
                    usable(rules, before, k).ok_or_else(|| {
                        format!(
                            "the delete event (op `d`) of table `{table}` has no value in \
                             `before` for key column `{k}`, which its `{NEW_KEY_HEADER}` \
                             header names"
                        )
                    })
                })
                .collect::<Result<_, _>>()?
        } else {
            let default = &rules.default_key_columns;
            let found: Option<Vec<&Cell>> = if default.is_empty() {
                None
            } else {
                default.iter().map(|k| usable(rules, before, k)).collect()
            };
            // Every column of `before` would not do: for a column the source did not send
            // (not in PostgreSQL's replica identity, or MySQL's minimal row image) Debezium
            // writes the column's default or a zero value when it is NOT NULL, and a
            // delete selecting by those would match no row, silently.
            found.ok_or_else(|| {
                let mut columns: Vec<String> = before
                    .iter()
                    .take(8)
                    .map(|c| format!("`{}`", excerpt(&c.name)))
                    .collect();
                if before.len() > columns.len() {
                    columns.push("…".into());
                }
                format!(
                    "the delete event (op `d`) of table `{table}` does not say which of its \
                     columns ({}) are the key: add `\"{table}\" = [\"<key column>\", …]` to \
                     the processor's `key_columns`",
                    columns.join(", ")
                )
            })?
        };
        let restriction = selected
            .iter()
            .map(|c| Column::new(c.name.as_ref(), c.value.clone()))
            .collect();
        let key = selected.iter().map(|c| c.raw).collect();
        Ok((self.operation(Action::Delete, Vec::new(), restriction), key))
    }

    /// A row image the op needs, with at least one column.
    fn image<'e>(
        &self,
        image: &'e Option<Vec<Cell<'a>>>,
        name: &str,
    ) -> Result<&'e [Cell<'a>], String> {
        match image {
            Some(cells) if !cells.is_empty() => Ok(cells),
            Some(_) => Err(format!(
                "the {} of table `{}` has an empty `{name}`: no column to write",
                self.op.word(),
                self.source_table
            )),
            None => Err(format!(
                "the {} of table `{}` has no `{name}`: it must hold the row",
                self.op.word(),
                self.source_table
            )),
        }
    }

    /// The key columns, when known and all present in `after`: the configured ones (an
    /// error when `after` lacks one), else the default ones.
    fn known_key<'r>(&self, rules: &'r Rules, after: &[Cell]) -> Option<&'r [String]> {
        if let Some(columns) = rules.key_columns.get(&self.source_table) {
            return Some(columns);
        }
        let default = &rules.default_key_columns;
        let present = !default.is_empty()
            && default
                .iter()
                .all(|k| find(after, k).is_some_and(|c| c.value != Value::Null));
        present.then_some(default.as_slice())
    }

    /// The raw key values of `after` for the change's id: the known key's, or every
    /// column's. A configured key column missing from `after` is an error: the
    /// configuration does not fit the table.
    fn key_in(&self, rules: &Rules, after: &'_ [Cell<'a>]) -> Result<Vec<&'a str>, String> {
        if let Some(columns) = rules.key_columns.get(&self.source_table) {
            if let Some(missing) = columns.iter().find(|k| find(after, k).is_none()) {
                return Err(format!(
                    "the {} of table `{}` has no column `{missing}` in `after`, which the \
                     processor's `key_columns` names as part of its key; fix `key_columns`",
                    self.op.word(),
                    self.source_table
                ));
            }
        }
        Ok(match self.known_key(rules, after) {
            Some(columns) => columns
                .iter()
                .filter_map(|k| find(after, k).map(|c| c.raw))
                .collect(),
            None => after.iter().map(|c| c.raw).collect(),
        })
    }

    fn operation(&self, action: Action, data: Vec<Column>, restriction: Vec<Column>) -> Operation {
        Operation {
            action,
            table: self.target.as_str().into(),
            data: data.into(),
            restriction: restriction.into(),
        }
    }

    /// `dbz:<connector>:<server name>:<position>:<source table>:<key>`, where the position
    /// is the event's place in the source's log; `None` for a connector whose position
    /// this processor does not know, or an event without one.
    fn id(&self, key: &[&str]) -> Option<String> {
        let fields: &[(&str, bool)] = match self.connector.as_str() {
            // The LSN of the change itself; the transaction for the reader.
            "postgresql" => &[("lsn", true), ("txId", false)],
            // A binlog event may hold several rows: `row` tells them apart.
            "mysql" | "mariadb" => &[("file", true), ("pos", true), ("row", false)],
            "sqlserver" => &[
                ("commit_lsn", true),
                ("change_lsn", true),
                ("event_serial_no", false),
            ],
            _ => return None,
        };
        let mut position = Vec::with_capacity(fields.len());
        for (name, required) in fields {
            match field_text(&self.source, name).ok().flatten() {
                Some(value) => position.push(format!("{name}={value}")),
                None if *required => return None,
                None => {}
            }
        }
        let server = field_text(&self.source, "name")
            .ok()
            .flatten()
            .unwrap_or_default();
        let mut values = format!("[{}]", key.join(","));
        if values.len() > MAX_KEY_TEXT {
            let digest = Sha256::digest(values.as_bytes());
            let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
            values = format!("sha256:{hex}");
        }
        Some(format!(
            "dbz:{}:{server}:{}:{}:{values}",
            self.connector,
            position.join(","),
            self.source_table
        ))
    }
}

/// The event's `op`, or why it has none.
fn op(payload: &Object) -> Result<Op, String> {
    let Some(raw) = payload.get("op") else {
        return Err(
            if payload.get("ddl").is_some() || payload.get("tableChanges").is_some() {
                "the event is a schema change (it has `ddl`), not a row change: Golconde applies \
             row changes only; set the connector's `include.schema.changes=false`, or route \
             its schema change topic to another queue"
                    .into()
            } else if payload.get("status").is_some()
                && (payload.get("event_count").is_some()
                    || payload.get("data_collections").is_some())
            {
                "the event is transaction metadata (it has `status`), not a row change: set the \
             connector's `provide.transaction.metadata=false`, or route its transaction topic \
             to another queue"
                    .into()
            } else {
                "the event has no `op`, so it is no Debezium change event (an event flattened by \
             the `ExtractNewRecordState` transformation is not supported: remove the \
             transformation)"
                    .into()
            },
        );
    };
    Ok(match serde_json::from_str::<String>(raw.get()).as_deref() {
        Ok("c") => Op::Create,
        Ok("r") => Op::Read,
        Ok("u") => Op::Update,
        Ok("d") => Op::Delete,
        Ok("t") => Op::Truncate,
        Ok("m") => Op::Message,
        _ => {
            return Err(format!(
                "the event's `op` is {}, which is none of Debezium's: c (create), r (read), \
                 u (update), d (delete), t (truncate)",
                excerpt(raw.get())
            ))
        }
    })
}

/// The source table's qualified name (`schema.table`, or `database.table` for the binlog
/// connectors, whose `schema` is not a schema) and its own name.
fn source_table(connector: &str, source: &Object) -> Result<(String, String), String> {
    let qualifier = match connector {
        "mongodb" => {
            return Err(
                "the event comes from the MongoDB connector: its documents are no rows, and \
                 this processor reads events of relational connectors only"
                    .into(),
            )
        }
        "mysql" | "mariadb" => field_text(source, "db")?,
        _ => match field_text(source, "schema")? {
            Some(schema) => Some(schema),
            None => field_text(source, "db")?,
        },
    };
    let table = field_text(source, "table")?;
    match (qualifier, table) {
        (Some(qualifier), Some(table)) if !qualifier.is_empty() && !table.is_empty() => {
            Ok((format!("{qualifier}.{table}"), table))
        }
        _ => Err(format!(
            "`source` does not name the table (it needs `{}` and `table`)",
            if matches!(connector, "mysql" | "mariadb") {
                "db"
            } else {
                "schema"
            }
        )),
    }
}

/// The row image `name` (`before` or `after`) of the payload, decoded; `None` when absent
/// or null.
fn image<'a>(
    payload: &Object<'a>,
    name: &str,
    schema: Option<&Schema>,
    table: &str,
) -> Result<Option<Vec<Cell<'a>>>, String> {
    let Some(raw) = payload.get(name).filter(|raw| raw.get() != "null") else {
        return Ok(None);
    };
    if !raw.get().starts_with('{') {
        return Err(format!(
            "`{name}` of table `{table}` must be an object of column: value (the row) or null, \
             not {}",
            excerpt(raw.get())
        ));
    }
    let row = schema.map(|s| Row::of(s, name)).transpose()?;
    let fields = object(raw.get(), &format!("`{name}`"))?;
    let mut cells = Vec::with_capacity(fields.fields.len());
    for (column, raw) in fields.fields {
        if column.is_empty() {
            return Err(format!(
                "`{name}` of table `{table}` has a column with an empty name"
            ));
        }
        let column_schema = match &row {
            Some(row) => Some(row.column(&column).ok_or_else(|| {
                format!(
                    "column `{}` of `{name}` (table `{table}`) is not in the event's schema",
                    excerpt(&column)
                )
            })?),
            None => None,
        };
        let value = value::decode(raw, column_schema).map_err(|e| {
            let typed = column_schema
                .map(|s| match s.logical() {
                    Some(logical) => format!(", of type `{}` `{logical}`", s.kind),
                    None => format!(", of type `{}`", s.kind),
                })
                .unwrap_or_default();
            format!(
                "column `{}` of `{name}` (table `{table}`{typed}): {e}",
                excerpt(&column)
            )
        })?;
        cells.push(Cell {
            name: column,
            value,
            raw: raw.get(),
        });
    }
    Ok(Some(cells))
}

fn find<'c, 'a>(cells: &'c [Cell<'a>], name: &str) -> Option<&'c Cell<'a>> {
    cells.iter().find(|c| c.name == name)
}

/// The column `name` of `image` if it has a value that can select a row.
fn usable<'c, 'a>(rules: &Rules, image: &'c [Cell<'a>], name: &str) -> Option<&'c Cell<'a>> {
    find(image, name).filter(|c| c.value != Value::Null && !rules.placeholder.is(&c.value))
}

/// The key columns the `__debezium.newkey` header names (its fields), if the message has
/// one: Debezium puts it on the delete event of a primary key change.
fn header_key(rules: &Rules, message: &Message) -> Result<Option<Vec<String>>, String> {
    let Some(text) = message.header(NEW_KEY_HEADER) else {
        return Ok(None);
    };
    let what = format!("the `{NEW_KEY_HEADER}` header");
    limits::check(text, &rules.limits).map_err(|e| format!("{what}: {e}"))?;
    let key = object(text, &what)?;
    let key = match key.get("payload") {
        Some(payload) if key.get("schema").is_some() => {
            object(payload.get(), &format!("the `payload` of {what}"))?
        }
        _ => key,
    };
    let columns: Vec<String> = key
        .fields
        .into_iter()
        .map(|(name, _)| name.into_owned())
        .collect();
    if columns.is_empty() || columns.iter().any(String::is_empty) {
        return Err(format!("{what} names no key column: {}", excerpt(text)));
    }
    Ok(Some(columns))
}

/// Reads an object; `what` names it in errors ("the event", "`after`"). A field given
/// twice is refused.
fn object<'a>(text: &'a str, what: &str) -> Result<Object<'a>, String> {
    let object = Object::parse(text, what)?;
    match object.repeated() {
        Some(name) => Err(format!("{what} has the field `{}` twice", excerpt(name))),
        None => Ok(object),
    }
}

/// The field `name` of `object` when it holds a string or a number, as text; `None` when
/// absent or null.
fn field_text(object: &Object, name: &str) -> Result<Option<String>, String> {
    let Some(raw) = object.get(name).filter(|raw| raw.get() != "null") else {
        return Ok(None);
    };
    let text = raw.get();
    if text.starts_with('"') {
        return serde_json::from_str(text)
            .map(Some)
            .map_err(|e| format!("`{name}` is not a valid string: {e}"));
    }
    if text.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) {
        return Ok(Some(text.to_string()));
    }
    Err(format!(
        "`{name}` must be a string or a number, not {}",
        excerpt(text)
    ))
}

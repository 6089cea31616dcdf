//! From one [`Operation`] to one SQL statement and its parameters.
//!
//! Identifiers in the SQL are the table's own (from [`crate::schema`]), quoted; every value
//! is a numbered bind parameter. So the SQL text depends only on the table and on which
//! columns an operation names, and the session's prepared-statement cache serves every
//! message of the same shape.

use golconde_plugin_api::{Action, Column, Operation, Value};
use rusqlite::types::Value as Sql;

use crate::{
    config::UnknownColumns,
    convert::to_sql,
    schema::{quote, Table},
};

/// A statement ready to run.
#[derive(Debug, PartialEq)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Sql>,
    /// Whether it returns a row of key columns (an insert into a table with a primary key).
    pub returns: bool,
}

/// Builds the statement for `op` on `table`; the error names the table and column. `None`:
/// an update all of whose columns were ignored (`unknown_columns`), which has nothing to do.
pub fn build(
    table: &Table,
    op: &Operation,
    unknown: UnknownColumns,
) -> Result<Option<Statement>, String> {
    let t = &table.name;
    // Dropping an unknown restriction column would widen what it selects: never ignored.
    let data = cells(table, &op.data, "data", unknown)?;
    let restriction = cells(table, &op.restriction, "restriction", UnknownColumns::Error)?;
    let verb = verb(op.action);
    // The processor checks these too; a database plugin must not rely on any processor.
    match op.action {
        Action::Insert | Action::Upsert if !restriction.is_empty() => {
            return Err(format!(
                "{verb} `{t}` takes no restriction; put the key columns in its data"
            ))
        }
        Action::Update if data.is_empty() && !op.data.is_empty() => return Ok(None),
        Action::Insert | Action::Upsert | Action::Update if data.is_empty() => {
            return Err(format!("{verb} `{t}` has no column of that table to write"))
        }
        Action::Update | Action::Delete if restriction.is_empty() => {
            return Err(format!(
                "{verb} `{t}` without a restriction would touch every row; it is refused"
            ))
        }
        Action::Delete if !op.data.is_empty() => return Err(format!("{verb} `{t}` takes no data")),
        _ => {}
    }

    let name = |i: usize| quote(&table.columns[i].name);
    let join = |names: &mut dyn Iterator<Item = String>| names.collect::<Vec<_>>().join(", ");
    let columns = join(&mut data.iter().map(|(i, _)| name(*i)));
    let values = join(&mut (1..=data.len()).map(|p| format!("?{p}")));
    let keys = join(&mut table.primary_key.iter().map(|&i| name(i)));
    let into = &table.quoted;
    let mut sql = match op.action {
        Action::Insert if table.primary_key.is_empty() => {
            format!("INSERT INTO {into} ({columns}) VALUES ({values})")
        }
        // RETURNING hands back the keys SQLite generated (an INTEGER PRIMARY KEY left out
        // of the data), which the processor writes into the fan-out copy so that replicas
        // store the same ids.
        Action::Insert => {
            format!("INSERT INTO {into} ({columns}) VALUES ({values}) RETURNING {keys}")
        }
        Action::Upsert => {
            if table.primary_key.is_empty() {
                return Err(format!(
                    "{verb} `{t}` needs a primary key to find its row, and the table has none; \
                     declare one, or send add/update instead"
                ));
            }
            let missing: Vec<&str> = table
                .primary_key
                .iter()
                .filter(|k| !data.iter().any(|(i, _)| i == *k))
                .map(|&k| table.columns[k].name.as_str())
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "{verb} `{t}` needs every primary key column in its data; missing: {}",
                    missing.join(", ")
                ));
            }
            let updates = join(
                &mut data
                    .iter()
                    .filter(|(i, _)| !table.primary_key.contains(i))
                    .map(|(i, _)| format!("{0} = excluded.{0}", name(*i))),
            );
            // Only key columns: a row that exists already has nothing to change.
            let then = if updates.is_empty() {
                "NOTHING".to_string()
            } else {
                format!("UPDATE SET {updates}")
            };
            format!(
                "INSERT INTO {into} ({columns}) VALUES ({values}) ON CONFLICT ({keys}) DO {then}"
            )
        }
        Action::Update => {
            let sets = join(
                &mut data
                    .iter()
                    .enumerate()
                    .map(|(p, (i, _))| format!("{} = ?{}", name(*i), p + 1)),
            );
            format!("UPDATE {into} SET {sets}")
        }
        Action::Delete => format!("DELETE FROM {into}"),
    };
    let mut params: Vec<Sql> = data.into_iter().map(|(_, v)| v).collect();
    if !restriction.is_empty() {
        let mut conditions = Vec::new();
        for (i, value) in restriction {
            // `= NULL` is never true; a restriction to NULL means the rows where it is NULL.
            if value == Sql::Null {
                conditions.push(format!("{} IS NULL", name(i)));
            } else {
                params.push(value);
                conditions.push(format!("{} = ?{}", name(i), params.len()));
            }
        }
        sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
    }
    Ok(Some(Statement {
        sql,
        params,
        returns: op.action == Action::Insert && !table.primary_key.is_empty(),
    }))
}

/// What an action does, for messages: "an insert into" `table`.
pub fn verb(action: Action) -> &'static str {
    match action {
        Action::Insert => "an insert into",
        Action::Upsert => "an upsert into",
        Action::Update => "an update of",
        Action::Delete => "a delete from",
    }
}

/// The columns of `columns` that `table` has, as (position, value), in the message's order.
fn cells(
    table: &Table,
    columns: &[Column],
    what: &str,
    unknown: UnknownColumns,
) -> Result<Vec<(usize, Sql)>, String> {
    let mut cells: Vec<(usize, Sql)> = Vec::with_capacity(columns.len());
    for column in columns {
        let Some(i) = table.column(&column.name) else {
            if unknown == UnknownColumns::Ignore {
                continue;
            }
            return Err(format!(
                "table `{}` has no column `{}` (named in the {what}); fix the message, or set \
                 `unknown_columns = \"ignore\"` to drop such columns from data",
                table.name, column.name
            ));
        };
        if cells.iter().any(|(seen, _)| *seen == i) {
            return Err(format!(
                "column `{}` appears twice in the {what} for `{}`",
                column.name, table.name
            ));
        }
        let info = &table.columns[i];
        let value = to_sql(&column.value, info.affinity).map_err(|reason| {
            format!(
                "column `{}` of `{}` ({}) cannot take {}: {reason}",
                info.name,
                table.name,
                if info.declared.is_empty() {
                    "no type"
                } else {
                    &info.declared
                },
                show(&column.value)
            )
        })?;
        cells.push((i, value));
    }
    Ok(cells)
}

/// A value for a message: short, so that a huge one cannot flood the log.
fn show(value: &Value) -> String {
    let text = match value {
        Value::Numeric(t) => t.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Array(items) => format!("an array of {} values", items.len()),
        other => format!("{other:?}"),
    };
    match text.char_indices().nth(64) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Affinity, ColumnInfo};
    use golconde_plugin_api::RVec;

    fn users() -> Table {
        let column = |name: &str, declared: &str| ColumnInfo {
            name: name.into(),
            declared: declared.into(),
            affinity: Affinity::of(declared),
        };
        Table {
            name: "users".into(),
            quoted: "\"users\"".into(),
            columns: vec![
                column("id", "INTEGER"),
                column("name", "TEXT"),
                column("score", "REAL"),
            ],
            primary_key: vec![0],
        }
    }

    fn op(action: Action, data: &[(&str, Value)], restriction: &[(&str, Value)]) -> Operation {
        let columns = |cs: &[(&str, Value)]| -> RVec<Column> {
            cs.iter().map(|(n, v)| Column::new(*n, v.clone())).collect()
        };
        Operation {
            action,
            table: "users".into(),
            data: columns(data),
            restriction: columns(restriction),
        }
    }

    fn sql(op: &Operation) -> Statement {
        build(&users(), op, UnknownColumns::Error).unwrap().unwrap()
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn an_insert_returns_the_primary_key() {
        let s = sql(&op(
            Action::Insert,
            &[("name", text("a")), ("SCORE", Value::Int(2))],
            &[],
        ));
        assert_eq!(
            s.sql,
            r#"INSERT INTO "users" ("name", "score") VALUES (?1, ?2) RETURNING "id""#
        );
        assert_eq!(s.params, [Sql::Text("a".into()), Sql::Integer(2)]);
        assert!(s.returns);
    }

    #[test]
    fn an_upsert_updates_every_column_but_the_key() {
        let s = sql(&op(
            Action::Upsert,
            &[("name", text("a")), ("id", Value::Int(7))],
            &[],
        ));
        assert_eq!(
            s.sql,
            r#"INSERT INTO "users" ("name", "id") VALUES (?1, ?2) ON CONFLICT ("id") DO UPDATE SET "name" = excluded."name""#
        );
        assert!(!s.returns);
        let s = sql(&op(Action::Upsert, &[("id", Value::Int(7))], &[]));
        assert!(
            s.sql.ends_with(r#"ON CONFLICT ("id") DO NOTHING"#),
            "{}",
            s.sql
        );
    }

    #[test]
    fn update_and_delete_and_their_restrictions() {
        let s = sql(&op(
            Action::Update,
            &[("score", Value::Float(1.5))],
            &[("id", Value::Int(7)), ("name", Value::Null)],
        ));
        assert_eq!(
            s.sql,
            r#"UPDATE "users" SET "score" = ?1 WHERE "id" = ?2 AND "name" IS NULL"#
        );
        assert_eq!(s.params, [Sql::Real(1.5), Sql::Integer(7)]);
        let s = sql(&op(
            Action::Delete,
            &[],
            &[("name", text("x")), ("id", Value::Int(1))],
        ));
        assert_eq!(
            s.sql,
            r#"DELETE FROM "users" WHERE "name" = ?1 AND "id" = ?2"#
        );
    }

    #[test]
    fn unknown_columns_are_refused_or_dropped_from_data_only() {
        let bad = op(
            Action::Update,
            &[("colour", text("red"))],
            &[("id", Value::Int(1))],
        );
        let err = build(&users(), &bad, UnknownColumns::Error).unwrap_err();
        assert!(
            err.contains("no column `colour`") && err.contains("`users`"),
            "{err}"
        );
        // Ignored, nothing is left to do.
        assert_eq!(build(&users(), &bad, UnknownColumns::Ignore), Ok(None));
        let insert = op(Action::Insert, &[("colour", text("red"))], &[]);
        let err = build(&users(), &insert, UnknownColumns::Ignore).unwrap_err();
        assert!(err.contains("no column of that table to write"), "{err}");
        let ok = op(
            Action::Update,
            &[("colour", text("red")), ("name", text("b"))],
            &[("id", Value::Int(1))],
        );
        let s = build(&users(), &ok, UnknownColumns::Ignore)
            .unwrap()
            .unwrap();
        assert_eq!(s.sql, r#"UPDATE "users" SET "name" = ?1 WHERE "id" = ?2"#);
        let widening = op(Action::Delete, &[], &[("colour", text("red"))]);
        let err = build(&users(), &widening, UnknownColumns::Ignore).unwrap_err();
        assert!(err.contains("named in the restriction"), "{err}");
    }

    #[test]
    fn malformed_operations_are_refused_with_reasons() {
        let table = users();
        for (op, reason) in [
            (op(Action::Delete, &[], &[]), "touch every row"),
            (
                op(Action::Update, &[("name", text("a"))], &[]),
                "touch every row",
            ),
            (
                op(
                    Action::Insert,
                    &[("id", Value::Int(1))],
                    &[("id", Value::Int(1))],
                ),
                "takes no restriction",
            ),
            (
                op(
                    Action::Delete,
                    &[("name", text("a"))],
                    &[("id", Value::Int(1))],
                ),
                "takes no data",
            ),
            (
                op(Action::Upsert, &[("name", text("a"))], &[]),
                "missing: id",
            ),
            (
                op(
                    Action::Insert,
                    &[("name", text("a")), ("Name", text("b"))],
                    &[],
                ),
                "appears twice",
            ),
            (
                op(
                    Action::Insert,
                    &[("score", Value::Numeric("1e999".into()))],
                    &[],
                ),
                "column `score` of `users` (REAL) cannot take 1e999: 1e999 is out of range",
            ),
            (
                op(Action::Insert, &[("name", Value::Array(RVec::new()))], &[]),
                "column `name` of `users` (TEXT) cannot take an array of 0 values",
            ),
        ] {
            let err = build(&table, &op, UnknownColumns::Error).unwrap_err();
            assert!(err.contains(reason), "{op:?}: {err}");
        }
        let mut keyless = users();
        keyless.primary_key.clear();
        let err = build(
            &keyless,
            &op(Action::Upsert, &[("id", Value::Int(1))], &[]),
            UnknownColumns::Error,
        )
        .unwrap_err();
        assert!(err.contains("has none"), "{err}");
    }

    #[test]
    fn a_hostile_column_name_never_reaches_the_sql() {
        let evil = r#"name" = 1; DROP TABLE users; --"#;
        let err = build(
            &users(),
            &op(Action::Insert, &[(evil, text("x"))], &[]),
            UnknownColumns::Error,
        )
        .unwrap_err();
        assert!(err.contains("has no column"), "{err}");
    }
}

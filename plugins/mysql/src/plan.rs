//! From operations to statements: each operation is checked against its table
//! ([`prepare`]), then consecutive operations of the same shape are grouped into runs,
//! each applied by as few statements as MySQL's limits allow ([`statements`]).
//!
//! A run is a stretch of consecutive operations, so every row's operations keep their
//! queue order. What one statement can do:
//! - inserts and upserts: one multi-row `INSERT` (`... ON DUPLICATE KEY UPDATE` for an
//!   upsert), whose rows the server applies in order, so two upserts of one row in a run
//!   leave what applying them one by one would; an upsert whose row collides with another
//!   row on a unique key other than its own fails rather than overwrite that row;
//! - deletes restricted by exactly the primary key: `DELETE ... WHERE (key) IN (...)`;
//! - updates restricted by exactly an integer primary key, writing no key column:
//!   `UPDATE ... JOIN` a derived table of the rows; a key that comes again starts a new
//!   run, since a join matching one row twice would apply an arbitrary one of the two;
//! - any other update or delete: a statement of its own.
//!
//! A statement holds at most 65,535 placeholders (the protocol's limit) and about
//! `max_bytes` of values, so long runs are cut into several statements.

use std::{collections::HashSet, fmt::Write, sync::Arc};

use golconde_plugin_api::{Action, Column, Operation};
pub use golconde_plugin_support::batch::Origin;
use golconde_plugin_support::shown::column_names;
use mysql_async::Value as MyValue;

use crate::{
    config::UnknownColumns,
    convert::{convert, show, Cell},
    schema::{Kind, Table},
};

/// The most placeholders one prepared statement may have.
pub const MAX_PLACEHOLDERS: usize = 65_535;

/// An operation checked against its table, with its values converted.
#[derive(Debug)]
pub struct Prepared<'a> {
    pub table: Arc<Table>,
    pub action: Action,
    /// Column positions and values, by column position.
    pub data: Vec<(usize, Cell<'a>)>,
    pub restriction: Vec<(usize, Cell<'a>)>,
    /// For an upsert, the columns of the key it is meant to find its row by.
    pub conflict: Vec<usize>,
}

impl Prepared<'_> {
    /// An update whose every column was ignored: there is nothing to do.
    pub fn is_noop(&self) -> bool {
        self.action == Action::Update && self.data.is_empty()
    }

    /// Restricted by exactly the primary key, with no NULL in it.
    fn by_primary_key(&self) -> bool {
        let key = &self.table.primary_key;
        !key.is_empty()
            && self.restriction.len() == key.len()
            && self
                .restriction
                .iter()
                .all(|(p, c)| key.contains(p) && *c != Cell::Null)
    }

    /// Whether several operations of this shape can share one statement.
    fn batches(&self) -> bool {
        match self.action {
            Action::Insert | Action::Upsert => true,
            Action::Delete => self.by_primary_key(),
            Action::Update => {
                self.by_primary_key()
                    && self
                        .restriction
                        .iter()
                        .all(|(p, _)| matches!(self.table.columns[*p].kind, Kind::Int { .. }))
                    && !self
                        .data
                        .iter()
                        .any(|(d, _)| self.restriction.iter().any(|(r, _)| r == d))
            }
        }
    }

    /// Whether `other` fits the same statement.
    fn same_shape(&self, other: &Prepared<'_>) -> bool {
        self.batches()
            && Arc::ptr_eq(&self.table, &other.table)
            && self.action == other.action
            && self.conflict == other.conflict
            && self.data.len() == other.data.len()
            && self.restriction.len() == other.restriction.len()
            && self.data.iter().zip(&other.data).all(|(a, b)| a.0 == b.0)
            && self
                .restriction
                .iter()
                .zip(&other.restriction)
                .all(|(a, b)| a.0 == b.0)
    }

    /// The integer key of a batched update, to keep one row out of a run twice.
    fn update_key(&self) -> Option<Vec<i128>> {
        (self.action == Action::Update).then(|| {
            self.restriction
                .iter()
                .map(|(_, c)| match c {
                    Cell::Int(i) => i128::from(*i),
                    Cell::UInt(u) => i128::from(*u),
                    _ => i128::MIN,
                })
                .collect()
        })
    }

    fn placeholders(&self) -> usize {
        self.data.len()
            + self
                .restriction
                .iter()
                .filter(|(_, c)| *c != Cell::Null)
                .count()
    }

    /// The bytes of its values.
    pub fn size(&self) -> usize {
        self.data
            .iter()
            .chain(&self.restriction)
            .map(|(_, c)| c.size())
            .sum()
    }
}

/// Why an operation does not fit its table.
#[derive(Debug)]
pub struct Misfit {
    pub message: String,
    /// It depends on the table's definition (a column it lacks, a column's type, its
    /// keys), so a stale cached definition could explain it.
    pub stale_suspect: bool,
}

impl From<String> for Misfit {
    fn from(message: String) -> Misfit {
        Misfit {
            message,
            stale_suspect: false,
        }
    }
}

/// Checks `op` against `table`; the error says what is wrong, naming table and column.
pub fn prepare<'a>(
    table: &Arc<Table>,
    op: &'a Operation,
    unknown: UnknownColumns,
) -> Result<Prepared<'a>, Misfit> {
    let t = &table.display;
    let data = cells(table, &op.data, "data", unknown)?;
    let restriction = cells(table, &op.restriction, "restriction", UnknownColumns::Error)?;
    let verb = match op.action {
        Action::Insert => "insert",
        Action::Upsert => "upsert",
        Action::Update => "update",
        Action::Delete => "delete",
    };
    match op.action {
        Action::Insert | Action::Upsert if !restriction.is_empty() => {
            return Err(format!(
                "an {verb} into `{t}` takes no restriction; put the key columns in its data"
            )
            .into())
        }
        Action::Insert | Action::Upsert if data.is_empty() => {
            return Err(Misfit {
                message: format!(
                    "an {verb} into `{t}` has no column of that table to write (given: {})",
                    column_names(&op.data)
                ),
                stale_suspect: true,
            })
        }
        // A delete with no restriction at all is a truncate (`golconde.delete_all`), which
        // the host passes only on purpose; an update of every row never is.
        Action::Update if restriction.is_empty() => {
            return Err(format!(
                "an {verb} of `{t}` without a restriction would touch every row; it is refused"
            )
            .into())
        }
        Action::Delete if !op.data.is_empty() => {
            return Err(format!("a delete from `{t}` takes no data").into())
        }
        _ => {}
    }
    if let Some((p, _)) = data.iter().find(|(p, _)| table.columns[*p].generated) {
        return Err(Misfit {
            message: format!(
                "column `{}` of `{t}` is a generated column: the server computes it, so it \
                 cannot be written; drop it from the message",
                table.columns[*p].name
            ),
            stale_suspect: true,
        });
    }
    let mut conflict = Vec::new();
    if op.action == Action::Upsert {
        let has = |key: &Vec<usize>| {
            !key.is_empty() && key.iter().all(|k| data.iter().any(|(c, _)| c == k))
        };
        conflict = std::iter::once(&table.primary_key)
            .chain(&table.unique_keys)
            .find(|key| has(key))
            .cloned()
            .ok_or_else(|| {
                let mut keys = Vec::new();
                if !table.primary_key.is_empty() {
                    keys.push(format!(
                        "primary key ({})",
                        table.column_names(&table.primary_key)
                    ));
                }
                for key in &table.unique_keys {
                    keys.push(format!("unique key ({})", table.column_names(key)));
                }
                let message = if keys.is_empty() {
                    format!(
                        "an upsert into `{t}` needs a primary key or unique key to find its \
                         row, and the table has none; use add/update instead"
                    )
                } else {
                    format!(
                        "an upsert into `{t}` needs every column of its {} in its data; it has \
                         only {}",
                        keys.join(" or "),
                        column_names(&op.data)
                    )
                };
                Misfit {
                    message,
                    stale_suspect: true,
                }
            })?;
    }
    Ok(Prepared {
        table: table.clone(),
        action: op.action,
        data,
        restriction,
        conflict,
    })
}

fn cells<'a>(
    table: &Table,
    columns: &'a [Column],
    what: &str,
    unknown: UnknownColumns,
) -> Result<Vec<(usize, Cell<'a>)>, Misfit> {
    let mut cells: Vec<(usize, Cell<'a>)> = Vec::with_capacity(columns.len());
    for column in columns {
        let Some(position) = table.column(&column.name) else {
            if unknown == UnknownColumns::Ignore {
                continue;
            }
            return Err(Misfit {
                message: format!(
                    "table `{}` has no column `{}` (named in the {what}); fix the message, or \
                     set `unknown_columns = \"ignore\"` to drop such columns from data",
                    table.display, column.name
                ),
                stale_suspect: true,
            });
        };
        if cells.iter().any(|(p, _)| *p == position) {
            return Err(format!(
                "column `{}` appears twice in the {what} for `{}`",
                column.name, table.display
            )
            .into());
        }
        let info = &table.columns[position];
        let cell = convert(&info.kind, &column.value).map_err(|reason| Misfit {
            message: format!(
                "column `{}` of `{}` ({}) cannot take {}: {reason}",
                info.name,
                table.display,
                info.type_name,
                show(&column.value)
            ),
            stale_suspect: true,
        })?;
        cells.push((position, cell));
    }
    cells.sort_by_key(|(p, _)| *p);
    Ok(cells)
}

/// How an insert statement tells the keys it generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returning {
    /// Not an insert, or nothing to tell.
    Nothing,
    /// MariaDB: `RETURNING` the key columns, one row per inserted row, in order.
    Rows,
    /// MySQL: `LAST_INSERT_ID()` is the first generated value; the others follow it by
    /// `auto_increment_increment` (valid with `innodb_autoinc_lock_mode` 0 or 1).
    LastInsertId,
}

/// What the server can do for generated keys, learnt at connect.
#[derive(Debug, Clone, Copy)]
pub struct Server {
    /// MariaDB 10.5 or newer: `INSERT ... RETURNING`.
    pub returning: bool,
    /// MySQL with `innodb_autoinc_lock_mode` 0 or 1: a multi-row insert's generated
    /// values are consecutive.
    pub consecutive_ids: bool,
    /// How many bytes of values one statement may carry.
    pub max_bytes: usize,
    /// How many bytes of values one operation may have: what fits in one packet
    /// (`max_allowed_packet`) beside the statement's text. The server drops the connection
    /// on a larger packet, which would look transient.
    pub max_row_bytes: usize,
    /// The server's `max_allowed_packet`, for the error that names it.
    pub max_packet: u64,
}

/// One statement and the operations it applies.
#[derive(Debug)]
pub struct Statement<'p, 'a> {
    pub sql: String,
    pub params: Vec<MyValue>,
    pub rows: Vec<(Origin, &'p Prepared<'a>)>,
    pub returning: Returning,
}

/// Groups operations, in order, into runs of one shape, and each run into statements.
pub fn statements<'p, 'a>(
    ops: impl IntoIterator<Item = (Origin, &'p Prepared<'a>)>,
    server: Server,
) -> Vec<Statement<'p, 'a>> {
    let mut runs: Vec<Vec<(Origin, &'p Prepared<'a>)>> = Vec::new();
    let mut keys: HashSet<Vec<i128>> = HashSet::new();
    for (origin, op) in ops {
        if op.is_noop() {
            continue;
        }
        let key = op.update_key();
        let joins = runs.last().is_some_and(|run| {
            run[0].1.same_shape(op) && key.as_ref().is_none_or(|k| !keys.contains(k))
        });
        if !joins {
            runs.push(Vec::new());
            keys.clear();
        }
        if let Some(key) = key {
            keys.insert(key);
        }
        runs.last_mut().expect("pushed above").push((origin, op));
    }
    let mut statements = Vec::new();
    for run in runs {
        let first = run[0].1;
        let returning = returning(first, server);
        let per_row = first.placeholders().max(1);
        let mut max_rows = (MAX_PLACEHOLDERS / per_row).max(1);
        if returning == Returning::LastInsertId && !server.consecutive_ids {
            max_rows = 1;
        }
        let mut chunk: Vec<(Origin, &'p Prepared<'a>)> = Vec::new();
        let mut bytes = 0;
        for row in run {
            let size = row.1.size();
            if !chunk.is_empty() && (chunk.len() >= max_rows || bytes + size > server.max_bytes) {
                statements.push(statement(std::mem::take(&mut chunk), returning));
                bytes = 0;
            }
            bytes += size;
            chunk.push(row);
        }
        if !chunk.is_empty() {
            statements.push(statement(chunk, returning));
        }
    }
    statements
}

/// The columns an insert into `table` returns: its primary key, else its
/// AUTO_INCREMENT column.
pub fn returned_columns(table: &Table) -> Vec<usize> {
    if !table.primary_key.is_empty() {
        table.primary_key.clone()
    } else {
        table.auto_increment.into_iter().collect()
    }
}

fn returning(op: &Prepared<'_>, server: Server) -> Returning {
    if op.action != Action::Insert || returned_columns(&op.table).is_empty() {
        return Returning::Nothing;
    }
    if server.returning {
        return Returning::Rows;
    }
    match op.table.auto_increment {
        Some(p) if !op.data.iter().any(|(c, _)| *c == p) => Returning::LastInsertId,
        // Every key column is in the data: what was given is what was stored.
        _ => Returning::Nothing,
    }
}

fn statement<'p, 'a>(
    rows: Vec<(Origin, &'p Prepared<'a>)>,
    returning: Returning,
) -> Statement<'p, 'a> {
    let first = rows[0].1;
    let table = &first.table;
    let col = |p: usize| table.columns[p].quoted.as_str();
    let mut sql = String::new();
    let mut params = Vec::new();
    let list = |n: usize| vec!["?"; n].join(", ");
    match first.action {
        Action::Insert | Action::Upsert => {
            let columns: Vec<&str> = first.data.iter().map(|(p, _)| col(*p)).collect();
            let row = format!("({})", list(columns.len()));
            write!(
                sql,
                "INSERT INTO {} ({}) VALUES {}",
                table.quoted,
                columns.join(", "),
                vec![row.as_str(); rows.len()].join(", ")
            )
            .expect("writing to a String");
            for (_, op) in &rows {
                params.extend(op.data.iter().map(|(_, c)| c.to_value()));
            }
            if first.action == Action::Upsert {
                // The server takes a conflict on any unique key for "the row is there";
                // one found by a key other than the upsert's would be overwritten though it
                // is another row. The guard, assigned first, fails the statement then
                // (strict mode makes 1/0 an error, 1365) and leaves the key as it is
                // otherwise.
                let same: Vec<String> = first
                    .conflict
                    .iter()
                    .map(|p| format!("{0} <=> VALUES({0})", col(*p)))
                    .collect();
                let key = col(first.conflict[0]);
                let mut updates = vec![format!("{key} = IF({}, {key}, 1/0)", same.join(" AND "))];
                updates.extend(
                    first
                        .data
                        .iter()
                        .filter(|(p, _)| !first.conflict.contains(p))
                        .map(|(p, _)| format!("{0} = VALUES({0})", col(*p))),
                );
                write!(sql, " ON DUPLICATE KEY UPDATE {}", updates.join(", "))
                    .expect("writing to a String");
            } else if returning == Returning::Rows {
                let keys: Vec<&str> = returned_columns(table)
                    .into_iter()
                    .map(|p| table.columns[p].quoted.as_str())
                    .collect();
                write!(sql, " RETURNING {}", keys.join(", ")).expect("writing to a String");
            }
        }
        Action::Delete | Action::Update if rows.len() == 1 => {
            let op = first;
            let condition: Vec<String> = op
                .restriction
                .iter()
                .map(|(p, c)| match c {
                    Cell::Null => format!("{} IS NULL", col(*p)),
                    _ => format!("{} = ?", col(*p)),
                })
                .collect();
            if op.action == Action::Delete {
                write!(sql, "DELETE FROM {}", table.quoted).expect("writing to a String");
            } else {
                let sets: Vec<String> = op
                    .data
                    .iter()
                    .map(|(p, _)| format!("{} = ?", col(*p)))
                    .collect();
                write!(sql, "UPDATE {} SET {}", table.quoted, sets.join(", "))
                    .expect("writing to a String");
                params.extend(op.data.iter().map(|(_, c)| c.to_value()));
            }
            // No condition: a delete of every row, in the batch's transaction (TRUNCATE
            // would commit it on its own).
            if !condition.is_empty() {
                write!(sql, " WHERE {}", condition.join(" AND ")).expect("writing to a String");
            }
            params.extend(
                op.restriction
                    .iter()
                    .filter(|(_, c)| *c != Cell::Null)
                    .map(|(_, c)| c.to_value()),
            );
        }
        Action::Delete => {
            let key: Vec<&str> = first.restriction.iter().map(|(p, _)| col(*p)).collect();
            let (target, tuple) = if key.len() == 1 {
                (key[0].to_string(), "?".to_string())
            } else {
                (
                    format!("({})", key.join(", ")),
                    format!("({})", list(key.len())),
                )
            };
            write!(
                sql,
                "DELETE FROM {} WHERE {target} IN ({})",
                table.quoted,
                vec![tuple.as_str(); rows.len()].join(", ")
            )
            .expect("writing to a String");
            for (_, op) in &rows {
                params.extend(op.restriction.iter().map(|(_, c)| c.to_value()));
            }
        }
        Action::Update => {
            let aliases = |op: &Prepared<'_>| -> Vec<String> {
                let keys = (0..op.restriction.len()).map(|i| format!("k{i}"));
                let data = (0..op.data.len()).map(|i| format!("d{i}"));
                keys.chain(data).collect()
            };
            let names = aliases(first);
            let selects: Vec<String> = (0..rows.len())
                .map(|i| {
                    if i == 0 {
                        let columns: Vec<String> =
                            names.iter().map(|a| format!("? AS {a}")).collect();
                        format!("SELECT {}", columns.join(", "))
                    } else {
                        format!("SELECT {}", list(names.len()))
                    }
                })
                .collect();
            let on: Vec<String> = first
                .restriction
                .iter()
                .enumerate()
                .map(|(i, (p, _))| format!("t.{} = v.k{i}", col(*p)))
                .collect();
            let sets: Vec<String> = first
                .data
                .iter()
                .enumerate()
                .map(|(i, (p, _))| format!("t.{} = v.d{i}", col(*p)))
                .collect();
            write!(
                sql,
                "UPDATE {} AS t JOIN ({}) AS v ON {} SET {}",
                table.quoted,
                selects.join(" UNION ALL "),
                on.join(" AND "),
                sets.join(", ")
            )
            .expect("writing to a String");
            for (_, op) in &rows {
                params.extend(op.restriction.iter().map(|(_, c)| c.to_value()));
                params.extend(op.data.iter().map(|(_, c)| c.to_value()));
            }
        }
    }
    Statement {
        sql,
        params,
        rows,
        returning,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use golconde_plugin_api::Value;
    use golconde_plugin_support::batch;

    use super::*;
    use crate::schema::{quote_ident, ColumnInfo};

    fn table() -> Arc<Table> {
        let column = |name: &str, kind: Kind| ColumnInfo {
            name: name.into(),
            quoted: quote_ident(name),
            type_name: "t".into(),
            kind,
            auto_increment: name == "id",
            generated: name == "g",
        };
        let int = Kind::Int {
            min: i64::MIN as i128,
            max: i64::MAX as i128,
            boolean: false,
        };
        let text = Kind::Text {
            max_chars: None,
            max_bytes: None,
            charset: "utf8mb4".into(),
        };
        let columns = vec![
            column("id", int.clone()),
            column("na`me", text.clone()),
            column("code", text),
            column("g", int),
        ];
        Arc::new(Table {
            quoted: "`s`.`t`".into(),
            display: "s.t".into(),
            database: "s".into(),
            by_name: columns
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name.clone(), i))
                .collect::<HashMap<_, _>>(),
            columns,
            primary_key: vec![0],
            unique_keys: vec![vec![2]],
            auto_increment: Some(0),
        })
    }

    fn operation(
        action: Action,
        data: &[(&str, Value)],
        restriction: &[(&str, Value)],
    ) -> Operation {
        let columns = |cs: &[(&str, Value)]| -> Vec<Column> {
            cs.iter().map(|(n, v)| Column::new(*n, v.clone())).collect()
        };
        Operation {
            action,
            table: "s.t".into(),
            data: columns(data).into(),
            restriction: columns(restriction).into(),
        }
    }

    const MARIADB: Server = Server {
        returning: true,
        consecutive_ids: true,
        max_bytes: 1 << 24,
        max_row_bytes: 1 << 25,
        max_packet: 1 << 25,
    };

    fn sqls(ops: &[Operation], server: Server) -> Vec<(String, usize)> {
        let t = table();
        let prepared: Vec<Prepared> = ops
            .iter()
            .map(|op| prepare(&t, op, UnknownColumns::Error).unwrap())
            .collect();
        // Each operation a change of its own.
        statements(batch::operations(prepared.chunks(1)), server)
            .into_iter()
            .map(|s| (s.sql, s.params.len()))
            .collect()
    }

    #[test]
    fn statements_for_each_action() {
        let insert = |n: &str| operation(Action::Insert, &[("na`me", Value::Text(n.into()))], &[]);
        assert_eq!(
            sqls(&[insert("a"), insert("b")], MARIADB),
            [(
                "INSERT INTO `s`.`t` (`na``me`) VALUES (?), (?) RETURNING `id`".to_string(),
                2
            )]
        );
        let upsert = operation(
            Action::Upsert,
            &[("id", Value::Int(1)), ("na`me", Value::Text("x".into()))],
            &[],
        );
        assert_eq!(
            sqls(&[upsert], MARIADB)[0].0,
            "INSERT INTO `s`.`t` (`id`, `na``me`) VALUES (?, ?) ON DUPLICATE KEY UPDATE \
             `id` = IF(`id` <=> VALUES(`id`), `id`, 1/0), `na``me` = VALUES(`na``me`)"
        );
        let delete = |id: i64| operation(Action::Delete, &[], &[("id", Value::Int(id))]);
        assert_eq!(
            sqls(&[delete(1), delete(2), delete(1)], MARIADB),
            [("DELETE FROM `s`.`t` WHERE `id` IN (?, ?, ?)".to_string(), 3)]
        );
        let update = |id: i64| {
            operation(
                Action::Update,
                &[("code", Value::Text("c".into()))],
                &[("id", Value::Int(id))],
            )
        };
        let batched = sqls(&[update(1), update(2), update(1)], MARIADB);
        assert_eq!(
            batched,
            [
                (
                    "UPDATE `s`.`t` AS t JOIN (SELECT ? AS k0, ? AS d0 UNION ALL SELECT ?, ?) \
                     AS v ON t.`id` = v.k0 SET t.`code` = v.d0"
                        .to_string(),
                    4
                ),
                (
                    "UPDATE `s`.`t` SET `code` = ? WHERE `id` = ?".to_string(),
                    2
                )
            ]
        );
        let by_name = operation(
            Action::Update,
            &[("code", Value::Text("c".into()))],
            &[("na`me", Value::Null), ("code", Value::Text("d".into()))],
        );
        assert_eq!(
            sqls(&[by_name], MARIADB)[0].0,
            "UPDATE `s`.`t` SET `code` = ? WHERE `na``me` IS NULL AND `code` = ?"
        );
        let every_row = operation(Action::Delete, &[], &[]);
        assert_eq!(
            sqls(&[every_row], MARIADB),
            [("DELETE FROM `s`.`t`".to_string(), 0)]
        );
    }

    #[test]
    fn mysql_returns_generated_keys_by_last_insert_id() {
        let insert = |n: &str| operation(Action::Insert, &[("na`me", Value::Text(n.into()))], &[]);
        let consecutive = Server {
            returning: false,
            ..MARIADB
        };
        assert_eq!(
            sqls(&[insert("a"), insert("b")], consecutive),
            [(
                "INSERT INTO `s`.`t` (`na``me`) VALUES (?), (?)".to_string(),
                2
            )]
        );
        let interleaved = Server {
            consecutive_ids: false,
            ..consecutive
        };
        assert_eq!(sqls(&[insert("a"), insert("b")], interleaved).len(), 2);
    }

    #[test]
    fn long_runs_are_cut_at_the_placeholder_limit() {
        let ops: Vec<Operation> = (0..40_000)
            .map(|i| {
                operation(
                    Action::Upsert,
                    &[("id", Value::Int(i)), ("code", Value::Text("x".into()))],
                    &[],
                )
            })
            .collect();
        let statements = sqls(&ops, MARIADB);
        assert_eq!(statements.len(), 2);
        assert_eq!(statements[0].1, 65_534);
        assert_eq!(statements[1].1, 80_000 - 65_534);
    }

    #[test]
    fn misfits_name_table_and_column() {
        let t = table();
        let misfit = |op: &Operation| prepare(&t, op, UnknownColumns::Error).unwrap_err();
        let e = misfit(&operation(
            Action::Upsert,
            &[("na`me", Value::Text("x".into()))],
            &[],
        ));
        assert!(
            e.message.contains("primary key (id) or unique key (code)"),
            "{}",
            e.message
        );
        let e = misfit(&operation(Action::Insert, &[("g", Value::Int(1))], &[]));
        assert!(
            e.message.contains("`g` of `s.t` is a generated column"),
            "{}",
            e.message
        );
        let e = misfit(&operation(
            Action::Insert,
            &[("id", Value::Bool(true))],
            &[],
        ));
        assert!(
            e.message
                .contains("column `id` of `s.t` (t) cannot take true"),
            "{}",
            e.message
        );
    }
}

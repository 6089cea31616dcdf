//! From operations to statements: each operation is checked against its table
//! ([`prepare`]), then consecutive operations of the same shape are grouped into a
//! [`Run`] that one set-based statement applies ([`runs`], [`sql`]).
//!
//! A run is a stretch of consecutive operations, so every row's operations keep their
//! queue order. Within one run no target row may be touched twice (PostgreSQL forbids it
//! for `ON CONFLICT DO UPDATE` and picks an arbitrary source row for `UPDATE ... FROM`):
//! operations of the same shape on the same row are collapsed to the last one, which has
//! the same columns and so overwrites all the earlier one wrote; an upsert keeps the key
//! as the first one spelled it, as the row the first one inserted would have.
//!
//! "The same row" is decided as the server decides it. Where equal values are equal
//! texts (integers, booleans, binary timestamps, `text` under a deterministic collation),
//! that is done here. Where they need not be (`numeric` `1.0` and `1.00`, a `uuid` in
//! upper and lower case, one instant at two offsets, a case-insensitive collation), the
//! statement itself keeps the last row per key by position (`DISTINCT ON` over the key
//! cast to its column's type and collation, ordered by `WITH ORDINALITY`).
//!
//! An update that writes a column it is restricted by moves rows between keys, so
//! applying several at once is not applying them in order: it is a run of its own.

use std::{collections::HashMap, fmt::Write, sync::Arc};

use golconde_plugin_api::{Action, Column, Operation};
pub use golconde_plugin_support::batch::Origin;
use golconde_plugin_support::shown::column_names;
use tokio_postgres::types::ToSql;

use crate::{
    config::UnknownColumns,
    convert::{convert, show, Cell, Wire},
    schema::Table,
};

/// An operation checked against its table, with its values converted.
#[derive(Debug)]
pub struct Prepared<'a> {
    pub table: Arc<Table>,
    pub action: Action,
    /// Column positions and values, by column position.
    pub data: Vec<(usize, Cell<'a>)>,
    pub restriction: Vec<(usize, Cell<'a>)>,
    /// For an upsert, the columns of the key it conflicts on.
    pub conflict: Vec<usize>,
}

impl<'a> Prepared<'a> {
    /// An update whose every column was ignored: there is nothing to do.
    pub fn is_noop(&self) -> bool {
        self.action == Action::Update && self.data.is_empty()
    }

    /// Whether `other` fits the same statement.
    fn same_shape(&self, other: &Prepared<'_>) -> bool {
        !self.moves_rows()
            && Arc::ptr_eq(&self.table, &other.table)
            && self.action == other.action
            && self.conflict == other.conflict
            && self.data.len() == other.data.len()
            && self.restriction.len() == other.restriction.len()
            && self
                .data
                .iter()
                .zip(&other.data)
                .all(|(a, b)| a.0 == b.0 && self.wire(a) == self.wire(b))
            && self
                .restriction
                .iter()
                .zip(&other.restriction)
                .all(|(a, b)| {
                    a.0 == b.0
                        && (a.1 == Cell::Null) == (b.1 == Cell::Null)
                        && self.wire(a) == self.wire(b)
                })
    }

    /// How the value at a column position travels.
    fn wire(&self, (position, cell): &(usize, Cell<'_>)) -> Wire {
        Wire::of(&self.table.columns[*position].kind, cell)
    }

    /// An update writing a column it is restricted by: it can move rows to a key
    /// another update of the same statement would look for.
    fn moves_rows(&self) -> bool {
        self.action == Action::Update
            && self
                .data
                .iter()
                .any(|(d, _)| self.restriction.iter().any(|(r, _)| r == d))
    }

    /// The columns whose values name the row an upsert or update touches: the conflict
    /// key of an upsert, the restriction columns with a value (not `IS NULL`) of an update.
    fn key_positions(&self) -> Vec<(usize, usize)> {
        match self.action {
            Action::Upsert => self
                .conflict
                .iter()
                .map(|c| {
                    let slot = self.data.iter().position(|(p, _)| p == c);
                    (slot.expect("conflict columns are in the data"), *c)
                })
                .collect(),
            Action::Update => self
                .restriction
                .iter()
                .enumerate()
                .filter(|(_, (_, cell))| *cell != Cell::Null)
                .map(|(slot, (p, _))| (slot, *p))
                .collect(),
            Action::Insert | Action::Delete => Vec::new(),
        }
    }

    /// Whether two keys of this shape can name one row while spelled differently, so that
    /// only the server can tell (see the module's documentation).
    fn keys_need_the_server(&self) -> bool {
        self.key_positions().iter().any(|&(slot, position)| {
            let column = &self.table.columns[position];
            let cell = match self.action {
                Action::Upsert => &self.data[slot],
                _ => &self.restriction[slot],
            };
            match self.wire(cell) {
                Wire::Int | Wire::Bool | Wire::Timestamp { .. } => false,
                Wire::Float => true,
                Wire::Text => !column.bytewise,
            }
        })
    }

    /// The values that name the row an upsert or update touches, for collapsing here;
    /// `None` where the server must compare them, or where the key has a NULL (which
    /// conflicts with nothing).
    fn key(&self) -> Option<RowKey<'_, 'a>> {
        match self.action {
            Action::Upsert | Action::Update if self.keys_need_the_server() => None,
            Action::Upsert if self.key_cells().any(|c| *c == Cell::Null) => None,
            Action::Upsert | Action::Update => Some(RowKey(self)),
            Action::Insert | Action::Delete => None,
        }
    }

    fn key_cells(&self) -> impl Iterator<Item = &Cell<'a>> {
        let upsert = self.action == Action::Upsert;
        let conflict = self.conflict.iter().map(move |i| {
            &self
                .data
                .iter()
                .find(|(c, _)| c == i)
                .expect("conflict columns are in the data")
                .1
        });
        let restriction = self.restriction.iter().map(|(_, c)| c);
        conflict
            .take(if upsert { usize::MAX } else { 0 })
            .chain(restriction.take(if upsert { 0 } else { usize::MAX }))
    }
}

/// An operation's row key; equal keys within one run name the same row.
struct RowKey<'p, 'a>(&'p Prepared<'a>);

impl PartialEq for RowKey<'_, '_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.key_cells().eq(other.0.key_cells())
    }
}

impl Eq for RowKey<'_, '_> {}

impl std::hash::Hash for RowKey<'_, '_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for cell in self.0.key_cells() {
            match cell {
                Cell::Null => 0u8.hash(state),
                Cell::Int(i) => i.hash(state),
                Cell::Float(f) => f.to_bits().hash(state),
                Cell::Bool(b) => b.hash(state),
                Cell::Text(t) => t.hash(state),
                Cell::Micros(m) => m.hash(state),
            }
        }
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
                        "an upsert into `{t}` needs a primary key or unique index to find its \
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

/// Operations of one shape, applied by one statement.
#[derive(Debug)]
pub struct Run<'p, 'a> {
    /// The operations the statement sends, in order; an operation collapsed into a later
    /// one is applied by it, and is not among them.
    pub rows: Vec<(Origin, &'p Prepared<'a>)>,
}

/// Groups operations, in order, into runs of one shape; `count` is how many there are.
pub fn runs<'p, 'a>(
    ops: impl IntoIterator<Item = (Origin, &'p Prepared<'a>)>,
    count: usize,
) -> Vec<Run<'p, 'a>> {
    let mut runs: Vec<Run<'p, 'a>> = Vec::new();
    // The run being built, with holes where an operation was collapsed into a later one.
    // Both are sized for the whole batch, which is usually one run: grown step by step,
    // the map was rehashed about ten times for a batch of 500.
    let mut rows: Vec<Option<(Origin, &'p Prepared<'a>)>> = Vec::with_capacity(count);
    let mut keys: foldhash::HashMap<RowKey<'p, 'a>, usize> =
        HashMap::with_capacity_and_hasher(count, Default::default());
    let mut finish = |rows: &mut Vec<Option<_>>| {
        if !rows.is_empty() {
            runs.push(Run {
                rows: rows.drain(..).flatten().collect(),
            });
        }
    };
    for (origin, op) in ops {
        if op.is_noop() {
            continue;
        }
        let first = rows.iter().flatten().next();
        if !matches!(first, Some((_, first)) if first.same_shape(op)) {
            finish(&mut rows);
            keys.clear();
        }
        if let Some(key) = op.key() {
            // The later operation goes last, where the statement keeps it if the server
            // finds another row of the run to be the same (see `sql`).
            if let Some(at) = keys.insert(key, rows.len()) {
                rows[at] = None;
            }
        }
        rows.push(Some((origin, op)));
    }
    finish(&mut rows);
    runs
}

impl<'p, 'a> Run<'p, 'a> {
    /// The statement for this run's shape.
    pub fn sql(&self) -> String {
        let first = self.rows[0].1;
        sql(first)
    }

    /// Whether the statement returns the inserted rows' keys.
    pub fn returns(&self) -> bool {
        self.rows[0].1.action == Action::Insert && !self.rows[0].1.table.primary_key.is_empty()
    }

    /// One array parameter per data column, then one per non-NULL restriction column.
    pub fn params(&self) -> Vec<Box<dyn ToSql + Sync + Send + 'p>> {
        let first = self.rows[0].1;
        let mut params: Vec<Box<dyn ToSql + Sync + Send + 'p>> = Vec::new();
        for (slot, entry) in first.data.iter().enumerate() {
            params.push(self.column(first.wire(entry), |op| &op.data[slot].1));
        }
        for (slot, entry) in first.restriction.iter().enumerate() {
            if entry.1 != Cell::Null {
                params.push(self.column(first.wire(entry), |op| &op.restriction[slot].1));
            }
        }
        params
    }

    /// One column's values as an array parameter; every row of a run has the same wire.
    fn column(
        &self,
        wire: Wire,
        cell: impl Fn(&'p Prepared<'a>) -> &'p Cell<'a>,
    ) -> Box<dyn ToSql + Sync + Send + 'p> {
        let cells = self.rows.iter().map(|(_, op)| cell(op));
        match wire {
            Wire::Int => Box::new(
                cells
                    .map(|c| match c {
                        Cell::Int(i) => Some(*i),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
            Wire::Float => Box::new(
                cells
                    .map(|c| match c {
                        Cell::Float(f) => Some(*f),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
            Wire::Bool => Box::new(
                cells
                    .map(|c| match c {
                        Cell::Bool(b) => Some(*b),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
            Wire::Text => Box::new(
                cells
                    .map(|c| match c {
                        Cell::Text(t) => Some(t.as_ref()),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
            Wire::Timestamp { .. } => Box::new(
                cells
                    .map(|c| match c {
                        Cell::Micros(m) => Some(*m),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
        }
    }
}

/// The set-based statement for operations shaped like `op`: values come from `unnest`
/// of one array parameter per column (`v.d0`, `v.d1`... for data, `v.r0`... for the
/// restriction), each cast to its column's type.
pub fn sql(op: &Prepared<'_>) -> String {
    let table = &op.table;
    let col = |i: usize| &table.columns[i];
    let mut arrays = Vec::new();
    let mut aliases = Vec::new();
    let mut n = 0;
    for (slot, entry) in op.data.iter().enumerate() {
        n += 1;
        arrays.push(format!("${n}::{}", op.wire(entry).array_type()));
        aliases.push(format!("d{slot}"));
    }
    for (slot, entry) in op.restriction.iter().enumerate() {
        if entry.1 != Cell::Null {
            n += 1;
            arrays.push(format!("${n}::{}", op.wire(entry).array_type()));
            aliases.push(format!("r{slot}"));
        }
    }
    // A restriction of NULLs only has no parameter; one row of nothing stands in for it.
    let source = if arrays.is_empty() {
        "(VALUES (1)) AS v(x)".to_string()
    } else if op.keys_need_the_server() {
        last_per_key(op, &arrays, &aliases)
    } else {
        format!("unnest({}) AS v({})", arrays.join(", "), aliases.join(", "))
    };
    let value = |slot: usize, position: usize| format!("v.d{slot}::{}", col(position).cast);
    let condition = || {
        op.restriction
            .iter()
            .enumerate()
            .map(|(slot, (position, cell))| {
                if *cell == Cell::Null {
                    format!("t.{} IS NULL", col(*position).quoted)
                } else {
                    format!(
                        "t.{} = v.r{slot}::{}",
                        col(*position).quoted,
                        col(*position).cast
                    )
                }
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let mut sql = String::new();
    match op.action {
        Action::Insert | Action::Upsert => {
            let columns: Vec<&str> = op
                .data
                .iter()
                .map(|(p, _)| col(*p).quoted.as_str())
                .collect();
            let values: Vec<String> = op
                .data
                .iter()
                .enumerate()
                .map(|(slot, (p, _))| value(slot, *p))
                .collect();
            write!(
                sql,
                "INSERT INTO {} ({}) SELECT {} FROM {source}",
                table.quoted,
                columns.join(", "),
                values.join(", ")
            )
            .expect("writing to a String");
            if op.keys_need_the_server() {
                // Rows are inserted in queue order, as one by one (sequences, triggers).
                sql.push_str(" ORDER BY v.n");
            }
            if op.action == Action::Upsert {
                let target: Vec<&str> = op
                    .conflict
                    .iter()
                    .map(|p| col(*p).quoted.as_str())
                    .collect();
                let updates: Vec<String> = op
                    .data
                    .iter()
                    .filter(|(p, _)| !op.conflict.contains(p))
                    .map(|(p, _)| format!("{0} = EXCLUDED.{0}", col(*p).quoted))
                    .collect();
                if updates.is_empty() {
                    write!(sql, " ON CONFLICT ({}) DO NOTHING", target.join(", "))
                } else {
                    write!(
                        sql,
                        " ON CONFLICT ({}) DO UPDATE SET {}",
                        target.join(", "),
                        updates.join(", ")
                    )
                }
                .expect("writing to a String");
            } else if !table.primary_key.is_empty() {
                let keys: Vec<String> = table
                    .primary_key
                    .iter()
                    .map(|p| format!("{}::text", col(*p).quoted))
                    .collect();
                write!(sql, " RETURNING {}", keys.join(", ")).expect("writing to a String");
            }
        }
        Action::Update => {
            let sets: Vec<String> = op
                .data
                .iter()
                .enumerate()
                .map(|(slot, (p, _))| format!("{} = {}", col(*p).quoted, value(slot, *p)))
                .collect();
            write!(
                sql,
                "UPDATE {} AS t SET {} FROM {source} WHERE {}",
                table.quoted,
                sets.join(", "),
                condition()
            )
            .expect("writing to a String");
        }
        Action::Delete if op.restriction.is_empty() => {
            // Every row, in the batch's transaction (TRUNCATE would take the table's
            // strongest lock and ignore the rows' triggers).
            write!(sql, "DELETE FROM {}", table.quoted).expect("writing to a String");
        }
        Action::Delete => {
            write!(
                sql,
                "DELETE FROM {} AS t USING {source} WHERE {}",
                table.quoted,
                condition()
            )
            .expect("writing to a String");
        }
    }
    sql
}

/// The rows of `unnest` with, of each set of rows the server takes for one key, only the
/// last by position; for an upsert, with the key columns of the first of them, which is
/// what applying them one by one leaves in a row the first one inserted. A key with a
/// NULL names no row, so such rows are all kept.
fn last_per_key(op: &Prepared<'_>, arrays: &[String], aliases: &[String]) -> String {
    let upsert = op.action == Action::Upsert;
    let keys = op.key_positions();
    let alias = |slot: usize| {
        if upsert {
            format!("d{slot}")
        } else {
            format!("r{slot}")
        }
    };
    let mut key: Vec<String> = keys
        .iter()
        .map(|&(slot, position)| {
            let column = &op.table.columns[position];
            let collate = column.collate.as_deref().unwrap_or_default();
            format!("v.{}::{} {collate}", alias(slot), column.cast)
                .trim_end()
                .to_string()
        })
        .collect();
    if upsert {
        let nulls: Vec<String> = keys
            .iter()
            .map(|&(slot, _)| format!("v.{} IS NULL", alias(slot)))
            .collect();
        key.push(format!("CASE WHEN {} THEN v.n END", nulls.join(" OR ")));
    }
    let key = key.join(", ");
    let columns: Vec<String> = aliases
        .iter()
        .map(|a| {
            let is_key = upsert && keys.iter().any(|&(slot, _)| *a == alias(slot));
            if is_key {
                format!("first_value(v.{a}) OVER (PARTITION BY {key} ORDER BY v.n) AS {a}")
            } else {
                format!("v.{a}")
            }
        })
        .collect();
    format!(
        "(SELECT DISTINCT ON ({key}) {}, v.n FROM unnest({}) WITH ORDINALITY AS v({}, n) \
         ORDER BY {key}, v.n DESC) AS v",
        columns.join(", "),
        arrays.join(", "),
        aliases.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use golconde_plugin_api::Value;
    use golconde_plugin_support::batch;

    use super::*;

    /// The runs of `prepared`, each operation a change of its own.
    fn one_each<'p, 'a>(prepared: &'p [Prepared<'a>]) -> Vec<Run<'p, 'a>> {
        runs(batch::operations(prepared.chunks(1)), prepared.len())
    }
    use crate::schema::{quote_ident, ColumnInfo, Kind};

    fn table() -> Arc<Table> {
        let column = |name: &str, cast: &str, kind: Kind| ColumnInfo {
            name: name.into(),
            quoted: quote_ident(name),
            type_name: cast.into(),
            cast: format!("\"pg_catalog\".\"{cast}\""),
            bytewise: matches!(kind, Kind::Text { .. }),
            collate: matches!(kind, Kind::Text { .. } | Kind::Other)
                .then(|| r#"COLLATE "pg_catalog"."default""#.to_string()),
            kind,
        };
        let columns = vec![
            column(
                "id",
                "int8",
                Kind::Int {
                    min: i64::MIN,
                    max: i64::MAX,
                },
            ),
            column("na\"me", "text", Kind::Text { max: None }),
            column("at", "timestamptz", Kind::Timestamp { tz: true }),
            column("u", "uuid", Kind::Other),
        ];
        Arc::new(Table {
            quoted: r#""s"."t""#.into(),
            display: "s.t".into(),
            schema: "s".into(),
            by_name: columns
                .iter()
                .enumerate()
                .map(|(i, c)| (c.name.clone(), i))
                .collect(),
            columns,
            primary_key: vec![0],
            unique_keys: vec![vec![3]],
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

    #[test]
    fn statements_for_each_action() {
        let t = table();
        let sql = |op: &Operation| sql(&prepare(&t, op, UnknownColumns::Error).unwrap());
        let row = [("id", Value::Int(1)), ("na\"me", Value::Text("x".into()))];
        assert_eq!(
            sql(&operation(Action::Insert, &row, &[])),
            r#"INSERT INTO "s"."t" ("id", "na""me") SELECT v.d0::"pg_catalog"."int8", v.d1::"pg_catalog"."text" FROM unnest($1::pg_catalog.int8[], $2::pg_catalog.text[]) AS v(d0, d1) RETURNING "id"::text"#
        );
        assert_eq!(
            sql(&operation(Action::Upsert, &row, &[])),
            r#"INSERT INTO "s"."t" ("id", "na""me") SELECT v.d0::"pg_catalog"."int8", v.d1::"pg_catalog"."text" FROM unnest($1::pg_catalog.int8[], $2::pg_catalog.text[]) AS v(d0, d1) ON CONFLICT ("id") DO UPDATE SET "na""me" = EXCLUDED."na""me""#
        );
        assert_eq!(
            sql(&operation(Action::Upsert, &row[..1], &[])),
            r#"INSERT INTO "s"."t" ("id") SELECT v.d0::"pg_catalog"."int8" FROM unnest($1::pg_catalog.int8[]) AS v(d0) ON CONFLICT ("id") DO NOTHING"#
        );
        assert_eq!(
            sql(&operation(
                Action::Update,
                &[("at", Value::Text("now".into()))],
                &[("id", Value::Int(1)), ("na\"me", Value::Null)]
            )),
            r#"UPDATE "s"."t" AS t SET "at" = v.d0::"pg_catalog"."timestamptz" FROM unnest($1::pg_catalog.text[], $2::pg_catalog.int8[]) AS v(d0, r0) WHERE t."id" = v.r0::"pg_catalog"."int8" AND t."na""me" IS NULL"#
        );
        assert_eq!(
            sql(&operation(Action::Delete, &[], &[("na\"me", Value::Null)])),
            r#"DELETE FROM "s"."t" AS t USING (VALUES (1)) AS v(x) WHERE t."na""me" IS NULL"#
        );
        assert_eq!(
            sql(&operation(Action::Delete, &[], &[])),
            r#"DELETE FROM "s"."t""#
        );
        let every_row = operation(Action::Update, &row, &[]);
        let refused = prepare(&t, &every_row, UnknownColumns::Error).unwrap_err();
        assert!(refused.message.contains("without a restriction"));
    }

    #[test]
    fn runs_split_at_a_change_of_shape_and_collapse_repeated_keys() {
        let t = table();
        let set = |id: i64, name: &str| {
            operation(
                Action::Upsert,
                &[("id", Value::Int(id)), ("na\"me", Value::Text(name.into()))],
                &[],
            )
        };
        let ops = [
            set(1, "a"),
            set(2, "b"),
            set(1, "c"),
            operation(Action::Delete, &[], &[("id", Value::Int(2))]),
            set(2, "d"),
            operation(Action::Upsert, &[("id", Value::Int(3))], &[]),
        ];
        let prepared: Vec<Prepared> = ops
            .iter()
            .map(|op| prepare(&t, op, UnknownColumns::Error).unwrap())
            .collect();
        let runs = one_each(&prepared);
        let changes =
            |run: &Run| -> Vec<usize> { run.rows.iter().map(|(o, _)| o.change).collect() };
        assert_eq!(runs.len(), 4);
        // The later upsert of key 1 replaces the earlier one, and goes last.
        assert_eq!(changes(&runs[0]), [1, 2]);
        assert_eq!(changes(&runs[1]), [3]);
        assert_eq!(changes(&runs[2]), [4]);
        assert_eq!(changes(&runs[3]), [5]);
    }

    #[test]
    fn keys_only_the_server_can_compare_are_collapsed_by_the_statement() {
        let t = table();
        fn prepared<'a>(t: &Arc<Table>, op: &'a Operation) -> Prepared<'a> {
            prepare(t, op, UnknownColumns::Error).unwrap()
        }
        let set = operation(
            Action::Upsert,
            &[("u", Value::Text("A".into())), ("na\"me", Value::Null)],
            &[],
        );
        assert_eq!(
            sql(&prepared(&t, &set)),
            r#"INSERT INTO "s"."t" ("na""me", "u") SELECT v.d0::"pg_catalog"."text", v.d1::"pg_catalog"."uuid" FROM (SELECT DISTINCT ON (v.d1::"pg_catalog"."uuid" COLLATE "pg_catalog"."default", CASE WHEN v.d1 IS NULL THEN v.n END) v.d0, first_value(v.d1) OVER (PARTITION BY v.d1::"pg_catalog"."uuid" COLLATE "pg_catalog"."default", CASE WHEN v.d1 IS NULL THEN v.n END ORDER BY v.n) AS d1, v.n FROM unnest($1::pg_catalog.text[], $2::pg_catalog.text[]) WITH ORDINALITY AS v(d0, d1, n) ORDER BY v.d1::"pg_catalog"."uuid" COLLATE "pg_catalog"."default", CASE WHEN v.d1 IS NULL THEN v.n END, v.n DESC) AS v ORDER BY v.n ON CONFLICT ("u") DO UPDATE SET "na""me" = EXCLUDED."na""me""#
        );
        let update = operation(
            Action::Update,
            &[("id", Value::Int(1))],
            &[("u", Value::Text("A".into()))],
        );
        assert_eq!(
            sql(&prepared(&t, &update)),
            r#"UPDATE "s"."t" AS t SET "id" = v.d0::"pg_catalog"."int8" FROM (SELECT DISTINCT ON (v.r0::"pg_catalog"."uuid" COLLATE "pg_catalog"."default") v.d0, v.r0, v.n FROM unnest($1::pg_catalog.int8[], $2::pg_catalog.text[]) WITH ORDINALITY AS v(d0, r0, n) ORDER BY v.r0::"pg_catalog"."uuid" COLLATE "pg_catalog"."default", v.n DESC) AS v WHERE t."u" = v.r0::"pg_catalog"."uuid""#
        );
        // Such operations are all sent, the statement keeping the last of each key.
        let ops = [set.clone(), set.clone(), update.clone(), update];
        let prepared: Vec<Prepared> = ops.iter().map(|op| prepared(&t, op)).collect();
        let runs = one_each(&prepared);
        let sizes: Vec<usize> = runs.iter().map(|r| r.rows.len()).collect();
        assert_eq!(sizes, [2, 2]);
    }

    #[test]
    fn an_update_of_its_own_restriction_columns_is_a_run_of_its_own() {
        let t = table();
        let moves = |to: i64| {
            operation(
                Action::Update,
                &[("id", Value::Int(to))],
                &[("id", Value::Int(1))],
            )
        };
        let ops = [moves(2), moves(3), moves(4)];
        let prepared: Vec<Prepared> = ops
            .iter()
            .map(|op| prepare(&t, op, UnknownColumns::Error).unwrap())
            .collect();
        let runs = one_each(&prepared);
        assert_eq!(runs.len(), 3);
    }

    #[test]
    fn rfc_3339_timestamps_go_binary_and_runs_split_where_the_wire_changes() {
        let t = table();
        let set = |id: i64, at: Value| {
            operation(Action::Upsert, &[("id", Value::Int(id)), ("at", at)], &[])
        };
        let ops = [
            set(1, Value::Text("2024-02-29T13:14:15Z".into())),
            set(2, Value::Null),
            set(3, Value::Text("2024-02-29 13:14:15+01".into())),
            set(4, Value::Text("yesterday".into())),
            set(5, Value::Text("2024-02-29T13:14:15Z".into())),
        ];
        let prepared: Vec<Prepared> = ops
            .iter()
            .map(|op| prepare(&t, op, UnknownColumns::Error).unwrap())
            .collect();
        assert!(sql(&prepared[0]).contains("$2::pg_catalog.timestamptz[]"));
        assert!(sql(&prepared[3]).contains("$2::pg_catalog.text[]"));
        let runs = one_each(&prepared);
        let changes: Vec<Vec<usize>> = runs
            .iter()
            .map(|run| run.rows.iter().map(|(o, _)| o.change).collect())
            .collect();
        assert_eq!(changes, [vec![0, 1, 2], vec![3], vec![4]]);
    }

    #[test]
    fn misfits_name_table_and_column() {
        let t = table();
        let misfit = |op: &Operation| prepare(&t, op, UnknownColumns::Error).unwrap_err();
        let e = misfit(&operation(
            Action::Upsert,
            &[("na\"me", Value::Text("x".into()))],
            &[],
        ));
        assert!(e.message.contains("primary key (id)"), "{}", e.message);
        assert!(e.stale_suspect);
        let e = misfit(&operation(
            Action::Insert,
            &[("id", Value::Bool(true))],
            &[],
        ));
        assert!(
            e.message
                .contains("column `id` of `s.t` (int8) cannot take true"),
            "{}",
            e.message
        );
        let e = misfit(&operation(
            Action::Insert,
            &[("id", Value::Int(1)), ("id", Value::Int(2))],
            &[],
        ));
        assert!(e.message.contains("`id` appears twice"), "{}", e.message);
        assert!(!e.stale_suspect);
        let e = misfit(&operation(
            Action::Insert,
            &[("id", Value::Int(1))],
            &[("id", Value::Int(1))],
        ));
        assert!(e.message.contains("takes no restriction"), "{}", e.message);
        let update = operation(
            Action::Update,
            &[("nope", Value::Int(1))],
            &[("id", Value::Int(1))],
        );
        let ignored = prepare(&t, &update, UnknownColumns::Ignore).unwrap();
        assert!(ignored.is_noop());
    }
}

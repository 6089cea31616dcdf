//! What the plugin knows of a table: its columns, their affinities and its primary key,
//! read with `pragma_table_info`.
//!
//! Every column a statement names comes from here, spelled as the table spells it, so a
//! message can only ever name columns that exist: a misspelt column is an error naming it,
//! never SQL.

use rusqlite::Connection;

/// How SQLite stores a value written to a column: its *type affinity*, decided by the
/// declared type's spelling (<https://sqlite.org/datatype3.html#determination_of_column_affinity>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affinity {
    Integer,
    Text,
    /// Declared `BLOB`, or with no type at all: values are stored as given.
    Blob,
    Real,
    Numeric,
}

impl Affinity {
    /// SQLite's own rules, in SQLite's order: `INT` wins over `CHAR`, and so on.
    pub fn of(declared: &str) -> Affinity {
        let upper = declared.to_ascii_uppercase();
        if upper.contains("INT") {
            Affinity::Integer
        } else if ["CHAR", "CLOB", "TEXT"].iter().any(|t| upper.contains(t)) {
            Affinity::Text
        } else if upper.contains("BLOB") || upper.trim().is_empty() {
            Affinity::Blob
        } else if ["REAL", "FLOA", "DOUB"].iter().any(|t| upper.contains(t)) {
            Affinity::Real
        } else {
            Affinity::Numeric
        }
    }
}

#[derive(Debug, Clone)]
pub struct ColumnInfo {
    pub name: String,
    /// The declared type, for messages (`varchar(20)`), and where the affinity comes from.
    pub declared: String,
    pub affinity: Affinity,
}

#[derive(Debug, Clone)]
pub struct Table {
    /// As operations name it (`users`, `main.users`), for messages.
    pub name: String,
    /// Quoted, for statements: `"main"."users"`.
    pub quoted: String,
    pub columns: Vec<ColumnInfo>,
    /// Positions in `columns`, in the key's order.
    pub primary_key: Vec<usize>,
}

impl Table {
    /// The column a message calls `name`. SQLite's identifiers are case-insensitive (for
    /// ASCII), so the match is too: a message may say `Email` for `email`, as SQL could.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns
            .iter()
            .position(|c| c.name.eq_ignore_ascii_case(name))
    }

    pub fn key_names(&self) -> Vec<String> {
        self.primary_key
            .iter()
            .map(|&i| self.columns[i].name.clone())
            .collect()
    }
}

/// Reads `name` (`table` or `schema.table`); `Ok(None)` when there is no such table.
pub fn read_table(conn: &Connection, name: &str) -> rusqlite::Result<Option<Table>> {
    let (schema, table) = match name.split_once('.') {
        Some((schema, table)) => (Some(schema), table),
        None => (None, name),
    };
    // The names are bound, not spliced: a table name from a message never becomes SQL. A
    // NULL schema searches the attached databases in SQLite's usual order (temp, main...).
    let mut statement =
        conn.prepare_cached("SELECT name, type, pk FROM pragma_table_info(?1, ?2) ORDER BY cid")?;
    let rows = statement.query_map((table, schema), |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, i64>(2)?,
        ))
    })?;
    let mut columns = Vec::new();
    let mut key: Vec<(i64, usize)> = Vec::new();
    for row in rows {
        let (column, declared, pk) = row?;
        if pk > 0 {
            key.push((pk, columns.len()));
        }
        columns.push(ColumnInfo {
            affinity: Affinity::of(&declared),
            name: column,
            declared,
        });
    }
    if columns.is_empty() {
        return Ok(None);
    }
    // `pk` is the column's 1-based place in the key, which need not be the column order.
    key.sort_unstable();
    let quoted = match schema {
        Some(schema) => format!("{}.{}", quote(schema), quote(table)),
        None => quote(table),
    };
    Ok(Some(Table {
        name: name.to_string(),
        quoted,
        columns,
        primary_key: key.into_iter().map(|(_, i)| i).collect(),
    }))
}

/// `name` as an SQL identifier: in double quotes, each quote doubled.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_follows_sqlites_rules_in_order() {
        for (declared, affinity) in [
            ("INTEGER", Affinity::Integer),
            ("bigint", Affinity::Integer),
            // "INT" inside "POINT" counts, as in SQLite.
            ("FLOATING POINT", Affinity::Integer),
            ("varchar(20)", Affinity::Text),
            ("CLOB", Affinity::Text),
            ("BLOB", Affinity::Blob),
            ("", Affinity::Blob),
            ("REAL", Affinity::Real),
            ("double precision", Affinity::Real),
            ("DECIMAL(10,5)", Affinity::Numeric),
            ("BOOLEAN", Affinity::Numeric),
            ("DATETIME", Affinity::Numeric),
        ] {
            assert_eq!(Affinity::of(declared), affinity, "{declared}");
        }
    }

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote("users"), r#""users""#);
        assert_eq!(
            quote(r#"a"; drop table t; --"#),
            r#""a""; drop table t; --""#
        );
    }

    #[test]
    fn a_table_is_read_with_its_key_in_key_order() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE t (b TEXT, a INTEGER, c, PRIMARY KEY (a, b));
             CREATE TABLE \"odd \"\" name\" (x INTEGER PRIMARY KEY)",
        )
        .unwrap();
        let t = read_table(&conn, "t").unwrap().unwrap();
        assert_eq!(t.key_names(), ["a", "b"]);
        assert_eq!(t.columns[2].affinity, Affinity::Blob);
        assert_eq!(t.column("A"), Some(1));
        assert_eq!(t.quoted, r#""t""#);
        let t = read_table(&conn, "main.t").unwrap().unwrap();
        assert_eq!(t.quoted, r#""main"."t""#);
        let odd = read_table(&conn, "odd \" name").unwrap().unwrap();
        assert_eq!(odd.key_names(), ["x"]);
        assert!(read_table(&conn, "missing").unwrap().is_none());
        let err = read_table(&conn, "nowhere.t").unwrap_err();
        assert!(err.to_string().contains("unknown database"), "{err}");
    }
}

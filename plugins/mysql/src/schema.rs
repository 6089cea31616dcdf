//! What the plugin knows of a target table: its columns and their types, its primary key
//! and unique keys, read from `information_schema` once and cached until the table
//! changes ([`Catalog`]); a name that names no table is remembered as missing for a
//! moment ([`MISSING_FOR`]), and a table of the system databases or of the dedupe
//! database is refused ([`refusal`]).
//!
//! **Invariant:** every identifier that reaches SQL goes through [`quote_ident`]; a
//! message's text reaches the server only as a bound parameter.
//!
//! [`MISSING_FOR`]: golconde_plugin_support::catalog::MISSING_FOR

use std::collections::HashMap;

use mysql_async::{prelude::Queryable, Conn, Value as MyValue};

/// Quotes an identifier for SQL: wrapped in backticks, with every backtick doubled.
pub fn quote_ident(name: &str) -> String {
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('`');
    for c in name.chars() {
        if c == '`' {
            quoted.push('`');
        }
        quoted.push(c);
    }
    quoted.push('`');
    quoted
}

/// The longest database, table or column name MySQL and MariaDB take, in characters.
pub const MAX_IDENTIFIER: usize = 64;

/// `database.table` or `table` as an operation names it: split on the first dot outside
/// backticks; a part in backticks may contain dots and doubled backticks. Every malformed
/// name is an error saying what is wrong with it.
pub fn parse_table_name(text: &str) -> Result<(Option<String>, String), String> {
    if text.contains('\0') {
        return Err(format!(
            "table name {text:?} contains a NUL character, which no name can hold"
        ));
    }
    let mut parts = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'`') {
            chars.next();
            loop {
                match chars.next() {
                    Some('`') if chars.peek() == Some(&'`') => {
                        chars.next();
                        part.push('`');
                    }
                    Some('`') => break,
                    Some(c) => part.push(c),
                    None => return Err(format!("table name `{text}` has an unclosed backtick")),
                }
            }
            if !matches!(chars.peek(), None | Some('.')) {
                return Err(format!(
                    "table name `{text}` has text after a closing backtick; quote the whole part"
                ));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' && parts.is_empty() {
                    break;
                }
                part.push(c);
                chars.next();
            }
        }
        if part.is_empty() {
            return Err(format!("table name `{text}` has an empty part"));
        }
        if part.chars().count() > MAX_IDENTIFIER {
            return Err(format!(
                "table name `{text}` has a part longer than {MAX_IDENTIFIER} characters, \
                 which no MySQL name can be"
            ));
        }
        parts.push(part);
        match chars.next() {
            None => break,
            Some('.') if parts.len() == 1 => continue,
            Some(_) => {
                return Err(format!(
                    "table name `{text}` has more than two parts; write `database.table`, in \
                     backticks where a part contains a dot"
                ))
            }
        }
    }
    let name = parts.pop().expect("at least one part");
    Ok((parts.pop(), name))
}

/// The databases no message may write to.
const SYSTEM_DATABASES: [&str; 4] = ["mysql", "information_schema", "performance_schema", "sys"];

/// Why `table` may not be written, if it may not: the system databases and Golconde's
/// own applied-change database. Names are compared without regard to case, since the
/// server may fold them (`lower_case_table_names`).
pub fn refusal(table: &Table, dedupe_database: &str) -> Option<String> {
    let database = table.database.as_str();
    let why = if database.eq_ignore_ascii_case(dedupe_database) {
        "it is Golconde's own applied-change database (`dedupe_database`)"
    } else if SYSTEM_DATABASES
        .iter()
        .any(|s| database.eq_ignore_ascii_case(s))
    {
        "it is a system database"
    } else {
        return None;
    };
    Some(format!(
        "writing to `{}` is refused: {why}; messages may write only to tables of the \
         application's own databases",
        table.display
    ))
}

/// How values for a column are checked and sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// TINYINT..BIGINT, signed or UNSIGNED; `boolean`: `tinyint(1)`, which takes `true`
    /// and `false` too.
    Int {
        min: i128,
        max: i128,
        boolean: bool,
    },
    /// FLOAT (`single`) or DOUBLE.
    Float {
        single: bool,
    },
    /// DECIMAL(precision, scale), sent as text.
    Decimal {
        precision: u32,
        scale: u32,
    },
    /// BIT(bits), sent as an unsigned integer.
    Bit {
        bits: u32,
    },
    /// CHAR, VARCHAR and the TEXT types. `max_chars`: CHAR(n) and VARCHAR(n);
    /// `max_bytes`: the TEXT types, whose limit is in bytes of the column's character set.
    Text {
        max_chars: Option<u64>,
        max_bytes: Option<u64>,
        charset: String,
    },
    /// BINARY, VARBINARY and the BLOB types: at most `max_bytes`.
    Binary {
        max_bytes: u64,
    },
    Date,
    /// DATETIME(fsp), or TIMESTAMP(fsp) (`utc`: its values are instants, read and written
    /// in UTC).
    DateTime {
        fsp: u32,
        utc: bool,
    },
    /// TIME(fsp): -838:59:59 to 838:59:59.
    Time {
        fsp: u32,
    },
    Year,
    Enum(Vec<String>),
    Set(Vec<String>),
    /// JSON (on MariaDB, a LONGTEXT with a `json_valid` check).
    Json,
    /// Anything else (spatial types, ...): sent as text for the server to judge.
    Other,
}

/// One column of a table.
#[derive(Debug)]
pub struct ColumnInfo {
    pub name: String,
    pub quoted: String,
    /// The type as the server shows it (`varchar(20)`, `bigint(20) unsigned`), for
    /// messages.
    pub type_name: String,
    pub kind: Kind,
    pub auto_increment: bool,
    /// A VIRTUAL or STORED generated column: it cannot be written.
    pub generated: bool,
}

/// One target table.
#[derive(Debug)]
pub struct Table {
    /// `` `database`.`table` ``, resolved, for SQL.
    pub quoted: String,
    /// The database the name resolved to.
    pub database: String,
    /// `database.table`, for messages.
    pub display: String,
    pub columns: Vec<ColumnInfo>,
    pub by_name: HashMap<String, usize>,
    /// Column positions of the primary key; empty when there is none.
    pub primary_key: Vec<usize>,
    /// Column positions of every other unique key over whole columns.
    pub unique_keys: Vec<Vec<usize>>,
    /// The AUTO_INCREMENT column, if any.
    pub auto_increment: Option<usize>,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    pub fn column_names(&self, positions: &[usize]) -> String {
        positions
            .iter()
            .map(|&i| self.columns[i].name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why a table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Introspection {
    #[error("{0}")]
    BadName(String),
    #[error(transparent)]
    Database(#[from] mysql_async::Error),
}

const TABLE_SQL: &str = "\
SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES
WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?";

const COLUMNS_SQL: &str = "\
SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, EXTRA, CHARACTER_MAXIMUM_LENGTH,
       CHARACTER_OCTET_LENGTH, NUMERIC_PRECISION, NUMERIC_SCALE, DATETIME_PRECISION,
       CHARACTER_SET_NAME
FROM information_schema.COLUMNS
WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?
ORDER BY ORDINAL_POSITION";

const KEYS_SQL: &str = "\
SELECT TABLE_NAME, INDEX_NAME, COLUMN_NAME, SUB_PART
FROM information_schema.STATISTICS
WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0
ORDER BY INDEX_NAME, SEQ_IN_INDEX";

/// MariaDB's JSON is a LONGTEXT with a `json_valid` check on it.
const CHECKS_SQL: &str = "\
SELECT TABLE_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS
WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?";

/// A value of `information_schema` as text, whichever protocol type it came in.
fn text(value: &MyValue) -> Option<String> {
    match value {
        MyValue::NULL => None,
        MyValue::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        MyValue::Int(i) => Some(i.to_string()),
        MyValue::UInt(u) => Some(u.to_string()),
        other => Some(other.as_sql(true)),
    }
}

fn number(value: &MyValue) -> Option<u64> {
    text(value).and_then(|t| t.parse().ok())
}

/// Rows of `sql` for `database` and `table`, only those whose `TABLE_NAME` (the first
/// column) is exactly `table`: the server compares names in `information_schema`
/// without regard to case where its file system does.
async fn rows(
    conn: &mut Conn,
    sql: &str,
    database: &str,
    table: &str,
) -> Result<Vec<Vec<MyValue>>, mysql_async::Error> {
    let rows: Vec<mysql_async::Row> = conn.exec(sql, (database, table)).await?;
    Ok(rows
        .into_iter()
        .map(|row| row.unwrap())
        .filter(|values| values.first().and_then(text).as_deref() == Some(table))
        .collect())
}

/// Reads `name` from `information_schema`; `None` when no such table exists.
/// `default_database`: where an unqualified name is; `mariadb`: whether to look for
/// MariaDB's JSON columns.
pub async fn introspect(
    conn: &mut Conn,
    name: &str,
    default_database: Option<&str>,
    mariadb: bool,
) -> Result<Option<Table>, Introspection> {
    let (database, table) = parse_table_name(name).map_err(Introspection::BadName)?;
    let Some(database) = database.or(default_database.map(str::to_string)) else {
        return Err(Introspection::BadName(format!(
            "table `{name}` names no database, and the `dsn` names none to look in; write \
             `database.{table}`, or add the database to the `dsn`"
        )));
    };
    // TABLE_SCHEMA first here: the filter looks at the second column.
    let found: Vec<mysql_async::Row> = conn.exec(TABLE_SQL, (&database, &table)).await?;
    let Some(database) = found.into_iter().find_map(|row| {
        let values = row.unwrap();
        let schema = values.first().and_then(text)?;
        (values.get(1).and_then(text).as_deref() == Some(table.as_str())).then_some(schema)
    }) else {
        return Ok(None);
    };

    let json_columns: Vec<String> = if mariadb {
        rows(conn, CHECKS_SQL, &database, &table)
            .await?
            .iter()
            .filter_map(|row| row.get(1).and_then(text))
            .collect()
    } else {
        Vec::new()
    };

    let mut columns = Vec::new();
    for row in rows(conn, COLUMNS_SQL, &database, &table).await? {
        let get = |i: usize| row.get(i).and_then(text);
        let get_number = |i: usize| row.get(i).and_then(number);
        let name = get(1).unwrap_or_default();
        let data_type = get(2).unwrap_or_default().to_ascii_lowercase();
        let column_type = get(3).unwrap_or_default();
        let extra = get(4).unwrap_or_default().to_ascii_lowercase();
        let quoted = quote_ident(&name);
        let is_json = json_columns
            .iter()
            .any(|clause| *clause == format!("json_valid({quoted})"));
        let kind = kind(
            &data_type,
            &column_type,
            is_json,
            Lengths {
                chars: get_number(5),
                bytes: get_number(6),
                precision: get_number(7),
                scale: get_number(8),
                fsp: get_number(9),
            },
            get(10).unwrap_or_default(),
        );
        columns.push(ColumnInfo {
            quoted,
            name,
            type_name: column_type,
            kind,
            auto_increment: extra.contains("auto_increment"),
            // Not MySQL's DEFAULT_GENERATED, which is a column with an expression default.
            generated: extra.contains("virtual generated")
                || extra.contains("stored generated")
                || extra.contains("persistent"),
        });
    }
    if columns.is_empty() {
        // Dropped between the two queries.
        return Ok(None);
    }
    let by_name: HashMap<String, usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.clone(), i))
        .collect();

    let mut primary_key = Vec::new();
    let mut unique_keys = Vec::new();
    // (index name, positions, usable): an index over a prefix of a column is no key of
    // whole values.
    let mut indexes: Vec<(String, Vec<usize>, bool)> = Vec::new();
    for row in rows(conn, KEYS_SQL, &database, &table).await? {
        let index = row.get(1).and_then(text).unwrap_or_default();
        let column = row.get(2).and_then(text);
        let prefix = row.get(3).is_some_and(|v| *v != MyValue::NULL);
        let position = column.and_then(|c| by_name.get(&c).copied());
        if indexes.last().map(|(name, _, _)| name) != Some(&index) {
            indexes.push((index, Vec::new(), true));
        }
        let last = indexes.last_mut().expect("pushed above");
        match position {
            Some(p) if !prefix => last.1.push(p),
            _ => last.2 = false,
        }
    }
    for (index, positions, usable) in indexes {
        if !usable {
            continue;
        }
        if index == "PRIMARY" {
            primary_key = positions;
        } else {
            unique_keys.push(positions);
        }
    }
    let auto_increment = columns.iter().position(|c| c.auto_increment);
    Ok(Some(Table {
        quoted: format!("{}.{}", quote_ident(&database), quote_ident(&table)),
        display: format!("{database}.{table}"),
        database,
        columns,
        by_name,
        primary_key,
        unique_keys,
        auto_increment,
    }))
}

/// The lengths `information_schema.COLUMNS` gives for a column.
struct Lengths {
    chars: Option<u64>,
    bytes: Option<u64>,
    precision: Option<u64>,
    scale: Option<u64>,
    fsp: Option<u64>,
}

fn kind(data_type: &str, column_type: &str, json: bool, lengths: Lengths, charset: String) -> Kind {
    let unsigned = column_type.to_ascii_lowercase().contains("unsigned");
    let int = |bits: u32| {
        let (min, max) = if unsigned {
            (0, (1i128 << bits) - 1)
        } else {
            (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
        };
        Kind::Int {
            min,
            max,
            boolean: false,
        }
    };
    let fsp = lengths.fsp.unwrap_or(0) as u32;
    match data_type {
        "tinyint" => match int(8) {
            Kind::Int { min, max, .. } => Kind::Int {
                min,
                max,
                boolean: column_type.to_ascii_lowercase().starts_with("tinyint(1)"),
            },
            other => other,
        },
        "smallint" => int(16),
        "mediumint" => int(24),
        "int" | "integer" => int(32),
        "bigint" => int(64),
        "float" => Kind::Float { single: true },
        "double" | "real" => Kind::Float { single: false },
        "decimal" | "numeric" => Kind::Decimal {
            precision: lengths.precision.unwrap_or(10) as u32,
            scale: lengths.scale.unwrap_or(0) as u32,
        },
        "bit" => Kind::Bit {
            bits: lengths.precision.unwrap_or(1) as u32,
        },
        "longtext" if json => Kind::Json,
        "json" => Kind::Json,
        "char" | "varchar" => Kind::Text {
            max_chars: lengths.chars,
            max_bytes: None,
            charset,
        },
        "tinytext" | "text" | "mediumtext" | "longtext" => Kind::Text {
            max_chars: None,
            max_bytes: lengths.bytes,
            charset,
        },
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => Kind::Binary {
            max_bytes: lengths.bytes.unwrap_or(u64::MAX),
        },
        "date" => Kind::Date,
        "datetime" => Kind::DateTime { fsp, utc: false },
        "timestamp" => Kind::DateTime { fsp, utc: true },
        "time" => Kind::Time { fsp },
        "year" => Kind::Year,
        "enum" => Kind::Enum(members(column_type)),
        "set" => Kind::Set(members(column_type)),
        _ => Kind::Other,
    }
}

/// The members of `enum('a','b''c')` or `set(...)`, as the server lists them.
fn members(column_type: &str) -> Vec<String> {
    let Some(open) = column_type.find('(') else {
        return Vec::new();
    };
    let mut members = Vec::new();
    let mut chars = column_type[open + 1..].chars().peekable();
    loop {
        match chars.next() {
            Some('\'') => {
                let mut member = String::new();
                loop {
                    match chars.next() {
                        Some('\'') if chars.peek() == Some(&'\'') => {
                            chars.next();
                            member.push('\'');
                        }
                        Some('\'') | None => break,
                        Some(c) => member.push(c),
                    }
                }
                members.push(member);
            }
            Some(',') => continue,
            _ => break,
        }
    }
    members
}

/// The tables read so far, shared by every session of one database instance, keyed by
/// the name operations use; and the names recently found to name no table.
pub type Catalog = golconde_plugin_support::catalog::Catalog<Table>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_backticks() {
        assert_eq!(quote_ident("a`b"), "`a``b`");
        assert_eq!(quote_ident("x; DROP TABLE y"), "`x; DROP TABLE y`");
    }

    #[test]
    fn table_names_split_on_the_first_dot_outside_backticks() {
        assert_eq!(
            parse_table_name("shop.items"),
            Ok((Some("shop".into()), "items".into()))
        );
        assert_eq!(parse_table_name("items"), Ok((None, "items".into())));
        assert_eq!(
            parse_table_name("`a.b`.`c``d`"),
            Ok((Some("a.b".into()), "c`d".into()))
        );
        // Unquoted, the table part is the rest of the name, dots and all.
        assert_eq!(
            parse_table_name("shop.it.ems"),
            Ok((Some("shop".into()), "it.ems".into()))
        );
        assert!(parse_table_name("`shop`.`it`.ems")
            .unwrap_err()
            .contains("has more than two parts; write `database.table`"));
        for bad in ["", ".x", "x.", "`x", "`a`b.c", "a\0b", &"x".repeat(65)] {
            assert!(parse_table_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn enum_members_are_read_with_their_quotes() {
        assert_eq!(members("enum('a','b''c','d,e')"), ["a", "b'c", "d,e"]);
        assert_eq!(members("set('x')"), ["x"]);
        assert!(members("enum()").is_empty());
    }

    #[test]
    fn integer_ranges_follow_the_type() {
        let lengths = || Lengths {
            chars: None,
            bytes: None,
            precision: None,
            scale: None,
            fsp: None,
        };
        assert_eq!(
            kind(
                "bigint",
                "bigint(20) unsigned",
                false,
                lengths(),
                String::new()
            ),
            Kind::Int {
                min: 0,
                max: u64::MAX as i128,
                boolean: false
            }
        );
        assert_eq!(
            kind("tinyint", "tinyint(1)", false, lengths(), String::new()),
            Kind::Int {
                min: -128,
                max: 127,
                boolean: true
            }
        );
        assert_eq!(
            kind(
                "mediumint",
                "mediumint(8) unsigned",
                false,
                lengths(),
                String::new()
            ),
            Kind::Int {
                min: 0,
                max: 16_777_215,
                boolean: false
            }
        );
    }
}

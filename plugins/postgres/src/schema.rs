//! What the plugin knows of a target table: its columns and their types, its primary key
//! and unique indexes, read from the catalog once and cached until the table changes
//! ([`Catalog`]); a name that names no table is remembered as missing for a moment
//! ([`MISSING_FOR`]), and a table of the system catalogs or of the dedupe schema is
//! refused ([`refusal`]).
//!
//! **Invariant:** every identifier that reaches SQL goes through [`quote_ident`], and every
//! type name used in a cast is the catalog's own `schema.typname`, quoted, never text from
//! a message.
//!
//! [`MISSING_FOR`]: golconde_plugin_support::catalog::MISSING_FOR

use tokio_postgres::Client;

/// Quotes an identifier for SQL: wrapped in `"`, with every `"` doubled.
pub fn quote_ident(name: &str) -> String {
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('"');
    for c in name.chars() {
        if c == '"' {
            quoted.push('"');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// The longest identifier PostgreSQL keeps whole (`NAMEDATALEN - 1` bytes); a longer one
/// is cut short, so it would name another table.
const MAX_IDENTIFIER: usize = 63;

/// `schema.table` or `table` as an operation names it: split on the first dot outside
/// double quotes; a part in double quotes may contain dots and doubled quotes. Unquoted
/// parts are taken literally (no case folding): operations name tables unquoted. Every
/// malformed name is an error saying what is wrong with it.
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
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => return Err(format!("table name `{text}` has an unclosed `\"`")),
                }
            }
            if !matches!(chars.peek(), None | Some('.')) {
                return Err(format!(
                    "table name `{text}` has text after a closing `\"`; quote the whole part"
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
        if part.len() > MAX_IDENTIFIER {
            return Err(format!(
                "table name `{text}` has a part longer than {MAX_IDENTIFIER} bytes, which \
                 PostgreSQL would cut short to name another table"
            ));
        }
        parts.push(part);
        match chars.next() {
            None => break,
            Some('.') if parts.len() == 1 => continue,
            Some(_) => {
                return Err(format!(
                    "table name `{text}` has more than two parts; write `schema.table`, in \
                     double quotes where a part contains a dot"
                ))
            }
        }
    }
    let name = parts.pop().expect("at least one part");
    Ok((parts.pop(), name))
}

/// Why a table that resolved to `schema` may not be written, if it may not: the system
/// catalogs (`pg_catalog`, `information_schema`, every `pg_*` schema such as `pg_toast` and
/// `pg_temp_N`) and Golconde's own applied-change schema. Judged on the schema the name
/// resolved to, so an unqualified `pg_authid` found through the `search_path` counts.
pub fn refusal(table: &Table, dedupe_schema: &str) -> Option<String> {
    let schema = table.schema.as_str();
    let why = if schema == dedupe_schema {
        "it is Golconde's own applied-change schema (`dedupe_schema`)"
    } else if schema == "information_schema" || schema.starts_with("pg_") {
        "it is a schema of the system catalogs"
    } else {
        return None;
    };
    Some(format!(
        "writing to `{}` is refused: {why}; messages may write only to tables of the \
         application's own schemas",
        table.display
    ))
}

/// How values for a column are checked and sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Int {
        min: i64,
        max: i64,
    },
    Float {
        single: bool,
    },
    Numeric,
    Bool,
    /// `max`: the length limit of `varchar(n)` and `char(n)`, in characters.
    Text {
        max: Option<usize>,
    },
    Json,
    Bytea,
    /// `timestamp` (`tz: false`) or `timestamptz`: sent binary when the value is plain
    /// RFC 3339, as text for the server to parse otherwise.
    Timestamp {
        tz: bool,
    },
    /// Sent as text and parsed by the server: uuid, dates and times, enums, intervals...
    Other,
    Array(Box<Kind>),
}

impl Kind {
    fn of(oid: u32, typmod: i32) -> Kind {
        match oid {
            21 => Kind::Int {
                min: i16::MIN as i64,
                max: i16::MAX as i64,
            },
            23 => Kind::Int {
                min: i32::MIN as i64,
                max: i32::MAX as i64,
            },
            20 => Kind::Int {
                min: i64::MIN,
                max: i64::MAX,
            },
            700 => Kind::Float { single: true },
            701 => Kind::Float { single: false },
            1700 => Kind::Numeric,
            16 => Kind::Bool,
            1043 | 1042 => Kind::Text {
                max: usize::try_from(typmod - 4).ok(),
            },
            25 | 19 => Kind::Text { max: None },
            114 | 3802 => Kind::Json,
            17 => Kind::Bytea,
            1114 => Kind::Timestamp { tz: false },
            1184 => Kind::Timestamp { tz: true },
            _ => Kind::Other,
        }
    }
}

/// One column of a table.
#[derive(Debug)]
pub struct ColumnInfo {
    pub name: String,
    pub quoted: String,
    /// The type as people write it (`character varying(20)`), for messages.
    pub type_name: String,
    /// The type to cast a parameter to: the column's own type without its modifier, so
    /// that the assignment to the column still checks lengths (`varchar(20)`) rather than
    /// an explicit cast silently truncating.
    pub cast: String,
    pub kind: Kind,
    /// `COLLATE "schema"."name"` for a column of a collatable type, so that comparing
    /// two values outside the table compares them as the column does.
    pub collate: Option<String>,
    /// Two values of this column are equal exactly when their texts are: `text`,
    /// `varchar` and `name` under a deterministic collation. Integers, booleans and binary
    /// timestamps compare exactly by their kind; anything else (`numeric` `1.0` = `1.00`,
    /// `uuid` in either case, a case-insensitive collation) only the server can compare.
    pub bytewise: bool,
}

/// One target table.
#[derive(Debug)]
pub struct Table {
    /// `"schema"."table"`, resolved, for SQL.
    pub quoted: String,
    /// The schema the name resolved to.
    pub schema: String,
    /// `schema.table`, for messages.
    pub display: String,
    pub columns: Vec<ColumnInfo>,
    /// Looked up for every column of every operation: hashed with foldhash, not SipHash.
    pub by_name: foldhash::HashMap<String, usize>,
    /// Column positions of the primary key; empty when there is none.
    pub primary_key: Vec<usize>,
    /// Column positions of every other unique index usable as an upsert target.
    pub unique_keys: Vec<Vec<usize>>,
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

const TABLE_SQL: &str = "\
SELECT c.oid, n.nspname::text, c.relname::text
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = pg_catalog.to_regclass($1) AND c.relkind IN ('r', 'p', 'v', 'f')";

const COLUMNS_SQL: &str = "\
SELECT a.attname::text,
       pg_catalog.format_type(a.atttypid, a.atttypmod),
       tn.nspname::text,
       t.typname::text,
       bt.oid,
       bt.typcategory::text,
       bt.typelem,
       a.atttypmod,
       cn.nspname::text,
       co.collname::text,
       COALESCE(co.collisdeterministic, true)
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
JOIN pg_catalog.pg_namespace tn ON tn.oid = t.typnamespace
JOIN pg_catalog.pg_type bt
  ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
LEFT JOIN pg_catalog.pg_collation co ON co.oid = a.attcollation
LEFT JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum";

const KEYS_SQL: &str = "\
SELECT i.indisprimary,
       ARRAY(SELECT a.attname::text
             FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             ORDER BY k.ord)
FROM pg_catalog.pg_index i
WHERE i.indrelid = $1 AND i.indisunique AND i.indisvalid
  AND i.indpred IS NULL AND i.indexprs IS NULL
ORDER BY i.indisprimary DESC, i.indexrelid";

/// Reads `name` from the catalog; `None` when no such table exists.
pub async fn introspect(client: &Client, name: &str) -> Result<Option<Table>, Introspection> {
    let (schema, table) = parse_table_name(name).map_err(Introspection::BadName)?;
    let regclass = match &schema {
        Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(&table)),
        None => quote_ident(&table),
    };
    let Some(row) = client.query_opt(TABLE_SQL, &[&regclass]).await? else {
        return Ok(None);
    };
    let oid: u32 = row.get(0);
    let schema: String = row.get(1);
    let relname: String = row.get(2);

    let mut columns = Vec::new();
    for row in client.query(COLUMNS_SQL, &[&oid]).await? {
        let name: String = row.get(0);
        let type_name: String = row.get(1);
        let type_schema: String = row.get(2);
        let typname: String = row.get(3);
        let base: u32 = row.get(4);
        let category: String = row.get(5);
        let element: u32 = row.get(6);
        let typmod: i32 = row.get(7);
        let collation_schema: Option<String> = row.get(8);
        let collation: Option<String> = row.get(9);
        let deterministic: bool = row.get(10);
        let kind = if category == "A" {
            Kind::Array(Box::new(Kind::of(element, typmod)))
        } else {
            Kind::of(base, typmod)
        };
        columns.push(ColumnInfo {
            quoted: quote_ident(&name),
            name,
            type_name,
            cast: format!("{}.{}", quote_ident(&type_schema), quote_ident(&typname)),
            bytewise: deterministic && matches!(base, 25 | 1043 | 19) && category != "A",
            kind,
            collate: collation_schema.zip(collation).map(|(schema, name)| {
                format!("COLLATE {}.{}", quote_ident(&schema), quote_ident(&name))
            }),
        });
    }
    let by_name: foldhash::HashMap<String, usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.clone(), i))
        .collect();

    let mut primary_key = Vec::new();
    let mut unique_keys = Vec::new();
    for row in client.query(KEYS_SQL, &[&oid]).await? {
        let primary: bool = row.get(0);
        let names: Vec<String> = row.get(1);
        let positions: Option<Vec<usize>> = names.iter().map(|n| by_name.get(n).copied()).collect();
        let Some(positions) = positions else { continue };
        if primary {
            primary_key = positions;
        } else {
            unique_keys.push(positions);
        }
    }
    Ok(Some(Table {
        quoted: format!("{}.{}", quote_ident(&schema), quote_ident(&relname)),
        display: format!("{schema}.{relname}"),
        schema,
        columns,
        by_name,
        primary_key,
        unique_keys,
    }))
}

/// Why a table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Introspection {
    #[error("{0}")]
    BadName(String),
    #[error(transparent)]
    Database(#[from] tokio_postgres::Error),
}

/// The tables read so far, shared by every session of one database instance, keyed by
/// the name operations use; and the names recently found to name no table.
pub type Catalog = golconde_plugin_support::catalog::Catalog<Table>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_quotes() {
        assert_eq!(quote_ident("users"), r#""users""#);
        assert_eq!(
            quote_ident(r#"x"; DROP TABLE t; --"#),
            r#""x""; DROP TABLE t; --""#
        );
        assert_eq!(quote_ident("$GOLCONDE$"), r#""$GOLCONDE$""#);
    }

    #[test]
    fn table_names_split_on_the_first_unquoted_dot() {
        let ok = |s: &str| parse_table_name(s).unwrap();
        assert_eq!(ok("users"), (None, "users".into()));
        assert_eq!(ok("public.users"), (Some("public".into()), "users".into()));
        assert_eq!(ok("public.a.b"), (Some("public".into()), "a.b".into()));
        assert_eq!(
            ok(r#""my.schema".t"#),
            (Some("my.schema".into()), "t".into())
        );
        assert_eq!(
            ok(r#"s."we""ird.name""#),
            (Some("s".into()), r#"we"ird.name"#.into())
        );
        assert_eq!(ok("Users"), (None, "Users".into()));
        for bad in [
            "",
            ".t",
            "s.",
            r#""open"#,
            r#""a"b.c"#,
            r#"a."b".c"#,
            r#""a"."b"."c""#,
            r#"a."b"."#,
            "a\0b",
        ] {
            assert!(parse_table_name(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        /// Whatever the text, an answer and never a panic; and what is accepted names
        /// the same table once written back quoted.
        #[test]
        fn table_names_parse_or_are_refused(text in "[a.\"\0 é]{0,12}") {
            if let Ok((schema, table)) = parse_table_name(&text) {
                let quoted = match &schema {
                    Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(&table)),
                    None => quote_ident(&table),
                };
                proptest::prop_assert_eq!(parse_table_name(&quoted), Ok((schema, table)));
            }
        }
    }
}

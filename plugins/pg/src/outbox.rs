//! The transactional outbox: the table that captured changes are written to, in the
//! transaction that makes them, and that the `pgoutbox` transport consumes.
//!
//! # The table
//!
//! | column | |
//! |---|---|
//! | `seq bigint` | primary key, from the outbox's own sequence (`<outbox>_seq`, `CACHE 1`) |
//! | `created_at timestamptz` | `now()`: when the writing transaction started |
//! | `headers json` | `[[name, value], ...]` or null |
//! | `body bytea` | the message (a captured change: JSON in UTF-8) |
//!
//! Beside it, `<outbox>_delivered` holds one row: `delivered_up_to`, the highest `seq` a
//! consumer has handed over, so that the next consumer flags what comes again as
//! redelivered; and `waiting`, set by a consumer that found nothing to read and sleeps.
//!
//! # Waking the consumer
//!
//! A `NOTIFY` costs every transaction that sends one a database-wide lock at commit, which
//! serialises capturing commits. So writers notify only while the consumer says it waits:
//! a deferred trigger on the outbox looks at `waiting` when the writing transaction
//! commits, and notifies if it is set. A consumer that is busy reading is never notified,
//! and one that finds nothing sets `waiting`, looks once more (for what committed before
//! its flag was seen), then sleeps. Only a transaction whose commit was under way while the
//! consumer set its flag can miss it; its rows wait for the consumer's next poll.
//!
//! # Order, and why reading every committed row in `seq` order is right
//!
//! A captured change takes its `seq` in an `AFTER ... FOR EACH ROW` trigger, so after the
//! row was written and while the transaction holds that row's lock, which it keeps until
//! it ends. Two transactions that change the same row (or the same key: a unique index
//! makes an insert wait for a transaction that deleted or inserted that key) therefore do
//! so one after the other: the second writes, and takes its `seq`, only after the first
//! committed. So **for any two changes to one row, `seq` order is commit order**, and the
//! later of the two cannot be visible before the earlier one is.
//!
//! A consumer that hands over every committed row in `seq` order therefore never applies
//! an older version of a row over a newer one. What it meets is a row committed late,
//! with a `seq` below rows it has handed over already (a transaction that wrote early and
//! committed after others): that row is of another row than every one handed over after
//! it, so handing it over next is right. It must not be skipped, so the consumer does not
//! read "after the highest `seq` handed over" alone: since acknowledged rows are deleted,
//! every row at or below that `seq` that the consumer does not hold is such a late row,
//! and each read hands them over first (all of a read comes from one snapshot).
//!
//! Unlike ordering by transaction id (the order transactions *started* in), this needs no
//! pause for long transactions and orders a long transaction's change after a shorter
//! one's that it waited for. Unlike a counter taken at commit, it serialises nothing.
//!
//! May depend on: tokio-postgres (for the catalog reads). Knows nothing of plugins.

use std::fmt::Write as _;

use tokio_postgres::Client;

/// A table's name, as a queue name or `--table` gives it: `schema.table`, or `table` alone
/// (found by `search_path`). The first dot separates the schema: `golconde.outbox.dead` is
/// the table `outbox.dead` of the schema `golconde`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name {
    pub schema: Option<String>,
    pub table: String,
}

impl Name {
    pub fn parse(text: &str) -> Result<Name, String> {
        let (schema, table) = match text.split_once('.') {
            Some((schema, table)) => (Some(schema.to_string()), table.to_string()),
            None => (None, text.to_string()),
        };
        for part in schema.iter().chain([&table]) {
            if part.is_empty() || part.len() > 63 || part.contains('\0') {
                return Err(format!(
                    "`{text}` is not a table name: give `schema.table` (each part 1 to 63 \
                     bytes)"
                ));
            }
        }
        Ok(Name { schema, table })
    }

    /// The name quoted for SQL.
    pub fn sql(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", ident(schema), ident(&self.table)),
            None => ident(&self.table),
        }
    }

    /// A name beside this table, in its schema: `<table><suffix>`, shortened to fit.
    pub fn sibling(&self, suffix: &str) -> Name {
        Name {
            schema: self.schema.clone(),
            table: fit(&format!("{}{suffix}", self.table)),
        }
    }

    /// The `NOTIFY` channel that inserts into this outbox wake.
    pub fn channel(&self) -> String {
        fit(&format!("golconde:{self}"))
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.table),
            None => f.write_str(&self.table),
        }
    }
}

/// `text` if it is a valid PostgreSQL name (at most 63 bytes), else its start and a hash
/// of the whole, so that two long names do not become one.
fn fit(text: &str) -> String {
    if text.len() <= 63 {
        return text.to_string();
    }
    let mut cut = 46;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{}~{hash:016x}", &text[..cut])
}

/// An identifier quoted for SQL.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal for SQL (standard_conforming_strings, on since PostgreSQL 9.1).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The statements that create `outbox` and what goes with it, each only if missing: its
/// schema, sequence, table, `_delivered` table, and the deferred trigger that wakes a
/// waiting consumer with `NOTIFY`.
///
/// The wake-up trigger's function runs with its owner's rights, so that writers need no
/// right on `_delivered`: it reads one flag and calls nothing of theirs.
pub fn create_sql(outbox: &Name) -> String {
    let table = outbox.sql();
    let seq = outbox.sibling("_seq").sql();
    let notify = outbox.sibling("_notify").sql();
    let delivered = outbox.sibling("_delivered").sql();
    let mut sql = String::new();
    if let Some(schema) = &outbox.schema {
        let _ = writeln!(sql, "CREATE SCHEMA IF NOT EXISTS {};", ident(schema));
    }
    let _ = write!(
        sql,
        "CREATE SEQUENCE IF NOT EXISTS {seq} CACHE 1;
CREATE TABLE IF NOT EXISTS {table} (
    seq bigint PRIMARY KEY DEFAULT nextval('{seq_text}'),
    created_at timestamptz NOT NULL DEFAULT now(),
    headers json,
    body bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS {delivered} (delivered_up_to bigint NOT NULL);
ALTER TABLE {delivered} ADD COLUMN IF NOT EXISTS waiting boolean NOT NULL DEFAULT false;
INSERT INTO {delivered} SELECT 0 WHERE NOT EXISTS (SELECT FROM {delivered});
ALTER SEQUENCE {seq} OWNED BY {table}.seq;
CREATE OR REPLACE FUNCTION {notify}() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path FROM CURRENT AS $golconde$
BEGIN
    IF EXISTS (SELECT FROM {delivered} WHERE waiting) THEN
        PERFORM pg_catalog.pg_notify(TG_ARGV[0], '');
    END IF;
    RETURN NULL;
END
$golconde$;
DROP TRIGGER IF EXISTS golconde_notify ON {table};
CREATE CONSTRAINT TRIGGER golconde_notify AFTER INSERT ON {table}
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION {notify}({channel});
COMMENT ON TABLE {table} IS 'Golconde outbox: changes waiting to be replicated. Rows are deleted once delivered; see docs/capture.md';
",
        seq_text = seq.replace('\'', "''"),
        channel = literal(&outbox.channel()),
    );
    sql
}

/// What capturing a table needs to know of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The table as `--table` named it: the `table` of every message.
    pub name: Name,
    /// The table, resolved and quoted (`"public"."users"`).
    pub sql: String,
    /// `schema.table`, resolved, for messages to people.
    pub resolved: String,
    /// The primary key's columns, in key order.
    pub key: Vec<String>,
    /// Columns left out of messages: generated ones (a replica computes its own).
    pub generated: Vec<String>,
    /// `bytea` columns, sent as base64 (what the databases read for `bytea`).
    pub bytea: Vec<String>,
}

/// Reads what capturing `table` needs from the catalog, or says why it cannot be captured.
pub async fn describe(client: &Client, table: &Name) -> Result<Source, String> {
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(|e| crate::connect::describe_error(&e))?
        .get(0);
    if version < 120_000 {
        return Err(format!(
            "capture needs PostgreSQL 12 or later; this server is {}.{}",
            version / 10_000,
            version % 10_000
        ));
    }
    let row = client
        .query_opt(
            "SELECT c.oid, n.nspname, c.relname, c.relkind::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.oid = to_regclass($1)",
            &[&table.sql()],
        )
        .await
        .map_err(|e| crate::connect::describe_error(&e))?
        .ok_or_else(|| {
            format!("table `{table}` does not exist (or is not visible to this user)")
        })?;
    let oid: u32 = row.get(0);
    let schema: String = row.get(1);
    let relname: String = row.get(2);
    let kind: String = row.get(3);
    let resolved = format!("{schema}.{relname}");
    if kind != "r" && kind != "p" {
        return Err(format!(
            "`{resolved}` is not a table (relkind `{kind}`): only tables can be captured"
        ));
    }
    let columns = client
        .query(
            "SELECT a.attname, a.attgenerated::text, t.typname, \
                    coalesce(a.attnum = ANY(i.indkey), false) AS in_key, \
                    array_position(i.indkey::int2[], a.attnum) AS key_pos \
             FROM pg_attribute a \
             JOIN pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(|e| crate::connect::describe_error(&e))?;
    let mut key: Vec<(i32, String)> = Vec::new();
    let mut generated = Vec::new();
    let mut bytea = Vec::new();
    for column in &columns {
        let name: String = column.get(0);
        let attgenerated: String = column.get(1);
        let type_name: String = column.get(2);
        let in_key: bool = column.get(3);
        if in_key {
            let pos: Option<i32> = column.get(4);
            key.push((pos.unwrap_or(0), name.clone()));
        }
        if !attgenerated.is_empty() {
            generated.push(name);
        } else if type_name == "bytea" {
            bytea.push(name);
        }
    }
    if key.is_empty() {
        return Err(format!(
            "`{resolved}` has no primary key: updates and deletes name their row by it; add \
             one (ALTER TABLE {} ADD PRIMARY KEY (...)) and install again",
            ident(&schema) + "." + &ident(&relname)
        ));
    }
    key.sort();
    Ok(Source {
        name: table.clone(),
        sql: format!("{}.{}", ident(&schema), ident(&relname)),
        resolved,
        key: key.into_iter().map(|(_, name)| name).collect(),
        generated,
        bytea,
    })
}

/// The name of the trigger (on the captured table) that writes its changes.
pub const TRIGGER: &str = "golconde_capture";
/// The name of the trigger that refuses `TRUNCATE` of a captured table.
pub const TRUNCATE_TRIGGER: &str = "golconde_capture_truncate";

/// The trigger function's name: beside the outbox, named after the table.
fn function_name(source: &Source, outbox: &Name) -> Name {
    Name {
        schema: outbox.schema.clone(),
        table: fit(&format!("capture:{}", source.resolved)),
    }
}

/// A row of the table (`OLD` or `NEW`) as the JSON object of a message: every column but
/// the generated ones, `bytea` as base64.
fn row_json(source: &Source, row: &str) -> String {
    if source.generated.is_empty() && source.bytea.is_empty() {
        return format!("to_json({row})");
    }
    let mut expr = format!("to_jsonb({row})");
    for column in &source.generated {
        let _ = write!(expr, " - {}", literal(column));
    }
    // jsonb_build_object takes at most 100 arguments: 50 columns a call.
    for chunk in source.bytea.chunks(50) {
        let pairs: Vec<String> = chunk
            .iter()
            .map(|c| {
                format!(
                    "{}, translate(encode({row}.{}, 'base64'), E'\\n', '')",
                    literal(c),
                    ident(c)
                )
            })
            .collect();
        let _ = write!(expr, " || jsonb_build_object({})", pairs.join(", "));
    }
    format!("({expr})::json")
}

/// The primary key of `row` as a restriction: `json_build_object('id', OLD.id)`.
fn key_json(source: &Source, row: &str) -> String {
    let mut parts = Vec::new();
    for chunk in source.key.chunks(50) {
        let pairs: Vec<String> = chunk
            .iter()
            .map(|c| {
                let value = if source.bytea.contains(c) {
                    format!(
                        "translate(encode({row}.{}, 'base64'), E'\\n', '')",
                        ident(c)
                    )
                } else {
                    format!("{row}.{}", ident(c))
                };
                format!("{}, {value}", literal(c))
            })
            .collect();
        parts.push(format!("jsonb_build_object({})", pairs.join(", ")));
    }
    if parts.len() == 1 {
        parts[0].replacen("jsonb_build_object", "json_build_object", 1)
    } else {
        format!("({})::json", parts.join(" || "))
    }
}

/// A dollar-quote tag that does not occur in `body`.
fn dollar_tag(body: &str) -> String {
    let mut tag = "$golconde$".to_string();
    let mut n = 0;
    while body.contains(&tag) {
        n += 1;
        tag = format!("$golconde{n}$");
    }
    tag
}

/// The SQL that installs capture of `source` into `outbox`, in one transaction: creates
/// the outbox if missing, (re)creates the trigger function, and (re)creates the triggers.
/// Running it again changes nothing but what the table's definition changed.
pub fn install_sql(source: &Source, outbox: &Name) -> String {
    let function = function_name(source, outbox).sql();
    let table = &source.sql;
    let outbox_sql = outbox.sql();
    let seq = outbox.sibling("_seq").sql();
    let id_prefix = literal(&format!("{outbox}:"));
    let message_table = literal(&source.name.to_string());
    let new_row = row_json(source, "NEW");
    let old_key = key_json(source, "OLD");
    let keys_old: Vec<String> = source
        .key
        .iter()
        .map(|c| format!("OLD.{}", ident(c)))
        .collect();
    let keys_new: Vec<String> = source
        .key
        .iter()
        .map(|c| format!("NEW.{}", ident(c)))
        .collect();
    let key_moved = format!(
        "ROW({}) IS DISTINCT FROM ROW({})",
        keys_old.join(", "),
        keys_new.join(", ")
    );
    let body = format!(
        "
DECLARE
    v_seq bigint;
BEGIN
    -- Taken now, after the row was written and while its lock is held: for any two
    -- changes to one row, seq order is commit order (see docs/capture.md).
    v_seq := nextval('{seq_text}');
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NOT ({key_moved})) THEN
        INSERT INTO {outbox_sql} (seq, body) VALUES (v_seq, convert_to(json_build_object(
            'id', {id_prefix} || v_seq, 'action', 'set', 'table', {message_table},
            'data', {new_row})::text, 'UTF8'));
        RETURN NULL;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO {outbox_sql} (seq, body) VALUES (v_seq, convert_to(json_build_object(
            'id', {id_prefix} || v_seq, 'action', 'update', 'table', {message_table},
            'data', {new_row}, 'restriction', {old_key})::text, 'UTF8'));
        RETURN NULL;
    ELSE
        INSERT INTO {outbox_sql} (seq, body) VALUES (v_seq, convert_to(json_build_object(
            'id', {id_prefix} || v_seq, 'action', 'delete', 'table', {message_table},
            'restriction', {old_key})::text, 'UTF8'));
        RETURN NULL;
    END IF;
END
",
        seq_text = seq.replace('\'', "''"),
    );
    let tag = dollar_tag(&body);
    let refuse = "
BEGIN
    RAISE EXCEPTION '% is captured by Golconde: TRUNCATE would not reach the replicas', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME
        USING HINT = 'DELETE the rows instead (each one is replicated), or run `golconde capture uninstall` first and truncate every replica yourself';
END
";
    let truncate_function = function_name(source, outbox).sibling(":truncate").sql();
    let comment = literal(&format!(
        "Golconde capture of {} into {outbox} (messages name the table `{}`); see docs/capture.md",
        source.resolved, source.name
    ));
    format!(
        "BEGIN;
{create}CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS {tag}{body}{tag};
CREATE OR REPLACE FUNCTION {truncate_function}() RETURNS trigger LANGUAGE plpgsql AS {tag}{refuse}{tag};
DROP TRIGGER IF EXISTS {TRIGGER} ON {table};
CREATE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {table}
    FOR EACH ROW EXECUTE FUNCTION {function}({outbox_arg});
COMMENT ON TRIGGER {TRIGGER} ON {table} IS {comment};
DROP TRIGGER IF EXISTS {TRUNCATE_TRIGGER} ON {table};
CREATE TRIGGER {TRUNCATE_TRIGGER} BEFORE TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION {truncate_function}();
COMMIT;
",
        create = create_sql(outbox),
        // Unused by the function (its outbox is written into it): it says where the
        // trigger writes, for `capture status`.
        outbox_arg = literal(&outbox.to_string()),
    )
}

/// The SQL that removes capture of `installed`; the outbox and what it holds stay.
pub fn uninstall_sql(installed: &Installed) -> String {
    let table = &installed.table_sql;
    let function = installed.function.sql();
    let truncate_function = installed.function.sibling(":truncate").sql();
    format!(
        "BEGIN;
DROP TRIGGER IF EXISTS {TRIGGER} ON {table};
DROP TRIGGER IF EXISTS {TRUNCATE_TRIGGER} ON {table};
DROP FUNCTION IF EXISTS {function}();
DROP FUNCTION IF EXISTS {truncate_function}();
COMMIT;
"
    )
}

/// One captured table, as `capture status` shows it.
#[derive(Debug, Clone)]
pub struct Installed {
    /// `schema.table`.
    pub table: String,
    /// The table, quoted.
    pub table_sql: String,
    /// The trigger function.
    pub function: Name,
    /// The outbox it writes to, as `--outbox` named it.
    pub outbox: Option<String>,
}

/// Every table of the database with a Golconde capture trigger.
pub async fn installed(client: &Client) -> Result<Vec<Installed>, String> {
    let rows = client
        .query(
            "SELECT n.nspname, c.relname, pn.nspname, p.proname, \
                    t.tgargs \
             FROM pg_trigger t \
             JOIN pg_class c ON c.oid = t.tgrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_proc p ON p.oid = t.tgfoid \
             JOIN pg_namespace pn ON pn.oid = p.pronamespace \
             WHERE t.tgname = $1 \
             ORDER BY 1, 2",
            &[&TRIGGER],
        )
        .await
        .map_err(|e| crate::connect::describe_error(&e))?;
    Ok(rows
        .iter()
        .map(|row| {
            let (schema, table): (String, String) = (row.get(0), row.get(1));
            let (fschema, fname): (String, String) = (row.get(2), row.get(3));
            Installed {
                table: format!("{schema}.{table}"),
                table_sql: format!("{}.{}", ident(&schema), ident(&table)),
                function: Name {
                    schema: Some(fschema),
                    table: fname,
                },
                // The trigger's first argument (arguments are NUL-terminated).
                outbox: row
                    .get::<_, Vec<u8>>(4)
                    .split(|b| *b == 0)
                    .next()
                    .filter(|arg| !arg.is_empty())
                    .map(|arg| String::from_utf8_lossy(arg).into_owned()),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_at_the_first_dot_and_quote_every_part() {
        let name = Name::parse("golconde.outbox.dead").unwrap();
        assert_eq!(name.schema.as_deref(), Some("golconde"));
        assert_eq!(name.table, "outbox.dead");
        assert_eq!(name.sql(), r#""golconde"."outbox.dead""#);
        assert_eq!(Name::parse("t").unwrap().sql(), r#""t""#);
        assert_eq!(
            Name::parse(r#"a.b"; drop table x; --"#).unwrap().sql(),
            r#""a"."b""; drop table x; --""#
        );
        for bad in ["", ".t", "s.", &"x".repeat(64)] {
            assert!(Name::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn long_names_are_cut_and_stay_apart() {
        let a = fit(&format!("capture:{}", "a".repeat(80)));
        let b = fit(&format!("capture:{}b", "a".repeat(80)));
        assert!(a.len() <= 63 && b.len() <= 63);
        assert_ne!(a, b);
        assert_eq!(fit("short"), "short");
        // Cut on a character boundary.
        assert!(fit(&"é".repeat(40)).len() <= 63);
    }

    fn users() -> Source {
        Source {
            name: Name::parse("public.users").unwrap(),
            sql: r#""public"."users""#.into(),
            resolved: "public.users".into(),
            key: vec!["id".into()],
            generated: vec![],
            bytea: vec![],
        }
    }

    #[test]
    fn a_plain_table_is_written_whole_and_keyed_by_its_primary_key() {
        let sql = install_sql(&users(), &Name::parse("golconde.outbox").unwrap());
        assert!(sql.contains("'data', to_json(NEW)"), "{sql}");
        assert!(sql.contains(r#"'restriction', json_build_object('id', OLD."id")"#));
        assert!(sql.contains(r#"ROW(OLD."id") IS DISTINCT FROM ROW(NEW."id")"#));
        assert!(sql.starts_with("BEGIN;") && sql.trim_end().ends_with("COMMIT;"));
    }

    #[test]
    fn generated_columns_are_left_out_and_bytea_goes_as_base64() {
        let mut source = users();
        source.generated = vec!["full".into()];
        source.bytea = vec!["photo".into()];
        let json = row_json(&source, "NEW");
        assert_eq!(
            json,
            r#"(to_jsonb(NEW) - 'full' || jsonb_build_object('photo', translate(encode(NEW."photo", 'base64'), E'\n', '')))::json"#
        );
    }

    #[test]
    fn a_body_holding_the_dollar_tag_gets_another() {
        assert_eq!(dollar_tag("x"), "$golconde$");
        assert_eq!(dollar_tag("x $golconde$ y"), "$golconde1$");
    }
}

//! Which tables a pipeline may write: its `tables` allow-list (exact names, `"schema.*"`,
//! `"*"`), checked by the host on every change whatever the processor said.
//!
//! The allow-list must be stated: a pipeline with neither `table` nor `tables` is refused
//! by the configuration, so that "any table" is always a choice someone wrote down. Even
//! then, a system catalog is never writable through a wildcard or a name: a message that
//! could `update pg_catalog.pg_authid` would own the database. The database plugin checks
//! again on the schema a name resolves to (an unqualified `pg_authid` is found in
//! `pg_catalog` through the search path, which only the database knows).
//!
//! Depends on nothing but std.

use std::collections::HashSet;

/// Schemas no message may write, whatever the allow-list says.
const SYSTEM_SCHEMAS: &[&str] = &["information_schema"];

/// One entry of `tables`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TablePattern {
    /// `"*"`: any table outside the system schemas.
    Any,
    /// `"schema.*"`: any table of one schema.
    Schema(String),
    /// A name, matched exactly as the message writes it (`public.users` and `users` differ).
    Exact(String),
}

impl TablePattern {
    /// Reads one entry, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<TablePattern, String> {
        if text == "*" {
            return Ok(TablePattern::Any);
        }
        if text.is_empty() {
            return Err("an empty table name".into());
        }
        if let Some(schema) = system_schema(text) {
            return Err(format!(
                "`{text}` is in the system schema `{schema}`, which no pipeline may write"
            ));
        }
        if let Some(schema) = text.strip_suffix(".*") {
            if schema.is_empty() || schema.contains('*') {
                return Err(format!(
                    "`{text}`: a wildcard is `*` (any table) or `schema.*` (any table of one \
                     schema)"
                ));
            }
            return Ok(TablePattern::Schema(schema.to_string()));
        }
        if text.contains('*') {
            return Err(format!(
                "`{text}`: a wildcard is `*` (any table) or `schema.*` (any table of one schema)"
            ));
        }
        Ok(TablePattern::Exact(text.to_string()))
    }

    fn matches(&self, table: &str) -> bool {
        match self {
            TablePattern::Any => true,
            TablePattern::Schema(schema) => table
                .strip_prefix(schema.as_str())
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|name| !name.is_empty()),
            TablePattern::Exact(name) => name == table,
        }
    }

    /// Whether the entry written `pattern` admits `table`; false for a malformed entry.
    pub fn matches_text(pattern: &str, table: &str) -> bool {
        TablePattern::parse(pattern).is_ok_and(|p| p.matches(table))
    }
}

/// The schema of `table` if it is a system schema (`pg_catalog`, any `pg_*`,
/// `information_schema`), compared as PostgreSQL folds unquoted names.
fn system_schema(table: &str) -> Option<&str> {
    let (schema, _) = table.split_once('.')?;
    // Checked for every operation: no allocation.
    let bare = schema.trim_matches('"');
    let system = bare.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("pg_"))
        || SYSTEM_SCHEMAS.iter().any(|s| bare.eq_ignore_ascii_case(s));
    system.then_some(schema)
}

/// A pipeline's allow-list, ready to check changes against.
#[derive(Debug, Clone)]
pub struct AllowedTables {
    exact: HashSet<String>,
    patterns: Vec<TablePattern>,
    /// As configured, for messages.
    described: String,
}

impl AllowedTables {
    /// From a pipeline's `table` and `tables` (validated by the configuration).
    pub fn new(table: Option<&str>, tables: &[String]) -> AllowedTables {
        let written: Vec<&str> = if tables.is_empty() {
            table.into_iter().collect()
        } else {
            tables.iter().map(String::as_str).collect()
        };
        let mut exact = HashSet::new();
        let mut patterns = Vec::new();
        for text in &written {
            match TablePattern::parse(text) {
                Ok(TablePattern::Exact(name)) => {
                    exact.insert(name);
                }
                Ok(pattern) => patterns.push(pattern),
                // The configuration refused it already; allowing nothing is the safe reading.
                Err(_) => {}
            }
        }
        AllowedTables {
            exact,
            patterns,
            described: written.join(", "),
        }
    }

    /// The exact names, when there are no wildcards: what a processor may check early.
    pub fn exact_only(&self) -> Option<Vec<String>> {
        self.patterns.is_empty().then(|| {
            let mut names: Vec<String> = self.exact.iter().cloned().collect();
            names.sort_unstable();
            names
        })
    }

    /// `Err` says why `table` may not be written.
    pub fn check(&self, table: &str) -> Result<(), String> {
        if let Some(schema) = system_schema(table) {
            return Err(format!(
                "table `{table}` is in the system schema `{schema}`, which no pipeline may write"
            ));
        }
        if self.exact.contains(table) || self.patterns.iter().any(|p| p.matches(table)) {
            Ok(())
        } else {
            Err(format!(
                "table `{table}` is not among the tables this pipeline may write ({})",
                self.described
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(tables: &[&str]) -> AllowedTables {
        let tables: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
        AllowedTables::new(None, &tables)
    }

    #[test]
    fn exact_names_match_as_written() {
        let a = allowed(&["public.users"]);
        assert!(a.check("public.users").is_ok());
        assert!(a.check("users").is_err());
        assert!(a.check("public.users2").is_err());
        assert_eq!(a.exact_only(), Some(vec!["public.users".to_string()]));
        let a = AllowedTables::new(Some("items"), &[]);
        assert!(a.check("items").is_ok());
        assert!(a.check("other").is_err());
    }

    #[test]
    fn wildcards_allow_a_schema_or_anything() {
        let a = allowed(&["app.*"]);
        assert!(a.check("app.users").is_ok());
        assert!(a.check("app.").is_err());
        assert!(a.check("apps.users").is_err());
        assert!(a.check("users").is_err());
        assert_eq!(a.exact_only(), None);
        let a = allowed(&["*"]);
        assert!(a.check("anything").is_ok());
        assert!(a.check("public.anything").is_ok());
    }

    #[test]
    fn system_schemas_are_never_writable() {
        let a = allowed(&["*"]);
        for table in [
            "pg_catalog.pg_authid",
            "PG_CATALOG.pg_authid",
            "\"pg_catalog\".pg_authid",
            "pg_toast.pg_toast_1",
            "information_schema.tables",
        ] {
            let error = a.check(table).unwrap_err();
            assert!(error.contains("system schema"), "{table}: {error}");
        }
        assert!(TablePattern::parse("pg_catalog.pg_authid").is_err());
        assert!(TablePattern::parse("pg_catalog.*").is_err());
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for text in ["", "a*", "*.users", "a.b*", ".*"] {
            assert!(TablePattern::parse(text).is_err(), "{text}");
        }
    }
}

//! Takes row values out of error texts before any HTTP answer shows them.
//!
//! The latest error of a pipeline is what a plugin said, and databases quote the values
//! they refuse: PostgreSQL's `Key (email)=(a@b.c) already exists` and `Failing row
//! contains (…)`, MariaDB's `Duplicate entry 'a@b.c' for key 'email'`, the plugins' own
//! `column `n` of `t` (bigint) cannot take 1e400`. Those values belong in the log and the
//! dead letter, not on a dashboard anyone on the network may open. What is kept:
//! `backticked` names (Golconde's own way of naming tables, columns, queues), quoted names
//! after a word that says they are one (`constraint "users_email_key"`, `for key
//! 'PRIMARY'`), and the prose. Every other quoted string, every parenthesised value after
//! `=` or `contains`, and the value after `cannot take` or `the number` becomes `…`.
//!
//! When in doubt it takes out more, never less: a quote that does not close hides the rest
//! of the text.
//!
//! Depends on `serde_json` only (for log lines written as JSON).

/// Shown instead of a value.
const HIDDEN: &str = "…";

/// Words after which a quoted string names something rather than holds a value.
const NAMING_WORDS: &[&str] = &[
    "relation",
    "table",
    "column",
    "constraint",
    "index",
    "schema",
    "type",
    "database",
    "role",
    "user",
    "sequence",
    "function",
    "view",
    "trigger",
    "domain",
    "extension",
    "key",
    "queue",
    "exchange",
    "stream",
    "subject",
    "savepoint",
    // Fields of a log line's span: `worker{pipeline="users" role="apply"}`.
    "pipeline=",
    "role=",
    "plugin=",
    "instance=",
    "index=",
];

/// Phrases a value follows without quotes.
const VALUE_AFTER: &[&str] = &["cannot take ", "the number "];

/// What follows the closing parenthesis of a value group (`Key (a)=(…) already exists`).
const GROUP_TAILS: &[&str] = &[
    " already exists",
    " is not present",
    " is still referenced",
    " conflicts with",
    ".",
    " [",
    ";",
];

/// `text` with its values replaced by `…`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let before = &text[..text.len() - rest.len()];
        match c {
            '`' => {
                if let Some(end) = rest[1..].find('`') {
                    out.push_str(&rest[..end + 2]);
                    rest = &rest[end + 2..];
                    continue;
                }
            }
            '"' | '\'' if c == '"' || opens_single_quote(before) => {
                let Some(end) = closing_quote(rest, c) else {
                    out.push(c);
                    out.push_str(HIDDEN);
                    return out;
                };
                if names_something(before) {
                    out.push_str(&rest[..end + 1]);
                } else {
                    out.push(c);
                    out.push_str(HIDDEN);
                    out.push(c);
                }
                rest = &rest[end + 1..];
                continue;
            }
            '(' if before.ends_with('=') || before.ends_with("contains ") => {
                out.push('(');
                out.push_str(HIDDEN);
                match group_end(rest) {
                    Some(end) => {
                        out.push(')');
                        rest = &rest[end + 1..];
                        continue;
                    }
                    None => return out,
                }
            }
            _ => {
                if let Some(phrase) = VALUE_AFTER.iter().find(|p| rest.starts_with(**p)) {
                    out.push_str(phrase);
                    rest = &rest[phrase.len()..];
                    if !rest.starts_with(['"', '\'']) {
                        let end = bare_value_end(rest);
                        if end > 0 {
                            out.push_str(HIDDEN);
                            rest = &rest[end..];
                        }
                    }
                    continue;
                }
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// A log line, redacted: a JSON line field by field (its keys stay), any other as text.
pub fn redact_log_line(line: &str) -> String {
    fn walk(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(s) => *s = redact(s),
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            serde_json::Value::Object(map) => map.values_mut().for_each(walk),
            _ => {}
        }
    }
    if line.trim_start().starts_with('{') {
        if let Ok(mut value) = serde_json::from_str::<serde_json::Value>(line) {
            walk(&mut value);
            return value.to_string();
        }
    }
    redact(line)
}

/// A single quote opens a quoted string only where a word cannot be going on: not in
/// `pipeline's` or `plugins'`.
fn opens_single_quote(before: &str) -> bool {
    before
        .chars()
        .next_back()
        .is_none_or(|c| !c.is_alphanumeric())
}

/// Where the quoted string that starts `text` (with `quote`) ends: the first quote that is
/// not escaped, not doubled, and followed by the end, a space or punctuation.
fn closing_quote(text: &str, quote: char) -> Option<usize> {
    let bytes = text.as_bytes();
    let q = quote as u8;
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b if b == q => {
                let next = bytes.get(i + 1).copied();
                if next == Some(q) {
                    i += 2;
                    continue;
                }
                if next.is_none_or(|n| n.is_ascii_whitespace() || b".,;:)]}\"'`".contains(&n)) {
                    return Some(i);
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    None
}

/// Whether the quoted string after `before` is a name (`constraint "x"`) rather than a
/// value.
fn names_something(before: &str) -> bool {
    let trimmed = before.trim_end();
    if trimmed.len() == before.len() && !before.ends_with('=') {
        return false;
    }
    let word = trimmed
        .rsplit(|c: char| c.is_whitespace() || c == '{' || c == ',')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    NAMING_WORDS.contains(&word.as_str())
}

/// Where the parenthesised value group that starts `text` ends (the index of its `)`).
fn group_end(text: &str) -> Option<usize> {
    text.match_indices(')').map(|(i, _)| i).find(|&i| {
        let after = &text[i + 1..];
        after.is_empty() || GROUP_TAILS.iter().any(|t| after.starts_with(t))
    })
}

/// How long the unquoted value at the start of `text` is: a JSON object or array as a
/// whole, anything else up to a colon or a space.
fn bare_value_end(text: &str) -> usize {
    if text.starts_with(['{', '[']) {
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        for (i, c) in text.char_indices() {
            if in_string {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => in_string = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' => in_string = true,
                '{' | '[' => depth += 1,
                '}' | ']' => {
                    depth -= 1;
                    if depth == 0 {
                        return i + 1;
                    }
                }
                _ => {}
            }
        }
        return text.len();
    }
    text.find(|c: char| c == ':' || c == ',' || c.is_whitespace())
        .unwrap_or(text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn hides(text: &str, secrets: &[&str], expected: &str) {
        let shown = redact(text);
        for secret in secrets {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert_eq!(shown, expected);
    }

    #[test]
    fn postgres_details_lose_their_values() {
        hides(
            "database `primary`: column `email` of `public.users`: duplicate key value \
             violates unique constraint \"users_email_key\" (Key (email)=(a@b.c) already \
             exists.) [constraint users_email_key] [SQLSTATE 23505]; retrying",
            &["a@b.c"],
            "database `primary`: column `email` of `public.users`: duplicate key value \
             violates unique constraint \"users_email_key\" (Key (email)=(…) already \
             exists.) [constraint users_email_key] [SQLSTATE 23505]; retrying",
        );
        hides(
            "null value in column \"name\" of relation \"users\" violates not-null \
             constraint (Failing row contains (7, secret@x, null).) [SQLSTATE 23502]",
            &["secret@x"],
            "null value in column \"name\" of relation \"users\" violates not-null \
             constraint (Failing row contains (…).) [SQLSTATE 23502]",
        );
        hides(
            "insert or update on table \"orders\" violates foreign key constraint \"fk\" \
             (Key (user_id)=(42) is not present in table \"users\".)",
            &["42"],
            "insert or update on table \"orders\" violates foreign key constraint \"fk\" \
             (Key (user_id)=(…) is not present in table \"users\".)",
        );
        hides(
            "conflicting key value violates exclusion constraint \"no_overlap\" (Key \
             (room, during)=(1, [10:00,11:00)) conflicts with existing key (room, \
             during)=(1, [09:30,10:30)).)",
            &["10:00", "09:30"],
            "conflicting key value violates exclusion constraint \"no_overlap\" (Key \
             (room, during)=(…) conflicts with existing key (room, during)=(…).)",
        );
        hides(
            "invalid input syntax for type integer: \"12a\" [SQLSTATE 22P02]",
            &["12a"],
            "invalid input syntax for type integer: \"…\" [SQLSTATE 22P02]",
        );
        // A value that holds a parenthesis and a quote of its own.
        hides(
            "(Key (name)=(o'brien) (x) already exists.)",
            &["brien", "(x"],
            "(Key (name)=(…) already exists.)",
        );
    }

    #[test]
    fn mariadb_errors_lose_their_values() {
        hides(
            "Duplicate entry 'a@b.c' for key 'users.email' (1062)",
            &["a@b.c"],
            "Duplicate entry '…' for key 'users.email' (1062)",
        );
        hides(
            "Incorrect integer value: 'x''y' for column `db`.`t`.`n` at row 1",
            &["x''y", "y'"],
            "Incorrect integer value: '…' for column `db`.`t`.`n` at row 1",
        );
    }

    #[test]
    fn the_plugins_own_quotes_lose_their_values() {
        hides(
            "column `n` of `t` (bigint) cannot take 9250000000000000000: out of range",
            &["925"],
            "column `n` of `t` (bigint) cannot take …: out of range",
        );
        hides(
            "column `j` of `t` (jsonb) cannot take {\"pin\": \"1234\", \"a\": [1]}: bad",
            &["1234", "pin"],
            "column `j` of `t` (jsonb) cannot take …: bad",
        );
        hides(
            "column `s` of `t` (text) cannot take \"s3cret\": too long",
            &["s3cret"],
            "column `s` of `t` (text) cannot take \"…\": too long",
        );
        hides(
            "expected a string, found the number 31337",
            &["31337"],
            "expected a string, found the number …",
        );
        // An escaped quote inside JSON text does not end it.
        hides(
            r#"value "a\"b c" refused"#,
            &["b c"],
            r#"value "…" refused"#,
        );
    }

    #[test]
    fn names_and_prose_stay() {
        let own = "dead-lettered message `id-7` of `users` (permanent error; the reason is \
                   in its `x-golconde-error` header and in the log); the pipeline's \
                   process and the plugins' authors";
        assert_eq!(redact(own), own);
        let span = r#"WARN users/apply/0 worker{pipeline="users" role="apply" index=0}: x"#;
        assert_eq!(redact(span), span);
        assert_eq!(
            redact("password authentication failed for user \"golconde\""),
            "password authentication failed for user \"golconde\""
        );
    }

    #[test]
    fn a_quote_that_does_not_close_hides_the_rest() {
        hides("token \"abc def", &["abc", "def"], "token \"…");
        hides("Key (a)=(abc def", &["abc"], "Key (a)=(…");
    }

    #[test]
    fn json_log_lines_keep_their_keys() {
        let line = r#"{"level":"WARN","fields":{"message":"Duplicate entry 'x@y' for key 'e'"},"target":"golconde"}"#;
        let shown: serde_json::Value = serde_json::from_str(&redact_log_line(line)).unwrap();
        assert_eq!(
            shown["fields"]["message"],
            "Duplicate entry '…' for key 'e'"
        );
        assert_eq!(shown["level"], "WARN");
        assert_eq!(
            redact_log_line("2026 WARN (Key (k)=(v1) already exists.)"),
            "2026 WARN (Key (k)=(…) already exists.)"
        );
    }
}

//! The named limits on what one message may cost, checked in one pass over its bytes
//! before anything parses it.
//!
//! Parsing and converting a message recurse once per level of nesting and allocate once
//! per field, so the input decides how deep the dispatcher's stack goes and how much it
//! holds. [`check`] walks the text once, with no recursion and memory bounded by the
//! depth limit, and refuses a message over a limit before any of that work starts. It
//! does not validate JSON: serde_json does that afterwards, and whatever the scan lets
//! through of a malformed message is a prefix serde_json stops at.
//!
//! - **Depth** (`max_depth`) counts the arrays and objects nested inside one value:
//!   `[1, 2]` and `{"a": 1}` are 1 deep, `[[1]]` and `{"a": [1]}` 2. It is measured per
//!   column of `data` and `restriction`, per other top-level field, and for a message
//!   that is not an object, for the whole message; the message object and its `data` and
//!   `restriction` objects are not counted.
//! - **Fields** (`max_fields`) bounds three counts separately: the columns of `data` and
//!   `restriction` together, the elements of the message's array values together
//!   (nested arrays included; arrays inside an object value are not counted, since an
//!   object stays JSON text), and the message's own top-level fields.

use std::ops::Range;

use memchr::memchr2;

/// The defaults, documented in `docs/configuration.md`.
pub const DEFAULT_MAX_DEPTH: usize = 64;
pub const DEFAULT_MAX_FIELDS: usize = 4096;
/// The deepest `max_depth` may be set. Conversion here does not recurse, but dropping a
/// `Value`, and a database plugin converting one, do, once per level: this bounds the
/// stack one message can use whatever the configuration says (a 256-deep value is
/// dropped within 256 KiB of stack, a tenth of what the host's threads have).
pub const MAX_MAX_DEPTH: usize = 256;

/// The limits one message must keep; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The deepest arrays and objects may nest inside one value (`max_depth`).
    pub max_depth: usize,
    /// The most columns, array elements and top-level fields, each counted on its own
    /// (`max_fields`).
    pub max_fields: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_depth: DEFAULT_MAX_DEPTH,
            max_fields: DEFAULT_MAX_FIELDS,
        }
    }
}

/// What an open array or object is, as far as the limits care.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The message object: its keys are top-level fields.
    Message,
    /// `data` or `restriction`: its keys are columns.
    Columns,
    /// An array holding a column's value (or an element of one): its elements are counted.
    ColumnArray,
    /// Anything else; nested inside it is counted for depth only.
    Other,
}

struct Level {
    role: Role,
    object: bool,
    /// How deep this container is inside the value the depth limit applies to.
    depth: usize,
    /// The next token starts a new element (after `[`, `{` or `,`).
    fresh: bool,
    /// In an object, the text (quotes included) of the latest key.
    key: Option<Range<usize>>,
}

/// Refuses a message over `limits`, with an error that names the limit, the key that
/// raises it and where in the message it was reached.
pub fn check(text: &str, limits: &Limits) -> Result<(), String> {
    let bytes = text.as_bytes();
    let mut stack: Vec<Level> = Vec::new();
    let (mut fields, mut columns, mut elements) = (0usize, 0usize, 0usize);
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        if matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | b':') {
            at += 1;
            continue;
        }
        if let Some(level) = stack.last_mut() {
            if byte == b',' {
                level.fresh = true;
                at += 1;
                continue;
            }
            if level.fresh && !matches!(byte, b']' | b'}') {
                level.fresh = false;
                let (role, object) = (level.role, level.object);
                let counted = match role {
                    Role::Message => Some((&mut fields, Counted::Fields)),
                    Role::Columns => Some((&mut columns, Counted::Columns)),
                    Role::ColumnArray => Some((&mut elements, Counted::Elements)),
                    Role::Other => None,
                };
                if object && byte == b'"' {
                    let end = string_end(bytes, at);
                    level.key = Some(at..end);
                    at = end;
                }
                if let Some((count, what)) = counted {
                    *count += 1;
                    if *count > limits.max_fields {
                        return Err(what.error(limits.max_fields, &place(text, &stack)));
                    }
                }
                if object && byte == b'"' {
                    continue;
                }
            }
        }
        match byte {
            b'"' => at = string_end(bytes, at),
            b'[' | b'{' => {
                let object = byte == b'{';
                let (role, depth) = match stack.last() {
                    None if object => (Role::Message, 0),
                    None => (Role::Other, 1),
                    Some(parent) => match parent.role {
                        Role::Message if object && is_columns(text, parent.key.clone()) => {
                            (Role::Columns, 0)
                        }
                        Role::Message | Role::Columns if object => (Role::Other, 1),
                        Role::Message => (Role::Other, 1),
                        Role::Columns => (Role::ColumnArray, 1),
                        Role::ColumnArray if !object => (Role::ColumnArray, parent.depth + 1),
                        Role::ColumnArray | Role::Other => (Role::Other, parent.depth + 1),
                    },
                };
                if depth > limits.max_depth {
                    return Err(format!(
                        "{} nests arrays and objects more than {} deep (the processor's \
                         `max_depth`); raise `max_depth` in the pipeline's processor settings \
                         if such values are expected",
                        place(text, &stack),
                        limits.max_depth
                    ));
                }
                stack.push(Level {
                    role,
                    object,
                    depth,
                    fresh: true,
                    key: None,
                });
                at += 1;
            }
            b']' | b'}' => {
                // A stray closer is serde_json's to report.
                if stack.pop().is_none() {
                    return Ok(());
                }
                at += 1;
            }
            _ => at += 1,
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Counted {
    Fields,
    Columns,
    Elements,
}

impl Counted {
    fn error(self, max: usize, place: &str) -> String {
        let what = match self {
            Counted::Fields => format!("the message has more than {max} top-level fields"),
            Counted::Columns => format!(
                "`data` and `restriction` have more than {max} columns together (reached at \
                 {place})"
            ),
            Counted::Elements => format!(
                "the message's array values have more than {max} elements together (reached \
                 at {place})"
            ),
        };
        format!(
            "{what}, over the processor's `max_fields`; raise `max_fields` in the pipeline's \
             processor settings if such messages are expected"
        )
    }
}

/// Where the scan is, for an error: "`data.tags`", "`id`", "the message".
fn place(text: &str, stack: &[Level]) -> String {
    let key = |level: Option<&Level>| {
        level
            .and_then(|l| l.key.clone())
            .map(|span| decode_key(text, span))
    };
    match (stack.first().map(|l| l.role), key(stack.first())) {
        (Some(Role::Message), Some(field)) => match stack.get(1) {
            Some(level) if level.role == Role::Columns => match key(Some(level)) {
                Some(column) => format!("`{field}.{column}`"),
                None => format!("`{field}`"),
            },
            _ => format!("`{field}`"),
        },
        _ => "the message".into(),
    }
}

/// Whether the key a value follows is `data` or `restriction`.
fn is_columns(text: &str, key: Option<Range<usize>>) -> bool {
    key.is_some_and(|span| matches!(decode_key(text, span).as_str(), "data" | "restriction"))
}

/// A key's text, escapes decoded (shortened for messages; an undecodable one as written).
fn decode_key(text: &str, span: Range<usize>) -> String {
    let raw = &text[span];
    let key = match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) if !inner.contains('\\') => inner.to_string(),
        _ => serde_json::from_str::<String>(raw).unwrap_or_else(|_| raw.to_string()),
    };
    match key.char_indices().nth(60) {
        Some((end, _)) => format!("{}…", &key[..end]),
        None => key,
    }
}

/// Where the string starting with the quote at `start` ends (after its closing quote),
/// or the end of the text if it never does.
fn string_end(bytes: &[u8], start: usize) -> usize {
    let mut at = start + 1;
    while let Some(offset) = memchr2(b'"', b'\\', &bytes[at..]) {
        at += offset;
        if bytes[at] == b'"' {
            return at + 1;
        }
        at += 2;
        if at >= bytes.len() {
            break;
        }
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_depth: usize, max_fields: usize) -> Limits {
        Limits {
            max_depth,
            max_fields,
        }
    }

    #[test]
    fn depth_is_counted_inside_each_value() {
        let two = limits(2, 100);
        for ok in [
            r#"{"action": "add", "data": {"a": [[1]], "b": {"c": [1]}}}"#,
            r#"{"restriction": {"a": [["]]]]"]]}}"#,
            r#"{"id": [[1]]}"#,
            "[[1]]",
            "",
            "]]]]",
        ] {
            assert_eq!(check(ok, &two), Ok(()), "{ok}");
        }
        for (bad, place) in [
            (r#"{"data": {"a": [[[1]]]}}"#, "`data.a`"),
            (r#"{"data": {"x": 1, "a\"b": {"c": [[]]}}}"#, "`data.a\"b`"),
            (r#"{"restriction": {"a": [[{}]]}}"#, "`restriction.a`"),
            (r#"{"table": [[[1]]]}"#, "`table`"),
            (r#"{"d\u0061ta": {"a": [[[1]]]}}"#, "`data.a`"),
            ("[[[1]]]", "the message"),
            ("[[[", "the message"),
        ] {
            let e = check(bad, &two).unwrap_err();
            assert!(
                e.starts_with(&format!(
                    "{place} nests arrays and objects more than 2 deep"
                )),
                "{bad}: {e}"
            );
            assert!(e.contains("raise `max_depth`"), "{e}");
        }
        // Brackets inside strings, escaped quotes included, are text.
        let ok = r#"{"data": {"a": "[[[[\"[[[[", "b\\": "{{{{"}}"#;
        assert_eq!(check(ok, &limits(0, 100)), Ok(()));
    }

    #[test]
    fn fields_are_counted_where_they_allocate() {
        let three = limits(10, 3);
        for ok in [
            r#"{"action": "update", "data": {"a": 1, "b": 2}, "restriction": {"id": 1}}"#,
            r#"{"data": {"a": [1, [2]]}}"#,
            r#"{"data": {"a": {"x": [1, 2, 3, 4, 5], "y": 1, "z": 2, "w": 3}}}"#,
            r#"{"data": {"a": "1,2,3,4,5", "b": [], "c": [ ]}}"#,
        ] {
            assert_eq!(check(ok, &three), Ok(()), "{ok}");
        }
        for (bad, words) in [
            (
                r#"{"data": {"a": 1, "b": 2}, "restriction": {"c": 1, "d": 1}}"#,
                "`data` and `restriction` have more than 3 columns together (reached at `restriction.d`)",
            ),
            (
                r#"{"data": {"a": [1, 2], "b": [[3, 4]]}}"#,
                "array values have more than 3 elements together (reached at `data.b`)",
            ),
            (r#"{"a": 1, "b": 2, "c": 3, "d": 4}"#, "more than 3 top-level fields"),
        ] {
            let e = check(bad, &three).unwrap_err();
            assert!(e.contains(words), "{bad}: {e}");
            assert!(e.contains("raise `max_fields`"), "{e}");
        }
    }
}

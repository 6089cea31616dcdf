//! The named limits on what one input (a message, an event) may cost, checked in one pass
//! over its bytes before anything parses it.
//!
//! Parsing and converting an input recurse once per level of nesting and allocate once
//! per field, so the input decides how deep the dispatcher's stack goes and how much it
//! holds. [`Shape::check`] walks the text once, with no recursion and memory bounded by
//! the depth limit, and refuses an input over a limit before any of that work starts. It
//! does not validate JSON: serde_json does that afterwards, and whatever the scan lets
//! through of a malformed input is a prefix serde_json stops at.
//!
//! A processor says where its format allocates with a [`Shape`]: which keys of the
//! top-level object hold the columns, and which key, if any, holds an envelope whose
//! fields count as the input's own. Then:
//!
//! - **Depth** (`max_depth`) counts the arrays and objects nested inside one value:
//!   `[1, 2]` and `{"a": 1}` are 1 deep, `[[1]]` and `{"a": [1]}` 2. It is measured per
//!   column, per other field of the input (and of its envelope), and for an input that is
//!   not an object, for the whole input; the input object, its envelope and its column
//!   objects are not counted.
//! - **Fields** (`max_fields`) bounds three counts separately: the columns of all the
//!   column objects together, the elements of the column values' arrays together (nested
//!   arrays included; arrays inside an object value are not counted, since an object
//!   stays JSON text), and the fields of the input object (and of its envelope) together.

use std::ops::Range;

use memchr::memchr2;

use crate::json::excerpt;

/// The defaults, documented in `docs/configuration.md`.
pub const DEFAULT_MAX_DEPTH: usize = 64;
pub const DEFAULT_MAX_FIELDS: usize = 4096;
/// The deepest `max_depth` may be set. The scan does not recurse, but dropping a `Value`,
/// and a database plugin converting one, do, once per level: this bounds the stack one
/// input can use whatever the configuration says (a 256-deep value is dropped within
/// 256 KiB of stack, a tenth of what the host's threads have).
pub const MAX_MAX_DEPTH: usize = 256;

/// The limits one input must keep; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The deepest arrays and objects may nest inside one value (`max_depth`).
    pub max_depth: usize,
    /// The most columns, array elements and fields, each counted on its own
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

/// Where a format keeps its columns, and what errors call one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// One input, in errors: "message", "event".
    pub noun: &'static str,
    /// The keys of the input object (or of its envelope) whose objects hold columns.
    pub columns: &'static [&'static str],
    /// The key of the input object whose object holds more fields of the input, the
    /// column objects among them (Debezium's `payload`); its fields are counted with the
    /// input's own.
    pub envelope: Option<&'static str>,
}

/// What an open array or object is, as far as the limits care.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The input object: its keys are fields.
    Input,
    /// The envelope: its keys are fields too.
    Envelope,
    /// An object whose keys are columns.
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Counted {
    Fields,
    Columns,
    Elements,
}

impl Shape {
    /// Refuses an input over `limits`, with an error that names the limit, the key that
    /// raises it and where in the input it was reached.
    pub fn check(&self, text: &str, limits: &Limits) -> Result<(), String> {
        if cannot_reach(text.as_bytes(), limits) {
            return Ok(());
        }
        self.scan(text, limits)
    }

    /// The walk of [`Shape::check`], for an input that might reach a limit.
    fn scan(&self, text: &str, limits: &Limits) -> Result<(), String> {
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
                        Role::Input | Role::Envelope => Some((&mut fields, Counted::Fields)),
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
                            let place = self.place(text, &stack);
                            return Err(self.too_many(what, limits.max_fields, &place));
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
                    let (role, depth) = self.child(text, stack.last(), object);
                    if depth > limits.max_depth {
                        return Err(format!(
                            "{} nests arrays and objects more than {} deep (the processor's \
                             `max_depth`); raise `max_depth` in the pipeline's processor \
                             settings if such values are expected",
                            self.place(text, &stack),
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

    /// The role and depth of an array or object opened inside `parent`.
    fn child(&self, text: &str, parent: Option<&Level>, object: bool) -> (Role, usize) {
        let key = |level: &Level| level.key.clone().map(|span| decode_key(text, span));
        match parent {
            None if object => (Role::Input, 0),
            None => (Role::Other, 1),
            Some(parent) => match parent.role {
                Role::Input | Role::Envelope if object => match key(parent) {
                    Some(key)
                        if parent.role == Role::Input && self.envelope == Some(key.as_str()) =>
                    {
                        (Role::Envelope, 0)
                    }
                    Some(key) if self.columns.contains(&key.as_str()) => (Role::Columns, 0),
                    _ => (Role::Other, 1),
                },
                Role::Input | Role::Envelope => (Role::Other, 1),
                Role::Columns if object => (Role::Other, 1),
                Role::Columns => (Role::ColumnArray, 1),
                Role::ColumnArray if !object => (Role::ColumnArray, parent.depth + 1),
                Role::ColumnArray | Role::Other => (Role::Other, parent.depth + 1),
            },
        }
    }

    /// The error for a count over `max`, reached at `place`.
    fn too_many(&self, counted: Counted, max: usize, place: &str) -> String {
        let noun = self.noun;
        let what = match counted {
            Counted::Fields => match self.envelope {
                None => format!("the {noun} has more than {max} top-level fields"),
                Some(envelope) => format!(
                    "the {noun} has more than {max} fields (its own and its `{envelope}`'s \
                     together; reached at {place})"
                ),
            },
            Counted::Columns => {
                let keys: Vec<String> = self.columns.iter().map(|k| format!("`{k}`")).collect();
                match keys.as_slice() {
                    [one] => format!("{one} has more than {max} columns (reached at {place})"),
                    [first @ .., last] => format!(
                        "{} and {last} have more than {max} columns together (reached at \
                         {place})",
                        first.join(", ")
                    ),
                    [] => unreachable!("columns are counted only under a column key"),
                }
            }
            Counted::Elements => format!(
                "the {noun}'s array values have more than {max} elements together (reached at \
                 {place})"
            ),
        };
        format!(
            "{what}, over the processor's `max_fields`; raise `max_fields` in the pipeline's \
             processor settings if such {noun}s are expected"
        )
    }

    /// Where the scan is, for an error: "`payload.after.tags`", "`id`", "the message".
    fn place(&self, text: &str, stack: &[Level]) -> String {
        let path: Vec<String> = stack
            .iter()
            .take_while(|level| matches!(level.role, Role::Input | Role::Envelope | Role::Columns))
            .map_while(|level| level.key.clone().map(|span| decode_key(text, span)))
            .collect();
        if path.is_empty() {
            format!("the {}", self.noun)
        } else {
            format!("`{}`", path.join("."))
        }
    }
}

/// Whether `bytes` keeps every limit whatever its structure, told by counting `[`, `{` and
/// `,` (passes the compiler vectorizes, far cheaper than the walk). Nothing nests
/// deeper than the arrays and objects it opens, and every element counted starts a
/// container or follows a comma, so no count can exceed the openers and commas together.
/// Those inside strings are counted too, which only overestimates.
fn cannot_reach(bytes: &[u8], limits: &Limits) -> bool {
    // One pass, in chunks whose counts fit a byte's lanes, which the compiler vectorizes.
    let (mut openers, mut commas) = (0usize, 0usize);
    for chunk in bytes.chunks(255) {
        let (mut o, mut c) = (0u8, 0u8);
        for &b in chunk {
            o += u8::from(b == b'[' || b == b'{');
            c += u8::from(b == b',');
        }
        openers += usize::from(o);
        commas += usize::from(c);
    }
    openers <= limits.max_depth && openers.saturating_add(commas) <= limits.max_fields
}

/// A key's text, escapes decoded (shortened for messages; an undecodable one as written).
fn decode_key(text: &str, span: Range<usize>) -> String {
    let raw = &text[span];
    let key = match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) if !inner.contains('\\') => inner.to_string(),
        _ => serde_json::from_str::<String>(raw).unwrap_or_else(|_| raw.to_string()),
    };
    excerpt(&key)
}

/// Where the string starting with the quote at `start` ends (after its closing quote), or
/// the end of the text if it never does.
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

    /// Columns under `cols` or `more`, and an envelope `env`.
    const SHAPE: Shape = Shape {
        noun: "input",
        columns: &["cols", "more"],
        envelope: Some("env"),
    };

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
            r#"{"cols": {"a": [[1]], "b": {"c": [1]}}}"#,
            r#"{"env": {"more": {"a": [["]]]]"]]}, "x": [[1]]}}"#,
            r#"{"id": [[1]]}"#,
            "[[1]]",
            "",
            "]]]]",
        ] {
            assert_eq!(SHAPE.check(ok, &two), Ok(()), "{ok}");
        }
        for (bad, place) in [
            (r#"{"cols": {"a": [[[1]]]}}"#, "`cols.a`"),
            (
                r#"{"env": {"cols": {"x": 1, "a\"b": {"c": [[]]}}}}"#,
                "`env.cols.a\"b`",
            ),
            // An envelope inside the envelope is just a field.
            (r#"{"env": {"env": {"cols": [[1]]}}}"#, "`env.env`"),
            (r#"{"other": [[[1]]]}"#, "`other`"),
            (r#"{"c\u006fls": {"a": [[[1]]]}}"#, "`cols.a`"),
            ("[[[1]]]", "the input"),
            ("[[[", "the input"),
        ] {
            let e = SHAPE.check(bad, &two).unwrap_err();
            assert!(
                e.starts_with(&format!(
                    "{place} nests arrays and objects more than 2 deep (the processor's `max_depth`)"
                )),
                "{bad}: {e}"
            );
            assert!(e.ends_with("if such values are expected"), "{e}");
        }
        // Brackets inside strings, escaped quotes included, are text.
        let ok = r#"{"cols": {"a": "[[[[\"[[[[", "b\\": "{{{{"}}"#;
        assert_eq!(SHAPE.check(ok, &limits(0, 100)), Ok(()));
        // A long key is shortened in the error.
        let long = format!(r#"{{"{}": [[[1]]]}}"#, "k".repeat(100));
        let e = SHAPE.check(&long, &two).unwrap_err();
        assert!(
            e.starts_with(&format!("`{}…` nests", "k".repeat(60))),
            "{e}"
        );
    }

    #[test]
    fn fields_are_counted_where_they_allocate() {
        let three = limits(10, 3);
        for ok in [
            r#"{"cols": {"a": 1, "b": 2}, "more": {"c": 1}}"#,
            r#"{"cols": {"a": [1, [2]]}}"#,
            r#"{"cols": {"a": {"x": [1, 2, 3, 4, 5], "y": 1, "z": 2, "w": 3}}}"#,
            r#"{"cols": {"a": "1,2,3,4,5", "b": [], "c": [ ]}}"#,
            r#"{"other": {"a": 1, "b": 2, "c": 3, "d": 4}}"#,
        ] {
            assert_eq!(SHAPE.check(ok, &three), Ok(()), "{ok}");
        }
        for (bad, words) in [
            (
                r#"{"cols": {"a": 1, "b": 2}, "env": {"more": {"c": 1, "d": 1}}}"#,
                "`cols` and `more` have more than 3 columns together (reached at `env.more.d`)",
            ),
            (
                r#"{"cols": {"a": [1, 2], "b": [[3, 4]]}}"#,
                "the input's array values have more than 3 elements together (reached at `cols.b`)",
            ),
            (
                r#"{"a": 1, "env": {"b": 2, "c": 3}}"#,
                "the input has more than 3 fields (its own and its `env`'s together; reached at \
                 `env.c`)",
            ),
        ] {
            let e = SHAPE.check(bad, &three).unwrap_err();
            assert!(e.starts_with(words), "{bad}: {e}");
            assert!(
                e.ends_with(
                    ", over the processor's `max_fields`; raise `max_fields` in the pipeline's \
                     processor settings if such inputs are expected"
                ),
                "{e}"
            );
        }
    }

    /// Counting never lets through an input that the walk would refuse. Checked on every
    /// input of up to 6 bytes from a small alphabet, under limits small enough to reach.
    #[test]
    fn inputs_let_through_by_counting_pass_the_walk_too() {
        const ALPHABET: &[u8] = br#"[]{},:"1"#;
        let keyed = [
            r#"{"cols": {"a": [1, [2]], "b": 1}, "env": {"c": 1}}"#,
            r#"{"env": {"more": {"a": [[1]], "b": {"c": [1, 2]}}}}"#,
        ];
        let mut checked = 0;
        for limits in [limits(0, 0), limits(1, 2), limits(2, 3), limits(3, 9)] {
            for text in &keyed {
                if cannot_reach(text.as_bytes(), &limits) {
                    assert_eq!(SHAPE.scan(text, &limits), Ok(()), "{text}");
                    checked += 1;
                }
            }
            for len in 0..=6u32 {
                for mut n in 0..ALPHABET.len().pow(len) {
                    let mut text = String::new();
                    for _ in 0..len {
                        text.push(char::from(ALPHABET[n % ALPHABET.len()]));
                        n /= ALPHABET.len();
                    }
                    if cannot_reach(text.as_bytes(), &limits) {
                        assert_eq!(SHAPE.scan(&text, &limits), Ok(()), "{text}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 100_000, "{checked}");
        // And what reaches a limit still meets the walk.
        for (text, limits) in [
            ("[[[1]]]", limits(2, 100)),
            (r#"{"a": 1, "b": 2, "c": 3}"#, limits(10, 2)),
        ] {
            assert!(!cannot_reach(text.as_bytes(), &limits), "{text}");
            assert!(SHAPE.check(text, &limits).is_err(), "{text}");
        }
    }

    #[test]
    fn a_shape_without_an_envelope_counts_top_level_fields() {
        let flat = Shape {
            noun: "message",
            columns: &["data"],
            envelope: None,
        };
        let two = limits(10, 2);
        let e = flat.check(r#"{"a": 1, "b": 2, "c": 3}"#, &two).unwrap_err();
        assert!(
            e.starts_with("the message has more than 2 top-level fields, over"),
            "{e}"
        );
        let e = flat
            .check(r#"{"data": {"a": 1, "b": 2, "c": 3}}"#, &two)
            .unwrap_err();
        assert!(
            e.starts_with("`data` has more than 2 columns (reached at `data.c`)"),
            "{e}"
        );
        // Without an envelope, `env` is a field like any other.
        let e = flat
            .check(r#"{"env": {"data": {"a": [[1]]}}}"#, &limits(1, 10))
            .unwrap_err();
        assert!(e.starts_with("`env` nests"), "{e}");
    }
}

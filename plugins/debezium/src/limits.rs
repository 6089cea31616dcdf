//! The named limits on what one event may cost, checked in one pass over its bytes before
//! anything parses it, by `golconde_plugin_support::limits`, as the `autosql` processor
//! checks them, with the same keys and defaults; this says where a Debezium event
//! allocates rather than where a Golconde message does:
//!
//! - **Depth** (`max_depth`) counts the arrays and objects nested inside one value: `[1]`
//!   and `{"a": 1}` are 1 deep, `[[1]]` 2. It is measured per column of `before` and
//!   `after`, per other field of the event and of its `payload` (`schema` and `source`
//!   included), and for an event that is not an object, for the whole event; the event
//!   object, its `payload` and the `before` and `after` objects are not counted.
//! - **Fields** (`max_fields`) bounds three counts separately: the columns of `before` and
//!   `after` together, the elements of the column values' arrays together (nested arrays
//!   included; arrays inside an object value are not counted, since an object stays JSON
//!   text), and the fields of the event object and of its `payload` together.

use golconde_plugin_support::limits::Shape;
pub use golconde_plugin_support::limits::{
    Limits, DEFAULT_MAX_DEPTH, DEFAULT_MAX_FIELDS, MAX_MAX_DEPTH,
};

/// A Debezium event: its columns in `before` and `after`, directly or inside `payload`
/// when the event has the schema envelope.
const EVENT: Shape = Shape {
    noun: "event",
    columns: &["before", "after"],
    envelope: Some("payload"),
};

/// Refuses an event over `limits`, with an error that names the limit, the key that raises
/// it and where in the event it was reached.
pub fn check(text: &str, limits: &Limits) -> Result<(), String> {
    EVENT.check(text, limits)
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
            r#"{"payload": {"op": "c", "after": {"a": [[1]], "b": {"c": [1]}}}}"#,
            r#"{"op": "c", "after": {"a": [[1]]}, "source": {"x": [1]}}"#,
            r#"{"schema": {"fields": [1]}, "payload": {"before": {"a": ["]]]]"]}}}"#,
            "[[1]]",
            "",
            "]]]]",
        ] {
            assert_eq!(check(ok, &two), Ok(()), "{ok}");
        }
        for (bad, place) in [
            (
                r#"{"payload": {"after": {"a": [[[1]]]}}}"#,
                "`payload.after.a`",
            ),
            (
                r#"{"after": {"x": 1, "a\"b": {"c": [[]]}}}"#,
                "`after.a\"b`",
            ),
            (r#"{"before": {"a": [[{}]]}}"#, "`before.a`"),
            (r#"{"schema": {"fields": [{"a": 1}]}}"#, "`schema`"),
            (r#"{"payload": {"source": [[[1]]]}}"#, "`payload.source`"),
            (
                r#"{"p\u0061yload": {"after": {"a": [[[1]]]}}}"#,
                "`payload.after.a`",
            ),
            ("[[[1]]]", "the event"),
            ("[[[", "the event"),
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
        let ok = r#"{"after": {"a": "[[[[\"[[[[", "b\\": "{{{{"}}"#;
        assert_eq!(check(ok, &limits(0, 100)), Ok(()));
    }

    #[test]
    fn fields_are_counted_where_they_allocate() {
        let three = limits(10, 3);
        for ok in [
            r#"{"op": "u", "before": {"a": 1}, "after": {"a": 1, "b": 2}}"#,
            r#"{"schema": {"f": [1, 2, 3, 4, 5]}, "payload": {"after": {"a": [1, [2]]}}}"#,
            r#"{"after": {"a": {"x": [1, 2, 3, 4, 5], "y": 1, "z": 2, "w": 3}}}"#,
            r#"{"after": {"a": "1,2,3,4,5", "b": [], "c": [ ]}}"#,
        ] {
            assert_eq!(check(ok, &three), Ok(()), "{ok}");
        }
        for (bad, words) in [
            (
                r#"{"before": {"a": 1, "b": 2}, "after": {"a": 1, "b": 2}}"#,
                "`before` and `after` have more than 3 columns together (reached at `after.b`)",
            ),
            (
                r#"{"payload": {"after": {"a": [1, 2], "b": [[3, 4]]}}}"#,
                "array values have more than 3 elements together (reached at `payload.after.b`)",
            ),
            (
                r#"{"schema": 1, "payload": {"a": 1, "b": 2}}"#,
                "the event has more than 3 fields",
            ),
            (r#"{"a": 1, "b": 2, "c": 3, "d": 4}"#, "more than 3 fields"),
        ] {
            let e = check(bad, &three).unwrap_err();
            assert!(e.contains(words), "{bad}: {e}");
            assert!(e.contains("raise `max_fields`"), "{e}");
        }
    }
}

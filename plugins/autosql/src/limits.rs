//! The named limits on what one message may cost, checked in one pass over its bytes
//! before anything parses it, by `golconde_plugin_support::limits`: this says where a
//! Golconde message allocates.
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

use golconde_plugin_support::limits::Shape;
pub use golconde_plugin_support::limits::{
    Limits, DEFAULT_MAX_DEPTH, DEFAULT_MAX_FIELDS, MAX_MAX_DEPTH,
};

/// A Golconde message: its columns in `data` and `restriction`, no envelope.
const MESSAGE: Shape = Shape {
    noun: "message",
    columns: &["data", "restriction"],
    envelope: None,
};

/// Refuses a message over `limits`, with an error that names the limit, the key that
/// raises it and where in the message it was reached.
pub fn check(text: &str, limits: &Limits) -> Result<(), String> {
    MESSAGE.check(text, limits)
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

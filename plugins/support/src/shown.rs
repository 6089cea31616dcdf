//! Values as a database plugin writes them as JSON: into a JSON column, and quoted in an
//! error message; and a change's column names as an error lists them. A float that is not finite is spelt the database's way (`float_text`):
//! JSON has no such number, so a JSON column refuses it and a message shows it as a
//! string.

use base64::Engine;
use golconde_plugin_api::{Column, Value};

/// The names of `columns`, as an error lists them: `none` when there are none.
pub fn column_names(columns: &[Column]) -> String {
    let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// A float as the database writes it, infinities and NaN included.
pub type FloatText = fn(f64) -> String;

/// A value as JSON text: JSON stays as it is, text becomes a JSON string. JSON has no
/// infinity and no NaN, so such a float is refused rather than stored as a string.
pub fn json_text(value: &Value, out: &mut String, float_text: FloatText) -> Result<(), String> {
    match value {
        Value::Float(f) if !f.is_finite() => {
            return Err(format!("JSON has no number {}", float_text(*f)))
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_text(item, out, float_text)?;
            }
            out.push(']');
        }
        _ => shown_json(value, out, float_text),
    }
    Ok(())
}

/// A value as JSON text for a message; a float JSON cannot hold is shown as a string.
fn shown_json(value: &Value, out: &mut String, float_text: FloatText) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::Float(f) if f.is_finite() => out.push_str(&float_text(*f)),
        Value::Float(f) => out.push_str(&serde_json::to_string(&float_text(*f)).expect("text")),
        Value::Numeric(t) => out.push_str(t),
        Value::Json(t) => out.push_str(t),
        Value::Text(t) => out.push_str(&serde_json::to_string(t.as_str()).expect("text")),
        Value::Bytes(b) => out.push_str(
            &serde_json::to_string(&base64::engine::general_purpose::STANDARD.encode(b.as_slice()))
                .expect("text"),
        ),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                shown_json(item, out, float_text);
            }
            out.push(']');
        }
    }
}

/// What kind of value this is, for messages.
pub fn noun(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Int(_) | Value::Float(_) | Value::Numeric(_) => "a number",
        Value::Text(_) => "a string",
        Value::Bytes(_) => "bytes",
        Value::Json(_) => "a JSON object",
        Value::Array(_) => "an array",
    }
}

/// A value as quoted in an error message, cut short.
pub fn show(value: &Value, float_text: FloatText) -> String {
    const MAX: usize = 80;
    let mut text = String::new();
    shown_json(value, &mut text, float_text);
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spelt(f: f64) -> String {
        if f.is_nan() {
            "NaN".into()
        } else {
            f.to_string()
        }
    }

    #[test]
    fn values_are_written_as_json() {
        let value = Value::Array(
            vec![
                Value::Null,
                Value::Bool(false),
                Value::Int(-3),
                Value::Float(1.5),
                Value::Numeric("1.50".into()),
                Value::Text("a\"b".into()),
                Value::Json(r#"{"x": 1}"#.into()),
                Value::Bytes(vec![255].into()),
            ]
            .into(),
        );
        let mut out = String::new();
        json_text(&value, &mut out, spelt).unwrap();
        assert_eq!(out, r#"[null,false,-3,1.5,1.50,"a\"b",{"x": 1},"/w=="]"#);
        let nan = Value::Array(vec![Value::Float(f64::NAN)].into());
        assert_eq!(
            json_text(&nan, &mut String::new(), spelt),
            Err("JSON has no number NaN".into())
        );
    }

    #[test]
    fn messages_show_values_cut_short_and_any_float() {
        assert_eq!(show(&Value::Float(f64::NAN), spelt), r#""NaN""#);
        assert_eq!(
            show(&Value::Text("x".repeat(100).into()), spelt)
                .chars()
                .count(),
            81
        );
        assert_eq!(noun(&Value::Numeric("1".into())), "a number");
    }
}

//! The Kafka Connect schema an event carries in its envelope (`{"schema": ...,
//! "payload": ...}`): only what decoding values needs, each field's type, logical name,
//! parameters and, for arrays, the type of the elements.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::Value as Json;

/// One Kafka Connect schema: the envelope's, a row's, or one column's.
#[derive(Debug, Deserialize)]
pub struct Schema {
    /// `int8` … `int64`, `float32`, `float64`, `boolean`, `string`, `bytes`, `array`,
    /// `map`, `struct`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The logical type (`org.apache.kafka.connect.data.Decimal`,
    /// `io.debezium.time.MicroTimestamp`, …); for a struct, its record name.
    #[serde(default)]
    pub name: Option<String>,
    /// The name of the field this schema describes, inside a struct's `fields`.
    #[serde(default)]
    pub field: Option<String>,
    /// A struct's fields.
    #[serde(default)]
    pub fields: Vec<Schema>,
    /// An array's elements.
    #[serde(default)]
    pub items: Option<Box<Schema>>,
    /// The logical type's parameters (`scale` of a decimal, `length` of bits). Kafka
    /// Connect writes them as strings; numbers are taken too.
    #[serde(default)]
    pub parameters: Option<BTreeMap<String, Json>>,
}

impl Schema {
    /// Reads the envelope's schema; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Schema, String> {
        serde_json::from_str(text).map_err(|e| {
            format!(
                "the event's `schema` is not a Kafka Connect schema (an object with `type`, \
                 and `fields` for a struct): {e}"
            )
        })
    }

    /// The schema of the struct field named `name`.
    pub fn field(&self, name: &str) -> Option<&Schema> {
        self.fields
            .iter()
            .find(|f| f.field.as_deref() == Some(name))
    }

    /// The logical type's name, if any.
    pub fn logical(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// An integer parameter (`scale`, `length`), as Kafka Connect writes it (a string) or
    /// as a number. `Err` names what is wrong.
    pub fn integer_parameter(&self, key: &str) -> Result<Option<i64>, String> {
        let Some(value) = self.parameters.as_ref().and_then(|p| p.get(key)) else {
            return Ok(None);
        };
        let parsed = match value {
            Json::String(text) => text.trim().parse::<i64>().ok(),
            Json::Number(n) => n.as_i64(),
            _ => None,
        };
        parsed
            .map(Some)
            .ok_or_else(|| format!("its schema's parameter `{key}` is {value}, not an integer"))
    }
}

/// The columns of one row image (`before` or `after`) by name.
pub struct Row<'s> {
    columns: HashMap<&'s str, &'s Schema>,
}

impl<'s> Row<'s> {
    /// The row schema of `image` (`"before"` or `"after"`) in the envelope's schema.
    pub fn of(envelope: &'s Schema, image: &str) -> Result<Row<'s>, String> {
        if envelope.kind != "struct" {
            return Err(format!(
                "the event's `schema` is of type `{}`; a Debezium event's is a `struct`",
                envelope.kind
            ));
        }
        let row = envelope.field(image).ok_or_else(|| {
            format!("the event's `schema` describes no `{image}` field, and the payload has one")
        })?;
        if row.kind != "struct" {
            return Err(format!(
                "the event's `schema` gives `{image}` the type `{}`; a row is a `struct`",
                row.kind
            ));
        }
        let columns = row
            .fields
            .iter()
            .filter_map(|f| f.field.as_deref().map(|name| (name, f)))
            .collect();
        Ok(Row { columns })
    }

    /// The schema of the column `name`.
    pub fn column(&self, name: &str) -> Option<&'s Schema> {
        self.columns.get(name).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_parts_decoding_needs_and_ignores_the_rest() {
        let schema = Schema::parse(
            r#"{"type": "struct", "optional": false, "name": "x.Envelope", "version": 1,
                "fields": [
                  {"type": "struct", "optional": true, "field": "after", "fields": [
                    {"type": "bytes", "optional": false, "field": "price",
                     "name": "org.apache.kafka.connect.data.Decimal", "version": 1,
                     "parameters": {"scale": "2", "connect.decimal.precision": "10"},
                     "default": "AA=="},
                    {"type": "array", "field": "tags", "items": {"type": "string"}}
                  ]},
                  {"type": "string", "optional": false, "field": "op"}
                ]}"#,
        )
        .unwrap();
        let row = Row::of(&schema, "after").unwrap();
        let price = row.column("price").unwrap();
        assert_eq!(
            price.logical(),
            Some("org.apache.kafka.connect.data.Decimal")
        );
        assert_eq!(price.integer_parameter("scale"), Ok(Some(2)));
        assert_eq!(price.integer_parameter("length"), Ok(None));
        assert_eq!(
            row.column("tags").unwrap().items.as_ref().unwrap().kind,
            "string"
        );
        assert!(row.column("op").is_none());
        assert!(Row::of(&schema, "before")
            .err()
            .unwrap()
            .contains("describes no `before` field"));
    }

    #[test]
    fn malformed_schemas_are_named() {
        assert!(Schema::parse(r#"{"fields": []}"#)
            .unwrap_err()
            .contains("not a Kafka Connect schema"));
        let odd = Schema::parse(r#"{"type": "bytes", "parameters": {"scale": "two"}}"#).unwrap();
        assert!(odd
            .integer_parameter("scale")
            .unwrap_err()
            .contains("parameter `scale` is \"two\""));
        assert!(Row::of(&odd, "after")
            .err()
            .unwrap()
            .contains("type `bytes`"));
    }
}

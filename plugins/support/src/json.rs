//! A JSON object read as the processors read their input: its fields in the order
//! written, each value still its raw JSON text ([`RawValue`]) until the processor
//! converts it. Raw text keeps numbers exact and lets a processor copy a field verbatim.

use std::{borrow::Cow, collections::HashSet, fmt};

use serde::{
    de::{MapAccess, Visitor},
    Deserialize, Deserializer,
};
use serde_json::value::RawValue;

/// Fields an object is given room for before its first is read.
const TYPICAL_FIELDS: usize = 8;

/// The fields of one JSON object, in the order written, values still as JSON text.
#[derive(Debug)]
pub struct Object<'a> {
    /// Each field's name (borrowed from the text unless it had escapes) and value.
    pub fields: Vec<(Cow<'a, str>, &'a RawValue)>,
}

/// A field name, borrowed from the text unless it had escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v.to_string())))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

impl<'de> Deserialize<'de> for Object<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = Object<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object<'de>, A::Error> {
                // Most objects (a message, its `data`) have a handful of fields: one
                // allocation instead of growing through 4 and 8.
                let mut fields = Vec::with_capacity(TYPICAL_FIELDS);
                while let Some((Name(name), value)) = map.next_entry::<Name, &'de RawValue>()? {
                    fields.push((name, value));
                }
                Ok(Object { fields })
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

impl<'a> Object<'a> {
    /// Reads an object; `what` names it in errors ("the message", "`data`"). A field
    /// given twice is the caller's to refuse ([`Object::repeated`]), in its own words.
    pub fn parse(text: &'a str, what: &str) -> Result<Object<'a>, String> {
        serde_json::from_str(text).map_err(|e| {
            if e.is_data() {
                format!("{what} must be a JSON object, not {}", excerpt(text))
            } else {
                format!("{what} is not valid JSON: {e}")
            }
        })
    }

    /// The first field name given a second time, if any.
    pub fn repeated(&self) -> Option<&str> {
        // A message's few fields are compared pairwise, without allocating; many are
        // hashed: `max_fields` allows thousands, and comparing each name with every
        // earlier one would hold the dispatcher for seconds.
        if self.fields.len() <= 16 {
            return self
                .fields
                .iter()
                .enumerate()
                .find(|(i, (name, _))| self.fields[..*i].iter().any(|(n, _)| n == name))
                .map(|(_, (name, _))| name.as_ref());
        }
        let mut seen = HashSet::with_capacity(self.fields.len());
        self.fields
            .iter()
            .map(|(name, _)| name.as_ref())
            .find(|name| !seen.insert(*name))
    }

    /// The value of the field `name`, if given.
    pub fn get(&self, name: &str) -> Option<&'a RawValue> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

/// `text` cut to its first 60 characters, for an error message.
pub fn excerpt(text: &str) -> String {
    const MAX: usize = 60;
    match text.char_indices().nth(MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_their_order_and_their_raw_text() {
        let object = Object::parse(r#"{"b": 1.50, "a\u0041": [1, 2], "c": null}"#, "x").unwrap();
        let names: Vec<&str> = object.fields.iter().map(|(n, _)| n.as_ref()).collect();
        assert_eq!(names, ["b", "aA", "c"]);
        assert_eq!(object.get("b").map(RawValue::get), Some("1.50"));
        assert_eq!(object.get("aA").map(RawValue::get), Some("[1, 2]"));
        assert!(object.get("d").is_none());
        assert_eq!(object.repeated(), None);
        let twice = Object::parse(r#"{"a": 1, "b": 2, "a": 3}"#, "x").unwrap();
        assert_eq!(twice.repeated(), Some("a"));
    }

    /// Small objects are checked pairwise, large ones by hashing: both find the first name
    /// given again, the escaped spelling of a name included.
    #[test]
    fn a_repeated_field_is_found_in_small_and_large_objects() {
        for count in [2, 15, 16, 17, 500] {
            let mut fields: Vec<String> = (0..count).map(|i| format!("\"f{i}\": {i}")).collect();
            assert_eq!(
                Object::parse(&format!("{{{}}}", fields.join(",")), "x")
                    .unwrap()
                    .repeated(),
                None,
                "{count} distinct fields"
            );
            fields.push("\"f\\u0030\": 0".to_string());
            fields.push(format!("\"f{}\": 1", count - 1));
            assert_eq!(
                Object::parse(&format!("{{{}}}", fields.join(",")), "x")
                    .unwrap()
                    .repeated(),
                Some("f0"),
                "{count} fields, then two again"
            );
        }
    }

    #[test]
    fn what_is_no_object_is_refused_by_name() {
        assert_eq!(
            Object::parse("[1]", "the message").unwrap_err(),
            "the message must be a JSON object, not [1]"
        );
        assert!(Object::parse("{", "`data`")
            .unwrap_err()
            .starts_with("`data` is not valid JSON: "));
        let long = format!("\"{}\"", "é".repeat(100));
        assert_eq!(
            Object::parse(&long, "x").unwrap_err(),
            format!("x must be a JSON object, not \"{}…", "é".repeat(59))
        );
    }
}

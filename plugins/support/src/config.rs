//! Reading a plugin's configuration section so that an error names the key at fault.
//!
//! May depend on: serde, `serde_path_to_error`.

use serde::{Deserialize, Deserializer};

/// Deserializes `T` from `deserializer`, prefixing an error with the path of the key it
/// is about (`` `tls`.`ca_file`: invalid type ``): the host shows the message as it is,
/// and "invalid type: string, expected u64" alone does not say which key to fix.
pub fn naming_path<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<T, D::Error> {
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            inner
        } else {
            serde::de::Error::custom(format!("`{path}`: {inner}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Section {
        timeout_ms: u64,
        inner: Option<Inner>,
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        name: String,
    }

    fn read(json: &str) -> Result<Section, serde_json::Error> {
        naming_path(&mut serde_json::Deserializer::from_str(json))
    }

    #[test]
    fn an_error_names_its_key() {
        let e = read(r#"{"timeout_ms": "soon"}"#).unwrap_err().to_string();
        assert!(e.starts_with("`timeout_ms`: invalid type"), "{e}");
        let e = read(r#"{"timeout_ms": 1, "inner": {"name": 7}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("`inner.name`: invalid type"), "{e}");
        let e = read(r#"{"timeout_ms": 1, "extra": 2}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `extra`"), "{e}");
        assert!(read(r#"{"timeout_ms": 1}"#).is_ok());
    }
}

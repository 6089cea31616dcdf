//! Feeds arbitrary values to the `postgres` plugin's conversion, for every kind of column
//! it knows: it may take a value or refuse it, never panic; and a number it takes it
//! takes exactly (the nearest float for a float column, never infinity or zero for a
//! finite non-zero number; the very integer for an integer column, never a rounded or
//! saturated one). The checks are `golconde_postgres::fuzzing::check`'s.

#![no_main]

use golconde_plugin_api::Value;
use golconde_postgres::fuzzing::{check, COLUMN_TYPES};
use libfuzzer_sys::{
    arbitrary::{Result, Unstructured},
    fuzz_target,
};

/// Decimal text as a producer could write it, near the edges more often than not.
fn number_text(u: &mut Unstructured) -> Result<String> {
    Ok(match u.int_in_range(0..=4)? {
        0 => u.arbitrary::<i64>()?.to_string(),
        1 => format!("{:e}", u.arbitrary::<f64>()?),
        2 => {
            let digits = |u: &mut Unstructured, n: usize| -> Result<String> {
                (0..n)
                    .map(|_| Ok(char::from(b'0' + u.int_in_range(0..=9)?)))
                    .collect()
            };
            let whole = u.int_in_range(0..=30)?;
            let fraction = u.int_in_range(0..=30)?;
            let mut text = String::new();
            if u.arbitrary()? {
                text.push('-');
            }
            text.push_str(&digits(u, whole.max(1))?);
            if fraction > 0 {
                text.push('.');
                text.push_str(&digits(u, fraction)?);
            }
            if u.arbitrary()? {
                text.push_str(&format!("e{}", u.int_in_range(-400i32..=400)?));
            }
            text
        }
        3 => u
            .choose(&[
                "1e400",
                "-1e400",
                "1e-400",
                "1e39",
                "1e-46",
                "9223372036854775808",
                "-9223372036854775809",
                "2147483648",
                "32768",
                "inf",
                "-Infinity",
                "NaN",
                " 7 ",
                "7.0",
                "1e3",
                "1.5",
                "",
            ])?
            .to_string(),
        _ => u.arbitrary::<String>()?,
    })
}

/// Any value; arrays nest at most `depth` deep.
fn value(u: &mut Unstructured, depth: u32) -> Result<Value> {
    Ok(match u.int_in_range(0..=9)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::Int(u.arbitrary()?),
        3 => Value::Float(u.arbitrary()?),
        4 => Value::Float(*u.choose(&[9.25e18, -9.25e18, 3e9, 40000.0, 1e39, 1e-46, -0.0])?),
        5 => Value::Numeric(number_text(u)?.into()),
        6 => Value::Text(number_text(u)?.into()),
        7 => Value::Text(u.arbitrary::<String>()?.into()),
        8 => Value::Bytes(u.arbitrary::<Vec<u8>>()?.into()),
        _ if depth > 0 => {
            let n = u.int_in_range(0..=4)?;
            let items = (0..n)
                .map(|_| value(u, depth - 1))
                .collect::<Result<Vec<_>>>()?;
            Value::Array(items.into())
        }
        _ => Value::Json(u.arbitrary::<String>()?.into()),
    })
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let (Ok(column), Ok(value)) = (u.choose(COLUMN_TYPES), value(&mut u, 3)) else {
        return;
    };
    check(column, &value);
});

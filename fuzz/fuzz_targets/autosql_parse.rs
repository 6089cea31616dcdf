//! Feeds arbitrary bytes to the `autosql` processor as a message body, under limits and an
//! `Applied` (what the database returned) both chosen by the input. Parsing may accept or
//! refuse, never panic or overflow the stack; and when it accepts, the fan-out copy that
//! `enrich_body` writes must itself parse, carrying every returned column.

#![no_main]

use golconde_autosql::{enrich_body, parse_change, Limits};
use golconde_plugin_api::{Applied, Column, PluginError, RVec, Value};
use libfuzzer_sys::{
    arbitrary::{Result, Unstructured},
    fuzz_target,
};

const TABLES: [&str; 2] = ["public.t", "public.u"];

fn table(named: Option<&str>) -> std::result::Result<String, PluginError> {
    match named.unwrap_or(TABLES[0]) {
        t if TABLES.contains(&t) => Ok(t.to_string()),
        t => Err(PluginError::permanent(format!(
            "table `{t}` is not allowed"
        ))),
    }
}

/// A value as a database could return it: names and JSON documents are well formed,
/// everything else is arbitrary. Arrays nest at most `depth` deep.
fn value(u: &mut Unstructured, depth: u32) -> Result<Value> {
    Ok(match u.int_in_range(0..=8)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::Int(u.arbitrary()?),
        3 => Value::Float(u.arbitrary()?),
        4 => Value::Numeric(
            u.choose(&["1e400", "NaN", "-0", "12345678901234567890.5"])?
                .to_string()
                .into(),
        ),
        5 => Value::Text(u.arbitrary::<String>()?.into()),
        6 => Value::Json(
            u.choose(&["{}", "[1,{\"a\":null}]", "\"s\"", "-1.5e3"])?
                .to_string()
                .into(),
        ),
        7 => Value::Bytes(u.arbitrary::<Vec<u8>>()?.into()),
        _ if depth == 0 => Value::Null,
        _ => {
            let n = u.int_in_range(0..=3)?;
            let items = (0..n)
                .map(|_| value(u, depth - 1))
                .collect::<Result<Vec<_>>>()?;
            Value::Array(items.into())
        }
    })
}

fn applied(u: &mut Unstructured) -> Result<Applied> {
    let rows = u.int_in_range(0..=2)?;
    let mut returned = Vec::new();
    for _ in 0..rows {
        let columns = u.int_in_range(0..=3)?;
        let mut row = Vec::new();
        for _ in 0..columns {
            let name = *u.choose(&["id", "code", "a", "data", "é\"\\:"])?;
            row.push(Column::new(name, value(u, 3)?));
        }
        returned.push(RVec::from(row));
    }
    Ok(Applied {
        returned: returned.into(),
        duplicate: u.arbitrary()?,
    })
}

fuzz_target!(|data: &[u8]| {
    // The first byte says how many of the next bytes choose the limits and `Applied`; the
    // rest is the message body.
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (seed, body) = rest.split_at((n as usize).min(rest.len()));
    let mut u = Unstructured::new(seed);
    let limits = Limits {
        max_depth: u.int_in_range(0..=16).unwrap_or(16),
        max_fields: u.int_in_range(1..=64).unwrap_or(64),
    };
    let Ok(applied) = applied(&mut u) else {
        return;
    };

    if parse_change(body, &limits, table).is_err() {
        return;
    }
    let copy = enrich_body(body, &limits, &applied).expect("enriching an accepted message");
    let Some(copy) = copy else {
        return;
    };
    // The copy grows by the returned columns, so it is read without the source's limits.
    let generous = Limits {
        max_depth: 256,
        max_fields: usize::MAX,
    };
    let change = parse_change(copy.as_bytes(), &generous, table)
        .unwrap_or_else(|e| panic!("the fan-out copy does not parse: {e}\n{copy}"));
    let written = &change.operations[0].data;
    for column in applied.returned.iter().flatten() {
        assert!(
            written.iter().any(|c| c.name == column.name),
            "`{}` missing from {copy}",
            column.name
        );
    }
});

//! Events written to hurt: each is a permanent error whose message says what is wrong and
//! where, or, for odd column names, passes on untouched; none panics or recurses deeply.

mod common;

use common::*;
use golconde_debezium::{Debezium, Settings};
use golconde_plugin_api::{ErrorKind, Message, Processor, Value};

/// The refusal of `message`, processed on a thread with a stack far smaller than the
/// host's, so that anything recursing once per level of a deep event would overflow it.
/// The processor is called directly: the ABI's own frames (in a debug build) would not fit.
fn refused_on_small_stack(message: Message) -> String {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let processor = Debezium::from_settings(Settings::default()).unwrap();
            match processor.process(&message) {
                Err(e) => {
                    assert_eq!(e.kind, ErrorKind::Permanent, "{e}");
                    e.message.into_string()
                }
                Ok(change) => panic!("accepted: {change:?}"),
            }
        })
        .unwrap()
        .join()
        .unwrap()
}

const SOURCE: &str = r#"{"connector": "postgresql", "name": "s", "schema": "public",
    "table": "t", "lsn": 1, "txId": 2}"#;

/// A schema-less event of `op` with `after` (JSON text).
fn with_after(op: &str, after: &str) -> Message {
    Message::new(format!(
        r#"{{"op": "{op}", "before": null, "after": {after}, "source": {SOURCE}}}"#
    ))
}

fn refused(message: Message) -> String {
    refusal("{}", &message)
}

fn assert_says(error: &str, words: &str) {
    assert!(error.contains(words), "expected «{words}» in: {error}");
}

#[test]
fn deep_nesting_is_refused_before_anything_recurses() {
    const DEPTH: usize = 100_000;
    let deep = |open: &str, close: &str| format!("{}1{}", open.repeat(DEPTH), close.repeat(DEPTH));
    let cases = [
        (
            with_after("c", &format!(r#"{{"id": 1, "deep": {}}}"#, deep("[", "]"))),
            "`after.deep` nests arrays and objects more than 64 deep",
        ),
        (
            Message::new(format!(
                r#"{{"schema": {}, "payload": {{"op": "c"}}}}"#,
                deep(r#"{"a": "#, "}")
            )),
            "`schema` nests arrays and objects more than 64 deep",
        ),
        (
            Message::new(format!(
                r#"{{"payload": {{"op": "c", "after": {{"x": {}}}}}}}"#,
                deep("[", "]")
            )),
            "`payload.after.x` nests",
        ),
        (Message::new(deep("[", "]")), "the event nests"),
    ];
    for (message, words) in cases {
        let error = refused_on_small_stack(message);
        assert_says(&error, words);
        assert_says(&error, "raise `max_depth`");
    }
    // A deep value inside a struct column, which stays JSON text, counts too.
    let header = Message::new(
        r#"{"op": "d", "before": {"product_id": 1}, "source": {"connector": "postgresql",
            "schema": "public", "table": "t"}}"#,
    )
    .with_header(golconde_debezium::NEW_KEY_HEADER, deep("[", "]"));
    let error = refused_on_small_stack(header);
    assert_says(&error, "the `__debezium.newkey` header: the event nests");
}

#[test]
fn huge_arrays_and_wide_rows_are_refused() {
    let elements = vec!["1"; 100_000].join(",");
    assert_says(
        &refused(with_after(
            "c",
            &format!(r#"{{"id": 1, "tags": [{elements}]}}"#),
        )),
        "array values have more than 4096 elements together (reached at `after.tags`)",
    );
    let columns: Vec<String> = (0..100_000).map(|i| format!(r#""c{i}": {i}"#)).collect();
    assert_says(
        &refused(with_after("c", &format!("{{{}}}", columns.join(",")))),
        "`before` and `after` have more than 4096 columns together",
    );
    // The limits are the processor's to raise.
    let wide = with_after("c", &format!("{{{}}}", columns[..5000].join(",")));
    let change = process(r#"{"max_fields": 10000}"#, &wide).unwrap();
    assert_eq!(change.operations[0].data.len(), 5000);
}

#[test]
fn broken_envelopes_say_what_is_missing() {
    for (body, words) in [
        (
            r#"{"schema": {"type": "struct", "fields": []}}"#,
            "has a `schema` but no `payload`",
        ),
        (
            r#"{"schema": null, "payload": {"op": "c"}, "key": 1}"#,
            "and also `key`: a Kafka Connect JSON envelope has those two fields only",
        ),
        (
            r#"{"schema": 42, "payload": {"op": "c"}}"#,
            "the event's `schema` is not a Kafka Connect schema",
        ),
        (
            r#"{"schema": null, "payload": [1]}"#,
            "the event's `payload` must be a JSON object",
        ),
        ("[1, 2]", "the event must be a JSON object"),
        ("{\"op\": \"c\"", "the event is not valid JSON"),
        ("\u{feff}{}", "the event is not valid JSON"),
        (
            r#"{"op": "c", "op": "u"}"#,
            "the event has the field `op` twice",
        ),
        (
            r#"{"after": {"id": 1}}"#,
            "no `op`, so it is no Debezium change event",
        ),
        (
            r#"{"source": {}, "databaseName": "inventory", "ddl": "CREATE TABLE t (id int)",
                "tableChanges": []}"#,
            "a schema change (it has `ddl`)",
        ),
        (
            r#"{"status": "BEGIN", "id": "571:53195829", "event_count": null,
                "data_collections": null}"#,
            "transaction metadata",
        ),
        (
            r#"{"op": "x", "source": {}}"#,
            "the event's `op` is \"x\", which is none of Debezium's",
        ),
        (r#"{"op": 1}"#, "the event's `op` is 1"),
        (
            r#"{"op": "m", "message": {"prefix": "p"}}"#,
            "a logical decoding message (op `m`)",
        ),
        (
            r#"{"op": "c", "after": {"id": 1}}"#,
            "the create event (op `c`) has no `source`",
        ),
        (
            r#"{"op": "c", "after": {"id": 1}, "source": {"table": "t"}}"#,
            "`source` has no `connector`",
        ),
        (
            r#"{"op": "c", "after": {"id": 1}, "source": {"connector": "postgresql", "table": "t"}}"#,
            "`source` does not name the table (it needs `schema` and `table`)",
        ),
        (
            r#"{"op": "c", "after": {"id": 1}, "source": {"connector": "mysql", "schema": "x", "table": "t"}}"#,
            "it needs `db` and `table`",
        ),
        (
            r#"{"op": "c", "after": "{\"_id\": 1}", "source": {"connector": "mongodb", "db": "d", "collection": "c"}}"#,
            "the MongoDB connector",
        ),
        (
            r#"{"op": "c", "after": {"id": 1}, "source": {"connector": ["postgresql"]}}"#,
            "`connector` must be a string or a number, not [\"postgresql\"]",
        ),
    ] {
        assert_says(&refused(Message::new(body)), words);
    }
    assert_says(
        &refused(Message::new(b"\xff\xfe{}".to_vec())),
        "the message body is not UTF-8 text",
    );
}

#[test]
fn row_images_must_be_rows() {
    for (op, after, words) in [
        ("c", r#""id=1""#, "`after` of table `public.t` must be an object of column: value (the row) or null, not \"id=1\""),
        ("c", "[1, 2]", "`after` of table `public.t` must be an object"),
        ("u", "7", "must be an object of column: value (the row) or null, not 7"),
        ("c", "null", "the create event (op `c`) of table `public.t` has no `after`"),
        ("r", "{}", "the snapshot read event (op `r`) of table `public.t` has an empty `after`"),
        ("u", "null", "the update event (op `u`) of table `public.t` has no `after`"),
        ("c", r#"{"": 1}"#, "`after` of table `public.t` has a column with an empty name"),
        ("c", r#"{"a": 1, "a": 2}"#, "`after` has the field `a` twice"),
    ] {
        assert_says(&refused(with_after(op, after)), words);
    }
    let delete = Message::new(format!(
        r#"{{"op": "d", "before": null, "after": null, "source": {SOURCE}}}"#
    ));
    assert_says(
        &refused(delete),
        "the delete event (op `d`) of table `public.t` has no `before`",
    );
    let delete = Message::new(format!(
        r#"{{"op": "d", "before": ["id", 1], "source": {SOURCE}}}"#
    ));
    assert_says(
        &refused(delete),
        "`before` of table `public.t` must be an object",
    );
}

#[test]
fn odd_column_names_pass_on_untouched() {
    let names = [
        "we\"ird",
        "semi;colon DROP TABLE t; --",
        "dotted.name",
        "space name",
        "ünïcödé ✓",
        "back\\slash",
        "new\nline",
    ];
    let after: Vec<String> = std::iter::once(r#""id": 1"#.to_string())
        .chain(
            names
                .iter()
                .enumerate()
                .map(|(i, n)| format!("{}: {i}", serde_json::to_string(n).unwrap())),
        )
        .collect();
    let change = process("{}", &with_after("c", &format!("{{{}}}", after.join(", ")))).unwrap();
    let data = &change.operations[0].data;
    assert_eq!(data[0], column("id", Value::Int(1)));
    for (i, name) in names.iter().enumerate() {
        assert_eq!(data[i + 1], column(name, Value::Int(i as i64)));
    }
}

#[test]
fn values_that_do_not_fit_their_schema_name_the_table_and_column() {
    let event = |column_schema: &str, value: &str| {
        Message::new(format!(
            r#"{{"schema": {{"type": "struct", "fields": [
                  {{"type": "struct", "field": "after", "fields": [
                    {{"type": "int32", "field": "id"}}, {column_schema}]}},
                  {{"type": "string", "field": "op"}}]}},
                "payload": {{"op": "c", "after": {{"id": 1, "v": {value}}},
                             "source": {SOURCE}}}}}"#
        ))
    };
    let decimal = r#"{"type": "bytes", "field": "v", "name": "org.apache.kafka.connect.data.Decimal",
        "parameters": {"scale": "2"}}"#;
    for (schema, value, words) in [
        (
            decimal,
            r#""not base64!""#,
            "column `v` of `after` (table `public.t`, of type `bytes` \
             `org.apache.kafka.connect.data.Decimal`): is not valid base64",
        ),
        (
            r#"{"type": "int16", "field": "v"}"#,
            "70000",
            "column `v` of `after` (table `public.t`, of type `int16`): 70000 is out of range for int16",
        ),
        (
            r#"{"type": "int64", "field": "v", "name": "io.debezium.time.MicroTimestamp"}"#,
            r#""2018-06-20 15:13:16""#,
            "expected an integer count, found the string \"2018-06-20 15:13:16\"",
        ),
        (
            r#"{"type": "boolean", "field": "v"}"#,
            r#""yes""#,
            "expected a boolean, found the string \"yes\"",
        ),
        (
            r#"{"type": "bytes", "field": "v", "name": "io.debezium.data.Bits",
               "parameters": {"length": "2"}}"#,
            r#""/w==""#,
            "it has bit 7 set, past its length of 2 bits",
        ),
        (
            r#"{"type": "bytes", "field": "other"}"#,
            "1",
            "column `v` of `after` (table `public.t`) is not in the event's schema",
        ),
        (
            r#"{"type": "float64", "field": "v"}"#,
            "[1.5]",
            "expected a number, found an array",
        ),
    ] {
        assert_says(&refused(event(schema, value)), words);
    }
    // A decimal too long to convert quickly is refused by its size.
    let long = format!(r#""{}""#, "A".repeat(12_000));
    assert_says(
        &refused(event(decimal, &long)),
        "more than the 8192 (about 19,700 digits) this processor takes",
    );
}

#[test]
fn configured_keys_that_do_not_fit_the_table_are_named() {
    let config = r#"{"key_columns": {"public.t": ["code"]}}"#;
    assert_says(
        &refusal(config, &with_after("c", r#"{"id": 1}"#)),
        "has no column `code` in `after`, which the processor's `key_columns` names",
    );
    let delete = Message::new(format!(
        r#"{{"op": "d", "before": {{"id": 1, "code": null}}, "source": {SOURCE}}}"#
    ));
    assert_says(
        &refusal(config, &delete),
        "has no value in `before` for key column `code` (from the processor's `key_columns`)",
    );
    let header = Message::new(format!(
        r#"{{"op": "d", "before": {{"id": 1}}, "source": {SOURCE}}}"#
    ))
    .with_header(golconde_debezium::NEW_KEY_HEADER, "{}");
    assert_says(
        &refusal("{}", &header),
        "the `__debezium.newkey` header names no key column",
    );
}

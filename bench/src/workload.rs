//! The benchmark's workload: `set` messages in the Golconde format (or the same rows as
//! Debezium change events) over a fixed number of keys, and the state the `users` table
//! must reach once they are all applied.
//!
//! Depends on the standard library and `golconde-bench-memory`, whose keys, timestamps and
//! message bytes it uses, so that the host part's in-memory transport and the loaded
//! queues always carry the same messages. Key decision: every message is derived
//! from its sequence number alone (its key is a hash of it, its `score` is it), so the
//! expected final row of every key is computed without storing the messages, and a
//! single `sum(score)` tells whether the table reached that state (a key's score only
//! grows when its messages are applied in queue order).

use std::collections::HashMap;

/// 2026-01-01T00:00:00Z: `updated_at` of message `i` is this plus `i` seconds.
pub const EPOCH: i64 = golconde_bench_memory::EPOCH;

/// `messages` messages numbered from 0, over `keys` distinct ids.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    pub messages: u64,
    pub keys: u64,
}

/// What the table must hold once a workload is applied: each key's last message.
pub struct Expected {
    pub last: HashMap<i64, i64>,
    pub score_sum: i64,
}

/// How the messages of a workload are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The Golconde format, for the `autosql` processor.
    Golconde,
    /// Debezium change events of the PostgreSQL connector, with the schema envelope, for
    /// the `debezium` processor.
    Debezium,
}

/// The source table the Debezium events name (`source.schema`, `source.table`); the
/// pipeline maps it to `public.users`.
pub const DEBEZIUM_SOURCE_TABLE: &str = "inventory.users";

/// One row read back from a database, to compare with what it must hold.
pub struct Found {
    pub id: i64,
    pub name: Option<String>,
    pub email: Option<String>,
    pub score: Option<i32>,
    /// `updated_at` in seconds since the Unix epoch.
    pub epoch: i64,
}

/// One row as the database batches of ceiling B and the baseline write it.
pub struct Row {
    pub id: i64,
    pub name: String,
    pub email: String,
    pub score: i32,
    pub updated_at: String,
}

impl Workload {
    /// The first `keys` messages name every key once (in a scattered order), the rest
    /// pick keys at random, so every key exists and batches also hold repeats of a key.
    pub fn key(&self, i: u64) -> i64 {
        golconde_bench_memory::Workload::new(self.messages, self.keys).key(i) as i64
    }

    pub fn row(&self, i: u64) -> Row {
        let id = self.key(i);
        Row {
            id,
            name: format!("user {i}"),
            email: format!("u{id}.v{i}@example.com"),
            score: i as i32,
            updated_at: timestamp(EPOCH + i as i64),
        }
    }

    pub fn body(&self, i: u64) -> Vec<u8> {
        let r = self.row(i);
        format!(
            r#"{{"action":"set","data":{{"id":{},"name":"{}","email":"{}","score":{},"updated_at":"{}"}}}}"#,
            r.id, r.name, r.email, r.score, r.updated_at
        )
        .into_bytes()
    }

    /// Message `i` as the Debezium PostgreSQL connector writes the change that made row
    /// `i` (op `c` for a key's first message, `u` after; `before` null, as under the
    /// default replica identity), with the schema envelope of Kafka Connect's
    /// JsonConverter: what Debezium Server publishes to RabbitMQ.
    pub fn debezium_body(&self, i: u64) -> Vec<u8> {
        let r = self.row(i);
        let op = if i < self.keys { "c" } else { "u" };
        let lsn = 24_000_000 + i * 152;
        let ts_ms = (EPOCH + i as i64) * 1000;
        let (schema, table) = DEBEZIUM_SOURCE_TABLE
            .split_once('.')
            .expect("a qualified table");
        format!(
            r#"{{"schema":{DEBEZIUM_SCHEMA},"payload":{{"before":null,"after":{{"id":{},"name":"{}","email":"{}","score":{},"updated_at":"{}"}},"source":{{"version":"2.7.0.Final","connector":"postgresql","name":"golconde_bench","ts_ms":{ts_ms},"snapshot":"false","db":"shop","sequence":"[\"{}\",\"{lsn}\"]","ts_us":{},"ts_ns":{},"schema":"{schema}","table":"{table}","txId":{},"lsn":{lsn},"xmin":null}},"transaction":null,"op":"{op}","ts_ms":{},"ts_us":{},"ts_ns":{}}}}}"#,
            r.id,
            r.name,
            r.email,
            r.score,
            r.updated_at,
            lsn - 152,
            ts_ms * 1000,
            ts_ms * 1_000_000,
            1000 + i,
            ts_ms + 7,
            (ts_ms + 7) * 1000,
            (ts_ms + 7) * 1_000_000,
        )
        .into_bytes()
    }

    pub fn body_in(&self, format: Format, i: u64) -> Vec<u8> {
        match format {
            Format::Golconde => self.body(i),
            Format::Debezium => self.debezium_body(i),
        }
    }

    pub fn expected(&self) -> Expected {
        let mut last = HashMap::new();
        for i in 0..self.messages {
            last.insert(self.key(i), i as i64);
        }
        let score_sum = last.values().sum();
        Expected { last, score_sum }
    }
}

impl Expected {
    /// Fails, naming up to five wrong keys, unless `found` (table `table`'s rows) holds
    /// exactly each key's last message.
    pub fn check(&self, workload: &Workload, table: &str, found: &[Found]) -> Result<(), String> {
        let mut wrong = Vec::new();
        let mut seen = HashMap::with_capacity(found.len());
        for row in found {
            let id = row.id;
            seen.insert(id, ());
            let Some(&last) = self.last.get(&id) else {
                wrong.push(format!("id {id} should not exist"));
                continue;
            };
            let want = workload.row(last as u64);
            let ok = row.score == Some(want.score)
                && row.name.as_deref() == Some(want.name.as_str())
                && row.email.as_deref() == Some(want.email.as_str())
                && row.epoch == EPOCH + last;
            if !ok {
                wrong.push(format!(
                    "id {id} holds score {:?} name {:?}, expected the message {last}",
                    row.score, row.name
                ));
            }
        }
        for id in self.last.keys() {
            if !seen.contains_key(id) {
                wrong.push(format!("id {id} is missing"));
            }
        }
        if wrong.is_empty() {
            return Ok(());
        }
        wrong.sort();
        Err(format!(
            "table {table} is wrong in {} of {} keys, e.g. {}",
            wrong.len(),
            self.last.len(),
            wrong[..wrong.len().min(5)].join("; ")
        ))
    }
}

/// The Kafka Connect schema of every Debezium event of the workload: `users` as the
/// PostgreSQL connector describes it (`bigint`, `text`, `text`, `int`, `timestamptz` as a
/// `ZonedTimestamp`), and the connector's `source` block.
const DEBEZIUM_SCHEMA: &str = concat!(
    r#"{"type":"struct","fields":["#,
    r#"{"type":"struct","fields":[{"type":"int64","optional":false,"field":"id"},{"type":"string","optional":true,"field":"name"},{"type":"string","optional":true,"field":"email"},{"type":"int32","optional":true,"field":"score"},{"type":"string","optional":true,"name":"io.debezium.time.ZonedTimestamp","version":1,"field":"updated_at"}],"optional":true,"name":"golconde_bench.inventory.users.Value","field":"before"},"#,
    r#"{"type":"struct","fields":[{"type":"int64","optional":false,"field":"id"},{"type":"string","optional":true,"field":"name"},{"type":"string","optional":true,"field":"email"},{"type":"int32","optional":true,"field":"score"},{"type":"string","optional":true,"name":"io.debezium.time.ZonedTimestamp","version":1,"field":"updated_at"}],"optional":true,"name":"golconde_bench.inventory.users.Value","field":"after"},"#,
    r#"{"type":"struct","fields":[{"type":"string","optional":false,"field":"version"},{"type":"string","optional":false,"field":"connector"},{"type":"string","optional":false,"field":"name"},{"type":"int64","optional":false,"field":"ts_ms"},{"type":"string","optional":true,"name":"io.debezium.data.Enum","version":1,"parameters":{"allowed":"true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},"default":"false","field":"snapshot"},{"type":"string","optional":false,"field":"db"},{"type":"string","optional":true,"field":"sequence"},{"type":"int64","optional":true,"field":"ts_us"},{"type":"int64","optional":true,"field":"ts_ns"},{"type":"string","optional":false,"field":"schema"},{"type":"string","optional":false,"field":"table"},{"type":"int64","optional":true,"field":"txId"},{"type":"int64","optional":true,"field":"lsn"},{"type":"int64","optional":true,"field":"xmin"}],"optional":false,"name":"io.debezium.connector.postgresql.Source","field":"source"},"#,
    r#"{"type":"struct","fields":[{"type":"string","optional":false,"field":"id"},{"type":"int64","optional":false,"field":"total_order"},{"type":"int64","optional":false,"field":"data_collection_order"}],"optional":true,"name":"event.block","version":1,"field":"transaction"},"#,
    r#"{"type":"string","optional":false,"field":"op"},{"type":"int64","optional":true,"field":"ts_ms"},{"type":"int64","optional":true,"field":"ts_us"},{"type":"int64","optional":true,"field":"ts_ns"}"#,
    r#"],"optional":false,"name":"golconde_bench.inventory.users.Envelope","version":2}"#
);

/// A message with a key of its own (`id` = `i`) and the time it was published, for the
/// latency run.
pub fn latency_body(i: u64, published_us: i64) -> Vec<u8> {
    format!(
        r#"{{"action":"set","data":{{"id":{i},"name":"user {i}","email":"u{i}@example.com","score":{},"updated_at":"{}","published_us":{published_us}}}}}"#,
        i as i32,
        timestamp(EPOCH + i as i64)
    )
    .into_bytes()
}

/// `seconds` since the Unix epoch as ISO 8601 UTC (`2026-01-01T00:00:00Z`), for years 1000
/// to 9999.
pub fn timestamp(seconds: i64) -> String {
    let mut text = Vec::with_capacity(20);
    golconde_bench_memory::timestamp(&mut text, seconds);
    String::from_utf8(text).expect("digits and ASCII punctuation")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_dates() {
        assert_eq!(timestamp(EPOCH), "2026-01-01T00:00:00Z");
        assert_eq!(timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(
            timestamp(EPOCH + 86_400 * 59 + 3661),
            "2026-03-01T01:01:01Z"
        );
    }

    /// The host part's in-memory transport writes the very messages the queues are loaded
    /// with.
    #[test]
    fn the_in_memory_transport_writes_the_same_messages() {
        for (messages, keys) in [(200_000, 50_000), (7, 1), (1000, 3)] {
            let w = Workload { messages, keys };
            let memory = golconde_bench_memory::Workload::new(messages, keys);
            for i in [0, 1, keys - 1, keys, messages / 2, messages - 1] {
                assert_eq!(
                    String::from_utf8(memory.body(i)).unwrap(),
                    String::from_utf8(w.body(i)).unwrap(),
                    "message {i} of {messages} over {keys} keys"
                );
            }
        }
    }

    #[test]
    fn debezium_events_carry_the_same_row_as_the_golconde_messages() {
        let w = Workload {
            messages: 100,
            keys: 25,
        };
        for (i, op) in [(3, "c"), (60, "u")] {
            let event: serde_json::Value = serde_json::from_slice(&w.debezium_body(i)).unwrap();
            let golconde: serde_json::Value = serde_json::from_slice(&w.body(i)).unwrap();
            let payload = &event["payload"];
            assert_eq!(payload["op"], op);
            assert_eq!(payload["before"], serde_json::Value::Null);
            assert_eq!(payload["after"], golconde["data"]);
            assert_eq!(
                format!(
                    "{}.{}",
                    payload["source"]["schema"].as_str().unwrap(),
                    payload["source"]["table"].as_str().unwrap()
                ),
                DEBEZIUM_SOURCE_TABLE
            );
            // Every column of `after` is described by the `after` field of the schema.
            let after = event["schema"]["fields"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["field"] == "after")
                .unwrap();
            let described: Vec<&str> = after["fields"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["field"].as_str().unwrap())
                .collect();
            let mut columns: Vec<&str> = payload["after"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let mut described = described.clone();
            described.sort();
            columns.sort();
            assert_eq!(described, columns);
        }
    }

    #[test]
    fn a_table_is_checked_against_each_keys_last_message() {
        let w = Workload {
            messages: 40,
            keys: 10,
        };
        let e = w.expected();
        // A key written again after its first message, to find holding that first one.
        let (&stale_key, _) = e
            .last
            .iter()
            .find(|(_, &last)| last >= w.keys as i64)
            .expect("40 messages over 10 keys repeat one");
        let first = (0..w.keys).find(|&i| w.key(i) == stale_key).unwrap();
        let found = |skip: i64, stale: bool| -> Vec<Found> {
            e.last
                .iter()
                .filter(|(id, _)| **id != skip)
                .map(|(&id, &last)| {
                    let i = if stale && id == stale_key {
                        first
                    } else {
                        last as u64
                    };
                    let r = w.row(i);
                    Found {
                        id,
                        name: Some(r.name),
                        email: Some(r.email),
                        score: Some(r.score),
                        epoch: EPOCH + i as i64,
                    }
                })
                .collect()
        };
        assert_eq!(e.check(&w, "users", &found(-1, false)), Ok(()));
        let missing = e.check(&w, "users", &found(3, false)).unwrap_err();
        assert!(missing.contains("id 3 is missing"), "{missing}");
        let stale = e.check(&w, "users", &found(-1, true)).unwrap_err();
        assert!(stale.contains(&format!("id {stale_key} holds")), "{stale}");
    }

    #[test]
    fn expected_state_is_each_keys_last_message() {
        let w = Workload {
            messages: 1000,
            keys: 50,
        };
        let e = w.expected();
        assert_eq!(e.last.len(), 50);
        for (key, last) in &e.last {
            assert_eq!(w.key(*last as u64), *key);
            assert!(((*last as u64 + 1)..1000).all(|i| w.key(i) != *key));
        }
    }
}

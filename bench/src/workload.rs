//! The benchmark's workload: `set` messages in the Golconde format over a fixed number of
//! keys, and the state the `users` table must reach once they are all applied.
//!
//! Depends on nothing but the standard library. Key decision: every message is derived
//! from its sequence number alone (its key is a hash of it, its `score` is it), so the
//! expected final row of every key is computed without storing the messages, and a
//! single `sum(score)` tells whether the table reached that state (a key's score only
//! grows when its messages are applied in queue order).

use std::collections::HashMap;

/// 2026-01-01T00:00:00Z: `updated_at` of message `i` is this plus `i` seconds.
pub const EPOCH: i64 = 1_767_225_600;

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
        if i < self.keys {
            // An odd multiplier coprime with `keys` permutes 0..keys.
            let step = (1..)
                .map(|k| 7919 * k + 1)
                .find(|s| gcd(*s, self.keys) == 1);
            ((i * step.unwrap_or(1)) % self.keys) as i64
        } else {
            (mix(i) % self.keys) as i64
        }
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

    pub fn expected(&self) -> Expected {
        let mut last = HashMap::new();
        for i in 0..self.messages {
            last.insert(self.key(i), i as i64);
        }
        let score_sum = last.values().sum();
        Expected { last, score_sum }
    }
}

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

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// splitmix64: spreads consecutive sequence numbers over the keys, so batches hold both
/// distinct keys and repeats of one key, as real traffic does.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `seconds` since the Unix epoch as ISO 8601 UTC (`2026-01-01T00:00:00Z`).
pub fn timestamp(seconds: i64) -> String {
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// Howard Hinnant's days-to-civil-date algorithm, to avoid a date crate for one format.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
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

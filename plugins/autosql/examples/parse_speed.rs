//! How long autosql takes to read one message into a change, without the host: 200,000 of
//! the bench's messages (a `set` of five columns, 50,000 keys) through [`parse_change`].
//!
//! `cargo run --release -p golconde-autosql --example parse_speed`; it prints nanoseconds
//! per message for five rounds (the first warms up). Compare two builds on one machine;
//! the end-to-end figures are `scripts/bench`'s.
//!
//! May depend on: this crate only.

use golconde_autosql::{parse_change, Limits};

const MESSAGES: u32 = 200_000;
const KEYS: u32 = 50_000;

fn main() {
    let bodies: Vec<Vec<u8>> = (0..MESSAGES)
        .map(|i| {
            let id = i % KEYS;
            // The bench's body (`golconde_bench_memory::Workload::body`), written out: that crate is a
            // plugin library too, and two plugin libraries cannot link into one program (both export
            // the root module's symbol).
            format!(
                r#"{{"action":"set","data":{{"id":{id},"name":"user {i}","email":"u{id}.v{i}@example.com","score":{i},"updated_at":"2026-01-01T00:00:07Z"}}}}"#
            )
            .into_bytes()
        })
        .collect();
    let limits = Limits::default();
    for round in 0..5 {
        let clock = std::time::Instant::now();
        let mut operations = 0;
        for body in &bodies {
            let change = parse_change(body, &limits, |_| Ok("public.users".to_string()))
                .expect("the bench's messages are valid");
            operations += change.operations.len();
        }
        println!(
            "round {round}: {:.0} ns per message ({operations} operations)",
            clock.elapsed().as_nanos() as f64 / f64::from(MESSAGES)
        );
    }
}

//! PostgreSQL as every Golconde part that connects to it sees it: the `postgres` database
//! plugin, the `pgoutbox` transport and the host's `golconde capture` command.
//!
//! - [`dsn`]: a DSN read as libpq reads it, with several hosts split one by one.
//! - [`tls`]: libpq's `sslmode`, `sslrootcert`, `sslcert` and `sslkey` through rustls.
//! - [`connect`]: opening a connection to the first host that takes it.
//! - [`outbox`]: the SQL of the transactional outbox and of the triggers that capture a
//!   table's changes into it, and why its order is right.
//!
//! Key decision: **a plain library, not a plugin** (as `golconde-plugin-support`): it
//! exports no root module, so plugins and the host all link it, and it never crosses the
//! ABI. May depend on: `golconde-plugin-support` (error text), tokio-postgres and
//! tokio-postgres-rustls, rustls (ring), tokio, fastrand, tracing.

pub mod connect;
pub mod dsn;
pub mod outbox;
pub mod tls;

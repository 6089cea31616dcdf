//! What the shipped plugins share, written once: pieces whose logic is the same in two
//! plugins, such as the `autosql` and `debezium` processors or the `postgres` and
//! `mysql` databases, so that a fix or a limit reaches both.
//!
//! - For processors: [`number`] (a JSON number's text as the narrowest exact `Value`),
//!   [`limits`] (bounds on a JSON document's depth and width, checked before it is
//!   parsed, over the processor's own shape), [`json`] (an object's fields in order,
//!   values kept as raw text).
//! - For databases: [`decimal`] (decimal text read exactly, before the plugin checks its
//!   column's range), [`fingerprint`] (a change's content, hashed), [`doubt`] (counting
//!   the attempts of changes failing with an error that may pass), [`bisect`] (the order
//!   in which a batch is bisected to isolate its bad changes), [`catalog`] (the table
//!   definitions read so far), [`applied`] (the stored form of what a change returned,
//!   and when to prune), [`shown`] (values written as JSON and quoted in errors),
//!   [`errors`] (an error with its causes, a change's message with its id), [`batch`] (a
//!   batch's operations, each with the change it came from).
//! - For every plugin: [`config`] (a configuration section read so that an error names
//!   its key).
//! - For transports, with the feature `transport`: `runtime` (the tokio runtime a
//!   transport instance owns) and `tls` (rustls client configuration from the `tls_*`
//!   keys).
//! - For readers of sockets, with the feature `socket`: `low_water` (a socket's receive
//!   low-water mark, so that a napping reader is not woken by every write).
//!
//! Key decision: **a plain library, not a plugin.** It exports no root module, so any
//! number of plugins link it (two plugin crates linked into one library would clash on
//! their exported symbols), and it adds nothing to the ABI: every type here lives inside
//! one plugin. It is not published and promises no stability: it changes with the
//! shipped plugins, and third-party plugins depend on `golconde-plugin-api` alone.
//!
//! May depend on: `golconde-plugin-api` (its data types only), serde, serde_json and
//! `serde_path_to_error`, memchr, base64, sha2. No database driver, no I/O: what depends on a connection stays
//! in the plugin, so that this stays testable alone. The one exception is the feature
//! `transport`, off unless a transport asks for it: tokio and rustls, to start a runtime
//! and to read certificate files, never to connect; and the feature `socket`: libc, to set
//! one option on a socket its plugin opened.

pub mod applied;
pub mod batch;
pub mod bisect;
pub mod catalog;
pub mod config;
pub mod decimal;
pub mod doubt;
pub mod errors;
pub mod fingerprint;
pub mod json;
pub mod limits;
#[cfg(feature = "socket")]
pub mod low_water;
pub mod number;
#[cfg(feature = "transport")]
pub mod runtime;
pub mod shown;
#[cfg(feature = "transport")]
pub mod tls;

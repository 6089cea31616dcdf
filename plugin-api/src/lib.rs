//! The stable boundary between the Golconde host and its plugins, and the SDK plugin
//! authors write against.
//!
//! A plugin library is a `cdylib` that exports one root module ([`abi::PluginLibRef`]); the
//! root module lists the plugins the library provides, each with a constructor for one of
//! three kinds: transport, processor or database. Everything that crosses the boundary is
//! plain data built from `abi_stable`'s FFI-safe types (bytes, strings, a small value
//! model, errors that say transient or permanent), so the same contract could be spoken
//! over a socket by an out-of-process runner.
//!
//! Design decisions, and why:
//! - **The boundary is synchronous and blocking.** The host owns the threads; a plugin that
//!   wants async I/O runs its own runtime inside. Each `cdylib` carries its own copy of
//!   every dependency, so a runtime, future or waker could never be shared anyway.
//! - **Panics never cross it.** `abi_stable`'s shims abort the process on an unwinding
//!   panic, so the SDK ([`sdk`]) catches every panic on the plugin side and turns it into a
//!   [`PluginError`] of kind [`ErrorKind::Panic`].
//! - **Everything reachable from the root module is frozen within an ABI major**
//!   ([`ABI_VERSION`]), so that a plugin built against 1.0.0 loads in every 1.x host.
//!   `abi_stable` would accept a root module or trait with *more* fields than the host knows,
//!   but not with fewer, which is the direction plugins need (hosts are upgraded under
//!   shipped plugin binaries). What a minor adds comes as named, versioned interfaces
//!   beside the root module ([`ext`]), checked one by one and looked up by the host, which
//!   does without those a plugin lacks.
//!
//! Writing a plugin: [`sdk`] (the traits and [`export_plugins!`]); testing it: `testing`
//! (with the `testing` feature); the guide: `docs/plugins.md` in the repository.
//!
//! May depend on: `abi_stable`, `serde` (only for decoding a plugin's own configuration,
//! never in an ABI type), `tracing` (the log bridge). **Invariant:** no tokio, no
//! `Serialize` type and no host type in the ABI.

#![deny(missing_docs)]

pub mod abi;
pub mod data;
pub mod error;
pub mod ext;
pub mod log;
pub mod sdk;
#[cfg(feature = "testing")]
pub mod testing;

pub use abi::{AbiVersion, ABI_VERSION};
pub use data::{
    AckMode, Action, Applied, Change, Column, ConsumeOptions, Delivery, Header, Message, Operation,
    Value, CHANGE_ID_HEADER, TRANSPORT_ERROR_HEADER,
};
pub use error::{ErrorKind, PluginError};
pub use sdk::{Consumer, Database, Host, Plugin, Processor, Session, Transport};

/// Re-exported so plugin authors use the very same FFI types without a direct dependency.
pub use abi_stable::std_types::{ROption, RString, RVec};

#[doc(hidden)]
pub mod __private {
    pub use abi_stable;
    pub use abi_stable::library::{CheckTypeLayout, LibHeader, RootModuleResult};
}

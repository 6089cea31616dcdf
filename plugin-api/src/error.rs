//! The one error type that crosses the boundary, and its kinds.
//!
//! The kind tells the host what to do with the work that failed: retry it later
//! (transient), set it aside for good (permanent), fix the configuration, or rebuild the
//! plugin instance that panicked. The message is for the operator.

use std::fmt;

use abi_stable::{std_types::RString, StableAbi};

/// What the host should do about a failure.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Might succeed if tried again later: connection lost, timeout, serialization failure,
    /// deadlock. The host backs off and retries without acknowledging anything.
    Transient,
    /// Can never succeed for this input: malformed message, constraint violation, value
    /// that does not fit its column. The host dead-letters the one message concerned.
    Permanent,
    /// The plugin's configuration is invalid; the message names the key.
    Config,
    /// The plugin panicked. Its instance may be in any state, so the host drops it and
    /// builds a new one before trying again.
    Panic,
}

impl ErrorKind {
    /// The lower-case word used in logs and in dead-letter headers.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Permanent => "permanent",
            ErrorKind::Config => "config",
            ErrorKind::Panic => "panic",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error reported by a plugin: its kind and a message for the operator that says what
/// failed and where (queue, table, column, key).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    /// What the host should do about it.
    pub kind: ErrorKind,
    /// For the operator: what failed, where, and what to do.
    pub message: RString,
}

impl PluginError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        PluginError {
            kind,
            message: RString::from(message.into()),
        }
    }

    /// Might pass later: the host retries.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, message)
    }

    /// Can never succeed for this input: the host sets the message aside.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permanent, message)
    }

    /// The configuration is wrong: name the key.
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    /// Whether the host would retry it.
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error: {}", self.kind, self.message)
    }
}

impl std::error::Error for PluginError {}

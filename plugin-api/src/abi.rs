//! The ABI proper: the root module every plugin library exports, the constructors it lists,
//! and the FFI traits of the three plugin kinds.
//!
//! **Invariant:** everything reachable from [`PluginLib`] is frozen for ABI major 1, down
//! to the last field and method: a plugin built against 1.0.0 must load in every 1.x host.
//! What later minors add comes as interfaces beside it ([`crate::ext`]).
//!
//! Plugin authors never use these traits directly: [`crate::sdk`] implements them around
//! ordinary Rust traits and catches every panic on the way.

// `#[sabi_trait]` expands to impls inside a const block.
#![allow(non_local_definitions)]

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RArc, RBox, RResult, RSlice, RStr, RString, RVec},
    StableAbi,
};

use crate::{
    data::{Applied, Change, ConsumeOptions, Delivery, Message},
    error::PluginError,
    log::LogSinkBox,
};

/// The ABI this build of the crate speaks, as `major.minor.patch`.
///
/// A host loads a plugin whose ABI has the same major; within a major, `abi_stable` checks
/// the layout of every type reachable from the root module. The crate's own major version
/// equals the ABI major because `abi_stable` also compares the package version of each
/// type; crate minor and patch releases leave the ABI alone.
pub const ABI_VERSION: &str = "1.3.0";

/// A parsed ABI version, for messages such as "built for ABI 2.0, host speaks 1.0".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbiVersion {
    /// The major version: plugins and hosts of one major work together.
    pub major: u32,
    /// The minor version: what the crate added within the major.
    pub minor: u32,
}

impl AbiVersion {
    /// The version this build speaks.
    pub fn current() -> AbiVersion {
        AbiVersion::parse(ABI_VERSION).expect("ABI_VERSION is well formed")
    }

    /// Reads `major.minor[.patch]`; `None` if it is not that.
    pub fn parse(text: &str) -> Option<AbiVersion> {
        let mut parts = text.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next().unwrap_or("0").parse().ok()?;
        Some(AbiVersion { major, minor })
    }
}

impl std::fmt::Display for AbiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The root module of a plugin library.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginLibRef)))]
#[sabi(missing_field(panic))]
pub struct PluginLib {
    /// Every plugin the library provides. Calling it starts nothing.
    #[sabi(last_prefix_field)]
    pub plugins: extern "C" fn() -> RVec<PluginEntry>,
}

impl RootModule for PluginLibRef {
    declare_root_module_statics! {PluginLibRef}
    const BASE_NAME: &'static str = "golconde_plugin";
    const NAME: &'static str = "golconde plugin";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(ABI_VERSION);
}

/// One plugin in a library: what `golconde plugins` lists, and how to build it.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct PluginEntry {
    /// The name configuration files use (`plugin = "NAME"`).
    pub name: RStr<'static>,
    /// The plugin's own version (its crate version), not the ABI's.
    pub version: RStr<'static>,
    /// One line for `golconde plugins`.
    pub description: RStr<'static>,
    /// Builds an instance.
    pub constructor: Constructor,
}

/// Builds a plugin instance from its configuration section, given as JSON text.
///
/// A constructor validates its configuration and answers a bad key or value with an
/// [`crate::ErrorKind::Config`] error naming the key. It must not connect to anything:
/// `golconde check` builds every plugin without touching the network.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy)]
pub enum Constructor {
    /// Builds a transport.
    Transport(extern "C" fn(RStr<'_>, HostContext) -> RResult<TransportBox, PluginError>),
    /// Builds a processor.
    Processor(extern "C" fn(RStr<'_>, HostContext) -> RResult<ProcessorBox, PluginError>),
    /// Builds a database.
    Database(extern "C" fn(RStr<'_>, HostContext) -> RResult<DatabaseBox, PluginError>),
}

impl Constructor {
    /// The kind of plugin it builds.
    pub fn kind(&self) -> PluginKind {
        match self {
            Constructor::Transport(_) => PluginKind::Transport,
            Constructor::Processor(_) => PluginKind::Processor,
            Constructor::Database(_) => PluginKind::Database,
        }
    }
}

/// The three kinds of plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PluginKind {
    /// Speaks a queuing protocol.
    Transport,
    /// Turns messages into changes.
    Processor,
    /// Applies changes.
    Database,
}

impl PluginKind {
    /// The word used in messages and configuration: `transport`, `processor`, `database`.
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Transport => "transport",
            PluginKind::Processor => "processor",
            PluginKind::Database => "database",
        }
    }
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the host hands every plugin instance it builds.
#[repr(C)]
#[derive(StableAbi, Clone)]
pub struct HostContext {
    /// The instance's name in the configuration (`rabbit` for `[transports.rabbit]`, the
    /// pipeline's name for a processor).
    pub instance: RString,
    /// Where the plugin's `tracing` events go.
    pub log: LogSinkBox,
}

/// A connection to a broker, shared by every pipeline that names it.
#[sabi_trait]
pub trait FfiTransport: Send + Sync {
    /// Starts consuming `queue`.
    fn consume(
        &self,
        queue: RStr<'_>,
        options: ConsumeOptions,
    ) -> RResult<ConsumerBox, PluginError>;

    /// Publishes persistent messages to `queue` and returns once the broker confirmed every
    /// one of them.
    fn publish(&self, queue: RStr<'_>, messages: RSlice<'_, Message>) -> RResult<(), PluginError>;

    /// Connects, and disconnects again: what `golconde check --connect` calls.
    #[sabi(last_prefix_field)]
    fn ping(&self) -> RResult<(), PluginError>;
}

/// A subscription to one queue. Used from several host threads at once: one receives while
/// others acknowledge.
#[sabi_trait]
pub trait FfiConsumer: Send + Sync {
    /// Waits up to `timeout_ms` for deliveries and returns at most `max` of them; an empty
    /// list means the time ran out.
    fn receive(&self, max: u32, timeout_ms: u64) -> RResult<RVec<Delivery>, PluginError>;

    /// Acknowledges `tag`, and with `multiple` every earlier delivery too.
    fn ack(&self, tag: u64, multiple: bool) -> RResult<(), PluginError>;

    /// Gives deliveries back to the broker, to redeliver (`requeue`) or to drop.
    fn nack(&self, tag: u64, multiple: bool, requeue: bool) -> RResult<(), PluginError>;

    /// Stops consuming; unacknowledged deliveries go back to the broker.
    #[sabi(last_prefix_field)]
    fn close(&self) -> RResult<(), PluginError>;
}

/// Turns messages into database changes.
#[sabi_trait]
pub trait FfiProcessor: Send + Sync {
    /// The change a message asks for; see [`crate::sdk::Processor::process`].
    fn process(&self, message: &Message) -> RResult<Change, PluginError>;

    /// The copy of `message` to fan out once its change committed, enriched with what the
    /// database returned (generated keys), so that replicas get the same rows.
    #[sabi(last_prefix_field)]
    fn enrich(&self, message: &Message, applied: &Applied) -> RResult<Message, PluginError>;
}

/// A database, shared by every pipeline that names it. Each worker opens its own session.
#[sabi_trait]
pub trait FfiDatabase: Send + Sync {
    /// Opens a session; see [`crate::sdk::Database::connect`].
    fn connect(&self) -> RResult<SessionBox, PluginError>;

    /// The columns that identify a row of `table` (its primary key), so that the host can
    /// send every change to one row through the same worker, in queue order.
    #[sabi(last_prefix_field)]
    fn key_columns(&self, table: RStr<'_>) -> RResult<RVec<RString>, PluginError>;
}

/// One connection to a database, used by one worker at a time.
#[sabi_trait]
pub trait FfiSession: Send {
    /// Applies a batch of changes in one transaction.
    ///
    /// `Err` means nothing was committed (a transient failure: connection lost,
    /// serialization failure). `Ok` holds one result per change, in order: a change that can
    /// never apply is reported alone as a permanent error and the others are committed.
    #[sabi(last_prefix_field)]
    fn apply(
        &mut self,
        changes: RSlice<'_, Change>,
    ) -> RResult<RVec<RResult<Applied, PluginError>>, PluginError>;
}

/// A transport instance, as the host holds it.
pub type TransportBox = FfiTransport_TO<'static, RArc<()>>;
/// A consumer, as the host holds it.
pub type ConsumerBox = FfiConsumer_TO<'static, RArc<()>>;
/// A processor instance, as the host holds it.
pub type ProcessorBox = FfiProcessor_TO<'static, RArc<()>>;
/// A database instance, as the host holds it.
pub type DatabaseBox = FfiDatabase_TO<'static, RArc<()>>;
/// A session, as a database worker holds it.
pub type SessionBox = FfiSession_TO<'static, RBox<()>>;

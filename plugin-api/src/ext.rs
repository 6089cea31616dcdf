//! Extensions: what the ABI has gained since 1.0, offered beside the frozen root module so
//! that a plugin built against 1.0 keeps loading in every 1.x host.
//!
//! Why not new methods on the 1.0 traits: `abi_stable` accepts a library whose prefix types
//! have *more* fields than the loader knows (a newer plugin in an older host) but refuses one
//! with *fewer* (an older plugin in a newer host: "too many fields"). For plugins it is the
//! second direction that matters: authors ship binaries, and hosts are upgraded under them.
//! So everything reachable from [`crate::abi::PluginLib`] is frozen for all of 1.x, and a
//! capability added later is an **interface**: a `#[repr(C)]` table of functions with a name
//! and a version, which never changes once released (a changed interface is a new version,
//! offered beside the old one). A library lists the interfaces it implements in an
//! [`ExtensionList`] exported under [`EXTENSIONS_SYMBOL`]; the host looks each one up by
//! name and version, checks its layout with `abi_stable` against its own, and uses it, or
//! does without when it is missing (a plugin older than the interface) or unknown to the
//! host (a host older than the plugin). COM's `QueryInterface` and Vulkan's extensions work
//! the same way.
//!
//! Interfaces so far:
//! - [`construct`] `golconde.construct` 1 (ABI 1.1): builds an instance with the host's
//!   [`HostServices`]: the configuration file's folder, a per-target log filter, a sink
//!   for events that belong to no instance.
//! - [`delete_all`] `golconde.delete_all` 1 (ABI 1.1): the database applies a `Delete`
//!   whose restriction is empty by deleting every row of its table (a truncate). The host
//!   sends such an operation only to a database that offers this; one built before it
//!   never sees one.
//! - [`consume_as`] `golconde.consume_as` 1 (ABI 1.2): opens a consumer for a named
//!   pipeline, so that a broker with durable named consumers (JetStream, Redis consumer
//!   groups) names it after the pipeline. Every transport built with the SDK of 1.2 or
//!   later offers it; the host falls back to the 1.0 `consume` for one that does not.
//! - [`lag`] `golconde.lag` 1 (ABI 1.3): how many messages wait on a queue for a pipeline,
//!   for the host's metrics and dashboard. Without it the host shows no lag.
//!
//! Plugin authors never touch this module: `export_plugins!` exports the list, and the SDK
//! implements every interface for every plugin.

// `#[sabi_trait]` expands to impls inside a const block.
#![allow(non_local_definitions)]

use abi_stable::{
    sabi_trait,
    std_types::{RArc, RResult, RStr, RString, RVec},
    type_layout::TypeLayout,
    StableAbi,
};

use crate::{
    abi::{ConsumerBox, DatabaseBox, HostContext, ProcessorBox, TransportBox},
    data::ConsumeOptions,
    error::PluginError,
    log::{LogLevel, LogSinkBox},
};

/// The symbol under which a library exports its [`ExtensionHeader`].
pub const EXTENSIONS_SYMBOL: &str = "golconde_plugin_extensions";

/// What [`ExtensionHeader::magic`] holds: says the symbol is what it claims to be before
/// anything else of it is read.
pub const EXTENSIONS_MAGIC: [u8; 8] = *b"GOLCEXT1";

/// The exported symbol. Frozen for good: it is the one thing read before any check.
#[repr(C)]
pub struct ExtensionHeader {
    /// [`EXTENSIONS_MAGIC`].
    pub magic: [u8; 8],
    /// The layout of [`ExtensionList`] as the library was built; the host checks it against
    /// its own before calling `list`.
    pub layout: &'static TypeLayout,
    /// Every interface the library implements.
    pub list: extern "C" fn() -> ExtensionList,
}

/// Every interface a library implements.
#[repr(C)]
#[derive(StableAbi)]
pub struct ExtensionList {
    /// The interfaces, in no particular order.
    pub extensions: RVec<Extension>,
}

/// One interface, implemented for one plugin of the library.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct Extension {
    /// The plugin it belongs to, as [`crate::abi::PluginEntry::name`] (with `kind`).
    pub plugin: RStr<'static>,
    /// `"transport"`, `"processor"` or `"database"`.
    pub kind: RStr<'static>,
    /// The interface's name, such as `"golconde.construct"`.
    pub interface: RStr<'static>,
    /// The interface's version; a version never changes once released.
    pub version: u32,
    /// The layout of the table, as the library was built: checked against the host's
    /// before `table` is read.
    pub layout: &'static TypeLayout,
    /// The interface's table: a `&'static` of the type the name and version stand for.
    pub table: *const (),
}

// SAFETY: `table` points to an immutable `'static` table of function pointers.
unsafe impl Send for Extension {}
// SAFETY: as above.
unsafe impl Sync for Extension {}

/// An interface the host knows: its name, version and table type.
pub trait Interface: StableAbi + 'static {
    /// Its name, such as `golconde.construct`.
    const NAME: &'static str;
    /// Its version.
    const VERSION: u32;
}

impl Extension {
    /// Describes `table` as implementing `I` for `plugin`.
    pub fn new<I: Interface>(plugin: &'static str, kind: &'static str, table: &'static I) -> Self {
        Extension {
            plugin: RStr::from_str(plugin),
            kind: RStr::from_str(kind),
            interface: RStr::from_str(I::NAME),
            version: I::VERSION,
            layout: I::LAYOUT,
            table: table as *const I as *const (),
        }
    }

    /// The table as `I`, if this entry is `I` and its layout is the host's.
    ///
    /// # Errors
    /// `Err` when the entry claims `I` but its layout differs: `abi_stable`'s report.
    pub fn get<I: Interface>(&self) -> Option<Result<&'static I, String>> {
        if self.interface.as_str() != I::NAME || self.version != I::VERSION {
            return None;
        }
        Some(
            match abi_stable::abi_stability::abi_checking::check_layout_compatibility(
                I::LAYOUT,
                self.layout,
            ) {
                // SAFETY: the layout matches `I`'s, and tables are `'static`.
                Ok(()) => Ok(unsafe { &*(self.table as *const I) }),
                Err(e) => Err(e.to_string()),
            },
        )
    }
}

/// `golconde.construct` 1: builds a plugin instance, as [`crate::abi::Constructor`] does,
/// with the host's [`HostServices`] besides. A host that knows it calls it instead of the
/// 1.0 constructor.
pub mod construct {
    use super::*;

    /// The interface's table.
    #[repr(C)]
    #[derive(StableAbi)]
    pub struct ConstructV1 {
        /// Builds an instance from its configuration section (JSON text), the 1.0 context and the host's services.
        pub construct: extern "C" fn(
            config: RStr<'_>,
            host: HostContext,
            services: &HostServices,
        ) -> RResult<Built, PluginError>,
    }

    impl Interface for ConstructV1 {
        const NAME: &'static str = "golconde.construct";
        const VERSION: u32 = 1;
    }

    /// A built instance, of the plugin's kind.
    #[repr(u8)]
    #[derive(StableAbi)]
    pub enum Built {
        /// A transport.
        Transport(TransportBox),
        /// A processor.
        Processor(ProcessorBox),
        /// A database.
        Database(DatabaseBox),
    }
}

/// `golconde.delete_all` 1: a marker. A database offering it applies an
/// [`crate::Action::Delete`] with an empty restriction as "delete every row of the table",
/// in the batch's transaction. Processors emit such an operation for a truncate (the
/// `debezium` processor with `truncate = "apply"`); the host refuses it, as the message's
/// fault, for a database that does not offer this interface.
pub mod delete_all {
    use super::*;

    /// The interface's table: nothing to call, its presence is the promise.
    #[repr(C)]
    #[derive(StableAbi)]
    pub struct DeleteAllV1 {
        /// Always `true`.
        pub deletes_all_rows: bool,
    }

    impl Interface for DeleteAllV1 {
        const NAME: &'static str = "golconde.delete_all";
        const VERSION: u32 = 1;
    }

    /// The one table every database that offers the interface exports.
    pub static DELETE_ALL_V1: DeleteAllV1 = DeleteAllV1 {
        deletes_all_rows: true,
    };
}

/// `golconde.consume_as` 1: [`crate::Transport::consume_as`] across the boundary. The
/// frozen 1.0 trait object cannot gain a method, so the table takes the instance the host
/// built, and the SDK finds the plugin's own type behind it (instances are built
/// downcastable since 1.2).
pub mod consume_as {
    use super::*;

    /// The interface's table.
    #[repr(C)]
    #[derive(StableAbi)]
    pub struct ConsumeAsV1 {
        /// Opens a consumer of `queue` for the pipeline named `pipeline`, on `transport`,
        /// an instance this plugin built.
        pub consume_as: extern "C" fn(
            transport: &TransportBox,
            queue: RStr<'_>,
            options: ConsumeOptions,
            pipeline: RStr<'_>,
        ) -> RResult<ConsumerBox, PluginError>,
    }

    impl Interface for ConsumeAsV1 {
        const NAME: &'static str = "golconde.consume_as";
        const VERSION: u32 = 1;
    }
}

/// `golconde.lag` 1: [`crate::Transport::lag`] across the boundary, taking the instance
/// the host built as `golconde.consume_as` does.
pub mod lag {
    use super::*;
    use abi_stable::std_types::ROption;

    /// The interface's table.
    #[repr(C)]
    #[derive(StableAbi)]
    pub struct LagV1 {
        /// Messages waiting on `queue` for the pipeline named `pipeline`, on `transport`,
        /// an instance this plugin built; `RNone` when the broker cannot tell.
        pub lag: extern "C" fn(
            transport: &TransportBox,
            queue: RStr<'_>,
            pipeline: RStr<'_>,
        ) -> RResult<ROption<u64>, PluginError>,
    }

    impl Interface for LagV1 {
        const NAME: &'static str = "golconde.lag";
        const VERSION: u32 = 1;
    }
}

/// What a host of ABI 1.1 or later offers an instance besides [`HostContext`].
#[repr(C)]
#[derive(StableAbi, Clone)]
pub struct HostServices {
    /// The absolute folder of the configuration file, against which a plugin resolves the
    /// relative paths in its section.
    pub config_dir: RString,
    /// Whether the host logs events of a level and target: asked once per `tracing`
    /// callsite, so a plugin formats only what will be written.
    pub log_filter: LogFilterBox,
    /// Where events that belong to no instance go (threads of the library's own), tagged
    /// with the plugin's name only.
    pub library_log: LogSinkBox,
}

/// Implemented by the host: its log filter, asked by target and level.
#[sabi_trait]
pub trait FfiLogFilter: Send + Sync + Clone {
    #[sabi(last_prefix_field)]
    /// Whether the host writes events of `level` from `target`.
    fn enabled(&self, level: LogLevel, target: RStr<'_>) -> bool;
}

/// The host's log filter, as a plugin holds it.
pub type LogFilterBox = FfiLogFilter_TO<'static, RArc<()>>;

//! What plugin authors write against: ordinary Rust traits, and [`export_plugins!`](crate::export_plugins), which
//! turns implementations of them into the library's root module.
//!
//! A minimal processor plugin is one `impl Plugin`, one `impl Processor` and one macro
//! call. The SDK supplies everything else: decoding the configuration section (so a bad
//! key is reported by name), the FFI adapters, `catch_unwind` around every call (a panic
//! becomes an [`ErrorKind::Panic`] error instead of aborting the host), and the log bridge.

use std::{
    cell::{Cell, RefCell},
    marker::PhantomData,
    mem::ManuallyDrop,
    ops::Deref,
    panic::{catch_unwind, AssertUnwindSafe},
    path::{Path, PathBuf},
    sync::Once,
    time::Duration,
};

use abi_stable::{
    prefix_type::PrefixTypeTrait,
    sabi_trait::{TD_CanDowncast, TD_Opaque},
    std_types::{RArc, ROption, RResult, RSlice, RStr, RString, RVec},
};
use serde::de::DeserializeOwned;
use tracing::Dispatch;

use crate::{
    abi::{
        Constructor, ConsumerBox, DatabaseBox, FfiConsumer, FfiConsumer_TO, FfiDatabase,
        FfiDatabase_TO, FfiProcessor, FfiProcessor_TO, FfiSession, FfiSession_TO, FfiTransport,
        FfiTransport_TO, HostContext, PluginEntry, PluginLib, PluginLibRef, ProcessorBox,
        SessionBox, TransportBox,
    },
    data::{Applied, Change, ConsumeOptions, Delivery, Message},
    error::{ErrorKind, PluginError},
    ext::{
        construct::{Built, ConstructV1},
        consume_as::ConsumeAsV1,
        lag::LagV1,
        Extension, ExtensionHeader, ExtensionList, HostServices, EXTENSIONS_MAGIC,
    },
    log::dispatch_for,
};

/// What every plugin declares about itself, and how it is built from its configuration.
///
/// Every method of every plugin trait is called from a thread the host owns, and blocks:
/// a plugin that needs async I/O runs a runtime of its own inside. The SDK catches every
/// panic at the boundary and reports it as [`ErrorKind::Panic`]; what the host does then is
/// said per method below. The error kinds mean:
///
/// | kind | means | the host |
/// |---|---|---|
/// | [`ErrorKind::Transient`] | might pass if tried again later | backs off and retries, acknowledging nothing |
/// | [`ErrorKind::Permanent`] | this input can never succeed | sets the message aside (dead letter) |
/// | [`ErrorKind::Config`] | the configuration is wrong; name the key | refuses to start the pieces that use it |
/// | [`ErrorKind::Panic`] | the plugin panicked (the SDK reports it) | builds the instance anew |
pub trait Plugin: Sized + Send + Sync + 'static {
    /// The name configuration files use (`plugin = "amqp"`).
    const NAME: &'static str;
    /// The plugin's own version, usually `env!("CARGO_PKG_VERSION")`.
    const VERSION: &'static str;
    /// One line for `golconde plugins`.
    const DESCRIPTION: &'static str;

    /// The plugin's configuration section. Use `#[serde(deny_unknown_fields)]` so that a
    /// misspelt key is an error naming it. A processor's section also holds the pipeline's
    /// `table` and `tables` (exact table names; absent when the pipeline allows patterns).
    type Config: DeserializeOwned;

    /// Validates the configuration and builds the instance, without connecting to anything:
    /// `golconde check` builds every plugin offline, and the host builds a new instance
    /// after a panic. Return [`ErrorKind::Config`] naming the key for a bad value; resolve
    /// relative paths with [`Host::resolve`].
    fn new(config: Self::Config, host: &Host) -> Result<Self, PluginError>;
}

/// A queuing protocol: consumes with acknowledgements, publishes with confirmation. One
/// instance per `[transports.NAME]` section, shared by every pipeline that names it.
pub trait Transport: Plugin {
    /// A subscription to one queue.
    type Consumer: Consumer;

    /// Starts consuming `queue`. Called by a pipeline's dispatcher thread when it starts,
    /// and again after each restart. `options.prefetch` is at least 1 (refuse 0 with
    /// [`ErrorKind::Config`] anyway: brokers read it as "no limit"); pipelines use
    /// [`crate::AckMode::Cumulative`]. Bound the time it takes (connect with a timeout).
    ///
    /// Any error restarts the dispatcher after a backoff (a panic also rebuilds the
    /// transport); nothing is lost, since nothing was acknowledged.
    fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<Self::Consumer, PluginError>;

    /// Starts consuming `queue` for the pipeline named `pipeline`, as [`Transport::consume`]
    /// does otherwise. A broker whose consumers are named and durable on the server (a
    /// JetStream consumer, a Redis consumer group) names this one after the pipeline, so
    /// that every process running the pipeline shares it and two pipelines on one queue
    /// each get their own. Since ABI 1.2 (interface `golconde.consume_as` 1): a host that
    /// knows it calls this instead of `consume`; an older host calls `consume`, which
    /// should then name the consumer after the queue. By default, `consume`.
    fn consume_as(
        &self,
        queue: &str,
        options: ConsumeOptions,
        pipeline: &str,
    ) -> Result<Self::Consumer, PluginError> {
        let _ = pipeline;
        self.consume(queue, options)
    }

    /// How many messages wait on `queue` for the pipeline named `pipeline`: on the broker
    /// and not yet delivered to it (RabbitMQ's ready messages, a JetStream consumer's
    /// pending count, a Redis consumer group's lag). `None` when the broker cannot tell.
    /// Since ABI 1.3 (interface `golconde.lag` 1): the host asks every few seconds, from a
    /// thread of its own, for its metrics and dashboard. Keep it cheap and bounded in time,
    /// create nothing (a queue that does not exist yet is `None` or 0), and never disturb
    /// consuming or publishing. An error is logged at debug level and shown as no lag. By
    /// default, `None`.
    fn lag(&self, queue: &str, pipeline: &str) -> Result<Option<u64>, PluginError> {
        let _ = (queue, pipeline);
        Ok(None)
    }

    /// Publishes persistent messages to `queue` and returns once the broker has confirmed
    /// every one: fan-out copies, dead letters, `golconde send`. Called from a dispatcher
    /// thread. Carry every header; one that the protocol cannot hold as it is should travel
    /// another way (a plain header), never fail the publish.
    ///
    /// - [`ErrorKind::Transient`] (broker gone, confirmation timed out): the host backs off
    ///   and publishes the whole slice again, so a message may arrive twice.
    /// - [`ErrorKind::Permanent`]: one of these messages can never be published. The host
    ///   publishes them one by one and sets aside only those refused alone, so return it
    ///   only for something a message carries, never for the broker's state.
    /// - [`ErrorKind::Config`] (a queue name the protocol refuses, no permission): the
    ///   pipeline pauses and retries.
    /// - Panic: the transport is rebuilt and the slice published again; after three, one
    ///   by one.
    fn publish(&self, queue: &str, messages: &[Message]) -> Result<(), PluginError>;

    /// Connects and disconnects: what `golconde check --connect` calls. Say in the error
    /// what to change (address, credentials, certificate).
    fn ping(&self) -> Result<(), PluginError>;
}

/// A subscription to one queue, used by one pipeline's dispatcher thread.
///
/// Tags increase in delivery order. A tag from before a reconnection must never be
/// acknowledged on the new connection: the broker redelivers those messages, which is what
/// the host relies on. A delivery that could not be received whole (a frame over a size
/// limit) is handed over with its headers and [`crate::TRANSPORT_ERROR_HEADER`] saying why;
/// the host dead-letters it.
pub trait Consumer: Send + Sync + 'static {
    /// Waits up to `timeout` for a first delivery and returns at most `max`; empty when the
    /// time ran out. Hold at most the prefetch in memory. An error restarts the dispatcher:
    /// it closes this consumer and opens another, and the broker redelivers what was not
    /// acknowledged.
    fn receive(&self, max: usize, timeout: Duration) -> Result<Vec<Delivery>, PluginError>;

    /// Acknowledges `tag` and, with `multiple`, every earlier delivery. Pipelines call it
    /// with `multiple = true`, in delivery order, after a batch committed and its fan-out
    /// was confirmed. An error restarts the dispatcher; the batch is delivered again.
    fn ack(&self, tag: u64, multiple: bool) -> Result<(), PluginError>;

    /// Gives deliveries back, to be redelivered (`requeue`) or dropped. Pipelines do not
    /// call it (they close the consumer instead); tools may.
    fn nack(&self, tag: u64, multiple: bool, requeue: bool) -> Result<(), PluginError>;

    /// Stops consuming; what was not acknowledged goes back to the broker. Called when the
    /// dispatcher stops or restarts. Errors are logged.
    fn close(&self) -> Result<(), PluginError> {
        Ok(())
    }
}

/// A message format: turns each message into the database operations it asks for. One
/// instance per pipeline, called from its dispatcher thread, message by message in queue
/// order. Keep it free of side effects: the same message may be processed again.
pub trait Processor: Plugin {
    /// The change `message` asks for: its operations are applied together, in one
    /// transaction. An `Update` or `Delete` must have a non-empty restriction. The host
    /// refuses a change touching a table outside the pipeline's `tables`, whatever you say.
    ///
    /// - [`ErrorKind::Permanent`] or [`ErrorKind::Config`]: the message is dead-lettered with
    ///   your message as the reason (say what is wrong and where: field, column).
    /// - [`ErrorKind::Transient`]: the host backs off and processes the same message again;
    ///   the pipeline waits.
    /// - Panic: a new instance is built and the message tried again; at the third panic it
    ///   is dead-lettered.
    fn process(&self, message: &Message) -> Result<Change, PluginError>;

    /// The copy of `message` to publish to the fan-out queues once its change committed,
    /// with what the database reported ([`Applied::returned`]: generated keys), so that a
    /// replica makes the same rows. By default the message itself. The change is committed
    /// already, so no error sends the batch back: [`ErrorKind::Transient`] is retried in
    /// place, a permanent error or a third panic dead-letters the message ("applied, but its
    /// fan-out copy could not be made").
    fn enrich(&self, message: &Message, _applied: &Applied) -> Result<Message, PluginError> {
        Ok(message.clone())
    }
}

/// A database: one instance per `[databases.NAME]` section, shared by every pipeline that
/// names it; each database worker of a pipeline opens a [`Session`] of its own.
pub trait Database: Plugin {
    /// One connection.
    type Session: Session;

    /// Whether [`Session::apply`] takes a [`Action::Delete`](crate::Action::Delete) with an
    /// empty restriction as "delete every row of the table", in the batch's transaction (a
    /// truncate, as change-data-capture tools report one). Since ABI 1.1; the host sends
    /// such an operation only to a database that says `true` here, and refuses it as the
    /// message's fault otherwise. Leave it `false` unless `apply` does exactly that.
    const DELETES_ALL_ROWS: bool = false;

    /// Opens a session. Called by a worker thread when it has none: at start, and after the
    /// previous session failed or panicked. Whatever the error, the host takes it for the
    /// database's problem, never a message's: it backs off and tries again, and the pipeline
    /// waits (a panic also rebuilds this instance). Bound the time it takes.
    fn connect(&self) -> Result<Self::Session, PluginError>;

    /// The columns that identify a row of `table` (its primary key), so that the host can
    /// send every change of one row through the same worker, in queue order. Called by a
    /// dispatcher thread the first time a table appears in a batch, only when the pipeline
    /// has more than one worker; the answer is kept for the life of the pipeline.
    ///
    /// An empty list (no key), a change without every key value (an insert whose key the
    /// database generates) or an error makes that batch run alone on one worker: correct,
    /// only slower. An error is not remembered (the next batch asks again); a panic also
    /// rebuilds this instance.
    fn key_columns(&self, table: &str) -> Result<Vec<String>, PluginError>;
}

/// One connection to a database, used by one worker thread at a time.
pub trait Session: Send + 'static {
    /// Applies `changes` in one transaction, all of each change or none of it.
    ///
    /// `Ok` holds exactly one result per change, in order (any other count is taken for a
    /// bug, as a panic). A change that can never apply (constraint violation, a value that
    /// does not fit its column, a missing table) is reported alone as a permanent error,
    /// naming table and column, and the others are committed: the host dead-letters it,
    /// whatever the error's kind. [`Applied::returned`] holds, per operation, the columns
    /// the database generated (the key of an `Insert`), and [`Applied::duplicate`] says the
    /// change was skipped as already applied.
    ///
    /// `Err` means nothing was committed:
    /// - [`ErrorKind::Transient`] (connection lost, serialization failure, deadlock): the
    ///   host drops this session, backs off and applies the same batch on a new one, for as
    ///   long as it takes. An error that may be one change's fault but may also pass (a
    ///   missing privilege, a statement timeout) should be retried a bounded number of
    ///   times, then reported for that change alone.
    /// - [`ErrorKind::Permanent`] or [`ErrorKind::Config`]: the host applies the batch
    ///   again change by change, to find the bad ones.
    /// - Panic: this session is dropped (the [`Database`] instance is kept) and the batch
    ///   applied on a new one; at the third panic, change by change.
    #[allow(clippy::type_complexity)]
    fn apply(
        &mut self,
        changes: &[Change],
    ) -> Result<Vec<Result<Applied, PluginError>>, PluginError>;
}

/// What a plugin knows of the host that built it.
pub struct Host {
    instance: String,
    dispatch: Dispatch,
    config_dir: Option<PathBuf>,
}

impl Host {
    /// The instance's name in the configuration file.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The folder of the host's configuration file, against which relative paths in a
    /// plugin's section are meant. `None` in a host older than ABI 1.1, which does not say.
    pub fn config_dir(&self) -> Option<&Path> {
        self.config_dir.as_deref()
    }

    /// `path`, given by configuration key `key`, made absolute against
    /// [`Host::config_dir`]. An absolute path comes back as it is; a relative one in a host
    /// too old to say where its configuration is, as a [`ErrorKind::Config`] error naming
    /// the key and what to do.
    pub fn resolve(&self, key: &str, path: &Path) -> Result<PathBuf, PluginError> {
        if path.is_absolute() {
            return Ok(path.to_path_buf());
        }
        match &self.config_dir {
            Some(dir) => Ok(dir.join(path)),
            None => Err(PluginError::config(format!(
                "`{key}` = {} is a relative path, and this golconde is older than plugin ABI \
                 1.1, so it does not say which folder that is relative to: give an absolute \
                 path, or run the plugin in golconde 1.1 or newer",
                path.display()
            ))),
        }
    }

    /// The `tracing` dispatcher that reaches the host's log. Calls into the plugin already
    /// run under it; a thread the plugin spawns should enter it too
    /// (`tracing::dispatcher::with_default`) to have its events tagged with this instance.
    pub fn dispatch(&self) -> &Dispatch {
        &self.dispatch
    }
}

// For `crate::testing`, which hands plugins a host outside the host.
#[cfg(feature = "testing")]
impl Host {
    pub(crate) fn new(instance: String, dispatch: Dispatch, config_dir: Option<PathBuf>) -> Host {
        Host {
            instance,
            dispatch,
            config_dir,
        }
    }
}

/// The name under which `abi_stable` looks up a library's root module.
#[doc(hidden)]
pub const ROOT_MODULE_SYMBOL: &str = "_1as_0lib_1header_0root_bmodule_bloader";

/// Lists the plugins a library exports and makes it loadable by the Golconde host. Call it
/// once, at the crate root of a `cdylib`, with each plugin's kind and type:
///
/// ```ignore
/// golconde_plugin_api::export_plugins! {
///     transport: MyTransport,
///     processor: MyProcessor,
/// }
/// ```
#[macro_export]
macro_rules! export_plugins {
    ($($kind:ident : $ty:ty),+ $(,)?) => {
        // The SDK turns a plugin's panics into errors by unwinding to the boundary; built to
        // abort, the first panic would take the whole host down with every pipeline.
        #[cfg(panic = "abort")]
        ::core::compile_error!(
            "a Golconde plugin must be built with `panic = \"unwind\"` (the default): with \
             `panic = \"abort\"` its first panic would kill the host. Remove `panic = \"abort\"` \
             from the profile in Cargo.toml (and `-C panic=abort` from RUSTFLAGS)"
        );
        #[doc(hidden)]
        #[export_name = "_1as_0lib_1header_0root_bmodule_bloader"]
        pub static __GOLCONDE_PLUGIN_LIB_HEADER: $crate::__private::LibHeader = {
            extern "C" fn plugins() -> $crate::RVec<$crate::abi::PluginEntry> {
                $crate::RVec::from(::std::vec![$($crate::export_plugins!(@entry $kind $ty)),+])
            }
            fn root_module() -> $crate::abi::PluginLibRef {
                $crate::sdk::root_module(plugins)
            }
            extern "C" fn load() -> $crate::__private::RootModuleResult {
                $crate::__private::abi_stable::library::__call_root_module_loader(root_module)
            }
            // SAFETY: `load` returns the module built by `root_module`, a `PluginLibRef`.
            unsafe {
                $crate::__private::LibHeader::from_constructor::<$crate::abi::PluginLibRef>(
                    load,
                    $crate::__private::CheckTypeLayout::Yes,
                )
            }
        };

        /// The interfaces added to the ABI after 1.0 ([`$crate::ext`]), which a host of
        /// ABI 1.1 or later looks up here.
        #[doc(hidden)]
        #[export_name = "golconde_plugin_extensions"]
        pub static __GOLCONDE_PLUGIN_EXTENSIONS: $crate::ext::ExtensionHeader = {
            extern "C" fn list() -> $crate::ext::ExtensionList {
                let mut extensions = ::std::vec::Vec::new();
                $(extensions.extend($crate::export_plugins!(@extensions $kind $ty));)+
                $crate::ext::ExtensionList {
                    extensions: $crate::RVec::from(extensions),
                }
            }
            $crate::sdk::extension_header(list)
        };
    };
    (@entry transport $ty:ty) => { $crate::sdk::transport_entry::<$ty>() };
    (@entry processor $ty:ty) => { $crate::sdk::processor_entry::<$ty>() };
    (@entry database $ty:ty) => { $crate::sdk::database_entry::<$ty>() };
    (@extensions transport $ty:ty) => { $crate::sdk::transport_extensions::<$ty>() };
    (@extensions processor $ty:ty) => { $crate::sdk::processor_extensions::<$ty>() };
    (@extensions database $ty:ty) => { $crate::sdk::database_extensions::<$ty>() };
}

#[doc(hidden)]
pub fn root_module(plugins: extern "C" fn() -> RVec<PluginEntry>) -> PluginLibRef {
    PluginLib { plugins }.leak_into_prefix()
}

#[doc(hidden)]
pub fn transport_entry<T: Transport>() -> PluginEntry {
    entry::<T>(Constructor::Transport(construct_transport::<T>))
}

#[doc(hidden)]
pub fn processor_entry<T: Processor>() -> PluginEntry {
    entry::<T>(Constructor::Processor(construct_processor::<T>))
}

#[doc(hidden)]
pub fn database_entry<T: Database>() -> PluginEntry {
    entry::<T>(Constructor::Database(construct_database::<T>))
}

fn entry<T: Plugin>(constructor: Constructor) -> PluginEntry {
    PluginEntry {
        name: RStr::from_str(T::NAME),
        version: RStr::from_str(T::VERSION),
        description: RStr::from_str(T::DESCRIPTION),
        constructor,
    }
}

extern "C" fn construct_transport<T: Transport>(
    config: RStr<'_>,
    host: HostContext,
) -> RResult<TransportBox, PluginError> {
    construct::<T, _>(config, host, None, erase_transport)
}

extern "C" fn construct_processor<T: Processor>(
    config: RStr<'_>,
    host: HostContext,
) -> RResult<ProcessorBox, PluginError> {
    construct::<T, _>(config, host, None, erase_processor)
}

extern "C" fn construct_database<T: Database>(
    config: RStr<'_>,
    host: HostContext,
) -> RResult<DatabaseBox, PluginError> {
    construct::<T, _>(config, host, None, erase_database)
}

fn erase_transport<T: Transport>(value: Guarded<T>) -> TransportBox {
    // Downcastable, so that `golconde.consume_as` (an interface beside the frozen trait
    // object) finds its way back to the plugin's own type.
    FfiTransport_TO::from_ptr(RArc::new(value), TD_CanDowncast)
}

fn erase_processor<T: Processor>(value: Guarded<T>) -> ProcessorBox {
    FfiProcessor_TO::from_ptr(RArc::new(value), TD_Opaque)
}

fn erase_database<T: Database>(value: Guarded<T>) -> DatabaseBox {
    FfiDatabase_TO::from_ptr(RArc::new(value), TD_Opaque)
}

fn construct<T: Plugin, B>(
    config: RStr<'_>,
    host: HostContext,
    services: Option<&HostServices>,
    erase: impl FnOnce(Guarded<T>) -> B,
) -> RResult<B, PluginError> {
    let built = catch_unwind(AssertUnwindSafe(|| {
        install_panic_hook();
        let dispatch = dispatch_for(&host.log, services);
        let host = Host {
            instance: host.instance.into_string(),
            dispatch,
            config_dir: services.map(|s| PathBuf::from(s.config_dir.as_str())),
        };
        let plugin = guard(&host.dispatch, "building the plugin", || {
            T::new(parse_config::<T::Config>(config.as_str())?, &host)
        })?;
        Ok(erase(Guarded::new(plugin, host.dispatch)))
    }));
    match built {
        Ok(result) => result.into(),
        Err(payload) => RResult::RErr(panic_error("building the plugin", &*payload, None)),
    }
}

/// The ABI 1.1 interfaces, implemented for plugin `T`: constants, so that each table is a
/// `'static` the library can hand out.
struct Tables<T>(PhantomData<T>);

impl<T: Transport> Tables<T> {
    const CONSTRUCT_TRANSPORT: ConstructV1 = ConstructV1 {
        construct: construct_v1_transport::<T>,
    };
    const CONSUME_AS: ConsumeAsV1 = ConsumeAsV1 {
        consume_as: consume_as_transport::<T>,
    };
    const LAG: LagV1 = LagV1 {
        lag: lag_transport::<T>,
    };
}

impl<T: Processor> Tables<T> {
    const CONSTRUCT_PROCESSOR: ConstructV1 = ConstructV1 {
        construct: construct_v1_processor::<T>,
    };
}

impl<T: Database> Tables<T> {
    const CONSTRUCT_DATABASE: ConstructV1 = ConstructV1 {
        construct: construct_v1_database::<T>,
    };
}

extern "C" fn construct_v1_transport<T: Transport>(
    config: RStr<'_>,
    host: HostContext,
    services: &HostServices,
) -> RResult<Built, PluginError> {
    construct::<T, _>(config, host, Some(services), |v| {
        Built::Transport(erase_transport(v))
    })
}

extern "C" fn construct_v1_processor<T: Processor>(
    config: RStr<'_>,
    host: HostContext,
    services: &HostServices,
) -> RResult<Built, PluginError> {
    construct::<T, _>(config, host, Some(services), |v| {
        Built::Processor(erase_processor(v))
    })
}

extern "C" fn construct_v1_database<T: Database>(
    config: RStr<'_>,
    host: HostContext,
    services: &HostServices,
) -> RResult<Built, PluginError> {
    construct::<T, _>(config, host, Some(services), |v| {
        Built::Database(erase_database(v))
    })
}

#[doc(hidden)]
pub fn transport_extensions<T: Transport>() -> Vec<Extension> {
    vec![
        Extension::new(T::NAME, "transport", &Tables::<T>::CONSTRUCT_TRANSPORT),
        Extension::new(T::NAME, "transport", &Tables::<T>::CONSUME_AS),
        Extension::new(T::NAME, "transport", &Tables::<T>::LAG),
    ]
}

extern "C" fn lag_transport<T: Transport>(
    transport: &TransportBox,
    queue: RStr<'_>,
    pipeline: RStr<'_>,
) -> RResult<ROption<u64>, PluginError> {
    match transport.obj.downcast_as::<Guarded<T>>() {
        Ok(guarded) => guarded.call("reading the lag", |t| {
            t.lag(queue.as_str(), pipeline.as_str()).map(ROption::from)
        }),
        Err(_) => RResult::RErr(PluginError::permanent(format!(
            "`golconde.lag` of transport `{}` was given an instance of another plugin",
            T::NAME
        ))),
    }
}

extern "C" fn consume_as_transport<T: Transport>(
    transport: &TransportBox,
    queue: RStr<'_>,
    options: ConsumeOptions,
    pipeline: RStr<'_>,
) -> RResult<ConsumerBox, PluginError> {
    match transport.obj.downcast_as::<Guarded<T>>() {
        Ok(guarded) => guarded.open_consumer(queue.as_str(), options, Some(pipeline.as_str())),
        // Only a host mixing up its instances could get here.
        Err(_) => RResult::RErr(PluginError::permanent(format!(
            "`golconde.consume_as` of transport `{}` was given an instance of another plugin",
            T::NAME
        ))),
    }
}

#[doc(hidden)]
pub fn processor_extensions<T: Processor>() -> Vec<Extension> {
    vec![Extension::new(
        T::NAME,
        "processor",
        &Tables::<T>::CONSTRUCT_PROCESSOR,
    )]
}

#[doc(hidden)]
pub fn database_extensions<T: Database>() -> Vec<Extension> {
    let mut extensions = vec![Extension::new(
        T::NAME,
        "database",
        &Tables::<T>::CONSTRUCT_DATABASE,
    )];
    if T::DELETES_ALL_ROWS {
        extensions.push(Extension::new(
            T::NAME,
            "database",
            &crate::ext::delete_all::DELETE_ALL_V1,
        ));
    }
    extensions
}

#[doc(hidden)]
pub const fn extension_header(list: extern "C" fn() -> ExtensionList) -> ExtensionHeader {
    ExtensionHeader {
        magic: EXTENSIONS_MAGIC,
        layout: <ExtensionList as abi_stable::StableAbi>::LAYOUT,
        list,
    }
}

/// Decodes a configuration section given as JSON text. Decoding from a JSON value rather
/// than from text keeps positions out of the messages: the host knows where the section is
/// in the file, the JSON text is the host's own rendering of it.
///
/// A section is always a table of keys: anything else (`[]`, `42`) is refused here, since
/// serde would read an array as a struct's fields in order and take `[]` for "all defaults".
pub fn parse_config<C: DeserializeOwned>(json: &str) -> Result<C, PluginError> {
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| PluginError::config(format!("configuration is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(PluginError::config(format!(
            "the configuration section must be a table of keys, not {}",
            match value {
                serde_json::Value::Null => "null",
                serde_json::Value::Bool(_) => "a boolean",
                serde_json::Value::Number(_) => "a number",
                serde_json::Value::String(_) => "a string",
                serde_json::Value::Array(_) => "an array",
                serde_json::Value::Object(_) => unreachable!("checked above"),
            }
        )));
    }
    C::deserialize(value).map_err(|e| PluginError::config(e.to_string()))
}

/// A plugin value behind the boundary: every call runs under the instance's log dispatcher
/// and inside `catch_unwind`, and so does its drop.
struct Guarded<T> {
    inner: ManuallyDrop<T>,
    dispatch: Dispatch,
}

impl<T> Guarded<T> {
    fn new(inner: T, dispatch: Dispatch) -> Self {
        Guarded {
            inner: ManuallyDrop::new(inner),
            dispatch,
        }
    }

    fn call<R>(
        &self,
        what: &str,
        f: impl FnOnce(&T) -> Result<R, PluginError>,
    ) -> RResult<R, PluginError> {
        guard(&self.dispatch, what, || f(&self.inner)).into()
    }

    fn call_mut<R>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut T) -> Result<R, PluginError>,
    ) -> RResult<R, PluginError> {
        let inner = &mut self.inner;
        guard(&self.dispatch, what, || f(inner)).into()
    }
}

impl<T> Deref for Guarded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> Drop for Guarded<T> {
    fn drop(&mut self) {
        let inner = &mut self.inner;
        let dropped = guard(&self.dispatch, "dropping the plugin", || {
            // SAFETY: `inner` is never used again; this is the only place it is dropped.
            unsafe { ManuallyDrop::drop(inner) };
            Ok(())
        });
        // Nobody is left to hand the error to.
        if let Err(e) = dropped {
            tracing::dispatcher::with_default(&self.dispatch, || tracing::error!("{e}"));
        }
    }
}

thread_local! {
    /// Set while a call from the host runs: a panic in it is caught by [`guard`].
    static IN_CALL: Cell<bool> = const { Cell::new(false) };
    /// Panics seen during the current call, as "message at file:line", oldest first. The
    /// one that ends the call becomes the error's text; any other was caught by the
    /// plugin's own code, and is logged when the call returns.
    static PANICS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// Set while the hook logs, so that a panic inside logging cannot recurse.
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` as a call from the host: under the instance's dispatcher, inside
/// `catch_unwind`. A panic becomes an [`ErrorKind::Panic`] error, and every panic the
/// plugin caught by itself meanwhile is logged, so that none passes without a trace.
fn guard<R>(
    dispatch: &Dispatch,
    what: &str,
    f: impl FnOnce() -> Result<R, PluginError>,
) -> Result<R, PluginError> {
    tracing::dispatcher::with_default(dispatch, || {
        let outer = IN_CALL.with(|c| c.replace(true));
        let earlier = PANICS.with(|p| p.take());
        let result = catch_unwind(AssertUnwindSafe(f));
        IN_CALL.with(|c| c.set(outer));
        let mut seen = PANICS.with(|p| p.replace(earlier));
        let result = result.unwrap_or_else(|payload| {
            let last = seen.pop();
            Err(panic_error(what, &*payload, last))
        });
        for panic in seen {
            tracing::error!("a panic was caught inside the plugin while {what}: {panic}");
        }
        result
    })
}

fn panic_error(
    what: &str,
    payload: &(dyn std::any::Any + Send),
    seen: Option<String>,
) -> PluginError {
    let text = seen.unwrap_or_else(|| payload_text(payload));
    PluginError::new(
        ErrorKind::Panic,
        format!("plugin panicked while {what}: {text}"),
    )
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_string())
}

/// Makes every panic in the library visible exactly once. A `cdylib` has its own copy of
/// std and so its own panic hook, which this replaces: a panic inside a call is noted for
/// [`guard`] (which reports it as the call's error, or logs it if the plugin caught it);
/// any other, on a thread of the plugin's own, is logged through the log bridge at once.
fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            let text = match info.location() {
                Some(l) => format!("{message} at {}:{}", l.file(), l.line()),
                None => message,
            };
            if IN_CALL.with(|c| c.get()) {
                PANICS.with(|p| p.borrow_mut().push(text));
                return;
            }
            if IN_HOOK.with(|h| h.replace(true)) || !tracing::dispatcher::has_been_set() {
                previous(info);
            } else {
                let thread = std::thread::current();
                tracing::error!(
                    "thread `{}` panicked: {text}",
                    thread.name().unwrap_or("unnamed")
                );
            }
            IN_HOOK.with(|h| h.set(false));
        }));
    });
}

impl<T: Transport> Guarded<T> {
    fn open_consumer(
        &self,
        queue: &str,
        options: ConsumeOptions,
        pipeline: Option<&str>,
    ) -> RResult<ConsumerBox, PluginError> {
        self.call("opening a consumer", |t| {
            let consumer = match pipeline {
                Some(pipeline) => t.consume_as(queue, options, pipeline)?,
                None => t.consume(queue, options)?,
            };
            Ok(FfiConsumer_TO::from_ptr(
                RArc::new(Guarded::new(consumer, self.dispatch.clone())),
                TD_Opaque,
            ))
        })
    }
}

impl<T: Transport> FfiTransport for Guarded<T> {
    fn consume(
        &self,
        queue: RStr<'_>,
        options: ConsumeOptions,
    ) -> RResult<ConsumerBox, PluginError> {
        self.open_consumer(queue.as_str(), options, None)
    }

    fn publish(&self, queue: RStr<'_>, messages: RSlice<'_, Message>) -> RResult<(), PluginError> {
        self.call("publishing", |t| {
            t.publish(queue.as_str(), messages.as_slice())
        })
    }

    fn ping(&self) -> RResult<(), PluginError> {
        self.call("connecting", |t| t.ping())
    }
}

impl<C: Consumer> FfiConsumer for Guarded<C> {
    fn receive(&self, max: u32, timeout_ms: u64) -> RResult<RVec<Delivery>, PluginError> {
        self.call("receiving", |c| {
            c.receive(max as usize, Duration::from_millis(timeout_ms))
                .map(RVec::from)
        })
    }

    fn ack(&self, tag: u64, multiple: bool) -> RResult<(), PluginError> {
        self.call("acknowledging", |c| c.ack(tag, multiple))
    }

    fn nack(&self, tag: u64, multiple: bool, requeue: bool) -> RResult<(), PluginError> {
        self.call("rejecting", |c| c.nack(tag, multiple, requeue))
    }

    fn close(&self) -> RResult<(), PluginError> {
        self.call("closing the consumer", |c| c.close())
    }
}

impl<P: Processor> FfiProcessor for Guarded<P> {
    fn process(&self, message: &Message) -> RResult<Change, PluginError> {
        self.call("processing a message", |p| p.process(message))
    }

    fn enrich(&self, message: &Message, applied: &Applied) -> RResult<Message, PluginError> {
        self.call("enriching a message", |p| p.enrich(message, applied))
    }
}

impl<D: Database> FfiDatabase for Guarded<D> {
    fn connect(&self) -> RResult<SessionBox, PluginError> {
        self.call("connecting", |d| {
            let session = d.connect()?;
            Ok(FfiSession_TO::from_value(
                Guarded::new(session, self.dispatch.clone()),
                TD_Opaque,
            ))
        })
    }

    fn key_columns(&self, table: RStr<'_>) -> RResult<RVec<RString>, PluginError> {
        self.call("reading key columns", |d| {
            Ok(d.key_columns(table.as_str())?
                .into_iter()
                .map(RString::from)
                .collect())
        })
    }
}

impl<S: Session> FfiSession for Guarded<S> {
    fn apply(
        &mut self,
        changes: RSlice<'_, Change>,
    ) -> RResult<RVec<RResult<Applied, PluginError>>, PluginError> {
        self.call_mut("applying a batch", |s| {
            Ok(s.apply(changes.as_slice())?
                .into_iter()
                .map(RResult::from)
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_symbol_is_the_one_abi_stable_looks_up() {
        assert_eq!(
            ROOT_MODULE_SYMBOL,
            abi_stable::library::ROOT_MODULE_LOADER_NAME
        );
    }

    #[test]
    fn crate_major_is_the_abi_major() {
        // abi_stable compares the package version of every type, so the two must move
        // together.
        let crate_major = env!("CARGO_PKG_VERSION").split('.').next().unwrap();
        let abi_major = crate::ABI_VERSION.split('.').next().unwrap();
        assert_eq!(crate_major, abi_major);
    }

    #[test]
    fn a_panic_becomes_an_error_naming_what_was_done() {
        install_panic_hook();
        let dispatch = Dispatch::none();
        let err = guard::<()>(&dispatch, "processing a message", || panic!("boom")).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Panic);
        assert!(err.message.contains("while processing a message"), "{err}");
        assert!(err.message.contains("boom"), "{err}");
        assert!(err.message.contains("sdk.rs"), "{err}");
    }

    /// Collects the events of one thread.
    #[derive(Clone, Default)]
    struct Events(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl Events {
        fn dispatch(&self) -> Dispatch {
            use tracing_subscriber::layer::SubscriberExt;
            Dispatch::new(tracing_subscriber::Registry::default().with(self.clone()))
        }
        fn taken(&self) -> Vec<String> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Events {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            struct Message<'a>(&'a mut String);
            impl tracing::field::Visit for Message<'_> {
                fn record_debug(&mut self, _: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                    use std::fmt::Write;
                    let _ = write!(self.0, "{value:?}");
                }
            }
            let mut text = String::new();
            event.record(&mut Message(&mut text));
            self.0.lock().unwrap().push(text);
        }
    }

    #[test]
    fn a_panic_the_plugin_catches_itself_is_logged_once() {
        install_panic_hook();
        let events = Events::default();
        let result = guard(&events.dispatch(), "applying a batch", || {
            let caught = catch_unwind(|| panic!("inner trouble"));
            assert!(caught.is_err());
            Ok(7)
        });
        assert_eq!(result, Ok(7));
        let logged = events.taken();
        assert_eq!(logged.len(), 1, "{logged:?}");
        assert!(logged[0].contains("caught inside the plugin while applying a batch"));
        assert!(logged[0].contains("inner trouble at"), "{logged:?}");
        assert!(logged[0].contains("sdk.rs"), "{logged:?}");
    }

    #[test]
    fn a_panic_that_ends_a_call_is_its_error_and_not_logged_again() {
        install_panic_hook();
        let events = Events::default();
        let err = guard::<()>(&events.dispatch(), "receiving", || {
            let _ = catch_unwind(|| panic!("first"));
            panic!("second")
        })
        .unwrap_err();
        assert!(err.message.contains("second at"), "{err}");
        let logged = events.taken();
        assert_eq!(logged.len(), 1, "{logged:?}");
        assert!(logged[0].contains("first at"), "{logged:?}");
    }

    #[test]
    fn a_panic_in_drop_is_logged() {
        struct Bomb;
        impl Drop for Bomb {
            fn drop(&mut self) {
                panic!("dropping went wrong");
            }
        }
        install_panic_hook();
        let events = Events::default();
        drop(Guarded::new(Bomb, events.dispatch()));
        let logged = events.taken();
        assert_eq!(logged.len(), 1, "{logged:?}");
        assert!(
            logged[0].contains("while dropping the plugin"),
            "{logged:?}"
        );
        assert!(logged[0].contains("dropping went wrong"), "{logged:?}");
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        url: String,
        #[serde(default)]
        prefetch: u32,
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = parse_config::<Sample>(r#"{"url": "x", "urll": 1}"#).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
        assert!(err.message.contains("urll"), "{err}");
        let err = parse_config::<Sample>(r#"{"prefetch": 1}"#).unwrap_err();
        assert!(err.message.contains("missing field `url`"), "{err}");
        let err = parse_config::<Sample>(r#"{"url": "x", "prefetch": "many"}"#).unwrap_err();
        assert!(err.message.contains("many"), "{err}");
        for shape in [r#"["x"]"#, "[]", "42", "null", r#""x""#] {
            let err = parse_config::<Sample>(shape).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Config);
            assert!(err.message.contains("must be a table of keys"), "{err}");
        }
    }
}

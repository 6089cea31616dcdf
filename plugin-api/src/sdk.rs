//! What plugin authors write against: ordinary Rust traits, and [`export_plugins!`], which
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
    sabi_trait::TD_Opaque,
    std_types::{RArc, RResult, RSlice, RStr, RString, RVec},
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
        Extension, ExtensionHeader, ExtensionList, HostServices, EXTENSIONS_MAGIC,
    },
    log::dispatch_for,
};

/// What every plugin declares about itself, and how it is built from its configuration.
pub trait Plugin: Sized + Send + Sync + 'static {
    /// The name configuration files use (`plugin = "amqp"`).
    const NAME: &'static str;
    /// The plugin's own version, usually `env!("CARGO_PKG_VERSION")`.
    const VERSION: &'static str;
    /// One line for `golconde plugins`.
    const DESCRIPTION: &'static str;

    /// The plugin's configuration section. Use `#[serde(deny_unknown_fields)]` so that a
    /// misspelt key is an error naming it.
    type Config: DeserializeOwned;

    /// Validates the configuration and builds the instance, without connecting to
    /// anything.
    fn new(config: Self::Config, host: &Host) -> Result<Self, PluginError>;
}

/// A queuing protocol. See [`crate::abi::FfiTransport`] for the contract of each method.
pub trait Transport: Plugin {
    type Consumer: Consumer;
    fn consume(&self, queue: &str, options: ConsumeOptions) -> Result<Self::Consumer, PluginError>;
    fn publish(&self, queue: &str, messages: &[Message]) -> Result<(), PluginError>;
    fn ping(&self) -> Result<(), PluginError>;
}

/// A subscription; see [`crate::abi::FfiConsumer`].
pub trait Consumer: Send + Sync + 'static {
    fn receive(&self, max: usize, timeout: Duration) -> Result<Vec<Delivery>, PluginError>;
    fn ack(&self, tag: u64, multiple: bool) -> Result<(), PluginError>;
    fn nack(&self, tag: u64, multiple: bool, requeue: bool) -> Result<(), PluginError>;
    fn close(&self) -> Result<(), PluginError> {
        Ok(())
    }
}

/// A message format; see [`crate::abi::FfiProcessor`].
pub trait Processor: Plugin {
    fn process(&self, message: &Message) -> Result<Change, PluginError>;

    /// By default the fan-out copy is the message itself.
    fn enrich(&self, message: &Message, _applied: &Applied) -> Result<Message, PluginError> {
        Ok(message.clone())
    }
}

/// A database; see [`crate::abi::FfiDatabase`].
pub trait Database: Plugin {
    type Session: Session;
    fn connect(&self) -> Result<Self::Session, PluginError>;
    fn key_columns(&self, table: &str) -> Result<Vec<String>, PluginError>;
}

/// One connection; see [`crate::abi::FfiSession`].
pub trait Session: Send + 'static {
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
    FfiTransport_TO::from_ptr(RArc::new(value), TD_Opaque)
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
    vec![Extension::new(
        T::NAME,
        "transport",
        &Tables::<T>::CONSTRUCT_TRANSPORT,
    )]
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
    vec![Extension::new(
        T::NAME,
        "database",
        &Tables::<T>::CONSTRUCT_DATABASE,
    )]
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
pub fn parse_config<C: DeserializeOwned>(json: &str) -> Result<C, PluginError> {
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| PluginError::config(format!("configuration is not valid JSON: {e}")))?;
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
                    "plugin thread `{}` panicked: {text}",
                    thread.name().unwrap_or("unnamed")
                );
            }
            IN_HOOK.with(|h| h.set(false));
        }));
    });
}

impl<T: Transport> FfiTransport for Guarded<T> {
    fn consume(
        &self,
        queue: RStr<'_>,
        options: ConsumeOptions,
    ) -> RResult<ConsumerBox, PluginError> {
        self.call("opening a consumer", |t| {
            let consumer = t.consume(queue.as_str(), options)?;
            Ok(FfiConsumer_TO::from_ptr(
                RArc::new(Guarded::new(consumer, self.dispatch.clone())),
                TD_Opaque,
            ))
        })
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
    }
}

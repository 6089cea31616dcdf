//! The log bridge: a plugin's `tracing` events reach the host's subscriber.
//!
//! A `cdylib` carries its own copy of `tracing`, with its own global dispatcher, so events a
//! plugin emits would otherwise go nowhere. The host hands every instance it builds a
//! [`LogSinkBox`]; on the plugin side the SDK wraps it in a `tracing` subscriber
//! ([`dispatch_for`]) that formats each event (span scope, message, fields) and calls the
//! sink with the event's own target, so the host can filter by it. The SDK runs every call
//! into an instance under that instance's dispatcher.
//!
//! Threads the library starts itself (a runtime's workers, a client's I/O thread) run under
//! the library's global default. A host of ABI 1.1 or later hands over a sink for them that
//! names the plugin and no instance, and a filter asked once per callsite, so that only what
//! the host will write is formatted ([`crate::ext::HostServices`]). With a 1.0 host the first
//! instance's dispatcher is the default, and its level the most verbose the host has.

// `#[sabi_trait]` expands to impls inside a const block.
#![allow(non_local_definitions)]

use std::{fmt::Write as _, sync::OnceLock};

use abi_stable::{
    sabi_trait,
    std_types::{RArc, RStr},
    StableAbi,
};
use tracing::{field::Field, level_filters::LevelFilter, Dispatch, Event, Level, Subscriber};

use crate::ext::{HostServices, LogFilterBox};
use tracing_subscriber::{
    layer::{Context, SubscriberExt},
    registry::LookupSpan,
    Layer, Registry,
};

/// A log level as it crosses the boundary.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Nothing.
    Off,
    /// Something failed.
    Error,
    /// Something is wrong but handled.
    Warn,
    /// What an operator wants to see.
    Info,
    /// What a developer wants to see.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The most verbose level `filter` lets through.
    pub fn from_filter(filter: LevelFilter) -> LogLevel {
        match filter.into_level() {
            None => LogLevel::Off,
            Some(level) => LogLevel::from_level(level),
        }
    }

    /// The same level as `tracing`'s.
    pub fn from_level(level: Level) -> LogLevel {
        match level {
            Level::ERROR => LogLevel::Error,
            Level::WARN => LogLevel::Warn,
            Level::INFO => LogLevel::Info,
            Level::DEBUG => LogLevel::Debug,
            Level::TRACE => LogLevel::Trace,
        }
    }

    /// A `tracing` filter letting this level and the more severe ones through.
    pub fn to_filter(self) -> LevelFilter {
        match self {
            LogLevel::Off => LevelFilter::OFF,
            LogLevel::Error => LevelFilter::ERROR,
            LogLevel::Warn => LevelFilter::WARN,
            LogLevel::Info => LevelFilter::INFO,
            LogLevel::Debug => LevelFilter::DEBUG,
            LogLevel::Trace => LevelFilter::TRACE,
        }
    }
}

/// One formatted event.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct LogRecord<'a> {
    /// How severe it is.
    pub level: LogLevel,
    /// The module path the event came from, inside the plugin.
    pub target: RStr<'a>,
    /// Span scope, message and fields, formatted as `span{a=1}: message b=2`.
    pub message: RStr<'a>,
}

/// Implemented by the host; called by plugins from any thread.
#[sabi_trait]
pub trait FfiLogSink: Send + Sync + Clone {
    /// The most verbose level the host wants; events above it are not even formatted.
    fn max_level(&self) -> LogLevel;

    #[sabi(last_prefix_field)]
    /// Writes one event.
    fn log(&self, record: &LogRecord<'_>);
}

/// The host's sink, as a plugin holds it.
pub type LogSinkBox = FfiLogSink_TO<'static, RArc<()>>;

/// A `tracing` dispatcher that forwards to `sink`, filtered by the host's `services` when
/// it offers them. The first one built in a library also sets the library's global
/// default (see the module's documentation).
pub fn dispatch_for(sink: &LogSinkBox, services: Option<&HostServices>) -> Dispatch {
    let filter = services.map(|s| s.log_filter.clone());
    let dispatch = forwarding(sink, filter.clone());
    static GLOBAL: OnceLock<()> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let global = match services {
            Some(services) => forwarding(&services.library_log, filter),
            None => dispatch.clone(),
        };
        // Fails only if the plugin author installed a subscriber of their own: theirs wins.
        let _ = tracing::dispatcher::set_global_default(global);
    });
    dispatch
}

fn forwarding(sink: &LogSinkBox, filter: Option<LogFilterBox>) -> Dispatch {
    Dispatch::new(Registry::default().with(Forwarder {
        sink: sink.clone(),
        max: sink.max_level().to_filter(),
        filter,
    }))
}

struct Forwarder {
    sink: LogSinkBox,
    /// The most verbose level the host writes for any target.
    max: LevelFilter,
    /// The host's filter by target, when it has given one.
    filter: Option<LogFilterBox>,
}

impl Forwarder {
    fn wanted(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= self.max
            && self.filter.as_ref().is_none_or(|filter| {
                filter.enabled(
                    LogLevel::from_level(*metadata.level()),
                    RStr::from_str(metadata.target()),
                )
            })
    }
}

/// The formatted fields of a span, kept in the registry's extensions.
struct SpanFields(String);

impl<S> Layer<S> for Forwarder
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        // Asked once per callsite: the host's filter does not change while it runs.
        if self.wanted(metadata) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn enabled(&self, metadata: &tracing::Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        self.wanted(metadata)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut fields = FieldWriter::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields.finish()));
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = FieldWriter::default();
        values.record(&mut fields);
        let mut extensions = span.extensions_mut();
        if let Some(SpanFields(existing)) = extensions.get_mut::<SpanFields>() {
            if !existing.is_empty() {
                existing.push(' ');
            }
            existing.push_str(&fields.finish());
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut text = String::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                text.push_str(span.name());
                if let Some(SpanFields(fields)) = span.extensions().get::<SpanFields>() {
                    if !fields.is_empty() {
                        let _ = write!(text, "{{{fields}}}");
                    }
                }
                text.push_str(": ");
            }
        }
        let mut fields = FieldWriter::default();
        event.record(&mut fields);
        text.push_str(&fields.finish());
        let metadata = event.metadata();
        self.sink.log(&LogRecord {
            level: LogLevel::from_level(*metadata.level()),
            target: RStr::from_str(metadata.target()),
            message: RStr::from_str(&text),
        });
    }
}

/// Formats the `message` field first, then the others as `name=value`.
#[derive(Default)]
struct FieldWriter {
    message: String,
    rest: String,
}

impl FieldWriter {
    fn finish(self) -> String {
        match (self.message.is_empty(), self.rest.is_empty()) {
            (_, true) => self.message,
            (true, false) => self.rest,
            (false, false) => format!("{} {}", self.message, self.rest),
        }
    }

    fn field(&mut self, field: &Field, value: std::fmt::Arguments<'_>) {
        if field.name() == "message" {
            let _ = self.message.write_fmt(value);
        } else {
            if !self.rest.is_empty() {
                self.rest.push(' ');
            }
            let _ = write!(self.rest, "{}={}", field.name(), value);
        }
    }
}

impl tracing::field::Visit for FieldWriter {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.field(field, format_args!("{value}"));
        } else {
            self.field(field, format_args!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.field(field, format_args!("{value:?}"));
    }
}

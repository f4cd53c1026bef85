//! The process's tracing: log lines (text or JSON) and, when an OTLP endpoint is configured, OpenTelemetry spans.
//!
//! Spans go to an OTLP/HTTP collector only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the standard variable; the
//! exporter also honours the other `OTEL_EXPORTER_OTLP_*` ones): off by default. With it, the W3C trace-context
//! propagator is installed, so a query's context travels in NATS headers from client to router to provider node
//! and one query is one trace across nodes (`switchyard_runtime::telemetry::inject_trace`).
//!
//! The spans of one query (`http_query`, `query`, `provider_call`) are at debug level: the log lines (filtered by
//! `RUST_LOG`, info by default) leave them out, so a node that exports nothing does not build them, which was about
//! a tenth of its CPU per query. The exporter has a filter of its own that takes every span of Switchyard's crates.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::cli::LogFormat;

/// Flushes and stops the span exporter when dropped (at the end of `main`).
pub struct OtelGuard(Option<SdkTracerProvider>);

impl Drop for OtelGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("switchyard: cannot flush the trace exporter: {error}");
        }
    }
}

/// Installs the global subscriber: `RUST_LOG` (else `default_level`) filters, lines go to stderr as `format`.
pub fn init(format: LogFormat, default_level: &str) -> OtelGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let filter = quiet_actor_spans(filter);
    let lines = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(std::io::stderr).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).boxed(),
    };
    let provider = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok().filter(|e| !e.is_empty()).and_then(|_| {
        match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
            Ok(exporter) => Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(Resource::builder().with_service_name("switchyard").build())
                    .build(),
            ),
            Err(error) => {
                eprintln!("switchyard: no trace export: {error}");
                None
            }
        }
    });
    let spans = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("switchyard")).with_filter(filter_fn(exported)));
    if provider.is_some() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    }
    // Not `.with(spans)` of an `Option`: an absent layer says it wants every callsite, which would make the
    // registry build every span the line filter lets through the level hint (ractor's info-level ones, above all).
    let lines = tracing_subscriber::registry().with(lines.with_filter(filter));
    match spans {
        Some(spans) => lines.with(spans).init(),
        None => lines.init(),
    }
    OtelGuard(provider)
}

/// ractor wraps every actor's message loop and every message in an info-level `Actor` span: entered and left on
/// each poll, and attached to each message sent from inside an actor, at about 2 % of a node's CPU per query. Our
/// own events name their actor (provider, router) themselves, so those spans are off unless `RUST_LOG` mentions
/// `ractor` (then it decides).
fn quiet_actor_spans(filter: EnvFilter) -> EnvFilter {
    let named = std::env::var("RUST_LOG").is_ok_and(|spec| spec.contains("ractor"));
    match ("ractor=warn".parse(), named) {
        (Ok(quiet), false) => filter.add_directive(quiet),
        _ => filter,
    }
}

/// What the span exporter takes: every span of Switchyard's crates (a query's spans are at debug level), and
/// events at info and above, which it attaches to their spans.
fn exported(metadata: &tracing::Metadata<'_>) -> bool {
    (metadata.is_span() && metadata.target().starts_with("switchyard")) || *metadata.level() <= tracing::Level::INFO
}

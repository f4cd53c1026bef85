//! One query is one trace across nodes (issue 9): the router's `query` span continues the client's trace context
//! from the NATS headers, and the provider node's `provider_call` span continues the router's, so a collector
//! sees client, router and provider node in one trace.
//!
//! Spans are exported in memory through the process's global subscriber, installed once for every test of this
//! binary; each test sends its own client trace id and looks only at the spans of that trace. On a node that
//! routes and hosts the provider, the call is handed to the provider actor in process (`node.local_calls`) or
//! published on NATS: the trace must be the same either way.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;

use switchyard_bus::{Bus, Message};
use switchyard_e2e::{Calls, ask, cluster_config, connect, local_and_over_nats, reply, unique_namespace};
use switchyard_mock::{MockConfig, MockServer};
use switchyard_protocol::client::QueryOutcome;
use switchyard_protocol::subjects::Subjects;
use switchyard_runtime::{Node, Role, SharedState};

local_and_over_nats!(one_query_is_one_trace_on_a_node_that_routes_and_hosts_the_provider);

/// The exporter and provider behind the process's global subscriber, installed by the first test that asks.
fn exporter() -> &'static (InMemorySpanExporter, SdkTracerProvider) {
    static TRACING: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();
    TRACING.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::set_global_default(subscriber).unwrap();
        (exporter, provider)
    })
}

/// Sends `solo` under the client's trace `client_trace` (span `client_span`).
async fn traced_query(namespace: &str, client_trace: &str, client_span: &str) {
    let mut message = Message::new(
        Subjects::new(namespace).query("solo"),
        Bytes::from(serde_json::to_vec(&ask("trace me")).unwrap()),
    );
    message.headers.push(("traceparent".into(), format!("00-{client_trace}-{client_span}-01")));
    let client = connect().await.unwrap();
    let answer = client.request(message, Duration::from_secs(10)).await.unwrap();
    let outcome: QueryOutcome = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(reply(outcome).provider, "primary");
}

/// The spans of trace `client_trace` once every node is stopped: the query continues the client's span, the
/// provider call continues the query.
fn check_one_trace(client_trace: &str, client_span: &str) {
    let (exporter, provider) = exporter();
    provider.force_flush().unwrap();
    let trace = TraceId::from_hex(client_trace).unwrap();
    let spans: Vec<SpanData> =
        exporter.get_finished_spans().unwrap().into_iter().filter(|s| s.span_context.trace_id() == trace).collect();
    let named =
        |name: &str| spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no {name} span in {spans:?}"));
    let query = named("query");
    let call = named("provider_call");
    assert_eq!(query.parent_span_id, SpanId::from_hex(client_span).unwrap(), "the router continues the client");
    assert_eq!(call.parent_span_id, query.span_context.span_id(), "the call is a child of the query");
}

async fn one_query_is_one_trace_on_a_node_that_routes_and_hosts_the_provider(path: Calls) {
    exporter();
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let namespace = unique_namespace();
    let config = path.apply(cluster_config(&mock, &namespace, "both-roles").unwrap());
    let node = Node::start(&config, connect().await.unwrap(), SharedState::default()).await.unwrap();
    let (client_trace, client_span) = match path {
        Calls::Local => ("5c0f1d3a2b4e4f6a8b9c0d1e2f3a4b5c", "1a2b3c4d5e6f7081"),
        Calls::OverNats => ("6d1e2f3a4b5c4d6e8f9a0b1c2d3e4f5a", "2b3c4d5e6f708192"),
    };
    traced_query(&namespace, client_trace, client_span).await;
    node.shutdown().await;
    check_one_trace(client_trace, client_span);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_query_is_one_trace_from_the_client_through_the_router_to_the_provider_node() {
    exporter();
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let namespace = unique_namespace();
    let mut router = cluster_config(&mock, &namespace, "router-node").unwrap();
    router.node.roles = vec![Role::Router];
    let mut providers = cluster_config(&mock, &namespace, "provider-node").unwrap();
    providers.node.roles = vec![Role::Providers];
    let provider_node = Node::start(&providers, connect().await.unwrap(), SharedState::default()).await.unwrap();
    let router_node = Node::start(&router, connect().await.unwrap(), SharedState::default()).await.unwrap();

    // The client's own trace: the router continues it, the provider node continues the router's.
    let (client_trace, client_span) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    traced_query(&namespace, client_trace, client_span).await;
    router_node.shutdown().await;
    provider_node.shutdown().await;
    check_one_trace(client_trace, client_span);
}

//! One query is one trace across nodes (issue 9): the router's `query` span continues the client's trace context
//! from the NATS headers, and the provider node's `provider_call` span continues the router's, so a collector
//! sees client, router and provider node in one trace.
//!
//! Spans are exported in memory; the test installs the process's global subscriber, so it is alone in its binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;

use switchyard_bus::{Bus, Message};
use switchyard_e2e::{ask, cluster_config, connect, reply, unique_namespace};
use switchyard_mock::{MockConfig, MockServer};
use switchyard_protocol::client::QueryOutcome;
use switchyard_protocol::subjects::Subjects;
use switchyard_runtime::{Node, Role, SharedState};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_query_is_one_trace_from_the_client_through_the_router_to_the_provider_node() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let namespace = unique_namespace();
    let mut router = cluster_config(&mock, &namespace, "router-node").unwrap();
    router.node.roles = vec![Role::Router];
    let mut providers = cluster_config(&mock, &namespace, "provider-node").unwrap();
    providers.node.roles = vec![Role::Providers];
    let provider_node = Node::start(&providers, connect().await.unwrap(), SharedState::default()).await.unwrap();
    let router_node = Node::start(&router, connect().await.unwrap(), SharedState::default()).await.unwrap();

    // The client's own trace: the router continues it.
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let mut message = Message::new(
        Subjects::new(&namespace).query("solo"),
        Bytes::from(serde_json::to_vec(&ask("trace me")).unwrap()),
    );
    message.headers.push(("traceparent".into(), format!("00-{client_trace}-{client_span}-01")));
    let client = connect().await.unwrap();
    let answer = client.request(message, Duration::from_secs(10)).await.unwrap();
    let outcome: QueryOutcome = serde_json::from_slice(&answer.payload).unwrap();
    assert_eq!(reply(outcome).provider, "primary");

    router_node.shutdown().await;
    provider_node.shutdown().await;
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let named =
        |name: &str| spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no {name} span in {spans:?}"));
    let query = named("query");
    let call = named("provider_call");
    let trace = TraceId::from_hex(client_trace).unwrap();
    assert_eq!(query.span_context.trace_id(), trace, "the router continues the client's trace");
    assert_eq!(query.parent_span_id, SpanId::from_hex(client_span).unwrap());
    assert_eq!(call.span_context.trace_id(), trace, "the provider node continues the router's trace");
    assert_eq!(call.parent_span_id, query.span_context.span_id(), "the call is a child of the query");
}

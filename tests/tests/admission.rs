//! End-to-end load shedding: past its admission bound a node answers `overloaded` with `retry_after_ms` before
//! it parses a query, and serves again once the load is gone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;

use switchyard_e2e::{PRIMARY_MODEL, TestCluster, ask};
use switchyard_mock::{Behavior, Latency};
use switchyard_protocol::client::{ErrorType, QueryOutcome};
use switchyard_testkit::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_bound_a_node_sheds_before_parsing_then_serves_again() {
    let cluster = TestCluster::start_with(1, &switchyard_testkit::redis_url(), |_, mut config| {
        config.node.max_in_flight_queries = 2;
        config
    })
    .await
    .unwrap();
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior { latency: Latency::Fixed { ms: 800 }, ..Behavior::default() });
    let requests = [ask("held 0"), ask("held 1")];
    let held = futures::future::join_all(requests.iter().map(|request| cluster.query("chat", request)));
    let shed = async {
        eventually("two queries are held", Duration::from_secs(5), || async {
            (cluster.mock.calls(PRIMARY_MODEL) >= 2).then_some(())
        })
        .await
        .unwrap();
        // Malformed JSON is refused as `overloaded`, not `malformed_json`: nothing was parsed.
        let malformed = cluster.query_raw("chat", Bytes::from_static(b"{not json")).await.unwrap();
        let valid = cluster.query("chat", &ask("one too many")).await.unwrap();
        (malformed, valid)
    };
    let (held, (malformed, valid)) = tokio::join!(held, shed);
    for outcome in [malformed, valid] {
        let QueryOutcome::Error(error) = outcome else { panic!("expected overloaded, got {outcome:?}") };
        assert_eq!(error.error.kind, ErrorType::Overloaded);
        assert!(error.error.retry_after_ms.is_some());
    }
    assert!(held.into_iter().all(|o| matches!(o, Ok(QueryOutcome::Reply(_)))));
    // The load is gone: the node parses again (a malformed query gets its own typed error) and answers.
    let malformed = cluster.query_raw("chat", Bytes::from_static(b"{not json")).await.unwrap();
    let QueryOutcome::Error(error) = malformed else { panic!("{malformed:?}") };
    assert_eq!(error.error.code, "malformed_json");
    cluster.mock.clear_behavior(PRIMARY_MODEL);
    assert!(matches!(cluster.query("chat", &ask("again")).await.unwrap(), QueryOutcome::Reply(_)));
    cluster.shutdown().await;
}

//! Beyond one NATS server (issue 9): a node configured with the three servers of a NATS cluster survives the death
//! of the server it is connected to, and a client that re-sends its queries by id loses none of them.
//!
//! Two kinds of retry cover the failover. The client library re-sends a copy (same id) when no reply comes, which
//! recovers a query that died with the server. Between the server's death and the node's re-subscription on
//! another server (a few milliseconds), NATS itself answers "no responders": the library reports that at once
//! (`ClientError::NoResponders`), and the caller sends the query again with its id, as a caller of a cluster
//! should.
//!
//! The test starts its own cluster on free ports (`switchyard_testkit::NatsCluster`) and kills one server of it;
//! the shared NATS is never touched.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use switchyard_bus::{Bus, NatsBus, NatsOptions};
use switchyard_client::{Client, ClientError, ClientOptions};
use switchyard_e2e::{PRIMARY_MODEL, SECONDARY_MODEL, ask, cluster_config, unique_namespace};
use switchyard_mock::{Behavior, Latency, MockConfig, MockServer};
use switchyard_protocol::subjects::Subjects;
use switchyard_runtime::{Node, SharedState};
use switchyard_testkit::{NatsCluster, eventually};

/// The client port of the server `bus` is connected to, if it is connected.
fn connected_port(bus: &NatsBus) -> Option<u16> {
    bus.connected_server().map(|server| server.port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_nats_server_of_a_node_loses_no_query_whose_client_re_sends_it() {
    let mut nats = NatsCluster::start().unwrap();
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    // Calls take a while, so queries are in flight on the node when its server dies.
    mock.set_behavior(PRIMARY_MODEL, Behavior { latency: Latency::Fixed { ms: 40 }, ..Behavior::default() });
    let namespace = unique_namespace();
    let mut config = cluster_config(&mock, &namespace, "node-1").unwrap();
    config.nats.urls = Some(nats.urls.clone());
    // The node connects the way `switchyard serve` does, from its `[nats] urls`.
    let node_bus = switchyard_runtime::nats::connect(&config.nats, "node-1").await.unwrap();
    let node = Node::start(&config, Arc::new(node_bus.clone()), SharedState::default()).await.unwrap();
    let doomed = connected_port(&node_bus).and_then(|port| nats.index_of(port)).expect("the node is on the cluster");

    // The client sits on the two other servers, so what is lost is lost on the node's side; it re-sends a query
    // (same id) every 100 ms or more until a copy is answered.
    let client_servers: Vec<String> =
        nats.urls.iter().enumerate().filter(|(i, _)| *i != doomed).map(|(_, url)| url.clone()).collect();
    let client_bus = NatsBus::connect(NatsOptions { servers: client_servers, ..NatsOptions::default() }).await.unwrap();
    let options = ClientOptions {
        resend_after: Duration::from_millis(100),
        max_resend_interval: Duration::from_millis(400),
        default_deadline: Duration::from_secs(15),
        ..ClientOptions::default()
    };
    let client = Client::new(Arc::new(client_bus) as Arc<dyn Bus>, Subjects::new(&namespace), options);

    // 120 queries with ids, 8 at a time; the node's server is killed once 30 are answered.
    let total = 120;
    let answered = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let no_responders = Arc::new(AtomicUsize::new(0));
    let traffic = {
        let (answered, sent, no_responders) = (answered.clone(), sent.clone(), no_responders.clone());
        let client = client.clone();
        tokio::spawn(async move {
            let lanes = (0..8).map(|lane| {
                let (answered, sent, no_responders, client) =
                    (answered.clone(), sent.clone(), no_responders.clone(), client.clone());
                async move {
                    let mut lost = Vec::new();
                    for i in (lane..total).step_by(8) {
                        let mut query = ask(&format!("q{i}"));
                        query.id = Some(format!("nats-failover-{i}"));
                        sent.fetch_add(1, Ordering::SeqCst);
                        // The caller's own retry: the same query, same id, again after "no responders".
                        let mut outcome = client.query("chat", query.clone()).await;
                        for _ in 0..50 {
                            if !matches!(outcome, Err(ClientError::NoResponders { .. })) {
                                break;
                            }
                            no_responders.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            outcome = client.query("chat", query.clone()).await;
                        }
                        match outcome {
                            Ok(reply) if reply.content == format!("echo: q{i}") => {
                                answered.fetch_add(1, Ordering::SeqCst);
                            }
                            other => lost.push((i, format!("{other:?}"))),
                        }
                    }
                    lost
                }
            });
            futures::future::join_all(lanes).await.concat()
        })
    };
    eventually("30 queries answered before the kill", Duration::from_secs(20), || async {
        (answered.load(Ordering::SeqCst) >= 30).then_some(())
    })
    .await
    .unwrap();
    let in_flight = sent.load(Ordering::SeqCst) - answered.load(Ordering::SeqCst);
    let killed_port = nats.port(doomed).unwrap();
    let killed_at = Instant::now();
    nats.kill(doomed);

    let new_port = eventually("the node reconnects to another server", Duration::from_secs(10), || async {
        connected_port(&node_bus).filter(|port| *port != killed_port)
    })
    .await
    .unwrap();
    eprintln!(
        "node moved from :{killed_port} to :{new_port} in {:?}, {in_flight} queries in flight",
        killed_at.elapsed()
    );

    let lost = traffic.await.unwrap();
    eprintln!("{} no-responders answers retried by the caller", no_responders.load(Ordering::SeqCst));
    assert!(lost.is_empty(), "queries lost: {lost:?}");
    assert_eq!(answered.load(Ordering::SeqCst), total);
    // For information: a provider call cut off with the server is run again by its router (maybe on the
    // fallback), so a few queries cost more than one upstream call.
    let calls = mock.calls(PRIMARY_MODEL) + mock.calls(SECONDARY_MODEL);
    eprintln!("{calls} upstream calls for {total} queries");
    assert!(in_flight > 0, "no query was in flight when the server died: the test proved nothing");
    assert!(nats.index_of(new_port).is_some_and(|index| index != doomed), "the node is on a surviving server");
    node.shutdown().await;
    mock.shutdown().await;
}

//! What only the NATS bus has: connecting, failing to connect, credentials kept out of errors,
//! and several connections (nodes) talking to each other through a real server.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests panic on failure")]

use std::time::{Duration, Instant};

use switchyard_bus::conformance::{WAIT, recv, unique_prefix};
use switchyard_bus::{Bus, BusError, Message, NatsAuth, NatsBus, NatsOptions};

fn nats_url() -> String {
    std::env::var("SWITCHYARD_NATS_URL").unwrap_or_else(|_| String::from("nats://127.0.0.1:4222"))
}

async fn connect(name: &str) -> NatsBus {
    let url = nats_url();
    let options = NatsOptions { name: Some(name.to_owned()), ..NatsOptions::new(url.clone()) };
    match NatsBus::connect(options).await {
        Ok(bus) => bus,
        Err(error) => panic!("these tests need a NATS server at {url}: {error}"),
    }
}

#[tokio::test]
async fn unreachable_server_fails_fast_without_leaking_credentials() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let options = NatsOptions {
        auth: NatsAuth::Token("token-SECRET".into()),
        ..NatsOptions::new("nats://alice:url-SECRET@127.0.0.1:1")
    };
    let started = Instant::now();
    let error = NatsBus::connect(options).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    match &error {
        BusError::Connect { servers, .. } => {
            assert_eq!(servers, "nats://alice:***@127.0.0.1:1");
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
    let printed = format!("{error} {error:?}");
    assert!(!printed.contains("SECRET"), "{printed}");
}

#[tokio::test]
async fn bad_options_are_rejected_before_connecting() {
    let error = NatsBus::connect(NatsOptions { servers: Vec::new(), ..NatsOptions::default() }).await.unwrap_err();
    assert!(matches!(error, BusError::Config { field: "servers", .. }), "{error:?}");

    let error = NatsBus::connect(NatsOptions {
        auth: NatsAuth::CredsFile("/nonexistent/switchyard.creds".into()),
        ..NatsOptions::new(nats_url())
    })
    .await
    .unwrap_err();
    assert!(matches!(error, BusError::Config { field: "auth.creds_file", .. }), "{error:?}");
}

#[tokio::test]
async fn exposes_the_client_and_the_server_limit() {
    let bus = connect("switchyard-bus-test-client").await;
    assert_eq!(bus.client().connection_state(), async_nats::connection::State::Connected);
    assert_eq!(bus.max_payload(), bus.client().server_info().max_payload);
    assert!(bus.max_payload() > 0);
    let inbox = bus.new_inbox();
    assert!(inbox.starts_with("_INBOX."), "{inbox}");
}

#[tokio::test]
async fn separate_connections_share_subjects_and_queue_groups() {
    let node_a = connect("node-a").await;
    let node_b = connect("node-b").await;
    let node_c = connect("node-c").await;
    let p = unique_prefix("nodes");

    // Events fan out to every node.
    let mut events_b = node_b.subscribe(&format!("{p}.events.>")).await.unwrap();
    let mut events_c = node_c.subscribe(&format!("{p}.events.>")).await.unwrap();
    node_a.publish(Message::new(format!("{p}.events.breaker.p1"), "open")).await.unwrap();
    assert_eq!(recv(&mut events_b).await.payload, "open");
    assert_eq!(recv(&mut events_c).await.payload, "open");

    // Calls go to one member of the queue group, whichever node hosts it.
    let service = format!("{p}.provider.p1.call");
    for (node, name) in [(&node_b, "b"), (&node_c, "c")] {
        let mut calls = node.queue_subscribe(&service, "p1").await.unwrap();
        let node = node.clone();
        tokio::spawn(async move {
            while let Some(call) = calls.next().await {
                if let Some(reply) = call.reply_with(name) {
                    node.publish(reply).await.unwrap();
                }
            }
        });
    }
    for _ in 0..20 {
        let reply = node_a.request(Message::new(service.clone(), "call"), WAIT).await.unwrap();
        assert!(reply.payload == "b" || reply.payload == "c", "{reply:?}");
    }
}

/// `async-nats` alone does not guarantee this: its subscribe returns before the server has the
/// subscription, so a message another connection publishes right away can be lost.
#[tokio::test]
async fn a_subscription_is_active_on_the_server_when_subscribe_returns() {
    let publisher = connect("publisher").await;
    let subscriber = connect("subscriber").await;
    for round in 0..50 {
        let subject = format!("{}.round", unique_prefix("active"));
        let mut subscription = subscriber.subscribe(&subject).await.unwrap();
        publisher.publish(Message::new(subject, format!("{round}"))).await.unwrap();
        assert_eq!(recv(&mut subscription).await.payload, format!("{round}"));
    }
}

/// Messages another connection published before the drain are all yielded.
#[tokio::test]
async fn drain_keeps_messages_from_other_connections() {
    let publisher = connect("publisher").await;
    let subscriber = connect("subscriber").await;
    let subject = format!("{}.d", unique_prefix("drain-remote"));
    let mut subscription = subscriber.subscribe(&subject).await.unwrap();
    for n in 0..500 {
        publisher.publish(Message::new(subject.clone(), format!("{n}"))).await.unwrap();
    }
    publisher.flush().await.unwrap();
    subscription.drain().await.unwrap();
    let received = switchyard_bus::conformance::recv_to_end(&mut subscription).await;
    assert_eq!(received.len(), 500);
    for (n, message) in received.iter().enumerate() {
        assert_eq!(message.payload, format!("{n}"));
    }
}

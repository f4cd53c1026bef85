//! The permissions NATS enforces for a Switchyard cluster, with the shipped `deploy/nats-accounts.conf` (what
//! `deploy/nats.conf` includes) loaded by a private `nats-server` on a free port.
//!
//! A refused publish is silent for the publisher, so each "cannot" is proven by a subscriber that holds every
//! right to the subject, receives nothing, and then does receive a control message published afterwards. Between
//! the two, a flush (a round trip through the server) guarantees the server has handled the refused publish.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;

use switchyard_bus::{Bus, Message, NatsAuth, NatsBus, NatsOptions, Subscription, request_many};
use switchyard_client::{Client, ClientOptions};
use switchyard_e2e::{PRIMARY_MODEL, ask, cluster_config};
use switchyard_mock::{Behavior, MockConfig, MockServer};
use switchyard_protocol::client::{QueryOutcome, StreamFrame};
use switchyard_protocol::subjects::Subjects;
use switchyard_runtime::{Node, SharedState};
use switchyard_testkit::{ServerProcess, eventually};

const PASSWORDS: [(&str, &str, &str); 3] = [
    ("node", "NODE_PASSWORD", "node-pw"),
    ("admin", "ADMIN_PASSWORD", "admin-pw"),
    ("client", "CLIENT_PASSWORD", "client-pw"),
];

/// A `nats-server` running the shipped accounts file (the listener is the test's own: no JetStream store shared with
/// a real server on 4222), killed when dropped.
struct SecuredNats {
    server: ServerProcess,
}

impl SecuredNats {
    fn start() -> SecuredNats {
        let deploy = switchyard_testkit::workspace_root().join("deploy");
        let shipped = std::fs::read_to_string(deploy.join("nats.conf")).unwrap();
        assert!(shipped.contains("include nats-accounts.conf"), "deploy/nats.conf must include the accounts file");
        let env: Vec<(&str, &str)> = PASSWORDS.iter().map(|(_, var, password)| (*var, *password)).collect();
        let server = ServerProcess::nats_with_config(&deploy.join("nats-accounts.conf"), &env).unwrap();
        SecuredNats { server }
    }

    async fn connect(&self, user: &str, inbox_prefix: Option<&str>) -> NatsBus {
        let password = PASSWORDS.iter().find(|(u, _, _)| *u == user).unwrap().2;
        let options = NatsOptions {
            auth: NatsAuth::UserPassword { user: user.into(), password: password.into() },
            inbox_prefix: inbox_prefix.map(str::to_owned),
            ..NatsOptions::new(format!("nats://127.0.0.1:{}", self.server.port))
        };
        NatsBus::connect(options).await.unwrap_or_else(|e| panic!("{user} cannot connect: {e}"))
    }

    async fn node(&self) -> NatsBus {
        self.connect("node", None).await
    }

    async fn admin(&self) -> NatsBus {
        self.connect("admin", Some("_INBOX_admin")).await
    }

    async fn client(&self) -> NatsBus {
        self.connect("client", Some("_INBOX_client")).await
    }
}

/// Publishes a control message through `controller` on `subject` and asserts that it is the first (and only)
/// thing `watcher` receives: whatever was refused before it never arrived.
async fn only_control_arrives(watcher: &mut Subscription, controller: &NatsBus, subject: &str) {
    controller.publish(Message::new(subject.to_owned(), "control")).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), watcher.next()).await.unwrap().unwrap();
    assert_eq!(
        (first.subject.as_str(), first.payload.as_ref()),
        (subject, b"control".as_ref()),
        "a refused message reached {}",
        watcher.subject()
    );
}

/// Asserts nothing is waiting on `subscription` once `bus` (its connection) has made a round trip to the server.
async fn nothing_arrived(bus: &NatsBus, subscription: &mut Subscription) {
    bus.flush().await.unwrap();
    if let Some(Some(message)) = subscription.next().now_or_never() {
        panic!("{} received {:?} on {}", subscription.subject(), message.payload, message.subject);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_publish_on_admin_events_or_anyone_elses_inbox() {
    let nats = SecuredNats::start();
    let (node, admin, client) = (nats.node().await, nats.admin().await, nats.client().await);
    let mut admin_topic = admin.subscribe("switchyard.v1.admin.>").await.unwrap();
    let mut events = admin.subscribe("switchyard.v1.events.>").await.unwrap();
    // Exact subjects: each bus's own round trips to the server go through its inbox prefix too.
    let mut admin_inbox = admin.subscribe("_INBOX_admin.x").await.unwrap();
    let mut node_inbox = node.subscribe("_INBOX.x").await.unwrap();
    let mut provider_calls = node.subscribe("switchyard.v1.provider.>").await.unwrap();

    for subject in [
        "switchyard.v1.admin.provider.primary.crash",
        "switchyard.v1.events.breaker.primary",
        "switchyard.v1.provider.primary.call",
        "_INBOX_admin.x",
        "_INBOX.x",
    ] {
        client.publish(Message::new(subject, "forged")).await.unwrap();
    }
    // The client's own round trip: the server has handled (and refused) everything above.
    client.flush().await.unwrap();

    only_control_arrives(&mut admin_topic, &admin, "switchyard.v1.admin.ctl").await;
    only_control_arrives(&mut events, &node, "switchyard.v1.events.ctl").await;
    only_control_arrives(&mut provider_calls, &node, "switchyard.v1.provider.ctl.call").await;
    only_control_arrives(&mut admin_inbox, &admin, "_INBOX_admin.x").await;
    only_control_arrives(&mut node_inbox, &node, "_INBOX.x").await;

    // Nor can a client read anyone else's replies or the cluster's subjects.
    for pattern in ["_INBOX.>", "_INBOX_admin.>", "switchyard.v1.events.>", "switchyard.v1.admin.>"] {
        if let Ok(mut spy) = client.subscribe(pattern).await {
            let subject = pattern.replace('>', "spied");
            let publisher = if pattern.starts_with("_INBOX.") || pattern.contains("events") { &node } else { &admin };
            publisher.publish(Message::new(subject, "private")).await.unwrap();
            publisher.flush().await.unwrap();
            nothing_arrived(&client, &mut spy).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_admin_user_publishes_on_the_admin_topic() {
    let nats = SecuredNats::start();
    let (node, admin) = (nats.node().await, nats.admin().await);
    let mut admin_topic = admin.subscribe("switchyard.v1.admin.>").await.unwrap();
    node.publish(Message::new("switchyard.v1.admin.provider.primary.crash", "from a node")).await.unwrap();
    node.flush().await.unwrap();
    only_control_arrives(&mut admin_topic, &admin, "switchyard.v1.admin.ctl").await;
}

/// Whatever a node does with a query's reply subject, its answer cannot land on admin or event subjects: a fake
/// node with the node user's rights answers every query it gets, even the malicious ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_aim_a_nodes_answer_at_admin_or_events() {
    let nats = SecuredNats::start();
    let (node, admin, client) = (nats.node().await, nats.admin().await, nats.client().await);
    let mut admin_topic = admin.subscribe("switchyard.v1.admin.>").await.unwrap();
    let mut events = admin.subscribe("switchyard.v1.events.>").await.unwrap();
    let mut queries = node.queue_subscribe("switchyard.v1.query.>", "switchyard-routers").await.unwrap();
    let legit_inbox = client.new_inbox();
    let mut answers = client.subscribe(&legit_inbox).await.unwrap();

    let replies = ["switchyard.v1.admin.provider.primary.crash", "switchyard.v1.events.breaker.primary", &legit_inbox];
    for reply in replies {
        client.publish(Message::new("switchyard.v1.query.chat", "{}").with_reply(reply)).await.unwrap();
    }
    let mut seen = Vec::new();
    for _ in replies {
        let query = tokio::time::timeout(Duration::from_secs(5), queries.next()).await.unwrap().unwrap();
        let reply = query.reply.expect("a query has a reply subject");
        node.publish(Message::new(reply.clone(), "answer")).await.unwrap();
        seen.push(reply);
    }
    node.flush().await.unwrap();

    // The control case: the legitimate reply subject got its answer, exactly one.
    let answer = tokio::time::timeout(Duration::from_secs(5), answers.next()).await.unwrap().unwrap();
    assert_eq!(answer.payload.as_ref(), b"answer");
    nothing_arrived(&client, &mut answers).await;
    // The malicious ones reached neither the admin topic nor the events.
    only_control_arrives(&mut admin_topic, &admin, "switchyard.v1.admin.ctl").await;
    only_control_arrives(&mut events, &node, "switchyard.v1.events.ctl").await;
    // Why: the server handed the node private reply subjects, never the ones the client named.
    assert!(seen.iter().all(|reply| reply.starts_with("_R_.")), "the node saw reply subjects {seen:?}");
}

/// A real node with the node user answers clients (plain and streamed) and operators, and a query whose reply
/// subject names the admin topic gets its answer nowhere near it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_node_serves_clients_and_operators_under_the_shipped_permissions() {
    let nats = SecuredNats::start();
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let config = cluster_config(&mock, "switchyard", "node-1").unwrap();
    let node_bus = nats.node().await;
    let node = Node::start(&config, Arc::new(node_bus.clone()), SharedState::default()).await.unwrap();
    let (admin, client) = (nats.admin().await, nats.client().await);
    let subjects = Subjects::default();
    let mut admin_topic = admin.subscribe("switchyard.v1.admin.>").await.unwrap();

    // A query aimed at the admin topic is answered (the mock is called), but the answer lands in the client's
    // account, not on the cluster's admin topic.
    let payload = Bytes::from(serde_json::to_vec(&ask("aimed at admin")).unwrap());
    let aimed = Message::new(subjects.query("chat"), payload).with_reply("switchyard.v1.admin.provider.primary.crash");
    client.publish(aimed).await.unwrap();

    // Legitimate queries get their answers, plain and streamed.
    let payload = Bytes::from(serde_json::to_vec(&ask("hello")).unwrap());
    let reply = client.request(Message::new(subjects.query("chat"), payload), Duration::from_secs(10)).await.unwrap();
    match serde_json::from_slice::<QueryOutcome>(&reply.payload).unwrap() {
        QueryOutcome::Reply(reply) => {
            assert_eq!((reply.provider.as_str(), reply.content.as_str()), ("primary", "echo: hello"))
        }
        QueryOutcome::Error(error) => panic!("the client got an error: {error:?}"),
    }
    let mut streamed = ask("one two three");
    streamed.stream = true;
    let payload = Bytes::from(serde_json::to_vec(&streamed).unwrap());
    let mut frames = request_many(&client, Message::new(subjects.query("chat"), payload)).await.unwrap();
    let mut chunks = 0;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), frames.next()).await.unwrap().unwrap();
        match serde_json::from_slice::<StreamFrame>(&frame.payload).unwrap() {
            StreamFrame::Chunk { .. } => chunks += 1,
            StreamFrame::Done { reply: done, .. } => {
                assert_eq!(done.provider, "primary");
                break;
            }
            StreamFrame::Error { error, .. } => panic!("the stream failed: {error:?}"),
        }
    }
    assert!(chunks >= 2, "a streamed answer arrives in chunks through the service import: {chunks}");

    // Operators reach the node on the admin topic and get its health back in their inbox.
    let health =
        switchyard_bus::gather(&admin, Message::new(subjects.admin_health(), Bytes::new()), Duration::from_secs(2), 1)
            .await
            .unwrap();
    assert_eq!(health.len(), 1, "the node answers the admin user");

    // The aimed query has been answered (the router counts three answers, none in flight), and the node's
    // connection has made a round trip since: its answer went wherever the server let it go.
    eventually("the node answered every query", Duration::from_secs(10), || async {
        let router = node.health().await.router?;
        (mock.calls(PRIMARY_MODEL) == 3 && router.answered >= 3 && router.in_flight == 0).then_some(())
    })
    .await
    .unwrap();
    node_bus.flush().await.unwrap();
    // The admin health request itself went over the admin topic: skip it, then only the control may follow.
    let first = tokio::time::timeout(Duration::from_secs(5), admin_topic.next()).await.unwrap().unwrap();
    assert_eq!(first.subject, subjects.admin_health());
    only_control_arrives(&mut admin_topic, &admin, "switchyard.v1.admin.ctl").await;
    node.shutdown().await;
    mock.shutdown().await;
}

/// A client that stops waiting for a query without an id cancels it: the query leaves the node and its provider
/// call ends, though the upstream hangs and every deadline and timeout is a minute away. So does a client in its
/// own account, whose queries cross a service import that rewrites their reply subject, and the node user, which
/// is what a door without the router role publishes its queries as.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cancels_the_query_it_stopped_waiting_for_from_either_account() {
    let nats = SecuredNats::start();
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let mut config = cluster_config(&mock, "switchyard", "node-1").unwrap();
    config.node.default_deadline_ms = 60_000;
    for provider in &mut config.providers {
        (provider.timeout_ms, provider.first_token_timeout_ms) = (60_000, 60_000);
    }
    let node = Node::start(&config, Arc::new(nats.node().await), SharedState::default()).await.unwrap();
    mock.set_behavior(PRIMARY_MODEL, Behavior::hanging());
    let options = ClientOptions { assign_ids: false, ..ClientOptions::default() };
    let client = Client::new(Arc::new(nats.client().await), Subjects::default(), options.clone());
    let door = Client::new(Arc::new(nats.node().await), Subjects::default(), options);

    for (who, client, stream) in [("client", &client, false), ("client", &client, true), ("node", &door, false)] {
        let calls = mock.calls(PRIMARY_MODEL);
        let asking = tokio::spawn({
            let client = client.clone();
            async move {
                match stream {
                    false => drop(client.query("chat", ask("never mind")).await),
                    true => {
                        let mut events = client.stream("chat", ask("never mind")).await.unwrap();
                        while events.next().await.is_some() {}
                    }
                }
            }
        });
        eventually("the query reached the provider", Duration::from_secs(10), || async {
            (mock.calls(PRIMARY_MODEL) == calls + 1).then_some(())
        })
        .await
        .unwrap();
        asking.abort();
        let _ = asking.await;
        eventually("the abandoned query left the node", Duration::from_secs(10), || async {
            let health = node.health().await;
            let idle = health.providers.iter().all(|p| p.in_flight == 0);
            (health.router?.in_flight == 0 && idle).then_some(())
        })
        .await
        .unwrap_or_else(|_| panic!("{who}, stream {stream}: the query runs on after its client gave up"));
    }
    node.shutdown().await;
    mock.shutdown().await;
}

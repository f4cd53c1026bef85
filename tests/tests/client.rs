//! End-to-end: the client library (`switchyard-client`) against a real node on the real NATS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use switchyard_client::{Client, ClientOptions, StreamEvent};
use switchyard_e2e::{PRIMARY_MODEL, SECONDARY_MODEL, TestCluster, ask};
use switchyard_mock::{Behavior, Latency, MockError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_library_queries_and_streams_through_a_node() {
    let cluster = TestCluster::start(1).await.unwrap();
    let client = Client::new(cluster.client.clone(), cluster.subjects.clone(), ClientOptions::default());

    let reply = client.query("chat", ask("hello there")).await.unwrap();
    assert_eq!(reply.content, "echo: hello there");
    assert_eq!(reply.provider, "primary");
    let id = reply.id.clone().expect("the client gave the query an id");
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "a uuid, got {id}");

    let text = "one two three four five six seven eight nine ten";
    let mut stream = client.stream("chat", ask(text)).await.unwrap();
    let (mut shown, mut deltas, mut done) = (String::new(), 0, None);
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            StreamEvent::Delta { text, .. } => {
                deltas += 1;
                shown.push_str(&text);
            }
            StreamEvent::Restart { attempt } => panic!("one attempt only, yet a restart to {attempt}"),
            StreamEvent::Done(end) => done = Some(end),
        }
    }
    let done = done.expect("the stream ends with Done");
    assert_eq!(shown, format!("echo: {text}"));
    assert_eq!(done.reply.content, shown);
    assert!(deltas >= 10, "deltas are emitted as chunks arrive, got {deltas}");

    // The same id again gets the kept answer, without an upstream call.
    let mut again = ask("hello there");
    again.id = Some(id.clone());
    assert_eq!(client.query("chat", again).await.unwrap().content, "echo: hello there");
    assert_eq!(cluster.mock.calls(PRIMARY_MODEL), 2);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_re_sent_while_the_answer_is_slow_cost_one_upstream_call_each() {
    let cluster = TestCluster::start(1).await.unwrap();
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior { latency: Latency::Fixed { ms: 1_500 }, ..Behavior::default() });
    // Re-send every 100 ms or more: the copies reach the node while the first one is being answered.
    let options = ClientOptions { resend_after: Duration::from_millis(100), ..ClientOptions::default() };
    let client = Client::new(cluster.client.clone(), cluster.subjects.clone(), options);
    let reply = client.query("chat", ask("slowly")).await.unwrap();
    assert_eq!(reply.content, "echo: slowly");
    assert_eq!(cluster.mock.calls(PRIMARY_MODEL), 1, "re-sent copies joined the first one's answer");
    let duplicates = cluster.nodes[0].health().await.router.map_or(0, |router| router.duplicates);
    assert!(duplicates >= 2, "the node saw the copies as duplicates, got {duplicates}");

    // A stream whose first frame is slower than the re-send interval (the secondary, which has no first-token
    // timeout, takes 1 s to its first chunk): copies until the first frame, one upstream call, and exactly the
    // answer's text (a copy's own final frame, if any, comes after the first and is ignored).
    cluster.mock.set_behavior(PRIMARY_MODEL, Behavior::failing(MockError::status(503)));
    cluster
        .mock
        .set_behavior(SECONDARY_MODEL, Behavior { latency: Latency::Fixed { ms: 1_000 }, ..Behavior::default() });
    let mut stream = client.stream("chat", ask("slow stream")).await.unwrap();
    let (mut shown, mut done) = (String::new(), None);
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            StreamEvent::Delta { text, .. } => shown.push_str(&text),
            StreamEvent::Restart { attempt } => panic!("one streaming attempt only, yet a restart to {attempt}"),
            StreamEvent::Done(end) => done = Some(end),
        }
    }
    let done = done.expect("the stream ends with Done");
    assert_eq!(shown, "echo: slow stream");
    assert_eq!(done.reply.content, shown);
    assert_eq!(done.reply.provider, "secondary");
    assert_eq!(cluster.mock.calls(SECONDARY_MODEL), 1, "one upstream call for the stream and its copies");
    let streamed = cluster.nodes[0].health().await.router.map_or(0, |router| router.duplicates) - duplicates;
    assert!(streamed >= 2, "the stream was re-sent until its first frame, got {streamed} copies");
    cluster.shutdown().await;
}

//! End-to-end: streams assembled per attempt by the client library, over the real NATS.
//!
//! A scripted fake node (a plain subscription on a query subject of a fresh namespace) publishes the frames of
//! two attempts interleaved and out of order, then a final frame naming the winner; the client must yield
//! exactly the winner's text, restarting if it had shown the loser's, or the typed gap error when chunks of the
//! winner never came. Then a real node streams through the client library.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;

use switchyard_bus::{Bus, Message};
use switchyard_client::{Client, ClientError, ClientOptions, StreamDone, StreamEvent};
use switchyard_e2e::{TestCluster, ask, connect, unique_namespace};
use switchyard_protocol::client::{QueryReply, StreamFrame};
use switchyard_protocol::subjects::Subjects;

const ROUTE: &str = "fake";

/// Chunks of attempt 1 (seq 0, 1, 2) and attempt 2 (seq 1, 0), interleaved: attempt 1 comes first, so the
/// client follows it, and attempt 2's chunks arrive out of order.
fn interleaved() -> Vec<StreamFrame> {
    let chunk = |attempt, seq, delta: &str| StreamFrame::Chunk { attempt, seq, delta: delta.into() };
    vec![chunk(1, 0, "loser "), chunk(2, 1, "answer"), chunk(1, 1, "text "), chunk(2, 0, "the "), chunk(1, 2, "here")]
}

fn reply(content: &str) -> QueryReply {
    QueryReply {
        id: None,
        content: content.into(),
        model: "fake-model".into(),
        provider: "fake".into(),
        finish_reason: Some("stop".into()),
        usage: Default::default(),
        cost_usd: 0.0,
        latency_ms: 1.0,
        logprobs: None,
        trace: Default::default(),
    }
}

/// Subscribes a fake node to `route` in a fresh namespace; it answers the first streaming query with `frames`
/// and ignores anything after it. Returns a client of that namespace that never re-sends.
async fn fake_node(frames: Vec<StreamFrame>) -> Client {
    let bus = connect().await.unwrap();
    let subjects = Subjects::new(&unique_namespace());
    let mut queries = bus.subscribe(&subjects.query(ROUTE)).await.unwrap();
    let node = bus.clone();
    tokio::spawn(async move {
        let Some(query) = queries.next().await else { return };
        let request: serde_json::Value = serde_json::from_slice(&query.payload).unwrap();
        assert_eq!(request["stream"], true, "the client asks for a stream");
        let reply_to = query.reply.expect("a query carries a reply subject");
        for frame in frames {
            let payload = Bytes::from(serde_json::to_vec(&frame).unwrap());
            node.publish(Message::new(reply_to.clone(), payload)).await.unwrap();
        }
    });
    let options = ClientOptions { resend_after: Duration::ZERO, ..ClientOptions::default() };
    Client::new(bus, subjects, options)
}

/// Every event of a stream up to its end, and the error that ended it, if any; fails if it hangs.
async fn drain(client: &Client, route: &str, text: &str) -> (Vec<StreamEvent>, Option<ClientError>) {
    let mut stream = client.stream(route, ask(text)).await.unwrap();
    let mut events = Vec::new();
    let read = async {
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => events.push(event),
                Err(error) => return Some(error),
            }
        }
        None
    };
    let error = tokio::time::timeout(Duration::from_secs(15), read).await.expect("the stream ends");
    (events, error)
}

/// The text a consumer shows at the end: the deltas after the last restart.
fn shown(events: &[StreamEvent]) -> String {
    let start = events.iter().rposition(|e| matches!(e, StreamEvent::Restart { .. })).map_or(0, |i| i + 1);
    events[start..]
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Delta { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

fn done(events: &[StreamEvent]) -> &StreamDone {
    let ends: Vec<_> = events.iter().filter(|e| matches!(e, StreamEvent::Done(_))).collect();
    assert_eq!(ends.len(), 1, "exactly one Done: {events:?}");
    match events.last() {
        Some(StreamEvent::Done(end)) => end,
        _ => panic!("the stream ends with Done: {events:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interleaved_attempts_yield_exactly_the_winners_text() {
    let mut frames = interleaved();
    frames.push(StreamFrame::Done { attempt: 2, chunks: 2, reply: reply("the answer") });
    let client = fake_node(frames).await;

    let (events, error) = drain(&client, ROUTE, "which attempt wins?").await;
    assert!(error.is_none(), "{error:?}");
    let end = done(&events);
    assert_eq!(end.attempt, 2);
    assert_eq!(end.text, "the answer");
    assert_eq!(end.reply.content, "the answer");
    assert_eq!(shown(&events), "the answer", "{events:?}");

    // Attempt 1 came first, so it was shown live, then dropped with a restart to attempt 2.
    let restart = events.iter().position(|e| *e == StreamEvent::Restart { attempt: 2 });
    let restart = restart.unwrap_or_else(|| panic!("a restart to attempt 2: {events:?}"));
    let before: Vec<_> = events[..restart].iter().collect();
    assert!(
        before.iter().all(|e| matches!(e, StreamEvent::Delta { attempt: 1, .. })),
        "only attempt 1 before the restart: {events:?}"
    );
    assert_eq!(shown(&events[..restart]), "loser text here", "attempt 1 was shown in seq order");
    assert!(
        events[restart + 1..].iter().all(|e| matches!(e, StreamEvent::Delta { attempt: 2, .. } | StreamEvent::Done(_))),
        "only attempt 2 after the restart: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_winner_with_missing_chunks_ends_with_the_typed_gap_error() {
    let mut frames = interleaved();
    // Attempt 2 says it published three chunks; seq 2 never comes.
    frames.push(StreamFrame::Done { attempt: 2, chunks: 3, reply: reply("the answer, whole") });
    let client = fake_node(frames).await;

    let (events, error) = drain(&client, ROUTE, "where is the rest?").await;
    assert!(!events.iter().any(|e| matches!(e, StreamEvent::Done(_))), "no Done after a gap: {events:?}");
    match error {
        Some(ClientError::Gap { attempt, expected, got, reply, .. }) => {
            assert_eq!((attempt, expected, got), (2, 3, 2));
            assert_eq!(reply.content, "the answer, whole", "the gap error carries the full text");
        }
        other => panic!("expected the gap error, got {other:?} after {events:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_node_streams_one_attempt_whose_text_is_the_answer() {
    let cluster = TestCluster::start(1).await.unwrap();
    let text = "alpha beta gamma delta epsilon zeta eta theta";

    // The frames as the node publishes them: every chunk belongs to the attempt the final frame names, with
    // sequence numbers 0..chunks.
    let frames = cluster.stream("chat", &ask(text)).await.unwrap();
    let Some(StreamFrame::Done { attempt, chunks, reply }) = frames.last() else {
        panic!("the stream ends with a done frame: {frames:?}");
    };
    let seqs: Vec<u64> = frames
        .iter()
        .filter_map(|frame| match frame {
            StreamFrame::Chunk { attempt: a, seq, .. } => {
                assert_eq!(a, attempt, "a chunk of another attempt than the winner: {frames:?}");
                Some(*seq)
            }
            _ => None,
        })
        .collect();
    assert_eq!(seqs, (0..*chunks).collect::<Vec<_>>(), "one node publishes its chunks in order");
    assert!(*chunks > 1, "the answer was streamed in chunks");
    assert_eq!(reply.content, format!("echo: {text}"));

    // The same through the client library.
    let client = Client::new(cluster.client.clone(), cluster.subjects.clone(), ClientOptions::default());
    let (events, error) = drain(&client, "chat", text).await;
    assert!(error.is_none(), "{error:?}");
    let end = done(&events);
    assert!(!events.iter().any(|e| matches!(e, StreamEvent::Restart { .. })), "one attempt, no restart: {events:?}");
    assert!(
        events.iter().all(|e| match e {
            StreamEvent::Delta { attempt, .. } => *attempt == end.attempt,
            _ => true,
        }),
        "every delta is of the attempt the final frame names: {events:?}"
    );
    assert_eq!(shown(&events), end.reply.content);
    assert_eq!(end.text, end.reply.content);
    assert_eq!(end.reply.content, format!("echo: {text}"));
    cluster.shutdown().await;
}

//! The client against a scripted fake node on the in-memory bus, in paused time.
//!
//! The fake node is a subscription on the query subject whose messages the test receives; the test answers them
//! (or not) by publishing to their reply subject, so every re-send, answer and chunk is placed by the script.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use switchyard_bus::{Bus, MemoryBus, Message};
use switchyard_protocol::ChatMessage;
use switchyard_protocol::client::{ErrorReply, ErrorType, QueryReply, QueryRequest, StreamFrame};
use switchyard_protocol::subjects::{CANCEL_HEADER, Subjects};

use crate::assemble::tests::reply;
use crate::{Client, ClientError, ClientOptions, StreamEvent};

struct Fake {
    bus: MemoryBus,
    /// Every copy of every query the fake node received, with when it came.
    copies: mpsc::UnboundedReceiver<(Instant, Message)>,
}

impl Fake {
    async fn start() -> (Fake, Client) {
        let bus = MemoryBus::new();
        let subjects = Subjects::new("test");
        let mut queries = bus.subscribe(&subjects.query("chat")).await.unwrap();
        let (tx, copies) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(message) = queries.next().await {
                let _ = tx.send((Instant::now(), message));
            }
        });
        let client = Client::new(Arc::new(bus.clone()), subjects, ClientOptions::default());
        (Fake { bus, copies }, client)
    }

    async fn copy(&mut self) -> (Instant, Message, QueryRequest) {
        let (at, message) = self.copies.recv().await.unwrap();
        let request = serde_json::from_slice(&message.payload).unwrap();
        (at, message, request)
    }

    async fn answer(&self, to: &Message, payload: impl serde::Serialize) {
        let bytes = serde_json::to_vec(&payload).unwrap();
        self.bus.publish(Message::new(to.reply.clone().unwrap(), bytes)).await.unwrap();
    }

    async fn chunk(&self, to: &Message, attempt: u32, seq: u64, delta: &str) {
        self.answer(to, StreamFrame::Chunk { attempt, seq, delta: delta.into() }).await;
    }

    async fn done(&self, to: &Message, attempt: u32, chunks: u64, content: &str) {
        self.answer(to, StreamFrame::Done { attempt, chunks, reply: reply(content) }).await;
    }
}

fn ask(text: &str) -> QueryRequest {
    QueryRequest::new(vec![ChatMessage::user(text)])
}

fn answered(id: &Option<String>, content: &str) -> QueryReply {
    QueryReply { id: id.clone(), ..reply(content) }
}

/// Every event of a stream up to its end, and the error that ended it, if any.
async fn drain(client: &Client, request: QueryRequest) -> (Vec<StreamEvent>, Option<ClientError>) {
    let mut stream = client.stream("chat", request).await.unwrap();
    let mut events = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => events.push(event),
            Err(error) => return (events, Some(error)),
        }
    }
    (events, None)
}

fn delta(attempt: u32, text: &str) -> StreamEvent {
    StreamEvent::Delta { attempt, text: text.into() }
}

fn done_text(event: Option<&StreamEvent>) -> Option<(u32, String, String)> {
    match event? {
        StreamEvent::Done(done) => Some((done.attempt, done.text.clone(), done.reply.content.clone())),
        _ => None,
    }
}

#[tokio::test(start_paused = true)]
async fn an_id_is_assigned_when_absent_and_kept_when_set() {
    let (mut fake, client) = Fake::start().await;
    let asking = tokio::spawn({
        let client = client.clone();
        async move { client.query("chat", ask("hi")).await }
    });
    let (_, message, request) = fake.copy().await;
    let id = request.id.clone().unwrap();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "a uuid, got {id}");
    assert_eq!(request.deadline_ms, Some(30_000), "the default deadline is sent");
    assert!(!request.stream);
    fake.answer(&message, answered(&request.id, "hello")).await;
    assert_eq!(asking.await.unwrap().unwrap().id.as_deref(), Some(id.as_str()));

    let mut mine = ask("hi");
    mine.id = Some("mine".into());
    mine.deadline_ms = Some(5_000);
    let asking = tokio::spawn({
        let client = client.clone();
        async move { client.query("chat", mine).await }
    });
    let (_, message, request) = fake.copy().await;
    assert_eq!(request.id.as_deref(), Some("mine"));
    assert_eq!(request.deadline_ms, Some(5_000));
    fake.answer(&message, answered(&request.id, "hello")).await;
    assert_eq!(asking.await.unwrap().unwrap().content, "hello");
}

#[tokio::test(start_paused = true)]
async fn without_assigned_ids_a_query_without_one_is_sent_once() {
    let (mut fake, client) = Fake::start().await;
    let options = ClientOptions { assign_ids: false, ..client.options().clone() };
    let client = Client::new(Arc::new(fake.bus.clone()), Subjects::new("test"), options);
    let asking = tokio::spawn({
        let client = client.clone();
        async move { client.query("chat", ask("hi")).await }
    });
    let (_, message, request) = fake.copy().await;
    assert_eq!(request.id, None, "no id is made up");
    // Far past every re-send interval, in paused time: no copy follows.
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(fake.copies.try_recv().is_err(), "a query without an id is never re-sent");
    fake.answer(&message, answered(&None, "hello")).await;
    assert_eq!(asking.await.unwrap().unwrap().content, "hello");
}

#[tokio::test(start_paused = true)]
async fn a_silent_query_is_resent_with_the_same_id_and_the_first_answer_wins() {
    let (mut fake, client) = Fake::start().await;
    let asking = tokio::spawn({
        let client = client.clone();
        async move { client.query("chat", ask("slow")).await }
    });
    let (first_at, first, request) = fake.copy().await;
    // The answer takes 10 s; meanwhile copies come at 2 s, then 4 s later (the interval doubles), all the same.
    let (second_at, second, _) = fake.copy().await;
    assert_eq!(second_at - first_at, Duration::from_secs(2));
    assert_eq!(second.payload, first.payload, "a copy is the same request, same id");
    assert_eq!(second.reply, first.reply, "all copies share one inbox");
    let (third_at, third, _) = fake.copy().await;
    assert_eq!(third_at - first_at, Duration::from_secs(6));
    assert_eq!(third.payload, first.payload);
    tokio::time::sleep_until(first_at + Duration::from_secs(10)).await;
    // The answer to a later copy wins; the late duplicate from the first copy is ignored.
    fake.answer(&third, answered(&request.id, "from the third copy")).await;
    fake.answer(&first, answered(&request.id, "from the first copy")).await;
    assert_eq!(asking.await.unwrap().unwrap().content, "from the third copy");
    assert!(fake.copies.try_recv().is_err(), "no copy after the answer");
}

#[tokio::test(start_paused = true)]
async fn a_refused_copy_waits_for_the_others_and_the_deadline_ends_the_wait() {
    let (mut fake, client) = Fake::start().await;
    let mut request = ask("x");
    request.deadline_ms = Some(5_000);
    let started = Instant::now();
    let asking = tokio::spawn({
        let client = client.clone();
        async move { client.query("chat", request).await }
    });
    let (_, first, _) = fake.copy().await;
    let (_, second, _) = fake.copy().await;
    // The second copy is refused by a busy node: the first may still be answered.
    let busy = ErrorReply::new(ErrorType::Overloaded, "overloaded", "busy");
    fake.answer(&second, &busy).await;
    drop(first);
    match asking.await.unwrap() {
        Err(ClientError::DeadlineExceeded { waited, .. }) => assert_eq!(waited, Duration::from_secs(6)),
        other => panic!("expected the deadline, got {other:?}"),
    }
    assert_eq!(started.elapsed(), Duration::from_secs(6), "deadline plus one second of slack");

    // A refusal of the only copy is the answer.
    let asking = tokio::spawn({
        let client = client.clone();
        async move { client.query("chat", ask("y")).await }
    });
    while let Ok((_, message)) = fake.copies.try_recv() {
        drop(message);
    }
    let (_, only, _) = fake.copy().await;
    fake.answer(&only, &busy).await;
    match asking.await.unwrap() {
        Err(ClientError::Server { reply }) => assert_eq!(reply.error.kind, ErrorType::Overloaded),
        other => panic!("expected overloaded, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn nobody_listening_is_no_responders_at_once() {
    let client = Client::new(Arc::new(MemoryBus::new()), Subjects::new("test"), ClientOptions::default());
    let started = Instant::now();
    assert!(matches!(client.query("chat", ask("x")).await, Err(ClientError::NoResponders { .. })));
    assert!(matches!(drain(&client, ask("x")).await.1, Some(ClientError::NoResponders { .. })));
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert!(matches!(client.query("a.b", ask("x")).await, Err(ClientError::InvalidRoute { .. })));
    let mut bad = ask("x");
    bad.temperature = Some(9.0);
    match client.query("chat", bad).await {
        Err(ClientError::InvalidRequest { reply }) => assert_eq!(reply.error.field.as_deref(), Some("temperature")),
        other => panic!("expected invalid_request, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn interleaved_attempts_deliver_exactly_the_winners_text() {
    let (mut fake, client) = Fake::start().await;
    let streaming = tokio::spawn(async move { drain(&client, ask("race")).await });
    let (_, copy, request) = fake.copy().await;
    assert!(request.stream);
    fake.chunk(&copy, 1, 0, "x0").await;
    fake.chunk(&copy, 2, 0, "y0").await;
    fake.chunk(&copy, 1, 1, "x1").await;
    fake.chunk(&copy, 2, 1, "y1").await;
    fake.chunk(&copy, 1, 2, "x2").await;
    fake.done(&copy, 2, 2, "y0y1").await;
    // A second final frame (another copy's) is ignored.
    fake.done(&copy, 1, 3, "x0x1x2").await;
    let (events, error) = streaming.await.unwrap();
    assert!(error.is_none(), "{error:?}");
    let restart = StreamEvent::Restart { attempt: 2 };
    assert_eq!(events[..6], [delta(1, "x0"), delta(1, "x1"), delta(1, "x2"), restart, delta(2, "y0"), delta(2, "y1")]);
    assert_eq!(done_text(events.get(6)), Some((2, "y0y1".into(), "y0y1".into())));
    assert_eq!(events.len(), 7);
}

#[tokio::test(start_paused = true)]
async fn out_of_order_chunks_are_delivered_in_order() {
    let (mut fake, client) = Fake::start().await;
    let streaming = tokio::spawn(async move { drain(&client, ask("order")).await });
    let (_, copy, _) = fake.copy().await;
    for (seq, text) in [(1, "b"), (0, "a"), (3, "d"), (2, "c")] {
        fake.chunk(&copy, 1, seq, text).await;
    }
    fake.done(&copy, 1, 4, "abcd").await;
    let (events, error) = streaming.await.unwrap();
    assert!(error.is_none(), "{error:?}");
    assert_eq!(events[..4], [delta(1, "a"), delta(1, "b"), delta(1, "c"), delta(1, "d")]);
    assert_eq!(done_text(events.get(4)), Some((1, "abcd".into(), "abcd".into())));
}

#[tokio::test(start_paused = true)]
async fn missing_chunks_are_a_gap_carrying_the_full_answer_unless_they_come_late() {
    let (mut fake, client) = Fake::start().await;
    let streaming = tokio::spawn({
        let client = client.clone();
        async move { drain(&client, ask("gap")).await }
    });
    let (_, copy, _) = fake.copy().await;
    fake.chunk(&copy, 1, 0, "a").await;
    fake.chunk(&copy, 1, 2, "c").await;
    fake.done(&copy, 1, 3, "abc").await;
    let (events, error) = streaming.await.unwrap();
    assert_eq!(events, [delta(1, "a")]);
    match error {
        Some(ClientError::Gap { attempt: 1, expected: 3, got: 2, reply, .. }) => assert_eq!(reply.content, "abc"),
        other => panic!("expected a gap, got {other:?}"),
    }

    // A chunk trailing the final frame within the grace fills the gap.
    let streaming = tokio::spawn(async move { drain(&client, ask("late")).await });
    let (_, copy, _) = fake.copy().await;
    fake.chunk(&copy, 1, 0, "a").await;
    fake.done(&copy, 1, 2, "ab").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    fake.chunk(&copy, 1, 1, "b").await;
    let (events, error) = streaming.await.unwrap();
    assert!(error.is_none(), "{error:?}");
    assert_eq!(events[..2], [delta(1, "a"), delta(1, "b")]);
    assert_eq!(done_text(events.get(2)), Some((1, "ab".into(), "ab".into())));
}

#[tokio::test(start_paused = true)]
async fn a_silent_stream_is_resent_until_its_first_frame() {
    let (mut fake, client) = Fake::start().await;
    let streaming = tokio::spawn(async move { drain(&client, ask("stream")).await });
    let (first_at, first, _) = fake.copy().await;
    let (second_at, second, _) = fake.copy().await;
    assert_eq!(second_at - first_at, Duration::from_secs(2));
    assert_eq!(second.payload, first.payload);
    // The node that got the copy says the id streams elsewhere: keep waiting for the original.
    let elsewhere = ErrorReply::new(ErrorType::InvalidRequest, "stream_in_progress_elsewhere", "streaming elsewhere");
    fake.answer(&second, StreamFrame::Error { attempt: 0, chunks: 0, error: elsewhere }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    fake.chunk(&first, 1, 0, "a").await;
    // No more copies once the stream has started, however long it takes.
    tokio::time::sleep(Duration::from_secs(20)).await;
    fake.chunk(&first, 1, 1, "b").await;
    fake.done(&first, 1, 2, "ab").await;
    let (events, error) = streaming.await.unwrap();
    assert!(error.is_none(), "{error:?}");
    assert_eq!(done_text(events.last()), Some((1, "ab".into(), "ab".into())));
    assert!(fake.copies.try_recv().is_err(), "no copy after the first frame");

    // A de-duplicated copy's answer comes as a final frame without chunks: delivered as one delta.
    let (mut fake, client) = Fake::start().await;
    let streaming = tokio::spawn(async move { drain(&client, ask("dup")).await });
    let (_, copy, _) = fake.copy().await;
    fake.done(&copy, 0, 0, "kept answer").await;
    let (events, _) = streaming.await.unwrap();
    assert_eq!(events[0], delta(0, "kept answer"));
    assert_eq!(done_text(events.get(1)), Some((0, "kept answer".into(), "kept answer".into())));
}

#[tokio::test(start_paused = true)]
async fn a_typed_error_ends_a_stream() {
    let (mut fake, client) = Fake::start().await;
    let streaming = tokio::spawn({
        let client = client.clone();
        async move { drain(&client, ask("fails")).await }
    });
    let (_, copy, _) = fake.copy().await;
    fake.chunk(&copy, 1, 0, "par").await;
    let cut = ErrorReply::new(ErrorType::UpstreamError, "stream_interrupted", "cut");
    fake.answer(&copy, StreamFrame::Error { attempt: 1, chunks: 1, error: cut }).await;
    let (events, error) = streaming.await.unwrap();
    assert_eq!(events, [delta(1, "par")]);
    match error {
        Some(ClientError::Server { reply }) => assert_eq!(reply.error.code, "stream_interrupted"),
        other => panic!("expected the typed error, got {other:?}"),
    }

    // The error can overtake the chunks published before it (they travel another way when the node answers in
    // process): the stream shows them, then ends with the error.
    let streaming = tokio::spawn({
        let client = client.clone();
        async move { drain(&client, ask("overtaken")).await }
    });
    let (_, copy, _) = fake.copy().await;
    let cut = ErrorReply::new(ErrorType::UpstreamError, "stream_interrupted", "cut");
    fake.answer(&copy, StreamFrame::Error { attempt: 1, chunks: 3, error: cut.clone() }).await;
    fake.chunk(&copy, 1, 0, "a").await;
    fake.chunk(&copy, 1, 2, "c").await;
    fake.chunk(&copy, 1, 1, "b").await;
    let (events, error) = streaming.await.unwrap();
    assert_eq!(events, [delta(1, "a"), delta(1, "b"), delta(1, "c")]);
    assert!(
        matches!(&error, Some(ClientError::Server { reply }) if reply.error.code == "stream_interrupted"),
        "{error:?}"
    );

    // Chunks that never come delay the error by the grace only.
    let streaming = tokio::spawn({
        let client = client.clone();
        async move { drain(&client, ask("lost")).await }
    });
    let (_, copy, _) = fake.copy().await;
    fake.chunk(&copy, 1, 0, "a").await;
    fake.answer(&copy, StreamFrame::Error { attempt: 1, chunks: 2, error: cut }).await;
    let (events, error) = streaming.await.unwrap();
    assert_eq!(events, [delta(1, "a")]);
    assert!(
        matches!(&error, Some(ClientError::Server { reply }) if reply.error.code == "stream_interrupted"),
        "{error:?}"
    );

    // A query refused before the node knew it streams gets a plain error, not a frame.
    let streaming = tokio::spawn(async move { drain(&client, ask("refused")).await });
    let (_, copy, _) = fake.copy().await;
    let unknown = ErrorReply::new(ErrorType::InvalidRequest, "unknown_route", "no such route");
    fake.answer(&copy, &unknown).await;
    match streaming.await.unwrap().1 {
        Some(ClientError::Server { reply }) => assert_eq!(reply.error.code, "unknown_route"),
        other => panic!("expected the typed error, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn only_a_keyless_query_dropped_before_its_end_is_cancelled() {
    let (mut fake, client) = Fake::start().await;
    let mut cancels = fake.bus.subscribe(&Subjects::new("test").query_cancel()).await.unwrap();
    let keyless = Client::new(
        Arc::new(fake.bus.clone()),
        Subjects::new("test"),
        ClientOptions { assign_ids: false, ..client.options().clone() },
    );
    let spawn = |client: &Client, stream: bool| {
        let client = client.clone();
        tokio::spawn(async move {
            if stream {
                let mut events = client.stream("chat", ask("hi")).await.unwrap();
                while events.next().await.is_some() {}
            } else {
                let _ = client.query("chat", ask("hi")).await;
            }
        })
    };

    // Over: answered, a stream that ended, one that failed. None of them cancels anything.
    let answered_query = spawn(&keyless, false);
    let (_, message, request) = fake.copy().await;
    fake.answer(&message, answered(&request.id, "hello")).await;
    answered_query.await.unwrap();
    let ended_stream = spawn(&keyless, true);
    let (_, message, _) = fake.copy().await;
    fake.done(&message, 1, 0, "hello").await;
    ended_stream.await.unwrap();
    let failed_stream = spawn(&keyless, true);
    let (_, message, _) = fake.copy().await;
    let error = ErrorReply::new(ErrorType::UpstreamError, "upstream_error", "every provider failed");
    fake.answer(&message, StreamFrame::Error { attempt: 1, chunks: 0, error }).await;
    failed_stream.await.unwrap();
    // With an id (assigned), dropped unanswered: it runs on for a retry.
    let keyed = spawn(&client, false);
    let (_, message, _) = fake.copy().await;
    assert_eq!(message.header(CANCEL_HEADER), None, "a query with an id carries no cancel token");
    keyed.abort();
    let _ = keyed.await;

    // Without an id, dropped unanswered, plain and streamed: each publishes its token on the cancel subject, and
    // these are the first cancellations heard.
    for stream in [false, true] {
        let waiting = spawn(&keyless, stream);
        let (_, message, _) = fake.copy().await;
        if stream {
            fake.chunk(&message, 1, 0, "hel").await;
        }
        waiting.abort();
        let _ = waiting.await;
        let token = message.header(CANCEL_HEADER).expect("a keyless query carries a cancel token");
        let cancel = cancels.next().await.unwrap();
        assert_eq!(cancel.payload.as_ref(), token.as_bytes(), "stream {stream}");
    }
}

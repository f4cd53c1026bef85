//! One conformance suite that every [`Bus`] implementation must pass.
//!
//! [`crate::MemoryBus`] stands in for NATS in the demo and in tests, which is only sound if it
//! behaves like NATS wherever a component could tell the difference. Each check here runs
//! against both, through [`bus_conformance_suite!`](crate::bus_conformance_suite) (after
//! quickwit's `metastore_test_suite!`):
//!
//! ```no_run
//! switchyard_bus::bus_conformance_suite!(memory, || async { switchyard_bus::MemoryBus::new() });
//! # fn main() {}
//! ```
//!
//! Every check takes a fresh bus and uses subjects under its own unique prefix, because the
//! NATS server may be shared by concurrent tests. A failed check panics, as a test should.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "conformance checks are test code: a failed expectation must panic"
)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::{Bus, BusError, Message, Subscription};

/// The longest any check waits for a message that should arrive.
pub const WAIT: Duration = Duration::from_secs(10);

/// Generates one `#[tokio::test]` per conformance check in a module named `$name`.
///
/// `$factory` is called as `$factory().await` once per test and may return any [`Bus`]
/// (including `Arc<dyn Bus>`). The calling crate needs `tokio` (with `macros` and
/// `rt-multi-thread`) and this crate's `testkit` feature.
#[macro_export]
macro_rules! bus_conformance_suite {
    ($name:ident, $factory:expr) => {
        $crate::__bus_conformance_tests!(
            $name,
            $factory,
            [
                publish_subscribe,
                wildcards,
                queue_groups,
                request_reply,
                no_responders,
                request_timeout,
                fifo_order,
                headers_round_trip,
                payload_too_large,
                drain,
                unsubscribe,
                concurrent_requests,
                invalid_input,
                inboxes,
                publish_with_reply_to_nobody,
            ]
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __bus_conformance_tests {
    ($name:ident, $factory:expr, [$($check:ident),* $(,)?]) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let bus: ::std::sync::Arc<dyn $crate::Bus> =
                        ::std::sync::Arc::new(($factory)().await);
                    $crate::conformance::$check(bus).await;
                }
            )*
        }
    };
}

/// A subject prefix no other test (in this or another process) uses.
pub fn unique_prefix(check: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_nanos()).unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("sytest.{}.{nanos}.{n}.{check}", std::process::id())
}

/// The next message, or a panic naming the subscription after [`WAIT`].
pub async fn recv(subscription: &mut Subscription) -> Message {
    match tokio::time::timeout(WAIT, subscription.next()).await {
        Ok(Some(message)) => message,
        Ok(None) => panic!("subscription {} ended unexpectedly", subscription.subject()),
        Err(_) => panic!("no message on {} within {WAIT:?}", subscription.subject()),
    }
}

/// Everything until the subscription ends; panics if it does not end within [`WAIT`].
pub async fn recv_to_end(subscription: &mut Subscription) -> Vec<Message> {
    let mut messages = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, subscription.next()).await {
            Ok(Some(message)) => messages.push(message),
            Ok(None) => return messages,
            Err(_) => panic!(
                "subscription {} did not end within {WAIT:?} ({} messages so far)",
                subscription.subject(),
                messages.len()
            ),
        }
    }
}

/// Messages until (not including) the first with payload `end`.
async fn recv_until_marker(subscription: &mut Subscription) -> Vec<String> {
    let mut subjects = Vec::new();
    loop {
        let message = recv(subscription).await;
        if message.payload == "end" {
            return subjects;
        }
        subjects.push(message.subject);
    }
}

/// Answers every request on `subject` (in queue group `queue`, if any) with the request's
/// payload followed by `suffix`, echoing its headers. Returns once subscribed.
async fn spawn_responder(bus: &Arc<dyn Bus>, subject: &str, queue: Option<&str>, suffix: &str) {
    let mut requests = match queue {
        Some(queue) => bus.queue_subscribe(subject, queue).await.unwrap(),
        None => bus.subscribe(subject).await.unwrap(),
    };
    let bus = Arc::clone(bus);
    let suffix = suffix.to_owned();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let mut payload = request.payload.to_vec();
            payload.extend_from_slice(suffix.as_bytes());
            if let Some(mut reply) = request.reply_with(payload) {
                reply.headers = request.headers.clone();
                bus.publish(reply).await.unwrap();
            }
        }
    });
}

/// A subscriber receives what is published to its subject, including its own client's
/// messages; publishing where nobody listens is not an error.
pub async fn publish_subscribe(bus: Arc<dyn Bus>) {
    let prefix = unique_prefix("pubsub");
    let subject = format!("{prefix}.greeting");
    bus.publish(Message::new(format!("{prefix}.nobody"), "lost")).await.unwrap();

    let mut subscription = bus.subscribe(&subject).await.unwrap();
    assert_eq!(subscription.subject(), subject);
    assert_eq!(subscription.queue(), None);
    bus.publish(Message::new(subject.clone(), "hello")).await.unwrap();
    bus.flush().await.unwrap();

    let message = recv(&mut subscription).await;
    assert_eq!(message.subject, subject);
    assert_eq!(message.payload, Bytes::from_static(b"hello"));
    assert_eq!(message.reply, None);
    assert!(message.headers.is_empty(), "{:?}", message.headers);
}

/// `*` matches exactly one token, `>` one or more trailing tokens, and nothing else matches.
pub async fn wildcards(bus: Arc<dyn Bus>) {
    let p = unique_prefix("wildcards");
    let patterns = [format!("{p}.*"), format!("{p}.>"), format!("{p}.a.*"), format!("{p}.*.c"), format!("{p}.a")];
    let mut subscriptions = Vec::new();
    for pattern in &patterns {
        subscriptions.push(bus.subscribe(pattern).await.unwrap());
    }

    let published =
        [format!("{p}.a"), format!("{p}.a.b"), format!("{p}.b.c"), format!("{p}.a.b.c"), format!("{p}x.a"), p.clone()];
    for subject in &published {
        bus.publish(Message::new(subject.clone(), "data")).await.unwrap();
    }
    // Markers: every subscription sees at least one, after everything published before it.
    for marker in [format!("{p}.a.c"), format!("{p}.a")] {
        bus.publish(Message::new(marker, "end")).await.unwrap();
    }
    bus.flush().await.unwrap();

    let s = |suffix: &str| format!("{p}{suffix}");
    let expected = [
        vec![s(".a")],
        vec![s(".a"), s(".a.b"), s(".b.c"), s(".a.b.c")],
        vec![s(".a.b")],
        vec![s(".b.c")],
        vec![s(".a")],
    ];
    for ((subscription, pattern), expected) in subscriptions.iter_mut().zip(&patterns).zip(expected) {
        let received = recv_until_marker(subscription).await;
        assert_eq!(received, expected, "pattern {pattern}");
    }
}

/// Each message goes to exactly one member of each queue group (groups are told apart by
/// name), and to every plain subscriber.
pub async fn queue_groups(bus: Arc<dyn Bus>) {
    let p = unique_prefix("queues");
    let subject = format!("{p}.job");
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(bus.queue_subscribe(&subject, "workers").await.unwrap());
    }
    assert_eq!(workers[0].queue(), Some("workers"));
    // Another group, one member of which subscribes through a wildcard.
    let mut auditors = vec![
        bus.queue_subscribe(&subject, "auditors").await.unwrap(),
        bus.queue_subscribe(&format!("{p}.*"), "auditors").await.unwrap(),
    ];
    let mut plain = bus.subscribe(&subject).await.unwrap();

    const COUNT: usize = 60;
    for n in 0..COUNT {
        bus.publish(Message::new(subject.clone(), n.to_string())).await.unwrap();
    }
    bus.flush().await.unwrap();
    for n in 0..COUNT {
        assert_eq!(recv(&mut plain).await.payload, n.to_string());
    }

    for (group, members) in [("workers", &mut workers), ("auditors", &mut auditors)] {
        let mut seen = Vec::new();
        for member in members.iter_mut() {
            member.drain().await.unwrap();
            let received = recv_to_end(member).await;
            assert!(!received.is_empty(), "a {group} member got nothing");
            seen.extend(received.into_iter().map(|message| message.payload));
        }
        seen.sort();
        let mut expected: Vec<Bytes> = (0..COUNT).map(|n| Bytes::from(n.to_string())).collect();
        expected.sort();
        assert_eq!(seen, expected, "group {group}: each message exactly once");
    }
}

/// A request reaches the responder with a reply subject and headers; its reply comes back.
pub async fn request_reply(bus: Arc<dyn Bus>) {
    let subject = format!("{}.svc", unique_prefix("request"));
    let mut requests = bus.subscribe(&subject).await.unwrap();
    let responder = Arc::clone(&bus);
    let handle = tokio::spawn(async move {
        let request = recv(&mut requests).await;
        let reply = request.reply_with("pong").expect("a request has a reply subject");
        responder.publish(reply).await.unwrap();
        request
    });

    let reply = bus
        .request(Message::new(subject.clone(), "ping").with_header("Trace-Id", "t-1").with_reply("ignored.reply"), WAIT)
        .await
        .unwrap();
    assert_eq!(reply.payload, Bytes::from_static(b"pong"));
    assert!(!reply.is_no_responders());

    let request = handle.await.unwrap();
    assert_eq!(request.subject, subject);
    assert_eq!(request.payload, Bytes::from_static(b"ping"));
    assert_eq!(request.header("Trace-Id"), Some("t-1"));
    let reply_subject = request.reply.expect("reply subject");
    assert_ne!(reply_subject, "ignored.reply", "request uses its own inbox");
    assert_eq!(reply.subject, reply_subject);
}

/// A request nobody is subscribed to fails at once with `NoResponders`, not a timeout.
pub async fn no_responders(bus: Arc<dyn Bus>) {
    let subject = format!("{}.nobody", unique_prefix("noresp"));
    let started = Instant::now();
    let error = bus.request(Message::new(subject.clone(), "anyone?"), WAIT).await.unwrap_err();
    assert!(started.elapsed() < WAIT / 2, "took {:?}", started.elapsed());
    assert!(error.is_transient());
    match error {
        BusError::NoResponders { subject: actual } => assert_eq!(actual, subject),
        other => panic!("expected NoResponders, got {other:?}"),
    }
}

/// A request whose subscriber never answers fails with `Timeout` after the timeout.
pub async fn request_timeout(bus: Arc<dyn Bus>) {
    let subject = format!("{}.silent", unique_prefix("timeout"));
    let _silent = bus.subscribe(&subject).await.unwrap();
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let error = bus.request(Message::new(subject.clone(), "hello?"), timeout).await.unwrap_err();
    let elapsed = started.elapsed();
    match error {
        BusError::Timeout { subject: actual, timeout: actual_timeout } => {
            assert_eq!(actual, subject);
            assert_eq!(actual_timeout, timeout);
        }
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(elapsed >= timeout, "gave up after {elapsed:?}");
    assert!(elapsed < WAIT, "took {elapsed:?}");
}

/// A thousand messages from one publisher arrive in the order they were published.
pub async fn fifo_order(bus: Arc<dyn Bus>) {
    let subject = format!("{}.seq", unique_prefix("fifo"));
    let mut subscription = bus.subscribe(&subject).await.unwrap();
    const COUNT: u32 = 1000;
    for n in 0..COUNT {
        bus.publish(Message::new(subject.clone(), n.to_be_bytes().to_vec())).await.unwrap();
    }
    bus.flush().await.unwrap();
    for n in 0..COUNT {
        let message = recv(&mut subscription).await;
        assert_eq!(message.payload.as_ref(), n.to_be_bytes(), "message {n}");
    }
}

/// Headers arrive as sent: repeated names keep their values in order; a message without
/// headers arrives without headers; headers survive a request/reply round trip.
pub async fn headers_round_trip(bus: Arc<dyn Bus>) {
    let p = unique_prefix("headers");
    let subject = format!("{p}.h");
    let mut subscription = bus.subscribe(&subject).await.unwrap();
    let sent = Message::new(subject.clone(), "{}")
        .with_header("Content-Type", "application/json")
        .with_header("traceparent", "00-abc-def-01")
        .with_header("Multi", "first")
        .with_header("Multi", "second")
        .with_header("Nats-Msg-Id", "id-1");
    bus.publish(sent.clone()).await.unwrap();
    bus.publish(Message::new(subject.clone(), "bare")).await.unwrap();

    let received = recv(&mut subscription).await;
    assert_eq!(received.header("Content-Type"), Some("application/json"));
    assert_eq!(received.header("traceparent"), Some("00-abc-def-01"));
    assert_eq!(received.header("Nats-Msg-Id"), Some("id-1"));
    assert_eq!(received.header_values("Multi").collect::<Vec<_>>(), ["first", "second"]);
    let mut sent_headers = sent.headers.clone();
    let mut received_headers = received.headers.clone();
    sent_headers.sort();
    received_headers.sort();
    assert_eq!(received_headers, sent_headers);
    assert_eq!(received.payload, sent.payload);

    let bare = recv(&mut subscription).await;
    assert!(bare.headers.is_empty(), "{:?}", bare.headers);

    let service = format!("{p}.echo");
    spawn_responder(&bus, &service, None, "").await;
    let reply = bus.request(Message::new(service, "x").with_header("Trace-Id", "t-9"), WAIT).await.unwrap();
    assert_eq!(reply.header("Trace-Id"), Some("t-9"));
}

/// Messages larger than `max_payload` (payload plus encoded headers) are refused with
/// `PayloadTooLarge`; a message of exactly `max_payload` goes through.
pub async fn payload_too_large(bus: Arc<dyn Bus>) {
    let subject = format!("{}.big", unique_prefix("payload"));
    let max = bus.max_payload();
    assert!(max >= 1024, "max_payload {max} is implausibly small");

    let expect_too_large = |result: Result<(), BusError>, size: usize| match result {
        Err(BusError::PayloadTooLarge { size: actual, max: actual_max }) => {
            assert_eq!(actual, size);
            assert_eq!(actual_max, max);
        }
        other => panic!("expected PayloadTooLarge for {size} bytes, got {other:?}"),
    };
    let too_big = Message::new(subject.clone(), vec![0u8; max + 1]);
    expect_too_large(bus.publish(too_big.clone()).await, max + 1);
    expect_too_large(bus.request(too_big, WAIT).await.map(drop), max + 1);

    let with_headers = Message::new(subject.clone(), vec![0u8; max - 8]).with_header("k", "v");
    let size = with_headers.wire_size();
    assert!(size > max);
    expect_too_large(bus.publish(with_headers).await, size);

    let mut subscription = bus.subscribe(&subject).await.unwrap();
    bus.publish(Message::new(subject.clone(), vec![7u8; max])).await.unwrap();
    bus.flush().await.unwrap();
    let received = recv(&mut subscription).await;
    assert_eq!(received.payload.len(), max);
}

/// After `drain`, new messages are not delivered, messages already delivered are still
/// yielded, and then the stream ends.
pub async fn drain(bus: Arc<dyn Bus>) {
    let subject = format!("{}.d", unique_prefix("drain"));
    let mut subscription = bus.subscribe(&subject).await.unwrap();
    for n in 0..3 {
        bus.publish(Message::new(subject.clone(), format!("before-{n}"))).await.unwrap();
    }
    bus.flush().await.unwrap();
    subscription.drain().await.unwrap();
    for n in 0..3 {
        bus.publish(Message::new(subject.clone(), format!("after-{n}"))).await.unwrap();
    }
    bus.flush().await.unwrap();

    let payloads: Vec<Bytes> =
        recv_to_end(&mut subscription).await.into_iter().map(|message| message.payload).collect();
    assert_eq!(payloads, ["before-0", "before-1", "before-2"]);
    assert!(subscription.next().await.is_none());
    subscription.drain().await.unwrap();
}

/// After `unsubscribe` the stream ends at once, pending messages are dropped, and the
/// subject has no responders any more.
pub async fn unsubscribe(bus: Arc<dyn Bus>) {
    let subject = format!("{}.u", unique_prefix("unsub"));
    let mut subscription = bus.subscribe(&subject).await.unwrap();
    bus.publish(Message::new(subject.clone(), "pending")).await.unwrap();
    bus.flush().await.unwrap();
    subscription.unsubscribe().await.unwrap();
    assert!(subscription.next().await.is_none());
    subscription.unsubscribe().await.unwrap();

    let error = bus.request(Message::new(subject.clone(), "anyone?"), WAIT).await.unwrap_err();
    assert!(matches!(error, BusError::NoResponders { .. }), "expected NoResponders, got {error:?}");

    // Dropping a subscription unsubscribes too.
    let dropped = bus.subscribe(&subject).await.unwrap();
    drop(dropped);
    bus.flush().await.unwrap();
    let error = bus.request(Message::new(subject, "anyone?"), WAIT).await.unwrap_err();
    assert!(matches!(error, BusError::NoResponders { .. }), "expected NoResponders after drop, got {error:?}");
}

/// Two hundred concurrent requests to a queue group of responders each get their own answer.
pub async fn concurrent_requests(bus: Arc<dyn Bus>) {
    let subject = format!("{}.svc", unique_prefix("concurrent"));
    for _ in 0..3 {
        spawn_responder(&bus, &subject, Some("responders"), "-ok").await;
    }
    let requests = (0..200).map(|n| {
        let bus = Arc::clone(&bus);
        let subject = subject.clone();
        async move {
            let reply = bus.request(Message::new(subject, format!("q{n}")), WAIT).await.unwrap();
            (n, reply)
        }
    });
    let replies = futures::future::join_all(requests).await;
    let mut answered = BTreeSet::new();
    for (n, reply) in replies {
        assert_eq!(reply.payload, format!("q{n}-ok"));
        answered.insert(n);
    }
    assert_eq!(answered.len(), 200);
}

/// Malformed subjects, queue names and headers are refused with typed errors on every bus.
pub async fn invalid_input(bus: Arc<dyn Bus>) {
    let p = unique_prefix("invalid");
    for subject in [String::new(), format!("{p}..x"), format!("{p}.*"), format!("{p}.>"), format!("{p} x")] {
        let result = bus.publish(Message::new(subject.clone(), "x")).await;
        assert!(matches!(result, Err(BusError::InvalidSubject { .. })), "publish to {subject:?}: {result:?}");
    }
    let result = bus.publish(Message::new(format!("{p}.ok"), "x").with_reply(format!("{p}.*"))).await;
    assert!(matches!(result, Err(BusError::InvalidSubject { .. })), "{result:?}");

    for pattern in [String::new(), format!("{p}.>.x"), format!("{p}."), format!("{p} x")] {
        let result = bus.subscribe(&pattern).await;
        assert!(matches!(result, Err(BusError::InvalidSubject { .. })), "subscribe to {pattern:?}: {result:?}");
    }
    for queue in ["", "two words"] {
        let result = bus.queue_subscribe(&format!("{p}.q"), queue).await;
        assert!(matches!(result, Err(BusError::InvalidQueue { .. })), "queue {queue:?}: {result:?}");
    }
    for (name, value) in [("bad:name", "v"), ("", "v"), ("bad name", "v"), ("k", "line\r\nbreak")] {
        let result = bus.publish(Message::new(format!("{p}.h"), "x").with_header(name, value)).await;
        assert!(matches!(result, Err(BusError::InvalidHeader { .. })), "header {name:?}: {value:?}: {result:?}");
    }
    let result = bus.request(Message::new(format!("{p}.r"), "x").with_header("a:b", "v"), WAIT).await;
    assert!(matches!(result, Err(BusError::InvalidHeader { .. })), "{result:?}");
}

/// Inboxes are unique valid subjects; a reply published to an inbox reaches a subscription
/// on it (request/reply by hand, as streaming replies do).
pub async fn inboxes(bus: Arc<dyn Bus>) {
    let first = bus.new_inbox();
    let second = bus.new_inbox();
    assert_ne!(first, second);
    assert!(crate::subject::is_valid_subject(&first), "{first}");

    let subject = format!("{}.stream", unique_prefix("inbox"));
    let mut requests = bus.subscribe(&subject).await.unwrap();
    let mut inbox = bus.subscribe(&first).await.unwrap();
    bus.publish(Message::new(subject, "go").with_reply(first.clone())).await.unwrap();
    let request = recv(&mut requests).await;
    assert_eq!(request.reply.as_deref(), Some(first.as_str()));
    for chunk in ["one", "two", "three"] {
        bus.publish(request.reply_with(chunk).unwrap()).await.unwrap();
    }
    for chunk in ["one", "two", "three"] {
        let message = recv(&mut inbox).await;
        assert_eq!(message.subject, first);
        assert_eq!(message.payload, chunk);
    }
}

/// A message published with a reply subject that reaches nobody makes the bus send a
/// no-responders status message to the reply subject, as NATS does.
pub async fn publish_with_reply_to_nobody(bus: Arc<dyn Bus>) {
    let subject = format!("{}.nobody", unique_prefix("status"));
    let inbox = bus.new_inbox();
    let mut replies = bus.subscribe(&inbox).await.unwrap();
    bus.publish(Message::new(subject, "hello?").with_reply(inbox.clone())).await.unwrap();
    let status = recv(&mut replies).await;
    assert_eq!(status.subject, inbox);
    assert!(status.is_no_responders(), "{status:?}");
    assert!(status.payload.is_empty());
}

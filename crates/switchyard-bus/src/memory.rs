//! An in-process bus with NATS semantics, for the embedded demo and for tests.
//!
//! `switchyard demo` runs several nodes in one process with no server, and unit tests need a
//! bus that is fast and deterministic; both use [`MemoryBus`]. It behaves like core NATS where a
//! component could notice: subject wildcards, queue groups (one member per group per message,
//! round-robin), request/reply through inboxes, a no-responders status message when a message
//! with a reply subject reaches nobody, a payload limit, FIFO order per publisher and
//! subscriber, and drain. The conformance suite checks this against a real server.
//!
//! The "server" is a registry of subscriptions behind one `RwLock`: literal subjects in a hash
//! map, wildcard patterns in a list. Publishing takes the read lock and pushes into each
//! matching subscriber's unbounded channel, so publishers never wait on subscribers and the
//! order of a publisher's messages is kept. Subscriptions remove themselves when dropped,
//! drained or unsubscribed; a subscriber found gone while publishing is pruned.
//!
//! Unlike a NATS server, the in-memory bus never cuts off a slow subscriber: its channel grows
//! until it catches up. That suits the demo and tests, not untrusted load.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use crate::message::{STATUS_HEADER, STATUS_NO_RESPONDERS};
use crate::subject::{self, is_valid_pattern, is_valid_queue};
use crate::{Bus, BusError, Message, Subscription, SubscriptionBackend};

/// The default payload limit of a [`MemoryBus`], the same as a NATS server's default: 1 MiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;

/// A client of an in-process bus.
///
/// [`MemoryBus::new`] creates a bus; every clone is another client of the same bus, so nodes in
/// one process share messages by each taking a clone. Each client has its own id, used in its
/// inbox names (`_INBOX.<client>.<n>`).
pub struct MemoryBus {
    server: Arc<Server>,
    client_id: u64,
}

impl MemoryBus {
    /// A new, empty bus with the default payload limit.
    pub fn new() -> Self {
        Self::with_max_payload(DEFAULT_MAX_PAYLOAD)
    }

    /// A new, empty bus accepting messages up to `max_payload` bytes (see
    /// [`Message::wire_size`]).
    pub fn with_max_payload(max_payload: usize) -> Self {
        let server = Arc::new(Server {
            registry: RwLock::new(Registry::default()),
            max_payload,
            next_client: AtomicU64::new(1),
            next_sid: AtomicU64::new(1),
            next_inbox: AtomicU64::new(1),
        });
        let client_id = server.next_client.fetch_add(1, Ordering::Relaxed);
        MemoryBus { server, client_id }
    }

    /// This client's id, unique on its bus.
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// How many subscriptions the bus holds, all clients together (request inboxes included).
    pub fn subscription_count(&self) -> usize {
        self.server.read().len()
    }

    fn register(&self, pattern: &str, queue: Option<&str>) -> (u64, UnboundedReceiver<Message>) {
        let sid = self.server.next_sid.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = mpsc::unbounded_channel();
        self.server.write().insert(Entry { sid, pattern: pattern.to_owned(), queue: queue.map(str::to_owned), sender });
        (sid, receiver)
    }

    async fn subscribe_inner(&self, pattern: &str, queue: Option<&str>) -> Result<Subscription, BusError> {
        if !is_valid_pattern(pattern) {
            return Err(BusError::InvalidSubject { subject: pattern.to_owned() });
        }
        if let Some(queue) = queue
            && !is_valid_queue(queue)
        {
            return Err(BusError::InvalidQueue { queue: queue.to_owned() });
        }
        let (sid, receiver) = self.register(pattern, queue);
        let backend = MemorySubscription {
            receiver,
            registration: Some(Registration { server: Arc::clone(&self.server), sid, pattern: pattern.to_owned() }),
        };
        Ok(Subscription::new(pattern, queue.map(str::to_owned), backend))
    }
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

/// A clone is a new client (with its own id) of the same bus.
impl Clone for MemoryBus {
    fn clone(&self) -> Self {
        MemoryBus {
            server: Arc::clone(&self.server),
            client_id: self.server.next_client.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBus")
            .field("client_id", &self.client_id)
            .field("max_payload", &self.server.max_payload)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, message: Message) -> Result<(), BusError> {
        message.validate_outgoing(self.server.max_payload)?;
        self.server.route(message);
        Ok(())
    }

    async fn request(&self, message: Message, timeout: Duration) -> Result<Message, BusError> {
        let inbox = self.new_inbox();
        let message = message.with_reply(inbox.clone());
        message.validate_outgoing(self.server.max_payload)?;
        let subject = message.subject.clone();

        let (sid, mut receiver) = self.register(&inbox, None);
        // Removes the inbox however this future ends, including when the caller drops it.
        let _registration = Registration { server: Arc::clone(&self.server), sid, pattern: inbox };
        self.server.route(message);

        match tokio::time::timeout(timeout, receiver.recv()).await {
            Ok(Some(reply)) if reply.is_no_responders() => Err(BusError::NoResponders { subject }),
            Ok(Some(reply)) => Ok(reply),
            Ok(None) => Err(BusError::Closed),
            Err(_elapsed) => Err(BusError::Timeout { subject, timeout }),
        }
    }

    async fn subscribe(&self, subject: &str) -> Result<Subscription, BusError> {
        self.subscribe_inner(subject, None).await
    }

    async fn queue_subscribe(&self, subject: &str, queue: &str) -> Result<Subscription, BusError> {
        self.subscribe_inner(subject, Some(queue)).await
    }

    fn new_inbox(&self) -> String {
        let n = self.server.next_inbox.fetch_add(1, Ordering::Relaxed);
        format!("_INBOX.{}.{n}", self.client_id)
    }

    async fn flush(&self) -> Result<(), BusError> {
        // Delivery into subscriber channels is synchronous: nothing is ever buffered here.
        Ok(())
    }

    fn max_payload(&self) -> usize {
        self.server.max_payload
    }
}

/// The shared state of one in-process bus.
struct Server {
    registry: RwLock<Registry>,
    max_payload: usize,
    next_client: AtomicU64,
    next_sid: AtomicU64,
    next_inbox: AtomicU64,
}

impl Server {
    // Nothing panics while holding the lock, but a poisoned registry is still consistent: every
    // mutation is a single insert or removal.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn remove(&self, sid: u64, pattern: &str) {
        self.write().remove(sid, pattern);
    }

    /// Delivers `message` to every matching plain subscriber and to one member of each matching
    /// queue group. When it reaches nobody and has a reply subject, a no-responders status
    /// message goes to the reply subject, as NATS does.
    fn route(&self, message: Message) {
        let mut dead: Vec<(u64, String)> = Vec::new();
        let delivered = {
            let registry = self.read();
            let mut delivered = 0usize;
            // Queue members grouped by queue name; allocated only when a queue group matches.
            let mut groups: Vec<(&str, Vec<&Entry>)> = Vec::new();
            for entry in registry.matching(&message.subject) {
                match entry.queue.as_deref() {
                    None => {
                        if entry.sender.send(message.clone()).is_ok() {
                            delivered += 1;
                        } else {
                            dead.push((entry.sid, entry.pattern.clone()));
                        }
                    }
                    Some(queue) => match groups.iter_mut().find(|(name, _)| *name == queue) {
                        Some((_, members)) => members.push(entry),
                        None => groups.push((queue, vec![entry])),
                    },
                }
            }
            for (queue, members) in &groups {
                let start = registry.next_in_turn(queue);
                // Try members in turn from the chosen one until a live one takes the message.
                for offset in 0..members.len() {
                    let member = members[(start + offset) % members.len()];
                    if member.sender.send(message.clone()).is_ok() {
                        delivered += 1;
                        break;
                    }
                    dead.push((member.sid, member.pattern.clone()));
                }
            }
            delivered
        };

        if !dead.is_empty() {
            let mut registry = self.write();
            for (sid, pattern) in &dead {
                registry.remove(*sid, pattern);
            }
        }

        if delivered == 0
            && let Some(reply) = message.reply
        {
            self.route(Message::new(reply, Bytes::new()).with_header(STATUS_HEADER, STATUS_NO_RESPONDERS.to_string()));
        }
    }
}

/// All subscriptions of one bus.
#[derive(Default)]
struct Registry {
    /// Subscriptions without wildcards, by subject: found by one hash lookup.
    literal: HashMap<String, Vec<Entry>>,
    /// Subscriptions with wildcards: matched one by one.
    wildcard: Vec<Entry>,
    /// Round-robin position of each queue group, by name. Kept when a group empties: there are
    /// few queue names and a returning group resumes where it was.
    queue_turns: HashMap<String, AtomicUsize>,
}

struct Entry {
    sid: u64,
    pattern: String,
    queue: Option<String>,
    sender: UnboundedSender<Message>,
}

impl Registry {
    fn insert(&mut self, entry: Entry) {
        if let Some(queue) = &entry.queue
            && !self.queue_turns.contains_key(queue)
        {
            self.queue_turns.insert(queue.clone(), AtomicUsize::new(0));
        }
        if subject::is_literal(&entry.pattern) {
            self.literal.entry(entry.pattern.clone()).or_default().push(entry);
        } else {
            self.wildcard.push(entry);
        }
    }

    /// Removes subscription `sid`; dropping its sender ends its stream once it is read out.
    fn remove(&mut self, sid: u64, pattern: &str) {
        if subject::is_literal(pattern) {
            if let Some(entries) = self.literal.get_mut(pattern) {
                entries.retain(|entry| entry.sid != sid);
                if entries.is_empty() {
                    self.literal.remove(pattern);
                }
            }
        } else {
            self.wildcard.retain(|entry| entry.sid != sid);
        }
    }

    /// Subscriptions whose pattern matches `subject`, literal ones first, each in the order
    /// they subscribed.
    fn matching<'a>(&'a self, subject: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.literal
            .get(subject)
            .into_iter()
            .flatten()
            .chain(self.wildcard.iter().filter(move |entry| subject::matches(&entry.pattern, subject)))
    }

    /// The member index to try first for the next message of queue group `queue`.
    fn next_in_turn(&self, queue: &str) -> usize {
        self.queue_turns.get(queue).map_or(0, |turn| turn.fetch_add(1, Ordering::Relaxed))
    }

    fn len(&self) -> usize {
        self.literal.values().map(Vec::len).sum::<usize>() + self.wildcard.len()
    }
}

/// A subscription's place in the registry; removing it (on drop at the latest) stops delivery.
struct Registration {
    server: Arc<Server>,
    sid: u64,
    pattern: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.server.remove(self.sid, &self.pattern);
    }
}

/// The [`SubscriptionBackend`] of a [`MemoryBus`] subscription.
struct MemorySubscription {
    receiver: UnboundedReceiver<Message>,
    /// `None` once drained or unsubscribed.
    registration: Option<Registration>,
}

impl Stream for MemorySubscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.receiver.poll_recv(cx)
    }
}

#[async_trait::async_trait]
impl SubscriptionBackend for MemorySubscription {
    async fn drain(&mut self) -> Result<(), BusError> {
        // Removing the registration drops the only sender: buffered messages remain readable,
        // then the channel reports its end.
        self.registration = None;
        Ok(())
    }

    async fn unsubscribe(&mut self) -> Result<(), BusError> {
        self.registration = None;
        self.receiver.close();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clones_share_the_bus_with_distinct_identities() {
        let node_a = MemoryBus::new();
        let node_b = node_a.clone();
        assert_ne!(node_a.client_id(), node_b.client_id());
        assert!(node_a.new_inbox().starts_with(&format!("_INBOX.{}.", node_a.client_id())));
        assert_ne!(node_a.new_inbox(), node_b.new_inbox());

        let mut subscription = node_b.subscribe("events.>").await.unwrap();
        node_a.publish(Message::new("events.breaker.p1", "open")).await.unwrap();
        let message = subscription.next().await.unwrap();
        assert_eq!(message.subject, "events.breaker.p1");
        assert_eq!(message.payload, Bytes::from_static(b"open"));
    }

    #[tokio::test]
    async fn separate_buses_are_isolated() {
        let bus_a = MemoryBus::new();
        let bus_b = MemoryBus::new();
        let mut subscription = bus_b.subscribe("x").await.unwrap();
        bus_a.publish(Message::new("x", "1")).await.unwrap();
        bus_b.publish(Message::new("x", "2")).await.unwrap();
        assert_eq!(subscription.next().await.unwrap().payload, "2");
    }

    #[tokio::test]
    async fn subscriptions_leave_the_registry() {
        let bus = MemoryBus::new();
        let first = bus.subscribe("a.*").await.unwrap();
        let mut second = bus.subscribe("a.b").await.unwrap();
        let mut third = bus.queue_subscribe("a.b", "q").await.unwrap();
        assert_eq!(bus.subscription_count(), 3);

        drop(first);
        assert_eq!(bus.subscription_count(), 2);
        second.unsubscribe().await.unwrap();
        assert_eq!(bus.subscription_count(), 1);
        third.drain().await.unwrap();
        assert_eq!(bus.subscription_count(), 0);
    }

    #[tokio::test]
    async fn requests_remove_their_inbox() {
        let bus = MemoryBus::new();
        let responder = bus.clone();
        let mut service = responder.subscribe("svc").await.unwrap();
        tokio::spawn(async move {
            while let Some(request) = service.next().await {
                if let Some(reply) = request.reply_with("pong") {
                    let _ = responder.publish(reply).await;
                }
            }
        });
        let reply = bus.request(Message::new("svc", "ping"), Duration::from_secs(5)).await.unwrap();
        assert_eq!(reply.payload, "pong");
        assert_eq!(bus.subscription_count(), 1);

        let error = bus.request(Message::new("nobody", "ping"), Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(error, BusError::NoResponders { .. }), "{error:?}");
        assert_eq!(bus.subscription_count(), 1);
    }

    #[tokio::test]
    async fn dead_queue_members_are_skipped_and_pruned() {
        let bus = MemoryBus::new();
        let mut live = bus.queue_subscribe("work", "q").await.unwrap();
        // A member whose receiver is gone but whose registration was never removed.
        let (sid, receiver) = bus.register("work", Some("q"));
        drop(receiver);
        assert_eq!(bus.subscription_count(), 2);

        for n in 0..4 {
            bus.publish(Message::new("work", format!("{n}"))).await.unwrap();
        }
        for n in 0..4 {
            assert_eq!(live.next().await.unwrap().payload, format!("{n}"));
        }
        assert_eq!(bus.subscription_count(), 1, "sid {sid} should be pruned");
    }

    #[tokio::test]
    async fn queue_groups_round_robin() {
        let bus = MemoryBus::new();
        let mut members = Vec::new();
        for _ in 0..3 {
            members.push(bus.queue_subscribe("rr", "q").await.unwrap());
        }
        for n in 0..30 {
            bus.publish(Message::new("rr", format!("{n}"))).await.unwrap();
        }
        for member in &mut members {
            member.drain().await.unwrap();
            let mut count = 0;
            while member.next().await.is_some() {
                count += 1;
            }
            assert_eq!(count, 10);
        }
    }
}

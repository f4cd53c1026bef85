//! Many replies to one message: streams of frames and scatter-gather.
//!
//! `Bus::request` waits for exactly one answer. A streaming query answers with many frames, and an admin question
//! sent to the whole cluster with one answer per node; both publish with a fresh inbox as the reply subject and
//! read that inbox. These two helpers are that pattern, once.

use std::time::Duration;

use crate::{Bus, BusError, Message, Subscription};

/// Publishes `message` with a fresh inbox as its reply subject and returns the inbox's subscription.
///
/// The subscription is registered before the message leaves, so no reply is missed. A reply carrying the
/// no-responders status ([`Message::is_no_responders`]) means nobody listened to the subject.
pub async fn request_many(bus: &dyn Bus, message: Message) -> Result<Subscription, BusError> {
    let inbox = bus.new_inbox();
    let replies = bus.subscribe(&inbox).await?;
    bus.publish(message.with_reply(inbox)).await?;
    Ok(replies)
}

/// Scatter-gather: every reply that arrives within `wait`, up to `max` of them.
///
/// Stops early when `max` replies arrived or the bus reports that nobody listens to the subject.
pub async fn gather(bus: &dyn Bus, message: Message, wait: Duration, max: usize) -> Result<Vec<Message>, BusError> {
    let mut replies = request_many(bus, message).await?;
    let until = tokio::time::Instant::now() + wait;
    let mut out = Vec::new();
    while out.len() < max {
        match tokio::time::timeout_at(until, replies.next()).await {
            Ok(Some(reply)) if !reply.is_no_responders() => out.push(reply),
            _ => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryBus;
    use bytes::Bytes;

    #[tokio::test]
    async fn gather_collects_one_reply_per_listener_and_stops_at_max() {
        let bus = MemoryBus::new();
        for i in 0..3u8 {
            let node = bus.clone();
            let mut sub = node.subscribe("ask.all").await.unwrap();
            tokio::spawn(async move {
                while let Some(message) = sub.next().await {
                    if let Some(reply) = message.reply_with(Bytes::from(vec![i])) {
                        let _ = node.publish(reply).await;
                    }
                }
            });
        }
        let all =
            gather(&bus, Message::new("ask.all", Bytes::new()), Duration::from_secs(2), usize::MAX).await.unwrap();
        let mut ids: Vec<u8> = all.iter().map(|m| m.payload[0]).collect();
        ids.sort();
        assert_eq!(ids, vec![0, 1, 2]);
        let two = gather(&bus, Message::new("ask.all", Bytes::new()), Duration::from_secs(2), 2).await.unwrap();
        assert_eq!(two.len(), 2);
    }

    #[tokio::test]
    async fn gather_ends_at_once_when_nobody_listens() {
        let bus = MemoryBus::new();
        let started = std::time::Instant::now();
        let none = gather(&bus, Message::new("nobody.here", Bytes::new()), Duration::from_secs(5), 10).await.unwrap();
        assert!(none.is_empty());
        assert!(started.elapsed() < Duration::from_secs(2), "no-responders must end the wait early");
    }
}

//! Noticing that the node running a provider call died.
//!
//! A router sends a call to whichever node of the provider's queue group takes it, then waits for the answer.
//! If that node dies mid-call (a crash, `SIGKILL`, a cut cable), no answer ever comes, and without more the
//! query would wait for the provider's own timeout or the client's deadline. So every call carries a
//! [`Keepalive`]: the node running it publishes a [`Heartbeat`] to its router's heartbeat inbox every
//! `every` after the call started, until it ends. Calls shorter than `every` (most, and every call of the load
//! benchmark) send nothing, so the hot path pays only a map insert and remove.
//!
//! The router's [`Liveness`] keeps the last heartbeat of each call that sent one; a call's first sign of life is
//! its start, which the caller holds. A call silent for [`Liveness::lost_after`] (three periods) is lost: the query
//! tries the provider on another node, then goes on down its chain, and the trace says `lost`. A lost call is not
//! the provider's failure: nothing is charged to its breaker. Calls shorter than one period never touch the shared
//! map (no heartbeat can exist for them), so the hot path takes no lock for them; entries of calls that ended are
//! removed by their caller, and any left behind by a race are pruned after two silent periods.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::task::AbortOnDropHandle;
use tracing::debug;
use uuid::Uuid;

use switchyard_bus::{Bus, Message, Subscription};
use switchyard_protocol::internal::{Heartbeat, Keepalive};
use switchyard_protocol::{Bincode, Codec};

/// The last sign of life of one call.
#[derive(Debug, Clone)]
pub struct Sign {
    pub at: Instant,
    /// The node running the call, once a heartbeat said so.
    pub node: Option<String>,
}

/// The calls a router node waits for, and when each last showed life.
#[derive(Debug)]
pub struct Liveness {
    keepalive: Keepalive,
    every: Duration,
    calls: Mutex<HashMap<Uuid, Sign>>,
}

impl Liveness {
    /// Heartbeats every `every` to `inbox` (which the caller subscribes to and hands to [`Liveness::listen`]).
    pub fn new(inbox: String, every: Duration) -> Liveness {
        let every = every.max(Duration::from_millis(1));
        let keepalive = Keepalive { subject: inbox, every_ms: every.as_millis() as u64 };
        Liveness { keepalive, every, calls: Mutex::default() }
    }

    /// What a call carries so that the node running it sends heartbeats here.
    pub fn keepalive(&self) -> Keepalive {
        self.keepalive.clone()
    }

    /// How long a call may stay silent before it is lost: three heartbeat periods.
    pub fn lost_after(&self) -> Duration {
        self.every * 3
    }

    /// Stops waiting for `call_id`, sent at `started` (answered, cancelled or lost).
    pub fn forget(&self, call_id: &Uuid, started: Instant) {
        if started.elapsed() >= self.every {
            self.lock().remove(call_id);
        }
    }

    /// The last sign of life of `call_id`, sent at `started`: its last heartbeat, or its start.
    pub fn last_sign(&self, call_id: &Uuid, started: Instant) -> Sign {
        let start = Sign { at: started, node: None };
        if started.elapsed() < self.every {
            return start;
        }
        self.lock().get(call_id).filter(|sign| sign.at >= started).cloned().unwrap_or(start)
    }

    /// Takes in one heartbeat.
    pub fn beat(&self, heartbeat: Heartbeat) {
        let sign = Sign { at: Instant::now(), node: Some(heartbeat.node) };
        self.lock().insert(heartbeat.call_id, sign);
    }

    /// Drops the entries of calls silent for two lost periods at `now`: ended calls a race left behind.
    fn prune(&self, now: Instant) {
        let stale = self.lost_after() * 2;
        self.lock().retain(|_, sign| now.saturating_duration_since(sign.at) < stale);
    }

    /// Takes in the heartbeats arriving on the inbox, until the subscription ends.
    pub async fn listen(self: Arc<Self>, mut heartbeats: Subscription) {
        let mut prune = tokio::time::interval(self.lost_after());
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = heartbeats.next() => match message {
                    Some(message) => match Bincode::decode::<Heartbeat>(&message.payload) {
                        Ok(heartbeat) => self.beat(heartbeat),
                        Err(error) => debug!(%error, "ignoring a malformed heartbeat"),
                    },
                    None => return,
                },
                _ = prune.tick() => self.prune(Instant::now()),
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Sign>> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Publishes the call's [`Heartbeat`] every `keepalive.every_ms` after its start, until dropped.
pub fn heartbeats(bus: Arc<dyn Bus>, keepalive: Keepalive, call_id: Uuid, node: String) -> AbortOnDropHandle<()> {
    let every = Duration::from_millis(keepalive.every_ms.max(1));
    AbortOnDropHandle::new(tokio::spawn(async move {
        let Ok(beat) = Bincode::encode(&Heartbeat { call_id, node }) else { return };
        let beat = Bytes::from(beat);
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(error) = bus.publish(Message::new(keepalive.subject.clone(), beat.clone())).await {
                debug!(%error, "cannot publish a call's heartbeat");
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_refreshes_a_call_and_names_its_node() {
        let liveness = Liveness::new("_INBOX.alive".into(), Duration::from_millis(10));
        assert_eq!(liveness.lost_after(), Duration::from_millis(30));
        let call = Uuid::new_v4();
        let started = Instant::now() - Duration::from_millis(20);
        // No heartbeat yet: the start is the last sign of life.
        let sign = liveness.last_sign(&call, started);
        assert_eq!((sign.at, sign.node), (started, None));
        liveness.beat(Heartbeat { call_id: call, node: "node-b".into() });
        let sign = liveness.last_sign(&call, started);
        assert_eq!(sign.node.as_deref(), Some("node-b"));
        assert!(sign.at > started);
        // A call younger than one period cannot have a heartbeat: its start is its sign, without a lookup.
        let young = Instant::now();
        assert_eq!(liveness.last_sign(&call, young).at, young);
        liveness.forget(&call, started);
        assert_eq!(liveness.last_sign(&call, started).at, started);
        // Entries a race left behind are pruned once silent for two lost periods.
        liveness.beat(Heartbeat { call_id: Uuid::new_v4(), node: "node-c".into() });
        liveness.prune(Instant::now());
        assert_eq!(liveness.lock().len(), 1, "a fresh entry stays");
        liveness.prune(Instant::now() + Duration::from_millis(61));
        assert!(liveness.lock().is_empty());
    }
}

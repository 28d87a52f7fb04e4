//! The call event bus: every durable change to a call, broadcast to whoever watches
//! (indicators, dashboard). Policy when a subscriber falls behind: it misses the oldest
//! events (`Lagged`) and should re-read state from the store; publishers never wait.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::event::CallEvent;
use super::record::CallRecord;

/// Events kept for a slow subscriber before it starts missing them.
const CAPACITY: usize = 1024;

/// One change, published after it is on disk.
#[derive(Debug, Clone)]
pub struct BusMessage {
    /// The event that caused the change.
    pub event: CallEvent,
    /// The call's record after it.
    pub record: CallRecord,
    /// Its place on the bus since the box started (1, 2, …): a reconnecting page says the last
    /// one it saw and is sent what came after (see [`Bus::since`]). Set by [`Bus::publish`].
    pub seq: u64,
}

impl BusMessage {
    /// A change to announce.
    pub fn new(event: CallEvent, record: CallRecord) -> Self {
        Self { event, record, seq: 0 }
    }
}

/// Broadcasts call changes, and keeps the latest [`CAPACITY`] for a subscriber that comes back
/// (a dashboard whose connection dropped). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Bus {
    tx: broadcast::Sender<BusMessage>,
    recent: Arc<Mutex<Recent>>,
    /// Tells this run's numbers from an earlier run's.
    run: Arc<str>,
}

#[derive(Debug, Default)]
struct Recent {
    messages: VecDeque<BusMessage>,
    last_seq: u64,
}

impl Default for Bus {
    fn default() -> Self {
        Self::new()
    }
}

impl Bus {
    /// A bus with no subscribers yet.
    pub fn new() -> Self {
        Self { tx: broadcast::channel(CAPACITY).0, recent: Arc::default(), run: crate::random::hex::<6>().into() }
    }

    /// The name of a place on this bus, for a subscriber to come back to: this run's id and
    /// the number of the last message it saw (`a1b2c3d4e5f6-17`).
    pub fn position(&self, seq: u64) -> String {
        format!("{}-{seq}", self.run)
    }

    /// The last message published so far, as a [`Self::position`].
    pub fn now(&self) -> String {
        self.position(crate::sync::lock(&self.recent).last_seq)
    }

    /// The number in a position this bus gave out; `None` for one from another run, or none.
    pub fn seq_of(&self, position: &str) -> Option<u64> {
        let (run, seq) = position.trim().rsplit_once('-')?;
        (run == &*self.run).then(|| seq.parse().ok()).flatten()
    }

    /// Publishes a change; having no subscriber is fine.
    pub fn publish(&self, mut message: BusMessage) {
        // Numbered, kept and sent under one lock, so the numbers run in the order subscribers
        // see, and `since` cannot miss one between its look back and its subscription.
        let mut recent = crate::sync::lock(&self.recent);
        recent.last_seq += 1;
        message.seq = recent.last_seq;
        if recent.messages.len() == CAPACITY {
            recent.messages.pop_front();
        }
        recent.messages.push_back(message.clone());
        let _ = self.tx.send(message);
    }

    /// Subscribes to changes after `seq`: the kept ones after it, then the live feed. `None`
    /// for the kept part when some after `seq` are no longer kept (or `seq` is from before a
    /// restart): the subscriber must then re-read the store.
    pub fn since(&self, seq: u64) -> (Option<Vec<BusMessage>>, broadcast::Receiver<BusMessage>) {
        let recent = crate::sync::lock(&self.recent);
        let rx = self.tx.subscribe();
        let oldest_kept = recent.messages.front().map_or(recent.last_seq + 1, |m| m.seq);
        let missed = if seq > recent.last_seq || seq + 1 < oldest_kept {
            None
        } else {
            Some(recent.messages.iter().filter(|m| m.seq > seq).cloned().collect())
        };
        (missed, rx)
    }

    /// Subscribes to changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<BusMessage> {
        self.tx.subscribe()
    }
}

//! The call event bus: every durable change to a call, broadcast to whoever watches
//! (indicators, dashboard). Policy when a subscriber falls behind: it misses the oldest
//! events (`Lagged`) and should re-read state from the store; publishers never wait.

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
}

/// Broadcasts call changes. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Bus {
    tx: broadcast::Sender<BusMessage>,
}

impl Default for Bus {
    fn default() -> Self {
        Self::new()
    }
}

impl Bus {
    /// A bus with no subscribers yet.
    pub fn new() -> Self {
        Self { tx: broadcast::channel(CAPACITY).0 }
    }

    /// Publishes a change; having no subscriber is fine.
    pub fn publish(&self, message: BusMessage) {
        let _ = self.tx.send(message);
    }

    /// Subscribes to changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<BusMessage> {
        self.tx.subscribe()
    }
}

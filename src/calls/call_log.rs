//! The call log as the rest of the box uses it: events go in durably and are then announced,
//! and whether the log is healthy can be asked. One type owns the order (store, then bus) and
//! the write-failure state, so no caller can announce what is not on disk.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use jiff::Timestamp;
use tokio::sync::broadcast;

use super::bus::{Bus, BusMessage};
use super::event::{CallEvent, detail};
use super::follow_up;
use super::record::{Applied, CallRecord};
use super::store::{Recorded, Store, StoreError};

/// The durable call log and its change feed. Cheap to clone; clones share everything.
#[derive(Debug, Clone)]
pub struct CallLog {
    store: Store,
    bus: Bus,
    /// Set while the last write failed; cleared by the next one that succeeds.
    write_failed: Arc<AtomicBool>,
}

impl CallLog {
    /// The log around an open store, with a bus that has no subscriber yet.
    pub fn new(store: Store) -> Self {
        Self { store, bus: Bus::new(), write_failed: Arc::new(AtomicBool::new(false)) }
    }

    /// The one way events enter the call log: stored durably, then announced on the bus (a
    /// retried event is not announced twice). Logs the outcome; a failure is for the caller
    /// to report, since only it knows whom to answer.
    pub async fn record(&self, event: CallEvent) -> Result<Recorded, StoreError> {
        let status = event.status.as_ref().map_or("-", |s| s.as_str()).to_owned();
        let sid = event.call_sid.clone();
        let source = event.source;
        let result = self.store.record(event.clone()).await;
        self.set_write_failed(result.is_err());
        let recorded = result?;
        if recorded.applied == Applied::Duplicate {
            log::info!("duplicate {source:?} event for {sid} ignored");
        } else {
            log::info!(
                call_status = status.as_str(), call_from = event.from.as_deref().unwrap_or("");
                "call {sid} {source:?}: {status} (now {})", recorded.record.status
            );
            self.bus.publish(BusMessage::new(event, recorded.record.clone()));
        }
        Ok(recorded)
    }

    /// Records the owner's step on a call (see [`follow_up`]) and announces it, so every
    /// screen and the message light follow; `Ok(None)` when the call is not in the log.
    pub async fn follow_up(&self, event: CallEvent) -> Result<Option<CallRecord>, StoreError> {
        let (sid, action) = (event.call_sid.clone(), event.detail(detail::ACTION).unwrap_or("").to_owned());
        let result = self.store.record_existing(event.clone()).await;
        self.set_write_failed(result.is_err());
        let Some(recorded) = result? else { return Ok(None) };
        log::info!("call {sid}: the owner marked it {action}");
        self.bus.publish(BusMessage::new(event, recorded.record.clone()));
        Ok(Some(recorded.record))
    }

    /// Marks every call that lights the message light as heard (the banner's button); returns
    /// how many, once all are on disk.
    pub async fn mark_all_heard(&self, now: Timestamp) -> Result<usize, StoreError> {
        let waiting = follow_up::waiting(&self.store)?;
        // Without a note, a step is always well-formed.
        let steps =
            waiting.iter().filter_map(|c| follow_up::event(&c.call_sid, follow_up::Action::Heard, None, now).ok());
        let done = futures_util::future::join_all(steps.map(|e| self.follow_up(e))).await;
        done.into_iter().try_fold(0, |n, r| r.map(|c| n + usize::from(c.is_some())))
    }

    /// Applies `change` to an existing call's record (what a media session learned) and
    /// returns once it is on disk; `Ok(None)` when the call is unknown. Not announced: the
    /// session announces its steps as events.
    pub async fn update(
        &self,
        call_sid: &str,
        change: impl FnOnce(&mut CallRecord),
    ) -> Result<Option<CallRecord>, StoreError> {
        self.store.update(call_sid, change).await
    }

    /// The store, for reading.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Every change from now on (see [`Bus`] for what a slow subscriber misses).
    pub fn subscribe(&self) -> broadcast::Receiver<BusMessage> {
        self.bus.subscribe()
    }

    /// The bus, for tests and tools that announce without storing.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Whether the last write failed.
    pub fn write_failed(&self) -> bool {
        self.write_failed.load(Ordering::Relaxed)
    }

    /// Marks writes as failing (or working again), as a failed or successful write would.
    pub fn set_write_failed(&self, failed: bool) {
        self.write_failed.store(failed, Ordering::Relaxed);
    }

    /// What is wrong with the call log, in words for the owner: writes failing, or damage
    /// found at start that lost something. `None` when it is healthy.
    pub fn problem(&self) -> Option<String> {
        match (self.write_failed(), self.store.fault()) {
            (true, detail) => Some(format!(
                "the call log could not be written{}",
                detail.map(|e| format!(": {e}")).unwrap_or_default()
            )),
            (false, Some(damage)) => Some(format!("the call log is damaged: {damage}")),
            (false, None) => None,
        }
    }
}

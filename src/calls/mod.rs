//! Calls: their events and records, the rules that keep records right, the durable store and
//! the bus that announces changes. Nothing here knows HTTP.

pub mod bus;
mod call_log;
pub mod event;
pub mod export;
pub mod follow_up;
mod journal;
pub mod outcome;
pub mod record;
pub mod search;
pub mod stats;
pub mod store;

pub use bus::{Bus, BusMessage};
pub use call_log::CallLog;
pub use event::{CallEvent, CallStatus, EventSource, MediaEvent, StreamOutcome, detail};
pub use outcome::Outcome;
pub use record::{Applied, CallRecord, RecordingInfo, StreamInfo};
pub use store::{Recorded, Store, StoreError};

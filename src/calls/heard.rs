//! What the owner has heard: the moment they last marked the messages as heard, kept in the
//! call log so the message light means the same after a restart or a power cut.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::store::{Store, StoreError};

/// The document that holds it.
const KEY: &str = "indicators/heard";
/// Calls looked at for waiting messages when the box starts.
const RECENT_CALLS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Heard {
    at: Timestamp,
}

/// Records that the owner heard everything up to `now`; returns once it is on disk.
pub async fn mark_all_heard(store: &Store, now: Timestamp) -> Result<(), StoreError> {
    store.update_doc::<Heard, _>(KEY, |d| *d = Some(Heard { at: now })).await.map(|_| ())
}

/// When the owner last marked the messages as heard.
pub fn heard_at(store: &Store) -> Option<Timestamp> {
    store.doc::<Heard>(KEY).ok().flatten().map(|h| h.at)
}

/// The calls still waiting for the owner: voicemails and missed calls since they last marked
/// the messages as heard (all recent ones when they never did).
pub fn waiting(store: &Store) -> Result<Vec<String>, StoreError> {
    let since = heard_at(store);
    Ok(store
        .list(RECENT_CALLS, None)?
        .into_iter()
        .filter(|c| c.outcome.wants_call_back() && since.is_none_or(|t| c.first_seen > t))
        .map(|c| c.call_sid)
        .collect())
}

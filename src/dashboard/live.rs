//! The live board: follows the call bus to know which calls are in progress, and counts
//! finished calls for the metrics.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast::error::RecvError;

use crate::calls::{BusMessage, CallStatus, EventSource};
use crate::metrics::CallLabels;
use crate::server::App;

/// A call whose final callback never came is dropped from the board after this long (Twilio
/// occasionally loses a callback; a phone call this long at a repair shop is not plausible).
pub const LOST_CALL_TIMEOUT: Duration = Duration::from_secs(4 * 3600);

/// Follows the bus until shutdown.
pub async fn run(app: Arc<App>) {
    let mut rx = app.bus.subscribe();
    let mut active: HashMap<String, Instant> = HashMap::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = app.shutdown.cancelled() => return,
            _ = sweep.tick() => active.retain(|_, since| since.elapsed() < LOST_CALL_TIMEOUT),
            msg = rx.recv() => match msg {
                Ok(m) => observe(&app, &mut active, &m),
                // Missed some events: the board may be stale until the calls' next events;
                // the finished-call counters may undercount, which Prometheus tolerates.
                Err(RecvError::Lagged(n)) => log::warn!("live board missed {n} call events"),
                Err(RecvError::Closed) => return,
            },
        }
        app.metrics.active_calls.set(i64::try_from(active.len()).unwrap_or(i64::MAX));
    }
}

fn observe(app: &App, active: &mut HashMap<String, Instant>, m: &BusMessage) {
    let sid = &m.record.call_sid;
    // A media stream's totals are counted once, when it stops (the bus carries no retries).
    if m.event.source == EventSource::MediaStream
        && m.event.details.get("MediaEvent").map(String::as_str) == Some("stopped")
        && let Some(stream) = &m.record.stream
    {
        app.metrics.media_frames_in.inc_by(stream.frames_in);
        app.metrics.media_frames_out.inc_by(stream.frames_out);
        if let Some(rec) = &stream.recording {
            app.metrics.recording_bytes.inc_by(rec.bytes);
        }
    }
    if m.record.is_over() {
        active.remove(sid);
        // Count the event that made the call final (a late non-final event after it does not).
        if m.event.status.as_ref().is_some_and(CallStatus::is_final)
            && m.event.status.as_ref() == Some(&m.record.status)
        {
            let labels = CallLabels {
                status: m.record.status.as_str().to_owned(),
                line: m.record.to.clone().unwrap_or_default(),
            };
            app.metrics.calls.get_or_create(&labels).inc();
        }
    } else if matches!(
        m.event.source,
        EventSource::IncomingCall | EventSource::StatusCallback | EventSource::MediaStream
    ) {
        active.entry(sid.clone()).or_insert_with(Instant::now);
    }
}

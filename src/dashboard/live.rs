//! The live board: follows the call bus to know which calls are in progress, and counts
//! finished calls for the metrics.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::CancellationToken;

use crate::calls::{BusMessage, CallStatus, EventSource, MediaEvent};
use crate::metrics::{CallLabels, Metrics};

/// A call whose final callback never came is dropped from the board after this long (Twilio
/// occasionally loses a callback; a phone call this long at a repair shop is not plausible).
pub const LOST_CALL_TIMEOUT: Duration = Duration::from_secs(4 * 3600);

/// Follows the bus until shutdown.
pub async fn run(mut rx: broadcast::Receiver<BusMessage>, metrics: &Metrics, shutdown: &CancellationToken) {
    let mut active: HashMap<String, Instant> = HashMap::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = sweep.tick() => active.retain(|_, since| since.elapsed() < LOST_CALL_TIMEOUT),
            msg = rx.recv() => match msg {
                Ok(m) => observe(metrics, &mut active, &m),
                // Missed some events: the board may be stale until the calls' next events;
                // the finished-call counters may undercount, which Prometheus tolerates.
                Err(RecvError::Lagged(n)) => log::warn!("live board missed {n} call events"),
                Err(RecvError::Closed) => return,
            },
        }
        metrics.active_calls.set(i64::try_from(active.len()).unwrap_or(i64::MAX));
    }
}

fn observe(metrics: &Metrics, active: &mut HashMap<String, Instant>, m: &BusMessage) {
    let sid = &m.record.call_sid;
    // A media stream's totals are counted once, when it stops (the bus carries no retries).
    if m.event.source == EventSource::MediaStream
        && m.event.media_event() == Some(MediaEvent::Stopped)
        && let Some(stream) = &m.record.stream
    {
        metrics.media_frames_in.inc_by(stream.frames_in);
        metrics.media_frames_out.inc_by(stream.frames_out);
        if let Some(rec) = &stream.recording {
            metrics.recording_bytes.inc_by(rec.bytes);
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
            metrics.calls.get_or_create(&labels).inc();
        }
    } else if matches!(
        m.event.source,
        EventSource::IncomingCall | EventSource::StatusCallback | EventSource::MediaStream
    ) {
        active.entry(sid.clone()).or_insert_with(Instant::now);
    }
}

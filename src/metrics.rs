//! Prometheus metrics for the owner's monitoring (`GET /metrics` on the admin listener).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of a finished call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// Final status (`completed`, `busy`, `no-answer`, …).
    pub status: String,
    /// The shop line that was called (`To`).
    pub line: String,
}

/// Labels of a webhook request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// `incoming-call`, `call-status` or `stream-status`.
    pub route: String,
}

/// Every metric the box exports. Cheap to update from any task.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Calls that reached a final status, by status and line.
    pub calls: Family<CallLabels, Counter>,
    /// Calls in progress now.
    pub active_calls: Gauge,
    /// Webhook handling time, from request head to answer (includes the disk flush).
    pub webhook_seconds: Family<RouteLabels, Histogram>,
    /// Media-stream frames received from Twilio.
    pub media_frames_in: Counter,
    /// Media-stream frames sent to Twilio.
    pub media_frames_out: Counter,
    /// Bytes of voicemail recorded.
    pub recording_bytes: Counter,
    /// Seconds until the served certificate expires (absent without TLS).
    pub certificate_expiry_seconds: Gauge,
    /// Bytes the call log takes on disk (refreshed at each scrape).
    pub store_bytes: Gauge,
}

fn latency_histogram() -> Histogram {
    // 250 µs to ~4 s: a webhook is answered in milliseconds, Twilio gives up after 15 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.00025, 2.0, 15))
}

impl Metrics {
    /// All metrics, registered under the `callbox_` prefix. The certificate gauge exists only
    /// when the box serves TLS itself (a 0 would read as "expired" to an alert rule).
    pub fn new(tls: bool) -> Self {
        let mut registry = Registry::with_prefix("callbox");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register("calls", "Calls that reached a final status", calls.clone());
        let active_calls = Gauge::default();
        registry.register("active_calls", "Calls in progress", active_calls.clone());
        let webhook_seconds =
            Family::<RouteLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register("webhook_seconds", "Webhook handling time including the disk flush", webhook_seconds.clone());
        let media_frames_in = Counter::default();
        registry.register("media_frames_in", "Media-stream frames received from Twilio", media_frames_in.clone());
        let media_frames_out = Counter::default();
        registry.register("media_frames_out", "Media-stream frames sent to Twilio", media_frames_out.clone());
        let recording_bytes = Counter::default();
        registry.register("recording_bytes", "Bytes of voicemail recorded", recording_bytes.clone());
        let certificate_expiry_seconds = Gauge::default();
        if tls {
            registry.register(
                "certificate_expiry_seconds",
                "Seconds until the served TLS certificate expires",
                certificate_expiry_seconds.clone(),
            );
        }
        let store_bytes = Gauge::default();
        registry.register("store_bytes", "Bytes the call log takes on disk", store_bytes.clone());
        Self {
            registry,
            calls,
            active_calls,
            webhook_seconds,
            media_frames_in,
            media_frames_out,
            recording_bytes,
            certificate_expiry_seconds,
            store_bytes,
        }
    }

    /// The text exposition (OpenMetrics, which Prometheus reads natively).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            log::error!("cannot encode metrics: {e}");
        }
        out
    }
}

//! Logging through the `log` facade: to journald with structured fields when the service runs
//! under systemd, to stderr otherwise.

use std::cell::RefCell;
use std::future::Future;

use log::kv::{self, Key, Source, Value, VisitSource};
use log::{LevelFilter, Log, Metadata, Record};
use systemd_journal_logger::{JournalLog, connected_to_journal};

/// Installs the logger. `RUST_LOG` wins over `level` (from config). Safe to call once.
pub fn init(level: &str) {
    let spec = std::env::var("RUST_LOG").ok().filter(|s| !s.trim().is_empty()).unwrap_or_else(|| level.to_owned());
    // Journald only when stderr really is the journal stream *and* the socket answers;
    // the crate has no fallback of its own.
    if connected_to_journal()
        && let Ok(journal) = JournalLog::new()
    {
        let max = spec.parse::<LevelFilter>().unwrap_or(LevelFilter::Info);
        let journal = journal.with_syslog_identifier("callbox".into());
        if log::set_boxed_logger(Box::new(WithContext(journal))).is_ok() {
            log::set_max_level(max);
            return;
        }
    }
    let stderr = env_logger::Builder::new().parse_filters(&spec).format_timestamp_millis().format_target(false).build();
    let max = stderr.filter();
    if log::set_boxed_logger(Box::new(WithContext(stderr))).is_ok() {
        log::set_max_level(max);
    }
}

/// Which call (and media stream) the running task works for. Every log line written inside
/// [`in_call`] or [`scope`] carries it as `CALL_SID` / `STREAM_SID` fields (journald) or
/// `call_sid=… stream_sid=…` (stderr), so one call's lines can be followed by its CallSid
/// without each line repeating it by hand.
#[derive(Clone, Default)]
struct CallContext {
    call_sid: Option<String>,
    stream_sid: Option<String>,
}

tokio::task_local! {
    static CONTEXT: RefCell<CallContext>;
}

/// Runs `fut` as work for call `call_sid`.
pub fn in_call<F: Future>(call_sid: &str, fut: F) -> impl Future<Output = F::Output> {
    let context = CallContext { call_sid: Some(call_sid.to_owned()), stream_sid: None };
    CONTEXT.scope(RefCell::new(context), fut)
}

/// Runs `fut` in a context that learns its call later (a media stream names its call in its
/// first message): see [`set_call`].
pub fn scope<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    CONTEXT.scope(RefCell::new(CallContext::default()), fut)
}

/// Names the call and stream of the current [`scope`]; outside one, does nothing.
pub fn set_call(call_sid: &str, stream_sid: &str) {
    let _ = CONTEXT.try_with(|c| {
        *c.borrow_mut() = CallContext { call_sid: Some(call_sid.to_owned()), stream_sid: Some(stream_sid.to_owned()) };
    });
}

/// Adds the task's [`CallContext`] to every record before the real logger sees it.
struct WithContext<L>(L);

impl<L: Log> Log for WithContext<L> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        let context = CONTEXT.try_with(|c| c.borrow().clone()).unwrap_or_default();
        if context.call_sid.is_none() {
            return self.0.log(record);
        }
        let fields = Fields { context: &context, rest: record.key_values() };
        self.0.log(&record.to_builder().key_values(&fields).build());
    }

    fn flush(&self) {
        self.0.flush();
    }
}

struct Fields<'a> {
    context: &'a CallContext,
    rest: &'a dyn Source,
}

impl Source for Fields<'_> {
    fn visit<'kvs>(&'kvs self, visitor: &mut dyn VisitSource<'kvs>) -> Result<(), kv::Error> {
        if let Some(sid) = &self.context.call_sid {
            visitor.visit_pair(Key::from_str("call_sid"), Value::from(sid.as_str()))?;
        }
        if let Some(sid) = &self.context.stream_sid {
            visitor.visit_pair(Key::from_str("stream_sid"), Value::from(sid.as_str()))?;
        }
        self.rest.visit(visitor)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Keeps the fields of every record it sees, as `key=value`.
    #[derive(Default)]
    struct Capture(Mutex<Vec<String>>);

    impl Log for &Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &Record<'_>) {
            struct Collect(Vec<String>);
            impl<'kvs> VisitSource<'kvs> for Collect {
                fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), kv::Error> {
                    self.0.push(format!("{key}={value}"));
                    Ok(())
                }
            }
            let mut fields = Collect(Vec::new());
            let _ = record.key_values().visit(&mut fields);
            crate::sync::lock(&self.0).push(fields.0.join(" "));
        }
        fn flush(&self) {}
    }

    fn log_one(logger: &dyn Log) {
        let kvs = [("call_status", "ringing")];
        logger.log(&Record::builder().args(format_args!("x")).key_values(&kvs).build());
    }

    #[tokio::test]
    async fn lines_inside_a_call_carry_its_sids_and_their_own_fields() {
        let capture = Capture::default();
        let logger = WithContext(&capture);
        log_one(&logger);
        in_call("CA1", async { log_one(&logger) }).await;
        scope(async {
            log_one(&logger);
            set_call("CA2", "MZ2");
            log_one(&logger);
        })
        .await;
        let lines = crate::sync::lock(&capture.0).clone();
        assert_eq!(
            lines,
            [
                "call_status=ringing",
                "call_sid=CA1 call_status=ringing",
                "call_status=ringing",
                "call_sid=CA2 stream_sid=MZ2 call_status=ringing",
            ]
        );
    }
}

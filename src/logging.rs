//! Logging through the `log` facade: to journald with structured fields when the service runs
//! under systemd, to stderr otherwise.

use log::LevelFilter;
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
        if journal.with_syslog_identifier("callbox".into()).install().is_ok() {
            log::set_max_level(max);
            return;
        }
    }
    let _ = env_logger::Builder::new().parse_filters(&spec).format_timestamp_millis().format_target(false).try_init();
}

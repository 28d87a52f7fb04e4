//! `[log]`.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug` or `trace`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into() }
    }
}

impl LogConfig {
    pub(super) fn validate(&self, errs: &mut Vec<ConfigError>) {
        match self.level.to_ascii_lowercase().as_str() {
            "error" | "warn" | "info" | "debug" | "trace" | "off" => {}
            other => {
                errs.push(ConfigError::invalid(
                    "log.level",
                    format!("{other:?} is not one of error, warn, info, debug, trace"),
                ));
            }
        }
    }
}

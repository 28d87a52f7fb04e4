//! `[storage]`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[storage]`: the call log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Directory of the call log and other state.
    pub dir: PathBuf,
    /// Calls older than this many days are pruned (0 keeps them forever).
    pub retention_days: u32,
    /// At most this many calls are kept, oldest pruned first (0 for no limit).
    pub max_calls: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { dir: PathBuf::from("/var/lib/callbox"), retention_days: 365, max_calls: 100_000 }
    }
}

impl StorageConfig {
    /// `dev` allows a relative dir (the `--data-dir` given on the command line).
    pub(super) fn validate(&self, dev: bool, errs: &mut Vec<ConfigError>) {
        if !self.dir.is_absolute() && !dev {
            errs.push(ConfigError::invalid(
                "storage.dir",
                format!("must be an absolute path (got {:?}); a service has no meaningful working directory", self.dir),
            ));
        }
    }
}

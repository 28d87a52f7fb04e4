//! `[texts]`: the owner's saved messages for the dashboard.

use serde::{Deserialize, Serialize};

use super::{ConfigError, MAX_BODY_CHARS};

/// Most saved messages.
const MAX_TEMPLATES: usize = 20;

/// `[texts]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TextsConfig {
    /// Ready-made texts the dashboard offers, e.g. "Your car is ready for pickup."
    pub templates: Vec<String>,
}

impl TextsConfig {
    pub(super) fn validate(&self, errs: &mut Vec<ConfigError>) {
        if self.templates.len() > MAX_TEMPLATES {
            errs.push(ConfigError::invalid(
                "texts.templates",
                format!("has {}; keep at most {MAX_TEMPLATES}", self.templates.len()),
            ));
        }
        for t in &self.templates {
            if t.trim().is_empty() {
                errs.push(ConfigError::invalid("texts.templates", "has an empty entry; remove it"));
            } else if t.chars().count() > MAX_BODY_CHARS {
                errs.push(ConfigError::invalid(
                    "texts.templates",
                    format!("has an entry over {MAX_BODY_CHARS} characters"),
                ));
            }
        }
    }
}

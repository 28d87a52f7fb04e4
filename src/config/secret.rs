//! Secrets in the config, and telling a real one from a template's example.

use std::fmt;

use serde::{Deserialize, Serialize};

/// True for values copied from a template or an example rather than made up: markers such
/// as CHANGE-ME, your-…, example, xxxx, <…>, or one character repeated.
pub(super) fn looks_like_placeholder(value: &str) -> bool {
    const MARKERS: &[&str] = &[
        "change-me",
        "changeme",
        "change_me",
        "change me",
        "your-",
        "your_",
        "your ",
        "example",
        "xxxx",
        "placeholder",
        "replace",
        "<",
        ">",
        "…",
        "...",
        "todo",
        "fixme",
    ];
    let v = value.trim().to_ascii_lowercase();
    let mut chars = v.chars();
    let repeated = chars.next().is_some_and(|first| chars.all(|c| c == first));
    repeated || MARKERS.iter().any(|m| v.contains(m))
}

/// A secret string that never shows up in `Debug` output or logs.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself; call only where it is used (HMAC key, token compare).
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// True when no secret was configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"<redacted>\"" })
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "<redacted>" })
    }
}

//! `[twilio]`.

use serde::{Deserialize, Serialize};

use super::secret::looks_like_placeholder;
use super::{ConfigError, ENV_TWILIO_AUTH_TOKEN, Secret};

/// `[twilio]`: the account and what callers hear around the media stream.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TwilioConfig {
    /// The account's primary auth token (or `CALLBOX_TWILIO_AUTH_TOKEN`).
    pub auth_token: Secret,
    /// Optional `<Say>` before the stream connects.
    pub greeting: Option<String>,
    /// Front-desk number dialled when the stream ends (the caller pressed 0, or the flow ended).
    pub front_desk: Option<String>,
    /// Said before hanging up when no `front_desk` is set.
    pub goodbye: Option<String>,
}

/// What an account Auth Token looks like: 32 hexadecimal characters.
fn is_auth_token(token: &str) -> bool {
    token.len() == 32 && token.bytes().all(|b| b.is_ascii_hexdigit()) && !looks_like_placeholder(token)
}

impl TwilioConfig {
    /// The account's token; `dev` skips it (dev mode makes its own).
    pub(super) fn validate_auth_token(&self, dev: bool, errs: &mut Vec<ConfigError>) {
        let auth_token = self.auth_token.expose();
        if !dev && auth_token.is_empty() {
            errs.push(ConfigError::invalid(
                "twilio.auth_token",
                format!(
                    "is missing; copy the Auth Token from the Twilio console into [twilio] auth_token, or set {ENV_TWILIO_AUTH_TOKEN}"
                ),
            ));
        } else if !dev && !is_auth_token(auth_token) {
            // Anything else makes every webhook a 403 later, with nothing pointing here.
            errs.push(ConfigError::invalid(
                "twilio.auth_token",
                format!(
                    "is not a Twilio Auth Token: those are 32 hexadecimal characters (Twilio console, Account → API keys & tokens → Auth Token); got {} character(s){}",
                    auth_token.chars().count(),
                    if looks_like_placeholder(auth_token) { " that look like a template value" } else { "" }
                ),
            ));
        }
    }

    /// What callers hear after the stream.
    pub(super) fn validate_call_handling(&self, errs: &mut Vec<ConfigError>) {
        if let Some(n) = &self.front_desk
            && n.trim().is_empty()
        {
            errs.push(ConfigError::invalid(
                "twilio.front_desk",
                "is empty; remove the key or set an E.164 number like \"+15035550100\"",
            ));
        }
    }
}

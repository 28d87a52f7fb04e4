//! `[twilio]`.

use serde::{Deserialize, Serialize};

use super::secret::looks_like_placeholder;
use super::{ConfigError, ENV_TWILIO_AUTH_TOKEN, Secret};

/// `[twilio]`: the account and what callers hear around the media stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// The account (`AC` + 32 hex, Twilio console): needed to send SMS through Twilio's API.
    pub account_sid: Option<String>,
    /// An API key (`SK` + 32 hex) to send with instead of the Auth Token: revocable on its own.
    pub api_key_sid: Option<String>,
    /// The API key's secret (or `CALLBOX_TWILIO_API_KEY_SECRET`).
    pub api_key_secret: Secret,
    /// Twilio's REST API; tests point it at a local fake.
    pub api_base_url: String,
    /// How long to wait for Twilio's answer before a text is tried again.
    pub api_timeout_secs: u64,
    /// Who texts are sent from: an E.164 number of the account or a Messaging Service
    /// (`MG…`); the number that was called when unset.
    pub sms_from: Option<String>,
}

/// Twilio's REST API.
pub const DEFAULT_API_BASE_URL: &str = "https://api.twilio.com";

impl Default for TwilioConfig {
    fn default() -> Self {
        Self {
            auth_token: Secret::default(),
            greeting: None,
            front_desk: None,
            goodbye: None,
            account_sid: None,
            api_key_sid: None,
            api_key_secret: Secret::default(),
            api_base_url: DEFAULT_API_BASE_URL.to_owned(),
            api_timeout_secs: 20,
            sms_from: None,
        }
    }
}

/// True for a Twilio SID of the given two-letter kind that is not a template's example.
fn is_sid(prefix: &str, sid: &str) -> bool {
    crate::twilio::sid::has_shape(sid, prefix) && !looks_like_placeholder(&sid[2..])
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

    /// The REST side: who the box is to Twilio's API when it sends texts. `sends` is whether
    /// anything is configured to be sent.
    pub(super) fn validate_rest(&self, sends: bool, errs: &mut Vec<ConfigError>) {
        match &self.account_sid {
            None if sends => errs.push(ConfigError::invalid(
                "twilio.account_sid",
                "is missing; [missed_calls] sends texts through Twilio's API, which needs the Account SID (AC…, on the Twilio console's front page)",
            )),
            Some(sid) if !is_sid("AC", sid) => errs.push(ConfigError::invalid(
                "twilio.account_sid",
                format!("{sid:?} is not an Account SID: those are AC and 32 lowercase hexadecimal characters"),
            )),
            _ => {}
        }
        match &self.api_key_sid {
            Some(sid) if !is_sid("SK", sid) => errs.push(ConfigError::invalid(
                "twilio.api_key_sid",
                format!("{sid:?} is not an API key SID: those are SK and 32 lowercase hexadecimal characters"),
            )),
            Some(_) if self.api_key_secret.is_empty() => errs.push(ConfigError::invalid(
                "twilio.api_key_secret",
                "is missing; an API key needs its secret (shown once when the key is made), or set CALLBOX_TWILIO_API_KEY_SECRET",
            )),
            None if !self.api_key_secret.is_empty() => errs.push(ConfigError::invalid(
                "twilio.api_key_sid",
                "is missing; api_key_secret is set but not the key it belongs to (SK…)",
            )),
            _ => {}
        }
        match url::Url::parse(&self.api_base_url) {
            Ok(u) if u.scheme() == "https" && u.host().is_some() => {}
            // Plain HTTP would send the credentials in the clear: only to a fake on this machine.
            Ok(u) if u.scheme() == "http" && matches!(u.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")) => {}
            _ => errs.push(ConfigError::invalid(
                "twilio.api_base_url",
                format!(
                    "{:?} is not an https URL (plain http only to 127.0.0.1); remove it to use {DEFAULT_API_BASE_URL}",
                    self.api_base_url
                ),
            )),
        }
        if !(1..=120).contains(&self.api_timeout_secs) {
            errs.push(ConfigError::invalid("twilio.api_timeout_secs", "must be from 1 to 120"));
        }
        if let Some(from) = &self.sms_from
            && !super::missed_calls::is_e164(from)
            && !is_sid("MG", from)
        {
            errs.push(ConfigError::invalid(
                "twilio.sms_from",
                format!("{from:?} is neither an E.164 number (\"+15035550100\") nor a Messaging Service SID (MG…)"),
            ));
        }
    }

    /// Who the box authenticates as to Twilio's REST API, when it can: the API key, else the
    /// account and its Auth Token.
    pub fn rest_credentials(&self) -> Option<(&str, &Secret)> {
        let account = self.account_sid.as_deref()?;
        Some(match &self.api_key_sid {
            Some(key) => (key.as_str(), &self.api_key_secret),
            None => (account, &self.auth_token),
        })
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

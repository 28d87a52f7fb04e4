//! `[missed_calls]`: what the box does for a caller nobody answered, and for the owner.

use serde::{Deserialize, Serialize};

use super::{ConfigError, QuietHoursConfig};

/// Longest SMS body Twilio takes (it splits it into segments, each billed).
pub const MAX_BODY_CHARS: usize = 1_600;

/// `[missed_calls]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MissedCallsConfig {
    /// The SMS a caller of a missed call gets from the number they called; off when unset.
    pub text_back: Option<String>,
    /// Also text back callers who left a voicemail.
    pub text_back_voicemail: bool,
    /// Numbers (E.164) that get an SMS for each missed call and each new voicemail.
    pub notify: Vec<String>,
    /// At most one text-back per caller in this many hours.
    pub window_hours: u32,
    /// No text-back in these hours (shop time, `indicators.time_zone`): queued until they end.
    pub quiet_hours: Option<QuietHoursConfig>,
    /// Send text-backs during `quiet_hours` anyway (owner alerts always go out at once).
    pub text_in_quiet_hours: bool,
    /// The dashboard link in owner alerts; `http://<hostname>.local:<admin port>/` when unset.
    pub dashboard_url: Option<String>,
}

impl Default for MissedCallsConfig {
    fn default() -> Self {
        Self {
            text_back: None,
            text_back_voicemail: false,
            notify: Vec::new(),
            window_hours: 12,
            quiet_hours: None,
            text_in_quiet_hours: false,
            dashboard_url: None,
        }
    }
}

/// True for a number Twilio can text: `+`, then 8 to 15 digits, the first not 0.
pub fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else { return false };
    (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
}

impl MissedCallsConfig {
    /// Whether any SMS may ever be sent.
    pub fn sends_anything(&self) -> bool {
        self.text_back.is_some() || !self.notify.is_empty()
    }

    pub(super) fn validate(&self, errs: &mut Vec<ConfigError>) {
        if let Some(text) = &self.text_back {
            if text.trim().is_empty() {
                errs.push(ConfigError::invalid(
                    "missed_calls.text_back",
                    "is empty; remove it to send no text, or write the message callers get",
                ));
            } else if text.chars().count() > MAX_BODY_CHARS {
                errs.push(ConfigError::invalid(
                    "missed_calls.text_back",
                    format!("is {} characters; Twilio takes at most {MAX_BODY_CHARS}", text.chars().count()),
                ));
            }
        }
        for number in &self.notify {
            if !is_e164(number) {
                errs.push(ConfigError::invalid(
                    "missed_calls.notify",
                    format!("{number:?} is not an E.164 mobile number; write it like \"+15035550199\""),
                ));
            }
        }
        if self.window_hours > 24 * 30 {
            errs.push(ConfigError::invalid("missed_calls.window_hours", "must be at most 720 (30 days)"));
        }
        if let Some(url) = &self.dashboard_url
            && !matches!(url::Url::parse(url), Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some())
        {
            errs.push(ConfigError::invalid(
                "missed_calls.dashboard_url",
                format!("{url:?} is not an http(s) URL; write it like \"http://callbox.local:8080/\""),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164_numbers() {
        for good in ["+15035550123", "+442071838750", "+4915112345678"] {
            assert!(is_e164(good), "{good}");
        }
        for bad in ["15035550123", "+1503555012x", "+0123456789", "+1234567", "anonymous", "", "+", "55555"] {
            assert!(!is_e164(bad), "{bad}");
        }
    }
}

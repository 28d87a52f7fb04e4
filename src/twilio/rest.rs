//! Twilio's REST API as pure code: the request that sends an SMS, and what its answers mean.
//! The contract is Twilio's own OpenAPI description (`twilio_api_v2010.json`,
//! `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`); the tests send what this builds to
//! a mock that validates requests against it.

use serde::Deserialize;

/// The path that creates a Message, under the API's base URL.
pub fn messages_path(account_sid: &str) -> String {
    format!("/2010-04-01/Accounts/{account_sid}/Messages.json")
}

/// One SMS to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage<'a> {
    /// The recipient, E.164.
    pub to: &'a str,
    /// An E.164 number of the account, or a Messaging Service SID (`MG…`).
    pub from: &'a str,
    /// The text.
    pub body: &'a str,
    /// Where Twilio posts delivery updates.
    pub status_callback: Option<&'a str>,
}

impl NewMessage<'_> {
    /// The `application/x-www-form-urlencoded` body of the request.
    pub fn form(&self) -> String {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("To", self.to);
        if self.from.starts_with("MG") {
            form.append_pair("MessagingServiceSid", self.from);
        } else {
            form.append_pair("From", self.from);
        }
        form.append_pair("Body", self.body);
        if let Some(url) = self.status_callback {
            form.append_pair("StatusCallback", url);
        }
        form.finish()
    }
}

/// The part of Twilio's Message resource the box keeps.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MessageResource {
    /// `SM…` (or `MM…`).
    pub sid: String,
    /// `queued`, `accepted`, …
    #[serde(default)]
    pub status: Option<String>,
}

/// Twilio's error body: `{"code": 21211, "message": "...", "more_info": "...", "status": 400}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ApiError {
    /// Twilio's error code.
    #[serde(default)]
    pub code: Option<u32>,
    /// What Twilio says went wrong.
    #[serde(default)]
    pub message: Option<String>,
}

/// What to do after an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Twilio took the message.
    Accepted(MessageResource),
    /// Try again later: rate limited, Twilio's side failed, or the answer was not readable.
    Retry {
        /// Twilio's code, when it sent one.
        code: Option<u32>,
        /// What went wrong.
        why: String,
    },
    /// Never retry: the request can never succeed as it is.
    Permanent {
        /// Twilio's code, when it sent one.
        code: Option<u32>,
        /// What went wrong, in the owner's terms where the code is known.
        why: String,
    },
}

/// The recipient replied STOP: Twilio refuses every message to them until they send START.
pub const OPTED_OUT: u32 = 21610;

/// What the box says about the error codes it is likely to meet.
pub fn explain(code: u32) -> Option<&'static str> {
    Some(match code {
        20003 => "Twilio refused the credentials: check twilio.account_sid and the Auth Token or API key",
        20404 => "Twilio does not know this account or resource: check twilio.account_sid",
        20429 => "too many requests to Twilio",
        21211 => "the number is not a valid phone number",
        21408 => "texts to this region are not enabled on the Twilio account (Messaging geographic permissions)",
        21606 => "the sender is not an SMS-capable number of this Twilio account: check twilio.sms_from",
        21610 => "the recipient replied STOP and has opted out",
        21612 => "Twilio cannot route a text between these two numbers",
        21614 => "the number is not a mobile number (a landline cannot get texts)",
        30003 => "the handset is unreachable",
        30005 => "the number is unknown to its carrier",
        30006 => "the number is a landline or cannot get texts",
        30007 => "the carrier filtered the message as spam",
        30008 => "the carrier could not deliver it",
        30032 => "the toll-free number is not verified",
        30034 => {
            "the sender is not registered for A2P 10DLC: US carriers block its texts until the brand and campaign are registered"
        }
        _ => return None,
    })
}

/// Reads Twilio's answer to a create: its HTTP status and body.
pub fn answer(status: u16, body: &[u8]) -> Answer {
    if (200..300).contains(&status) {
        return match serde_json::from_slice::<MessageResource>(body) {
            Ok(m) if !m.sid.is_empty() => Answer::Accepted(m),
            // Twilio took it but the box cannot tell which message it is: retrying could send it
            // twice, so it is not retried.
            _ => Answer::Permanent { code: None, why: format!("HTTP {status} without a readable Message SID") },
        };
    }
    let error = serde_json::from_slice::<ApiError>(body).ok();
    let code = error.as_ref().and_then(|e| e.code);
    let said = error.and_then(|e| e.message).unwrap_or_default();
    let why = match (code.and_then(explain), said.is_empty()) {
        (Some(known), _) => format!("{known} (Twilio error {}, HTTP {status})", code.unwrap_or_default()),
        (None, false) => format!("{said} (Twilio error {}, HTTP {status})", code.map_or("-".into(), |c| c.to_string())),
        (None, true) => format!("HTTP {status} from Twilio"),
    };
    if status == 429 || status >= 500 || code == Some(20429) {
        Answer::Retry { code, why }
    } else {
        Answer::Permanent { code, why }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_names_sender_by_kind() {
        let m = NewMessage { to: "+15035550123", from: "+15035550100", body: "Hi & bye", status_callback: None };
        assert_eq!(m.form(), "To=%2B15035550123&From=%2B15035550100&Body=Hi+%26+bye");
        let m = NewMessage { from: "MG0123456789abcdef0123456789abcdef", status_callback: Some("https://x/cb"), ..m };
        assert!(m.form().contains("MessagingServiceSid=MG0123"), "{}", m.form());
        assert!(m.form().ends_with("StatusCallback=https%3A%2F%2Fx%2Fcb"), "{}", m.form());
    }

    #[test]
    fn answers_sort_into_accept_retry_never() {
        let ok = br#"{"sid":"SM0123456789abcdef0123456789abcdef","status":"queued"}"#;
        assert!(matches!(answer(201, ok), Answer::Accepted(m) if m.status.as_deref() == Some("queued")));
        assert!(matches!(answer(201, b"{}"), Answer::Permanent { .. }), "no SID: not retried");
        let stop = br#"{"code":21610,"message":"Attempt to send to unsubscribed recipient","status":400}"#;
        assert!(matches!(answer(400, stop), Answer::Permanent { code: Some(21610), why } if why.contains("STOP")));
        assert!(matches!(answer(429, b""), Answer::Retry { code: None, .. }));
        assert!(matches!(answer(503, b"<html>"), Answer::Retry { .. }));
        let odd = br#"{"code":29999,"message":"Something new","status":400}"#;
        assert!(matches!(answer(400, odd), Answer::Permanent { why, .. } if why.contains("Something new")));
    }
}

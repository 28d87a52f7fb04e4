//! `X-Twilio-Signature` validation.
//!
//! Twilio signs `base64(HMAC-SHA1(auth token, URL + sorted POST params))`. The URL is the one
//! Twilio requested: the configured public origin followed by the request target exactly as it
//! arrived (no decoding, no re-encoding). Because Twilio's own handling of the port differs by
//! product, every official library accepts the URL both with and without the port; so do we.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use crate::config::PublicUrl;

type HmacSha1 = Hmac<Sha1>;

/// Which URL form a valid signature was computed over; logged to help installers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matched {
    /// The URL exactly as `public_url` spells it.
    AsConfigured,
    /// The URL with the port removed.
    WithoutPort,
    /// The URL with the default port added.
    WithPort,
    /// The WebSocket URL with a trailing slash added (Twilio's documented quirk).
    TrailingSlash,
}

/// Checks Twilio request signatures for one account and one public origin.
#[derive(Clone)]
pub struct Validator {
    token: Vec<u8>,
    public_url: PublicUrl,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator").field("public_url", &self.public_url).finish_non_exhaustive()
    }
}

impl Validator {
    /// A validator for `auth_token` and requests addressed to `public_url`.
    pub fn new(auth_token: &str, public_url: PublicUrl) -> Self {
        Self { token: auth_token.as_bytes().to_vec(), public_url }
    }

    /// Validates a form POST. `target` is the request's path and query exactly as received;
    /// `params` are the decoded form fields in any order.
    pub fn validate_form(&self, target: &str, params: &[(String, String)], signature: &str) -> Option<Matched> {
        let candidates = [
            (Matched::AsConfigured, self.public_url.origin()),
            (Matched::WithoutPort, self.public_url.origin_without_port()),
            (Matched::WithPort, self.public_url.origin_with_port()),
        ];
        let mut tried: Vec<&str> = Vec::with_capacity(3);
        for (how, origin) in &candidates {
            if tried.contains(&origin.as_str()) {
                continue;
            }
            tried.push(origin);
            if signature_matches(&self.token, &format!("{origin}{target}"), params, signature) {
                return Some(*how);
            }
        }
        None
    }

    /// Validates the WebSocket upgrade of a media stream: signed over the `wss://` URL with no
    /// params; Twilio's docs say to also try the path with a trailing `/`.
    pub fn validate_websocket(&self, target: &str, signature: &str) -> Option<Matched> {
        let origin = self.public_url.wss_origin();
        if signature_matches(&self.token, &format!("{origin}{target}"), &[], signature) {
            return Some(Matched::AsConfigured);
        }
        let slashed = match target.split_once('?') {
            Some((path, query)) => format!("{origin}{path}/?{query}"),
            None => format!("{origin}{target}/"),
        };
        signature_matches(&self.token, &slashed, &[], signature).then_some(Matched::TrailingSlash)
    }
}

/// Computes the signature Twilio would send for `url` and `params` (base64, 28 characters).
pub fn compute(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    BASE64.encode(mac(auth_token.as_bytes(), url, params).finalize().into_bytes())
}

fn mac(token: &[u8], url: &str, params: &[(String, String)]) -> HmacSha1 {
    let mut mac = <HmacSha1 as Mac>::new_from_slice(token).expect("HMAC accepts keys of any length");
    mac.update(url.as_bytes());
    // Sort by name (bytes), then by value: repeated names contribute each distinct value once,
    // in sorted order, as the official libraries do.
    let mut sorted: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    sorted.sort_unstable();
    sorted.dedup();
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    mac
}

fn signature_matches(token: &[u8], url: &str, params: &[(String, String)], signature: &str) -> bool {
    let Ok(given) = BASE64.decode(signature.trim()) else {
        return false;
    };
    let expected = mac(token, url, params).finalize().into_bytes();
    given.len() == expected.len() && bool::from(given.as_slice().ct_eq(expected.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn docs_worked_example() {
        let params = p(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675310"),
            ("Digits", "1234"),
            ("From", "+14158675310"),
            ("To", "+18005551212"),
        ]);
        assert_eq!(
            compute("12345", "https://example.com/myapp.php?foo=1&bar=2", &params),
            "L/OH5YylLD5NRKLltdqwSvS0BnU="
        );
    }

    #[test]
    fn port_variants_are_accepted() {
        let params = p(&[("CallSid", "CA1")]);
        let sig_plain = compute("t", "https://shop.example.com/x?a=1", &params);
        let sig_443 = compute("t", "https://shop.example.com:443/x?a=1", &params);
        let v = Validator::new("t", PublicUrl::parse("https://shop.example.com").unwrap());
        assert_eq!(v.validate_form("/x?a=1", &params, &sig_plain), Some(Matched::AsConfigured));
        assert_eq!(v.validate_form("/x?a=1", &params, &sig_443), Some(Matched::WithPort));
        assert_eq!(v.validate_form("/x?a=2", &params, &sig_plain), None);
        assert_eq!(v.validate_form("/x?a=1", &params, "not base64!"), None);
        assert_eq!(v.validate_form("/x?a=1", &params, ""), None);
    }

    #[test]
    fn websocket_trailing_slash() {
        let v =
            Validator::new("a1b2c3d4e5f60718293a4b5c6d7e8f90", PublicUrl::parse("https://shop.example.com").unwrap());
        assert_eq!(v.validate_websocket("/media", "O76Jlq/elr9jysoOeCupTRpSFLs="), Some(Matched::AsConfigured));
        assert_eq!(v.validate_websocket("/media", "DmXZtHGBwFimvOjoFBD3trfRLYI="), Some(Matched::TrailingSlash));
        assert_eq!(v.validate_websocket("/other", "O76Jlq/elr9jysoOeCupTRpSFLs="), None);
    }
}

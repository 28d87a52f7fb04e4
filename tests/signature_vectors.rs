//! Twilio's official signature test vectors (twilio-python/node/ruby/go test suites and
//! Twilio's docs, re-computed in shared/reference/twilio.md §4.7–4.8), run through the same
//! validator the server uses.

#![allow(clippy::unwrap_used)]

use callbox::config::PublicUrl;
use callbox::twilio::signature::{self, Validator};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
struct Vector {
    id: String,
    auth_token: String,
    signed_url: String,
    #[serde(default)]
    params: Vec<(String, String)>,
    expected_signature: Option<String>,
    signature_that_must_be_rejected: Option<String>,
}

fn vectors() -> Vec<Vector> {
    let text = include_str!("fixtures/twilio-signature-vectors.json");
    serde_json::from_str::<Vectors>(text).unwrap().vectors
}

/// Splits a signed URL into the `public_url` a box would be configured with and the request
/// target it would receive.
fn split(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap();
    let slash = rest.find('/').unwrap_or(rest.len());
    let (authority, target) = rest.split_at(slash);
    (format!("{scheme}://{authority}"), target.to_owned())
}

#[test]
fn every_official_vector_is_accepted_or_rejected_as_specified() {
    let mut checked = 0;
    for v in vectors() {
        let (origin, target) = split(&v.signed_url);
        if origin.contains('@') {
            // Twilio signs URLs without credentials, and public_url refuses them; these
            // vectors only pin what the libraries compute when handed such a URL.
            assert_eq!(
                signature::compute(&v.auth_token, &v.signed_url, &v.params),
                v.expected_signature.unwrap(),
                "{}",
                v.id
            );
            continue;
        }
        if let Some(expected) = &v.expected_signature {
            assert_eq!(&signature::compute(&v.auth_token, &v.signed_url, &v.params), expected, "{}: compute", v.id);
        }
        let wss = origin.starts_with("wss://");
        let public = PublicUrl::parse(&origin.replace("wss://", "https://")).unwrap();
        let validator = Validator::new(&v.auth_token, public);
        let accepted = |sig: &str| {
            if wss {
                // The trailing-slash vector is signed over `/media/` for a request to `/media`.
                let path = target.trim_end_matches('/');
                validator.validate_websocket(path, sig).is_some()
            } else {
                validator.validate_form(&target, &v.params, sig).is_some()
            }
        };
        if let Some(sig) = &v.expected_signature {
            assert!(accepted(sig), "{}: a valid signature was refused", v.id);
            // One changed param value must break it.
            if let Some((k, val)) = v.params.first() {
                let mut tampered = v.params.clone();
                tampered[0] = (k.clone(), format!("{val}x"));
                assert!(
                    validator.validate_form(&target, &tampered, sig).is_none(),
                    "{}: tampered params accepted",
                    v.id
                );
            }
        }
        if let Some(sig) = &v.signature_that_must_be_rejected {
            assert!(!accepted(sig), "{}: a wrong signature was accepted", v.id);
        }
        checked += 1;
    }
    assert!(checked >= 19, "only {checked} vectors checked");
}

#[test]
fn port_forms_cross_validate() {
    // A box configured without a port accepts what Twilio signs with :443, and vice versa.
    let params = vec![("CallSid".to_owned(), "CA1234567890ABCDE".to_owned())];
    let with_port = signature::compute("12345", "https://mycompany.com:443/x", &params);
    let without = signature::compute("12345", "https://mycompany.com/x", &params);
    for configured in ["https://mycompany.com", "https://mycompany.com:443"] {
        let v = Validator::new("12345", PublicUrl::parse(configured).unwrap());
        assert!(v.validate_form("/x", &params, &with_port).is_some(), "{configured}");
        assert!(v.validate_form("/x", &params, &without).is_some(), "{configured}");
        assert!(v.validate_form("/y", &params, &without).is_none(), "{configured}");
    }
}

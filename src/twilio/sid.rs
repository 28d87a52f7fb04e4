//! The shapes of Twilio's identifiers. A SID from the network becomes a store key and part of
//! a file name, so anything that is not exactly Twilio's shape is refused before it is used.

/// A CallSid: `CA` followed by exactly 32 lowercase hex digits.
pub fn is_call_sid(s: &str) -> bool {
    has_shape(s, "CA")
}

/// An AccountSid: `AC` followed by exactly 32 lowercase hex digits.
pub fn is_account_sid(s: &str) -> bool {
    has_shape(s, "AC")
}

/// A StreamSid: `MZ` followed by exactly 32 lowercase hex digits.
pub fn is_stream_sid(s: &str) -> bool {
    has_shape(s, "MZ")
}

/// A MessageSid: `SM` (or `MM` for MMS) followed by exactly 32 lowercase hex digits.
pub fn is_message_sid(s: &str) -> bool {
    has_shape(s, "SM") || has_shape(s, "MM")
}

/// Any SID of the kind `prefix` (`AC`, `SK`, `MG`, …): the prefix and 32 lowercase hex digits.
pub fn has_shape(s: &str, prefix: &str) -> bool {
    s.len() == prefix.len() + 32
        && s.starts_with(prefix)
        && s.bytes().skip(prefix.len()).all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_twilios_exact_shape_passes() {
        assert!(is_call_sid("CA0123456789abcdef0123456789abcdef"));
        assert!(is_stream_sid("MZ0123456789abcdef0123456789abcdef"));
        for bad in [
            "",
            "CA",
            "CA0123456789abcdef0123456789abcde",   // 31
            "CA0123456789abcdef0123456789abcdef0", // 33
            "CA0123456789ABCDEF0123456789ABCDEF",  // upper case
            "ca0123456789abcdef0123456789abcdef",  // prefix case
            "MZ0123456789abcdef0123456789abcdef",  // another kind
            "CA0123456789abcdef0123456789abcde/",
            "CA0123456789abcdef0123456789abcde\0",
            "CA0123456789abcdef0123456789abcdé", // 34 bytes, not 34 hex digits
        ] {
            assert!(!is_call_sid(bad), "{bad:?}");
        }
        assert!(!is_stream_sid("CA0123456789abcdef0123456789abcdef"));
        assert!(!is_call_sid(&format!("CA{}", "a".repeat(5000))));
    }
}

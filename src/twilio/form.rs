//! Strict `application/x-www-form-urlencoded` decoding.
//!
//! Twilio sends well-formed UTF-8 forms. Anything else is not Twilio, and silently repairing
//! it (as lenient decoders do, turning `%zz` into text and bad bytes into U+FFFD) would also
//! change what the signature is computed over, so malformed input is refused with a reason.

use percent_encoding::percent_decode;

/// At most this many fields in one form; Twilio sends about 30.
pub const MAX_FIELDS: usize = 512;

/// Why a form body was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FormError {
    /// A `%` not followed by two hex digits.
    #[error("bad percent-encoding at byte {0}")]
    BadPercent(usize),
    /// A field decodes to bytes that are not UTF-8.
    #[error("field {0} is not valid UTF-8")]
    NotUtf8(usize),
    /// More than [`MAX_FIELDS`] fields.
    #[error("more than {MAX_FIELDS} form fields")]
    TooManyFields,
}

/// Decodes a form body into its name/value pairs, in order.
pub fn parse(body: &[u8]) -> Result<Vec<(String, String)>, FormError> {
    check_percent_escapes(body)?;
    let mut fields = Vec::new();
    for (index, pair) in body.split(|b| *b == b'&').filter(|p| !p.is_empty()).enumerate() {
        if fields.len() == MAX_FIELDS {
            return Err(FormError::TooManyFields);
        }
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        fields.push((decode(name, index)?, decode(value, index)?));
    }
    Ok(fields)
}

fn check_percent_escapes(body: &[u8]) -> Result<(), FormError> {
    let mut i = 0;
    while let Some(off) = body[i..].iter().position(|b| *b == b'%') {
        let at = i + off;
        match body.get(at + 1..at + 3) {
            Some([a, b]) if a.is_ascii_hexdigit() && b.is_ascii_hexdigit() => i = at + 3,
            _ => return Err(FormError::BadPercent(at)),
        }
    }
    Ok(())
}

fn decode(raw: &[u8], index: usize) -> Result<String, FormError> {
    let plus_as_space: Vec<u8> = raw.iter().map(|b| if *b == b'+' { b' ' } else { *b }).collect();
    percent_decode(&plus_as_space).decode_utf8().map(|s| s.into_owned()).map_err(|_| FormError::NotUtf8(index))
}

/// Looks up the first value of `name`.
pub fn get<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_twilio_style_bodies() {
        let f = parse(b"CallSid=CA1&CallerName=Zo%C3%AB+%C3%91&Empty=&Flag").unwrap();
        assert_eq!(get(&f, "CallSid"), Some("CA1"));
        assert_eq!(get(&f, "CallerName"), Some("Zoë Ñ"));
        assert_eq!(get(&f, "Empty"), Some(""));
        assert_eq!(get(&f, "Flag"), Some(""));
        assert_eq!(parse(b"").unwrap(), vec![]);
        assert_eq!(parse(b"a=%2B1").unwrap(), vec![("a".into(), "+1".into())]);
    }

    #[test]
    fn refuses_malformed_bodies() {
        assert_eq!(parse(b"a=%zz"), Err(FormError::BadPercent(2)));
        assert_eq!(parse(b"a=%4"), Err(FormError::BadPercent(2)));
        assert_eq!(parse(b"a=%"), Err(FormError::BadPercent(2)));
        assert_eq!(parse(b"a=%ff%fe"), Err(FormError::NotUtf8(0)));
        assert_eq!(parse(b"a=1&b=\xff"), Err(FormError::NotUtf8(1)));
        let many = "a=1&".repeat(MAX_FIELDS + 1);
        assert_eq!(parse(many.as_bytes()), Err(FormError::TooManyFields));
    }
}

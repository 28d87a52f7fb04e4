//! TwiML for the incoming-call webhook, written with `xmlwriter`.
//!
//! `xmlwriter` escapes only the quote character in attributes and `<` in text, so every value
//! passes through [`attr`]/[`text`] first: they escape the rest and drop the characters XML 1.0
//! cannot carry at all (NUL and other C0 controls, U+FFFE/U+FFFF). A document Twilio cannot
//! parse drops the caller, so this module guarantees well-formed output for any input.

use xmlwriter::{Indent, Options, XmlWriter};

/// Twilio's own libraries write exactly this prefix (no `standalone`).
const DECLARATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// What happens after the stream ends (the caller pressed 0, or the flow hung up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fallthrough {
    /// `<Dial>` the shop's front desk.
    Dial(String),
    /// `<Say>` a message, then `<Hangup/>`.
    SayAndHangup(String),
}

/// The answer to an incoming call: connect Twilio's media stream to the box.
#[derive(Debug, Clone)]
pub struct ConnectStream<'a> {
    /// Optional `<Say>` before connecting.
    pub greeting: Option<&'a str>,
    /// The `wss://` media-stream URL.
    pub stream_url: &'a str,
    /// Where Twilio reports stream-started/stopped/error.
    pub status_callback: Option<&'a str>,
    /// `<Parameter>`s passed to the stream's `start` message, in order.
    pub parameters: &'a [(&'a str, &'a str)],
    /// Verbs Twilio runs once the stream ends.
    pub fallthrough: Option<&'a Fallthrough>,
}

impl ConnectStream<'_> {
    /// The TwiML document.
    pub fn to_xml(&self) -> String {
        let mut w = writer();
        w.start_element("Response");
        if let Some(g) = self.greeting {
            w.start_element("Say");
            w.write_text(&text(g));
            w.end_element();
        }
        w.start_element("Connect");
        w.start_element("Stream");
        // Attributes in sorted order, as Twilio's libraries emit them.
        if let Some(cb) = self.status_callback {
            w.write_attribute("statusCallback", &attr(cb));
            w.write_attribute("statusCallbackMethod", "POST");
        }
        w.write_attribute("url", &attr(self.stream_url));
        for (name, value) in self.parameters {
            w.start_element("Parameter");
            w.write_attribute("name", &attr(name));
            w.write_attribute("value", &attr(value));
            w.end_element();
        }
        w.end_element();
        w.end_element();
        match self.fallthrough {
            Some(Fallthrough::Dial(number)) => {
                w.start_element("Dial");
                w.write_text(&text(number));
                w.end_element();
            }
            Some(Fallthrough::SayAndHangup(message)) => {
                w.start_element("Say");
                w.write_text(&text(message));
                w.end_element();
                w.start_element("Hangup");
                w.end_element();
            }
            None => {}
        }
        finish(w)
    }
}

/// The answer to a call while the shop is open: ring the front desk, and ask Twilio to tell
/// `action` whether anybody picked up. No `callerId`: Twilio then shows the caller's own
/// number at the front desk.
#[derive(Debug, Clone)]
pub struct DialFrontDesk<'a> {
    /// The front desk (`twilio.front_desk`).
    pub number: &'a str,
    /// Seconds it rings.
    pub timeout_secs: u32,
    /// Where Twilio posts the `DialCallStatus`.
    pub action: &'a str,
}

impl DialFrontDesk<'_> {
    /// The TwiML document.
    pub fn to_xml(&self) -> String {
        let mut w = writer();
        w.start_element("Response");
        w.start_element("Dial");
        w.write_attribute("action", &attr(self.action));
        w.write_attribute("method", "POST");
        w.write_attribute("timeout", &self.timeout_secs.to_string());
        w.write_text(&text(self.number));
        w.end_element();
        finish(w)
    }
}

/// `<Response><Hangup/></Response>`: the call is done (the front desk had it).
pub fn hangup() -> String {
    let mut w = writer();
    w.start_element("Response");
    w.start_element("Hangup");
    w.end_element();
    finish(w)
}

/// `<Response/>`: the empty document, for callbacks whose answer Twilio ignores.
pub fn empty_response() -> String {
    let mut w = writer();
    w.start_element("Response");
    finish(w)
}

fn writer() -> XmlWriter {
    XmlWriter::new(Options { use_single_quote: false, indent: Indent::None, attributes_indent: Indent::None })
}

fn finish(w: XmlWriter) -> String {
    let body = w.end_document();
    let mut doc = String::with_capacity(DECLARATION.len() + body.len());
    doc.push_str(DECLARATION);
    doc.push_str(&body);
    doc
}

/// True for characters XML 1.0 allows in a document.
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// Escapes an attribute value (xmlwriter adds `&quot;`). Whitespace controls become character
/// references so a parser gives back exactly the original value instead of normalising them.
fn attr(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars().filter(|c| is_xml_char(*c)) {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text content (xmlwriter adds `&lt;`).
fn text(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars().filter(|c| is_xml_char(*c)) {
        match c {
            '&' => out.push_str("&amp;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_twilio_library_golden_output() {
        // twiml-examples.md §1, generated by twilio-python 9.13.0.
        let params = [("shopId", "42"), ("callerE164", "+15035550123")];
        let doc = ConnectStream {
            greeting: None,
            stream_url: "wss://shop.example.com/media",
            status_callback: None,
            parameters: &params,
            fallthrough: None,
        }
        .to_xml();
        let golden = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="wss://shop.example.com/media"><Parameter name="shopId" value="42"/><Parameter name="callerE164" value="+15035550123"/></Stream></Connect></Response>"#;
        assert_eq!(doc, golden);
    }

    #[test]
    fn hostile_values_round_trip_through_a_parser() {
        let nasty = "Tom & Jerry's \"Auto\" <Repair> line1\nline2\tend\r Zoë 🚗";
        let params = [("note", nasty), ("ctl", "a\u{1}b\u{0}c\u{FFFE}")];
        let ft = Fallthrough::SayAndHangup("Goodbye & take care <3 \r\n".into());
        let doc = ConnectStream {
            greeting: Some("Hi <there> & \"welcome\""),
            stream_url: "wss://shop.example.com/api/v1/voice/media-stream",
            status_callback: Some("https://shop.example.com/cb?a=1&b=2"),
            parameters: &params,
            fallthrough: Some(&ft),
        }
        .to_xml();
        let parsed = roxmltree::Document::parse(&doc).unwrap();
        let values: Vec<&str> =
            parsed.descendants().filter(|n| n.has_tag_name("Parameter")).filter_map(|n| n.attribute("value")).collect();
        assert_eq!(values, vec![nasty, "abc"]);
        let says: Vec<&str> = parsed.descendants().filter(|n| n.has_tag_name("Say")).filter_map(|n| n.text()).collect();
        assert_eq!(says, vec!["Hi <there> & \"welcome\"", "Goodbye & take care <3 \r\n"]);
        let stream = parsed.descendants().find(|n| n.has_tag_name("Stream")).unwrap();
        assert_eq!(stream.attribute("statusCallback"), Some("https://shop.example.com/cb?a=1&b=2"));
    }

    #[test]
    fn empty() {
        assert_eq!(empty_response(), r#"<?xml version="1.0" encoding="UTF-8"?><Response/>"#);
    }
}

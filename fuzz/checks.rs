//! What each fuzz target checks, in one place: the libFuzzer targets in `fuzz_targets/` and
//! the regression test `tests/fuzz_regressions.rs` both call these functions, so a crash found
//! by fuzzing and kept under `fuzz/regressions/<target>/` is re-checked by plain `cargo test`.
//!
//! A check panics when the library breaks a promise: a panic inside the library, or a
//! property below that does not hold. Inputs the library rightly refuses are fine.
//!
//! Structured inputs are UTF-8 parts separated by the byte 0xFF, which never occurs in UTF-8,
//! so every string is reachable and seed files stay writable by hand (`printf 'a\377b'`).
//! An input with a part that is not UTF-8 is skipped.
//!
//! Each check returns whether the input got past the library's own refusal into the property
//! checks, so the regression test can tell that its seeds exercise them.

use callbox::calls::{Applied, CallRecord, CallStatus};
use callbox::config::{Config, EnvSecrets, PublicUrl};
use callbox::twilio::media::{self, Inbound, Outbound};
use callbox::twilio::signature::{self, Matched, Validator};
use callbox::twilio::twiml::{self, ConnectStream, Fallthrough};
use callbox::twilio::{form, webhook};

/// Separates the parts of a structured input.
pub const SEP: u8 = 0xFF;

/// The UTF-8 parts of `data`, or `None` when one is not UTF-8.
pub fn parts(data: &[u8]) -> Option<Vec<&str>> {
    data.split(|b| *b == SEP).map(|p| std::str::from_utf8(p).ok()).collect()
}

/// `form`: `[idempotency-token 0xFF] body` (the token part is ignored now that callbacks are
/// known by their signed fields; it stays so that the kept corpus still reads). The body is decoded as a webhook form; decoding
/// is consistent with a standard encoder; whatever the webhooks make of the fields is a valid
/// event, and the call record built from it survives the store's serialisation unchanged.
pub fn form(data: &[u8]) -> bool {
    let body = match data.iter().position(|b| *b == SEP) {
        Some(i) => &data[i + 1..],
        None => data,
    };
    let Ok(fields) = form::parse(body) else { return false };
    assert!(fields.len() <= form::MAX_FIELDS, "more fields than the documented limit");
    let encoded = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&fields).finish();
    assert_eq!(
        form::parse(encoded.as_bytes()).as_ref(),
        Ok(&fields),
        "re-encoded fields decode differently: {encoded:?}"
    );

    let now = jiff::Timestamp::UNIX_EPOCH;
    let sent = |name: &str| form::get(&fields, name).filter(|v| !v.is_empty());
    let events = [
        webhook::incoming_call(&fields, now),
        webhook::status_callback(&fields, now),
        webhook::stream_status(&fields, now),
    ];
    let mut any = false;
    for event in events.into_iter().flatten() {
        any = true;
        let sid = sent("CallSid").expect("an event has a CallSid");
        assert_eq!(event.call_sid, sid);
        assert!(sid.len() <= 64 && sid.bytes().all(|b| b.is_ascii_alphanumeric()), "accepted CallSid {sid:?}");
        assert!(!event.dedupe_key.is_empty(), "an event without a dedupe key cannot be de-duplicated");
        if let Some(status) = &event.status {
            // Values are clipped to 1024 bytes; the typed status spells what was sent.
            let value = sent("CallStatus").expect("a status comes from CallStatus");
            assert!(value.starts_with(status.as_str()), "{status:?} from {value:?}");
            assert_eq!(status.as_str().parse::<CallStatus>().ok().as_ref(), Some(status));
        }
        for (name, value) in &event.details {
            assert!(value.len() <= 1024 && sent(name).is_some_and(|v| v.starts_with(value.as_str())), "{name}");
        }
        let _ = event.occurred_at();

        let mut record = CallRecord::new(&event);
        assert_eq!(record.apply(event.clone()), Applied::Duplicate, "a retried event is stored once");
        let stored = serde_json::to_vec(&record).expect("call records serialise");
        let back: CallRecord = serde_json::from_slice(&stored).expect("a stored call record reads back");
        assert_eq!(back, record, "the call record changed through the store's serialisation");
    }
    any
}

/// `signature`: `token 0xFF public_url 0xFF target 0xFF header 0xFF flip 0xFF name 0xFF value …`.
/// Validation of any header never panics; a signature computed for a URL form the validator
/// accepts validates (params in any order), and a flipped byte, another token or another
/// target does not.
pub fn signature(data: &[u8]) -> bool {
    let Some(p) = parts(data) else { return false };
    let get = |i: usize| p.get(i).copied().unwrap_or("");
    let (token, url, target, header, flip) = (get(0), get(1), get(2), get(3), get(4));
    let params: Vec<(String, String)> = p
        .get(5..)
        .unwrap_or(&[])
        .chunks(2)
        .map(|kv| (kv[0].to_owned(), kv.get(1).copied().unwrap_or("").to_owned()))
        .collect();
    let _ = signature::compute(token, &format!("{url}{target}"), &params);
    let Ok(public_url) = PublicUrl::parse(url) else { return false };
    assert_eq!(PublicUrl::parse(&public_url.origin()).ok().as_ref(), Some(&public_url), "origin re-parses to itself");
    let v = Validator::new(token, public_url.clone());
    let _ = v.validate_form(target, &params, header);
    let _ = v.validate_websocket(target, header);

    let origin = public_url.origin();
    for (form_of_url, expected) in [
        (public_url.origin(), Matched::AsConfigured),
        (public_url.origin_without_port(), Matched::WithoutPort),
        (public_url.origin_with_port(), Matched::WithPort),
    ] {
        let expected = if form_of_url == origin { Matched::AsConfigured } else { expected };
        let sig = signature::compute(token, &format!("{form_of_url}{target}"), &params);
        assert_eq!(v.validate_form(target, &params, &sig), Some(expected), "{form_of_url}{target}");
        let reversed: Vec<_> = params.iter().rev().cloned().collect();
        assert_eq!(v.validate_form(target, &reversed, &sig), Some(expected), "params in another order");
        assert_eq!(Validator::new(&format!("{token}x"), public_url.clone()).validate_form(target, &params, &sig), None);
        assert_eq!(v.validate_form(&format!("{target}x"), &params, &sig), None, "another target");
        assert_forgeries_fail(&sig, flip, |forged| v.validate_form(target, &params, forged));
    }

    let wss = public_url.wss_origin();
    let sig = signature::compute(token, &format!("{wss}{target}"), &[]);
    assert_eq!(v.validate_websocket(target, &sig), Some(Matched::AsConfigured));
    assert_forgeries_fail(&sig, flip, |forged| v.validate_websocket(target, forged));
    let slashed = match target.split_once('?') {
        Some((path, query)) => format!("{wss}{path}/?{query}"),
        None => format!("{wss}{target}/"),
    };
    let sig = signature::compute(token, &slashed, &[]);
    assert_eq!(v.validate_websocket(target, &sig), Some(Matched::TrailingSlash));
    true
}

/// A valid signature with one bit of its MAC flipped, or one byte of its text changed, is
/// refused. `flip` picks the position and the change.
fn assert_forgeries_fail(sig: &str, flip: &str, validate: impl Fn(&str) -> Option<Matched>) {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    let f = flip.as_bytes();
    let at = usize::from(f.first().copied().unwrap_or(0));
    let mask = f.get(1).copied().filter(|m| *m != 0).unwrap_or(1);

    let mut mac = STANDARD.decode(sig).expect("compute returns base64");
    let i = at % mac.len();
    mac[i] ^= mask;
    let forged = STANDARD.encode(&mac);
    assert_eq!(validate(&forged), None, "MAC byte {i} ^ {mask:#04x} still validates: {forged}");

    let mut text = sig.as_bytes().to_vec();
    let i = at % text.len();
    text[i] ^= mask;
    if let Ok(forged) = std::str::from_utf8(&text) {
        assert_eq!(validate(forged), None, "signature text byte {i} ^ {mask:#04x} still validates: {forged:?}");
    }
}

/// `media_json`: the input as one WebSocket text frame, inbound and outbound. A decoded
/// message encodes to text that decodes to the same message (also through the plain serde
/// model a relay would use); a decoded payload re-encodes to the same base64. Then the
/// outbound constructors are fed `sid 0xFF mark 0xFF audio…` and must round-trip too.
pub fn media_json(data: &[u8]) -> bool {
    let mut decoded_any = false;
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(message) = media::decode_inbound(text) {
            decoded_any = true;
            let encoded = media::encode(&message);
            assert_eq!(media::decode_inbound(&encoded).ok().as_ref(), Some(&message), "inbound: {encoded}");
            assert_eq!(serde_json::from_str::<Inbound>(&encoded).ok().as_ref(), Some(&message), "serde: {encoded}");
            if let Inbound::Media { media: m, .. } = &message {
                assert_payload_round_trips(&m.payload);
            }
        }
        if let Ok(message) = media::decode_outbound(text) {
            decoded_any = true;
            assert_outbound_round_trips(&message);
            if let Outbound::Media { media: m, .. } = &message {
                assert_payload_round_trips(&m.payload);
            }
        }
    }
    let mut p = data.splitn(3, |b| *b == SEP);
    let (Some(Ok(sid)), Some(Ok(mark))) = (p.next().map(std::str::from_utf8), p.next().map(std::str::from_utf8)) else {
        return decoded_any;
    };
    let audio = p.next().unwrap_or(&[]);
    for message in [Outbound::media(sid, audio), Outbound::mark(sid, mark), Outbound::clear(sid)] {
        assert_outbound_round_trips(&message);
        assert_outbound_round_trips(&message.clone().with_stream_sid(mark));
    }
    let mut decoded = Vec::new();
    if let Outbound::Media { media: m, .. } = Outbound::media(sid, audio) {
        media::decode_payload(&m.payload, &mut decoded).expect("the box's own payload decodes");
        assert_eq!(decoded, audio, "audio changed through base64");
    }
    decoded_any
}

fn assert_outbound_round_trips(message: &Outbound) {
    let encoded = media::encode(message);
    assert_eq!(media::decode_outbound(&encoded).ok().as_ref(), Some(message), "outbound: {encoded}");
}

fn assert_payload_round_trips(payload: &str) {
    use base64::Engine as _;
    let mut audio = Vec::new();
    if media::decode_payload(payload, &mut audio).is_ok() {
        assert_eq!(base64::engine::general_purpose::STANDARD.encode(&audio), payload, "payload is not canonical");
    }
}

/// `twiml`: `From 0xFF To 0xFF CallSid 0xFF stream_url 0xFF status_callback 0xFF greeting
/// 0xFF fallthrough 0xFF name 0xFF value …`; a missing part is `None`, a fallthrough starting
/// with `D` dials the rest, any other says it. The document is well-formed XML, and every
/// value parsed back equals the input with the characters XML cannot carry dropped.
pub fn twiml(data: &[u8]) -> bool {
    let Some(p) = parts(data) else { return false };
    let get = |i: usize| p.get(i).copied();
    let fallthrough = get(6).map(|f| match f.strip_prefix('D') {
        Some(number) => Fallthrough::Dial(number.to_owned()),
        None => Fallthrough::SayAndHangup(f.to_owned()),
    });
    // The incoming-call answer passes From, To and CallSid; extra pairs stand for parameters
    // a later version may add.
    let mut parameters =
        vec![("From", get(0).unwrap_or("")), ("To", get(1).unwrap_or("")), ("CallSid", get(2).unwrap_or(""))];
    parameters.extend(p.get(7..).unwrap_or(&[]).chunks(2).map(|kv| (kv[0], kv.get(1).copied().unwrap_or(""))));
    let answer = ConnectStream {
        greeting: get(5),
        stream_url: get(3).unwrap_or("wss://shop.example.com/media"),
        status_callback: get(4),
        parameters: &parameters,
        fallthrough: fallthrough.as_ref(),
    };
    let xml = answer.to_xml();
    let doc = match roxmltree::Document::parse(&xml) {
        Ok(doc) => doc,
        Err(e) => panic!("TwiML is not well-formed XML ({e}): {xml:?}"),
    };
    let kept = |s: &str| s.chars().filter(|c| twiml::is_xml_char(*c)).collect::<String>();
    let root = doc.root_element();
    assert!(root.has_tag_name("Response"), "{xml:?}");

    let stream = root.descendants().find(|n| n.has_tag_name("Stream")).expect("a <Stream>");
    assert_eq!(stream.attribute("url"), Some(kept(answer.stream_url).as_str()), "url in {xml:?}");
    assert_eq!(stream.attribute("statusCallback").map(str::to_owned), answer.status_callback.map(kept), "{xml:?}");
    let parsed: Vec<(&str, &str)> = stream
        .children()
        .filter(|n| n.has_tag_name("Parameter"))
        .map(|n| (n.attribute("name").unwrap_or("<none>"), n.attribute("value").unwrap_or("<none>")))
        .collect();
    let expected: Vec<(String, String)> = parameters.iter().map(|(k, v)| (kept(k), kept(v))).collect();
    let parsed: Vec<(String, String)> = parsed.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    assert_eq!(parsed, expected, "<Parameter>s in {xml:?}");

    let text_of = |name: &str| -> Vec<String> {
        root.children().filter(|n| n.has_tag_name(name)).map(|n| n.text().unwrap_or("").to_owned()).collect()
    };
    let mut says = Vec::new();
    says.extend(answer.greeting.map(kept));
    match &fallthrough {
        Some(Fallthrough::Dial(number)) => assert_eq!(text_of("Dial"), vec![kept(number)], "{xml:?}"),
        Some(Fallthrough::SayAndHangup(message)) => {
            says.push(kept(message));
            assert_eq!(text_of("Hangup").len(), 1, "{xml:?}");
        }
        None => assert!(text_of("Dial").is_empty() && text_of("Hangup").is_empty(), "{xml:?}"),
    }
    assert_eq!(text_of("Say"), says, "<Say> in {xml:?}");
    true
}

/// `config`: `toml 0xFF env-auth-token 0xFF env-admin-token`. Parsing and validation return an
/// error for anything they refuse and never panic. An accepted config renders (`callbox check`)
/// as TOML, its public URL re-parses to itself, and the secrets do not show: changing them
/// changes neither the rendering nor the `Debug` output.
pub fn config(data: &[u8]) -> bool {
    let Some(p) = parts(data) else { return false };
    let text = p[0];
    let env = |auth: Option<&str>, admin: Option<&str>| EnvSecrets {
        twilio_auth_token: auth.map(str::to_owned),
        admin_token: admin.map(str::to_owned),
        twilio_api_key_secret: None,
    };
    let (auth, admin) = (p.get(1).copied(), p.get(2).copied());
    let path = std::path::Path::new("fuzz.toml");
    let config = match Config::from_toml(text, path, &env(auth, admin)) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return false;
        }
    };
    let shown = config.to_redacted_toml();
    assert!(shown.parse::<toml::Table>().is_ok(), "the rendered config is not TOML: {shown}");
    assert_eq!(PublicUrl::parse(&config.public_url.origin()).ok().as_ref(), Some(&config.public_url));
    if let (Some(auth), Some(admin)) = (auth, admin) {
        // Another Auth Token of the same shape (reversed), another admin token (longer).
        let other_auth: String = auth.chars().rev().collect();
        let other = Config::from_toml(text, path, &env(Some(&other_auth), Some(&format!("Q{admin}Q"))))
            .expect("other secrets of the same shape are as valid");
        assert_eq!(other.to_redacted_toml(), shown, "a secret shows in the rendered config");
        assert_eq!(format!("{other:?}"), format!("{config:?}"), "a secret shows in Debug output");
    }
    true
}

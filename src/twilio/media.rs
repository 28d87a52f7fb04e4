//! The Media Streams WebSocket protocol as typed messages, both directions.
//!
//! Every frame is one JSON object selected by `event`. Twilio adds fields and events without
//! notice, so unknown fields are ignored and unknown events decode to [`Inbound::Unknown`]
//! instead of failing. Numbers Twilio sends as strings (`sequenceNumber`, `chunk`,
//! `timestamp`) stay strings here and are parsed where they are used.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

/// Samples in one 20 ms frame of 8 kHz audio (and bytes of μ-law).
pub const FRAME_SAMPLES: usize = 160;

/// A message from Twilio (or from anything playing Twilio: the simulator, a relay's view of
/// the box).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Inbound {
    /// The first message on a socket.
    Connected {
        /// `"Call"`.
        #[serde(default)]
        protocol: String,
        /// `"1.0.0"`.
        #[serde(default)]
        version: String,
    },
    /// The stream's metadata; once, right after `connected`.
    Start {
        /// Message counter, as a string.
        #[serde(rename = "sequenceNumber", default, skip_serializing_if = "Option::is_none")]
        sequence_number: Option<String>,
        /// The stream.
        #[serde(rename = "streamSid")]
        stream_sid: String,
        /// The details.
        start: Start,
    },
    /// 20 ms (usually) of caller audio.
    Media {
        /// Message counter, as a string.
        #[serde(rename = "sequenceNumber", default, skip_serializing_if = "Option::is_none")]
        sequence_number: Option<String>,
        /// The stream.
        #[serde(rename = "streamSid")]
        stream_sid: String,
        /// The audio.
        media: InboundMedia,
    },
    /// A key the caller pressed.
    Dtmf {
        /// Message counter, as a string.
        #[serde(rename = "sequenceNumber", default, skip_serializing_if = "Option::is_none")]
        sequence_number: Option<String>,
        /// The stream.
        #[serde(rename = "streamSid")]
        stream_sid: String,
        /// The key.
        dtmf: Dtmf,
    },
    /// The echo of a mark the box sent: everything queued before it has played (or was cleared).
    Mark {
        /// Message counter, as a string.
        #[serde(rename = "sequenceNumber", default, skip_serializing_if = "Option::is_none")]
        sequence_number: Option<String>,
        /// The stream.
        #[serde(rename = "streamSid")]
        stream_sid: String,
        /// The mark.
        mark: MarkName,
    },
    /// The stream stopped (the call ended or the stream was stopped); the socket closes next.
    Stop {
        /// Message counter, as a string.
        #[serde(rename = "sequenceNumber", default, skip_serializing_if = "Option::is_none")]
        sequence_number: Option<String>,
        /// The stream.
        #[serde(rename = "streamSid")]
        stream_sid: String,
        /// The details.
        #[serde(default)]
        stop: Stop,
    },
    /// An event this version does not know; logged and ignored.
    #[serde(other)]
    Unknown,
}

/// `start` details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Start {
    /// The stream.
    pub stream_sid: String,
    /// The account.
    #[serde(default)]
    pub account_sid: String,
    /// The call the stream belongs to.
    pub call_sid: String,
    /// `inbound` and/or `outbound`.
    #[serde(default)]
    pub tracks: Vec<String>,
    /// The `<Parameter>`s of the TwiML `<Stream>`.
    #[serde(default)]
    pub custom_parameters: HashMap<String, String>,
    /// Always μ-law, 8 kHz, mono.
    #[serde(default)]
    pub media_format: MediaFormat,
}

/// The audio format of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFormat {
    /// `audio/x-mulaw`.
    pub encoding: String,
    /// 8000.
    pub sample_rate: u32,
    /// 1.
    pub channels: u16,
}

impl Default for MediaFormat {
    fn default() -> Self {
        Self { encoding: "audio/x-mulaw".into(), sample_rate: 8000, channels: 1 }
    }
}

/// Inbound `media` details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundMedia {
    /// `inbound` or `outbound`.
    #[serde(default)]
    pub track: String,
    /// Frame counter from `"1"`.
    #[serde(default)]
    pub chunk: String,
    /// Milliseconds since the stream started.
    #[serde(default)]
    pub timestamp: String,
    /// Base64 μ-law.
    pub payload: String,
}

/// `dtmf` details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dtmf {
    /// Always `inbound_track`.
    #[serde(default)]
    pub track: String,
    /// One of `0`–`9`, `*`, `#`.
    pub digit: String,
}

/// A mark's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarkName {
    /// The name the box chose.
    pub name: String,
}

/// `stop` details.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stop {
    /// The account.
    #[serde(default)]
    pub account_sid: String,
    /// The call.
    #[serde(default)]
    pub call_sid: String,
}

/// A message to Twilio.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Outbound {
    /// Audio to append to the caller's playback buffer.
    Media {
        /// The stream (from `start`).
        #[serde(rename = "streamSid")]
        stream_sid: String,
        /// The audio.
        media: OutboundMedia,
    },
    /// Ask Twilio to echo this name once everything queued before it has played.
    Mark {
        /// The stream.
        #[serde(rename = "streamSid")]
        stream_sid: String,
        /// The mark.
        mark: MarkName,
    },
    /// Drop everything queued for playback (barge-in); pending marks are echoed at once.
    Clear {
        /// The stream.
        #[serde(rename = "streamSid")]
        stream_sid: String,
    },
    /// An event this version does not know (only seen when decoding what an upstream sends).
    #[serde(other)]
    Unknown,
}

/// Outbound `media` details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundMedia {
    /// Base64 μ-law, no file header.
    pub payload: String,
}

impl Outbound {
    /// A media message carrying `mulaw` bytes.
    pub fn media(stream_sid: &str, mulaw: &[u8]) -> Self {
        Self::Media { stream_sid: stream_sid.to_owned(), media: OutboundMedia { payload: BASE64.encode(mulaw) } }
    }

    /// A mark message.
    pub fn mark(stream_sid: &str, name: &str) -> Self {
        Self::Mark { stream_sid: stream_sid.to_owned(), mark: MarkName { name: name.to_owned() } }
    }

    /// A clear message.
    pub fn clear(stream_sid: &str) -> Self {
        Self::Clear { stream_sid: stream_sid.to_owned() }
    }

    /// The message with its stream SID replaced (a relay forwards an upstream's messages to
    /// the stream Twilio opened).
    pub fn with_stream_sid(self, sid: &str) -> Self {
        match self {
            Self::Media { media, .. } => Self::Media { stream_sid: sid.to_owned(), media },
            Self::Mark { mark, .. } => Self::Mark { stream_sid: sid.to_owned(), mark },
            Self::Clear { .. } => Self::Clear { stream_sid: sid.to_owned() },
            Self::Unknown => Self::Unknown,
        }
    }
}

/// Why a frame could not be read as a protocol message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame is not JSON, or a known event lacks a required field.
    #[error("invalid message: {0}")]
    Json(#[from] serde_json::Error),
    /// A media payload is not base64.
    #[error("media payload is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
}

/// Every field any inbound event has, decoded in one pass. serde's internally tagged enums
/// first buffer the whole object into an intermediate tree; at 50 messages a second per call
/// that buffering was the largest cost of a stream, so [`decode_inbound`] goes through this
/// flat struct instead.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(rename = "sequenceNumber", default)]
    sequence_number: Option<String>,
    #[serde(rename = "streamSid", default)]
    stream_sid: Option<String>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    start: Option<Start>,
    #[serde(default)]
    media: Option<InboundMedia>,
    #[serde(default)]
    dtmf: Option<Dtmf>,
    #[serde(default)]
    mark: Option<MarkName>,
    #[serde(default)]
    stop: Option<Stop>,
}

/// Just the event name, for messages of unknown events whose fields do not fit [`Envelope`].
#[derive(Deserialize)]
struct EventOnly<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
}

const KNOWN_EVENTS: [&str; 6] = ["connected", "start", "media", "dtmf", "mark", "stop"];

/// Decodes one text frame from Twilio.
pub fn decode_inbound(text: &str) -> Result<Inbound, DecodeError> {
    let e: Envelope<'_> = match serde_json::from_str(text) {
        Ok(e) => e,
        Err(err) => {
            // An event this version does not know may carry fields of any shape.
            return match serde_json::from_str::<EventOnly<'_>>(text) {
                Ok(only) if !KNOWN_EVENTS.contains(&only.event.as_ref()) => Ok(Inbound::Unknown),
                _ => Err(err.into()),
            };
        }
    };
    let Envelope { event, sequence_number, stream_sid, protocol, version, start, media, dtmf, mark, stop } = e;
    let missing = |field: &str| -> DecodeError {
        DecodeError::Json(serde::de::Error::custom(format!("{event} event without `{field}`")))
    };
    Ok(match event.as_ref() {
        "connected" => {
            Inbound::Connected { protocol: protocol.unwrap_or_default(), version: version.unwrap_or_default() }
        }
        "start" => Inbound::Start {
            stream_sid: stream_sid.ok_or_else(|| missing("streamSid"))?,
            sequence_number,
            start: start.ok_or_else(|| missing("start"))?,
        },
        "media" => Inbound::Media {
            stream_sid: stream_sid.ok_or_else(|| missing("streamSid"))?,
            sequence_number,
            media: media.ok_or_else(|| missing("media"))?,
        },
        "dtmf" => Inbound::Dtmf {
            stream_sid: stream_sid.ok_or_else(|| missing("streamSid"))?,
            sequence_number,
            dtmf: dtmf.ok_or_else(|| missing("dtmf"))?,
        },
        "mark" => Inbound::Mark {
            stream_sid: stream_sid.ok_or_else(|| missing("streamSid"))?,
            sequence_number,
            mark: mark.ok_or_else(|| missing("mark"))?,
        },
        "stop" => Inbound::Stop {
            stream_sid: stream_sid.ok_or_else(|| missing("streamSid"))?,
            sequence_number,
            stop: stop.unwrap_or_default(),
        },
        _ => Inbound::Unknown,
    })
}

/// Decodes one text frame sent to Twilio (what an upstream agent or the box sends).
pub fn decode_outbound(text: &str) -> Result<Outbound, DecodeError> {
    Ok(serde_json::from_str(text)?)
}

/// Encodes a message as the JSON text of one frame.
pub fn encode<T: Serialize>(message: &T) -> String {
    // Serialising these plain structs (strings and maps of strings) cannot fail.
    serde_json::to_string(message).expect("media stream messages always serialise")
}

/// Decodes a base64 μ-law payload into `out` (cleared first), reusing its allocation.
pub fn decode_payload(payload: &str, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    out.clear();
    BASE64.decode_vec(payload, out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_examples_decode() {
        let start = r#"{"event":"start","sequenceNumber":"1","streamSid":"MZ5f","start":{"streamSid":"MZ5f","accountSid":"AC1","callSid":"CAab","tracks":["inbound"],"customParameters":{"shopId":"42"},"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}"#;
        let Inbound::Start { start, .. } = decode_inbound(start).unwrap() else { panic!("not start") };
        assert_eq!(start.call_sid, "CAab");
        assert_eq!(start.custom_parameters["shopId"], "42");
        assert_eq!(start.media_format.sample_rate, 8000);

        let payload = BASE64.encode([0xFFu8; 160]);
        let media = format!(
            r#"{{"event":"media","sequenceNumber":"2","streamSid":"MZ5f","media":{{"track":"inbound","chunk":"1","timestamp":"0","payload":"{payload}"}}}}"#
        );
        let Inbound::Media { media, .. } = decode_inbound(&media).unwrap() else { panic!("not media") };
        let mut out = Vec::new();
        decode_payload(&media.payload, &mut out).unwrap();
        assert_eq!(out, vec![0xFF; 160]);

        let dtmf = r##"{"event":"dtmf","sequenceNumber":"57","streamSid":"MZ5f","dtmf":{"track":"inbound_track","digit":"#"}}"##;
        assert!(matches!(decode_inbound(dtmf).unwrap(), Inbound::Dtmf { dtmf, .. } if dtmf.digit == "#"));
        let stop =
            r#"{"event":"stop","sequenceNumber":"9","streamSid":"MZ5f","stop":{"accountSid":"AC1","callSid":"CAab"}}"#;
        assert!(matches!(decode_inbound(stop).unwrap(), Inbound::Stop { .. }));
        let connected = r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#;
        assert!(matches!(decode_inbound(connected).unwrap(), Inbound::Connected { .. }));
    }

    #[test]
    fn unknown_events_and_fields_are_tolerated_but_garbage_is_not() {
        assert_eq!(decode_inbound(r#"{"event":"transcript","text":"hi"}"#).unwrap(), Inbound::Unknown);
        let extra = r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"g","extra":1},"new":true}"#;
        assert!(matches!(decode_inbound(extra).unwrap(), Inbound::Mark { mark, .. } if mark.name == "g"));
        assert!(decode_inbound("not json").is_err());
        assert!(decode_inbound(r#"{"event":"media","streamSid":"MZ1"}"#).is_err());
        assert!(decode_inbound(r#"{"no":"event"}"#).is_err());
    }

    #[test]
    fn fast_decoder_agrees_with_the_serde_model() {
        let start = Inbound::Start {
            sequence_number: Some("1".into()),
            stream_sid: "MZ1".into(),
            start: Start {
                stream_sid: "MZ1".into(),
                account_sid: "AC1".into(),
                call_sid: "CA1".into(),
                tracks: vec!["inbound".into()],
                custom_parameters: [("To".to_owned(), "+1".to_owned())].into(),
                media_format: MediaFormat::default(),
            },
        };
        let media = Inbound::Media {
            sequence_number: Some("2".into()),
            stream_sid: "MZ1".into(),
            media: InboundMedia {
                track: "inbound".into(),
                chunk: "1".into(),
                timestamp: "0".into(),
                payload: "//8=".into(),
            },
        };
        let stop = Inbound::Stop { sequence_number: None, stream_sid: "MZ1".into(), stop: Stop::default() };
        for m in [start, media, stop] {
            let text = encode(&m);
            assert_eq!(decode_inbound(&text).unwrap(), m, "{text}");
            assert_eq!(serde_json::from_str::<Inbound>(&text).unwrap(), m);
        }
        // Unknown events may reuse a known field name with another shape.
        assert_eq!(decode_inbound(r#"{"event":"x","media":"text"}"#).unwrap(), Inbound::Unknown);
        assert!(decode_inbound(r#"{"event":"media","media":"text","streamSid":"MZ1"}"#).is_err());
        assert!(decode_inbound(r#"{"event":"mark","streamSid":"MZ1"}"#).is_err());
    }

    #[test]
    fn outbound_round_trip_matches_reference_shape() {
        let m = Outbound::media("MZ1", &[0xFF; 2]);
        assert_eq!(encode(&m), r#"{"event":"media","streamSid":"MZ1","media":{"payload":"//8="}}"#);
        assert_eq!(encode(&Outbound::clear("MZ1")), r#"{"event":"clear","streamSid":"MZ1"}"#);
        let mark = encode(&Outbound::mark("MZ1", "greeting"));
        assert_eq!(mark, r#"{"event":"mark","streamSid":"MZ1","mark":{"name":"greeting"}}"#);
        assert_eq!(decode_outbound(&mark).unwrap().with_stream_sid("MZ2"), Outbound::mark("MZ2", "greeting"));
    }
}

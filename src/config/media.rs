//! `[media]`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[media]`: what the box does with a call's media stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// WAV file played to callers before the beep (any rate, mono or stereo; resampled to
    /// 8 kHz mono). Without one, a short built-in prompt tone is played.
    pub greeting_wav: Option<PathBuf>,
    /// The greeting while the shop is closed (`[hours]`); `greeting_wav` when unset.
    pub after_hours_greeting_wav: Option<PathBuf>,
    /// The flow while the shop is closed; the flow of the called number when unset.
    pub after_hours_flow: Option<FlowKind>,
    /// Longest voicemail kept, in seconds; the stream ends when it is reached.
    pub max_recording_secs: u32,
    /// The flow for calls to numbers not listed in `flows`.
    pub default_flow: FlowKind,
    /// Flow per called number (`To`, E.164), e.g. `"+15035550100" = "relay"`.
    pub flows: std::collections::BTreeMap<String, FlowKind>,
    /// The voice agent's WebSocket (`ws://host:port/path`) for the `relay` flow.
    pub relay_url: Option<String>,
    /// Milliseconds the relay waits for the agent to connect before falling back to voicemail.
    pub relay_connect_timeout_ms: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            greeting_wav: None,
            after_hours_greeting_wav: None,
            after_hours_flow: None,
            max_recording_secs: 120,
            default_flow: FlowKind::Voicemail,
            flows: Default::default(),
            relay_url: None,
            relay_connect_timeout_ms: 2000,
        }
    }
}

/// A call flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowKind {
    /// Greeting, then record a message; `0` goes to the front desk.
    #[default]
    Voicemail,
    /// Relay the stream to the voice agent, falling back to voicemail.
    Relay,
}

impl FlowKind {
    /// The name used in config, logs and the call record.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Voicemail => "voicemail",
            Self::Relay => "relay",
        }
    }
}

impl MediaConfig {
    /// The flow for a call to `to`; `after_hours` when the shop is closed (`[hours]`).
    pub fn flow_for(&self, to: Option<&str>, after_hours: bool) -> FlowKind {
        let per_number = to.and_then(|t| self.flows.get(t.trim())).copied().unwrap_or(self.default_flow);
        if after_hours { self.after_hours_flow.unwrap_or(per_number) } else { per_number }
    }

    /// The relay connect timeout as a duration.
    pub fn relay_connect_timeout(&self) -> Duration {
        Duration::from_millis(self.relay_connect_timeout_ms)
    }

    pub(super) fn validate(&self, errs: &mut Vec<ConfigError>) {
        if self.max_recording_secs == 0 {
            errs.push(ConfigError::invalid("media.max_recording_secs", "must be at least 1"));
        }
        if self.relay_connect_timeout_ms == 0 {
            errs.push(ConfigError::invalid("media.relay_connect_timeout_ms", "must be at least 1"));
        }
        for (key, wav) in [
            ("media.greeting_wav", &self.greeting_wav),
            ("media.after_hours_greeting_wav", &self.after_hours_greeting_wav),
        ] {
            if let Some(path) = wav
                && !path.is_absolute()
            {
                errs.push(ConfigError::invalid(key, format!("must be an absolute path (got {path:?})")));
            }
        }
        let relay_used = self.default_flow == FlowKind::Relay
            || self.flows.values().any(|f| *f == FlowKind::Relay)
            || self.after_hours_flow == Some(FlowKind::Relay);
        let relay = match &self.relay_url {
            None if relay_used => Err(ConfigError::invalid(
                "media.relay_url",
                "is missing but a flow is \"relay\"; set it to the voice agent's ws://host:port/path",
            )),
            None => Ok(()),
            Some(u) => match url::Url::parse(u) {
                Ok(parsed) if parsed.scheme() == "ws" && parsed.host_str().is_some() => Ok(()),
                Ok(parsed) if parsed.scheme() == "wss" => Err(ConfigError::invalid(
                    "media.relay_url",
                    "wss:// is not supported for the upstream agent in this build; use ws:// on the LAN or loopback",
                )),
                _ => Err(ConfigError::invalid("media.relay_url", format!("{u:?} is not a ws://host[:port]/path URL"))),
            },
        };
        errs.extend(relay.err());
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::FlowKind;
    use crate::config::{Config, EnvSecrets};

    #[test]
    fn media_section_picks_flows_and_names_bad_keys() {
        let env = EnvSecrets::for_tests();
        let base = "public_url = \"shop.example.com\"\n[storage]\ndir = \"/tmp/x\"\n";
        let c = Config::from_toml(
            &format!("{base}[media]\nrelay_url = \"ws://127.0.0.1:9000/agent\"\n[media.flows]\n\"+15035550100\" = \"relay\"\n"),
            Path::new("t"),
            &env,
        )
        .unwrap();
        assert_eq!(c.media.flow_for(Some("+15035550100"), false), FlowKind::Relay);
        assert_eq!(c.media.flow_for(Some("+15035550199"), false), FlowKind::Voicemail);
        assert_eq!(c.media.flow_for(None, false), FlowKind::Voicemail);
        assert_eq!(c.media.relay_connect_timeout(), Duration::from_secs(2));
        for (bad, key) in [
            ("default_flow = \"relay\"\n", "media.relay_url"),
            ("relay_url = \"wss://agent.example.com/x\"\n", "media.relay_url"),
            ("max_recording_secs = 0\n", "media.max_recording_secs"),
            ("greeting_wav = \"greeting.wav\"\n", "media.greeting_wav"),
            ("default_flow = \"ivr\"\n", "ivr"),
        ] {
            let e = Config::from_toml(&format!("{base}[media]\n{bad}"), Path::new("t"), &env).unwrap_err();
            assert!(e.to_string().contains(key), "{bad}: {e}");
        }
    }
}

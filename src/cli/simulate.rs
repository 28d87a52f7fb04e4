//! `callbox simulate-call`: plays Twilio against a box (see [`crate::simulate`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::ConfigSource;
use crate::config::{ENV_TWILIO_AUTH_TOKEN, EnvSecrets};
use crate::simulate::{self, CallerAudio, Options};

#[derive(Debug, clap::Args)]
pub(super) struct SimulateArgs {
    /// The box's public URL exactly as its `public_url` says (requests are signed over it),
    /// e.g. the `public_url` line `callbox serve --dev` prints.
    #[arg(long)]
    url: String,
    /// Open the media stream here instead of the TwiML's wss:// URL (e.g. ws://127.0.0.1:8080/api/v1/voice/media-stream in dev mode).
    #[arg(long)]
    stream_url: Option<String>,
    /// The Twilio auth token the box checks signatures with (default: from the environment, or the dev data dir with --dev).
    #[arg(long, env = ENV_TWILIO_AUTH_TOKEN, hide_env_values = true)]
    auth_token: Option<String>,
    #[command(flatten)]
    source: ConfigSource,
    /// Caller number.
    #[arg(long, default_value = "+15035550123")]
    from: String,
    /// Called (shop) number.
    #[arg(long, default_value = "+15035550100")]
    to: String,
    /// What the caller says: a WAV file (any rate; resampled to 8 kHz mono). Default: a tone.
    #[arg(long)]
    wav: Option<PathBuf>,
    /// Length of the generated tone, in seconds.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Keys to press, as DIGITS@SECONDS into the message, e.g. --dtmf '#@2.5' (repeatable).
    #[arg(long, value_parser = parse_dtmf)]
    dtmf: Vec<Keys>,
    /// Send the caller's audio as fast as possible instead of in real time.
    #[arg(long)]
    fast: bool,
    /// Save the audio the box played (greeting, agent) to this WAV file.
    #[arg(long)]
    save: Option<PathBuf>,
    /// Print only the final line.
    #[arg(long, short)]
    quiet: bool,
}

/// Keys pressed at one time.
#[derive(Debug, Clone)]
struct Keys(Vec<(char, Duration)>);

fn parse_dtmf(s: &str) -> Result<Keys, String> {
    let (digits, at) = s.split_once('@').ok_or_else(|| format!("{s:?}: expected DIGITS@SECONDS, e.g. '#@2.5'"))?;
    let secs: f64 = at.parse().map_err(|_| format!("{s:?}: {at:?} is not a number of seconds"))?;
    if !(0.0..=3600.0).contains(&secs) {
        return Err(format!("{s:?}: seconds must be from 0 to 3600"));
    }
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit() || c == '*' || c == '#') {
        return Err(format!("{s:?}: digits must be 0-9, * or #"));
    }
    // Several digits at one time are pressed 100 ms apart, as a person would.
    Ok(Keys(digits.chars().enumerate().map(|(i, c)| (c, Duration::from_secs_f64(secs + 0.1 * i as f64))).collect()))
}

pub(super) fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let auth_token = match &args.auth_token {
        Some(t) if !t.trim().is_empty() => t.trim().to_owned(),
        _ if args.source.dev => super::serve::dev_config(&args.source.data_dir, &EnvSecrets::from_process())?
            .twilio
            .auth_token
            .expose()
            .to_owned(),
        _ => bail!(
            "no auth token: pass --auth-token, set {ENV_TWILIO_AUTH_TOKEN}, or use --dev --data-dir <the box's dev data dir>"
        ),
    };
    if !(0.02..=3600.0).contains(&args.seconds) {
        bail!("--seconds must be from 0.02 to 3600");
    }
    let opts = Options {
        box_url: args.url.clone(),
        stream_url: args.stream_url.clone(),
        auth_token,
        from: args.from.clone(),
        to: args.to.clone(),
        call_sid: None,
        audio: match &args.wav {
            Some(p) => CallerAudio::Wav(p.clone()),
            None => CallerAudio::Tone { hz: 440.0, duration: Duration::from_secs_f64(args.seconds) },
        },
        dtmf: args.dtmf.iter().flat_map(|k| k.0.iter().copied()).collect(),
        fast: args.fast,
        save_box_audio: args.save.clone(),
        greeting_timeout: Duration::from_secs(10),
    };
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    let summary = runtime.block_on(simulate::run(&opts, !args.quiet))?;
    println!(
        "call {} completed: {} caller frame(s) sent, {:.2} s of box audio, {} mark(s), {} clear(s), {}",
        summary.call_sid,
        summary.frames_sent,
        summary.box_audio_bytes as f64 / 8000.0,
        summary.marks.len(),
        summary.clears,
        match summary.box_closed {
            Some(code) => format!("box closed the stream ({code})"),
            None => "caller hung up".into(),
        }
    );
    Ok(())
}

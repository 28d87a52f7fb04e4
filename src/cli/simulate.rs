//! `callbox simulate-call`: plays Twilio against a box (see [`crate::simulate`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::config::{Config, ENV_TWILIO_AUTH_TOKEN, EnvSecrets};
use crate::simulate::{self, CallerAudio, Options};

#[derive(Debug, clap::Args)]
pub(super) struct SimulateArgs {
    /// Where to reach the box over plain HTTP, e.g. the `public_url` line `callbox serve --dev`
    /// prints, or http://127.0.0.1:PORT on the box itself.
    #[arg(long)]
    url: String,
    /// The box's `public_url`, which Twilio signs over (default: from --config, else --url).
    #[arg(long)]
    public_url: Option<String>,
    /// Open the media stream here (default: the TwiML's stream path on --url, as ws://).
    #[arg(long)]
    stream_url: Option<String>,
    /// The Twilio auth token the box checks signatures with (default: from the environment,
    /// --config, or the dev data dir with --dev).
    #[arg(long, env = ENV_TWILIO_AUTH_TOKEN, hide_env_values = true)]
    auth_token: Option<String>,
    /// The box's config file: take public_url and twilio.auth_token from it, to rehearse a call
    /// against the real configuration.
    #[arg(long, short, conflicts_with = "dev")]
    config: Option<PathBuf>,
    /// Rehearse against `callbox serve --dev`: the auth token comes from its data dir.
    #[arg(long)]
    dev: bool,
    /// Data directory of the dev box.
    #[arg(long, default_value = "./callbox-data", requires = "dev")]
    data_dir: PathBuf,
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
    /// Let the call ring this long before the media stream opens (the bay's LEDs and ring
    /// tone show it meanwhile), e.g. to hear the ring through the shop speaker.
    #[arg(long, default_value_t = 0.0)]
    ring_seconds: f64,
    /// Play a missed call: the caller hangs up this many seconds after the stream opens, in
    /// the greeting if it is still playing (the box then texts them back, when configured).
    #[arg(long, conflicts_with = "no_answer")]
    pub hang_up_after: Option<f64>,
    /// Play a missed call that never reached the box's flow: Twilio reports no-answer after
    /// the ring (--ring-seconds), and no stream opens.
    #[arg(long)]
    pub no_answer: bool,
    /// When the box rings the front desk first (business hours, open): somebody picks up.
    /// Without it nobody does, and the call comes back to the box's flow.
    #[arg(long)]
    pub front_desk_answers: bool,
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
    // The box's own file, validated as the box would: a rehearsal against a config the box
    // refuses would prove nothing.
    let box_config = match &args.config {
        Some(path) => Some(Config::load(path, &EnvSecrets::from_process())?),
        None => None,
    };
    let auth_token = match &args.auth_token {
        Some(t) if !t.trim().is_empty() => t.trim().to_owned(),
        _ if box_config.is_some() => {
            box_config.as_ref().map(|c| c.twilio.auth_token.expose().to_owned()).unwrap_or_default()
        }
        _ if args.dev => {
            super::serve::dev_config(&args.data_dir, &EnvSecrets::from_process())?.twilio.auth_token.expose().to_owned()
        }
        _ => bail!(
            "no auth token: pass --auth-token, set {ENV_TWILIO_AUTH_TOKEN}, use --config <the box's callbox.toml>, or --dev --data-dir <the box's dev data dir>"
        ),
    };
    let public_url = args.public_url.clone().or_else(|| box_config.as_ref().map(|c| c.public_url.origin()));
    if !(0.02..=3600.0).contains(&args.seconds) {
        bail!("--seconds must be from 0.02 to 3600");
    }
    if let Some(after) = args.hang_up_after
        && !(0.0..=3600.0).contains(&after)
    {
        bail!("--hang-up-after must be from 0 to 3600 seconds");
    }
    if !(0.0..=600.0).contains(&args.ring_seconds) {
        bail!("--ring-seconds must be from 0 to 600");
    }
    let opts = Options {
        box_url: args.url.clone(),
        public_url,
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
        ring: Duration::from_secs_f64(args.ring_seconds),
        hang_up_after: args.hang_up_after.map(Duration::from_secs_f64),
        no_answer: args.no_answer,
        front_desk_answers: args.front_desk_answers,
    };
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    let summary = runtime.block_on(simulate::run(&opts, !args.quiet))?;
    if opts.no_answer {
        println!("call {} not answered (no-answer): a missed call", summary.call_sid);
        return Ok(());
    }
    if summary.stream_sid.is_empty() {
        println!("call {} answered at the front desk", summary.call_sid);
        return Ok(());
    }
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

//! Playing Twilio against a box: the whole life of one inbound call, for `callbox
//! simulate-call`, installers and tests.
//!
//! The simulator shares nothing with the server: it speaks HTTP and WebSocket to whatever URL
//! it is given, signs like Twilio with the account's auth token, and judges the box's answers
//! by the protocol alone. Plain `http://` and `ws://` only (dev mode, the LAN side of a
//! TLS-terminating tunnel, or a box's public listener on loopback); requests may go to one
//! address while being signed over the box's `public_url`, as Twilio signs them.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::media::audio;
use crate::twilio::media::{self as proto, FRAME_SAMPLES, Outbound};
use crate::twilio::signature;

/// Where the caller's audio comes from.
#[derive(Debug, Clone)]
pub enum CallerAudio {
    /// A sine tone of this frequency (Hz) and length.
    Tone {
        /// Frequency in Hz.
        hz: f32,
        /// Length.
        duration: Duration,
    },
    /// A WAV file (any rate and channel count).
    Wav(PathBuf),
}

/// One simulated call.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the box is reached (`http://host:port`); requests go here, and are signed over
    /// it unless `public_url` is set.
    pub box_url: String,
    /// The box's `public_url` (e.g. `https://shop.example.com`), which Twilio signs over; the
    /// requests still go to `box_url`.
    pub public_url: Option<String>,
    /// Connect the stream here instead of the TwiML's `wss://` URL (which is still what gets
    /// signed), e.g. `ws://127.0.0.1:8080/api/v1/voice/media-stream` in dev mode.
    pub stream_url: Option<String>,
    /// The Twilio account's auth token (the box's `twilio.auth_token`).
    pub auth_token: String,
    /// Caller.
    pub from: String,
    /// The shop number called.
    pub to: String,
    /// The CallSid to use (random when `None`).
    pub call_sid: Option<String>,
    /// What the caller says after the greeting.
    pub audio: CallerAudio,
    /// Keys pressed, each at a time after the caller starts talking.
    pub dtmf: Vec<(char, Duration)>,
    /// Send the caller's audio as fast as possible instead of in real time.
    pub fast: bool,
    /// Save what the box played to this WAV file.
    pub save_box_audio: Option<PathBuf>,
    /// Start talking after this long if the box's greeting mark never comes.
    pub greeting_timeout: Duration,
    /// How long the call rings between the incoming-call webhook and the media stream.
    pub ring: Duration,
    /// The caller hangs up this long after the stream opens, greeting or not (a missed call).
    pub hang_up_after: Option<Duration>,
    /// Nobody answers: after the ring Twilio reports `no-answer` and no stream opens.
    pub no_answer: bool,
    /// When the box rings the front desk first (`[hours]`, open): somebody picks up. Otherwise
    /// nobody does, and the call comes back to the box.
    pub front_desk_answers: bool,
}

/// What happened, for the transcript and for tests.
#[derive(Debug, Default)]
pub struct Summary {
    /// The call.
    pub call_sid: String,
    /// The stream.
    pub stream_sid: String,
    /// Caller frames sent.
    pub frames_sent: u64,
    /// μ-law bytes the box played.
    pub box_audio_bytes: u64,
    /// Marks the box sent (all echoed).
    pub marks: Vec<String>,
    /// `clear` messages received.
    pub clears: u64,
    /// How the box closed the stream (`None`: the simulator closed it after `stop`).
    pub box_closed: Option<u16>,
    /// One line per thing that happened.
    pub transcript: Vec<String>,
}

/// A call the box handled wrongly, or could not be placed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimulateError {
    /// The options cannot work (a bad URL, an unsupported scheme, unreadable audio).
    #[error("{0}")]
    Usage(String),
    /// Could not reach the box.
    #[error("cannot reach {url}: {why}")]
    Unreachable {
        /// What was requested.
        url: String,
        /// Why.
        why: String,
    },
    /// The box answered a webhook with an error.
    #[error("{url} answered HTTP {status}: {body}")]
    Http {
        /// What was requested.
        url: String,
        /// The status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The box's TwiML is not what Twilio could run.
    #[error("the box's TwiML is unusable: {0}")]
    Twiml(String),
    /// The box broke the Media Streams protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Saving the box's audio failed.
    #[error("cannot save the box's audio to {path}: {why}")]
    Save {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

struct Transcript {
    started: std::time::Instant,
    lines: Vec<String>,
    echo: bool,
}

impl Transcript {
    fn line(&mut self, text: impl Into<String>) {
        let line = format!("{:>7.3}s  {}", self.started.elapsed().as_secs_f64(), text.into());
        if self.echo {
            println!("{line}");
        }
        self.lines.push(line);
    }
}

/// Places one call against the box. With `print`, transcript lines are printed as they happen.
pub async fn run(opts: &Options, print: bool) -> Result<Summary, SimulateError> {
    let mut t = Transcript { started: std::time::Instant::now(), lines: Vec::new(), echo: print };
    let target = Target::of(opts)?;
    let caller_audio = load_audio(&opts.audio)?;
    let call_sid = opts.call_sid.clone().unwrap_or_else(|| format!("CA{}", crate::random::hex::<16>()));
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    // 1. The incoming call.
    let answer = incoming_call(&client, &target, opts, &call_sid, &mut t).await?;

    // 2. The media stream, after the ring (Twilio itself takes a moment here).
    if !opts.ring.is_zero() {
        t.line(format!("ringing for {:.1} s", opts.ring.as_secs_f64()));
        tokio::time::sleep(opts.ring).await;
    }
    if answer.front_desk_had_it {
        status_callbacks(&client, &target, opts, &call_sid, "completed", 1).await?;
        t.line("the front desk had the call: status callbacks initiated → ringing → in-progress → completed accepted");
        return Ok(Summary { call_sid, transcript: t.lines, ..Summary::default() });
    }
    if opts.no_answer {
        status_callbacks(&client, &target, opts, &call_sid, "no-answer", 0).await?;
        t.line("nobody answered: status callbacks initiated → ringing → no-answer accepted");
        return Ok(Summary { call_sid, transcript: t.lines, ..Summary::default() });
    }
    let (mut ws, connect_url) = connect_stream(opts, &target, &answer).await?;
    t.line(format!("stream connected to {connect_url}"));
    let stream_sid = format!("MZ{}", crate::random::hex::<16>());
    let mut summary = Summary { call_sid: call_sid.clone(), stream_sid: stream_sid.clone(), ..Summary::default() };
    let mut call = StreamCall { ws: &mut ws, stream_sid: &stream_sid, seq: 0, started: Instant::now() };
    start_stream(&mut call, &call_sid, &answer).await?;
    t.line(format!("→ connected, start (stream {stream_sid})"));
    let mut conversation = Conversation::new(&mut call, opts, &caller_audio, &mut summary, &mut t);
    let result = conversation.run().await;
    let box_audio = conversation.box_audio;
    let talk_secs = call.started.elapsed().as_secs();
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    summary.box_audio_bytes = box_audio.len() as u64;
    save_box_audio(opts, &box_audio, &mut t)?;
    result?;

    // 3. The call's status callbacks, in Twilio's order.
    status_callbacks(&client, &target, opts, &call_sid, "completed", talk_secs).await?;
    t.line("status callbacks initiated → ringing → in-progress → completed accepted");
    summary.transcript = t.lines;
    Ok(summary)
}

const ACCOUNT_SID: &str = "AC00000000000000000000000000000001";

/// Where requests go (`base`, also parsed) and the origin Twilio signs them over.
struct Target {
    base: String,
    parsed: url::Url,
    signed_base: String,
}

impl Target {
    fn of(opts: &Options) -> Result<Self, SimulateError> {
        let base = opts.box_url.trim_end_matches('/').to_owned();
        let parsed = url::Url::parse(&base).map_err(|e| SimulateError::Usage(format!("--url {base:?}: {e}")))?;
        if parsed.scheme() != "http" {
            return Err(SimulateError::Usage(format!(
                "--url {base:?}: only http:// is supported by this build (use the box's dev URL or the tunnel's local side)"
            )));
        }
        let signed_base = match &opts.public_url {
            Some(u) => crate::config::PublicUrl::parse(u)
                .map_err(|e| SimulateError::Usage(format!("--public-url: {e}")))?
                .origin(),
            None => base.clone(),
        };
        Ok(Self { base, parsed, signed_base })
    }
}

/// Rings the box and reads its TwiML answer.
async fn incoming_call(
    client: &HttpClient,
    target: &Target,
    opts: &Options,
    call_sid: &str,
    t: &mut Transcript,
) -> Result<Answer, SimulateError> {
    let incoming = vec![
        ("AccountSid", ACCOUNT_SID.to_owned()),
        ("ApiVersion", "2010-04-01".to_owned()),
        ("CallSid", call_sid.to_owned()),
        ("CallStatus", "ringing".to_owned()),
        ("Called", opts.to.clone()),
        ("Caller", opts.from.clone()),
        ("Direction", "inbound".to_owned()),
        ("From", opts.from.clone()),
        ("To", opts.to.clone()),
    ];
    let bases = (target.base.as_str(), target.signed_base.as_str());
    let mut twiml = post_signed(client, bases, "/api/v1/webhooks/incoming-call", &incoming, &opts.auth_token).await?;
    if let Some(dial) = parse_dial(&twiml)? {
        let status = if opts.front_desk_answers { "completed" } else { "no-answer" };
        t.line(format!(
            "box rang the front desk {} (up to {} s): {}",
            dial.number,
            dial.timeout,
            if opts.front_desk_answers { "picked up" } else { "nobody picked up" }
        ));
        let mut result = incoming.clone();
        result.retain(|(k, _)| *k != "CallStatus");
        result.extend([
            ("CallStatus", "in-progress".to_owned()),
            ("DialCallStatus", status.to_owned()),
            ("DialCallSid", format!("CA{}", crate::random::hex::<16>())),
        ]);
        twiml = post_signed(client, bases, &dial.action_path, &result, &opts.auth_token).await?;
        if opts.front_desk_answers {
            return Ok(Answer { front_desk_had_it: true, ..Answer::default() });
        }
    }
    let answer = parse_twiml(&twiml)?;
    t.line(format!(
        "incoming call {call_sid} from {} to {}: box answered <Connect><Stream url=\"{}\"> with {} parameter(s){}",
        opts.from,
        opts.to,
        answer.stream_url,
        answer.parameters.len(),
        answer.fallthrough.as_deref().map(|f| format!(", then {f}")).unwrap_or_default()
    ));
    Ok(answer)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the media stream the TwiML asked for, signed like Twilio; returns where it went.
async fn connect_stream(opts: &Options, target: &Target, answer: &Answer) -> Result<(Ws, String), SimulateError> {
    if let (Ok(stream), Ok(public)) = (url::Url::parse(&answer.stream_url), url::Url::parse(&target.signed_base))
        && stream.host_str() != public.host_str()
    {
        return Err(SimulateError::Twiml(format!(
            "the stream URL {} is not on the public URL's host {}",
            answer.stream_url, target.signed_base
        )));
    }
    let connect_url = connect_url(opts, target, answer);
    if connect_url.starts_with("wss://") {
        return Err(SimulateError::Usage(format!(
            "the stream URL {connect_url} needs TLS, which this build's simulator lacks; pass --stream-url ws://host:port{}",
            url::Url::parse(&connect_url).map(|u| u.path().to_owned()).unwrap_or_default()
        )));
    }
    let mut request = connect_url
        .as_str()
        .into_client_request()
        .map_err(|e| SimulateError::Usage(format!("stream URL {connect_url:?}: {e}")))?;
    let sig = signature::compute(&opts.auth_token, &answer.stream_url, &[]);
    request.headers_mut().insert(
        "x-twilio-signature",
        sig.parse().map_err(|_| SimulateError::Usage("signature is not a header value".into()))?,
    );
    let (ws, _) = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(request))
        .await
        .map_err(|_| SimulateError::Unreachable { url: connect_url.clone(), why: "timed out".into() })?
        .map_err(|e| SimulateError::Unreachable { url: connect_url.clone(), why: e.to_string() })?;
    Ok((ws, connect_url))
}

/// Twilio connects where the TwiML says; the simulator goes where the webhooks went (the same
/// box), unless told otherwise, and signs the TwiML's URL.
fn connect_url(opts: &Options, target: &Target, answer: &Answer) -> String {
    match &opts.stream_url {
        Some(u) => u.clone(),
        None => match url::Url::parse(&answer.stream_url) {
            Ok(stream) if stream.scheme() == "wss" => {
                let mut at = target.parsed.clone();
                at.set_path(stream.path());
                at.set_query(stream.query());
                at.as_str().replacen("http://", "ws://", 1)
            }
            _ => answer.stream_url.clone(),
        },
    }
}

/// Twilio's first two messages: `connected`, then `start` with the TwiML's parameters.
async fn start_stream(call: &mut StreamCall<'_>, call_sid: &str, answer: &Answer) -> Result<(), SimulateError> {
    call.send(json!({"event":"connected","protocol":"Call","version":"1.0.0"})).await?;
    let params: serde_json::Map<String, serde_json::Value> =
        answer.parameters.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let seq = call.next_seq();
    let stream_sid = call.stream_sid;
    call.send(json!({"event":"start","sequenceNumber":seq,"streamSid":stream_sid,"start":{
        "streamSid":stream_sid,"accountSid":ACCOUNT_SID,"callSid":call_sid,"tracks":["inbound"],
        "customParameters":params,"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}))
        .await
}

fn save_box_audio(opts: &Options, box_audio: &[u8], t: &mut Transcript) -> Result<(), SimulateError> {
    if let Some(path) = &opts.save_box_audio {
        save_wav(path, box_audio)?;
        t.line(format!("saved {:.2} s of the box's audio to {}", box_audio.len() as f64 / 8000.0, path.display()));
    }
    Ok(())
}

/// The call's status callbacks, in Twilio's order.
async fn status_callbacks(
    client: &HttpClient,
    target: &Target,
    opts: &Options,
    call_sid: &str,
    last: &str,
    talk_secs: u64,
) -> Result<(), SimulateError> {
    let now = jiff::Timestamp::now();
    let stamp = jiff::fmt::rfc2822::to_string(&now.to_zoned(jiff::tz::TimeZone::UTC)).unwrap_or_default();
    let bases = (target.base.as_str(), target.signed_base.as_str());
    let statuses: &[&str] = if last == "completed" {
        &["initiated", "ringing", "in-progress", last]
    } else {
        &["initiated", "ringing", last]
    };
    for (seq, &status) in statuses.iter().enumerate() {
        let mut params = vec![
            ("AccountSid", ACCOUNT_SID.to_owned()),
            ("CallSid", call_sid.to_owned()),
            ("CallStatus", status.to_owned()),
            ("Direction", "inbound".to_owned()),
            ("From", opts.from.clone()),
            ("SequenceNumber", seq.to_string()),
            ("Timestamp", stamp.clone()),
            ("To", opts.to.clone()),
        ];
        if status == "completed" {
            params.push(("CallDuration", talk_secs.max(1).to_string()));
        }
        post_signed(client, bases, "/api/v1/webhooks/call-status", &params, &opts.auth_token).await?;
    }
    Ok(())
}

struct StreamCall<'a> {
    ws: &'a mut Ws,
    stream_sid: &'a str,
    seq: u64,
    started: Instant,
}

impl StreamCall<'_> {
    fn next_seq(&mut self) -> String {
        self.seq += 1;
        self.seq.to_string()
    }

    async fn send(&mut self, v: serde_json::Value) -> Result<(), SimulateError> {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .map_err(|e| SimulateError::Protocol(format!("the box's socket failed while sending: {e}")))
    }
}

/// Whether the conversation goes on after one event.
enum Step {
    Continue,
    Done,
}

/// The conversation: the greeting (marks echoed as Twilio would once played), the caller's
/// audio and keys, then `stop` — or the box closing first.
struct Conversation<'c, 'a> {
    call: &'c mut StreamCall<'a>,
    opts: &'c Options,
    caller_audio: &'c [u8],
    summary: &'c mut Summary,
    t: &'c mut Transcript,
    /// What the box played, for `--save`.
    box_audio: Vec<u8>,
    ticker: Interval,
    // Twilio's playback clock: audio queued plays in real time, a mark is echoed when the
    // audio before it has played.
    playback_until: Instant,
    pending_marks: VecDeque<(Instant, String)>,
    talk_from: Option<Instant>,
    greeting_deadline: Instant,
    pos: usize,
    chunk: u64,
    dtmf: VecDeque<(char, Duration)>,
    greeting_frames: u64,
    scratch: Vec<u8>,
    stop_sent_at: Option<Instant>,
    hang_up_at: Option<Instant>,
}

impl<'c, 'a> Conversation<'c, 'a> {
    fn new(
        call: &'c mut StreamCall<'a>,
        opts: &'c Options,
        caller_audio: &'c [u8],
        summary: &'c mut Summary,
        t: &'c mut Transcript,
    ) -> Self {
        let mut ticker = tokio::time::interval(Duration::from_millis(20));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
        let mut dtmf: VecDeque<(char, Duration)> = opts.dtmf.iter().copied().collect();
        dtmf.make_contiguous().sort_by_key(|(_, at)| *at);
        Self {
            call,
            opts,
            caller_audio,
            summary,
            t,
            box_audio: Vec::new(),
            ticker,
            playback_until: Instant::now(),
            pending_marks: VecDeque::new(),
            talk_from: None,
            greeting_deadline: Instant::now() + opts.greeting_timeout,
            pos: 0,
            chunk: 0,
            dtmf,
            greeting_frames: 0,
            scratch: Vec::new(),
            stop_sent_at: None,
            hang_up_at: opts.hang_up_after.map(|after| Instant::now() + after),
        }
    }

    async fn run(&mut self) -> Result<(), SimulateError> {
        loop {
            let next_mark = self.pending_marks.front().map(|(at, _)| *at);
            let talking = self.talking();
            let greeting_deadline = (!talking).then_some(self.greeting_deadline);
            let stop_deadline = self.stop_sent_at.map(|at| at + Duration::from_secs(5));
            let hang_up = self.hang_up_at.filter(|_| self.stop_sent_at.is_none());
            let fast_send =
                self.opts.fast && talking && self.stop_sent_at.is_none() && self.opts.hang_up_after.is_none();
            let real_time = !fast_send && self.stop_sent_at.is_none();
            let step = tokio::select! {
                biased;
                msg = self.call.ws.next() => self.on_box_message(msg),
                () = sleep_until_opt(next_mark) => self.echo_mark().await,
                () = sleep_until_opt(greeting_deadline) => Ok(self.greeting_timed_out()),
                () = sleep_until_opt(stop_deadline) => Ok(self.box_never_closed()),
                () = sleep_until_opt(hang_up) => self.hang_up().await,
                _ = self.ticker.tick(), if real_time => self.send_real_time_frame().await,
                () = std::future::ready(()), if fast_send => self.send_caller_frame().await,
            };
            if let Step::Done = step? {
                return Ok(());
            }
        }
    }

    fn talking(&self) -> bool {
        self.talk_from.is_some()
    }

    fn on_box_message(
        &mut self,
        msg: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<Step, SimulateError> {
        match msg {
            None => Err(SimulateError::Protocol("the box dropped the connection without a close frame".into())),
            Some(Err(e)) => Err(SimulateError::Protocol(format!("the box's socket failed: {e}"))),
            Some(Ok(Message::Close(frame))) => self.box_closed(frame),
            Some(Ok(Message::Text(text))) => self.on_outbound(&text).map(|()| Step::Continue),
            Some(Ok(Message::Binary(_))) => Err(SimulateError::Protocol("the box sent a binary frame".into())),
            Some(Ok(_)) => Ok(Step::Continue),
        }
    }

    fn box_closed(&mut self, frame: Option<CloseFrame>) -> Result<Step, SimulateError> {
        let code = frame.as_ref().map(|f| f.code).unwrap_or(CloseCode::Status);
        self.summary.box_closed = Some(u16::from(code));
        let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
        self.t.line(format!("← box closed the stream: {} {reason}", u16::from(code)));
        if code != CloseCode::Normal {
            return Err(SimulateError::Protocol(format!("the box closed with code {}", u16::from(code))));
        }
        Ok(Step::Done)
    }

    fn on_outbound(&mut self, text: &str) -> Result<(), SimulateError> {
        let message = proto::decode_outbound(text).map_err(|e| SimulateError::Protocol(format!("the box sent {e}")))?;
        let sid = match &message {
            Outbound::Media { stream_sid, .. } | Outbound::Mark { stream_sid, .. } | Outbound::Clear { stream_sid } => {
                stream_sid
            }
            Outbound::Unknown => {
                return Err(SimulateError::Protocol(format!("the box sent an unknown event: {text}")));
            }
        };
        if sid != self.call.stream_sid {
            return Err(SimulateError::Protocol(format!(
                "the box addressed stream {sid}, not {}",
                self.call.stream_sid
            )));
        }
        match message {
            Outbound::Media { media, .. } => self.play(&media.payload)?,
            Outbound::Mark { mark, .. } => {
                let at = if self.opts.fast { Instant::now() } else { self.playback_until.max(Instant::now()) };
                self.pending_marks.push_back((at, mark.name));
            }
            Outbound::Clear { .. } => self.clear(),
            Outbound::Unknown => {}
        }
        Ok(())
    }

    /// Queues the box's audio on the playback clock.
    fn play(&mut self, payload: &str) -> Result<(), SimulateError> {
        proto::decode_payload(payload, &mut self.scratch)
            .map_err(|e| SimulateError::Protocol(format!("the box sent {e}")))?;
        let now = Instant::now();
        self.playback_until = self.playback_until.max(now) + Duration::from_micros(self.scratch.len() as u64 * 125);
        self.box_audio.extend_from_slice(&self.scratch);
        if !self.talking() {
            self.greeting_frames += 1;
        }
        Ok(())
    }

    fn clear(&mut self) {
        self.summary.clears += 1;
        self.t.line("← clear (playback emptied)");
        self.playback_until = Instant::now();
        for (at, _) in self.pending_marks.iter_mut() {
            *at = Instant::now();
        }
    }

    /// The first mark ends the greeting: the caller starts talking once it has played.
    async fn echo_mark(&mut self) -> Result<Step, SimulateError> {
        if let Some((_, name)) = self.pending_marks.pop_front() {
            let seq = self.call.next_seq();
            let stream_sid = self.call.stream_sid;
            self.call
                .send(json!({"event":"mark","sequenceNumber":seq,"streamSid":stream_sid,"mark":{"name":name}}))
                .await?;
            if !self.talking() {
                self.t.line(format!(
                    "← greeting: {} frame(s), {:.2} s; mark {name:?} played and echoed",
                    self.greeting_frames,
                    self.greeting_frames as f64 * 0.02
                ));
                self.talk_from = Some(Instant::now());
                if self.opts.hang_up_after.is_some() {
                    self.t.line("→ caller stays silent");
                    self.summary.marks.push(name);
                    return Ok(Step::Continue);
                }
                self.t.line(format!(
                    "→ caller talks: {:.2} s of audio{}",
                    self.caller_audio.len() as f64 / 8000.0,
                    if self.opts.fast { " (fast)" } else { "" }
                ));
            } else {
                self.t.line(format!("← mark {name:?} played and echoed"));
            }
            self.summary.marks.push(name);
        }
        Ok(Step::Continue)
    }

    fn greeting_timed_out(&mut self) -> Step {
        self.t.line(format!("no greeting mark within {:?}; caller talks anyway", self.opts.greeting_timeout));
        self.talk_from = Some(Instant::now());
        Step::Continue
    }

    fn box_never_closed(&mut self) -> Step {
        self.t.line("box did not close within 5 s of stop; closing");
        Step::Done
    }

    async fn send_real_time_frame(&mut self) -> Result<Step, SimulateError> {
        // Real time: a frame every 20 ms, silence until the caller talks (a caller who is
        // going to hang up never does).
        if self.talking() && self.opts.hang_up_after.is_none() {
            return self.send_caller_frame().await;
        }
        self.send_media(&SILENCE).await?;
        Ok(Step::Continue)
    }

    async fn send_caller_frame(&mut self) -> Result<Step, SimulateError> {
        let frame = next_frame(self.caller_audio, &mut self.pos);
        if frame.is_empty() {
            self.finish_talking().await?;
            return Ok(Step::Continue);
        }
        self.send_media(frame).await?;
        self.send_due_dtmf(samples_time(self.pos)).await?;
        Ok(Step::Continue)
    }

    async fn send_media(&mut self, frame: &[u8]) -> Result<(), SimulateError> {
        use base64::Engine as _;
        self.chunk += 1;
        let seq = self.call.next_seq();
        let timestamp = (self.chunk - 1) * 20;
        let payload = base64::engine::general_purpose::STANDARD.encode(frame);
        let stream_sid = self.call.stream_sid;
        self.call
            .send(json!({"event":"media","sequenceNumber":seq,"streamSid":stream_sid,"media":{
                "track":"inbound","chunk":self.chunk.to_string(),"timestamp":timestamp.to_string(),"payload":payload}}))
            .await?;
        self.summary.frames_sent += 1;
        Ok(())
    }

    /// Sends the keys due by `talked` into the caller's audio.
    async fn send_due_dtmf(&mut self, talked: Duration) -> Result<(), SimulateError> {
        while let Some((digit, at)) = self.dtmf.front().copied() {
            if at > talked {
                break;
            }
            self.dtmf.pop_front();
            let seq = self.call.next_seq();
            let stream_sid = self.call.stream_sid;
            self.call
                .send(json!({"event":"dtmf","sequenceNumber":seq,"streamSid":stream_sid,
                    "dtmf":{"track":"inbound_track","digit":digit.to_string()}}))
                .await?;
            self.t.line(format!("→ dtmf {digit} at {:.2} s into the message", at.as_secs_f64()));
        }
        Ok(())
    }

    /// The caller gives up (`--hang-up-after`), in the greeting or while talking.
    async fn hang_up(&mut self) -> Result<Step, SimulateError> {
        let after = self.opts.hang_up_after.unwrap_or_default().as_secs_f64();
        self.t.line(format!(
            "caller hangs up {after:.1} s into the stream{}",
            if self.talking() { "" } else { ", in the greeting" }
        ));
        self.send_stop().await?;
        Ok(Step::Continue)
    }

    /// The caller's audio is over: press any keys still due, then hang up (`stop`).
    async fn finish_talking(&mut self) -> Result<(), SimulateError> {
        self.send_due_dtmf(Duration::MAX).await?;
        self.send_stop().await
    }

    async fn send_stop(&mut self) -> Result<(), SimulateError> {
        let seq = self.call.next_seq();
        let sid = self.call.stream_sid;
        self.call
            .send(json!({"event":"stop","sequenceNumber":seq,"streamSid":sid,"stop":{"accountSid":ACCOUNT_SID}}))
            .await?;
        self.t.line(format!("→ stop after {} caller frame(s) (caller hangs up)", self.summary.frames_sent));
        self.stop_sent_at = Some(Instant::now());
        Ok(())
    }
}

const SILENCE: [u8; FRAME_SAMPLES] = [audio::MULAW_SILENCE; FRAME_SAMPLES];

fn next_frame<'a>(audio: &'a [u8], pos: &mut usize) -> &'a [u8] {
    let start = (*pos).min(audio.len());
    let end = (start + FRAME_SAMPLES).min(audio.len());
    *pos = end;
    &audio[start..end]
}

/// How long `samples` of 8 kHz audio last.
fn samples_time(samples: usize) -> Duration {
    Duration::from_micros(samples as u64 * 125)
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn load_audio(source: &CallerAudio) -> Result<Vec<u8>, SimulateError> {
    match source {
        CallerAudio::Tone { hz, duration } => {
            let n = (duration.as_secs_f64() * f64::from(audio::SAMPLE_RATE)) as usize;
            Ok((0..n)
                .map(|i| {
                    let x = (2.0 * std::f32::consts::PI * hz * i as f32 / audio::SAMPLE_RATE as f32).sin();
                    audio::mulaw_encode((x * 8000.0) as i16)
                })
                .collect())
        }
        CallerAudio::Wav(path) => audio::load_greeting(path).map_err(|e| SimulateError::Usage(e.to_string())),
    }
}

fn save_wav(path: &std::path::Path, mulaw: &[u8]) -> Result<(), SimulateError> {
    let err = |e: hound::Error| SimulateError::Save { path: path.to_owned(), why: e.to_string() };
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: audio::SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).map_err(err)?;
    for b in mulaw {
        w.write_sample(audio::mulaw_decode(*b)).map_err(err)?;
    }
    w.finalize().map_err(err)
}

/// POSTs to `base` + `path`, signed over `signed_base` + `path` (`(base, signed_base)`).
async fn post_signed(
    client: &HttpClient,
    (base, signed_base): (&str, &str),
    path: &str,
    params: &[(&str, String)],
    token: &str,
) -> Result<String, SimulateError> {
    let url = format!("{base}{path}");
    let owned: Vec<(String, String)> = params.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    let sig = signature::compute(token, &format!("{signed_base}{path}"), &owned);
    let mut body = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        body.append_pair(k, v);
    }
    let req = http::Request::post(&url)
        .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("x-twilio-signature", sig)
        .body(Full::new(Bytes::from(body.finish())))
        .map_err(|e| SimulateError::Usage(format!("{url}: {e}")))?;
    let resp = tokio::time::timeout(Duration::from_secs(15), client.request(req))
        .await
        .map_err(|_| SimulateError::Unreachable { url: url.clone(), why: "timed out".into() })?
        .map_err(|e| SimulateError::Unreachable { url: url.clone(), why: e.to_string() })?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| SimulateError::Unreachable { url: url.clone(), why: e.to_string() })?
        .to_bytes();
    let text = String::from_utf8_lossy(&body).into_owned();
    if !status.is_success() {
        return Err(SimulateError::Http { url, status: status.as_u16(), body: text.chars().take(200).collect() });
    }
    Ok(text)
}

/// What the incoming-call TwiML asks Twilio to do.
#[derive(Default)]
struct Answer {
    stream_url: String,
    parameters: Vec<(String, String)>,
    fallthrough: Option<String>,
    /// The front desk answered the `<Dial>`: no stream.
    front_desk_had_it: bool,
}

/// A `<Dial action>` the box answered with (it rings the front desk first).
struct Dial {
    number: String,
    timeout: String,
    /// The action's path and query, on the box.
    action_path: String,
}

fn parse_dial(doc: &str) -> Result<Option<Dial>, SimulateError> {
    let parsed = roxmltree::Document::parse(doc).map_err(|e| SimulateError::Twiml(format!("not XML: {e}")))?;
    let first = parsed.root_element().children().find(|n| n.is_element());
    let Some(dial) = first.filter(|n| n.has_tag_name("Dial")) else { return Ok(None) };
    let Some(action) = dial.attribute("action") else { return Ok(None) };
    let url = url::Url::parse(action).map_err(|e| SimulateError::Twiml(format!("<Dial action={action:?}>: {e}")))?;
    let action_path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    Ok(Some(Dial {
        number: dial.text().unwrap_or("").trim().to_owned(),
        timeout: dial.attribute("timeout").unwrap_or("30").to_owned(),
        action_path,
    }))
}

fn parse_twiml(doc: &str) -> Result<Answer, SimulateError> {
    let parsed = roxmltree::Document::parse(doc).map_err(|e| SimulateError::Twiml(format!("not XML: {e}")))?;
    let root = parsed.root_element();
    if !root.has_tag_name("Response") {
        return Err(SimulateError::Twiml(format!("root is <{}>, not <Response>", root.tag_name().name())));
    }
    let connect = root
        .children()
        .find(|n| n.has_tag_name("Connect"))
        .ok_or_else(|| SimulateError::Twiml("no <Connect>".into()))?;
    let stream = connect
        .children()
        .find(|n| n.has_tag_name("Stream"))
        .ok_or_else(|| SimulateError::Twiml("no <Stream> in <Connect>".into()))?;
    let stream_url =
        stream.attribute("url").ok_or_else(|| SimulateError::Twiml("<Stream> has no url".into()))?.to_owned();
    if !stream_url.starts_with("wss://") {
        return Err(SimulateError::Twiml(format!("stream url {stream_url} is not wss:// (Twilio error 31922)")));
    }
    if stream_url.contains('?') {
        return Err(SimulateError::Twiml(format!("stream url {stream_url} has a query string, which Twilio drops")));
    }
    let parameters = stream
        .children()
        .filter(|n| n.has_tag_name("Parameter"))
        .map(|n| (n.attribute("name").unwrap_or("").to_owned(), n.attribute("value").unwrap_or("").to_owned()))
        .collect();
    let fallthrough = connect.next_siblings().skip(1).find(|n| n.is_element()).map(|n| {
        let text = n.text().unwrap_or("").trim();
        format!("<{}>{text}", n.tag_name().name())
    });
    Ok(Answer { stream_url, parameters, fallthrough, front_desk_had_it: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twiml_of_the_box_is_understood() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream statusCallback="https://a.example.com/s" url="wss://a.example.com/api/v1/voice/media-stream"><Parameter name="From" value="+1503"/></Stream></Connect><Dial>+15035550100</Dial></Response>"#;
        let a = parse_twiml(doc).unwrap();
        assert_eq!(a.stream_url, "wss://a.example.com/api/v1/voice/media-stream");
        assert_eq!(a.parameters, vec![("From".to_owned(), "+1503".to_owned())]);
        assert_eq!(a.fallthrough.as_deref(), Some("<Dial>+15035550100"));
        assert!(parse_twiml("<Response><Say>hi</Say></Response>").is_err());
        assert!(parse_twiml(r#"<Response><Connect><Stream url="ws://x/y"/></Connect></Response>"#).is_err());
    }
}

//! Texts: the SMS a missed caller gets back, the owner's alerts, and the durable outbox that
//! sends them through Twilio's Messages API.
//!
//! The path of a text: a call's change on the bus → [`policy::decide`] → a [`Message`] written
//! to the call log (before anything is sent; its id comes from the call, so deciding twice
//! keeps one) → the sender marks it `sending` on disk, makes the request, and writes Twilio's
//! answer (`SM…` SID, or the error) → Twilio's signed status callbacks update it.
//!
//! What a stop costs: a text whose answer was written is never sent again; a text whose request
//! was out when the box stopped (crash, power cut) is sent once more at the next start, since
//! the box cannot know whether Twilio got it ([`Message::interrupted`]).

pub mod client;
pub mod message;
pub mod policy;

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

pub use client::TwilioRest;
pub use message::{Inbound, Keyword, Kind, Message, OptOut, State};
use policy::{History, Policy};

use crate::calls::{CallLog, CallRecord, Store, StoreError};
use crate::config::Config;
use crate::twilio::rest::{Answer, NewMessage, OPTED_OUT};

/// Calls that ended this recently are looked at again at start: the box may have stopped
/// between storing a call's last event and writing its texts. Older ones are left alone, so
/// turning text-back on never texts last week's callers.
const RESCAN: SignedDuration = SignedDuration::from_mins(15);
/// Longest sleep of the sender when nothing is due (a clock step is noticed by then).
const IDLE: Duration = Duration::from_secs(60);

/// The outbox and its settings. Cheap to share.
#[derive(Debug)]
pub struct Texts {
    store: Store,
    config: Config,
    client: Option<TwilioRest>,
    dashboard_url: String,
    status_callback: String,
    wake: Notify,
}

/// What the owner sees of the outbox in health.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// Whether anything is configured to be sent.
    pub enabled: bool,
    /// Texts waiting to be sent or retried.
    pub pending: usize,
    /// Texts Twilio took.
    pub sent: usize,
    /// Texts delivered to the handset.
    pub delivered: usize,
    /// Texts that failed or were not delivered.
    pub failed: usize,
    /// The newest failure, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
}

impl Texts {
    /// The outbox for `config`, sending through `client` (`None`: texts are decided and kept,
    /// but nothing is configured to send them).
    pub fn new(config: Config, store: Store, client: Option<TwilioRest>) -> Self {
        let dashboard_url = config.missed_calls.dashboard_url.clone().unwrap_or_else(|| lan_dashboard_url(&config));
        let status_callback = format!("{}{}", config.public_url.origin(), crate::server::public::paths::MESSAGE_STATUS);
        Self { store, config, client, dashboard_url, status_callback, wake: Notify::new() }
    }

    /// The client for `config`'s account, when it names one (`twilio.account_sid`).
    pub fn client_for(config: &Config) -> Result<Option<TwilioRest>, client::ClientError> {
        let Some((user, secret)) = config.twilio.rest_credentials() else { return Ok(None) };
        let account = config.twilio.account_sid.as_deref().unwrap_or_default();
        let timeout = Duration::from_secs(config.twilio.api_timeout_secs);
        TwilioRest::new(&config.twilio.api_base_url, account, (user, secret.expose()), timeout).map(Some)
    }

    /// Runs the outbox until shutdown: resumes what a stop interrupted, then decides texts for
    /// each change on the bus and sends what is due.
    pub async fn run(self: Arc<Self>, calls: CallLog, shutdown: CancellationToken) {
        let decides = self.config.missed_calls.sends_anything();
        if !decides && self.client.is_none() {
            return;
        }
        // Subscribed before the rescan, so no call ends unseen between the two.
        let feed = decides.then(|| calls.subscribe());
        self.resume().await;
        match feed {
            Some(feed) => {
                self.rescan(Timestamp::now()).await;
                tokio::join!(self.clone().decide_loop(feed, shutdown.clone()), self.send_loop(shutdown));
            }
            // Only the owner's replies: nothing to decide about calls.
            None => self.send_loop(shutdown).await,
        }
    }

    /// A text whose request was out when the box stopped goes again.
    async fn resume(&self) {
        let now = Timestamp::now();
        for m in self.messages().into_iter().filter(|m| m.state == State::Sending) {
            log::warn!("text {} was being sent when the box stopped; sending it again", m.id);
            if let Err(e) =
                self.store.update_doc::<Message, _>(&m.key(), |d| d.iter_mut().for_each(|m| m.interrupted(now))).await
            {
                log::error!("cannot resume text {}: {e}", m.id);
            }
        }
    }

    /// Decides texts for calls that ended in the last [`RESCAN`].
    async fn rescan(&self, now: Timestamp) {
        let since = now.checked_sub(RESCAN + SignedDuration::from_hours(4)).unwrap_or(now);
        let calls = match self.store.between(since, now.saturating_add(SignedDuration::from_mins(1)).unwrap_or(now)) {
            Ok(c) => c,
            Err(e) => return log::warn!("texts: cannot read recent calls: {e}"),
        };
        for call in calls {
            let ended = call.stream.as_ref().and_then(|s| s.stopped_at).or(call.ended_at);
            if ended.is_some_and(|t| now.duration_since(t) < RESCAN) {
                self.decide(&call, now).await;
            }
        }
    }

    async fn decide_loop(
        self: Arc<Self>,
        mut feed: broadcast::Receiver<crate::calls::BusMessage>,
        shutdown: CancellationToken,
    ) {
        loop {
            let change = tokio::select! {
                change = feed.recv() => change,
                () = shutdown.cancelled() => return,
            };
            match change {
                Ok(m) => self.decide(&m.record, Timestamp::now()).await,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    log::warn!("texts: {n} call changes went by unseen; looking at recent calls again");
                    self.rescan(Timestamp::now()).await;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Writes the texts `call` asks for, keeping any already decided.
    async fn decide(&self, call: &CallRecord, now: Timestamp) {
        let policy = Policy {
            config: &self.config.missed_calls,
            sms_from: self.config.twilio.sms_from.as_deref(),
            time_zone: self.config.indicators.time_zone(),
            dashboard_url: &self.dashboard_url,
        };
        let mut added = false;
        for m in policy::decide(call, &policy, self, now) {
            let key = m.key();
            let written = self
                .store
                .update_doc::<Message, _>(&key, |d| {
                    if d.is_none() {
                        *d = Some(m.clone());
                    }
                })
                .await;
            match written {
                Ok(Some(stored)) if stored == m => {
                    added |= stored.state == State::Pending;
                    match &stored.skipped {
                        Some(why) => log::info!("{} for call {} not sent: {why}", m.kind.as_str(), call.call_sid),
                        None => log::info!("{} to {} for call {} queued", m.kind.as_str(), m.to, call.call_sid),
                    }
                }
                Ok(_) => {}
                Err(e) => log::error!("cannot queue the {} for call {}: {e}", m.kind.as_str(), call.call_sid),
            }
        }
        if added {
            self.wake.notify_one();
        }
    }

    async fn send_loop(&self, shutdown: CancellationToken) {
        loop {
            let now = Timestamp::now();
            let mut next = None::<Timestamp>;
            let mut sent_any = false;
            for m in self.messages() {
                match m.due_at() {
                    Some(at) if at <= now => {
                        // A stop in the middle leaves it `sending`: sent again at the next start.
                        tokio::select! {
                            () = self.send(m) => sent_any = true,
                            () = shutdown.cancelled() => return,
                        }
                    }
                    Some(at) => next = Some(next.map_or(at, |n| n.min(at))),
                    None => {}
                }
            }
            if sent_any {
                // What was just tried may be due again later: look at the outbox afresh.
                continue;
            }
            let sleep = next
                .map(|at| Duration::try_from(at.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO))
                .unwrap_or(IDLE)
                .min(IDLE);
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                () = self.wake.notified() => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// One attempt: on disk as `sending` first, then the request, then Twilio's answer.
    async fn send(&self, m: Message) {
        let key = m.key();
        let (Some(client), Some(from)) = (&self.client, m.from.clone()) else {
            let why = "no Twilio account to send with (twilio.account_sid)".to_owned();
            let failed = self
                .store
                .update_doc::<Message, _>(&key, |d| {
                    if let Some(m) = d {
                        m.failed(None, why, Timestamp::now());
                    }
                })
                .await;
            if let Err(e) = failed {
                log::error!("text {}: cannot store that it was not sent: {e}", m.id);
            }
            return;
        };
        let marked =
            self.store.update_doc::<Message, _>(&key, |d| d.iter_mut().for_each(|m| m.sending(Timestamp::now()))).await;
        if let Err(e) = marked {
            // Not on disk as sending: sending now could send it twice after a crash.
            return log::error!("text {}: not sent, the call log refused the write: {e}", m.id);
        }
        let request =
            NewMessage { to: &m.to, from: &from, body: &m.body, status_callback: Some(&self.status_callback) };
        let answer = client.send(&request).await;
        let now = Timestamp::now();
        match &answer {
            Answer::Accepted(r) => log::info!("{} {} to {} sent: {}", m.kind.as_str(), m.id, m.to, r.sid),
            Answer::Retry { why, .. } => log::warn!("{} {} to {}: will retry: {why}", m.kind.as_str(), m.id, m.to),
            Answer::Permanent { why, .. } => log::error!("{} {} to {} failed: {why}", m.kind.as_str(), m.id, m.to),
        }
        if let Answer::Permanent { code: Some(OPTED_OUT), .. } = answer {
            self.opt_out(&m.to, now).await;
        }
        let stored = self
            .store
            .update_doc::<Message, _>(&key, |d| {
                if let Some(m) = d {
                    match answer {
                        Answer::Accepted(r) => m.accepted(r.sid, r.status, now),
                        Answer::Retry { code, why } => m.retry_later(code, why, now),
                        Answer::Permanent { code, why } => m.failed(code, why, now),
                    }
                }
            })
            .await;
        if let Err(e) = stored {
            log::error!("text {}: Twilio's answer could not be stored: {e}", m.id);
        }
    }

    /// Remembers that `number` replied STOP.
    async fn opt_out(&self, number: &str, now: Timestamp) {
        let key = message::opt_out_key(number);
        let since = OptOut { number: number.to_owned(), since: now };
        if let Err(e) = self.store.update_doc::<OptOut, _>(&key, |d| *d = Some(d.take().unwrap_or(since))).await {
            log::error!("cannot remember that {number} opted out: {e}");
        }
    }

    /// A signed status callback: Twilio's news of a text it took. `false` when no text has
    /// that SID (not one of the box's).
    pub async fn status_callback(&self, sid: &str, status: &str, code: Option<u32>) -> Result<bool, StoreError> {
        let Some(m) = self.messages().into_iter().find(|m| m.sid.as_deref() == Some(sid)) else { return Ok(false) };
        let now = Timestamp::now();
        self.store
            .update_doc::<Message, _>(&m.key(), |d| d.iter_mut().for_each(|m| m.status_update(status, code, now)))
            .await?;
        if code == Some(OPTED_OUT) {
            self.opt_out(&m.to, now).await;
        }
        Ok(true)
    }

    /// A text from a customer (the messaging webhook): kept once however often Twilio
    /// delivers it; STOP and START change whether the box may text that number. Returns
    /// whether it was new.
    pub async fn received(&self, inbound: Inbound) -> Result<bool, StoreError> {
        let key = inbound.key();
        let stored = self
            .store
            .update_doc::<Inbound, _>(&key, |d| {
                if d.is_none() {
                    *d = Some(inbound.clone());
                }
            })
            .await?;
        let new = stored.as_ref() == Some(&inbound);
        if !new {
            return Ok(false);
        }
        log::info!(
            "text from {} to {} received ({} characters)",
            inbound.from,
            inbound.to,
            inbound.body.chars().count()
        );
        match Keyword::of(&inbound.body) {
            Some(Keyword::OptOut) => self.opt_out(&inbound.from, inbound.received_at).await,
            Some(Keyword::OptIn) => {
                self.store.update_doc::<OptOut, _>(&message::opt_out_key(&inbound.from), |d| *d = None).await?;
                log::info!("{} opted in again (texted START)", inbound.from);
            }
            None => {}
        }
        Ok(true)
    }

    /// Queues the owner's text to `to`. The sender is `twilio.sms_from`, else the shop number
    /// this customer last texted, called or was texted from.
    pub async fn reply(&self, to: &str, body: &str, now: Timestamp) -> Result<Message, ReplyError> {
        let body = body.trim();
        if !policy::textable(to) {
            return Err(ReplyError::NotTextable(to.to_owned()));
        }
        if body.is_empty() {
            return Err(ReplyError::Empty);
        }
        if body.chars().count() > crate::config::MAX_BODY_CHARS {
            return Err(ReplyError::TooLong(body.chars().count()));
        }
        if self.client.is_none() {
            return Err(ReplyError::NotConfigured);
        }
        if self.opted_out(to) {
            return Err(ReplyError::OptedOut(to.to_owned()));
        }
        let from = match self.config.twilio.sms_from.clone() {
            Some(f) => f,
            None => self.line_of(to).ok_or(ReplyError::NoSender)?,
        };
        let id = format!("{}:{}", Kind::Reply.as_str(), crate::random::hex::<8>());
        let m = Message::new(id, Kind::Reply, None, to, Some(&from), body.to_owned(), now);
        self.store.update_doc::<Message, _>(&m.key(), |d| *d = Some(m.clone())).await.map_err(ReplyError::Store)?;
        log::info!("reply {} to {to} queued", m.id);
        self.wake.notify_one();
        Ok(m)
    }

    /// The shop number `customer` last dealt with.
    fn line_of(&self, customer: &str) -> Option<String> {
        let texted = self.inbound_from(customer).into_iter().map(|t| (t.received_at, t.to));
        let sent = self.texts_to(customer).into_iter().filter_map(|m| Some((m.created_at, m.from?)));
        let called = self
            .store
            .list(500, None)
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.from.as_deref() == Some(customer))
            .filter_map(|c| Some((c.first_seen, c.to?)));
        texted
            .chain(sent)
            .chain(called)
            .filter(|(_, line)| !line.starts_with("MG"))
            .max_by_key(|(at, _)| *at)
            .map(|(_, line)| line)
    }

    /// Every text `customer` sent, oldest first.
    fn inbound_from(&self, customer: &str) -> Vec<Inbound> {
        let mut all: Vec<Inbound> = match self.store.docs::<Inbound>(message::INBOUND_PREFIX) {
            Ok(docs) => docs.into_iter().map(|(_, m)| m).filter(|m| m.from == customer).collect(),
            Err(e) => {
                log::warn!("texts: cannot read received texts: {e}");
                Vec::new()
            }
        };
        all.sort_by_key(|m| m.received_at);
        all
    }

    /// Both sides of the texts with `customer`, oldest first.
    pub fn thread(&self, customer: &str) -> Thread {
        let mut entries: Vec<ThreadEntry> = self
            .inbound_from(customer)
            .into_iter()
            .map(|m| ThreadEntry {
                at: m.received_at,
                incoming: true,
                body: m.body,
                kind: None,
                state: None,
                error: None,
            })
            .chain(self.texts_to(customer).into_iter().filter(|m| m.state != State::Skipped).map(|m| ThreadEntry {
                at: m.created_at,
                incoming: false,
                body: m.body,
                kind: Some(m.kind),
                state: Some(m.state),
                error: m.error,
            }))
            .collect();
        entries.sort_by_key(|e| e.at);
        Thread { number: customer.to_owned(), opted_out: self.opted_out(customer), entries }
    }

    /// Removes texts (both ways) from before `cutoff`, as retention does with calls; opt-outs
    /// are kept, since forgetting one would text somebody who said STOP. Returns how many.
    pub async fn prune(&self, cutoff: Timestamp) -> Result<usize, StoreError> {
        let mut old: Vec<String> = self
            .messages()
            .into_iter()
            .filter(|m| m.created_at < cutoff && !m.state.is_open())
            .map(|m| m.key())
            .collect();
        let inbound = self.store.docs::<Inbound>(message::INBOUND_PREFIX)?;
        old.extend(inbound.into_iter().filter(|(_, m)| m.received_at < cutoff).map(|(_, m)| m.key()));
        for key in &old {
            self.store.update_doc::<serde_json::Value, _>(key, |d| *d = None).await?;
        }
        Ok(old.len())
    }

    /// Every text, newest first.
    pub fn messages(&self) -> Vec<Message> {
        let mut all: Vec<Message> = match self.store.docs::<Message>(message::KEY_PREFIX) {
            Ok(docs) => docs.into_iter().map(|(_, m)| m).collect(),
            Err(e) => {
                log::warn!("texts: cannot read the outbox: {e}");
                Vec::new()
            }
        };
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.id.cmp(&b.id)));
        all
    }

    /// The texts about one call.
    pub fn for_call(&self, call_sid: &str) -> Vec<Message> {
        self.messages().into_iter().filter(|m| m.call_sid.as_deref() == Some(call_sid)).collect()
    }

    /// What health shows.
    pub fn summary(&self) -> Summary {
        let all = self.messages();
        let count = |f: fn(State) -> bool| all.iter().filter(|m| f(m.state)).count();
        Summary {
            enabled: self.config.missed_calls.sends_anything(),
            pending: count(State::is_open),
            sent: count(|s| s == State::Sent),
            delivered: count(|s| s == State::Delivered),
            failed: count(State::is_failure),
            last_failure: all
                .iter()
                .filter(|m| m.state.is_failure())
                .max_by_key(|m| m.updated_at)
                .map(|m| format!("{} to {}: {}", m.kind.as_str(), m.to, m.error.as_deref().unwrap_or("failed"))),
        }
    }
}

impl History for Texts {
    fn texts_to(&self, number: &str) -> Vec<Message> {
        self.messages().into_iter().filter(|m| m.to == number).collect()
    }

    fn opted_out(&self, number: &str) -> bool {
        let key = message::opt_out_key(number);
        matches!(self.store.doc::<OptOut>(&key), Ok(Some(_)))
    }
}

/// Why the owner's text was not queued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// Not a number that takes texts.
    #[error("{0:?} is not a mobile number in E.164 form (+15035550123)")]
    NotTextable(String),
    /// Nothing to send.
    #[error("the text is empty")]
    Empty,
    /// Over Twilio's limit.
    #[error("the text is {0} characters; Twilio takes at most 1600")]
    TooLong(usize),
    /// No account to send with.
    #[error("texts are not set up: set twilio.account_sid (and the Auth Token or an API key)")]
    NotConfigured,
    /// The customer replied STOP.
    #[error("{0} replied STOP; they can text START to hear from the shop again")]
    OptedOut(String),
    /// No sender known for this customer.
    #[error("no shop number to send from: set twilio.sms_from")]
    NoSender,
    /// The call log refused the write.
    #[error("the text could not be stored: {0}")]
    Store(StoreError),
}

/// The texts with one customer, both ways.
#[derive(Debug, Clone, Serialize)]
pub struct Thread {
    /// The customer.
    pub number: String,
    /// Whether they replied STOP.
    pub opted_out: bool,
    /// Oldest first.
    pub entries: Vec<ThreadEntry>,
}

/// One text in a [`Thread`].
#[derive(Debug, Clone, Serialize)]
pub struct ThreadEntry {
    /// When it was sent or received.
    pub at: Timestamp,
    /// From the customer.
    pub incoming: bool,
    /// The text.
    pub body: String,
    /// Why the box sent it (outgoing only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    /// Where it is (outgoing only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    /// What went wrong (outgoing only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `http://<hostname>.local:<admin port>/`: how a phone on the shop's Wi-Fi reaches the
/// dashboard (the SD image announces the name over mDNS).
fn lan_dashboard_url(config: &Config) -> String {
    let listen = config.admin.listen;
    if listen.ip().is_loopback() {
        return format!("http://{listen}/");
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "callbox".into());
    format!("http://{host}.local:{}/", listen.port())
}

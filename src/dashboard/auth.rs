//! Who may use the admin listener: the owner's browser (a session cookie from the login form,
//! with a CSRF token for every state-changing request) or a script (`Authorization: Bearer`).
//! Both present the admin token, and both draw on one budget of failures per client address,
//! so a LAN host cannot guess the token through the header faster than through the form.
//!
//! Sessions live in the call store, so a wall tablet stays signed in across a restart or a
//! power cut. Only a SHA-256 of each session id is stored: a copy of the SD card signs nobody
//! in. The CSRF token is derived from the id the same way, so it is never stored either.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::calls::{Store, StoreError};

/// Name of the session cookie.
pub const COOKIE: &str = "callbox_session";
/// How long a login lasts on a shared or passing device (the browser forgets it sooner, when
/// it closes: the cookie has no Max-Age).
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// How long "remember this device" lasts (a wall tablet; revocable on the dashboard).
pub const REMEMBERED_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// Sessions kept at once; the oldest is dropped beyond this (a shop has a few devices).
const MAX_SESSIONS: usize = 64;
/// Wrong admin tokens (login form or Bearer) allowed per client address per window before it
/// must wait.
const MAX_FAILURES: u32 = 5;
/// The rate-limit window for wrong admin tokens.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Where sessions live in the store, by the hash of their id.
const DOC_PREFIX: &str = "sessions/";
/// Longest device description kept (from the browser's User-Agent).
const MAX_DEVICE_CHARS: usize = 120;

/// How a request proved it may use the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// `Authorization: Bearer <admin token>`: a script; no CSRF risk (no ambient credential).
    Bearer,
    /// The session cookie of a logged-in browser, with the CSRF token it must echo.
    Session {
        /// The session's public id (the hash of the cookie value), as listed.
        key: String,
        /// The token state-changing requests must send in `X-CSRF-Token`.
        csrf: String,
    },
}

/// One signed-in device, as stored (and listed: nothing in it signs anybody in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The SHA-256 of the session id, hex: the key to revoke it by.
    #[serde(default)]
    pub id: String,
    /// When it signed in.
    pub created_at: Timestamp,
    /// When it ends.
    pub expires_at: Timestamp,
    /// Whether "remember this device" was ticked.
    pub remember: bool,
    /// The browser it signed in from (its User-Agent, shortened), and the address.
    pub device: String,
}

/// Logged-in browser sessions (in the call store) and the login rate limit (in memory: a
/// restart forgives a few typos).
#[derive(Debug)]
pub struct Sessions {
    store: Store,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// The outcome of presenting the admin token.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenCheck {
    /// It is the admin token.
    Valid,
    /// It is not.
    Wrong,
    /// Too many wrong tokens from this address: not even looked at; try again after this long.
    TooMany(Duration),
}

/// The outcome of a login attempt.
#[derive(Debug)]
pub enum Login {
    /// Logged in: set this session id as the cookie, for this long (`None`: until the browser
    /// closes).
    Ok {
        /// The cookie value.
        id: String,
        /// The cookie's Max-Age.
        max_age: Option<Duration>,
    },
    /// Wrong token.
    Refused,
    /// Too many failures from this address; try again after this long.
    TooMany(Duration),
    /// The token was right but the session could not be stored.
    Unavailable(StoreError),
}

/// The stored key (and listed id) of a session id.
fn key_of(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// The CSRF token of a session id: derived, so it needs no storing and cannot be guessed
/// without the cookie.
fn csrf_of(id: &str) -> String {
    hex::encode(Sha256::new().chain_update(b"callbox csrf\0").chain_update(id.as_bytes()).finalize())
}

impl Sessions {
    /// Sessions kept in `store`.
    pub fn new(store: Store) -> Self {
        Self { store, failures: Mutex::default() }
    }

    /// Checks `token` against the admin token for a client at `ip`, counting a wrong one
    /// against the address (an IPv6 /64 counts as one, as it does for connection shares).
    /// While the address is over its budget the token is not compared at all, so a guess that
    /// happens to be right teaches the guesser nothing.
    pub fn check_token(&self, ip: IpAddr, token: &str, admin_token: &str) -> TokenCheck {
        let key = crate::net::address_key(ip);
        let now = Instant::now();
        let mut failures = crate::sync::lock(&self.failures);
        if let Some((count, since)) = failures.get(&key)
            && *count >= MAX_FAILURES
            && now.duration_since(*since) < FAILURE_WINDOW
        {
            return TokenCheck::TooMany(FAILURE_WINDOW - now.duration_since(*since));
        }
        if !admin_token.is_empty() && bool::from(token.as_bytes().ct_eq(admin_token.as_bytes())) {
            return TokenCheck::Valid;
        }
        let entry = failures.entry(key).or_insert((0, now));
        if now.duration_since(entry.1) >= FAILURE_WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
        // Forget stale entries so the map cannot grow without bound.
        failures.retain(|_, (_, since)| now.duration_since(*since) < FAILURE_WINDOW);
        TokenCheck::Wrong
    }

    /// Checks `token` against the admin token for a client at `ip` and opens a session, on
    /// disk before it is answered. `device` is the browser's User-Agent.
    pub async fn login(&self, ip: IpAddr, token: &str, admin_token: &str, remember: bool, device: &str) -> Login {
        match self.check_token(ip, token, admin_token) {
            TokenCheck::Valid => {}
            TokenCheck::Wrong => return Login::Refused,
            TokenCheck::TooMany(wait) => return Login::TooMany(wait),
        }
        // A person who typed the token right gets a fresh budget for the next typo. (A Bearer
        // success does not reset it: a script polling every few seconds would otherwise hand a
        // guesser on the same address a new budget with every poll.)
        crate::sync::lock(&self.failures).remove(&crate::net::address_key(ip));
        let now = Timestamp::now();
        if let Err(e) = self.forget_stale(now).await {
            return Login::Unavailable(e);
        }
        let id = crate::random::hex::<32>();
        let lifetime = if remember { REMEMBERED_LIFETIME } else { SESSION_LIFETIME };
        let expires_at = SignedDuration::try_from(lifetime).ok().and_then(|d| now.checked_add(d).ok()).unwrap_or(now);
        let device = format!("{} from {ip}", device.chars().take(MAX_DEVICE_CHARS).collect::<String>().trim());
        let key = key_of(&id);
        let info = SessionInfo { id: key.clone(), created_at: now, expires_at, remember, device };
        match self.store.update_doc::<SessionInfo, _>(&format!("{DOC_PREFIX}{key}"), |d| *d = Some(info)).await {
            Ok(_) => Login::Ok { id, max_age: remember.then_some(lifetime) },
            Err(e) => Login::Unavailable(e),
        }
    }

    /// Removes expired sessions, and the oldest beyond [`MAX_SESSIONS`] - 1 to make room.
    async fn forget_stale(&self, now: Timestamp) -> Result<(), StoreError> {
        let (mut live, expired): (Vec<SessionInfo>, Vec<SessionInfo>) =
            self.list()?.into_iter().partition(|s| s.expires_at > now);
        // `list` is newest first: what is beyond the newest MAX_SESSIONS - 1 goes.
        let oldest = live.split_off(live.len().min(MAX_SESSIONS - 1));
        for s in expired.iter().chain(&oldest) {
            self.revoke(&s.id).await?;
        }
        Ok(())
    }

    /// The session for a cookie value, if it is live.
    pub fn caller(&self, id: &str) -> Option<Caller> {
        let key = key_of(id);
        let info = match self.store.doc::<SessionInfo>(&format!("{DOC_PREFIX}{key}")) {
            Ok(info) => info?,
            Err(e) => {
                log::warn!("admin: cannot read sessions: {e}");
                return None;
            }
        };
        (info.expires_at > Timestamp::now()).then(|| Caller::Session { key, csrf: csrf_of(id) })
    }

    /// The signed-in devices, newest first.
    pub fn list(&self) -> Result<Vec<SessionInfo>, StoreError> {
        let mut all: Vec<SessionInfo> = self
            .store
            .docs::<SessionInfo>(DOC_PREFIX)?
            .into_iter()
            .map(|(key, mut s)| {
                s.id = key[DOC_PREFIX.len()..].to_owned();
                s
            })
            .collect();
        all.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        Ok(all)
    }

    /// Ends the session listed as `key` (a hash); whether there was one. On disk when it returns.
    pub async fn revoke(&self, key: &str) -> Result<bool, StoreError> {
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(false);
        }
        let mut existed = false;
        self.store
            .update_doc::<SessionInfo, _>(&format!("{DOC_PREFIX}{key}"), |d| {
                existed = d.is_some();
                *d = None;
            })
            .await?;
        Ok(existed)
    }
}

/// Reads one cookie's value from a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').filter_map(|kv| kv.trim().split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "right-token-0123456";

    fn sessions(dir: &std::path::Path) -> Sessions {
        Sessions::new(Store::open(dir).unwrap())
    }

    async fn login(s: &Sessions, ip: IpAddr, token: &str, remember: bool) -> Login {
        s.login(ip, token, ADMIN, remember, "Mozilla/5.0 (X11; Linux x86_64) Chrome/156").await
    }

    #[tokio::test]
    async fn sessions_survive_a_restart_stored_hashed_until_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let s = sessions(dir.path());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let Login::Ok { id, max_age } = login(&s, ip, ADMIN, true).await else { panic!() };
        assert_eq!(max_age, Some(REMEMBERED_LIFETIME));
        let Some(Caller::Session { key, csrf }) = s.caller(&id) else { panic!() };
        assert_ne!(csrf, id);
        let Login::Ok { id: brief, max_age } = login(&s, ip, ADMIN, false).await else { panic!() };
        assert_eq!(max_age, None, "a session cookie: gone when the browser closes");
        s.store.close().unwrap();
        drop(s);

        let s = sessions(dir.path());
        assert_eq!(s.caller(&id), Some(Caller::Session { key: key.clone(), csrf }), "still signed in");
        let listed = s.list().unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|i| i.id != id && i.id != brief && i.device.ends_with("from 192.0.2.7")));
        assert!(listed.iter().any(|i| i.id == key && i.remember));
        for file in walk(dir.path()) {
            let bytes = std::fs::read(&file).unwrap();
            assert!(!bytes.windows(id.len()).any(|w| w == id.as_bytes()), "{} holds a session id", file.display());
        }
        assert!(s.revoke(&key).await.unwrap());
        assert_eq!(s.caller(&id), None);
        assert!(!s.revoke(&key).await.unwrap());
        assert!(!s.revoke("../../etc").await.unwrap());
        assert!(s.caller(&brief).is_some());
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
        }
        out
    }

    #[tokio::test]
    async fn the_oldest_session_makes_room_beyond_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let s = sessions(dir.path());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let mut ids = Vec::new();
        for _ in 0..=MAX_SESSIONS {
            let Login::Ok { id, .. } = login(&s, ip, ADMIN, false).await else { panic!() };
            ids.push(id);
        }
        assert_eq!(s.list().unwrap().len(), MAX_SESSIONS);
        assert_eq!(s.caller(&ids[0]), None, "the oldest went");
        assert!(ids[1..].iter().all(|id| s.caller(id).is_some()));
    }

    #[tokio::test]
    async fn login_rate_limit() {
        let dir = tempfile::tempdir().unwrap();
        let s = sessions(dir.path());
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert!(matches!(login(&s, ip, "wrong", false).await, Login::Refused));
        }
        assert!(matches!(login(&s, ip, ADMIN, false).await, Login::TooMany(_)));
        // Another address is not affected.
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert!(matches!(login(&s, other, ADMIN, false).await, Login::Ok { .. }));
    }

    #[tokio::test]
    async fn bearer_and_login_share_one_budget_per_address_and_ipv6_64() {
        let dir = tempfile::tempdir().unwrap();
        let s = sessions(dir.path());
        let admin = ADMIN;
        let ip: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        for i in 0..MAX_FAILURES - 1 {
            // Rotating addresses inside one /64 buys nothing.
            let ip = IpAddr::V6(std::net::Ipv6Addr::from_bits(ip_bits(ip) + u128::from(i)));
            assert_eq!(s.check_token(ip, "wrong", admin), TokenCheck::Wrong);
        }
        assert!(matches!(login(&s, ip, "wrong", false).await, Login::Refused));
        assert!(matches!(s.check_token(ip, admin, admin), TokenCheck::TooMany(_)));
        assert_eq!(s.check_token("2001:db8:1:3::1".parse().unwrap(), admin, admin), TokenCheck::Valid);
        // No admin token configured: nothing matches, not even an empty one.
        assert_eq!(s.check_token("192.0.2.9".parse().unwrap(), "", ""), TokenCheck::Wrong);
    }

    fn ip_bits(ip: IpAddr) -> u128 {
        match ip {
            IpAddr::V6(v6) => v6.to_bits(),
            IpAddr::V4(v4) => u128::from(v4.to_bits()),
        }
    }

    #[test]
    fn cookie_parsing() {
        assert_eq!(cookie("a=1; callbox_session=abc; b=2", COOKIE), Some("abc"));
        assert_eq!(cookie("a=1", COOKIE), None);
    }
}

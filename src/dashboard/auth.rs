//! Who may use the admin listener: the owner's browser (a session cookie from the login form,
//! with a CSRF token for every state-changing request) or a script (`Authorization: Bearer`).
//! Both present the admin token, and both draw on one budget of failures per client address,
//! so a LAN host cannot guess the token through the header faster than through the form.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

/// Name of the session cookie.
pub const COOKIE: &str = "callbox_session";
/// How long a login lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at once; the oldest is dropped beyond this (a shop has a few devices).
const MAX_SESSIONS: usize = 64;
/// Wrong admin tokens (login form or Bearer) allowed per client address per window before it
/// must wait.
const MAX_FAILURES: u32 = 5;
/// The rate-limit window for wrong admin tokens.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// How a request proved it may use the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// `Authorization: Bearer <admin token>`: a script; no CSRF risk (no ambient credential).
    Bearer,
    /// The session cookie of a logged-in browser, with the CSRF token it must echo.
    Session {
        /// The session id (the cookie value).
        id: String,
        /// The token state-changing requests must send in `X-CSRF-Token`.
        csrf: String,
    },
}

#[derive(Debug)]
struct Session {
    csrf: String,
    created: Instant,
}

/// Logged-in browser sessions and the login rate limit. In memory: a restart logs everyone out.
#[derive(Debug, Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
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
#[derive(Debug, PartialEq, Eq)]
pub enum Login {
    /// Logged in: set this session id as the cookie.
    Ok(String),
    /// Wrong token.
    Refused,
    /// Too many failures from this address; try again after this long.
    TooMany(Duration),
}

impl Sessions {
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

    /// Checks `token` against the admin token for a client at `ip` and opens a session.
    pub fn login(&self, ip: IpAddr, token: &str, admin_token: &str) -> Login {
        match self.check_token(ip, token, admin_token) {
            TokenCheck::Valid => {}
            TokenCheck::Wrong => return Login::Refused,
            TokenCheck::TooMany(wait) => return Login::TooMany(wait),
        }
        // A person who typed the token right gets a fresh budget for the next typo. (A Bearer
        // success does not reset it: a script polling every few seconds would otherwise hand a
        // guesser on the same address a new budget with every poll.)
        crate::sync::lock(&self.failures).remove(&crate::net::address_key(ip));
        let now = Instant::now();
        let id = crate::random::hex::<32>();
        let mut sessions = crate::sync::lock(&self.sessions);
        sessions.retain(|_, s| now.duration_since(s.created) < SESSION_LIFETIME);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(id.clone(), Session { csrf: crate::random::hex::<32>(), created: now });
        Login::Ok(id)
    }

    /// The session for a cookie value, if it is live.
    pub fn caller(&self, id: &str) -> Option<Caller> {
        let sessions = crate::sync::lock(&self.sessions);
        let s = sessions.get(id)?;
        (s.created.elapsed() < SESSION_LIFETIME).then(|| Caller::Session { id: id.to_owned(), csrf: s.csrf.clone() })
    }

    /// Ends a session.
    pub fn logout(&self, id: &str) {
        crate::sync::lock(&self.sessions).remove(id);
    }
}

/// Reads one cookie's value from a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').filter_map(|kv| kv.trim().split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_logout_and_rate_limit() {
        let s = Sessions::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let Login::Ok(id) = s.login(ip, "right-token-0123456", "right-token-0123456") else { panic!() };
        assert!(matches!(s.caller(&id), Some(Caller::Session { .. })));
        s.logout(&id);
        assert_eq!(s.caller(&id), None);
        for _ in 0..MAX_FAILURES {
            assert_eq!(s.login(ip, "wrong", "right-token-0123456"), Login::Refused);
        }
        assert!(matches!(s.login(ip, "right-token-0123456", "right-token-0123456"), Login::TooMany(_)));
        // Another address is not affected.
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        assert!(matches!(s.login(other, "right-token-0123456", "right-token-0123456"), Login::Ok(_)));
    }

    #[test]
    fn bearer_and_login_share_one_budget_per_address_and_ipv6_64() {
        let s = Sessions::default();
        let admin = "right-token-0123456";
        let ip: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        for i in 0..MAX_FAILURES - 1 {
            // Rotating addresses inside one /64 buys nothing.
            let ip = IpAddr::V6(std::net::Ipv6Addr::from_bits(ip_bits(ip) + u128::from(i)));
            assert_eq!(s.check_token(ip, "wrong", admin), TokenCheck::Wrong);
        }
        assert_eq!(s.login(ip, "wrong", admin), Login::Refused);
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

//! Who gets a connection on the admin listener, so that hosts on the LAN without the admin
//! token cannot crowd the owner out.
//!
//! A cap taken before `accept` (what the public listener does) cannot protect the owner here:
//! two hosts holding 32 idle sockets each fill 64 slots, and the owner's connection then waits
//! in the kernel's backlog until a header timeout frees one, which the attackers take again.
//! So the admin listener accepts every connection and sorts them in two groups:
//!
//! - **Pending**: every connection starts here and stays while it has not sent a request with
//!   valid credentials (the login page, its stylesheet, `/healthz`, a wrong token). A pending
//!   connection serves one request and is then closed (`Connection: close`), so keep-alive is
//!   for the owner only. The group is small ([`MAX_PENDING`]); when it is full, a new
//!   connection makes room by closing the *oldest connection of the address holding the most
//!   pending ones* (counting the newcomer). Hosts holding many idle sockets only churn their
//!   own, while the owner's single fresh connection is the last to go. It keeps its place
//!   until it times out (the header timeout) or authenticates.
//! - **Authenticated**: a connection whose request carried the admin token or a live session
//!   moves here and is kept alive (a dashboard's live feed, a script's polling). It is never
//!   evicted; this group has its own cap, total and per address, against a buggy script. When
//!   it is full a request is still answered, on a pending connection.
//!
//! What this does not cover: more distinct LAN addresses than [`MAX_PENDING`], each opening
//! connections faster than the owner's client sends its first request, can still close the
//! owner's fresh connection before it authenticates (the owner's browser retries). Only
//! someone who already holds the token can fill the authenticated group.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::net::address_key;

/// Connections without credentials held at once (each serves one request).
pub(super) const MAX_PENDING: usize = 32;

/// The admin listener's two groups of connections.
#[derive(Debug)]
pub(super) struct Admission {
    max_authenticated: usize,
    max_authenticated_per_address: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    /// Pending connections by id, which is their arrival order.
    pending: BTreeMap<u64, Pending>,
    /// Authenticated connections per address, and their total.
    authenticated: HashMap<IpAddr, usize>,
    authenticated_total: usize,
    /// Set while the pending group is full, for one log line per episode.
    evicting: bool,
}

#[derive(Debug)]
struct Pending {
    key: IpAddr,
    evict: CancellationToken,
}

/// One admitted connection's place; dropping it gives the place back.
#[derive(Debug)]
pub(super) struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    key: IpAddr,
    evicted: CancellationToken,
    authenticated: AtomicBool,
}

impl Admission {
    /// Room for `max_authenticated` kept-alive connections, at most
    /// `max_authenticated_per_address` from one address, besides the pending ones.
    pub(super) fn new(max_authenticated: usize, max_authenticated_per_address: usize) -> Arc<Self> {
        Arc::new(Self { max_authenticated, max_authenticated_per_address, state: Mutex::default() })
    }

    /// Admits a new connection from `peer` as pending, closing another pending one if the
    /// group is full (see the module doc for which).
    pub(super) fn admit(self: &Arc<Self>, peer: IpAddr) -> Arc<Ticket> {
        let key = address_key(peer);
        // Plain bookkeeping: a panic elsewhere cannot leave it half-updated.
        let mut state = crate::sync::lock(&self.state);
        if state.pending.len() >= MAX_PENDING
            && let Some(victim) = victim(&state.pending, key)
            && let Some(evicted) = state.pending.remove(&victim)
        {
            if !state.evicting {
                log::warn!(
                    "admin listener: {MAX_PENDING} connections without credentials open; closing the oldest of \
                     the busiest address ({}) for each new one",
                    evicted.key
                );
                state.evicting = true;
            }
            evicted.evict.cancel();
        }
        let id = state.next_id;
        state.next_id += 1;
        let evicted = CancellationToken::new();
        state.pending.insert(id, Pending { key, evict: evicted.clone() });
        Arc::new(Ticket { admission: self.clone(), id, key, evicted, authenticated: AtomicBool::new(false) })
    }
}

/// The pending connection to close for a newcomer from `newcomer`: the oldest of the address
/// with the most (the newcomer included), the oldest overall on a tie.
fn victim(pending: &BTreeMap<u64, Pending>, newcomer: IpAddr) -> Option<u64> {
    let mut counts: HashMap<IpAddr, usize> = HashMap::new();
    for p in pending.values() {
        *counts.entry(p.key).or_default() += 1;
    }
    *counts.entry(newcomer).or_default() += 1;
    let most = counts.values().copied().max()?;
    // Found whenever `pending` is not empty: if the newcomer's address alone has `most`, it
    // has pending connections; otherwise a pending address has it.
    pending.iter().find(|(_, p)| counts.get(&p.key) == Some(&most)).map(|(id, _)| *id)
}

impl Ticket {
    /// Cancelled when this connection was closed to make room; its task must drop it.
    pub(super) fn evicted(&self) -> &CancellationToken {
        &self.evicted
    }

    /// Whether the connection is in the authenticated group (and may be kept alive).
    pub(super) fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Acquire)
    }

    /// The connection sent valid credentials: moves it to the authenticated group if there is
    /// room. Returns whether it may be kept alive.
    pub(super) fn authenticate(&self) -> bool {
        if self.authenticated.load(Ordering::Acquire) {
            return true;
        }
        let admission = &self.admission;
        let mut state = crate::sync::lock(&admission.state);
        let from_address = state.authenticated.get(&self.key).copied().unwrap_or(0);
        if state.authenticated_total >= admission.max_authenticated
            || from_address >= admission.max_authenticated_per_address
            || state.pending.remove(&self.id).is_none()
        {
            // Full, or evicted a moment ago (then it is closing anyway).
            return false;
        }
        *state.authenticated.entry(self.key).or_default() += 1;
        state.authenticated_total += 1;
        if state.pending.len() < MAX_PENDING {
            state.evicting = false;
        }
        self.authenticated.store(true, Ordering::Release);
        true
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = crate::sync::lock(&self.admission.state);
        if self.authenticated.load(Ordering::Acquire) {
            state.authenticated_total = state.authenticated_total.saturating_sub(1);
            if let Some(n) = state.authenticated.get_mut(&self.key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    state.authenticated.remove(&self.key);
                }
            }
        } else {
            state.pending.remove(&self.id);
        }
        if state.pending.len() < MAX_PENDING {
            state.evicting = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn a_full_pending_group_evicts_the_oldest_of_the_busiest_address() {
        let admission = Admission::new(4, 2);
        let mut a: Vec<_> = (0..MAX_PENDING - 2).map(|_| admission.admit(ip(1))).collect();
        let b = admission.admit(ip(2));
        let owner = admission.admit(ip(3));
        // Full now. A newcomer from anywhere closes the busiest address's oldest connection.
        let newcomer = admission.admit(ip(4));
        assert!(a[0].evicted().is_cancelled());
        assert!(!a[1].evicted().is_cancelled());
        // The busy address churning only closes its own.
        for _ in 0..(3 * MAX_PENDING) {
            a.push(admission.admit(ip(1)));
        }
        assert!(!owner.evicted().is_cancelled() && !b.evicted().is_cancelled() && !newcomer.evicted().is_cancelled());
        assert_eq!(admission.state.lock().unwrap().pending.len(), MAX_PENDING);
        // Evicted tickets leave nothing behind when their connections end.
        drop(a);
        assert_eq!(admission.state.lock().unwrap().pending.len(), 3);
    }

    #[test]
    fn authenticated_connections_are_kept_apart_and_capped() {
        let admission = Admission::new(3, 2);
        let owner: Vec<_> = (0..3).map(|_| admission.admit(ip(3))).collect();
        assert!(owner[0].authenticate() && owner[0].authenticate());
        assert!(owner[1].authenticate());
        assert!(!owner[2].authenticate(), "the per-address share of authenticated connections");
        let script = admission.admit(ip(5));
        assert!(script.authenticate());
        assert!(!admission.admit(ip(6)).authenticate(), "the total of authenticated connections");
        // A flood of pending connections never touches authenticated ones.
        let flood: Vec<_> = (0..(2 * MAX_PENDING)).map(|_| admission.admit(ip(1))).collect();
        assert!(!owner[0].evicted().is_cancelled() && !script.evicted().is_cancelled());
        assert!(!owner[2].evicted().is_cancelled(), "the owner's lone pending connection outlasts the flood");
        drop(flood);
        drop(owner);
        drop(script);
        let state = admission.state.lock().unwrap();
        assert!(state.pending.is_empty() && state.authenticated.is_empty() && state.authenticated_total == 0);
    }
}

//! Accepting TCP connections under a cap, shared by every listener the box runs.
//!
//! Two limits: a total that bounds memory and file descriptors, and a per-address share of it
//! so that one client (a slowloris trickling headers, a flood from one host) cannot take every
//! slot and lock Twilio out.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// First wait after a failed `accept`; doubles up to [`MAX_ACCEPT_BACKOFF`].
pub(crate) const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// Longest wait after failed `accept`s (EMFILE under load): retry, never spin or exit.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// A listener whose connections each hold a slot of a shared total and of their address's share.
pub struct CappedListener {
    name: &'static str,
    listener: TcpListener,
    limit: Arc<Semaphore>,
    per_address: Arc<PerAddress>,
    backoff: Duration,
}

/// What an accepted connection holds until it ends: drop it to free the slot.
#[derive(Debug)]
pub struct Slot {
    _total: OwnedSemaphorePermit,
    address: AddressShareCell,
}

impl Slot {
    /// A handle on this connection's address share, for its requests: an upgraded request
    /// (a media stream) outlives its HTTP connection and takes the share with it.
    pub fn address_share(&self) -> AddressShareCell {
        self.address.clone()
    }
}

/// A connection's place in its address's share, until whoever holds it last lets it go: the
/// connection itself, or the session an upgrade of it became.
#[derive(Debug, Clone)]
pub struct AddressShareCell(Arc<Mutex<Option<AddressShare>>>);

impl AddressShareCell {
    /// A cell holding no share: for connections whose listener counts them otherwise (the
    /// admin listener's admission).
    pub fn empty() -> Self {
        Self(Arc::new(Mutex::new(None)))
    }

    /// Takes the share out: it is then freed when the returned value is dropped, no longer
    /// when the connection ends. `None` when it was already taken.
    pub fn take(&self) -> Option<AddressShare> {
        crate::sync::lock(&self.0).take()
    }
}

impl CappedListener {
    /// Wraps `listener`; `name` appears in log lines. Connections share `limit`, and no one
    /// address (an IPv6 /64 counts as one) holds more than `max_per_address` at once.
    pub fn new(name: &'static str, listener: TcpListener, limit: Arc<Semaphore>, max_per_address: usize) -> Self {
        let per_address = Arc::new(PerAddress { max: max_per_address.max(1), open: Mutex::default() });
        Self { name, listener, limit, per_address, backoff: MIN_ACCEPT_BACKOFF }
    }

    /// The next connection with its slot, or `None` once `shutdown` is cancelled. The total's
    /// permit is taken *before* `accept`, so beyond the cap connections wait in the kernel's
    /// backlog instead of in memory here. A connection from an address already at its share is
    /// closed at once.
    pub async fn accept(&mut self, shutdown: &CancellationToken) -> Option<(Slot, TcpStream, SocketAddr)> {
        let permit = tokio::select! {
            p = self.limit.clone().acquire_owned() => p.ok()?,
            () = shutdown.cancelled() => return None,
        };
        loop {
            let (stream, peer) = tokio::select! {
                c = accept_retrying(self.name, &self.listener, &mut self.backoff) => c,
                () = shutdown.cancelled() => return None,
            };
            match self.per_address.take(peer.ip()) {
                Ok(address) => {
                    let address = AddressShareCell(Arc::new(Mutex::new(Some(address))));
                    return Some((Slot { _total: permit, address }, stream, peer));
                }
                Err(Refused { first }) => {
                    // One line per episode, not one per connection of a flood.
                    if first {
                        log::warn!(
                            "{} listener: {} already has {} connections open; refusing more until some close",
                            self.name,
                            peer.ip(),
                            self.per_address.max
                        );
                    }
                    drop(stream);
                }
            }
        }
    }
}

/// The next connection on `listener`. A failed `accept` (EMFILE under load) is retried after
/// `backoff`, which doubles up to [`MAX_ACCEPT_BACKOFF`]: never spin, never give up. Keep
/// `backoff` across calls, starting at [`MIN_ACCEPT_BACKOFF`]. Cancel-safe.
pub(crate) async fn accept_retrying(
    name: &str,
    listener: &TcpListener,
    backoff: &mut Duration,
) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => {
                *backoff = MIN_ACCEPT_BACKOFF;
                return accepted;
            }
            Err(e) => {
                log::warn!("{name} listener: accept failed: {e}; retrying in {backoff:?}");
                tokio::time::sleep(*backoff).await;
                *backoff = (*backoff * 2).min(MAX_ACCEPT_BACKOFF);
            }
        }
    }
}

/// Open connections per client address.
#[derive(Debug)]
struct PerAddress {
    max: usize,
    open: Mutex<HashMap<IpAddr, Open>>,
}

#[derive(Debug, Default)]
struct Open {
    count: usize,
    /// Whether a connection was refused since the address last dropped below its share.
    refusing: bool,
}

/// A connection refused because its address is at its share.
struct Refused {
    /// The first refusal since the address was last below its share.
    first: bool,
}

impl PerAddress {
    fn take(self: &Arc<Self>, ip: IpAddr) -> Result<AddressShare, Refused> {
        let key = address_key(ip);
        // The map holds plain counters: a panic elsewhere cannot leave them inconsistent.
        let mut open = crate::sync::lock(&self.open);
        let entry = open.entry(key).or_default();
        if entry.count >= self.max {
            let first = !entry.refusing;
            entry.refusing = true;
            return Err(Refused { first });
        }
        entry.count += 1;
        Ok(AddressShare { table: self.clone(), key })
    }
}

/// One connection's place in its address's share; dropping it frees the place.
#[derive(Debug)]
pub struct AddressShare {
    table: Arc<PerAddress>,
    key: IpAddr,
}

impl Drop for AddressShare {
    fn drop(&mut self) {
        let mut open = crate::sync::lock(&self.table.open);
        if let Some(entry) = open.get_mut(&self.key) {
            entry.count = entry.count.saturating_sub(1);
            entry.refusing = false;
            if entry.count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The unit a client is counted by: its IPv4 address, or its IPv6 /64 (one host gets a whole
/// /64 and can pick any address in it).
pub(crate) fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !((1u128 << 64) - 1))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max: usize) -> Arc<PerAddress> {
        Arc::new(PerAddress { max, open: Mutex::default() })
    }

    #[test]
    fn an_address_gets_its_share_and_no_more_until_one_closes() {
        let t = table(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = t.take(a).ok().unwrap();
        let _second = t.take(a).ok().unwrap();
        assert!(matches!(t.take(a), Err(Refused { first: true })));
        assert!(matches!(t.take(a), Err(Refused { first: false })), "one log line per episode");
        assert!(t.take(b).is_ok(), "another address is not affected");
        drop(first);
        assert!(t.take(a).is_ok());
    }

    #[test]
    fn a_share_taken_out_of_its_connection_is_held_until_the_taker_lets_go() {
        let t = table(1);
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let cell = AddressShareCell(Arc::new(Mutex::new(Some(t.take(ip).ok().unwrap()))));
        let session = cell.take().unwrap();
        assert!(cell.take().is_none(), "a share is taken once");
        drop(cell);
        assert!(t.take(ip).is_err(), "the connection ended but its session still holds the share");
        drop(session);
        assert!(t.take(ip).is_ok());
    }

    #[test]
    fn closed_connections_leave_nothing_behind() {
        let t = table(4);
        let slots: Vec<_> = (1..=50u8).map(|i| t.take(IpAddr::from([10, 0, 0, i])).ok().unwrap()).collect();
        assert_eq!(t.open.lock().unwrap().len(), 50);
        drop(slots);
        assert!(t.open.lock().unwrap().is_empty());
    }

    #[test]
    fn an_ipv6_64_counts_as_one_client_and_mapped_ipv4_as_its_ipv4() {
        let t = table(1);
        let _held = t.take("2001:db8:1:2::1".parse().unwrap()).ok().unwrap();
        assert!(t.take("2001:db8:1:2:ffff::9".parse().unwrap()).is_err());
        assert!(t.take("2001:db8:1:3::1".parse().unwrap()).is_ok());
        let _v4 = t.take("192.0.2.7".parse().unwrap()).ok().unwrap();
        assert!(t.take("::ffff:192.0.2.7".parse().unwrap()).is_err());
    }
}

//! Accepting TCP connections under a cap, shared by every listener the box runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// First wait after a failed `accept`; doubles up to [`MAX_ACCEPT_BACKOFF`].
const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);
/// Longest wait after failed `accept`s (EMFILE under load): retry, never spin or exit.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// A listener whose connections each hold a permit of a shared cap.
pub struct CappedListener {
    name: &'static str,
    listener: TcpListener,
    limit: Arc<Semaphore>,
    backoff: Duration,
}

impl CappedListener {
    /// Wraps `listener`; `name` appears in log lines.
    pub fn new(name: &'static str, listener: TcpListener, limit: Arc<Semaphore>) -> Self {
        Self { name, listener, limit, backoff: MIN_ACCEPT_BACKOFF }
    }

    /// The next connection with its permit (drop the permit when the connection ends), or
    /// `None` once `shutdown` is cancelled. The permit is taken *before* `accept`, so beyond
    /// the cap connections wait in the kernel's backlog instead of in memory here.
    pub async fn accept(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Option<(OwnedSemaphorePermit, TcpStream, SocketAddr)> {
        let permit = tokio::select! {
            p = self.limit.clone().acquire_owned() => p.ok()?,
            () = shutdown.cancelled() => return None,
        };
        loop {
            tokio::select! {
                r = self.listener.accept() => match r {
                    Ok((stream, peer)) => {
                        self.backoff = MIN_ACCEPT_BACKOFF;
                        return Some((permit, stream, peer));
                    }
                    Err(e) => {
                        log::warn!("{} listener: accept failed: {e}; retrying in {:?}", self.name, self.backoff);
                        tokio::time::sleep(self.backoff).await;
                        self.backoff = (self.backoff * 2).min(MAX_ACCEPT_BACKOFF);
                    }
                },
                () = shutdown.cancelled() => return None,
            }
        }
    }
}

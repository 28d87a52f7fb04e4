//! The service manager's side of the box: sockets handed over by socket activation, and
//! `sd_notify` (READY, STOPPING, WATCHDOG). Outside systemd every call here is a no-op.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// Listening TCP sockets passed by systemd (`LISTEN_FDS`), with their local addresses.
/// Empty when the process was not socket-activated.
pub fn activated_listeners() -> Vec<(SocketAddr, TcpListener)> {
    let mut fds = listenfd::ListenFd::from_env();
    let mut out = Vec::new();
    for i in 0..fds.len() {
        match fds.take_tcp_listener(i) {
            Ok(Some(l)) => match l.local_addr() {
                Ok(addr) => out.push((addr, l)),
                Err(e) => log::warn!("socket activation: passed socket {i} has no address ({e}); ignored"),
            },
            Ok(None) => {}
            Err(e) => log::warn!("socket activation: passed fd {i} is not a listening TCP socket ({e}); ignored"),
        }
    }
    out
}

/// Takes the activated listener whose port is `port`, if systemd passed one.
pub fn take_port(listeners: &mut Vec<(SocketAddr, TcpListener)>, port: u16) -> Option<TcpListener> {
    let i = listeners.iter().position(|(addr, _)| addr.port() == port)?;
    Some(listeners.remove(i).1)
}

/// Tells systemd the box is serving (`Type=notify`).
pub fn notify_ready() {
    notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// Tells systemd the box is shutting down.
pub fn notify_stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

fn notify(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("sd_notify failed: {e}");
    }
}

/// Pings the watchdog at half the interval systemd asked for (`WatchdogSec=`), from the async
/// runtime itself: if the runtime hangs, the pings stop and systemd restarts the service.
pub fn spawn_watchdog(shutdown: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = (interval / 2).max(Duration::from_millis(100));
    log::info!("systemd watchdog every {period:?}");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = tick.tick() => notify(&[NotifyState::Watchdog]),
                () = shutdown.cancelled() => return,
            }
        }
    });
}

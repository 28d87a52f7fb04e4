//! `[server]`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[server]`: the public listener Twilio talks to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port to bind.
    pub listen: SocketAddr,
    /// Connections served at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Connections one client address (an IPv6 /64 counts as one) may hold at once; more are
    /// closed on arrival. Twilio's media streams for many simultaneous calls may come from one
    /// address, so keep it well above the busiest hour's concurrent calls.
    pub max_connections_per_address: usize,
    /// Seconds a client may take to send a request's headers.
    pub header_timeout_secs: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 443)),
            max_connections: 512,
            max_connections_per_address: 128,
            header_timeout_secs: 10,
        }
    }
}

impl ServerConfig {
    /// The header read timeout as a duration.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs)
    }

    pub(super) fn validate(&self, errs: &mut Vec<ConfigError>) {
        if self.max_connections == 0 {
            errs.push(ConfigError::invalid("server.max_connections", "must be at least 1"));
        }
        if self.max_connections_per_address == 0 {
            errs.push(ConfigError::invalid("server.max_connections_per_address", "must be at least 1"));
        }
        if self.header_timeout_secs == 0 {
            errs.push(ConfigError::invalid("server.header_timeout_secs", "must be at least 1"));
        }
    }
}

//! `[admin]`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::secret::looks_like_placeholder;
use super::{ConfigError, ENV_ADMIN_TOKEN, Secret};

/// `[admin]`: the owner's listener on the shop LAN.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address and port to bind.
    pub listen: SocketAddr,
    /// Bearer token for the admin API (or `CALLBOX_ADMIN_TOKEN`).
    pub token: Secret,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([0, 0, 0, 0], 8080)), token: Secret::default() }
    }
}

impl AdminConfig {
    /// `dev` skips the token checks (dev mode makes its own); `server_listen` is the public
    /// listener, which the admin one must never share.
    pub(super) fn validate(&self, dev: bool, server_listen: SocketAddr, errs: &mut Vec<ConfigError>) {
        let admin_token = self.token.expose();
        if !dev && admin_token.chars().count() < 16 {
            errs.push(ConfigError::invalid(
                "admin.token",
                format!(
                    "must be at least 16 characters (it guards the call log); set [admin] token or {ENV_ADMIN_TOKEN}"
                ),
            ));
        } else if !dev && looks_like_placeholder(admin_token) {
            errs.push(ConfigError::invalid(
                "admin.token",
                "is a template value (like CHANGE-ME, your-…, example, xxxx); set a random one, e.g. from `openssl rand -hex 16`",
            ));
        }
        if server_listen == self.listen {
            errs.push(ConfigError::invalid(
                "admin.listen",
                "must differ from server.listen: the admin API is never served on the public listener",
            ));
        }
    }
}

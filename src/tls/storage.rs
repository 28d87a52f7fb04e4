//! The ACME state on disk under `<storage.dir>/tls/`: account credentials, the certificate
//! and its key, and the retry schedule. The directory is 0700 and every file 0600, written to
//! a temporary file, fsynced and renamed, so a power cut leaves the old or the new file whole.

use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::TlsError;

/// Account credentials and the directory they belong to.
pub const ACCOUNT_FILE: &str = "account.json";
/// The certificate chain, leaf first.
pub const CERT_FILE: &str = "cert.pem";
/// The certificate's private key.
pub const KEY_FILE: &str = "key.pem";
/// Retry schedule and last outcome.
pub const STATE_FILE: &str = "state.json";

/// The retry schedule, kept across restarts so a crash loop cannot hammer the CA.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AcmeState {
    /// The directory the stored certificate came from; a different one means a new order.
    pub directory: Option<String>,
    /// Failed attempts in a row.
    pub failures: u32,
    /// No attempt before this moment.
    pub next_attempt: Option<Timestamp>,
    /// Last attempt.
    pub last_attempt: Option<Timestamp>,
    /// Last success.
    pub last_success: Option<Timestamp>,
    /// Last failure's message.
    pub last_error: Option<String>,
    /// What the last attempt asked for; when the configuration asks for something else, the
    /// backoff earned by the old request no longer applies.
    #[serde(default)]
    pub attempted: Option<AttemptKey>,
}

/// The parts of `[tls.acme]` an order depends on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptKey {
    /// Directory URL.
    pub directory: String,
    /// Names ordered.
    pub domains: Vec<String>,
    /// `tls-alpn-01` or `http-01`.
    pub challenge: String,
}

/// Account credentials as stored.
#[derive(Serialize, Deserialize)]
pub struct StoredAccount {
    /// The directory URL the account lives on.
    pub directory: String,
    /// What instant-acme needs to sign requests.
    pub credentials: instant_acme::AccountCredentials,
}

/// The `tls/` directory.
#[derive(Debug, Clone)]
pub struct TlsDir {
    dir: PathBuf,
}

impl TlsDir {
    /// Creates (0700) or opens `<storage>/tls`, tightening permissions left too open (on the
    /// directory and on every file in it: the key and account credentials are secrets).
    pub fn open(storage: &Path) -> Result<Self, TlsError> {
        let dir = storage.join("tls");
        let io = |source| TlsError::Storage { path: dir.clone(), source };
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(io)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        let me = Self { dir };
        for name in [ACCOUNT_FILE, CERT_FILE, KEY_FILE, STATE_FILE] {
            me.restrict(name)?;
        }
        Ok(me)
    }

    /// Puts a file someone loosened (e.g. `chmod 644` while debugging) back to 0600, and says so.
    fn restrict(&self, name: &str) -> Result<(), TlsError> {
        let path = self.path(name);
        let mode = match std::fs::metadata(&path) {
            Ok(m) => m.permissions().mode() & 0o777,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(TlsError::Storage { path, source }),
        };
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|source| TlsError::Storage { path: path.clone(), source })?;
            log::warn!("tls: {} was mode {mode:04o} (readable by others); restored 0600", path.display());
        }
        Ok(())
    }

    /// Path of a file in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The file's bytes, or `None` when it does not exist.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>, TlsError> {
        let path = self.path(name);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(TlsError::Storage { path, source }),
        }
    }

    /// Replaces the file atomically with `bytes`, mode 0600.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), TlsError> {
        let path = self.path(name);
        crate::atomic_file::replace(&path, bytes, 0o600).map_err(|source| TlsError::Storage { path, source })
    }

    /// The retry schedule; a damaged file counts as empty (logged) rather than blocking TLS.
    pub fn load_state(&self) -> AcmeState {
        match self.read(STATE_FILE) {
            Ok(Some(b)) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                log::warn!(
                    "tls: {} is damaged ({e}); starting a fresh retry schedule",
                    self.path(STATE_FILE).display()
                );
                AcmeState::default()
            }),
            Ok(None) => AcmeState::default(),
            Err(e) => {
                log::warn!("tls: {e}; starting a fresh retry schedule");
                AcmeState::default()
            }
        }
    }

    /// Persists the retry schedule.
    pub fn save_state(&self, state: &AcmeState) -> Result<(), TlsError> {
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| TlsError::Internal(format!("encoding state: {e}")))?;
        self.write(STATE_FILE, &bytes)
    }
}

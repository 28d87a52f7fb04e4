//! What the benches share: a box configured for TLS with an existing certificate, and reading
//! a process's resident memory.

#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::path::{Path, PathBuf};

/// The domain of the bench box's certificate and public_url.
pub const DOMAIN: &str = "shop.example.com";
/// The bench box's Twilio auth token.
pub const AUTH_TOKEN: &str = "26ab0db90d72e28ad0ba1e22ee510510";
/// The bench box's admin token.
pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

/// A config file for `callbox serve --config` in TLS `files` mode, with a self-signed
/// certificate for [`DOMAIN`] already on disk; returns the config's path and the certificate
/// (DER) for a client to trust.
pub fn tls_box(dir: &Path) -> (PathBuf, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![DOMAIN.to_owned()]).unwrap().self_signed(&key).unwrap();
    let (cert_file, key_file) = (dir.join("fullchain.pem"), dir.join("privkey.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let config = dir.join("callbox.toml");
    std::fs::write(
        &config,
        format!(
            r#"public_url = "https://{DOMAIN}"
[admin]
token = "{ADMIN_TOKEN}"
[twilio]
auth_token = "{AUTH_TOKEN}"
[storage]
dir = "{}"
[tls]
mode = "files"
cert_file = "{}"
key_file = "{}"
[log]
level = "error"
"#,
            dir.join("data").display(),
            cert_file.display(),
            key_file.display()
        ),
    )
    .unwrap();
    (config, cert.der().to_vec())
}

/// Resident memory of `pid` in KiB; 0 when it cannot be read.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

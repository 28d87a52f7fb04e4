//! Debian's Pebble (a real ACME CA for tests) and pebble-challtestsrv (its DNS), started as
//! subprocesses on loopback with their own config and a CA made for the test, killed on drop.
//! Follows shared/reference/acme-pebble-recipe.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::free_port;

/// The name the box is reachable as; challtestsrv resolves every name to 127.0.0.1.
pub const DOMAIN: &str = "shop.example.test";

/// Debian's Pebble, the CA.
pub const NEED_PEBBLE: super::Need = super::Need::Program("pebble", "pebble");
/// And its DNS stand-in.
pub const NEED_CHALLTESTSRV: super::Need = super::Need::Program("pebble-challtestsrv", "pebble");

/// What the test wants from Pebble.
#[derive(Clone, Copy, Debug)]
pub struct PebbleOpts {
    /// Port Pebble dials for TLS-ALPN-01 (the box's public listener).
    pub tls_port: u16,
    /// Port Pebble dials for HTTP-01 (the box's http-01 listener).
    pub http_port: u16,
    /// Lifetime of issued certificates, seconds.
    pub validity_secs: u64,
    /// Require external account binding with [`EAB_KID`] / [`EAB_HMAC_KEY`].
    pub eab: bool,
}

/// The EAB key id Pebble knows when `eab` is set.
pub const EAB_KID: &str = "kid-1";
/// Its HMAC key, base64url (the one in Debian's example config).
pub const EAB_HMAC_KEY: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";

/// Running Pebble + challtestsrv.
pub struct Pebble {
    pub work: tempfile::TempDir,
    pub acme_port: u16,
    pub mgmt_port: u16,
    dns_port: u16,
    pebble: Option<Child>,
    cts: Option<Child>,
    starts: u32,
}

impl Pebble {
    /// Starts both daemons and waits until the directory answers.
    pub async fn start(opts: PebbleOpts) -> Self {
        super::require(&[NEED_PEBBLE, NEED_CHALLTESTSRV]);
        let work = tempfile::tempdir().unwrap();
        // The CA for Pebble's own HTTPS listener (not the one that signs issued certificates).
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "pebble directory test CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let mut leaf_params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
        std::fs::write(work.path().join("dir-ca.pem"), ca.pem()).unwrap();
        std::fs::write(work.path().join("dir-cert.pem"), leaf.pem()).unwrap();
        std::fs::write(work.path().join("dir-key.pem"), leaf_key.serialize_pem()).unwrap();

        let (acme_port, mgmt_port, dns_port, cts_mgmt) = (free_port(), free_port(), free_port(), free_port());
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{acme_port}"),
                "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
                "certificate": work.path().join("dir-cert.pem"),
                "privateKey": work.path().join("dir-key.pem"),
                "httpPort": opts.http_port,
                "tlsPort": opts.tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": opts.eab,
                "externalAccountMACKeys": { EAB_KID: EAB_HMAC_KEY },
                "certificateValidityPeriod": opts.validity_secs,
            }
        });
        std::fs::write(work.path().join("pebble-config.json"), config.to_string()).unwrap();
        let cts_log = std::fs::File::create(work.path().join("challtestsrv.log")).unwrap();
        let cts = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns_port}"), "-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{cts_mgmt}"), "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(cts_log.try_clone().unwrap())
            .stderr(cts_log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut me = Self { work, acme_port, mgmt_port, dns_port, pebble: None, cts: Some(cts), starts: 0 };
        me.start_pebble().await;
        me
    }

    /// (Re)starts the CA itself on the same ports. A restarted Pebble has new roots and no
    /// accounts, like a CA that lost its state.
    pub async fn start_pebble(&mut self) {
        assert!(self.pebble.is_none(), "pebble already running");
        self.starts += 1;
        let log = std::fs::File::create(self.work.path().join(format!("pebble-{}.log", self.starts))).unwrap();
        let child = Command::new("pebble")
            .arg("-config")
            .arg(self.work.path().join("pebble-config.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{}", self.dns_port)])
            .current_dir(self.work.path())
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.pebble = Some(child);
        for _ in 0..200 {
            if let Ok((200, _)) = self.get(self.acme_port, "/dir").await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("pebble did not come up; log:\n{}", self.log());
    }

    /// Stops the CA (the DNS keeps running).
    pub fn stop_pebble(&mut self) {
        if let Some(mut c) = self.pebble.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The ACME directory URL.
    pub fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.acme_port)
    }

    /// The PEM file of the CA behind Pebble's HTTPS (for `tls.acme.directory_roots`).
    pub fn directory_roots(&self) -> PathBuf {
        self.work.path().join("dir-ca.pem")
    }

    /// Pebble's current issuing root, from its management API.
    pub async fn issuing_root(&self) -> CertificateDer<'static> {
        let (status, body) = self.get(self.mgmt_port, "/roots/0").await.unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        CertificateDer::from_pem_slice(&body).unwrap()
    }

    /// The log of the running (latest) Pebble.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.work.path().join(format!("pebble-{}.log", self.starts))).unwrap_or_default()
    }

    /// How many certificates the latest Pebble issued (one log line per issuance).
    pub fn issued(&self) -> usize {
        self.log().matches("Issued certificate serial").count()
    }

    /// How many orders the latest Pebble received.
    pub fn orders(&self) -> usize {
        self.log().matches("POST /order-plz").count()
    }

    /// How many accounts were created on the latest Pebble.
    pub fn accounts(&self) -> usize {
        self.log().matches("POST /sign-me-up").count()
    }

    /// GET over HTTPS to a Pebble port, trusting only the directory CA.
    pub async fn get(&self, port: u16, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
        let root = CertificateDer::from_pem_file(self.directory_roots()).unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let conn = super::TlsConn::connect(addr, "127.0.0.1", &[root]).await?;
        let reply = conn.get(path).await.map_err(std::io::Error::other)?;
        Ok((reply.status.as_u16(), reply.body.to_vec()))
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop_pebble();
        if let Some(mut c) = self.cts.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Shares a Pebble between a test's phases.
pub type SharedPebble = Arc<tokio::sync::Mutex<Pebble>>;

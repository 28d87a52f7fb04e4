//! The certificate resolver of the public listener: the current certificate (swapped
//! atomically, so new connections get a renewed one while open ones keep theirs) and, during
//! an ACME order, the TLS-ALPN-01 challenge certificates, served only to `acme-tls/1` clients.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use jiff::Timestamp;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::TlsError;
use super::status::CertSummary;

/// ALPN protocol id of TLS-ALPN-01 (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Current certificate plus challenge certificates by server name.
#[derive(Debug, Default)]
pub struct CertResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    challenges: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl CertResolver {
    /// Serves `key` to every new connection from now on.
    pub fn set_current(&self, key: Arc<CertifiedKey>) {
        *crate::sync::write(&self.current) = Some(key);
    }

    /// True once a certificate is being served.
    pub fn has_current(&self) -> bool {
        crate::sync::read(&self.current).is_some()
    }

    /// Answers TLS-ALPN-01 for `name` with `key` until [`Self::remove_challenge`].
    pub fn add_challenge(&self, name: &str, key: Arc<CertifiedKey>) {
        crate::sync::lock(&self.challenges).insert(name.to_ascii_lowercase(), key);
    }

    /// Stops answering TLS-ALPN-01 for `name`.
    pub fn remove_challenge(&self, name: &str) {
        crate::sync::lock(&self.challenges).remove(&name.to_ascii_lowercase());
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let wants_challenge = hello.alpn().is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        if wants_challenge {
            // Never fall back to the real certificate: a validator must see the challenge or nothing.
            let name = hello.server_name()?.to_ascii_lowercase();
            return crate::sync::lock(&self.challenges).get(&name).cloned();
        }
        crate::sync::read(&self.current).clone()
    }
}

/// A certificate chain and key ready to serve, with what its leaf says.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    /// For rustls.
    pub key: Arc<CertifiedKey>,
    /// For status and renewal decisions.
    pub summary: CertSummary,
    /// The leaf, for the ARI certificate id.
    pub leaf: CertificateDer<'static>,
}

/// Builds a servable certificate from PEM text; `cert_name` and `key_name` name the sources
/// in error messages (file paths, or the ACME store).
pub fn load_pem(cert_pem: &[u8], key_pem: &[u8], cert_name: &Path, key_name: &Path) -> Result<LoadedCert, TlsError> {
    let bad = |path: &Path, problem: String| TlsError::Pem { path: path.to_owned(), problem };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert_name, format!("not a PEM certificate chain ({e})")))?;
    let Some(leaf) = chain.first().cloned() else {
        return Err(bad(cert_name, "contains no CERTIFICATE block".into()));
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| bad(key_name, format!("no usable PEM private key ({e})")))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| bad(key_name, format!("unsupported private key ({e})")))?;
    let summary = summarize(&leaf).map_err(|problem| bad(cert_name, problem))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| bad(key_name, format!("does not belong to the certificate in {} ({e})", cert_name.display())))?;
    Ok(LoadedCert { key: Arc::new(certified), summary, leaf })
}

/// Reads names, serial and validity from a leaf certificate.
pub fn summarize(leaf: &CertificateDer<'_>) -> Result<CertSummary, String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| format!("leaf certificate unreadable ({e})"))?;
    let time = |t: x509_parser::time::ASN1Time| {
        Timestamp::from_second(t.timestamp()).map_err(|e| format!("certificate date out of range ({e})"))
    };
    let domains = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(format!("subjectAltName unreadable ({e})")),
    };
    Ok(CertSummary {
        domains,
        serial: cert.tbs_certificate.raw_serial_as_string(),
        not_before: time(cert.validity().not_before)?,
        not_after: time(cert.validity().not_after)?,
    })
}

/// The self-signed TLS-ALPN-01 certificate for `name`: one SAN and the critical
/// acmeIdentifier extension holding SHA-256 of the key authorization (RFC 8737 §3).
pub fn challenge_cert(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, TlsError> {
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(TlsError::ChallengeCert)?;
    params.custom_extensions.push(rcgen::CustomExtension::new_acme_identifier(digest));
    let key = rcgen::KeyPair::generate().map_err(TlsError::ChallengeCert)?;
    let cert = params.self_signed(&key).map_err(TlsError::ChallengeCert)?;
    let key_der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| TlsError::Internal(format!("challenge key rejected by rustls: {e}")))?;
    Ok(Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing)))
}

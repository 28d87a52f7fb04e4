//! Twilio's REST API over HTTPS: one request per text, with a deadline, authenticated as the
//! account (or an API key). What the answer means is [`crate::twilio::rest`]'s business.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::twilio::rest::{self, Answer, NewMessage};

/// Largest answer read; a Message resource is about 1 KB.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Sends texts through Twilio's Messages API.
#[derive(Clone)]
pub struct TwilioRest {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base_url: String,
    account_sid: String,
    authorization: Arc<str>,
    /// Longest wait for an answer; past it the outcome is unknown and the text is retried.
    timeout: Duration,
}

impl std::fmt::Debug for TwilioRest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioRest").field("base_url", &self.base_url).field("account_sid", &self.account_sid).finish()
    }
}

/// The client could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the HTTPS client for Twilio's API: {0}")]
pub struct ClientError(String);

impl TwilioRest {
    /// A client for `base_url` (validated by the config: https, or http to loopback), as
    /// `user`/`secret` (Account SID and Auth Token, or API key SID and secret).
    pub fn new(
        base_url: &str,
        account_sid: &str,
        (user, secret): (&str, &str),
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls_platform_verifier::Verifier::new(provider.clone()).map_err(|e| ClientError(e.to_string()))?;
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        let connector =
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().build();
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).build(connector);
        let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
        Ok(Self {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            account_sid: account_sid.to_owned(),
            authorization: format!("Basic {credentials}").into(),
            timeout,
        })
    }

    /// Creates the message. Never fails: what went wrong is in the [`Answer`].
    pub async fn send(&self, message: &NewMessage<'_>) -> Answer {
        let url = format!("{}{}", self.base_url, rest::messages_path(&self.account_sid));
        let request = Request::builder()
            .method(Method::POST)
            .uri(&url)
            .header(header::AUTHORIZATION, &*self.authorization)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, concat!("callbox/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::from(message.form())));
        let request = match request {
            Ok(r) => r,
            Err(e) => return Answer::Permanent { code: None, why: format!("cannot build the request to {url}: {e}") },
        };
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| format!("request to Twilio failed: {e}"))?;
            let status = response.status().as_u16();
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading Twilio's answer failed: {e}"))?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok((status, body))) => rest::answer(status, &body),
            Ok(Err(why)) => Answer::Retry { code: None, why },
            Err(_) => Answer::Retry { code: None, why: format!("Twilio did not answer within {:?}", self.timeout) },
        }
    }
}

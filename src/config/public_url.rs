//! `public_url`: the one address Twilio knows the box by.

use std::fmt;

use serde::Serialize;

use super::ConfigError;

/// Host names that only ever appear in examples; a box configured with one of them would
/// hand Twilio a stream URL nobody can reach.
const PLACEHOLDER_HOSTS: &[&str] = &["your-domain", "example.invalid", "changeme", "localhost.localdomain"];

/// `public_url` after normalisation: the origin Twilio uses to reach the box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct PublicUrl {
    pub(super) scheme: Scheme,
    pub(super) host: String,
    pub(super) port: Option<u16>,
}

/// Scheme of the public URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `http://` (a tunnel or a test).
    Http,
    /// `https://` (the normal case).
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
    fn default_port(self) -> u16 {
        match self {
            Self::Http => 80,
            Self::Https => 443,
        }
    }
}

impl PublicUrl {
    /// Parses `public_url` in any form the seed accepted: `https://host`, `http://host`, a
    /// bare host (taken as https), each with or without a port and a trailing slash.
    pub fn parse(input: &str) -> Result<Self, ConfigError> {
        let key = "public_url";
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(ConfigError::invalid(
                key,
                "is empty; set it to the address Twilio calls, e.g. public_url = \"https://shop.example.com\"",
            ));
        }
        let with_scheme = if trimmed.contains("://") { trimmed.to_owned() } else { format!("https://{trimmed}") };
        let url = url::Url::parse(&with_scheme).map_err(|e| {
            ConfigError::invalid(
                key,
                format!("{trimmed:?} is not a valid URL ({e}); use e.g. \"https://shop.example.com\""),
            )
        })?;
        let scheme = match url.scheme() {
            "https" => Scheme::Https,
            "http" => Scheme::Http,
            other => {
                return Err(ConfigError::invalid(
                    key,
                    format!("scheme {other:?} is not supported; use https:// (Twilio reaches the box only over TLS)"),
                ));
            }
        };
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => h.to_ascii_lowercase(),
            _ => return Err(ConfigError::invalid(key, format!("{trimmed:?} has no host name"))),
        };
        if PLACEHOLDER_HOSTS.iter().any(|p| host.contains(p)) || host.ends_with(".example") {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "{trimmed:?} is a placeholder; set it to the shop's real domain, the one entered in the Twilio console"
                ),
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ConfigError::invalid(
                key,
                "must not contain user:password@; Twilio signs URLs without credentials",
            ));
        }
        if url.path() != "/" && !url.path().is_empty() {
            return Err(ConfigError::invalid(
                key,
                format!("must be just scheme://host[:port], without a path (found {:?})", url.path()),
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(ConfigError::invalid(key, "must not contain a query string or #fragment"));
        }
        // `url` already drops a port equal to the scheme's default.
        Ok(Self { scheme, host, port: url.port() })
    }

    /// `scheme://host[:port]` with no trailing slash: the prefix of every URL Twilio signs.
    pub fn origin(&self) -> String {
        match self.port {
            Some(p) => format!("{}://{}:{p}", self.scheme.as_str(), self.host),
            None => format!("{}://{}", self.scheme.as_str(), self.host),
        }
    }

    /// The same origin with the port spelled out (`:443`/`:80` added when it was implicit).
    pub fn origin_with_port(&self) -> String {
        format!("{}://{}:{}", self.scheme.as_str(), self.host, self.port.unwrap_or(self.scheme.default_port()))
    }

    /// The same origin with no port at all (what Twilio signs for voice over HTTPS).
    pub fn origin_without_port(&self) -> String {
        format!("{}://{}", self.scheme.as_str(), self.host)
    }

    /// The secure WebSocket origin Twilio's media stream connects to. Twilio accepts only
    /// `wss://`, so the scheme is always `wss`; an explicit non-default port is kept.
    pub fn wss_origin(&self) -> String {
        match self.port {
            Some(p) if p != 443 && p != 80 => format!("wss://{}:{p}", self.host),
            _ => format!("wss://{}", self.host),
        }
    }

    /// The public host name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The URL's scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }
}

impl From<PublicUrl> for String {
    fn from(u: PublicUrl) -> Self {
        u.origin()
    }
}

impl fmt::Display for PublicUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_url_forms_normalise_to_one_origin() {
        for input in [
            "https://shop.example.com",
            "https://shop.example.com/",
            "shop.example.com",
            "shop.example.com/",
            "https://shop.example.com:443",
            "HTTPS://Shop.Example.com:443/",
        ] {
            let u = PublicUrl::parse(input).unwrap();
            assert_eq!(u.origin(), "https://shop.example.com", "{input}");
            assert_eq!(u.wss_origin(), "wss://shop.example.com", "{input}");
        }
        let u = PublicUrl::parse("http://shop.example.com:8080/").unwrap();
        assert_eq!(u.origin(), "http://shop.example.com:8080");
        assert_eq!(u.wss_origin(), "wss://shop.example.com:8080");
        let u = PublicUrl::parse("shop.example.com:8443").unwrap();
        assert_eq!(u.origin(), "https://shop.example.com:8443");
        assert_eq!(u.origin_without_port(), "https://shop.example.com");
        assert_eq!(u.wss_origin(), "wss://shop.example.com:8443");
        let u = PublicUrl::parse("http://shop.example.com").unwrap();
        assert_eq!(u.origin_with_port(), "http://shop.example.com:80");
        assert_eq!(u.wss_origin(), "wss://shop.example.com");
    }

    #[test]
    fn public_url_rejects_placeholders_paths_and_garbage() {
        for bad in [
            "https://your-domain.ngrok.io",
            "",
            "ftp://shop.example.com",
            "https://shop.example.com/x",
            "https://a:b@shop.example.com",
            "http://",
        ] {
            let err = PublicUrl::parse(bad).unwrap_err();
            assert!(err.to_string().starts_with("config key `public_url`"), "{bad}: {err}");
        }
    }
}

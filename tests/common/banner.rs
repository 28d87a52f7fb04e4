//! What `callbox serve` prints on stdout when it starts: where it listens and, in dev mode,
//! the tokens it made. Tests that run the real binary learn its loopback ports from this.

use std::net::SocketAddr;

/// The start banner, as far as it has been read.
#[derive(Debug, Default)]
pub struct Banner {
    public: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    auth_token: Option<String>,
    admin_token: Option<String>,
    complete: bool,
}

impl Banner {
    /// Reads `lines` (the box's stdout) until the banner is complete; panics if they end first.
    /// `dev`: the box runs with `--dev`, so the banner ends with its two tokens.
    pub fn read(lines: &mut impl Iterator<Item = std::io::Result<String>>, dev: bool) -> Self {
        let mut banner = Self::default();
        while !banner.complete {
            match lines.next() {
                Some(Ok(line)) => banner.take(&line, dev),
                other => panic!("serve ended its output before its start banner was complete ({other:?}): {banner:?}"),
            }
        }
        banner
    }

    /// The banner in `text` (stdout captured so far), once it is complete.
    pub fn parse(text: &str, dev: bool) -> Option<Self> {
        let mut banner = Self::default();
        text.lines().for_each(|line| banner.take(line, dev));
        banner.complete.then_some(banner)
    }

    fn take(&mut self, line: &str, dev: bool) {
        let value = line.rsplit(' ').next().unwrap_or_default();
        let address = || value.trim_start_matches("http://").trim_start_matches("https://").parse().ok();
        if line.contains("public listener") {
            self.public = address();
        } else if line.contains("admin listener") {
            self.admin = address();
        } else if line.contains("dev Twilio auth token") {
            self.auth_token = Some(value.to_owned());
        } else if line.contains("dev admin token") {
            self.admin_token = Some(value.to_owned());
            self.complete = true;
        } else if line.contains("call log:") && !dev {
            self.complete = true;
        }
    }

    /// The public (Twilio) listener.
    pub fn public(&self) -> SocketAddr {
        self.public.unwrap_or_else(|| panic!("no public listener in the banner: {self:?}"))
    }

    /// The admin (LAN) listener.
    pub fn admin(&self) -> SocketAddr {
        self.admin.unwrap_or_else(|| panic!("no admin listener in the banner: {self:?}"))
    }

    /// The dev Twilio auth token.
    pub fn auth_token(&self) -> String {
        self.auth_token.clone().unwrap_or_else(|| panic!("no dev auth token in the banner: {self:?}"))
    }

    /// The dev admin token.
    pub fn admin_token(&self) -> String {
        self.admin_token.clone().unwrap_or_else(|| panic!("no dev admin token in the banner: {self:?}"))
    }
}

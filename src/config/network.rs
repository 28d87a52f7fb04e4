//! `[network]`: Wi-Fi for boards without an Ethernet port (the Zero 2 W), on the SD image.

use serde::{Deserialize, Serialize};

use super::ConfigError;
use super::secret::Secret;

/// `[network]`. Wired Ethernet needs nothing here (DHCP on every `en*`/`eth*` port).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// The Wi-Fi network's name; unset: no Wi-Fi.
    pub wifi_ssid: Option<String>,
    /// Its WPA2/WPA3-Personal passphrase (8 to 63 characters), or the 64-hex-digit key.
    pub wifi_passphrase: Option<Secret>,
    /// Two-letter country code for the radio's legal channels (e.g. `US`, `GB`, `DE`).
    pub wifi_country: Option<String>,
}

impl NetworkConfig {
    pub(super) fn validate(&self, errs: &mut Vec<ConfigError>) {
        let Some(ssid) = &self.wifi_ssid else {
            if self.wifi_passphrase.is_some() {
                errs.push(ConfigError::invalid(
                    "network.wifi_ssid",
                    "is missing but network.wifi_passphrase is set; add the Wi-Fi network's name",
                ));
            }
            return;
        };
        if ssid.is_empty() || ssid.len() > 32 {
            errs.push(ConfigError::invalid(
                "network.wifi_ssid",
                format!("must be 1 to 32 bytes (it is {})", ssid.len()),
            ));
        }
        match self.wifi_passphrase.as_ref().map(Secret::expose) {
            None => errs.push(ConfigError::invalid(
                "network.wifi_passphrase",
                "is missing; add the Wi-Fi password (open networks are not supported)",
            )),
            Some(p) if is_hex_key(p) => {}
            Some(p) if !(8..=63).contains(&p.len()) => errs.push(ConfigError::invalid(
                "network.wifi_passphrase",
                format!("must be 8 to 63 characters (it has {})", p.chars().count()),
            )),
            Some(p) if !p.bytes().all(|b| (0x20..=0x7e).contains(&b)) => errs.push(ConfigError::invalid(
                "network.wifi_passphrase",
                "may hold only printable ASCII characters (WPA's rule)",
            )),
            Some(_) => {}
        }
        match &self.wifi_country {
            None => errs.push(ConfigError::invalid(
                "network.wifi_country",
                "is missing; set the two-letter country code, e.g. \"US\" (the radio stays off without it)",
            )),
            Some(c) if !(c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase())) => {
                errs.push(ConfigError::invalid(
                    "network.wifi_country",
                    format!("{c:?} is not a two-letter country code in capitals, e.g. \"US\""),
                ));
            }
            Some(_) => {}
        }
    }
}

/// WPA takes a raw 256-bit key as exactly 64 hex digits.
pub fn is_hex_key(p: &str) -> bool {
    p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, EnvSecrets};

    #[test]
    fn wifi_settings_are_checked_and_name_their_key() {
        let env = EnvSecrets::for_tests();
        let base = "public_url = \"shop.example.com\"\n[storage]\ndir = \"/tmp/x\"\n[network]\n";
        let good = format!("{base}wifi_ssid = \"Shop\"\nwifi_passphrase = \"correct horse\"\nwifi_country = \"US\"\n");
        let c = Config::from_toml(&good, Path::new("t"), &env).unwrap();
        assert_eq!(c.network.wifi_ssid.as_deref(), Some("Shop"));
        assert!(!c.to_redacted_toml().contains("correct horse"), "the passphrase is a secret");
        for (bad, key) in [
            ("wifi_passphrase = \"correct horse\"\n", "network.wifi_ssid"),
            ("wifi_ssid = \"Shop\"\nwifi_country = \"US\"\n", "network.wifi_passphrase"),
            ("wifi_ssid = \"Shop\"\nwifi_passphrase = \"short\"\nwifi_country = \"US\"\n", "network.wifi_passphrase"),
            (
                "wifi_ssid = \"Shop\"\nwifi_passphrase = \"correct horse\"\nwifi_country = \"usa\"\n",
                "network.wifi_country",
            ),
            ("wifi_ssid = \"Shop\"\nwifi_passphrase = \"correct horse\"\n", "network.wifi_country"),
            ("wifi_ssid = \"Shop\"\nwifi_password = \"correct horse\"\n", "wifi_password"),
        ] {
            let e = Config::from_toml(&format!("{base}{bad}"), Path::new("t"), &env).unwrap_err();
            assert!(e.to_string().contains(key), "{bad}: {e}");
        }
    }
}

//! `[network]` Wi-Fi as a wpa_supplicant file for `wpa_supplicant@wlan0.service`.
//!
//! The SSID goes in as hex and the passphrase as its PSK (PBKDF2-HMAC-SHA1, 4096 rounds,
//! as WPA defines it), so no character of either can break the file's quoting and the
//! passphrase itself is not stored on the root filesystem.

use sha1::Sha1;

use crate::config::NetworkConfig;

/// The supplicant file for `network`, or `None` when no Wi-Fi is configured. `network` must
/// have passed validation (`callbox check`).
pub fn supplicant_conf(network: &NetworkConfig) -> Option<String> {
    let ssid = network.wifi_ssid.as_deref()?;
    let passphrase = network.wifi_passphrase.as_ref()?.expose();
    let country = network.wifi_country.as_deref().unwrap_or("US");
    let psk = if crate::config::network_is_hex_key(passphrase) {
        passphrase.to_ascii_lowercase()
    } else {
        psk(ssid, passphrase)
    };
    Some(format!(
        "# Written by callbox from [network] in callbox.toml at boot; edits here are replaced.\n\
         ctrl_interface=/run/wpa_supplicant\n\
         update_config=0\n\
         country={country}\n\
         \n\
         network={{\n\
         \x20   ssid={}\n\
         \x20   psk={psk}\n\
         \x20   key_mgmt=WPA-PSK WPA-PSK-SHA256 SAE\n\
         \x20   ieee80211w=1\n\
         }}\n",
        hex::encode(ssid),
    ))
}

/// WPA's pre-shared key from a passphrase and SSID (IEEE 802.11i, H.4).
pub fn psk(ssid: &str, passphrase: &str) -> String {
    let mut key = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha1>(passphrase.as_bytes(), ssid.as_bytes(), 4096, &mut key);
    hex::encode(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn psk_matches_the_ieee_test_vectors() {
        // IEEE 802.11i-2004, Annex H.4.
        assert_eq!(psk("IEEE", "password"), "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e");
        assert_eq!(
            psk("ThisIsASSID", "ThisIsAPassword"),
            "0dc0d6eb90555ed6419756b9a15ec3e3209b63df707dd508d14581f8982721af"
        );
    }

    #[test]
    fn quotes_in_ssid_or_passphrase_cannot_break_the_file() {
        let net = NetworkConfig {
            wifi_ssid: Some("Bob's \"Garage\"\n}".into()),
            wifi_passphrase: Some(Secret::new("p\"ss}word\\")),
            wifi_country: Some("GB".into()),
        };
        let conf = supplicant_conf(&net).unwrap();
        assert!(conf.contains("country=GB\n"), "{conf}");
        assert!(conf.contains(&format!("ssid={}\n", hex::encode(b"Bob's \"Garage\"\n}"))), "{conf}");
        assert!(!conf.contains("ss}word"), "the passphrase itself is not written: {conf}");
        assert_eq!(conf.matches('{').count(), 1, "{conf}");
        assert_eq!(supplicant_conf(&NetworkConfig::default()), None);
    }
}

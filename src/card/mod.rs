//! What the SD image's box writes for its owner and its OS from `callbox.toml`: the Wi-Fi
//! supplicant file ([`wifi`]) and `callbox-status.txt` on the boot partition ([`status`]),
//! which tells the owner the box's address, the dashboard and the URLs to paste into Twilio.

pub mod status;
pub mod wifi;

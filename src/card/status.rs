//! `callbox-status.txt`: what the owner reads on the SD card from any PC after the box has
//! started once, because a box on DHCP has no address anyone told them.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use crate::config::Config;
use crate::server::public::paths;

/// The box's mDNS name (systemd-resolved answers for the hostname `callbox` on the LAN).
pub const MDNS_NAME: &str = "callbox.local";

/// The address other machines on the LAN reach this box at: the source address of the
/// default route. Connecting a UDP socket sends nothing; it only asks the kernel's routing.
pub fn lan_address() -> Option<IpAddr> {
    let probe = |bind: SocketAddr, to: SocketAddr| {
        let s = UdpSocket::bind(bind).ok()?;
        s.connect(to).ok()?;
        s.local_addr().ok().map(|a| a.ip()).filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
    };
    // TEST-NET addresses: routed like any other, never contacted.
    probe(SocketAddr::from(([0, 0, 0, 0], 0)), SocketAddr::from(([192, 0, 2, 1], 9))).or_else(|| {
        probe(
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
            SocketAddr::from((std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 9)),
        )
    })
}

/// The file's text (CRLF line ends: it is read in Notepad), for `config` on a box whose LAN
/// address is `address` (`None`: not on a network yet), written at `now`.
pub fn render(config: &Config, address: Option<IpAddr>, now: &jiff::Zoned) -> String {
    let port = config.admin.listen.port();
    let lan_reachable = !config.admin.listen.ip().is_loopback();
    let url = |host: &str| format!("http://{host}:{port}/");
    let host_of = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    let public = config.public_url.origin();
    let mut lines = vec![
        format!("callbox status, written {} when the box started.", now.strftime("%Y-%m-%d %H:%M:%S %Z")),
        String::new(),
        match address {
            Some(ip) => format!("This box is on the shop's network as {MDNS_NAME}, address {ip}."),
            None => "This box has no network address yet: check the cable, or [network] Wi-Fi in callbox.toml.".into(),
        },
        String::new(),
        "Dashboard (from a computer, tablet or phone on the shop's network):".into(),
    ];
    if lan_reachable {
        lines.push(format!("  {}", url(MDNS_NAME)));
        if let Some(ip) = address {
            lines.push(format!("  {}   (if the name does not work)", url(&host_of(ip))));
        }
        lines.push("  Sign in with the admin token from callbox.toml.".into());
    } else {
        lines.push(format!(
            "  not reachable from the network: [admin] listen is {} (use 0.0.0.0:{port}).",
            config.admin.listen
        ));
    }
    lines.extend([
        String::new(),
        "Paste into Twilio (Console > Phone Numbers > your number > Voice Configuration):".into(),
        format!("  A call comes in (Webhook, HTTP POST):  {public}{}", paths::INCOMING_CALL),
        format!("  Call status changes (HTTP POST):       {public}{}", paths::CALL_STATUS),
        "  and under Messaging Configuration, for customers' texts:".into(),
        format!("  A message comes in (Webhook, HTTP POST): {public}{}", paths::INCOMING_SMS),
        String::new(),
        "If the box cannot start, it writes CALLBOX-ERROR.txt here instead, naming the problem.".into(),
    ]);
    let mut text = lines.join("\r\n");
    text.push_str("\r\n");
    text
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::EnvSecrets;

    fn config(extra: &str) -> Config {
        let env = EnvSecrets::for_tests();
        let text = format!("public_url = \"https://shop.example.com\"\n[storage]\ndir = \"/tmp/x\"\n{extra}");
        Config::from_toml(&text, Path::new("t"), &env).unwrap()
    }

    #[test]
    fn names_the_address_the_dashboard_and_both_webhooks() {
        let now = jiff::Timestamp::from_second(1_800_000_000).unwrap().to_zoned(jiff::tz::TimeZone::UTC);
        let text = render(&config(""), Some("192.168.1.23".parse().unwrap()), &now);
        for want in [
            "address 192.168.1.23",
            "http://callbox.local:8080/",
            "http://192.168.1.23:8080/",
            "https://shop.example.com/api/v1/webhooks/incoming-call",
            "https://shop.example.com/api/v1/webhooks/call-status",
            "CALLBOX-ERROR.txt",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        assert!(text.ends_with("\r\n") && !text.replace("\r\n", "").contains('\n'), "CRLF line ends");
        let offline = render(&config("[admin]\nlisten = \"127.0.0.1:9000\"\n"), None, &now);
        assert!(offline.contains("no network address yet"), "{offline}");
        assert!(offline.contains("not reachable from the network"), "{offline}");
    }
}

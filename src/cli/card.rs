//! `callbox card wifi` and `callbox card status`: the SD image's first-boot helpers (run as
//! root by `callbox-firstboot` and `callbox-status.service`), kept in the binary so the
//! config is read by the same parser that `callbox check` and `serve` use.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::atomic_file;
use crate::card::{status, wifi};
use crate::config::{self, Config, EnvSecrets};

/// `callbox card …`.
#[derive(Debug, clap::Args)]
pub(super) struct CardArgs {
    #[command(subcommand)]
    what: CardCommand,
}

#[derive(Debug, clap::Subcommand)]
enum CardCommand {
    /// Write the wpa_supplicant file for `[network]` Wi-Fi to OUT (mode 0600), or remove OUT
    /// when no Wi-Fi is configured. Prints `wifi on` or `wifi off`.
    Wifi {
        /// Config file.
        #[arg(long, short, default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// The supplicant file, e.g. /etc/wpa_supplicant/wpa_supplicant-wlan0.conf.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write callbox-status.txt (address, dashboard URL, the Twilio webhook URLs) to OUT.
    Status {
        /// Config file.
        #[arg(long, short, default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// The status file, e.g. /boot/firmware/callbox-status.txt.
        #[arg(long)]
        out: PathBuf,
        /// Seconds to wait for a LAN address (DHCP may still be at work when the box starts).
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
}

/// Runs `callbox card …`.
pub(super) fn run(args: CardArgs) -> anyhow::Result<()> {
    match args.what {
        CardCommand::Wifi { config, out } => {
            let config = Config::load(&config, &EnvSecrets::from_process())?;
            match wifi::supplicant_conf(&config.network) {
                Some(text) => {
                    atomic_file::replace(&out, text.as_bytes(), 0o600)
                        .with_context(|| format!("cannot write {}", out.display()))?;
                    println!("wifi on");
                }
                None => {
                    match std::fs::remove_file(&out) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", out.display())),
                    }
                    println!("wifi off");
                }
            }
            Ok(())
        }
        CardCommand::Status { config, out, wait } => {
            let config = Config::load(&config, &EnvSecrets::from_process())?;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(wait);
            let address = loop {
                match status::lan_address() {
                    Some(a) => break Some(a),
                    None if std::time::Instant::now() >= deadline => break None,
                    None => std::thread::sleep(std::time::Duration::from_secs(1)),
                }
            };
            let now = jiff::Zoned::now().with_time_zone(config.indicators.time_zone());
            let text = status::render(&config, address, &now);
            atomic_file::replace(&out, text.as_bytes(), 0o644)
                .with_context(|| format!("cannot write {}", out.display()))?;
            match address {
                Some(a) => log::info!("wrote {} (address {a})", out.display()),
                None => log::warn!("wrote {} without an address: no network after {wait} s", out.display()),
            }
            Ok(())
        }
    }
}

//! `callbox indicate fault`: the fault LED pattern for a box that cannot start.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::config::{self, IndicatorsConfig};

#[derive(Debug, clap::Args)]
pub(super) struct IndicateArgs {
    /// What to show (only `fault` for now).
    #[arg(value_enum)]
    what: What,
    /// Config file whose `[indicators]` pins to use; the rest of it may be invalid (that is
    /// usually why the box shows a fault). Without a readable `[indicators]`, the defaults.
    #[arg(long, short, default_value = config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum What {
    /// The fault pattern, until SIGTERM or SIGINT.
    Fault,
}

pub(super) fn run(args: IndicateArgs) -> anyhow::Result<()> {
    crate::logging::init("info");
    let indicators = indicators_of(&args.config);
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async {
        let What::Fault = args.what;
        crate::indicators::selftest::show_fault(&indicators, stop_signal()).await
    })?;
    Ok(())
}

/// The `[indicators]` table alone, leniently: a broken `public_url` must not hide the pins.
fn indicators_of(path: &Path) -> IndicatorsConfig {
    let table = std::fs::read_to_string(path).ok().and_then(|t| t.parse::<toml::Table>().ok());
    match table.and_then(|t| t.get("indicators").cloned()) {
        Some(value) => value.try_into().unwrap_or_else(|e| {
            log::warn!("[indicators] in {} is invalid ({e}); using the default pins", path.display());
            IndicatorsConfig::default()
        }),
        None => IndicatorsConfig::default(),
    }
}

fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    // Taken over now, not at the future's first poll: a SIGTERM right after the pattern shows
    // must still turn the LEDs off rather than kill the process with them lit.
    let signals = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        match signals {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    }
}

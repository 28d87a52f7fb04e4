//! `callbox selftest`.

use anyhow::Context as _;

use super::ConfigSource;

#[derive(Debug, clap::Args)]
pub(super) struct SelftestArgs {
    #[command(flatten)]
    source: ConfigSource,
}

pub(super) fn run(args: SelftestArgs) -> anyhow::Result<()> {
    let config = args.source.load()?;
    crate::logging::init(&config.log.level);
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    let mut out = std::io::stdout();
    runtime.block_on(crate::indicators::selftest::run(&config.indicators, &mut out))?;
    Ok(())
}

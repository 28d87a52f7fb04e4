//! The command line: `serve`, `check`, `calls`, `simulate-call`, `selftest`, `indicate`, `card`.

mod calls;
mod card;
mod indicate;
mod selftest;
mod serve;
mod simulate;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Config, EnvSecrets};

/// callbox: answers the shop's Twilio calls, keeps the call log, lights the bay.
#[derive(Debug, Parser)]
#[command(name = "callbox", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the box: webhooks for Twilio, admin API for the LAN.
    Serve(serve::ServeArgs),
    /// Validate a config file and print the effective configuration (secrets redacted).
    Check {
        /// Config file.
        #[arg(long, short, default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Print the recent call log (through the running service, or from the store when it is stopped).
    Calls(calls::CallsArgs),
    /// Play Twilio against a box: a signed incoming call, the media stream, status callbacks.
    SimulateCall(simulate::SimulateArgs),
    /// Cycle every LED pattern and play every ring tone once (for the installer at the box).
    Selftest(selftest::SelftestArgs),
    /// Show an indicator pattern by itself, e.g. `indicate fault` when the box cannot start.
    Indicate(indicate::IndicateArgs),
    /// The SD image's helpers: Wi-Fi from `[network]`, callbox-status.txt on the boot partition.
    Card(card::CardArgs),
}

/// Where to find the configuration: a file, or dev mode.
#[derive(Debug, Clone, clap::Args)]
struct ConfigSource {
    /// Config file.
    #[arg(long, short, default_value = config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Dev mode: no config file, plain HTTP on loopback, data in --data-dir.
    #[arg(long)]
    dev: bool,
    /// Data directory in dev mode.
    #[arg(long, default_value = "./callbox-data", requires = "dev")]
    data_dir: PathBuf,
}

impl ConfigSource {
    fn load(&self) -> anyhow::Result<Config> {
        let env = EnvSecrets::from_process();
        if self.dev { serve::dev_config(&self.data_dir, &env) } else { Ok(Config::load(&self.config, &env)?) }
    }
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Serve(args) => report(serve::run(args)),
        Command::Calls(args) => report(calls::run(args)),
        Command::SimulateCall(args) => report(simulate::run(args)),
        Command::Selftest(args) => report(selftest::run(args)),
        Command::Indicate(args) => report(indicate::run(args)),
        Command::Card(args) => report(card::run(args)),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path, &EnvSecrets::from_process()) {
        Ok(config) => {
            // A closed pipe (`callbox check | head`) is the reader's choice, not an error.
            let _ = writeln!(std::io::stdout(), "# {}: OK\n{}", path.display(), config.to_redacted_toml());
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_config_error(&e, false);
            ExitCode::FAILURE
        }
    }
}

/// One `error:` line per problem, each naming its key (and the log too, for `serve`).
fn print_config_error(e: &config::ConfigError, log: bool) {
    for problem in e.problems() {
        if log {
            log::error!("configuration error: {problem}");
        }
        eprintln!("error: {problem}");
    }
}

/// Exit status for a configuration error (sysexits' EX_CONFIG): the unit's
/// `RestartPreventExitStatus=78` keeps systemd from restarting a box that cannot work until
/// someone fixes its config.
const EXIT_CONFIG: u8 = 78;

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(config_error) = e.downcast_ref::<config::ConfigError>() {
                print_config_error(config_error, true);
                return ExitCode::from(EXIT_CONFIG);
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! `callbox serve`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::ConfigSource;
use crate::app::App;
use crate::calls::Store;
use crate::config::{Config, EnvSecrets, PublicUrl, Secret, TlsMode};
use crate::server::Server;
use crate::systemd;

/// File in the dev data dir that keeps the generated dev secrets across restarts.
const DEV_SECRETS_FILE: &str = "dev-secrets.toml";

#[derive(Debug, clap::Args)]
pub(super) struct ServeArgs {
    #[command(flatten)]
    source: ConfigSource,
    /// Bind the public listener here instead of `server.listen` (e.g. 127.0.0.1:0 in tests).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Bind the admin listener here instead of `admin.listen`.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// ACME mode: forget the retry backoff stored from earlier failures and order at once
    /// (after fixing DNS or port forwarding; a running box does the same on SIGHUP).
    #[arg(long)]
    acme_retry_now: bool,
}

#[derive(Serialize, Deserialize)]
struct DevSecrets {
    twilio_auth_token: String,
    admin_token: String,
}

/// The dev-mode configuration, with secrets generated once and kept in `data_dir`.
pub(super) fn dev_config(data_dir: &Path, env: &EnvSecrets) -> anyhow::Result<Config> {
    let data_dir = std::path::absolute(data_dir).with_context(|| format!("resolving {}", data_dir.display()))?;
    create_private_dir(&data_dir)?;
    let path = data_dir.join(DEV_SECRETS_FILE);
    let secrets = match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str::<DevSecrets>(&text)
            .with_context(|| format!("{} is damaged; delete it to generate new dev secrets", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let fresh =
                DevSecrets { twilio_auth_token: crate::random::hex::<16>(), admin_token: crate::random::hex::<16>() };
            write_private(&path, toml::to_string(&fresh)?.as_bytes())?;
            fresh
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let twilio = env.twilio_auth_token.clone().unwrap_or(secrets.twilio_auth_token);
    let admin = env.admin_token.clone().unwrap_or(secrets.admin_token);
    Ok(Config::dev(data_dir, Secret::new(twilio), Secret::new(admin)))
}

pub(super) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = args.source.load()?;
    config.tls.acme.retry_now = args.acme_retry_now;
    crate::logging::init(&config.log.level);
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(serve(config, args.listen, args.admin_listen))
}

async fn serve(mut config: Config, listen: Option<SocketAddr>, admin_listen: Option<SocketAddr>) -> anyhow::Result<()> {
    create_private_dir(&config.storage.dir)?;
    let store = Store::open(&config.storage.dir)?;

    let public_addr = listen.unwrap_or(config.server.listen);
    let admin_addr = admin_listen.unwrap_or(config.admin.listen);
    // Under systemd the socket unit binds the privileged ports and hands them over, so the
    // service needs no capability; outside systemd the box binds them itself.
    let mut activated = systemd::activated_listeners();
    let public = listener(&mut activated, public_addr, "server.listen").await?;
    let admin = listener(&mut activated, admin_addr, "admin.listen").await?;
    let http_listener = acme_port_80(&config, &mut activated)?;
    for (addr, _) in &activated {
        log::warn!("socket activation: no listener is configured for port {} ({addr}); closing it", addr.port());
    }
    let public_addr = public.local_addr()?;
    let admin_addr = admin.local_addr()?;
    if config.dev {
        // Twilio (or `simulate-call`) signs the URL it calls: the port actually bound.
        config = config.with_public_url(PublicUrl::parse(&format!("http://127.0.0.1:{}", public_addr.port()))?);
    }

    let shutdown = CancellationToken::new();
    let tls = crate::tls::Tls::start(&config, shutdown.clone(), http_listener).await?;
    let public_scheme = if tls.acceptor().is_some() { "https" } else { "http" };

    print_banner(&config, public_scheme, public_addr, admin_addr);

    tokio::spawn(stop_on_signal(shutdown.clone()));
    log::info!("serving Twilio on {public_addr} ({public_scheme}), admin on {admin_addr}");
    systemd::notify_ready();
    systemd::spawn_watchdog(shutdown.clone());
    Server::new(App::new(config, store, tls, shutdown), public, admin).run().await;
    Ok(())
}

/// The port-80 socket systemd passed, in ACME mode (HTTP-01 challenges and redirects).
fn acme_port_80(
    config: &Config,
    activated: &mut Vec<(SocketAddr, std::net::TcpListener)>,
) -> anyhow::Result<Option<TcpListener>> {
    if config.tls.mode != TlsMode::Acme {
        return Ok(None);
    }
    let Some(std_listener) = systemd::take_port(activated, config.tls.acme.http_listen.port()) else {
        return Ok(None);
    };
    std_listener.set_nonblocking(true)?;
    log::info!("tls.acme.http_listen: using the socket systemd passed for port {}", std_listener.local_addr()?.port());
    Ok(Some(TcpListener::from_std(std_listener)?))
}

/// The start banner on stdout: where the box listens (and, in dev mode, its secrets).
fn print_banner(config: &Config, public_scheme: &str, public_addr: SocketAddr, admin_addr: SocketAddr) {
    // The banner is for whoever started the box; a closed stdout (a supervisor that stopped
    // reading) must not stop the service, so write errors are ignored.
    let mut banner = format!(
        "callbox {} serving\n  public listener (Twilio): {public_scheme}://{public_addr}\n  admin listener (LAN):     http://{admin_addr}\n  public_url:               {}\n  call log:                 {}\n",
        env!("CARGO_PKG_VERSION"),
        config.public_url,
        config.storage.dir.display()
    );
    if config.dev {
        banner.push_str(&format!(
            "  dev Twilio auth token:    {}\n  dev admin token:          {}\n",
            config.twilio.auth_token.expose(),
            config.admin.token.expose()
        ));
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
}

/// The listener for `addr`: the one systemd passed for its port, or a freshly bound one.
async fn listener(
    activated: &mut Vec<(SocketAddr, std::net::TcpListener)>,
    addr: SocketAddr,
    key: &str,
) -> anyhow::Result<TcpListener> {
    match systemd::take_port(activated, addr.port()) {
        Some(std_listener) => {
            std_listener.set_nonblocking(true)?;
            let l = TcpListener::from_std(std_listener)?;
            log::info!("{key}: using the socket systemd passed for port {}", addr.port());
            Ok(l)
        }
        None => bind(addr, key).await,
    }
}

async fn bind(addr: SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied && addr.port() < 1024 {
            " (ports below 1024 need the systemd socket unit or CAP_NET_BIND_SERVICE)"
        } else if e.kind() == std::io::ErrorKind::AddrInUse {
            " (another program, or another callbox, is using it)"
        } else {
            ""
        };
        anyhow::anyhow!("cannot listen on {addr} ({key}): {e}{hint}")
    })
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        log::error!("cannot install signal handlers; stop the box with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM received"),
        _ = int.recv() => log::info!("SIGINT received"),
    }
    systemd::notify_stopping();
    shutdown.cancel();
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating data directory {}", dir.display()))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

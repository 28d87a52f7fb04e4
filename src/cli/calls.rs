//! `callbox calls`: the recent call log, from the running service's admin API, or straight
//! from the store when the service is stopped (sled allows one process at a time).

use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::ConfigSource;
use crate::calls::{CallRecord, Store, StoreError, StreamOutcome};
use crate::config::Config;

/// How long to wait for the local service before reading the store directly.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, clap::Args)]
pub(super) struct CallsArgs {
    #[command(flatten)]
    source: ConfigSource,
    /// How many calls, newest first.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Print JSON instead of a table.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print CSV (all calls first seen between --from and --to, oldest first).
    #[arg(long)]
    csv: bool,
    /// With --csv: first day (2026-11-01, local time) or RFC 3339 time; default 30 days ago.
    #[arg(long, requires = "csv")]
    from: Option<String>,
    /// With --csv: last day (inclusive) or RFC 3339 time (exclusive); default today.
    #[arg(long, requires = "csv")]
    to: Option<String>,
    /// The running service's admin API (default: from `admin.listen`).
    #[arg(long)]
    admin_url: Option<String>,
}

#[derive(Deserialize)]
struct Page {
    calls: Vec<CallRecord>,
}

pub(super) fn run(args: CallsArgs) -> anyhow::Result<()> {
    if !(1..=crate::server::admin::MAX_PAGE).contains(&args.limit) {
        bail!("--limit must be from 1 to {}", crate::server::admin::MAX_PAGE);
    }
    let config = args.source.load()?;
    let admin_url = args.admin_url.clone().unwrap_or_else(|| default_admin_url(&config));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    if args.csv {
        return export_csv(&runtime, &config, &admin_url, args.from.as_deref(), args.to.as_deref());
    }
    let path = format!("/api/v1/calls?limit={}", args.limit);
    let calls = match runtime.block_on(fetch(&admin_url, config.admin.token.expose(), &path)) {
        Ok(body) => {
            serde_json::from_slice::<Page>(&body)
                .map_err(|e| anyhow::anyhow!("unexpected answer from {admin_url}: {e}"))?
                .calls
        }
        Err(FetchError::Unreachable(why)) => {
            with_store(&config, &admin_url, &why, |store| Ok(store.list(args.limit, None)?))?
        }
        Err(FetchError::Refused(why)) => bail!("the admin API at {admin_url} refused the request: {why}"),
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &calls)?;
        use std::io::Write as _;
        writeln!(out)?;
    } else {
        print_table(&mut out, &calls)?;
    }
    Ok(())
}

/// Runs `read` on the store when the service is not running.
fn with_store<T>(
    config: &Config,
    admin_url: &str,
    why: &str,
    read: impl FnOnce(&Store) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    match Store::open(&config.storage.dir) {
        Ok(store) => {
            let result = read(&store);
            store.close()?;
            result
        }
        Err(StoreError::Locked(path)) => {
            bail!("the service holds {} but its admin API at {admin_url} did not answer ({why})", path.display())
        }
        Err(e) => Err(e.into()),
    }
}

fn export_csv(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    admin_url: &str,
    from: Option<&str>,
    to: Option<&str>,
) -> anyhow::Result<()> {
    // Validate here too, so a typo gets the same message with the service up or down.
    let (start, end) = crate::calls::export::date_range(from, to, &config.indicators.time_zone())
        .map_err(|m| anyhow::anyhow!("{}", m.trim()))?;
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("from", &start.to_string()).append_pair("to", &end.to_string());
    let path = format!("/api/v1/calls.csv?{}", query.finish());
    let bytes = match runtime.block_on(fetch(admin_url, config.admin.token.expose(), &path)) {
        Ok(body) => body.to_vec(),
        Err(FetchError::Unreachable(why)) => with_store(config, admin_url, &why, |store| {
            let mut out = Vec::new();
            crate::calls::export::write_csv(&store.between(start, end)?, &config.indicators.time_zone(), &mut out)?;
            Ok(out)
        })?,
        Err(FetchError::Refused(why)) => bail!("the admin API at {admin_url} refused the request: {why}"),
    };
    use std::io::Write as _;
    std::io::stdout().lock().write_all(&bytes)?;
    Ok(())
}

fn default_admin_url(config: &Config) -> String {
    let mut addr = config.admin.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{addr}")
}

enum FetchError {
    /// Nothing answered: the service is not running.
    Unreachable(String),
    /// Something answered, but not with calls.
    Refused(String),
}

async fn fetch(admin_url: &str, token: &str, path: &str) -> Result<Bytes, FetchError> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: http::Uri = format!("{}{path}", admin_url.trim_end_matches('/'))
        .parse()
        .map_err(|e| FetchError::Refused(format!("bad admin URL: {e}")))?;
    let req = http::Request::get(uri)
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::new())
        .map_err(|e| FetchError::Refused(e.to_string()))?;
    let resp = match tokio::time::timeout(ADMIN_TIMEOUT, client.request(req)).await {
        Err(_) => return Err(FetchError::Unreachable("timed out".into())),
        Ok(Err(e)) if e.is_connect() => return Err(FetchError::Unreachable(format!("{e}"))),
        Ok(Err(e)) => return Err(FetchError::Refused(e.to_string())),
        Ok(Ok(resp)) => resp,
    };
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(|e| FetchError::Refused(e.to_string()))?.to_bytes();
    if !status.is_success() {
        let hint =
            if status == http::StatusCode::UNAUTHORIZED { " (check admin.token / CALLBOX_ADMIN_TOKEN)" } else { "" };
        return Err(FetchError::Refused(format!("HTTP {status}{hint}")));
    }
    Ok(body)
}

fn print_table(out: &mut impl std::io::Write, calls: &[CallRecord]) -> anyhow::Result<()> {
    if calls.is_empty() {
        writeln!(out, "no calls yet")?;
        return Ok(());
    }
    let tz = jiff::tz::TimeZone::system();
    writeln!(
        out,
        "{:<19}  {:<16}  {:<16}  {:<10}  {:<11}  {:>6}  CALL SID",
        "WHEN", "FROM", "TO", "OUTCOME", "STATUS", "SECS"
    )?;
    for c in calls {
        let when = c.first_seen.to_zoned(tz.clone()).strftime("%Y-%m-%d %H:%M:%S").to_string();
        let secs = c.duration_secs.map(|d| d.to_string()).unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "{when:<19}  {:<16}  {:<16}  {:<10}  {:<11}  {secs:>6}  {}",
            printable(c.from.as_deref()),
            printable(c.to.as_deref()),
            c.outcome.as_str(),
            c.status.as_str(),
            c.call_sid
        )
        .context("writing the table")?;
        if let Some(s) = &c.stream {
            let recording = s
                .recording
                .as_ref()
                .map(|r| format!(", recording {} ({:.1} s)", printable(Some(&r.path)), r.duration_ms as f64 / 1000.0))
                .unwrap_or_default();
            let failover = if s.failover.is_some() { " after relay fail-over" } else { "" };
            writeln!(
                out,
                "{:<21}{} flow{failover}: {}{recording}",
                "",
                s.flow,
                s.outcome.map_or("in progress", StreamOutcome::as_str)
            )?;
        }
    }
    Ok(())
}

/// Caller IDs come from the network: keep terminal control characters out of the table.
fn printable(s: Option<&str>) -> String {
    s.unwrap_or("-").chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

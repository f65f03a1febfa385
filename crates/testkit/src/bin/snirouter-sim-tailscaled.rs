//! `snirouter-sim-tailscaled`: run the simulated tailscaled LocalAPI stand-alone
//! (for manual testing of snirouter against a fake daemon).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use snirouter_testkit::{SimConfig, SimTailscaled};

/// Serve a simulated tailscaled LocalAPI on a unix socket until Ctrl-C/SIGTERM.
#[derive(Debug, Parser)]
#[command(name = "snirouter-sim-tailscaled", version)]
struct Args {
    /// Unix socket path to listen on (a stale file is removed).
    #[arg(long)]
    socket: PathBuf,
    /// MagicDNS suffix of the simulated tailnet.
    #[arg(long, default_value = "tailnet-test.ts.net")]
    suffix: String,
    /// Service name to add to CertDomains (repeatable).
    #[arg(long = "service")]
    services: Vec<String>,
    /// Simulated ACME issuance time in milliseconds.
    #[arg(long, default_value_t = 0)]
    issue_delay_ms: u64,
    /// Lifetime of issued certificates in seconds (default 90 days).
    #[arg(long, default_value_t = 90 * 24 * 3600)]
    cert_lifetime_secs: u64,
    /// Write the test CA root certificate (PEM) to this path.
    #[arg(long)]
    write_ca: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let names: Vec<&str> = args.services.iter().map(String::as_str).collect();
    let mut cfg = SimConfig::storage(&args.suffix, &names);
    cfg.first_issue_delay = Duration::from_millis(args.issue_delay_ms);
    cfg.cert_lifetime = Duration::from_secs(args.cert_lifetime_secs);
    let sim = SimTailscaled::start(&args.socket, cfg.clone()).await?;
    if let Some(p) = &args.write_ca {
        std::fs::write(p, sim.root_pem())?;
        tracing::info!(path = %p.display(), "wrote test CA root");
    }
    tracing::info!(
        socket = %args.socket.display(),
        cert_domains = ?cfg.cert_domains,
        "simulated tailscaled listening"
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    sim.shutdown().await;
    Ok(())
}

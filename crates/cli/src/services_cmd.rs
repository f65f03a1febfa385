//! `snirouter services plan|sync`: Tailscale Services from the config (the work is in
//! `snirouter-services`; this turns it into output and exit codes).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use snirouter_config::Config;
use snirouter_localapi::LocalClient;
use snirouter_services::{ControlClient, Error};

/// `snirouter services ...`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServicesArgs {
    #[command(subcommand)]
    pub command: ServicesCommand,
}

/// The `services` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ServicesCommand {
    /// Show what `sync` would change in tailscaled's serve config and prefs (and, with
    /// [tailscale.api], the service definitions). Touches nothing. Exit 0: plan shown;
    /// 1: error or blocked.
    Plan {
        /// Config file (TOML).
        #[arg(long, short, default_value = "/etc/snirouter/config.toml")]
        config: PathBuf,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make every configured service a Tailscale Service hosted by this node: define it
    /// (with [tailscale.api]), add its serve-config TCP 443 forward with PROXY v2, and
    /// advertise it. Idempotent. Exit 0: in sync; 1: error; 2: applied, but with conflicts
    /// or control-API errors.
    Sync {
        /// Config file (TOML).
        #[arg(long, short, default_value = "/etc/snirouter/config.toml")]
        config: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// This node's side (serve-config handlers and advertisement), the control API only
        /// when the configured services or ports changed since the last sync, and silent
        /// when nothing changed: what the running router checks every 15 s, for a periodic
        /// privileged timer beside a non-root router.
        #[arg(long)]
        local: bool,
    },
}

/// Runs a `services` subcommand.
pub(crate) fn run(args: ServicesArgs) -> ExitCode {
    crate::logging::init_quiet();
    let (path, json, apply, local) = match &args.command {
        ServicesCommand::Plan { config, json } => (config, *json, false, false),
        ServicesCommand::Sync { config, json, local } => (config, *json, true, *local),
    };
    let what = if apply { "sync" } else { "plan" };
    let cfg = match load(path) {
        Some(cfg) => cfg,
        None => return ExitCode::from(1),
    };
    crate::runtime().block_on(async {
        match execute(&cfg, apply, json, local).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("snirouter services {what}: {e}\n  fix: {}", e.fix());
                ExitCode::from(1)
            }
        }
    })
}

fn load(path: &Path) -> Option<Config> {
    match snirouter_daemon::config_file::load(path) {
        Ok(cfg) => Some(cfg),
        Err(diags) => {
            eprintln!("{diags}");
            eprintln!("{}: {} problem(s)", path.display(), diags.0.len());
            None
        }
    }
}

async fn execute(cfg: &Config, apply: bool, json: bool, local_only: bool) -> Result<ExitCode, Error> {
    let local = LocalClient::new(&cfg.tailscale.socket)
        .map_err(|source| Error::LocalApi { what: "connecting to tailscaled", source })?
        .with_default_timeout(Duration::from_secs(30));
    let control = match &cfg.tailscale.api {
        Some(api) if !local_only || config_changed(cfg) => Some(ControlClient::from_config(api)?),
        _ => None,
    };
    let code = if apply {
        let report = snirouter_services::sync(cfg, &local, control.as_ref()).await?;
        if local_only && report.is_noop() && report.is_clean() {
            return Ok(ExitCode::SUCCESS);
        }
        if report.drift {
            eprintln!(
                "Tailscale Services drifted: something else changed tailscaled's serve config or advertisement; put back what snirouter owns (`snirouter doctor` names likely writers)"
            );
        }
        emit(&report, json);
        if report.is_clean() { ExitCode::SUCCESS } else { ExitCode::from(2) }
    } else {
        let plan = snirouter_services::plan(cfg, &local, control.as_ref()).await?;
        emit(&plan, json);
        if plan.blockers.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) }
    };
    if control.is_none() && !json && !local_only {
        let status = local.status().await.ok();
        let tags = status.as_ref().and_then(|s| s.self_node.as_ref()).map(|n| n.tags.clone()).unwrap_or_default();
        let suffix = cfg
            .tailscale
            .magic_dns_suffix
            .clone()
            .or_else(|| status.as_ref().and_then(|s| s.magic_dns_suffix().map(str::to_owned)));
        // The sync or plan above succeeded, so the config's desired state exists.
        if let Ok(desired) = snirouter_services::Desired::from_config(cfg) {
            println!();
            print!("{}", snirouter_services::manual_steps(&desired, &tags, suffix.as_deref()));
        }
    }
    Ok(code)
}

/// Whether the services or their ports differ from what the last sync was for.
fn config_changed(cfg: &Config) -> bool {
    let owned = snirouter_services::Ownership::load(&cfg.cache.dir).ok();
    match (snirouter_services::Desired::from_config(cfg), owned) {
        (Ok(desired), Some(owned)) => !owned.is_synced_for(&desired),
        _ => true,
    }
}

/// Prints `v` for people, or as pretty JSON.
fn emit<T: serde::Serialize + std::fmt::Display>(v: &T, json: bool) {
    if json {
        match serde_json::to_string_pretty(v) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("cannot print JSON: {e}"),
        }
    } else {
        print!("{v}");
    }
}

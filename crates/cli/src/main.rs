//! `snirouter` — the command line: argument parsing, logging set-up, output formatting
//! and exit codes. What the commands do lives in the library crates: the running router,
//! its admin socket and `doctor`'s checks in `snirouter-daemon`, the configuration in
//! `snirouter-config`, Tailscale Services in `snirouter-services`, the Caddyfile importer
//! in `snirouter-caddyfile`.

#[cfg(feature = "demo")]
mod demo;
mod doctor;
mod hosts;
mod import_cmd;
mod logging;
mod pipe;
#[cfg(feature = "demo")]
mod probe;
mod services_cmd;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use snirouter_daemon::machine::{self, DirProblem, Finding};

/// TLS-terminating SNI/path router for one tailnet host, with certificates from tailscaled.
#[derive(Debug, Parser)]
#[command(name = "snirouter", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the router.
    Run {
        /// Config file (TOML).
        #[arg(long, short, default_value = "/etc/snirouter/config.toml")]
        config: PathBuf,
    },
    /// Validate a config file and report every problem with its line.
    Check {
        /// Config file (TOML).
        #[arg(long, short, default_value = "/etc/snirouter/config.toml")]
        config: PathBuf,
        /// Print the effective config (defaults filled in) as JSON.
        #[arg(long)]
        print: bool,
    },
    /// Tailscale Services: map every configured name onto this host (plan, sync).
    Services(services_cmd::ServicesArgs),
    /// Translate a Caddyfile (Caddy + caddy-tailscale gateway) into snirouter TOML; every
    /// directive not translated is listed with its line (exit code 2).
    ImportCaddyfile(import_cmd::ImportArgs),
    /// Show the running router: per service its certificate, upstreams and traffic.
    /// Exit code 1 when a service is not serving, 3 when snirouter is not running, 4 when
    /// this user may not use the admin socket.
    Status {
        /// Print the admin socket's JSON document (schema in docs/operations.md).
        #[arg(long)]
        json: bool,
        /// Config file whose `[admin] socket` to use (default: /etc/snirouter/config.toml
        /// if present, else /run/snirouter/admin.sock).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check, in order, everything a certificate and a route need; print the cause and
    /// the fix of each problem. Exit code 1 when a check fails.
    Doctor {
        /// Config file (TOML).
        #[arg(long, short, default_value = "/etc/snirouter/config.toml")]
        config: PathBuf,
        /// Time allowed for each certificate request to tailscaled.
        #[arg(long, default_value = "30s", value_parser = parse_duration_arg)]
        cert_timeout: std::time::Duration,
    },
    /// Print hosts-file lines that send every served name to this host's loopback, so
    /// local clients reach the services by name with a valid certificate (a Tailscale
    /// Service host cannot reach its own Services). Append them to /etc/hosts.
    Hosts {
        /// Config file (TOML).
        #[arg(long, short, default_value = "/etc/snirouter/config.toml")]
        config: PathBuf,
        /// The MagicDNS suffix (default: `[tailscale] magic_dns_suffix`, else tailscaled's).
        #[arg(long)]
        suffix: Option<String>,
    },
    /// Make the running router re-read its config file (same as SIGHUP): added
    /// services serve, removed ones stop, open connections are not disturbed.
    Reload {
        /// Config file whose `[admin] socket` to use.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Everything local and simulated: a simulated tailscaled, 14 sample backends and
    /// the router on loopback, then real HTTPS requests to every name.
    #[cfg(feature = "demo")]
    Demo {
        /// Exit after the requests instead of serving until Ctrl-C.
        #[arg(long)]
        once: bool,
        /// Directory for the demo's socket, CA and config (default: a new temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    pipe::quiet_when_closed();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config, print } => check(&config, print),
        Command::Run { config } => {
            let cfg = match snirouter_daemon::config_file::load(&config) {
                Ok(cfg) => cfg,
                Err(diags) => {
                    eprintln!("{diags}");
                    eprintln!("snirouter: refusing to start with an invalid config ({} problem(s))", diags.0.len());
                    return ExitCode::from(1);
                }
            };
            logging::init(&cfg.log);
            match snirouter_daemon::rlimit::raise_nofile() {
                Ok((old, new)) if old != new => tracing::info!(old, new, "raised the open-file limit"),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot raise the open-file limit; many idle clients may exhaust it")
                }
            }
            runtime().block_on(async {
                match snirouter_daemon::start::run_until_signal(cfg).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!(cause = %e, "snirouter stopped");
                        eprintln!("snirouter: {e}");
                        ExitCode::from(1)
                    }
                }
            })
        }
        Command::Services(args) => services_cmd::run(args),
        Command::ImportCaddyfile(args) => import_cmd::run(&args),
        Command::Status { json, config } => runtime().block_on(status::run(config.as_deref(), json)),
        Command::Reload { config } => runtime().block_on(status::reload(config.as_deref())),
        Command::Doctor { config, cert_timeout } => runtime().block_on(doctor::run(&config, cert_timeout)),
        Command::Hosts { config, suffix } => runtime().block_on(hosts::run(&config, suffix)),
        #[cfg(feature = "demo")]
        Command::Demo { once, dir } => {
            logging::init_quiet();
            runtime().block_on(async {
                match demo::run(once, dir).await {
                    Ok(true) => ExitCode::SUCCESS,
                    Ok(false) => ExitCode::from(1),
                    Err(e) => {
                        eprintln!("snirouter demo: {e}");
                        ExitCode::from(1)
                    }
                }
            })
        }
    }
}

fn check(path: &std::path::Path, print: bool) -> ExitCode {
    let (loaded, warnings) = snirouter_daemon::config_file::load_with_warnings(path);
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    match loaded {
        Ok(cfg) => {
            if print {
                match serde_json::to_string_pretty(&cfg) {
                    Ok(json) => println!("{json}"),
                    Err(e) => eprintln!("cannot print the config: {e}"),
                }
            }
            if !check_cert_files(&cfg) {
                eprintln!("{}: the certificate files above cannot be served", path.display());
                return ExitCode::from(1);
            }
            if !check_error_pages(&cfg) {
                eprintln!("{}: the error_pages above cannot be used", path.display());
                return ExitCode::from(1);
            }
            let listeners = cfg.listen.https.len() + cfg.listen.proxy_protocol.len();
            let ok =
                format!("{}: ok — {} service(s), {} TLS listener(s)", path.display(), cfg.services.len(), listeners);
            // With --print, stdout is the JSON alone (`check --print | jq`).
            if print {
                eprintln!("{ok}");
            } else {
                println!("{ok}");
            }
            ExitCode::SUCCESS
        }
        Err(diags) => {
            eprintln!("{diags}");
            eprintln!("{}: {} problem(s)", path.display(), diags.0.len());
            ExitCode::from(1)
        }
    }
}

/// Prints what is wrong with the `[domains]` files; `false` when a readable pair cannot
/// serve its names. Files that cannot be read here are warnings: `check` also runs where
/// they do not exist yet (a NixOS build), and `doctor` checks them on the host.
fn check_cert_files(cfg: &snirouter_config::Config) -> bool {
    let mut ok = true;
    for finding in machine::cert_files(cfg) {
        match finding {
            Finding::Usable { .. } | Finding::RedirectOnly { .. } => {}
            Finding::Unused { domain } => {
                eprintln!(
                    "error: domains.{domain:?}: serves nothing: no service lists a name under it and it has no apex_redirect\n  help: add names = [\"NAME.{domain}\"] to the services it should serve, or remove the table"
                );
                ok = false;
            }
            Finding::Unreadable { domain, error, fix } => {
                eprintln!("warning: domains.{domain:?}: not checked here: {error}\n  help: {fix}")
            }
            Finding::Unusable { domain, error, fix } => {
                eprintln!("error: domains.{domain:?}: {error}\n  help: {fix}");
                ok = false;
            }
        }
    }
    ok
}

/// Prints what is wrong with the `error_pages` directories; `false` when one is a file.
/// A directory that is not there is a warning, for the same reason as certificate files.
fn check_error_pages(cfg: &snirouter_config::Config) -> bool {
    let mut ok = true;
    for p in machine::error_page_dirs(cfg) {
        match p.problem {
            DirProblem::NotADirectory => {
                eprintln!(
                    "error: {}: {} is a file, not a directory\n  help: point it at the directory holding 404.html, 502.html, …",
                    p.key,
                    p.dir.display()
                );
                ok = false;
            }
            DirProblem::Unreadable(e) => eprintln!(
                "warning: {}: {} not checked here: {e}\n  help: create it on the host (404.html, 500.html, 502.html, 503.html, 504.html; missing pages fall back to the built-in text); `snirouter doctor` checks it there",
                p.key,
                p.dir.display()
            ),
        }
    }
    ok
}

fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    snirouter_config::parse_duration(s)
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("snirouter: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    }
}

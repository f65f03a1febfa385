//! Log setup: human format on a terminal, no timestamps under journald (it adds its
//! own), JSON or key=value when asked.

use std::io::IsTerminal;

use snirouter_config::{Log, LogFormat};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber for `run`.
pub(crate) fn init(log: &Log) {
    let wanted = std::env::var("SNIROUTER_LOG").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| log.level.clone());
    let filter = EnvFilter::try_new(&wanted).unwrap_or_else(|_| EnvFilter::new("info"));
    // h2 warns once per hostile connection; the router sums those up itself
    // (snirouter_proxy::refusals), so h2's own lines show only when asked for by name.
    let filter = match "h2=error".parse() {
        Ok(quiet_h2) if !wanted.contains("h2") => filter.add_directive(quiet_h2),
        _ => filter,
    };
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let tty = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Logfmt => builder.compact().with_ansi(false).without_time().try_init(),
        LogFormat::Human => builder.with_ansi(tty).try_init(),
        LogFormat::Auto if under_journald => builder.compact().with_ansi(false).without_time().try_init(),
        LogFormat::Auto => builder.with_ansi(tty).try_init(),
    };
    if let Err(e) = result {
        eprintln!("snirouter: logging already initialised: {e}");
    }
}

/// Quiet logging for commands that print their own report (`demo`, `services`):
/// warnings only, unless `SNIROUTER_LOG` says otherwise.
pub(crate) fn init_quiet() {
    let filter = EnvFilter::try_from_env("SNIROUTER_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

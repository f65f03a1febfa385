//! `snirouter doctor`: runs the checks of [`snirouter_daemon::doctor`] and prints them,
//! one or two lines each. Exit code 1 when a check fails.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use snirouter_daemon::doctor::{Check, Level, run_checks};

/// `snirouter doctor`.
pub(crate) async fn run(config_path: &Path, cert_timeout: Duration) -> ExitCode {
    let checks = run_checks(config_path, cert_timeout).await;
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    print!("{}", render(&checks, colour));
    if checks.iter().any(|c| c.level == Level::Fail) { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

/// Renders the results, one or two lines each.
pub(crate) fn render(checks: &[Check], colour: bool) -> String {
    let width = checks.iter().map(|c| c.name.chars().count()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        let label = if colour {
            format!("\x1b[{}m{}\x1b[0m", colour_code(c.level), c.level.label())
        } else {
            c.level.label().to_owned()
        };
        let _ = writeln!(out, "{label}  {:<width$}  {}", c.name, c.detail);
        if let Some(fix) = &c.fix
            && matches!(c.level, Level::Fail | Level::Warn)
        {
            let _ = writeln!(out, "      {:<width$}  fix: {fix}", "");
        }
    }
    let fails = checks.iter().filter(|c| c.level == Level::Fail).count();
    let warns = checks.iter().filter(|c| c.level == Level::Warn).count();
    let _ = writeln!(out, "\n{} check(s): {fails} failed, {warns} warning(s)", checks.len());
    out
}

/// The terminal colour of a verdict.
fn colour_code(level: Level) -> &'static str {
    match level {
        Level::Pass => "32",
        Level::Warn => "33",
        Level::Fail => "1;31",
        Level::Skip => "2",
    }
}

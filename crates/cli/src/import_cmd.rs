//! `snirouter import-caddyfile FILE`: translate a Caddyfile (the subset the old Caddy +
//! caddy-tailscale gateway generated) into snirouter TOML. The TOML goes to stdout (or
//! `--output`); every directive that was not translated, and every one that needs no
//! equivalent, is listed with its line on stderr and as a comment in the TOML.
//!
//! Exit codes: `0` everything translated, `2` something was not translated (the TOML is
//! still written, with those items listed at its top), `1` the file could not be read or
//! parsed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `import-caddyfile`.
#[derive(Debug, clap::Args)]
pub(crate) struct ImportArgs {
    /// The Caddyfile to translate.
    pub file: PathBuf,
    /// Write the TOML here instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// Runs the subcommand.
pub(crate) fn run(args: &ImportArgs) -> ExitCode {
    let name = args.file.display().to_string();
    let src = match std::fs::read_to_string(&args.file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("snirouter import-caddyfile: cannot read {name}: {e}");
            return ExitCode::from(1);
        }
    };
    let shown = args.file.file_name().map_or(name.clone(), |n| n.to_string_lossy().into_owned());
    let t = match snirouter_caddyfile::translate(&src, &shown) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{name}:{}: {e}", e.line());
            eprintln!("snirouter import-caddyfile: {name} is not a Caddyfile this tool can read");
            return ExitCode::from(1);
        }
    };
    for n in &t.notes {
        eprintln!("{name}:{}: note: `{}`: {}", n.line, n.directive, n.message);
    }
    for u in &t.untranslated {
        eprintln!("{name}:{}: NOT TRANSLATED: `{}`: {}", u.line, u.directive, u.message);
    }
    if let Err(code) = write_output(args.output.as_deref(), &t.toml) {
        return code;
    }
    let target = args.output.as_ref().map_or("the config".to_owned(), |p| p.display().to_string());
    if t.untranslated.is_empty() {
        eprintln!(
            "{name}: {} service(s) translated, nothing left out; next: snirouter check --config {}",
            t.services.len(),
            args.output.as_ref().map_or("FILE".to_owned(), |p| p.display().to_string())
        );
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "{name}: {} service(s) translated; {} item(s) NOT translated — see above and the top of {target}",
            t.services.len(),
            t.untranslated.len()
        );
        ExitCode::from(2)
    }
}

fn write_output(path: Option<&Path>, toml: &str) -> Result<(), ExitCode> {
    match path {
        None => {
            print!("{toml}");
            Ok(())
        }
        Some(p) => std::fs::write(p, toml).map_err(|e| {
            eprintln!("snirouter import-caddyfile: cannot write {}: {e}", p.display());
            ExitCode::from(1)
        }),
    }
}

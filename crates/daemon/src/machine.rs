//! What the configuration needs from this machine, checked in one place for `check`,
//! `doctor` and start-up: the certificate files of `[domains]` (every pair read and checked
//! for every name served under its domain, as the router would) and the `error_pages`
//! directories. The configuration itself is parsed without touching the machine.

use std::path::PathBuf;
use std::time::SystemTime;

use snirouter_certs::files;
use snirouter_config::Config;

/// What one domain's files are worth. `domain` is the `[domains]` key; `error` and `fix`
/// say what is wrong and what to do.
#[allow(missing_docs)] // the fields are named for what they hold
pub enum Finding {
    /// Every name is served: how many, and the earliest expiry in days.
    Usable { domain: String, names: usize, days_left: u64 },
    /// No service lists a name under the domain, and it has no `apex_redirect`: it would
    /// only ever answer 404.
    Unused { domain: String },
    /// No service lists a name under the domain; it only redirects its apex (and answers
    /// 404 under it).
    RedirectOnly { domain: String },
    /// A file cannot be read here (maybe only here: `check` runs at build time too).
    Unreadable { domain: String, error: String, fix: String },
    /// The files are readable and cannot serve a name.
    Unusable { domain: String, error: String, fix: String },
}

/// Inspects every `[domains]` entry.
pub fn cert_files(config: &Config) -> Vec<Finding> {
    let now = SystemTime::now();
    let mut out = Vec::new();
    for source in crate::reload::file_sources(config) {
        let domain = source.domain.clone();
        let redirects = config.domains.iter().any(|d| d.name == domain && d.apex_redirect.is_some());
        if source.names.is_empty() && !redirects {
            out.push(Finding::Unused { domain });
            continue;
        }
        let loaded = match files::load(&source, now) {
            Ok(loaded) => loaded,
            Err(e @ files::FileError::Read { .. }) => {
                out.push(Finding::Unreadable { domain, error: e.to_string(), fix: e.fix() });
                continue;
            }
            Err(e) => {
                out.push(Finding::Unusable { domain, error: e.to_string(), fix: e.fix() });
                continue;
            }
        };
        out.push(match loaded.names.iter().find_map(|(_, r)| r.as_ref().err()) {
            Some(e) => Finding::Unusable { domain, error: e.to_string(), fix: e.fix() },
            None if loaded.names.is_empty() => Finding::RedirectOnly { domain },
            None => Finding::Usable {
                domain,
                names: loaded.names.len(),
                days_left: loaded
                    .names
                    .iter()
                    .filter_map(|(_, r)| r.as_ref().ok())
                    .map(|c| c.remaining(now).as_secs() / 86_400)
                    .min()
                    .unwrap_or(0),
            },
        });
    }
    out
}

/// An `error_pages` directory that cannot be used: its pages fall back to the built-in text.
pub struct ErrorPagesProblem {
    /// The key that names it (`services.NAME.error_pages`, `defaults.error_pages`).
    pub key: String,
    /// The directory.
    pub dir: PathBuf,
    /// What is wrong with it.
    pub problem: DirProblem,
}

/// Why a directory cannot be used.
pub enum DirProblem {
    /// The path is a file.
    NotADirectory,
    /// It cannot be read here (maybe only here: `check` runs at build time too).
    Unreadable(std::io::Error),
}

/// Every configured `error_pages` directory that is not a readable directory.
pub fn error_page_dirs(config: &Config) -> Vec<ErrorPagesProblem> {
    let mut out = Vec::new();
    for (key, dir) in config.error_page_dirs() {
        let problem = match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => DirProblem::NotADirectory,
            Err(e) => DirProblem::Unreadable(e),
        };
        out.push(ErrorPagesProblem { key, dir: dir.to_owned(), problem });
    }
    out
}

//! `doctor`'s Tailscale Services checks that need no API key: each definition as
//! tailscaled (1.98+) lists it, and who keeps undoing what the router writes.

use std::path::{Path, PathBuf};

use snirouter_config::Config;
use snirouter_localapi::{DaemonVersion, LocalClient, Status};
use snirouter_services::{Desired, Seen};

use super::{Check, Level, check};

/// Where other writers of tailscaled's serve config are looked for: systemd units and cron.
const WRITER_DIRS: &[&str] =
    &["/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system", "/etc/cron.d"];
const WRITER_FILES: &[&str] = &["/etc/crontab"];

/// The definitions of the configured services as tailscaled lists them.
pub(super) async fn definition_checks(config: &Config, client: &LocalClient, status: &Status, out: &mut Vec<Check>) {
    let Ok(desired) = Desired::from_config(config) else { return };
    let what = "Service definitions (tailscaled)";
    if DaemonVersion::parse(&status.version).is_some_and(|v| !v.at_least(1, 98)) {
        let detail =
            format!("tailscaled {} cannot list Services (needs 1.98); definitions not checked", status.version);
        out.push(check(Level::Skip, what, detail, None));
        return;
    }
    let Some(visible) = snirouter_services::visible_services(client).await else {
        out.push(check(Level::Skip, what, "tailscaled did not list its Services (no netmap yet?)", None));
        return;
    };
    let seen = snirouter_services::compare_definitions(&desired, &visible);
    let (mut complete, mut hidden) = (0, Vec::new());
    for (service, s) in &seen {
        match s {
            Seen::Complete => complete += 1,
            Seen::MissingPorts { .. } => {
                let (detail, fix) = snirouter_services::missing_ports(service, s).unwrap_or_default();
                out.push(check(Level::Fail, format!("definition: {service}"), detail, Some(fix)));
            }
            Seen::NotVisible => hidden.push(service.as_str()),
        }
    }
    // A tagged host is often not granted access to its own Services: not a fault, and
    // nothing to say when it sees none of them.
    if !hidden.is_empty() && hidden.len() < seen.len() {
        let detail =
            format!("{}; their ports cannot be checked from here", snirouter_services::not_visible_line(&hidden));
        out.push(check(Level::Skip, format!("definitions not visible ({})", hidden.len()), detail, None));
    }
    if complete > 0 {
        let detail = format!("{complete} of {} list every port this host serves", seen.len());
        out.push(check(Level::Pass, what, detail, None));
    }
}

/// Whether something else keeps undoing snirouter's serve-config handlers or advertisement
/// (the drift the syncs recorded in `services.json`), naming the writers found on the host.
pub(super) fn drift_check(drift: Option<&snirouter_services::Drift>, out: &mut Vec<Check>) {
    let what = "Services drift";
    let Some(drift) = drift else { return };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let ago = crate::status::ago(now, Some(drift.last_at));
    if drift.healed < 2 {
        let detail = format!("put back once ({ago}): {}", drift.last_changes.join("; "));
        out.push(check(Level::Pass, what, detail, None));
        return;
    }
    let writers = other_writers(WRITER_DIRS, WRITER_FILES);
    let named = if writers.is_empty() {
        "no systemd unit or cron entry here runs `tailscale serve`; look for a script, container or person running \
         `tailscale serve reset` / `tailscale serve set-config --all`"
            .to_owned()
    } else {
        format!("these run `tailscale serve` on this host: {}", list(&writers))
    };
    out.push(check(
        Level::Warn,
        what,
        format!(
            "something else keeps rewriting tailscaled's serve config or advertisement: put back {} times, last \
             {ago} ({}); {named}",
            drift.healed,
            drift.last_changes.join("; ")
        ),
        Some(
            "keep one writer of the Services: remove the other (NixOS: drop services.tailscale.serve), or set [tailscale] \
             manage_services = false and configure the handlers there"
                .to_owned(),
        ),
    ));
}

fn list(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// Unit files and cron entries (not snirouter's own) that run `tailscale serve`.
fn other_writers(dirs: &[&str], files: &[&str]) -> Vec<PathBuf> {
    let mut candidates: Vec<PathBuf> = files.iter().map(PathBuf::from).collect();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        candidates.extend(entries.filter_map(Result::ok).map(|e| e.path()));
    }
    candidates.sort();
    candidates.into_iter().filter(|p| runs_tailscale_serve(p)).collect()
}

fn runs_tailscale_serve(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else { return false };
    if !meta.is_file() || meta.len() > 256 * 1024 {
        return false;
    }
    let Ok(text) = std::fs::read_to_string(path) else { return false };
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    !name.contains("snirouter")
        && text.lines().filter(|l| !l.trim_start().starts_with('#')).any(|l| l.contains("tailscale serve"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_are_units_and_cron_entries_that_run_tailscale_serve() {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("tailscale-serve.service"), "[Service]\nExecStart=/bin/tailscale serve set-config --all /x\n")
            .expect("write");
        std::fs::write(p("other.service"), "[Service]\nExecStart=/bin/true\n# tailscale serve reset\n").expect("write");
        std::fs::write(p("snirouter.service"), "ExecStartPre=/bin/snirouter services sync # tailscale serve\n")
            .expect("write");
        std::fs::write(p("crontab"), "0 4 * * * root tailscale serve reset\n").expect("write");
        let dirs = [dir.path().to_str().expect("utf-8")];
        let found = other_writers(&dirs, &[]);
        let names: Vec<String> =
            found.iter().filter_map(|f| f.file_name()).map(|n| n.to_string_lossy().into()).collect();
        assert_eq!(names, ["crontab", "tailscale-serve.service"]);

        let drift =
            snirouter_services::Drift { healed: 3, last_at: 0, last_changes: vec!["+ serve-config …".into()] };
        let mut out = Vec::new();
        drift_check(Some(&drift), &mut out);
        assert_eq!(out[0].level, Level::Warn);
        assert!(out[0].detail.contains("3 times") && out[0].fix.as_deref().is_some_and(|f| f.contains("one writer")));
        let mut out = Vec::new();
        drift_check(Some(&snirouter_services::Drift { healed: 1, ..drift }), &mut out);
        assert_eq!(out[0].level, Level::Pass);
    }
}

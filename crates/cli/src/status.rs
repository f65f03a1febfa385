//! `snirouter status` and `snirouter reload`: clients of the admin socket.
//!
//! Exit codes of `status`: 0 every service is serving; 1 at least one is not (no
//! certificate, or an upstream down); 2 the config given with `--config` is invalid or
//! the answer could not be read; 3 snirouter is not running (nothing answers on the
//! admin socket); 4 the admin socket exists but this user may not use it.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use snirouter_daemon::admin_client::{self, AdminError};
use snirouter_daemon::status::{ServiceStatus, StatusReport, ago, human_duration};

/// Exit code when the daemon is not running.
const EXIT_NOT_RUNNING: u8 = 3;
/// Exit code when this user may not use the admin socket.
const EXIT_NO_PERMISSION: u8 = 4;

/// The process exit code for an admin-socket error.
fn code(e: &AdminError) -> u8 {
    match e {
        AdminError::NotRunning { .. } => EXIT_NOT_RUNNING,
        AdminError::Permission { .. } => EXIT_NO_PERMISSION,
        AdminError::Protocol { .. } => 2,
    }
}

/// `snirouter status`.
pub(crate) async fn run(config: Option<&Path>, json: bool) -> ExitCode {
    let socket = match admin_client::socket_path(config) {
        Ok(s) => s,
        Err(d) => {
            eprintln!("{d}");
            return ExitCode::from(2);
        }
    };
    let body = match admin_client::request(&socket, http::Method::GET, "/status").await {
        Ok((200, body)) => body,
        Ok((code, body)) => {
            eprintln!("snirouter status: the admin socket answered HTTP {code}: {}", body.trim());
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(code(&e));
        }
    };
    let report: StatusReport = match serde_json::from_str(&body) {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "snirouter status: cannot read the daemon's answer ({e}); is the CLI the same version as the daemon?"
            );
            return ExitCode::from(2);
        }
    };
    if json {
        print!("{body}");
    } else {
        let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        print!("{}", render(&report, colour, SystemTime::now()));
    }
    if report.services.iter().all(|s| s.serving) { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

/// `snirouter reload`: `POST /reload` on the admin socket.
pub(crate) async fn reload(config: Option<&Path>) -> ExitCode {
    let socket = match admin_client::socket_path(config) {
        Ok(s) => s,
        Err(d) => {
            eprintln!("{d}");
            eprintln!("snirouter reload: the config file is invalid; nothing was sent to the daemon");
            return ExitCode::from(1);
        }
    };
    match admin_client::request(&socket, http::Method::POST, "/reload").await {
        Ok((200, body)) => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let changes = &v["changes"];
            let list = |k: &str| -> String {
                changes[k]
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(", "))
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "-".to_owned())
            };
            println!("reloaded: added {}; removed {}; changed {}", list("added"), list("removed"), list("changed"));
            println!("listeners: added {}; removed {}", list("listeners_added"), list("listeners_removed"));
            let restart = list("restart_needed");
            if restart != "-" {
                println!("needs a restart to take effect: {restart}");
            }
            ExitCode::SUCCESS
        }
        Ok((_, body)) => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            eprintln!("{}", v["error"].as_str().unwrap_or(body.trim()));
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(code(&e))
        }
    }
}

fn paint(colour: bool, code: &str, s: &str) -> String {
    if colour { format!("\x1b[{code}m{s}\x1b[0m") } else { s.to_owned() }
}

/// The lines under a service's row: problems, access, shared hosts, what is pending on
/// the tailnet side, the fix and the certificate schedule.
fn details(s: &ServiceStatus, colour: bool, now: u64) -> String {
    let mut out = String::new();
    for p in &s.problems {
        out.push_str(&format!("    {}\n", paint(colour, "31", p)));
    }
    if let Some(allow) = &s.allow {
        out.push_str(&format!("    allow: {}\n", allow.join(", ")));
    }
    if let Some(hosts) = shared_hosts(s) {
        out.push_str(&format!("    hosts: {hosts}\n"));
    }
    if let Some(b) = serve_bytes(s) {
        out.push_str(&format!(
            "    through tailscaled: {} in, {} out since it started\n",
            human_bytes(b.inbound),
            human_bytes(b.outbound)
        ));
    }
    for p in tcp_ports(s) {
        let line = format!("tcp {} → {} ({})", p.port, p.to, p.handler);
        let ok = p.handler == snirouter_services::HandlerState::Correct;
        out.push_str(&format!("    {}\n", if ok { line } else { paint(colour, "33", &line) }));
    }
    for n in &s.names {
        let cert = match &n.certificate {
            Some(c) => format!("expires in {}", human_duration(c.expires_in_seconds)),
            None => "no certificate".to_owned(),
        };
        out.push_str(&format!("    also {} ({cert}, files of {})\n", n.fqdn, n.domain));
        if let (Some(e), Some(_)) = (&n.error, &n.certificate) {
            let line = format!("new files not used, the last good certificate serves: {e}");
            out.push_str(&format!("      {}\n", paint(colour, "33", &line)));
        }
        if let Some(fix) = n.fix.as_ref().filter(|_| n.error.is_some()) {
            out.push_str(&format!("      fix: {fix}\n"));
        }
    }
    // What is pending on the tailnet side (definition, advertisement, approval,
    // CertDomains) matters while the service does not serve.
    let pending = s.tailscale_service.as_ref().and_then(|t| t["problems"].as_array()).filter(|_| !s.serving);
    for p in pending.into_iter().flatten().filter_map(|p| p.as_str()) {
        out.push_str(&format!("    {}\n", paint(colour, "33", &format!("tailnet: {p}"))));
    }
    if !s.serving
        && let Some(fix) = &s.fetch.fix
    {
        out.push_str(&format!("    fix: {fix}\n"));
    }
    if s.certificate.is_none() || s.fetch.failures > 0 {
        out.push_str(&format!(
            "    last success {} · next attempt {}\n",
            ago(now, s.fetch.last_success),
            ago(now, s.fetch.next_attempt)
        ));
    }
    out
}

/// The hosts of a service that other nodes host too (`storage (this host, approved:auto),
/// backup (approved:auto, offline)`); `None` when this host is its only one or no
/// control API tells.
fn shared_hosts(s: &ServiceStatus) -> Option<String> {
    let hosts = s.tailscale_service.as_ref()?.get("hosts")?.clone();
    let hosts: Vec<snirouter_services::Host> = serde_json::from_value(hosts).ok()?;
    hosts.iter().any(|h| !h.this_host).then(|| hosts.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
}

/// The bytes tailscaled counted for the service's Tailscale Service (1.102+).
fn serve_bytes(s: &ServiceStatus) -> Option<snirouter_localapi::ServeBytes> {
    let bytes = s.tailscale_service.as_ref()?.get("bytes")?.clone();
    serde_json::from_value(bytes).ok()
}

/// `512 B`, `1.5 KiB`, `20.0 MiB`, `3.2 GiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// The service's `tcp` ports as the Services observation saw them.
fn tcp_ports(s: &ServiceStatus) -> Vec<snirouter_services::PortState> {
    let ports = s.tailscale_service.as_ref().and_then(|t| t.get("tcp")).cloned();
    ports.and_then(|p| serde_json::from_value(p).ok()).unwrap_or_default()
}

/// The table shown on a terminal.
pub(crate) fn render(report: &StatusReport, colour: bool, now: SystemTime) -> String {
    let now = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut out = String::new();
    let listeners: Vec<String> = report.listeners.iter().map(|l| format!("{} {}", l.kind, l.address)).collect();
    out.push_str(&format!(
        "snirouter {} (pid {}) up {} · {} · {} connection(s), {} tunnel(s) · {}\n",
        report.version,
        report.pid,
        human_duration(report.uptime_seconds.max(1) as i64),
        if report.magic_dns_suffix.is_empty() {
            "tailnet names waiting for tailscaled (MagicDNS suffix not known yet)"
        } else {
            &report.magic_dns_suffix
        },
        report.active_connections,
        report.tunnels,
        listeners.join(", ")
    ));
    if let Some(r) = &report.last_reload
        && !r.ok
    {
        out.push_str(&paint(colour, "31", &format!("last reload refused: {}\n", r.error.as_deref().unwrap_or("?"))));
    }
    for h in &report.tailscaled_health {
        out.push_str(&paint(colour, "33", &format!("tailscaled: {h}\n")));
    }
    out.push('\n');
    let rows: Vec<[String; 7]> = report.services.iter().map(|s| row(s, now)).collect();
    let header = ["SERVICE", "FQDN", "CERTIFICATE", "SOURCE", "UPSTREAM", "REQUESTS", "STATE"];
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String; 7], state: String| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate().take(6) {
            l.push_str(&format!("{c:<w$}  ", w = widths[i]));
        }
        l.push_str(&state);
        l.push('\n');
        l
    };
    out.push_str(&line(&header.map(str::to_owned), "STATE".to_owned()));
    for (s, r) in report.services.iter().zip(&rows) {
        let state = if s.serving { paint(colour, "32", &r[6]) } else { paint(colour, "1;31", &r[6]) };
        out.push_str(&line(r, state));
        out.push_str(&details(s, colour, now));
    }
    let bad = report.services.iter().filter(|s| !s.serving).count();
    out.push('\n');
    if bad == 0 {
        out.push_str(&format!("all {} service(s) serving\n", report.services.len()));
    } else {
        out.push_str(&paint(
            colour,
            "1;31",
            &format!(
                "{bad} of {} service(s) not serving — run `snirouter doctor` for causes and fixes\n",
                report.services.len()
            ),
        ));
    }
    out
}

fn row(s: &ServiceStatus, _now: u64) -> [String; 7] {
    let (cert, source) = match &s.certificate {
        Some(c) => (format!("expires in {}", human_duration(c.expires_in_seconds)), c.source.clone()),
        None => (
            match &s.fetch.last_error_kind {
                Some(k) => format!("none ({k})"),
                None if s.fetch.in_flight => "requesting…".to_owned(),
                None => "none".to_owned(),
            },
            "-".to_owned(),
        ),
    };
    let upstream = s
        .routes
        .iter()
        .map(|r| {
            let mark = match r.reachable {
                Some(true) => "up",
                Some(false) => "DOWN",
                None => "?",
            };
            if r.path == "/" { format!("{} {mark}", r.upstream) } else { format!("{} {} {mark}", r.path, r.upstream) }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let req = &s.requests;
    let errors = req.responses_5xx;
    [
        s.name.clone(),
        s.fqdn.clone(),
        cert,
        source,
        upstream,
        match req.tunnels {
            0 => format!("{} ({} 5xx)", req.requests, errors),
            n => format!("{} ({} 5xx) · {n} tunnel(s)", req.requests, errors),
        },
        if s.serving { "serving".to_owned() } else { "NOT SERVING".to_owned() },
    ]
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn not_running_and_not_permitted_have_their_own_exit_codes() {
        let path = PathBuf::from("/run/snirouter/admin.sock");
        let refused = std::io::Error::from(std::io::ErrorKind::NotFound);
        let not_running = AdminError::NotRunning { path: path.clone(), source: refused };
        assert_eq!(code(&not_running), 3);
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let permission = AdminError::Permission { path, source: denied };
        assert_eq!(code(&permission), 4);
        let text = permission.to_string();
        assert!(!text.contains("not running") && text.contains("run as root or as a member of the group"), "{text}");
    }
}

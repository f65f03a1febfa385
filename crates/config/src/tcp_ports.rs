//! A service's `tcp` table: further TCP ports of its Tailscale Service that tailscaled
//! forwards straight to an app (Forgejo's SSH on 22, MQTT on 1883).
//!
//! ```toml
//! [services.git]
//! upstream = "http://127.0.0.1:3000"
//! tcp = { 22 = "127.0.0.1:2222", 1883 = { to = "unix:/run/mosquitto.sock", proxy_protocol = 2 } }
//! ```

use std::path::PathBuf;

use crate::checks::Problem;
use crate::schema::{TcpPort, TcpTarget};
use crate::services::parse_host_port;
use crate::validate::{Entry, Validator, describe, entries, find};

const LONG_KEYS: &[&str] = &["to", "proxy_protocol"];
const EXAMPLE: &str = "tcp = { 22 = \"127.0.0.1:2222\" }";

impl Validator<'_> {
    /// `tcp`: every valid entry, sorted by port (problems reported at their key).
    pub(crate) fn tcp_ports(&mut self, e: &Entry<'_>) -> Vec<TcpPort> {
        let Some(table) = e.item.as_table_like() else {
            self.error(
                e.value_span(),
                &e.path,
                format!("expected a table of ports, found {}", describe(e.item)),
                Some(format!("write {EXAMPLE}")),
            );
            return Vec::new();
        };
        let mut out: Vec<TcpPort> = Vec::new();
        for f in entries(table, &e.path) {
            let Some(port) = self.tcp_port_number(&f) else { continue };
            if out.iter().any(|p| p.port == port) {
                self.error(
                    f.key_span(),
                    &f.path,
                    format!("port {port} is written twice in tcp"),
                    Some("keep one entry per port".to_owned()),
                );
                continue;
            }
            if let Some((target, proxy_protocol)) = self.tcp_port_value(&f, port) {
                out.push(TcpPort { port, target, proxy_protocol });
            }
        }
        out.sort_by_key(|p| p.port);
        out
    }

    /// The key: a port number, never 443.
    fn tcp_port_number(&mut self, f: &Entry<'_>) -> Option<u16> {
        let port = match f.name.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => {
                self.error(
                    f.key_span(),
                    &f.path,
                    format!("tcp key {:?} is not a port number (1-65535)", f.name),
                    Some(format!("key each entry by the Service's port, e.g. {EXAMPLE}")),
                );
                return None;
            }
        };
        if port == 443 {
            self.error(
                f.key_span(),
                &f.path,
                "tcp port 443 is the router's own: every service's TCP 443 goes to snirouter",
                Some("pick another port for this app, or serve it over HTTPS with upstream/routes".to_owned()),
            );
            return None;
        }
        Some(port)
    }

    /// The value: a target string, or `{ to = …, proxy_protocol = 1|2 }`.
    fn tcp_port_value(&mut self, f: &Entry<'_>, port: u16) -> Option<(TcpTarget, Option<u8>)> {
        if let Some(raw) = f.item.as_str() {
            return self.tcp_target(f, raw, port).map(|t| (t, None));
        }
        let Some(table) = f.item.as_table_like() else {
            self.error(
                f.value_span(),
                &f.path,
                format!("expected a target string or a table, found {}", describe(f.item)),
                Some(format!("write {port} = \"127.0.0.1:{port}\" or {port} = {{ to = \"127.0.0.1:{port}\", proxy_protocol = 2 }}")),
            );
            return None;
        };
        let fields = entries(table, &f.path);
        self.check_keys(&fields, LONG_KEYS, &format!("in {}", f.path));
        let proxy_protocol = find(&fields, "proxy_protocol").and_then(|p| self.proxy_protocol_version(p));
        let Some(to) = find(&fields, "to") else {
            self.error(
                f.value_span(),
                &f.path,
                format!("tcp port {port} has no target"),
                Some(format!("add to = \"127.0.0.1:{port}\"")),
            );
            return None;
        };
        let raw = self.string(to, &format!("\"127.0.0.1:{port}\""))?;
        self.tcp_target(to, raw, port).map(|t| (t, proxy_protocol))
    }

    fn tcp_target(&mut self, e: &Entry<'_>, raw: &str, port: u16) -> Option<TcpTarget> {
        match parse_tcp_target(raw, &e.path, port) {
            Ok(t) => Some(t),
            Err(p) => {
                self.report(e.value_span(), &e.path, p);
                None
            }
        }
    }

    fn proxy_protocol_version(&mut self, p: &Entry<'_>) -> Option<u8> {
        match p.item.as_integer() {
            Some(v @ (1 | 2)) => u8::try_from(v).ok(),
            _ => {
                self.error(
                    p.value_span(),
                    &p.path,
                    format!("proxy_protocol must be 1 or 2, found {}", describe(p.item)),
                    Some(
                        "write proxy_protocol = 2 (or 1 for apps that only read version 1); leave it out for none"
                            .to_owned(),
                    ),
                );
                None
            }
        }
    }
}

/// `host:port` or `unix:/absolute/path.sock`.
fn parse_tcp_target(raw: &str, key: &str, port: u16) -> Result<TcpTarget, Problem> {
    if let Some(path) = raw.trim().strip_prefix("unix:") {
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            return Err(Problem::new(
                format!("{key} {raw:?} needs an absolute socket path"),
                Some(
                    "write unix:/run/app/app.sock (tailscaled resolves relative paths against its own directory)"
                        .to_owned(),
                ),
            ));
        }
        return Ok(TcpTarget::Unix(path));
    }
    parse_host_port(raw, key, &format!("127.0.0.1:{port}")).map(TcpTarget::Address)
}

#[cfg(test)]
mod tests {
    use crate::TcpTarget;

    fn parse(tcp: &str) -> Result<crate::Config, crate::Diagnostics> {
        crate::parse(
            &format!(
                "[listen]\nproxy_protocol = [\"127.0.0.1:8443\"]\n[services.git]\nupstream = \"http://127.0.0.1:3000\"\ntcp = {tcp}\n"
            ),
            "t.toml",
        )
    }

    #[test]
    fn short_and_long_forms_sorted_by_port() {
        let cfg = parse(r#"{ 1883 = { to = "unix:/run/mqtt.sock", proxy_protocol = 2 }, 22 = "127.0.0.1:2222" }"#)
            .expect("valid");
        let tcp = &cfg.services[0].tcp;
        assert_eq!(tcp.iter().map(|p| p.port).collect::<Vec<_>>(), [22, 1883]);
        assert_eq!(tcp[0].forward(), "127.0.0.1:2222");
        assert_eq!(tcp[0].proxy_protocol, None);
        assert_eq!(tcp[1].forward(), "unix:/run/mqtt.sock");
        assert!(matches!(tcp[1].target, TcpTarget::Unix(_)));
        assert_eq!(tcp[1].proxy_protocol, Some(2));
    }

    #[test]
    fn bad_entries_name_the_cause_and_the_fix() {
        for (tcp, says) in [
            (r#"{ 443 = "127.0.0.1:8443" }"#, "router's own"),
            (r#"{ ssh = "127.0.0.1:22" }"#, "not a port number"),
            (r#"{ 0 = "127.0.0.1:22" }"#, "not a port number"),
            (r#"{ 22 = "http://127.0.0.1:22" }"#, "without a scheme"),
            (r#"{ 22 = "127.0.0.1" }"#, "needs a port"),
            (r#"{ 22 = "unix:run/x.sock" }"#, "absolute socket path"),
            (r#"{ 22 = { to = "127.0.0.1:22", proxy_protocol = 3 } }"#, "must be 1 or 2"),
            (r#"{ 22 = { proxy_protocol = 2 } }"#, "has no target"),
            (r#"{ 22 = { to = "127.0.0.1:22", proxy = 2 } }"#, "unknown key"),
            (r#"{ 22 = "127.0.0.1:2222", "022" = "127.0.0.1:2223" }"#, "written twice"),
            (r#"{ 22 = 2222 }"#, "expected a target string"),
            (r#""127.0.0.1:22""#, "expected a table of ports"),
        ] {
            let err = parse(tcp).expect_err(tcp).to_string();
            assert!(err.contains(says), "{tcp}: {err}");
        }
    }
}

//! `ipn.ServeConfig` as tailscaled 1.103 decodes, checks and stores it
//! (`ipn/serve.go`, `ipn/localapi/serve.go`, `ipn/ipnlocal/serve.go`).
//!
//! A `POST /localapi/v0/serve-config` body is decoded into the typed struct by
//! Go's `encoding/json` ([`decode`]): unknown keys are dropped, keys match
//! case-insensitively, a value of the wrong type is the decoder's error. What is
//! stored — and what `GET` returns and its `ETag` hashes — is `json.Marshal` of
//! that struct ([`ServeConfig::to_json`]): Go field order, empty fields omitted,
//! map keys sorted as strings. [`ServeConfig::needs_admin`] is the Path/`unix:`
//! rule behind the 401, [`validate_update`] is `validateServeConfigUpdate`.
//!
//! A `null` map value is a nil pointer in Go; the admin check dereferences every
//! one of them, so such a config crashes the handler ([`ServeConfig::has_nil`]).

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::gofmt;
use crate::gojson::{self, Ctx, Dec, J};

type Map<T> = BTreeMap<String, Option<T>>;

/// `ipn.ServeConfig`. `TCP` keys are the canonical decimal `uint16`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub(crate) struct ServeConfig {
    #[serde(rename = "TCP", skip_serializing_if = "BTreeMap::is_empty")]
    tcp: Map<TcpPortHandler>,
    #[serde(rename = "Web", skip_serializing_if = "BTreeMap::is_empty")]
    web: Map<WebServerConfig>,
    #[serde(rename = "Services", skip_serializing_if = "BTreeMap::is_empty")]
    services: Map<ServiceConfig>,
    #[serde(rename = "AllowFunnel", skip_serializing_if = "BTreeMap::is_empty")]
    allow_funnel: BTreeMap<String, bool>,
    #[serde(rename = "Foreground", skip_serializing_if = "BTreeMap::is_empty")]
    foreground: Map<ServeConfig>,
}

/// `ipn.ServiceConfig`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
struct ServiceConfig {
    #[serde(rename = "TCP", skip_serializing_if = "BTreeMap::is_empty")]
    tcp: Map<TcpPortHandler>,
    #[serde(rename = "Web", skip_serializing_if = "BTreeMap::is_empty")]
    web: Map<WebServerConfig>,
    #[serde(rename = "Tun", skip_serializing_if = "is_false")]
    tun: bool,
}

/// `ipn.TCPPortHandler`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
struct TcpPortHandler {
    #[serde(rename = "HTTPS", skip_serializing_if = "is_false")]
    https: bool,
    #[serde(rename = "HTTP", skip_serializing_if = "is_false")]
    http: bool,
    #[serde(rename = "TCPForward", skip_serializing_if = "String::is_empty")]
    tcp_forward: String,
    #[serde(rename = "TerminateTLS", skip_serializing_if = "String::is_empty")]
    terminate_tls: String,
    #[serde(rename = "ProxyProtocol", skip_serializing_if = "is_zero")]
    proxy_protocol: i64,
}

/// `ipn.WebServerConfig`: `Handlers` has no `omitempty` (nil is `null`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
struct WebServerConfig {
    #[serde(rename = "Handlers")]
    handlers: Option<Map<HttpHandler>>,
}

/// `ipn.HTTPHandler`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
struct HttpHandler {
    #[serde(rename = "Path", skip_serializing_if = "String::is_empty")]
    path: String,
    #[serde(rename = "Proxy", skip_serializing_if = "String::is_empty")]
    proxy: String,
    #[serde(rename = "Text", skip_serializing_if = "String::is_empty")]
    text: String,
    #[serde(rename = "AcceptAppCaps", skip_serializing_if = "Vec::is_empty")]
    accept_app_caps: Vec<String>,
    #[serde(rename = "Redirect", skip_serializing_if = "String::is_empty")]
    redirect: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Decodes a serve-config body like `json.NewDecoder(body).Decode(new(ipn.ServeConfig))`.
/// The error text is Go's (the handler prefixes `decoding config: `).
pub(crate) fn decode(body: &[u8]) -> Result<ServeConfig, String> {
    let j = gojson::decode_first(body)?;
    let mut d = Dec::default();
    let mut out = ServeConfig::default();
    out.decode(&mut d, &Ctx::default(), &j);
    d.finish().map(|()| out)
}

/// Decodes a map of struct pointers: a `null` member is a nil pointer; each member
/// starts from the zero value (Go reuses no map element).
fn decode_map<T: Default>(
    d: &mut Dec,
    ctx: &Ctx,
    j: &J,
    go_type: &str,
    out: &mut Map<T>,
    mut key: impl FnMut(&mut Dec, &str) -> Option<String>,
    mut elem: impl FnMut(&mut T, &mut Dec, &J),
) {
    let Some(members) = d.map(ctx, j, go_type) else {
        if *j == J::Null {
            out.clear();
        }
        return;
    };
    for (k, v) in members {
        let value = (*v != J::Null).then(|| {
            let mut e = T::default();
            elem(&mut e, d, v);
            e
        });
        if let Some(k) = key(d, k) {
            out.insert(k, value);
        }
    }
}

/// `uint16` map keys: `strconv.ParseUint`, decoded after the value like Go does.
fn port_key(ctx: &Ctx) -> impl FnMut(&mut Dec, &str) -> Option<String> + '_ {
    move |d, k| match k.parse::<u16>() {
        Ok(p) if k.bytes().all(|b| b.is_ascii_digit()) => Some(p.to_string()),
        _ => {
            d.type_error(ctx, &format!("number {k}"), "uint16");
            None
        }
    }
}

fn string_key(_: &mut Dec, k: &str) -> Option<String> {
    Some(k.to_owned())
}

impl ServeConfig {
    fn decode(&mut self, d: &mut Dec, ctx: &Ctx, j: &J) {
        const NAMES: &[&str] = &["TCP", "Web", "Services", "AllowFunnel", "Foreground"];
        let Some(fields) = d.fields(ctx, j, "ipn.ServeConfig", NAMES) else { return };
        for (name, v) in fields {
            let c = ctx.field("ServeConfig", name);
            match name {
                "TCP" => decode_tcp(d, &c, v, &mut self.tcp),
                "Web" => decode_web(d, &c, v, &mut self.web),
                "Services" => decode_map(
                    d,
                    &c,
                    v,
                    "map[tailcfg.ServiceName]*ipn.ServiceConfig",
                    &mut self.services,
                    string_key,
                    |s: &mut ServiceConfig, d, v| s.decode(d, &c, v),
                ),
                "AllowFunnel" => {
                    let Some(members) = d.map(&c, v, "map[ipn.HostPort]bool") else {
                        if *v == J::Null {
                            self.allow_funnel.clear();
                        }
                        continue;
                    };
                    for (k, b) in members {
                        let mut on = false;
                        d.bool(&c, b, &mut on);
                        self.allow_funnel.insert(k.clone(), on);
                    }
                }
                _ => decode_map(
                    d,
                    &c,
                    v,
                    "map[string]*ipn.ServeConfig",
                    &mut self.foreground,
                    string_key,
                    |s: &mut ServeConfig, d, v| s.decode(d, &c, v),
                ),
            }
        }
    }

    /// `json.Marshal` of the config, with Go's HTML escaping.
    pub(crate) fn to_json(&self) -> String {
        gofmt::to_go_json_compact(self)
    }

    /// The stored config as a plain JSON value (for tests).
    pub(crate) fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Some map holds a `null` (nil pointer) value, which `HasPathHandler` or
    /// `IsServingUnixAny` dereferences: a panic in the real handler.
    pub(crate) fn has_nil(&self) -> bool {
        let web_nil = |web: &Map<WebServerConfig>| {
            web.values().any(|w| w.as_ref().is_none_or(|w| w.handlers.iter().flatten().any(|(_, h)| h.is_none())))
        };
        self.tcp.values().any(Option::is_none)
            || web_nil(&self.web)
            || self
                .services
                .values()
                .any(|s| s.as_ref().is_none_or(|s| s.tcp.values().any(Option::is_none) || web_nil(&s.web)))
            || self.foreground.values().any(|f| f.as_ref().is_none_or(ServeConfig::has_nil))
    }

    fn handlers(&self) -> impl Iterator<Item = &HttpHandler> {
        let services = self.services.values().flatten().flat_map(|s| s.web.values());
        self.web
            .values()
            .chain(services)
            .flatten()
            .flat_map(|w| w.handlers.iter().flatten())
            .filter_map(|(_, h)| h.as_ref())
    }

    fn port_handlers(&self) -> impl Iterator<Item = &TcpPortHandler> {
        let services = self.services.values().flatten().flat_map(|s| s.tcp.values());
        self.tcp.values().chain(services).flatten()
    }

    /// `HasPathHandler() || IsServingUnixAny()`: only root, or an operator who may run
    /// `sudo tailscale`, may post such a config.
    pub(crate) fn needs_admin(&self) -> bool {
        self.handlers().any(|h| !h.path.is_empty() || h.proxy.starts_with("unix:"))
            || self.port_handlers().any(|p| p.tcp_forward.starts_with("unix:"))
            || self.foreground.values().flatten().any(ServeConfig::needs_admin)
    }

    /// The `svc:NAME` keys of `Services`.
    pub(crate) fn service_names(&self) -> impl Iterator<Item = &String> {
        self.services.keys()
    }

    /// `IsFunnelOn`.
    pub(crate) fn is_funnel_on(&self) -> bool {
        self.allow_funnel.values().any(|b| *b) || self.foreground.values().flatten().any(ServeConfig::is_funnel_on)
    }

    /// What `reloadServeConfigLocked` keeps: foreground configs of live IPN-bus sessions only.
    pub(crate) fn prune_foreground(&mut self, live: &HashSet<String>) {
        self.foreground.retain(|session, _| live.contains(session));
    }

    fn foreground_tcp(&self, port: &str) -> Option<&TcpPortHandler> {
        self.foreground.values().flatten().find_map(|f| f.tcp.get(port)?.as_ref())
    }

    /// `FindTCP`: foreground sessions first, then the background config.
    fn find_tcp(&self, port: &str) -> Option<&TcpPortHandler> {
        self.foreground_tcp(port).or_else(|| self.tcp.get(port)?.as_ref())
    }
}

fn decode_tcp(d: &mut Dec, ctx: &Ctx, j: &J, out: &mut Map<TcpPortHandler>) {
    decode_map(d, ctx, j, "map[uint16]*ipn.TCPPortHandler", out, port_key(ctx), |h: &mut TcpPortHandler, d, v| {
        h.decode(d, ctx, v)
    });
}

fn decode_web(d: &mut Dec, ctx: &Ctx, j: &J, out: &mut Map<WebServerConfig>) {
    decode_map(d, ctx, j, "map[ipn.HostPort]*ipn.WebServerConfig", out, string_key, |w: &mut WebServerConfig, d, v| {
        w.decode(d, ctx, v)
    });
}

impl ServiceConfig {
    fn decode(&mut self, d: &mut Dec, ctx: &Ctx, j: &J) {
        let Some(fields) = d.fields(ctx, j, "ipn.ServiceConfig", &["TCP", "Web", "Tun"]) else { return };
        for (name, v) in fields {
            let c = ctx.field("ServiceConfig", name);
            match name {
                "TCP" => decode_tcp(d, &c, v, &mut self.tcp),
                "Web" => decode_web(d, &c, v, &mut self.web),
                _ => d.bool(&c, v, &mut self.tun),
            }
        }
    }
}

impl TcpPortHandler {
    fn decode(&mut self, d: &mut Dec, ctx: &Ctx, j: &J) {
        const NAMES: &[&str] = &["HTTPS", "HTTP", "TCPForward", "TerminateTLS", "ProxyProtocol"];
        let Some(fields) = d.fields(ctx, j, "ipn.TCPPortHandler", NAMES) else { return };
        for (name, v) in fields {
            let c = ctx.field("TCPPortHandler", name);
            match name {
                "HTTPS" => d.bool(&c, v, &mut self.https),
                "HTTP" => d.bool(&c, v, &mut self.http),
                "TCPForward" => d.string(&c, v, "string", &mut self.tcp_forward),
                "TerminateTLS" => d.string(&c, v, "string", &mut self.terminate_tls),
                _ => d.int(&c, v, &mut self.proxy_protocol),
            }
        }
    }

    /// `serveTypeFromPortHandler`, as its `String()`.
    fn serve_type(&self) -> &'static str {
        if self.http {
            "http"
        } else if self.https {
            "https"
        } else if !self.terminate_tls.is_empty() {
            "tls-terminated-tcp"
        } else if !self.tcp_forward.is_empty() {
            "tcp"
        } else {
            "unknownServeType"
        }
    }
}

impl WebServerConfig {
    fn decode(&mut self, d: &mut Dec, ctx: &Ctx, j: &J) {
        let Some(fields) = d.fields(ctx, j, "ipn.WebServerConfig", &["Handlers"]) else { return };
        for (_, v) in fields {
            let c = ctx.field("WebServerConfig", "Handlers");
            if *v == J::Null {
                self.handlers = None;
                continue;
            }
            let handlers = self.handlers.get_or_insert_with(BTreeMap::new);
            decode_map(d, &c, v, "map[string]*ipn.HTTPHandler", handlers, string_key, |h: &mut HttpHandler, d, v| {
                h.decode(d, &c, v)
            });
        }
    }
}

impl HttpHandler {
    fn decode(&mut self, d: &mut Dec, ctx: &Ctx, j: &J) {
        const NAMES: &[&str] = &["Path", "Proxy", "Text", "AcceptAppCaps", "Redirect"];
        let Some(fields) = d.fields(ctx, j, "ipn.HTTPHandler", NAMES) else { return };
        for (name, v) in fields {
            let c = ctx.field("HTTPHandler", name);
            match name {
                "Path" => d.string(&c, v, "string", &mut self.path),
                "Proxy" => d.string(&c, v, "string", &mut self.proxy),
                "Text" => d.string(&c, v, "string", &mut self.text),
                "AcceptAppCaps" => d.strings(&c, v, "peercap.Cap", &mut self.accept_app_caps),
                _ => d.string(&c, v, "string", &mut self.redirect),
            }
        }
    }
}

/// `validateServeConfigUpdate(existing, incoming)`; Go walks maps in random order,
/// this walks them sorted. Errors are Go's texts (the caller prefixes `updating config: `).
pub(crate) fn validate_update(existing: Option<&ServeConfig>, incoming: &ServeConfig) -> Result<(), String> {
    let services = || incoming.services.iter().filter_map(|(n, s)| Some((n, s.as_ref()?)));
    for (name, svc) in services() {
        if svc.tun && (!svc.tcp.is_empty() || !svc.web.is_empty()) {
            return Err(format!("cannot configure TUN mode in combination with TCP or web handlers for {name}"));
        }
    }
    let Some(existing) = existing else { return Ok(()) };
    for (session, fg) in incoming.foreground.iter().filter_map(|(k, f)| Some((k, f.as_ref()?))) {
        if existing.foreground.contains_key(session) {
            continue;
        }
        let ports = fg.tcp.keys().chain(fg.foreground.values().flatten().flat_map(|f| f.tcp.keys()));
        if let Some(port) = ports.into_iter().find(|p| existing.find_tcp(p).is_some()) {
            return Err(format!("listener already exists for port {port}"));
        }
    }
    if let Some(port) = incoming.tcp.keys().find(|p| existing.foreground_tcp(p).is_some()) {
        return Err(format!("foreground listener already exists for port {port}"));
    }
    for (port, h) in incoming.tcp.iter().filter_map(|(p, h)| Some((p, h.as_ref()?))) {
        if let Some(old) = existing.find_tcp(port)
            && old.serve_type() != h.serve_type()
        {
            return Err(format!(
                "want to serve {}, but port {port} is already serving {}",
                gofmt::quote(h.serve_type()),
                gofmt::quote(old.serve_type())
            ));
        }
    }
    for (name, svc) in services() {
        let Some(Some(old)) = existing.services.get(name) else { continue };
        for (port, h) in svc.tcp.iter().filter_map(|(p, h)| Some((p, h.as_ref()?))) {
            if let Some(Some(prev)) = old.tcp.get(port)
                && prev.serve_type() != h.serve_type()
            {
                return Err(format!(
                    "want to serve {}, but port {port} is already serving {} for {name}",
                    gofmt::quote(h.serve_type()),
                    gofmt::quote(prev.serve_type())
                ));
            }
        }
        if svc.tun && (!old.tcp.is_empty() || !old.web.is_empty()) {
            return Err(format!("cannot turn on TUN mode with existing TCP or web handlers for {name}"));
        }
        if (!svc.tcp.is_empty() || !svc.web.is_empty()) && old.tun {
            return Err(format!("cannot add TCP or web handlers as TUN mode is enabled for {name}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(body: &str) -> ServeConfig {
        decode(body.as_bytes()).expect("decodes")
    }

    #[test]
    fn stored_form_is_go_marshal_of_the_typed_struct() {
        let c = ok(r#"{"services":{"svc:a":{"tcp":{"0443":{"TCPForward":"127.0.0.1:8443","HTTPS":false,
            "ProxyProtocol":2,"Extra":1}},"Tun":false}},"TCP":{"80":{"HTTP":true},"443":{"HTTPS":true}},
            "Web":{"x:443":{"Handlers":{"/":{"Proxy":"http://127.0.0.1:3000/<a>"}}},"y:443":{}},"Unknown":[1]}"#);
        assert_eq!(
            c.to_json(),
            r#"{"TCP":{"443":{"HTTPS":true},"80":{"HTTP":true}},"Web":{"x:443":{"Handlers":{"/":{"Proxy":"http://127.0.0.1:3000/\u003ca\u003e"}}},"y:443":{"Handlers":null}},"Services":{"svc:a":{"TCP":{"443":{"TCPForward":"127.0.0.1:8443","ProxyProtocol":2}}}}}"#
        );
        assert_eq!(ok("null").to_json(), "{}");
        assert_eq!(ok(r#"{"TCP":{}}"#).to_json(), "{}");
    }

    #[test]
    fn wrong_types_are_go_unmarshal_errors() {
        let cases = [
            (
                r#"{"TCP":{"443":{"TCPForward":5}}}"#,
                "number into Go struct field TCPPortHandler.TCP.TCPForward of type string",
            ),
            (
                r#"{"Services":{"svc:a":{"TCP":{"443":{"ProxyProtocol":"2"}}}}}"#,
                "string into Go struct field TCPPortHandler.Services.TCP.ProxyProtocol of type int",
            ),
            (r#"{"TCP":{"abc":{}}}"#, "number abc into Go struct field ServeConfig.TCP of type uint16"),
            (r#"{"TCP":{"70000":{}}}"#, "number 70000 into Go struct field ServeConfig.TCP of type uint16"),
            (r#"{"TCP":[1]}"#, "array into Go struct field ServeConfig.TCP of type map[uint16]*ipn.TCPPortHandler"),
            (r#"{"TCP":{"443":5}}"#, "number into Go struct field ServeConfig.TCP of type ipn.TCPPortHandler"),
            (
                r#"{"Web":{"a:443":{"Handlers":{"/":{"AcceptAppCaps":[1]}}}}}"#,
                "number into Go struct field HTTPHandler.Web.Handlers.AcceptAppCaps of type peercap.Cap",
            ),
            (r#"{"AllowFunnel":{"a:443":"yes"}}"#, "string into Go struct field ServeConfig.AllowFunnel of type bool"),
            (
                r#"{"Services":{"svc:a":{"Tun":1}}}"#,
                "number into Go struct field ServiceConfig.Services.Tun of type bool",
            ),
            (r#"[]"#, "array into Go value of type ipn.ServeConfig"),
        ];
        for (body, want) in cases {
            assert_eq!(decode(body.as_bytes()).unwrap_err(), format!("json: cannot unmarshal {want}"), "{body}");
        }
        // The first error in document order wins; the value is decoded before its key.
        let e = decode(br#"{"TCP":{"x":{"HTTP":"no"}},"Web":5}"#).unwrap_err();
        assert!(e.contains("TCPPortHandler.TCP.HTTP of type bool"), "{e}");
    }

    #[test]
    fn nil_pointers_and_the_admin_rule() {
        assert!(ok(r#"{"TCP":{"443":null}}"#).has_nil());
        assert!(ok(r#"{"Services":{"svc:a":null}}"#).has_nil());
        assert!(ok(r#"{"Web":{"a:443":{"Handlers":{"/":null}}}}"#).has_nil());
        assert!(!ok(r#"{"Web":{"a:443":{"Handlers":null}}}"#).has_nil());
        assert!(ok(r#"{"Web":{"a:443":{"Handlers":{"/":{"Path":"/srv"}}}}}"#).needs_admin());
        assert!(ok(r#"{"Services":{"svc:a":{"TCP":{"443":{"TCPForward":"unix:/run/a.sock"}}}}}"#).needs_admin());
        assert!(ok(r#"{"Foreground":{"s":{"Web":{"a:443":{"Handlers":{"/":{"Proxy":"unix:/a"}}}}}}}"#).needs_admin());
        assert!(!ok(r#"{"Services":{"svc:a":{"TCP":{"443":{"TCPForward":"127.0.0.1:1"}}}}}"#).needs_admin());
    }

    #[test]
    fn update_rules_of_validate_serve_config_update() {
        let tun = ok(r#"{"Services":{"svc:a":{"Tun":true,"TCP":{"443":{"TCPForward":"127.0.0.1:1"}}}}}"#);
        let e = validate_update(None, &tun).unwrap_err();
        assert_eq!(e, "cannot configure TUN mode in combination with TCP or web handlers for svc:a");
        let https = ok(r#"{"Services":{"svc:a":{"TCP":{"443":{"HTTPS":true}}}},"TCP":{"443":{"HTTPS":true}}}"#);
        let tcp = ok(r#"{"Services":{"svc:a":{"TCP":{"443":{"TCPForward":"127.0.0.1:1"}}}}}"#);
        assert_eq!(
            validate_update(Some(&https), &tcp).unwrap_err(),
            r#"want to serve "tcp", but port 443 is already serving "https" for svc:a"#
        );
        let top = ok(r#"{"TCP":{"443":{"TCPForward":"127.0.0.1:1"}}}"#);
        assert_eq!(
            validate_update(Some(&https), &top).unwrap_err(),
            r#"want to serve "tcp", but port 443 is already serving "https""#
        );
        assert!(validate_update(None, &tcp).is_ok());
        assert!(validate_update(Some(&tcp), &tcp).is_ok());
        let on = ok(r#"{"Services":{"svc:a":{"Tun":true}}}"#);
        assert_eq!(
            validate_update(Some(&tcp), &on).unwrap_err(),
            "cannot turn on TUN mode with existing TCP or web handlers for svc:a"
        );
        assert_eq!(
            validate_update(Some(&on), &tcp).unwrap_err(),
            "cannot add TCP or web handlers as TUN mode is enabled for svc:a"
        );
        let fg = ok(r#"{"Foreground":{"s1":{"TCP":{"443":{"HTTPS":true}}}}}"#);
        assert_eq!(validate_update(Some(&https), &fg).unwrap_err(), "listener already exists for port 443");
        assert_eq!(validate_update(Some(&fg), &https).unwrap_err(), "foreground listener already exists for port 443");
    }
}

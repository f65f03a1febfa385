//! Pure edits of tailscaled's serve config (`ipn.ServeConfig` JSON): the handlers
//! snirouter manages per service, `Services["svc:NAME"].TCP["443"]` (to the router) and
//! one per `tcp` port (straight to an app).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde_json::{Map, Value, json};

use crate::error::Error;

/// The service port snirouter serves (`tcp:443`).
pub const SERVICE_PORT: u16 = 443;

/// The handler for every service: forward TCP to `target` with a PROXY v2 header.
pub fn desired_handler(target: &str) -> Value {
    json!({ "TCPForward": target, "ProxyProtocol": 2 })
}

/// The handler for a `tcp` port: forward to the app, with PROXY when asked for.
pub fn tcp_handler(port: &snirouter_config::TcpPort) -> Value {
    match port.proxy_protocol {
        Some(v) => json!({ "TCPForward": port.forward(), "ProxyProtocol": v }),
        None => json!({ "TCPForward": port.forward() }),
    }
}

/// The forward target: the first `[listen] proxy_protocol` address, with a wildcard IP
/// replaced by loopback (tailscaled dials it locally).
pub(crate) fn forward_target(config: &snirouter_config::Config) -> Result<String, Error> {
    let addr = *config.listen.proxy_protocol.first().ok_or(Error::NoProxyListener)?;
    if addr.port() == 0 {
        return Err(Error::EphemeralPort(addr));
    }
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(SocketAddr::new(ip, addr.port()).to_string())
}

/// `Services[service]` of a serve config, if present.
pub(crate) fn service_entry<'a>(cfg: &'a Value, service: &str) -> Option<&'a Value> {
    cfg.get("Services")?.get(service).filter(|v| !v.is_null())
}

/// `Services[service].TCP[port]`, if present.
pub fn handler_of<'a>(cfg: &'a Value, service: &str, port: u16) -> Option<&'a Value> {
    service_entry(cfg, service)?.get("TCP")?.get(port.to_string()).filter(|v| !v.is_null())
}

/// Whether the service runs in TUN mode (`{"Tun": true}`), where a TCP handler makes no sense.
pub(crate) fn is_tun(cfg: &Value, service: &str) -> bool {
    service_entry(cfg, service).and_then(|s| s.get("Tun")).and_then(Value::as_bool) == Some(true)
}

/// Handlers compared as Go would marshal them: zero-valued fields (`false`, `""`, `0`,
/// `null`, `{}`) are the same as absent ones (`omitempty`).
pub fn same_handler(a: &Value, b: &Value) -> bool {
    normalize(a) == normalize(b)
}

fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), normalize(v)))
                .filter(|(_, v)| !is_zero(v))
                .collect::<Map<String, Value>>(),
        ),
        other => other.clone(),
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
    }
}

/// An object at `key` of `parent`, created (or replacing a non-object such as `null`).
fn object_at<'a>(parent: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !parent.is_object() {
        *parent = Value::Object(Map::new());
    }
    let Value::Object(map) = parent else { unreachable!("just made an object") };
    let slot = map.entry(key.to_owned()).or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

/// Sets `Services[service].TCP[port] = handler`, keeping everything else.
pub(crate) fn set_handler(cfg: &mut Value, service: &str, port: u16, handler: Value) {
    let services = object_at(cfg, "Services");
    let entry = services.entry(service.to_owned()).or_insert_with(|| Value::Object(Map::new()));
    object_at(entry, "TCP").insert(port.to_string(), handler);
}

/// Removes `Services[service].TCP[port]`; then drops `TCP` if empty, the service entry
/// if nothing else is left in it, and `Services` if empty. Returns whether anything was removed.
pub(crate) fn remove_handler(cfg: &mut Value, service: &str, port: u16) -> bool {
    let Some(services) = cfg.get_mut("Services").and_then(Value::as_object_mut) else { return false };
    let Some(entry) = services.get_mut(service) else { return false };
    let Some(tcp) = entry.get_mut("TCP").and_then(Value::as_object_mut) else { return false };
    if tcp.remove(&port.to_string()).is_none() {
        return false;
    }
    if tcp.is_empty()
        && let Some(e) = entry.as_object_mut()
    {
        e.remove("TCP");
    }
    if is_zero(&normalize(entry)) {
        services.remove(service);
    }
    if services.is_empty()
        && let Some(root) = cfg.as_object_mut()
    {
        root.remove("Services");
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_and_remove_keep_everything_else() {
        let own = json!({
            "TCP": {"443": {"HTTPS": true}},
            "Web": {"storage.x.ts.net:443": {"Handlers": {"/": {"Proxy": "http://127.0.0.1:9"}}}},
            "Services": {"svc:other": {"TCP": {"443": {"HTTPS": true}}}, "svc:grafana": {"TCP": {"80": {"HTTP": true}}}}
        });
        let mut cfg = own.clone();
        set_handler(&mut cfg, "svc:grafana", 443, desired_handler("127.0.0.1:8443"));
        set_handler(&mut cfg, "svc:new", 443, desired_handler("127.0.0.1:8443"));
        set_handler(&mut cfg, "svc:new", 22, json!({"TCPForward": "127.0.0.1:2222"}));
        assert_eq!(handler_of(&cfg, "svc:new", 443), Some(&desired_handler("127.0.0.1:8443")));
        assert_eq!(handler_of(&cfg, "svc:new", 22), Some(&json!({"TCPForward": "127.0.0.1:2222"})));
        assert_eq!(cfg["Services"]["svc:grafana"]["TCP"]["80"], json!({"HTTP": true}));
        assert!(remove_handler(&mut cfg, "svc:grafana", 443));
        assert!(remove_handler(&mut cfg, "svc:new", 443));
        assert!(!remove_handler(&mut cfg, "svc:new", 443));
        assert!(remove_handler(&mut cfg, "svc:new", 22));
        assert_eq!(cfg, own);

        let mut cfg = json!({});
        set_handler(&mut cfg, "svc:a", 443, desired_handler("127.0.0.1:1"));
        assert!(remove_handler(&mut cfg, "svc:a", 443));
        assert_eq!(cfg, json!({}));
        let mut null = Value::Null;
        set_handler(&mut null, "svc:a", 443, desired_handler("127.0.0.1:1"));
        assert_eq!(null["Services"]["svc:a"]["TCP"]["443"]["ProxyProtocol"], 2);
    }

    #[test]
    fn handler_equality_ignores_zero_values() {
        let want = desired_handler("127.0.0.1:8443");
        assert!(same_handler(
            &want,
            &json!({"TCPForward": "127.0.0.1:8443", "ProxyProtocol": 2, "HTTPS": false, "TerminateTLS": ""})
        ));
        assert!(!same_handler(&want, &json!({"TCPForward": "127.0.0.1:8443"})));
        assert!(!same_handler(&want, &json!({"HTTPS": true})));
        assert!(is_tun(&json!({"Services": {"svc:a": {"Tun": true}}}), "svc:a"));
    }
}

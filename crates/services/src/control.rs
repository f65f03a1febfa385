//! The Tailscale control API, as far as Tailscale Services need it (reference §3):
//! OAuth client-credentials token, get/list/put services, and a service's hosts.

use std::time::{Duration, Instant};

use http::{Method, header};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use snirouter_config::TailscaleApi;
use tokio::sync::Mutex;

use crate::error::Error;
use crate::http::Client;

/// Deadline for one API request.
const API_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a token is used when its answer has no `expires_in`.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// A token is replaced this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// A service definition (`VIPServiceInfo`). Unknown fields (`displayName`, `annotations`,
/// …) are kept so that a read-modify-write does not drop them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// `svc:NAME`.
    pub name: String,
    /// The VIPs, IPv4 then IPv6; empty before creation (then auto-assigned).
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_default")]
    pub addrs: Vec<String>,
    /// Free text.
    #[serde(default, deserialize_with = "null_default")]
    pub comment: String,
    /// `tcp:443`, … or `do-not-validate`.
    #[serde(default, deserialize_with = "null_default")]
    pub ports: Vec<String>,
    /// Service tags, `tag:NAME`.
    #[serde(default, deserialize_with = "null_default")]
    pub tags: Vec<String>,
    /// Every other field, passed through unchanged.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

fn null_default<'de, D: serde::Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl ServiceInfo {
    /// Whether the definition accepts a host that serves TCP `port`.
    pub fn allows_tcp(&self, port: u16) -> bool {
        self.ports.iter().any(|p| p == "do-not-validate") || snirouter_localapi::ports_allow_tcp(&self.ports, port)
    }
}

/// One host of a service (`ServiceHostInfo`). The API documents `stableNodeID` but
/// answers `nodeId`; both are accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceHost {
    /// The host's stable node ID.
    pub node_id: String,
    /// `not-approved`, `approved:auto` or `approved:manual` (empty if not given).
    pub approval_level: String,
    /// The host's configuration state as reported (e.g. `ready`).
    pub configured: String,
}

impl ServiceHost {
    fn from_json(v: &Value) -> Option<ServiceHost> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let node_id = s("nodeId").or_else(|| s("stableNodeID")).or_else(|| s("nodeID"))?;
        Some(ServiceHost {
            node_id,
            approval_level: s("approvalLevel").unwrap_or_default(),
            configured: s("configured").unwrap_or_default(),
        })
    }

    /// `true` for `approved:auto` and `approved:manual`.
    pub fn approved(&self) -> bool {
        self.approval_level.starts_with("approved")
    }
}

/// A control API client authenticated with an OAuth client (client-credentials grant).
pub struct ControlClient {
    http: Client,
    base: String,
    tailnet: String,
    client_id: String,
    client_secret: String,
    /// The access token and when to stop using it.
    token: Mutex<Option<(String, Instant)>>,
    collection: Mutex<Option<&'static str>>,
}

impl std::fmt::Debug for ControlClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlClient")
            .field("base", &self.base)
            .field("tailnet", &self.tailnet)
            .finish_non_exhaustive()
    }
}

impl ControlClient {
    /// A client for `[tailscale.api]`, reading the id and secret from their files.
    pub fn from_config(api: &TailscaleApi) -> Result<ControlClient, Error> {
        let read = |what: &'static str, path: &std::path::Path| {
            std::fs::read_to_string(path).map(|s| s.trim().to_owned()).map_err(|source| Error::Credentials {
                what,
                path: path.to_owned(),
                source,
            })
        };
        let id = read("client id", &api.client_id_file)?;
        let secret = read("client secret", &api.client_secret_file)?;
        for (what, v, path) in
            [("client id", &id, &api.client_id_file), ("client secret", &secret, &api.client_secret_file)]
        {
            if v.is_empty() {
                return Err(Error::Credentials {
                    what,
                    path: path.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, "the file is empty"),
                });
            }
        }
        ControlClient::new(&api.base_url, &api.tailnet, &id, &secret)
    }

    /// Whether this client is still the one `api` describes: same base URL and tailnet,
    /// and credential files that still hold its id and secret (a rotated secret needs a
    /// new client).
    pub fn matches(&self, api: &TailscaleApi) -> bool {
        let read = |path: &std::path::Path| std::fs::read_to_string(path).map(|s| s.trim().to_owned()).ok();
        api.base_url.trim_end_matches('/') == self.base
            && api.tailnet == self.tailnet
            && read(&api.client_id_file).is_some_and(|id| id == self.client_id)
            && read(&api.client_secret_file).is_some_and(|secret| secret == self.client_secret)
    }

    /// A client for `base_url` (`https://api.tailscale.com`), tailnet (`-`) and credentials.
    pub fn new(base_url: &str, tailnet: &str, client_id: &str, client_secret: &str) -> Result<ControlClient, Error> {
        let http = Client::new(API_TIMEOUT)
            .map_err(|detail| Error::Transport { what: "building the API client".to_owned(), detail })?;
        Ok(ControlClient {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            tailnet: tailnet.to_owned(),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            token: Mutex::new(None),
            collection: Mutex::new(None),
        })
    }

    /// `POST /api/v2/oauth/token`, reused until a minute before its `expires_in` (one
    /// hour from Tailscale), so a client kept by the daemon does not mint one per call.
    async fn token(&self) -> Result<String, Error> {
        let mut cached = self.token.lock().await;
        if let Some((t, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(t.clone());
        }
        let what = "POST /api/v2/oauth/token".to_owned();
        let form = format!(
            "client_id={}&client_secret={}&grant_type=client_credentials",
            form_escape(&self.client_id),
            form_escape(&self.client_secret)
        );
        let url = format!("{}/api/v2/oauth/token", self.base);
        let reply = self
            .http
            .send(Method::POST, &url, &[], Some(("application/x-www-form-urlencoded", form.into_bytes())))
            .await
            .map_err(|detail| Error::Transport { what: what.clone(), detail })?;
        if reply.status != 200 {
            return Err(Error::Api { what, status: reply.status, message: error_message(&reply.body) });
        }
        let v: Value = serde_json::from_slice(&reply.body)
            .map_err(|e| Error::Transport { what: what.clone(), detail: format!("unreadable token answer: {e}") })?;
        let token = v
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Transport { what, detail: "the token answer has no access_token".to_owned() })?
            .to_owned();
        let lifetime = v.get("expires_in").and_then(Value::as_u64).map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
        *cached = Some((token.clone(), Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN)));
        Ok(token)
    }

    /// One authenticated call; returns status and parsed JSON body (`Null` when empty).
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<(u16, Value, String), Error> {
        let what = format!("{method} {path}");
        let token = self.token().await?;
        let url = format!("{}{path}", self.base);
        let body = body.map(|v| ("application/json", serde_json::to_vec(v).unwrap_or_default()));
        let reply = self
            .http
            .send(method, &url, &[(header::AUTHORIZATION, format!("Bearer {token}"))], body)
            .await
            .map_err(|detail| Error::Transport { what: what.clone(), detail })?;
        tracing::debug!(request = %what, status = reply.status, "control API");
        if !(200..300).contains(&reply.status) {
            return Ok((reply.status, Value::Null, error_message(&reply.body)));
        }
        let v = if reply.body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&reply.body)
                .map_err(|e| Error::Transport { what, detail: format!("unreadable JSON answer: {e}") })?
        };
        Ok((reply.status, v, String::new()))
    }

    fn path(&self, collection: &str, rest: &str) -> String {
        format!("/api/v2/tailnet/{}/{collection}{rest}", self.tailnet)
    }

    /// Which collection this API serves: `services` (documented), or `vip-services` when
    /// `GET …/services` is a 404.
    async fn collection(&self) -> Result<&'static str, Error> {
        let mut cached = self.collection.lock().await;
        if let Some(c) = *cached {
            return Ok(c);
        }
        let path = self.path("services", "");
        let (status, _, message) = self.call(Method::GET, &path, None).await?;
        let chosen = match status {
            200..=299 => "services",
            404 => {
                tracing::info!("control API has no /services collection; using /vip-services");
                "vip-services"
            }
            _ => return Err(Error::Api { what: format!("GET {path}"), status, message }),
        };
        *cached = Some(chosen);
        Ok(chosen)
    }

    /// Every service defined in the tailnet.
    pub async fn list_services(&self) -> Result<Vec<ServiceInfo>, Error> {
        let path = self.path(self.collection().await?, "");
        let (status, v, message) = self.call(Method::GET, &path, None).await?;
        if status != 200 {
            return Err(Error::Api { what: format!("GET {path}"), status, message });
        }
        let list = v.get("vipServices").or_else(|| v.get("services")).cloned().unwrap_or(Value::Array(Vec::new()));
        serde_json::from_value::<Option<Vec<ServiceInfo>>>(list)
            .map(Option::unwrap_or_default)
            .map_err(|e| Error::Transport { what: format!("GET {path}"), detail: format!("unexpected answer: {e}") })
    }

    /// `GET …/services/svc:NAME`; `None` when it is not defined (404).
    pub async fn get_service(&self, service: &str) -> Result<Option<ServiceInfo>, Error> {
        let path = self.path(self.collection().await?, &format!("/{service}"));
        let (status, v, message) = self.call(Method::GET, &path, None).await?;
        match status {
            404 => Ok(None),
            200 => serde_json::from_value(v).map(Some).map_err(|e| Error::Transport {
                what: format!("GET {path}"),
                detail: format!("unexpected answer: {e}"),
            }),
            _ => Err(Error::Api { what: format!("GET {path}"), status, message }),
        }
    }

    /// `PUT …/services/svc:NAME` (create or update); returns the stored definition. For an
    /// update, pass the definition as read, with its `addrs`.
    pub async fn put_service(&self, info: &ServiceInfo) -> Result<ServiceInfo, Error> {
        let path = self.path(self.collection().await?, &format!("/{}", info.name));
        let body = serde_json::to_value(info).unwrap_or(Value::Null);
        let (status, v, message) = self.call(Method::PUT, &path, Some(&body)).await?;
        if !(200..300).contains(&status) {
            return Err(Error::Api { what: format!("PUT {path}"), status, message });
        }
        Ok(serde_json::from_value(v).unwrap_or_else(|_| info.clone()))
    }

    /// `GET …/services/svc:NAME/devices`: the hosts advertising it.
    pub async fn service_hosts(&self, service: &str) -> Result<Vec<ServiceHost>, Error> {
        let path = self.path(self.collection().await?, &format!("/{service}/devices"));
        let (status, v, message) = self.call(Method::GET, &path, None).await?;
        if status != 200 {
            return Err(Error::Api { what: format!("GET {path}"), status, message });
        }
        let hosts = v.get("hosts").and_then(Value::as_array).cloned().unwrap_or_default();
        Ok(hosts.iter().filter_map(ServiceHost::from_json).collect())
    }
}

/// `application/x-www-form-urlencoded` escaping.
fn form_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The API's error text: `message` (`{"message": ...}`), else the OAuth
/// `error_description`/`error`, else the raw body (trimmed, at most 500 bytes).
fn error_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        for key in ["message", "error_description", "error"] {
            if let Some(m) = v.get(key).and_then(Value::as_str).filter(|m| !m.is_empty()) {
                return m.to_owned();
            }
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    let mut end = text.len().min(500);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_messages() {
        assert_eq!(form_escape("tskey-client-a+b/c="), "tskey-client-a%2Bb%2Fc%3D");
        assert_eq!(error_message(br#"{"message":"tag not allowed"}"#), "tag not allowed");
        assert_eq!(error_message(br#"{"error":"invalid_client","error_description":"bad"}"#), "bad");
        assert_eq!(error_message(b"  gateway timeout \n"), "gateway timeout");
        assert_eq!(error_message(b""), "(empty body)");
    }

    #[test]
    fn ports_and_hosts() {
        let info = |ports: &[&str]| ServiceInfo {
            name: "svc:a".into(),
            addrs: vec![],
            comment: String::new(),
            ports: ports.iter().map(|s| s.to_string()).collect(),
            tags: vec![],
            extra: Default::default(),
        };
        assert!(info(&["tcp:443"]).allows_tcp(443));
        assert!(info(&["tcp:80", "tcp:400-500"]).allows_tcp(443));
        assert!(info(&["do-not-validate"]).allows_tcp(443));
        assert!(!info(&["tcp:80"]).allows_tcp(443));
        let h = ServiceHost::from_json(&serde_json::json!({"stableNodeID": "n1", "approvalLevel": "approved:manual"}));
        assert_eq!(h.as_ref().map(|h| h.node_id.as_str()), Some("n1"));
        assert!(h.is_some_and(|h| h.approved()));
        let h = ServiceHost::from_json(&serde_json::json!({"nodeId": "n2", "approvalLevel": "not-approved"}));
        assert!(h.is_some_and(|h| h.node_id == "n2" && !h.approved()));
        // Unknown fields survive a round trip.
        let v = serde_json::json!({"name": "svc:a", "addrs": ["100.1.2.3", "fd7a::1"], "ports": ["tcp:443"], "displayName": "A"});
        let i: ServiceInfo = serde_json::from_value(v.clone()).expect("parse");
        assert_eq!(serde_json::to_value(&i).expect("ser")["displayName"], "A");
    }
}

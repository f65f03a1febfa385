//! A simulated tailscaled LocalAPI server on a unix socket.
//!
//! [`SimTailscaled::start`] binds the socket (mode 0666, stale file removed)
//! and serves HTTP/1.1 with keep-alive in background tasks. Behaviour follows
//! `/work/shared/reference/tailscale-localapi.md` (§1.2 transport, §1.3
//! permissions, §2 the `cert/` endpoint, §3 status & friends) and
//! `tailscale-services.md` §2.4 (`serve-config`, `prefs`). The scenario is a
//! [`SimConfig`] that can be changed while running with [`SimTailscaled::update`].
//!
//! ## Scenario notes (where the simulator had to pick a behaviour)
//!
//! * **Outage** (`unavailable = true`): like a cleanly stopped tailscaled — the
//!   listener is dropped, the socket file is removed (new connects fail with
//!   `ENOENT`), and every open connection, including in-flight requests and
//!   `watch-ipn-bus` streams, is closed. Setting it back to `false` re-binds the
//!   socket synchronously inside `update`, so connects succeed as soon as
//!   `update` returns.
//! * **Issuance delay** (`first_issue_delay`) applies to *every* new issuance:
//!   first issuance, `min_validity`-forced renewal, expiry and background
//!   renewal. Cached answers are immediate.
//! * **Client disconnect** during issuance drops the request future (Go's
//!   cancelled context): nothing is issued or cached; the request is recorded
//!   with status `499`.
//! * **Rate limit**: `rate_limited = Some(d)` answers immediately (before the
//!   delay) with `429`, `Retry-After: <ceil secs>`; with `rate_limit_hangs` the
//!   request hangs until the client goes away (≤ v1.100 behaviour).
//! * **SetDNS failure** answers 500 after the issuance delay. **Read-only cert
//!   store** answers 500 after the delay; the certificate *was* issued by the
//!   (simulated) CA, so it appears in [`SimTailscaled::issued`] but is not cached —
//!   exactly how #17028 burns through Let's Encrypt limits.
//! * Only `Running` has a netmap; every other state is "signed out" in `status`
//!   and yields `no netmap available` from `cert/`.

mod api;
mod json;
mod serve_config;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::ca::TestCa;

fn typed_serve_config(v: &serde_json::Value) -> serve_config::ServeConfig {
    match serve_config::decode(v.to_string().as_bytes()) {
        Ok(c) => c,
        Err(e) => panic!("test serve config is not an ipn.ServeConfig: {e}"),
    }
}

/// Default `Tailscale-Version` (the 1.102.4 capture in the reference).
pub const DEFAULT_VERSION: &str = "1.102.4-t3caf7d9e7-g084ee3b64";
/// Default `Tailscale-Cap` capability version.
pub const DEFAULT_CAPVER: u32 = 145;

/// The scenario the simulated daemon plays. Every field can be changed while
/// running through [`SimTailscaled::update`].
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Node hostname (first DNS label), e.g. `storage`.
    pub hostname: String,
    /// Tailnet MagicDNS suffix, e.g. `bat-boa.ts.net`.
    pub magic_dns_suffix: String,
    /// `CurrentTailnet.Name` in status.
    pub tailnet_name: String,
    /// `Running`, `NeedsLogin`, `NeedsMachineAuth`, `Stopped`, `Starting`, `NoState`.
    pub backend_state: String,
    /// `nm.DNS.CertDomains`; `None` (or empty) is JSON `null` = HTTPS disabled.
    pub cert_domains: Option<Vec<String>>,
    /// Node tags (empty = user-owned node, which then gets a `KeyExpiry`).
    pub tags: Vec<String>,
    /// The node's Tailscale addresses.
    pub tailscale_ips: Vec<IpAddr>,
    /// Extra `Health` messages.
    pub health: Vec<String>,
    /// `Tailscale-Version` header / status `Version`.
    pub version: String,
    /// `Tailscale-Cap` header value.
    pub capver: u32,
    /// `false` makes `/localapi/v0/cert-domains` a 404 (daemons < 1.98).
    pub has_cert_domains_endpoint: bool,
    /// Node cap `dns-subdomain-resolve` (allows `*.<certdomain>`).
    pub subdomain_resolve: bool,
    /// Lifetime of newly issued certificates.
    pub cert_lifetime: Duration,
    /// Simulated ACME duration, applied to every new issuance.
    pub first_issue_delay: Duration,
    /// `None`: use the caller's real `SO_PEERCRED` uid; `Some(u)`: pretend.
    pub peer_uid: Option<u32>,
    /// The daemon's own uid (`None`: this process's uid). A non-root caller
    /// with this uid gets write access.
    pub daemon_uid: Option<u32>,
    /// `tailscale set --operator` uid (write access).
    pub operator_uid: Option<u32>,
    /// `sudo --list tailscale` succeeds for a non-root caller: with no operator set
    /// or as the operator, it may post serve configs with `Path` or `unix:` handlers
    /// (`connIsLocalAdmin`; otherwise 401).
    pub caller_can_sudo_tailscale: bool,
    /// `TS_PERMIT_CERT_UID` (cert-only access).
    pub permit_cert_uid: Option<u32>,
    /// `Some(retry_after)`: new issuance hits the Let's Encrypt rate limit.
    pub rate_limited: Option<Duration>,
    /// With `rate_limited`, hang until the client disconnects instead of 429.
    pub rate_limit_hangs: bool,
    /// Control refuses the ACME TXT record (SetDNS 500).
    pub setdns_fails: bool,
    /// Outage: socket removed, connections refused/closed (see module docs).
    pub unavailable: bool,
    /// The cert directory is read-only: issued certs cannot be stored.
    pub cert_store_readonly: bool,
    /// Services (`NAME` or `svc:NAME`) approved for this host; they appear in
    /// `Self.CapMap["service-host"]` with synthetic VIPs.
    pub approved_services: Vec<String>,
    /// Model control's CertDomains rule (an inference, see docs/notes/simulator-fidelity-1.103.md
    /// §5): `cert_domains` becomes the node's own name plus `NAME.<suffix>` for each service
    /// that is in `approved_services` *and* hosted here (in the serve config's `Services` or
    /// in `AdvertiseServices`), recomputed whenever one of those changes.
    pub derive_service_cert_domains: bool,
    /// `nm.DNS.ExtraRecords` as `(name, value)` (type A/AAAA): in `dns-config` and
    /// `status`. Whether control sends a service host its own services' records is not
    /// verified, so tests set them explicitly.
    pub extra_records: Vec<(String, String)>,
    /// Control's answer to `query-feature` (relayed verbatim). `None`: `{"Complete":true}`
    /// when HTTPS is on, else the observed "Serve is not enabled" text and enable URL.
    pub query_feature: Option<serde_json::Value>,
    /// tailscaled runs from a locked config file: serve-config POST fails.
    pub locked_config_file: bool,
    /// A prefs `PATCH` fails in `EditPrefsAs` with this message: 400 `{"Error": …}`
    /// (capital E, prefs' `resJSON`; serve-config errors use `error`).
    pub edit_prefs_error: Option<String>,
    /// Peers known to `whois` (and `status` with peers).
    pub peers: Vec<SimPeer>,
    /// The Services this node may reach, as control sends them in `Self.CapMap["services/…"]`
    /// (`tailcfg.ServiceDetails`): `svc:NAME` → the ports its definition lists (`tcp:443`).
    /// `GET /localapi/v0/services` (1.98+) lists them with their addresses. Whether a host
    /// may reach its own Services depends on the policy, so tests set them explicitly.
    pub visible_services: BTreeMap<String, Vec<String>>,
    /// Per-Service Serve byte counters `svc:NAME` → (inbound, outbound), in
    /// `/localapi/v0/usermetrics` from 1.102 on (the simulator forwards no traffic, so
    /// tests set them).
    pub serve_bytes: BTreeMap<String, (u64, u64)>,
    /// The simulated control plane this node reports its advertised services to (as
    /// tailscaled does through its Hostinfo): a service's `/devices` then lists this
    /// node while it advertises the service.
    pub control: Option<crate::control::ControlLink>,
}

/// A tailnet peer the simulated tailscaled knows: `whois` answers for its address and
/// `status` lists it. A user's node, or a tagged node (owned by `tagged-devices`).
#[derive(Debug, Clone, PartialEq)]
pub struct SimPeer {
    /// Its tailnet address.
    pub ip: IpAddr,
    /// The user's login name; `tagged-devices` for a tagged node.
    pub login: String,
    /// The user's display name.
    pub display_name: String,
    /// ACL tags (`tag:monitoring`); non-empty makes it a tagged node.
    pub tags: Vec<String>,
    /// Capabilities the tailnet policy grants it toward this node's own addresses:
    /// `whois` without `svc_name` (`PeerCaps(src)`), cap name → values.
    pub node_caps: BTreeMap<String, Vec<serde_json::Value>>,
    /// Capabilities granted toward a Tailscale Service (`svc:NAME`) this node hosts:
    /// `whois?svc_name=svc:NAME` or `dst_ip=<its VIP>` (`PeerCapsForService`), only while
    /// the service is approved here (it is in the node's `service-host` VIP map).
    pub service_caps: BTreeMap<String, BTreeMap<String, Vec<serde_json::Value>>>,
    /// Its hostname (`None`: `peer-N`); its stable node ID derives from it as the
    /// simulator's own does, so a `SimPeer::host("backup", …)` here is the same node as
    /// a simulated tailscaled whose `hostname` is `backup`.
    pub hostname: Option<String>,
    /// `Online` in `status` and `whois`.
    pub online: bool,
}

impl SimPeer {
    /// A node of the user `login`.
    pub fn user(ip: IpAddr, login: &str, display_name: &str) -> SimPeer {
        SimPeer {
            ip,
            login: login.to_owned(),
            display_name: display_name.to_owned(),
            tags: Vec::new(),
            node_caps: BTreeMap::new(),
            service_caps: BTreeMap::new(),
            hostname: None,
            online: true,
        }
    }

    /// Another tagged node called `hostname`, e.g. a second host of the same services.
    pub fn host(ip: IpAddr, hostname: &str, tags: &[&str]) -> SimPeer {
        SimPeer { hostname: Some(hostname.to_owned()), ..SimPeer::tagged(ip, tags) }
    }

    /// A tagged node (its user is `tagged-devices`).
    pub fn tagged(ip: IpAddr, tags: &[&str]) -> SimPeer {
        SimPeer {
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            ..SimPeer::user(ip, "tagged-devices", "tagged-devices")
        }
    }

    /// Grants `cap` with `value` toward the service `svc` (`svc:NAME` or `NAME`).
    pub fn with_service_cap(mut self, svc: &str, cap: &str, value: serde_json::Value) -> SimPeer {
        let svc = json::svc_name(svc);
        self.service_caps.entry(svc).or_default().entry(cap.to_owned()).or_default().push(value);
        self
    }

    /// Grants `cap` with `value` toward the node itself.
    pub fn with_node_cap(mut self, cap: &str, value: serde_json::Value) -> SimPeer {
        self.node_caps.entry(cap.to_owned()).or_default().push(value);
        self
    }

    /// Whether this is a tagged node.
    pub fn is_tagged(&self) -> bool {
        !self.tags.is_empty()
    }
}

impl SimConfig {
    /// A Running, tagged (`tag:storage`) node `storage.<suffix>` whose
    /// CertDomains are `storage.<suffix>` followed by `<name>.<suffix>` for
    /// each service, with those services approved.
    pub fn storage(magic_dns_suffix: &str, service_names: &[&str]) -> SimConfig {
        let mut domains = vec![format!("storage.{magic_dns_suffix}")];
        domains.extend(service_names.iter().map(|n| format!("{n}.{magic_dns_suffix}")));
        SimConfig {
            hostname: "storage".to_string(),
            magic_dns_suffix: magic_dns_suffix.to_string(),
            tailnet_name: "someone@example.com".to_string(),
            backend_state: "Running".to_string(),
            cert_domains: Some(domains),
            tags: vec!["tag:storage".to_string()],
            tailscale_ips: vec![
                IpAddr::from([100, 101, 102, 103]),
                "fd7a:115c:a1e0::a401:6667".parse().unwrap_or(IpAddr::from([0u16; 8])),
            ],
            health: vec![],
            version: DEFAULT_VERSION.to_string(),
            capver: DEFAULT_CAPVER,
            has_cert_domains_endpoint: true,
            subdomain_resolve: false,
            cert_lifetime: Duration::from_secs(90 * 24 * 3600),
            first_issue_delay: Duration::ZERO,
            peer_uid: None,
            daemon_uid: None,
            operator_uid: None,
            caller_can_sudo_tailscale: false,
            permit_cert_uid: None,
            rate_limited: None,
            rate_limit_hangs: false,
            setdns_fails: false,
            unavailable: false,
            cert_store_readonly: false,
            approved_services: service_names.iter().map(|s| s.to_string()).collect(),
            derive_service_cert_domains: false,
            // Each service's name → its VIPs, as if control published them to the host too.
            extra_records: service_names
                .iter()
                .enumerate()
                .flat_map(|(i, n)| json::service_vips(i).map(|ip| (format!("{n}.{magic_dns_suffix}"), ip)))
                .collect(),
            query_feature: None,
            locked_config_file: false,
            edit_prefs_error: None,
            peers: vec![],
            visible_services: BTreeMap::new(),
            serve_bytes: BTreeMap::new(),
            control: None,
        }
    }

    /// The node's FQDN without trailing dot (`storage.<suffix>`).
    pub fn fqdn(&self) -> String {
        json::fqdn(self)
    }
}

impl Default for SimConfig {
    /// `SimConfig::storage("tailnet-test.ts.net", &[])`.
    fn default() -> Self {
        SimConfig::storage("tailnet-test.ts.net", &[])
    }
}

/// One request the simulator answered (or that was abandoned).
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// When the request arrived.
    pub at: Instant,
    /// HTTP method.
    pub method: String,
    /// Raw request target (path and query as sent).
    pub path_and_query: String,
    /// The `Host` header (or absolute-form authority), if any.
    pub host: Option<String>,
    /// Response status; `499` if the client went away before an answer.
    pub status: u16,
}

/// One certificate the simulated CA issued (new issuance, not a cache hit).
#[derive(Clone, Debug)]
pub struct IssuedRecord {
    /// The requested domain (`*.x` for wildcards).
    pub domain: String,
    /// Hex serial of the leaf.
    pub serial: String,
    /// Leaf `notAfter`.
    pub not_after: SystemTime,
    /// When it was issued.
    pub at: Instant,
}

#[derive(Clone)]
pub(crate) struct CachedCert {
    pub key_pem: String,
    pub chain_pem: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub serial: String,
}

/// Events fanned out to `watch-ipn-bus` subscribers.
#[derive(Clone, Debug)]
pub(crate) enum BusEvent {
    State,
    NetMap,
    Prefs,
    /// The health state changed (a `tls-cert-pending` warning set or cleared).
    Health,
}

impl State {
    /// With `derive_service_cert_domains`, sets CertDomains as control would for what this
    /// host hosts and is approved for; `true` when they changed (a new netmap).
    pub(crate) fn refresh_cert_domains(&mut self) -> bool {
        if !self.cfg.derive_service_cert_domains {
            return false;
        }
        let mut hosted: HashSet<String> = self.prefs.advertise_services.iter().flatten().cloned().collect();
        hosted.extend(self.serve_config.iter().flat_map(|c| c.service_names()).cloned());
        let mut domains = vec![json::fqdn(&self.cfg)];
        for s in &self.cfg.approved_services {
            let svc = json::svc_name(s);
            if hosted.contains(&svc) {
                domains.push(format!("{}.{}", &svc["svc:".len()..], self.cfg.magic_dns_suffix));
            }
        }
        let changed = self.cfg.cert_domains.as_ref() != Some(&domains);
        self.cfg.cert_domains = Some(domains);
        changed
    }
}

pub(crate) struct State {
    pub cfg: SimConfig,
    pub cache: HashMap<String, CachedCert>,
    /// `None` until a config is stored (GET answers `null`).
    pub serve_config: Option<serve_config::ServeConfig>,
    pub prefs: json::Prefs,
    pub requests: Vec<RequestRecord>,
    pub issued: Vec<IssuedRecord>,
    pub renewing: HashSet<String>,
    /// Applied just before the next conditional serve-config POST, as if another client
    /// had written it first (so that POST fails with 412).
    pub serve_config_race: Option<serve_config::ServeConfig>,
    /// Session IDs of the live `watch-ipn-bus` streams (foreground serve configs of
    /// other sessions are dropped when a config is stored).
    pub bus_sessions: HashSet<String>,
    /// Domains whose first certificate is being fetched (`setCertPending`), and since when
    /// the set has been non-empty.
    pub pending_certs: std::collections::BTreeSet<String>,
    pub pending_since: Option<SystemTime>,
    listening: bool,
    stopped: bool,
}

enum Ctrl {
    Listen(std::os::unix::net::UnixListener),
    Stop,
    Shutdown,
}

pub(crate) struct Inner {
    socket_path: PathBuf,
    pub ca: TestCa,
    state: Mutex<State>,
    ctrl: mpsc::UnboundedSender<Ctrl>,
    kill: watch::Sender<u64>,
    pub bus: broadcast::Sender<BusEvent>,
    pub process_uid: u32,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Inner {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn cfg(&self) -> SimConfig {
        self.state().cfg.clone()
    }

    pub(crate) fn domain_lock(&self, domain: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut l = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        l.entry(domain.to_string()).or_default().clone()
    }

    fn go_down(&self, shutdown: bool) {
        let mut st = self.state();
        if st.stopped {
            return;
        }
        if st.listening {
            let _ = std::fs::remove_file(&self.socket_path);
            st.listening = false;
        }
        if shutdown {
            st.stopped = true;
        }
        drop(st);
        let _ = self.ctrl.send(if shutdown { Ctrl::Shutdown } else { Ctrl::Stop });
        self.kill.send_modify(|g| *g += 1);
    }

    fn go_up(&self) -> std::io::Result<()> {
        let mut st = self.state();
        if st.stopped || st.listening {
            return Ok(());
        }
        let l = bind_socket(&self.socket_path)?;
        st.listening = true;
        drop(st);
        let _ = self.ctrl.send(Ctrl::Listen(l));
        Ok(())
    }
}

fn bind_socket(path: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// A running simulated tailscaled. Dropping it stops serving (best effort);
/// prefer [`SimTailscaled::shutdown`].
pub struct SimTailscaled {
    inner: Arc<Inner>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SimTailscaled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimTailscaled").field("socket_path", &self.inner.socket_path).finish_non_exhaustive()
    }
}

impl SimTailscaled {
    /// Bind `socket_path` (removing a stale file, mode 0666) and start serving
    /// in the background. If `cfg.unavailable` is set, starts in an outage.
    pub async fn start(socket_path: impl AsRef<Path>, cfg: SimConfig) -> std::io::Result<SimTailscaled> {
        let socket_path = socket_path.as_ref().to_path_buf();
        let ca = tokio::task::spawn_blocking(TestCa::try_new)
            .await
            .map_err(std::io::Error::other)?
            .map_err(std::io::Error::other)?;
        let process_uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
        let (ctrl, ctrl_rx) = mpsc::unbounded_channel();
        let (kill, _) = watch::channel(0u64);
        let (bus, _) = broadcast::channel(64);
        let unavailable = cfg.unavailable;
        let inner = Arc::new(Inner {
            socket_path: socket_path.clone(),
            ca,
            state: Mutex::new(State {
                cfg,
                cache: HashMap::new(),
                serve_config: None,
                prefs: json::Prefs::new(),
                requests: vec![],
                issued: vec![],
                renewing: HashSet::new(),
                serve_config_race: None,
                bus_sessions: HashSet::new(),
                pending_certs: Default::default(),
                pending_since: None,
                listening: false,
                stopped: false,
            }),
            ctrl,
            kill,
            bus,
            process_uid,
            locks: Mutex::new(HashMap::new()),
        });
        inner.state().refresh_cert_domains();
        if !unavailable {
            inner.go_up()?;
        }
        let task = tokio::spawn(accept_loop(inner.clone(), ctrl_rx));
        tracing::debug!(path = %socket_path.display(), "simulated tailscaled started");
        Ok(SimTailscaled { inner, task: Some(task) })
    }

    /// The node's `StableID` (as `status` and the control API's `/devices` name it).
    pub fn stable_id(&self) -> String {
        json::ident(&self.inner.state().cfg.hostname).stable_id
    }

    /// The unix socket path.
    pub fn socket_path(&self) -> &Path {
        &self.inner.socket_path
    }

    /// The CA that signs every certificate this daemon hands out.
    pub fn ca(&self) -> &TestCa {
        &self.inner.ca
    }

    /// PEM of the CA root clients should trust.
    pub fn root_pem(&self) -> String {
        self.inner.ca.root_pem()
    }

    /// A snapshot of the current scenario.
    pub fn config(&self) -> SimConfig {
        self.inner.cfg()
    }

    /// Change the scenario while running. Outage transitions take effect
    /// before this returns; `watch-ipn-bus` subscribers get a line when the
    /// backend state or netmap-relevant fields (CertDomains, hostname, suffix,
    /// tags, approved services, addresses) change.
    pub fn update(&self, f: impl FnOnce(&mut SimConfig)) {
        let (old, new) = {
            let mut st = self.inner.state();
            let old = st.cfg.clone();
            f(&mut st.cfg);
            st.refresh_cert_domains();
            (old, st.cfg.clone())
        };
        if old.unavailable != new.unavailable {
            if new.unavailable {
                tracing::debug!("simulated tailscaled: outage on");
                self.inner.go_down(false);
            } else {
                tracing::debug!("simulated tailscaled: outage off");
                if let Err(e) = self.inner.go_up() {
                    tracing::error!(error = %e, "simulated tailscaled: re-binding the socket failed");
                }
            }
        }
        if old.backend_state != new.backend_state {
            let _ = self.inner.bus.send(BusEvent::State);
        }
        if old.cert_domains != new.cert_domains
            || old.hostname != new.hostname
            || old.magic_dns_suffix != new.magic_dns_suffix
            || old.tags != new.tags
            || old.approved_services != new.approved_services
            || old.tailscale_ips != new.tailscale_ips
            || old.subdomain_resolve != new.subdomain_resolve
            || old.backend_state != new.backend_state
        {
            let _ = self.inner.bus.send(BusEvent::NetMap);
        }
    }

    /// Every request answered so far, in arrival order of completion.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.inner.state().requests.clone()
    }

    /// Every certificate newly issued so far (cache hits are not listed).
    pub fn issued(&self) -> Vec<IssuedRecord> {
        self.inner.state().issued.clone()
    }

    /// Serial of the certificate currently cached for `domain`, if any.
    pub fn cached_serial(&self, domain: &str) -> Option<String> {
        self.inner.state().cache.get(domain).map(|c| c.serial.clone())
    }

    /// Forget all cached certificates (like wiping `/var/lib/tailscale/certs`).
    pub fn clear_cert_cache(&self) {
        self.inner.state().cache.clear();
    }

    /// The current serve config as stored (`null` until something was POSTed): the
    /// typed struct marshalled like Go, so empty and unknown fields are gone.
    pub fn serve_config(&self) -> serde_json::Value {
        self.inner.state().serve_config.as_ref().map_or(serde_json::Value::Null, |c| c.to_value())
    }

    /// Replace the serve config directly (as if another client had POSTed it).
    ///
    /// # Panics
    /// If `v` is not a valid `ipn.ServeConfig` (a mistake in the test).
    pub fn set_serve_config(&self, v: serde_json::Value) {
        self.inner.state().serve_config = Some(typed_serve_config(&v));
    }

    /// The `AdvertiseServices` pref (empty when unset).
    pub fn advertised_services(&self) -> Vec<String> {
        self.inner.state().prefs.advertise_services.clone().unwrap_or_default()
    }

    /// Set the `AdvertiseServices` pref directly (as if `tailscale serve advertise` ran).
    pub fn set_advertised_services(&self, services: &[&str]) {
        self.inner.state().prefs.advertise_services = Some(services.iter().map(|s| s.to_string()).collect());
        // tailscaled announces every change of prefs to its IPN bus watchers.
        let _ = self.inner.bus.send(BusEvent::Prefs);
    }

    /// Simulate one concurrent writer: the next serve-config POST that carries an
    /// `If-Match` finds the config already replaced by `v` (written between the caller's
    /// GET and its POST), so that POST fails with `412 etag mismatch`; `v` stays.
    ///
    /// # Panics
    /// If `v` is not a valid `ipn.ServeConfig` (a mistake in the test).
    pub fn race_next_serve_config_write(&self, v: serde_json::Value) {
        self.inner.state().serve_config_race = Some(typed_serve_config(&v));
    }

    /// Stop serving, close all connections and remove the socket file.
    pub async fn shutdown(mut self) {
        self.inner.go_down(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for SimTailscaled {
    fn drop(&mut self) {
        self.inner.go_down(true);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn accept_loop(inner: Arc<Inner>, mut ctrl_rx: mpsc::UnboundedReceiver<Ctrl>) {
    let mut listener: Option<tokio::net::UnixListener> = None;
    loop {
        enum Step {
            Ctrl(Option<Ctrl>),
            Accepted(std::io::Result<tokio::net::UnixStream>),
        }
        let step = match &listener {
            None => Step::Ctrl(ctrl_rx.recv().await),
            Some(l) => tokio::select! {
                biased;
                c = ctrl_rx.recv() => Step::Ctrl(c),
                a = l.accept() => Step::Accepted(a.map(|(s, _)| s)),
            },
        };
        match step {
            Step::Ctrl(Some(Ctrl::Listen(l))) => match tokio::net::UnixListener::from_std(l) {
                Ok(l) => listener = Some(l),
                Err(e) => tracing::error!(error = %e, "simulated tailscaled: cannot register listener"),
            },
            Step::Ctrl(Some(Ctrl::Stop)) => listener = None,
            Step::Ctrl(Some(Ctrl::Shutdown)) | Step::Ctrl(None) => break,
            Step::Accepted(Ok(stream)) => {
                let kill_rx = inner.kill.subscribe();
                tokio::spawn(api::serve_conn(inner.clone(), stream, kill_rx));
            }
            Step::Accepted(Err(e)) => {
                tracing::warn!(error = %e, "simulated tailscaled: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    tracing::debug!("simulated tailscaled: accept loop finished");
}

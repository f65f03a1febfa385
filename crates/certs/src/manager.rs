//! Fetching and renewing: one task per name, a shared bound on concurrent requests,
//! and one watcher that follows tailscaled's `CertDomains`.
//!
//! Guarantees, per name:
//!
//! * at most one request to tailscaled in flight (the task is sequential);
//! * a request is never cancelled early and re-sent in a loop — it may take as long
//!   as `request_timeout` (first issuance can take minutes; every cancelled attempt
//!   is a new ACME order), and a failed one is followed by exponential backoff;
//! * a 429 is followed by silence until its `Retry-After`;
//! * a name missing from `CertDomains` is not requested at all; the task sleeps
//!   until the watcher sees the list change (Tailscale Service approved, HTTPS
//!   enabled, daemon back) and then asks at once.
//!
//! Names never wait for each other: the only shared resource is a small semaphore
//! ([`ManagerOptions::concurrency`]), and one name failing does not touch the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use snirouter_localapi::{Error as LocalError, LocalClient};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::schedule::{self, Policy, Urgency};
use crate::{CertSource, CertStore, DiskCache, Origin, ServedCert};

/// Tuning for [`CertManager`].
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    /// How many names may be fetched at the same time.
    pub concurrency: usize,
    /// How long one certificate request may take (first issuance can take minutes).
    pub request_timeout: Duration,
    /// Renewal and backoff timing.
    pub policy: Policy,
    /// How often `CertDomains` is re-read even without a wake-up from the IPN bus.
    pub domains_poll: Duration,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        ManagerOptions {
            concurrency: 4,
            request_timeout: Duration::from_secs(600),
            policy: Policy::default(),
            domains_poll: Duration::from_secs(60),
        }
    }
}

/// What the watcher knows about tailscaled's certificate domains.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Domains {
    /// Whether tailscaled has been asked at least once (names wait for that before
    /// their first request, so a name outside the list is never requested).
    pub asked: bool,
    /// The `CertDomains` list, or `None` when tailscaled could not be asked.
    pub list: Option<Vec<String>>,
    /// Why the list is unknown.
    pub error: Option<String>,
}

/// Keeps every name in a [`CertStore`] supplied with a fresh certificate.
pub struct CertManager {
    store: Arc<CertStore>,
    client: LocalClient,
    cache: Option<Arc<DiskCache>>,
    opts: ManagerOptions,
    permits: Semaphore,
    domains: watch::Sender<Domains>,
    tasks: Mutex<HashMap<String, JoinHandle<()>>>,
    watcher: Mutex<Option<JoinHandle<()>>>,
}

/// `NotifyInitialState`: the bus answers at once, then on every change.
const IPN_BUS_MASK: u64 = 2;

/// Writes `fqdn`'s key and chain to the cache, and the issuance time for the rate
/// budget when tailscaled issued it anew; failures are logged (memory keeps serving).
fn persist(cache: &DiskCache, fqdn: &str, pem: &str, issued: Option<u64>) {
    if let Err(e) = cache.store(fqdn, pem) {
        tracing::warn!(name = %fqdn, error = %e, "cannot write certificate cache; serving from memory");
    }
    if let Err(e) = cache.update_state(|st| {
        if let Some(unix) = issued {
            st.issued.entry(fqdn.to_owned()).or_default().push(unix);
        }
    }) {
        tracing::warn!(name = %fqdn, error = %e, "cannot write cache state");
    }
}

impl CertManager {
    /// A manager for the names in `store`. Nothing runs until [`CertManager::start`].
    pub fn new(
        store: Arc<CertStore>,
        client: LocalClient,
        cache: Option<DiskCache>,
        opts: ManagerOptions,
    ) -> Arc<CertManager> {
        let (domains, _) = watch::channel(Domains::default());
        Arc::new(CertManager {
            store,
            client,
            cache: cache.map(Arc::new),
            permits: Semaphore::new(opts.concurrency.max(1)),
            opts,
            domains,
            tasks: Mutex::new(HashMap::new()),
            watcher: Mutex::new(None),
        })
    }

    /// Serves every valid cached certificate at once. Returns how many were loaded.
    /// Corrupt, mismatched or expired files are logged and skipped.
    pub fn load_cache(&self) -> usize {
        let Some(cache) = &self.cache else { return 0 };
        let now = SystemTime::now();
        let mut loaded = 0;
        for fqdn in self.store.names_from(Some(Origin::Tailscaled)) {
            if self.store.current(&fqdn).is_some() {
                continue;
            }
            match cache.load(&fqdn, now) {
                Ok(Some(cert)) => {
                    let days = cert.remaining(now).as_secs() / 86_400;
                    tracing::info!(name = %fqdn, serial = %cert.serial, expires_in_days = days, "serving cached certificate");
                    self.store.install(&fqdn, cert);
                    loaded += 1;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(name = %fqdn, error = %e, "ignoring cached certificate"),
            }
        }
        loaded
    }

    /// The latest `CertDomains` view.
    pub fn domains(&self) -> watch::Receiver<Domains> {
        self.domains.subscribe()
    }

    /// Starts the `CertDomains` watcher and one task per name.
    pub fn start(self: &Arc<Self>) {
        {
            let mut watcher = self.watcher.lock().unwrap_or_else(|p| p.into_inner());
            if watcher.is_none() {
                *watcher = Some(tokio::spawn(Arc::clone(self).watch_domains()));
            }
        }
        self.sync_names();
    }

    /// Starts tasks for names added to the store and stops those of removed names (the
    /// names whose certificate comes from tailscaled; [`crate::FileCerts`] serves the rest).
    pub fn sync_names(self: &Arc<Self>) {
        let names = self.store.names_from(Some(Origin::Tailscaled));
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|fqdn, task| {
            let keep = names.contains(fqdn);
            if !keep {
                task.abort();
            }
            keep
        });
        for fqdn in names {
            tasks.entry(fqdn.clone()).or_insert_with(|| tokio::spawn(Arc::clone(self).run_name(fqdn)));
        }
    }

    /// Stops every task (in-flight requests are dropped).
    pub fn shutdown(&self) {
        for (_, task) in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            task.abort();
        }
        if let Some(w) = self.watcher.lock().unwrap_or_else(|p| p.into_inner()).take() {
            w.abort();
        }
    }

    async fn watch_domains(self: Arc<Self>) {
        let poll = self.opts.domains_poll;
        let mut retry = Duration::from_secs(1);
        loop {
            self.refresh_domains().await;
            match self.client.watch_ipn_bus(IPN_BUS_MASK).await {
                Ok(mut bus) => {
                    retry = Duration::from_secs(1);
                    loop {
                        tokio::select! {
                            line = bus.next() => match line {
                                Ok(Some(_)) => self.refresh_domains().await,
                                Ok(None) => break,
                                Err(e) => {
                                    tracing::debug!(error = %e, "IPN bus watch ended");
                                    break;
                                }
                            },
                            _ = tokio::time::sleep(poll) => self.refresh_domains().await,
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot watch the IPN bus; polling CertDomains");
                    tokio::time::sleep(retry.min(poll)).await;
                    retry = (retry * 2).min(poll);
                }
            }
        }
    }

    async fn refresh_domains(&self) {
        let next = match self.client.cert_domains().await {
            Ok(list) => Domains {
                asked: true,
                list: Some(list.iter().map(|d| crate::store::normalize(d)).collect()),
                error: None,
            },
            Err(e) => Domains { asked: true, list: None, error: Some(e.to_string()) },
        };
        self.domains.send_if_modified(|cur| {
            if *cur == next {
                return false;
            }
            match (&next.list, &next.error) {
                (Some(list), _) => tracing::info!(cert_domains = ?list, "tailscaled certificate domains"),
                (None, Some(e)) => tracing::warn!(error = %e, "cannot read tailscaled certificate domains"),
                (None, None) => {}
            }
            *cur = next;
            true
        });
    }

    /// The loop of one name, for the life of the manager: wait, check CertDomains, fetch,
    /// decide the next wait.
    async fn run_name(self: Arc<Self>, fqdn: String) {
        let policy = &self.opts.policy;
        let mut domains = self.domains.subscribe();
        let first = schedule::after_success(policy, self.store.current(&fqdn).as_deref(), SystemTime::now());
        let mut next = Next { wait: first.wait, failures: 0, wake_on_domains: false };
        // Before the first request, let the watcher ask tailscaled once (bounded, in
        // case the daemon hangs): a name outside CertDomains is then never requested.
        let _ = tokio::time::timeout(Duration::from_secs(15), domains.wait_for(|d| d.asked)).await;
        loop {
            if !next.wait.is_zero() && !self.sleep(&fqdn, &next, &mut domains).await {
                return;
            }
            // Do not ask for a name tailscaled will refuse: on daemons before 1.96
            // even a refused name costs a Let's Encrypt account round trip.
            // Looked at in place: a copy of the list held across the fetch below was one
            // CertDomains list per name, 24 MiB at the peak for 1,000 names.
            let not_listed = {
                let view = domains.borrow_and_update();
                let missing = view.list.as_deref().filter(|list| !list.contains(&fqdn));
                missing.inspect(|list| self.record_not_in_cert_domains(&fqdn, list)).is_some()
            };
            if not_listed {
                let poll = self.opts.domains_poll.max(Duration::from_secs(1)) * 10;
                next = Next { wait: poll, wake_on_domains: true, ..next };
                continue;
            }
            // Decide min_validity now, from the certificate served at this moment: a
            // plan made before the renewal window opened must not send a request
            // without it once the window is open.
            let min_validity =
                schedule::after_success(policy, self.store.current(&fqdn).as_deref(), SystemTime::now()).min_validity;
            next = match self.fetch_once(&fqdn, min_validity).await {
                Ok(()) => self.after_success(&fqdn, min_validity),
                Err(failure) => self.after_failure(&fqdn, &failure, next.failures + 1),
            };
        }
    }

    /// Sleeps `next.wait`, or less when CertDomains changes to include `fqdn` (if
    /// `next.wake_on_domains`). False when the manager is gone.
    async fn sleep(&self, fqdn: &str, next: &Next, domains: &mut watch::Receiver<Domains>) -> bool {
        self.store.update_state(fqdn, |s| s.next_attempt = Some(SystemTime::now() + next.wait));
        let deadline = Instant::now() + next.wait;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return true,
                changed = domains.changed(), if next.wake_on_domains => {
                    if changed.is_err() {
                        return false;
                    }
                    if domains.borrow_and_update().list.as_ref().is_some_and(|l| l.iter().any(|d| d == fqdn)) {
                        return true;
                    }
                }
            }
        }
    }

    /// The state of a name that is not (yet) in CertDomains; logged once per episode.
    fn record_not_in_cert_domains(&self, fqdn: &str, list: &[String]) {
        let (error, fix) = not_in_cert_domains(fqdn, list);
        self.store.update_state(fqdn, |s| {
            if s.last_error_kind.as_deref() != Some("not_in_cert_domains") {
                tracing::warn!(name = %fqdn, cause = %error, fix = %fix, "waiting for the name to appear in CertDomains");
            }
            s.last_error_kind = Some("not_in_cert_domains".into());
            s.last_error = Some(error);
            s.fix = Some(fix);
        });
    }

    /// After a served certificate: the renewal schedule, unless a renewal was asked for
    /// and tailscaled answered with a certificate still inside the window (then back off
    /// instead of spinning).
    fn after_success(&self, fqdn: &str, min_validity: Option<Duration>) -> Next {
        let policy = &self.opts.policy;
        let now = SystemTime::now();
        let current = self.store.current(fqdn);
        let next = schedule::after_success(policy, current.as_deref(), now);
        let Some(asked) = min_validity.filter(|_| next.wait.is_zero()) else {
            return Next { wait: next.wait, failures: 0, wake_on_domains: false };
        };
        let remaining = current.map(|c| c.remaining(now)).unwrap_or_default();
        let msg = format!(
            "tailscaled returned a certificate with only {}s left although {}s were requested",
            remaining.as_secs(),
            asked.as_secs()
        );
        tracing::warn!(name = %fqdn, cause = %msg, "renewal did not produce a fresh certificate");
        self.store.update_state(fqdn, |s| {
            s.last_error_kind = Some("stale_certificate".into());
            s.last_error = Some(msg);
        });
        Next { wait: schedule::backoff(policy, 1), failures: 1, wake_on_domains: false }
    }

    /// After the `failures`-th failure in a row: logged, recorded, and retried after
    /// tailscaled's `Retry-After` or the backoff.
    fn after_failure(&self, fqdn: &str, failure: &Failure, failures: u32) -> Next {
        let policy = &self.opts.policy;
        let remaining = self.store.current(fqdn).map(|c| c.remaining(SystemTime::now()));
        failure.log(fqdn, remaining, policy);
        self.store.update_state(fqdn, |s| {
            s.failures = failures;
            s.total_failures += 1;
            s.last_error_kind = Some(failure.kind.clone());
            s.last_error = Some(failure.message.clone());
            s.fix = failure.fix.clone();
        });
        let wait = failure.retry_after.unwrap_or_else(|| schedule::backoff(policy, failures));
        Next { wait, failures, wake_on_domains: failure.wake_on_domains }
    }

    /// One request for `fqdn`; on success the certificate is served and cached.
    async fn fetch_once(&self, fqdn: &str, min_validity: Option<Duration>) -> Result<(), Failure> {
        // Before 1.102 tailscaled held one ACME lock for every name, and the per-call
        // timeouts of requests queued behind it fired while they waited: one at a time.
        let all = u32::try_from(self.opts.concurrency.max(1)).unwrap_or(1);
        let permits = if self.client.daemon_version().is_some_and(|v| one_acme_lock(&v)) { all } else { 1 };
        let permit = self.permits.acquire_many(permits).await;
        let started = SystemTime::now();
        self.store.update_state(fqdn, |s| {
            s.in_flight = true;
            s.last_attempt = Some(started);
            s.next_attempt = None;
        });
        tracing::debug!(name = %fqdn, min_validity_secs = min_validity.map(|d| d.as_secs()), "requesting certificate from tailscaled");
        let result = self.client.cert_pair(fqdn, min_validity, self.opts.request_timeout).await;
        drop(permit);
        self.store.update_state(fqdn, |s| s.in_flight = false);
        let pair = result.map_err(Failure::from_local)?;
        let now = SystemTime::now();
        let cert = ServedCert::new(fqdn, &pair.key, pair.chain, CertSource::Tailscaled, now).map_err(|e| Failure {
            kind: "bad_certificate".into(),
            message: format!("tailscaled returned a certificate that cannot be served: {e}"),
            fix: Some("check the tailscaled version and its certificate store (/var/lib/tailscale/certs)".into()),
            retry_after: None,
            wake_on_domains: false,
        })?;
        let previous = self.store.current(fqdn);
        let is_new = previous.as_ref().is_none_or(|p| p.serial != cert.serial);
        let serial = cert.serial.clone();
        let not_after = cert.not_after;
        if !self.store.install(fqdn, cert) {
            return Ok(()); // removed while we were asking
        }
        self.store.update_state(fqdn, |s| {
            s.failures = 0;
            s.last_success = Some(now);
            s.last_error = None;
            s.last_error_kind = None;
            s.fix = None;
        });
        let days_left = not_after.duration_since(now).unwrap_or_default().as_secs() / 86_400;
        if is_new {
            tracing::info!(name = %fqdn, serial = %serial, expires_in_days = days_left, "certificate installed");
            if let Some(cache) = &self.cache {
                let issued = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                let fresh = previous.is_none_or(|p| p.source == CertSource::Tailscaled);
                let (cache, fqdn, pem) = (Arc::clone(cache), fqdn.to_owned(), pair.pem);
                // Writes end with fsync: off the async threads, but awaited, so the
                // cache is written before the next step (and before a restart).
                let written =
                    tokio::task::spawn_blocking(move || persist(&cache, &fqdn, &pem, fresh.then_some(issued)));
                if let Err(e) = written.await {
                    tracing::warn!(error = %e, "the certificate cache write did not finish");
                }
            }
        } else {
            tracing::debug!(name = %fqdn, serial = %serial, expires_in_days = days_left, "certificate unchanged");
        }
        Ok(())
    }
}

impl Drop for CertManager {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A failed attempt, classified for scheduling and logging.
struct Failure {
    kind: String,
    message: String,
    fix: Option<String>,
    retry_after: Option<Duration>,
    wake_on_domains: bool,
}

impl Failure {
    fn from_local(e: LocalError) -> Failure {
        let retry_after = match &e {
            LocalError::RateLimited { retry_after, .. } => Some(retry_after.unwrap_or(Duration::from_secs(3600))),
            _ => None,
        };
        // Problems that a CertDomains change (or the daemon coming back) can cure.
        let wake_on_domains = matches!(
            e,
            LocalError::NotInCertDomains { .. }
                | LocalError::HttpsDisabled
                | LocalError::NoNetmap
                | LocalError::SocketMissing { .. }
                | LocalError::SocketRefused { .. }
        );
        Failure {
            kind: e.kind().as_str().to_owned(),
            message: e.to_string(),
            fix: e.fix(),
            retry_after,
            wake_on_domains,
        }
    }

    fn log(&self, fqdn: &str, remaining: Option<Duration>, policy: &Policy) {
        let fix = self.fix.as_deref().unwrap_or("");
        let retry = self.retry_after.map(|d| d.as_secs());
        match remaining {
            None => {
                tracing::warn!(name = %fqdn, cause = %self.message, fix, retry_after_secs = retry, "cannot get a certificate; the name cannot be served")
            }
            Some(left) => {
                let days = left.as_secs_f64() / 86_400.0;
                match schedule::urgency(policy, left) {
                    Urgency::Calm => {
                        tracing::info!(name = %fqdn, cause = %self.message, days_left = days, "certificate refresh failed; still serving the current one")
                    }
                    Urgency::Warn => {
                        tracing::warn!(name = %fqdn, cause = %self.message, fix, days_left = days, "certificate renewal failing and expiry is approaching")
                    }
                    Urgency::Critical => {
                        tracing::error!(name = %fqdn, cause = %self.message, fix, days_left = days, "certificate about to expire and renewal keeps failing")
                    }
                }
            }
        }
    }
}

/// Whether tailscaled `version` has one ACME lock for all names (before 1.102).
fn one_acme_lock(version: &str) -> bool {
    snirouter_localapi::DaemonVersion::parse(version).is_some_and(|v| !v.at_least(1, 102))
}

fn not_in_cert_domains(fqdn: &str, list: &[String]) -> (String, String) {
    if list.is_empty() {
        (
            format!("tailscaled lists no certificate domains, so it cannot issue {fqdn}"),
            "enable MagicDNS and HTTPS Certificates for the tailnet (admin console, DNS page), and check that tailscaled is logged in (`tailscale status`)".to_owned(),
        )
    } else {
        let label = fqdn.split('.').next().unwrap_or(fqdn);
        (
            format!("{fqdn} is not in this node's CertDomains {list:?}"),
            format!(
                "make it a Tailscale Service hosted by this node: define svc:{label} (ports tcp:443), advertise it from this host and approve the host (`snirouter services plan` shows the steps)"
            ),
        )
    }
}
/// What one name's loop does next.
#[derive(Debug, Clone, Copy)]
struct Next {
    /// How long to wait before the next request.
    wait: Duration,
    /// Failures in a row so far.
    failures: u32,
    /// Whether a CertDomains change that adds the name ends the wait early.
    wake_on_domains: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemons_before_1_102_get_one_certificate_request_at_a_time() {
        assert!(one_acme_lock("1.100.0") && one_acme_lock("1.98.9-tabc"));
        assert!(!one_acme_lock("1.102.0") && !one_acme_lock("1.103.0-t3caf7d9e7-g084ee3b64"));
        assert!(!one_acme_lock("unknown"), "unknown: the default concurrency");
    }
}

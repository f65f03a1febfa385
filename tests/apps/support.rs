//! What every app test needs: a required-tool check that fails loudly, an app process
//! that dies with its whole process group, bounded polling, and a router environment
//! whose simulated node can certify the app names.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::harness::{self, Env, EnvOptions};

/// How long an app gets to start listening.
pub(crate) const APP_START: Duration = Duration::from_secs(60);
/// How long the router gets to serve a name.
pub(crate) const SERVE: Duration = Duration::from_secs(60);

/// Panics, naming the package and `.ci/run`, when `bin` is not on PATH.
pub(crate) fn require_bin(bin: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| is_executable(&dir.join(bin))))
        .unwrap_or(false);
    assert!(
        found,
        "`{bin}` is not on PATH: install the Debian package `{package}` (`apt-get install {package}`); \
         .ci/run installs it on a fresh machine"
    );
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Panics, naming the PyPI packages and `.ci/run`, when `python3` cannot import `modules`.
pub(crate) fn require_python(modules: &[&str], packages: &str) {
    require_bin("python3", "python3");
    let code = format!("import {}", modules.join(", "));
    let out = Command::new("python3").args(["-c", &code]).output().expect("run python3");
    assert!(
        out.status.success(),
        "python3 cannot `{code}`: install the PyPI packages {packages} (`python3 -m pip install …`, \
         pinned in .ci/run, which installs them on a fresh machine): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An application process in its own process group, with stdout and stderr in a log
/// file. Dropping it sends SIGTERM to the group (the app's own clean shutdown: Jupyter
/// stops its kernels), then SIGKILL after 10 s.
pub(crate) struct App {
    pub name: &'static str,
    child: std::process::Child,
    pub log: PathBuf,
}

impl App {
    pub(crate) fn spawn(name: &'static str, mut cmd: Command, log: &Path) -> App {
        use std::os::unix::process::CommandExt;
        let out = std::fs::File::create(log).expect("app log");
        let err = out.try_clone().expect("app log");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        App { name, child, log: log.to_owned() }
    }

    pub(crate) fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the app's log if it has exited.
    pub(crate) fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}); its output:\n{}", self.name, self.logs());
        }
    }

    /// Polls `http://127.0.0.1:{port}{path}` until it answers with any HTTP status.
    pub(crate) async fn wait_http(&mut self, port: u16, path: &str) {
        let deadline = Instant::now() + APP_START;
        loop {
            self.assert_running();
            let out = tokio::process::Command::new("curl")
                .args(["-s", "-o", "/dev/null", "--max-time", "5", "-w", "%{http_code}"])
                .arg(format!("http://127.0.0.1:{port}{path}"))
                .kill_on_drop(true)
                .output()
                .await
                .expect("run curl");
            let code = String::from_utf8_lossy(&out.stdout).trim().parse::<u16>().unwrap_or(0);
            if code != 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen on {port} within {APP_START:?}:\n{}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let pgid = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(pgid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whatever is left of the group (a stuck leader, a child it did not stop).
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Runs `cmd` in its own process group, at most `limit`; on time-out (or if the future
/// is dropped) the whole group is killed. Chromium, for one, leaves helper processes.
pub(crate) async fn run_bounded(mut cmd: tokio::process::Command, what: &str, limit: Duration) -> Output {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0).kill_on_drop(true);
    let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let guard = GroupGuard(child.id().map(|p| Pid::from_raw(p as i32)));
    let out = tokio::time::timeout(limit, child.wait_with_output()).await;
    drop(guard);
    match out {
        Ok(out) => out.unwrap_or_else(|e| panic!("{what}: {e}")),
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}

/// Kills a process group on drop.
pub(crate) struct GroupGuard(pub Option<Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

/// Polls `cond` every 100 ms until it holds or `limit` passes; returns whether it held.
pub(crate) async fn poll_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// [`poll_until`] for a condition that has to await (a request, say).
pub(crate) async fn poll_async<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts the router with the 14 sample services plus `apps` (their names certifiable
/// by the simulated node), `services` appended to the config and `[timeouts]` lines.
/// An app named like a sample service (`prometheus`, `qbittorrent`) takes that
/// service's place: its sample backend's section is removed from the config.
pub(crate) async fn env_with(apps: &[&str], services: String, timeouts: &str) -> Env {
    let mut names: Vec<&str> = harness::SERVICES.to_vec();
    names.extend(apps.iter().filter(|a| !harness::SERVICES.contains(a)));
    let mut env = Env::start(EnvOptions {
        sim: snirouter_testkit::tailscaled::SimConfig::storage(harness::SUFFIX, &names),
        extra_services: services,
        timeouts: timeouts.to_owned(),
        start_router: false,
        ..Default::default()
    })
    .await;
    let mut config = std::fs::read_to_string(&env.config).expect("read config");
    for app in apps.iter().filter(|a| harness::SERVICES.contains(a)) {
        let head = format!("[services.{app}]\nupstream = \"http://");
        let start = config.find(&head).unwrap_or_else(|| panic!("no sample section for {app}:\n{config}"));
        let end = start + config[start..].find("\n\n").expect("section end") + 2;
        config.replace_range(start..end, "");
        assert!(config.contains(&format!("[services.{app}]")), "the app's own [services.{app}] is missing");
    }
    std::fs::write(&env.config, config).expect("write config");
    env.start_router().await;
    for app in apps {
        env.wait_serving(app, SERVE).await;
    }
    env
}

/// The router's log lines that mention `service=NAME` (warnings, access log).
pub(crate) fn router_lines(env: &Env, service: &str) -> String {
    // Log lines say `service=NAME`; JSON access lines `"service":"NAME"`.
    let (key, json) = (format!("service={service} "), format!("\"service\":\"{service}\""));
    env.router().logs().lines().filter(|l| l.contains(&key) || l.contains(&json)).collect::<Vec<_>>().join("\n")
}

/// `https://NAME.<suffix>:PORT` of the router.
pub(crate) fn origin(env: &Env, name: &str) -> String {
    format!("https://{}:{}", harness::fqdn(name), env.https.port())
}

/// Established TCP connections whose local port is `port` (i.e. accepted by the app
/// listening there), from /proc/net/tcp.
pub(crate) fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let want = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&want) && f[3] == "01"
        })
        .count()
}

/// Deterministic pseudo-random bytes (xorshift64*), so content mix-ups are visible.
pub(crate) fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `sha256sum` of a file (coreutils), as hex.
pub(crate) fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("run sha256sum");
    assert!(out.status.success(), "sha256sum {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_owned()
}

/// One HTTP/2 connection of our own to the router for `name` (ALPN `h2`), for requests
/// that must share a connection the way a browser's do.
pub(crate) async fn h2_connect(
    env: &Env,
    name: &str,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(env.https).await.expect("connect");
    let server_name = rustls::pki_types::ServerName::try_from(harness::fqdn(name)).expect("name");
    let tls = tokio_rustls::TlsConnector::from(harness::client_tls(env, &[b"h2"]))
        .connect(server_name, tcp)
        .await
        .expect("tls");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "the router chose HTTP/2");
    let (send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    send
}

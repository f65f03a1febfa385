//! Test environment: temp dir, simulated tailscaled, backends, and the router process.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) use tempfile::TempDir;

use snirouter_testkit::backend::{self, Backend};
use snirouter_testkit::tailscaled::{SimConfig, SimTailscaled};

pub(crate) const SUFFIX: &str = "tailnet-e2e.ts.net";

pub(crate) const SERVICES: [&str; 14] = snirouter_testkit::SAMPLE_SERVICES;

pub(crate) fn fqdn(name: &str) -> String {
    format!("{name}.{SUFFIX}")
}

/// A unique scratch directory, removed on drop. Short (`/tmp/sr-TAG-XXXXXX`): unix
/// socket paths inside are limited to 108 bytes.
pub(crate) fn temp_dir(tag: &str) -> TempDir {
    tempfile::Builder::new().prefix(&format!("sr-{tag}-")).tempdir().expect("create temp dir")
}

/// A free loopback port (bound then released; the router binds it right after).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The router process; killed on drop.
pub(crate) struct RouterProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl RouterProcess {
    pub(crate) fn start(config: &Path, log: &Path) -> RouterProcess {
        Self::start_with_env(config, log, &[])
    }

    /// [`RouterProcess::start`] with extra environment variables.
    pub(crate) fn start_with_env(config: &Path, log: &Path, env: &[(&str, &str)]) -> RouterProcess {
        let log_file = std::fs::File::create(log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_snirouter"))
            .args(["run", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .env("SNIROUTER_LOG", "info,snirouter_certs=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn snirouter");
        RouterProcess { child, log: log.to_owned() }
    }

    pub(crate) fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Peak resident memory (VmHWM) in KiB.
    pub(crate) fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.child.id(), "VmHWM:")
    }

    /// Waits for "snirouter ready"; `Err(log)` if the process exited first.
    pub(crate) async fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let logs = self.logs();
            if logs.contains("snirouter ready") {
                return Ok(());
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return Err(self.logs());
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for the router to listen; router log:\n{logs}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `pred(logs)` holds.
    pub(crate) async fn wait_log(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let logs = self.logs();
            if pred(&logs) {
                return logs;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; router log:\n{logs}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(crate) fn stop(&mut self) {
        unsafe_free_kill(&mut self.child);
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn unsafe_free_kill(child: &mut Child) {
    // SIGTERM first (graceful drain), then SIGKILL.
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Options for [`Env::start`].
pub(crate) struct EnvOptions {
    pub sim: SimConfig,
    /// Extra TOML appended after the generated services.
    pub extra_services: String,
    /// Extra TOML for `[timeouts]`.
    pub timeouts: String,
    pub proxy_protocol: bool,
    /// Extra TOML for `[tailscale]`.
    pub tailscale: String,
    /// Point the router at this socket instead of the simulation's.
    pub socket_override: Option<PathBuf>,
    /// Start the router (false: caller starts it later).
    pub start_router: bool,
    /// Extra TOML lines for `[admin]` (the socket is always `<dir>/admin.sock`).
    pub admin: String,
    /// Extra TOML lines for `[listen]`.
    pub listen: String,
}

impl Default for EnvOptions {
    fn default() -> Self {
        EnvOptions {
            sim: SimConfig::storage(SUFFIX, &SERVICES),
            extra_services: String::new(),
            timeouts: String::new(),
            proxy_protocol: false,
            tailscale: String::new(),
            socket_override: None,
            start_router: true,
            admin: String::new(),
            listen: String::new(),
        }
    }
}

/// A complete environment: sim tailscaled + 14 backends + router.
/// Fields are kept alive for the test's duration (backends stop on drop).
#[allow(dead_code)]
pub(crate) struct Env {
    pub dir: TempDir,
    pub sim: SimTailscaled,
    pub backends: Vec<Backend>,
    pub router: Option<RouterProcess>,
    pub config: PathBuf,
    pub ca: PathBuf,
    pub https: SocketAddr,
    pub proxy: Option<SocketAddr>,
    /// The router's admin socket (`snirouter status`).
    pub admin_socket: PathBuf,
}

impl Env {
    pub(crate) async fn start(opts: EnvOptions) -> Env {
        let dir = temp_dir("e2e");
        let socket = dir.path().join("ts.sock");
        let sim = SimTailscaled::start(&socket, opts.sim).await.expect("start sim tailscaled");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, sim.ca().root_pem()).expect("write ca");
        let https: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let proxy: Option<SocketAddr> =
            opts.proxy_protocol.then(|| format!("127.0.0.1:{}", free_port()).parse().expect("addr"));
        let mut backends = Vec::new();
        let mut services = String::new();
        for name in SERVICES {
            let b = backend::spawn(name).await.expect("backend");
            services.push_str(&format!("[services.{name}]\nupstream = \"http://{}\"\n\n", b.addr));
            backends.push(b);
        }
        let proxy_line = match proxy {
            Some(p) => format!("proxy_protocol = [\"{p}\"]\n{}", opts.listen),
            None => opts.listen.clone(),
        };
        let admin_socket = dir.path().join("admin.sock");
        let config_text = format!(
            "[tailscale]\nsocket = \"{}\"\n{}\n[listen]\nhttps = [\"{https}\"]\n{proxy_line}\n[cache]\ndir = \"{}\"\n\n[admin]\nsocket = \"{}\"\n{}\n[timeouts]\n{}\n{services}{}",
            opts.socket_override.as_deref().unwrap_or(&socket).display(),
            opts.tailscale,
            dir.path().join("cache").display(),
            admin_socket.display(),
            opts.admin,
            opts.timeouts,
            opts.extra_services,
        );
        let config = dir.path().join("snirouter.toml");
        std::fs::write(&config, config_text).expect("write config");
        let mut env = Env { dir, sim, backends, router: None, config, ca, https, proxy, admin_socket };
        if opts.start_router {
            env.start_router().await;
        }
        env
    }

    /// Starts (or restarts) the router process and waits until it listens.
    pub(crate) async fn start_router(&mut self) {
        if let Some(mut old) = self.router.take() {
            old.stop();
        }
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        for attempt in 0.. {
            let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let log = self.dir.path().join(format!("router-{n}.log"));
            let mut router = RouterProcess::start(&self.config, &log);
            match router.wait_ready(Duration::from_secs(90)).await {
                Ok(()) => {
                    self.router = Some(router);
                    return;
                }
                // free_port() released the port before the router bound it, and a
                // backend or client took it meanwhile: move the listeners and retry.
                Err(logs) if logs.contains("Address already in use") && attempt < 3 => self.move_listeners(),
                Err(logs) => panic!("the router exited before listening; router log:\n{logs}"),
            }
        }
    }

    /// Gives the router's listeners new free ports (config file and `https`/`proxy`).
    fn move_listeners(&mut self) {
        let mut text = std::fs::read_to_string(&self.config).expect("read config");
        let https: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        text = text.replace(&format!("https = [\"{}\"]", self.https), &format!("https = [\"{https}\"]"));
        self.https = https;
        if let Some(old) = self.proxy {
            let proxy: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
            text = text.replace(&format!("proxy_protocol = [\"{old}\"]"), &format!("proxy_protocol = [\"{proxy}\"]"));
            self.proxy = Some(proxy);
        }
        std::fs::write(&self.config, text).expect("write config");
    }

    pub(crate) fn router(&self) -> &RouterProcess {
        self.router.as_ref().expect("router running")
    }

    /// Waits until a TLS handshake for `name` succeeds.
    pub(crate) async fn wait_serving(&self, name: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let out = curl(self, name, "/", &[]).await;
            if out.status.success() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{name} not serving after {timeout:?}: {}\nrouter log:\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    self.router().logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Adds `line` to `[services.NAME]` of the harness config.
pub(crate) fn add_to_service(config: &Path, name: &str, line: &str) {
    let text = std::fs::read_to_string(config).expect("config");
    let header = format!("[services.{name}]\n");
    std::fs::write(config, text.replacen(&header, &format!("{header}{line}\n"), 1)).expect("write");
}

/// `curl` against the router for `https://<name>/<path>`, resolving the name to the
/// router's loopback listener and trusting the simulated CA. Returns the raw output;
/// `-w` appends `\n<status>` to stdout.
pub(crate) async fn curl(env: &Env, name: &str, path: &str, extra: &[&str]) -> Output {
    curl_at(env, &fqdn(name), path, extra).await
}

/// [`curl`] for any host name (a public name under `[domains]`).
pub(crate) async fn curl_at(env: &Env, host: &str, path: &str, extra: &[&str]) -> Output {
    let port = env.https.port();
    tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&env.ca)
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .args(["-w", "\n%{http_code}"])
        .args(extra)
        .arg(format!("https://{host}:{port}{path}"))
        .kill_on_drop(true)
        .output()
        .await
        .expect("run curl")
}

/// Splits curl output produced with `-w "\n%{http_code}"` into (body, status).
pub(crate) fn body_and_status(out: &Output) -> (String, u16) {
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    match text.rsplit_once('\n') {
        Some((body, code)) => (body.to_owned(), code.trim().parse().unwrap_or(0)),
        None => (String::new(), text.trim().parse().unwrap_or(0)),
    }
}

/// `openssl s_client` handshake with `servername`; returns stdout+stderr.
pub(crate) async fn s_client(env: &Env, servername: &str) -> String {
    s_client_with(env, servername, &[]).await
}

/// [`s_client`] with extra options (`-tls1_3`, `-ciphersuites …`).
pub(crate) async fn s_client_with(env: &Env, servername: &str, extra: &[&str]) -> String {
    let out = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(env.https.to_string())
        .args(["-servername", servername, "-CAfile"])
        .arg(&env.ca)
        .args(["-verify_return_error", "-brief"])
        .args(extra)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("run openssl");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The environment's simulated CA as trust anchors.
pub(crate) fn env_roots(env: &Env) -> std::sync::Arc<rustls::RootCertStore> {
    snirouter_tls::roots_from_pem(&std::fs::read_to_string(&env.ca).expect("ca")).expect("CA roots")
}

/// A TLS client config trusting the environment's simulated CA, offering `alpn`.
pub(crate) fn client_tls(env: &Env, alpn: &[&[u8]]) -> std::sync::Arc<rustls::ClientConfig> {
    let trust = snirouter_tls::Trust::Roots(env_roots(env));
    std::sync::Arc::new(snirouter_tls::client_config(trust, alpn).expect("client config"))
}

// ---------------------------------------------------------------------------------
// Clients through the PROXY v2 listener (a chosen tailnet source address)

/// `body` as JSON (panics with the body otherwise).
pub(crate) fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// The value of header `name` in a `curl -D` dump (lowercased).
pub(crate) fn header_line<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    headers.lines().find(|l| l.starts_with(&prefix)).map(|l| l[prefix.len()..].trim())
}

/// The certificates in the PEM file at `path`, as trust roots.
pub(crate) fn roots_from(path: &Path) -> Arc<rustls::RootCertStore> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(path).expect("ca") {
        roots.add(c.expect("cert")).expect("add");
    }
    Arc::new(roots)
}

/// A TLS client trusting `roots`.
pub(crate) fn client_config(roots: Arc<rustls::RootCertStore>) -> Arc<rustls::ClientConfig> {
    Arc::new(snirouter_tls::client_config(snirouter_tls::Trust::Roots(roots), &[]).expect("client config"))
}

/// A PROXY v2 header claiming `source`, toward the node's own address of its family
/// (tailscaled puts the node IP, not the service VIP, as the destination).
pub(crate) fn proxy_header(source: &str) -> Vec<u8> {
    let source: SocketAddr = source.parse().expect("source");
    let dest: SocketAddr =
        if source.is_ipv4() { "100.64.0.1:443".parse() } else { "[fd7a:115c:a1e0::1]:443".parse() }.expect("dest");
    ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        (source, dest),
    )
    .build()
    .expect("PROXY v2 header")
}

/// TLS to `name` through the PROXY v2 listener with `source` as the client.
pub(crate) async fn via_proxy(
    env: &Env,
    source: &str,
    name: &str,
    roots: Arc<rustls::RootCertStore>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(env.proxy.expect("proxy")).await.expect("connect");
    tcp.write_all(&proxy_header(source)).await.expect("header");
    let server = rustls::pki_types::ServerName::try_from(fqdn(name)).expect("name");
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(client_config(roots)).connect(server, tcp),
    )
    .await
    .expect("handshake in time")
    .expect("TLS through the PROXY listener")
}

/// A raw HTTP/1.1 request on `io`; returns the response head and body as text.
pub(crate) async fn raw_http<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut io: S,
    request: &str,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    io.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), io.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

//! Jupyter Server (PyPI `jupyter_server` + `ipykernel`) behind the router: a kernel
//! driven over its WebSocket, a slow upload to the contents API, and long downloads
//! that must not hold up other requests.
//!
//! Behind a proxy Jupyter needs `--ServerApp.allow_remote_access=True`: otherwise it
//! answers 403 ("Blocking request with non-local 'Host'") to every request whose Host
//! is not localhost or a loopback address. Host and Origin then match as the browser
//! sent them (the router passes both through), so WebSockets pass Jupyter's Origin check
//! without `allow_origin`.

use base64::Engine as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{self, TempDir, body_and_status, curl, free_port, temp_dir};
use crate::support::{self, App};

const TOKEN: &str = "snirouter-apps-token";

struct Jupyter {
    app: App,
    port: u16,
    root: PathBuf,
    _dir: TempDir,
}

async fn start_jupyter() -> Jupyter {
    support::require_python(&["jupyter_server", "ipykernel"], "`jupyter_server` and `ipykernel`");
    let dir = temp_dir("jupyter");
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).expect("root dir");
    let port = free_port();
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "jupyter_server", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1"])
        .arg(format!("--port={port}"))
        .arg("--ServerApp.port_retries=0")
        .arg(format!("--IdentityProvider.token={TOKEN}"))
        .arg("--ServerApp.allow_remote_access=True")
        .arg(format!("--ServerApp.root_dir={}", root.display()))
        // Its own config, runtime and data dirs: nothing from ~/.jupyter applies.
        .env("JUPYTER_CONFIG_DIR", dir.path().join("config"))
        .env("JUPYTER_RUNTIME_DIR", dir.path().join("runtime"))
        .env("JUPYTER_DATA_DIR", dir.path().join("data"))
        .env("JUPYTER_PLATFORM_DIRS", "1")
        .env("IPYTHONDIR", dir.path().join("ipython"));
    let mut app = App::spawn("jupyter server", cmd, &dir.path().join("jupyter.log"));
    app.wait_http(port, "/api/status").await;
    Jupyter { app, port, root, _dir: dir }
}

fn jupyter_service(j: &Jupyter) -> String {
    format!("[services.jupyter]\nupstream = \"http://127.0.0.1:{}\"\n", j.port)
}

const AUTH: &str = "Authorization: token snirouter-apps-token";

/// 1a: a kernel executes code sent over `wss://…/api/kernels/ID/channels`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyter_kernel_runs_code_over_the_websocket() {
    let mut j = start_jupyter().await;
    let env = support::env_with(&["jupyter"], jupyter_service(&j), "").await;

    // REST first: Jupyter sees the tailnet Host (allow_remote_access) and the token.
    let (body, status) = body_and_status(&curl(&env, "jupyter", "/api/status", &["-H", AUTH]).await);
    assert_eq!(status, 200, "GET /api/status through the router: {body}\njupyter log:\n{}", j.app.logs());

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/apps/jupyter_kernel.py");
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(&script).arg(harness::fqdn("jupyter")).arg(env.https.port().to_string()).arg(&env.ca).arg(TOKEN);
    let out = support::run_bounded(cmd, "jupyter_kernel.py", Duration::from_secs(90)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    j.app.assert_running();
    assert!(
        out.status.success(),
        "jupyter_kernel.py failed: {}{stdout}\nrouter log:\n{}\njupyter log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        env.router().logs(),
        j.app.logs()
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).expect("jupyter_kernel.py JSON");
    assert_eq!(seen["stdout"], "42\n", "{seen}");
    assert_eq!(seen["reply"], "ok", "{seen}");
}

/// 1b: an upload that takes longer to send than `timeouts.upstream_response` is not cut
/// off: the timer is for the upstream's answer, which cannot come before the body is in.
/// Once over HTTP/1.1 and once over HTTP/2, at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyter_slow_upload_outlasting_upstream_response_timeout() {
    let j = start_jupyter().await;
    let env = support::env_with(&["jupyter"], jupyter_service(&j), "upstream_response = \"2s\"\n").await;

    let data = support::pseudo_random(1_100_000, 0x5eed);
    let body = serde_json::json!({ "type": "file", "format": "base64", "content": base64::engine::general_purpose::STANDARD.encode(&data) });
    let body_file = env.dir.path().join("upload.json");
    std::fs::write(&body_file, body.to_string()).expect("write body");
    let body_len = std::fs::metadata(&body_file).expect("body").len();

    // ~1.5 MB at 200 KiB/s: about 7 s on the wire.
    let upload = |version: &'static str| {
        let started = Instant::now();
        let out = tokio::process::Command::new("curl")
            .args([version, "-sS", "--max-time", "40", "--cacert"])
            .arg(&env.ca)
            .arg("--resolve")
            .arg(format!("{}:{}:127.0.0.1", harness::fqdn("jupyter"), env.https.port()))
            .args(["-X", "PUT", "-H", AUTH, "-H", "Content-Type: application/json", "--limit-rate", "200K"])
            .arg("--data-binary")
            .arg(format!("@{}", body_file.display()))
            .args(["-w", "\n%{http_code}\n%{size_upload}\n%{http_version}"])
            .arg(format!("{}/api/contents/slow-upload{version}.bin", support::origin(&env, "jupyter")))
            .kill_on_drop(true)
            .output();
        async move {
            let out = out.await.expect("run curl");
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let mut tail = text.rsplitn(4, '\n');
            let http = tail.next().unwrap_or_default().to_owned();
            let sent = tail.next().unwrap_or_default().to_owned();
            let status = tail.next().unwrap_or_default().parse::<u16>().unwrap_or(0);
            let answer = format!("{}{}", tail.next().unwrap_or_default(), String::from_utf8_lossy(&out.stderr));
            (version, started.elapsed(), http, sent, status, answer)
        }
    };
    let results = [tokio::join!(upload("--http1.1"), upload("--http2"))].map(|(a, b)| [a, b]);
    let mut failures = Vec::new();
    for (version, took, http, sent, status, answer) in results.into_iter().flatten() {
        eprintln!("slow upload {version}: HTTP/{http} {status} after {took:?}, {sent} of {body_len} bytes sent");
        if !(200..300).contains(&status) {
            failures.push(format!(
                "{version}: PUT of {body_len} bytes at 200 KiB/s got {status} after {took:?} with {sent} bytes sent: {}",
                answer.trim()
            ));
        } else {
            assert!(took >= Duration::from_secs(4), "the upload was not slow ({took:?}): the test proves nothing");
        }
    }
    let said = support::router_lines(&env, "jupyter");
    assert!(failures.is_empty(), "{}\nrouter log (service=jupyter):\n{said}", failures.join("\n"));

    // The files are there, byte for byte.
    for version in ["--http1.1", "--http2"] {
        let got = env.dir.path().join(format!("downloaded{version}.bin"));
        let path = format!("/files/slow-upload{version}.bin");
        let (_, status) =
            body_and_status(&curl(&env, "jupyter", &path, &["-H", AUTH, "-o", got.to_str().expect("path")]).await);
        assert_eq!(status, 200, "GET {path}");
        assert!(std::fs::read(&got).expect("downloaded") == data, "{path} differs from what was uploaded");
        let on_disk = std::fs::read(j.root.join(format!("slow-upload{version}.bin"))).expect("file on disk");
        assert_eq!(on_disk.len(), data.len());
    }
}

/// 1c: forty slow downloads multiplexed on one HTTP/2 connection do not hold up other
/// requests to Jupyter or to another service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyter_long_downloads_do_not_hold_up_other_requests() {
    const FILE_SIZE: usize = 12 << 20;
    const DOWNLOADS: usize = 40;
    const BOUND: Duration = Duration::from_secs(10);
    let j = start_jupyter().await;
    let big = support::pseudo_random(FILE_SIZE, 0xb16);
    std::fs::write(j.root.join("big.bin"), &big).expect("write big.bin");
    let want_sha = support::sha256_file(&j.root.join("big.bin"));
    drop(big);
    let env = support::env_with(&["jupyter"], jupyter_service(&j), "").await;

    // 40 downloads at 512 KiB/s each (24 s per download), one HTTP/2 connection.
    let out_dir = env.dir.path().join("downloads");
    std::fs::create_dir_all(&out_dir).expect("downloads dir");
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "--http2", "--parallel", "--parallel-max", "50", "--max-time", "100", "--cacert"])
        .arg(&env.ca)
        .arg("--resolve")
        .arg(format!("{}:{}:127.0.0.1", harness::fqdn("jupyter"), env.https.port()))
        .args(["-H", AUTH, "--limit-rate", "512K"])
        .args(["-w", "%{http_code} %{size_download} %{num_connects} %{http_version}\n"]);
    let files: Vec<PathBuf> = (0..DOWNLOADS).map(|i| out_dir.join(format!("{i}.bin"))).collect();
    for (i, f) in files.iter().enumerate() {
        cmd.arg("-o").arg(f).arg(format!("{}/files/big.bin?n={i}", support::origin(&env, "jupyter")));
    }
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).kill_on_drop(true);
    let downloads = cmd.spawn().expect("spawn curl --parallel");
    let started = Instant::now();

    let in_progress = || files.iter().filter(|f| std::fs::metadata(f).map(|m| m.len() > 0).unwrap_or(false)).count();
    let all_started = support::poll_until(Duration::from_secs(10), || in_progress() == DOWNLOADS).await;
    let started_count = in_progress();

    let upstream_connections = support::established_to(j.port);

    // Ordinary requests meanwhile, each on a fresh connection. The router hands
    // connections to its I/O threads (one per core) in turn, so one request per core in
    // a row reaches every thread, the one that carries the downloads included.
    let rounds = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut slow = Vec::new();
    for (name, path, auth) in [("jupyter", "/api/status", AUTH), ("grafana", "/", "X-Test: apps")] {
        for round in 0..rounds {
            let t = Instant::now();
            let out = curl(&env, name, path, &["-H", auth, "--max-time", "15"]).await;
            let (body, status) = body_and_status(&out);
            let took = t.elapsed();
            eprintln!("round {round}: GET {name}{path} -> {status} in {took:?}");
            if status != 200 || took > BOUND {
                slow.push(format!(
                    "GET {name}{path}: status {status} after {took:?} ({}{})",
                    body.chars().take(300).collect::<String>(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
        }
    }
    let checks_done = started.elapsed();
    let still_downloading = in_progress() == DOWNLOADS
        && files.iter().all(|f| std::fs::metadata(f).map(|m| (m.len() as usize) < FILE_SIZE).unwrap_or(true));
    assert!(
        slow.is_empty(),
        "while {started_count} of {DOWNLOADS} downloads were in progress (all started within 10 s: {all_started}; \
         {upstream_connections} upstream connections to jupyter), ordinary requests were held up:\n{}\n\
         router log (service=jupyter):\n{}",
        slow.join("\n"),
        support::router_lines(&env, "jupyter")
    );
    assert!(all_started, "only {started_count} of {DOWNLOADS} downloads had started after 10 s");
    assert!(still_downloading, "the downloads were over before the checks ended ({checks_done:?}): nothing was proven");

    let out = tokio::time::timeout(Duration::from_secs(100), downloads.wait_with_output())
        .await
        .expect("downloads finish in time")
        .expect("curl --parallel");
    let report = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), DOWNLOADS, "curl -w lines: {report}\n{}", String::from_utf8_lossy(&out.stderr));
    let mut connects = 0;
    for line in &lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&f[..2], &["200", FILE_SIZE.to_string().as_str()], "a download: {line}\n{report}");
        assert_eq!(f[3], "2", "HTTP version: {line}");
        connects += f[2].parse::<usize>().unwrap_or(99);
    }
    assert_eq!(connects, 1, "all downloads shared one connection:\n{report}");
    for f in &files {
        assert_eq!(support::sha256_file(f), want_sha, "{}", f.display());
    }
}

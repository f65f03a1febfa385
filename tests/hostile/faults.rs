//! Faults in what the router depends on: an upstream that dies mid-answer, a LocalAPI
//! that answers garbage or never answers, a cache that cannot be written.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

/// An upstream that answers with a long Content-Length, sends 10 bytes, and resets.
async fn resetting_upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n0123456789").await;
                // RST instead of FIN; blocking on drop is harmless for a zero linger.
                #[allow(deprecated)]
                let _ = s.set_linger(Some(Duration::ZERO));
                drop(s); // RST
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_mid_response_is_contained() {
    let upstream = resetting_upstream().await;
    let mut opts = EnvOptions::default();
    let mut names: Vec<&str> = SERVICES.to_vec();
    names.push("flaky");
    opts.sim = snirouter_testkit::tailscaled::SimConfig::storage(SUFFIX, &names);
    opts.extra_services = format!("[services.flaky]\nupstream = \"http://{upstream}\"\n");
    let env = Env::start(opts).await;
    env.wait_serving("grafana", WAIT).await;
    // The flaky service never answers cleanly, so wait for its certificate instead.
    let deadline = std::time::Instant::now() + WAIT;
    while !s_client(&env, &fqdn("flaky")).await.contains("Verification: OK") {
        assert!(std::time::Instant::now() < deadline, "flaky never got a certificate");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..5 {
        let out = curl(&env, "flaky", "/", &[]).await;
        assert!(!out.status.success(), "a truncated body must surface as a transfer error, not success");
    }
    let (_, status) = body_and_status(&curl(&env, "grafana", "/", &[]).await);
    assert_eq!(status, 200, "other services unaffected");
}

/// A unix-socket "tailscaled" that answers every request with `reply`, or never
/// answers when `reply` is None.
async fn fake_localapi(path: std::path::PathBuf, reply: Option<&'static [u8]>) {
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).expect("bind fake socket");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                match reply {
                    Some(r) => {
                        let _ = s.write_all(r).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(3600)).await,
                }
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn localapi_garbage_and_hangs_are_logged_not_fatal() {
    for (label, reply, expect) in [
        (
            "garbage",
            Some(&b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{garbage!"[..]),
            "unexpected answer from tailscaled",
        ),
        ("hang", None, "timed out"),
    ] {
        let dir = temp_dir(label);
        let sock = dir.path().join("fake.sock");
        fake_localapi(sock.clone(), reply).await;
        let mut opts = EnvOptions::default();
        opts.socket_override = Some(sock);
        opts.tailscale = format!("magic_dns_suffix = \"{SUFFIX}\"\n");
        opts.timeouts = "cert_request = \"2s\"\n".into();
        let env = Env::start(opts).await;
        let grafana = format!("name={}", fqdn("grafana"));
        // One line naming both the service and the cause.
        env.router()
            .wait_log(expect, WAIT, |l| l.lines().any(|line| line.contains(expect) && line.contains(&grafana)))
            .await;
        let out = s_client(&env, &fqdn("grafana")).await;
        assert!(out.contains("unrecognized name"), "{label}: {out}");
        // Still alive: the process has not exited.
        let mut env = env;
        let router = env.router.as_mut().expect("router");
        assert!(router.child.try_wait().expect("wait").is_none(), "{label}: router exited:\n{}", router.logs());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_cache_still_serves_from_memory() {
    let mut opts = EnvOptions::default();
    opts.start_router = false;
    let mut env = Env::start(opts).await;
    // Make the cache file path a directory: every write to it fails (as on a full or
    // read-only disk), and so does reading it at start.
    let blocked = env.dir.path().join("cache/certs").join(format!("{}.pem", fqdn("grafana")));
    std::fs::create_dir_all(&blocked).expect("mkdir");
    env.start_router().await;
    env.wait_serving("grafana", WAIT).await;
    let logs =
        env.router().wait_log("the cache write failure", WAIT, |l| l.contains("cannot write certificate cache")).await;
    assert!(logs.contains("serving from memory"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_deleted_while_running_keeps_serving() {
    let env = Env::start(EnvOptions::default()).await;
    env.wait_serving("grafana", WAIT).await;
    std::fs::remove_file(&env.config).expect("delete config");
    // Ask the daemon to re-read it: the reload is refused, naming the missing file.
    let pid = env.router().child.id().to_string();
    let hup = std::process::Command::new("kill").args(["-HUP", &pid]).status().expect("kill");
    assert!(hup.success());
    let logs = env.router().wait_log("the refused reload", WAIT, |l| l.contains("reload refused")).await;
    let file = env.config.file_name().and_then(|f| f.to_str()).expect("file name");
    assert!(logs.lines().any(|l| l.contains("reload refused") && l.contains(file)), "{logs}");
    for name in ["grafana", "jellyfin"] {
        let (_, status) = body_and_status(&curl(&env, name, "/", &[]).await);
        assert_eq!(status, 200, "{name}");
    }
}

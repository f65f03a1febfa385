//! systemd's `Type=notify` protocol as the router speaks it: `READY=1` only once the
//! listeners accept, `RELOADING=1` with `MONOTONIC_USEC` then `READY=1` around a reload,
//! `STOPPING=1` at shutdown — to a path socket and to one in the abstract namespace.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::time::Duration;

use crate::harness::*;

/// The next notification, or a panic naming what was expected.
fn next(sock: &UnixDatagram, what: &str) -> String {
    let mut buf = [0u8; 512];
    match sock.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => panic!("no notification ({what}) within the timeout: {e}"),
    }
}

fn monotonic_usec() -> i128 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    t.tv_sec() as i128 * 1_000_000 + t.tv_nsec() as i128 / 1_000
}

fn signal(router: &RouterProcess, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(router.child.id() as i32);
    nix::sys::signal::kill(pid, sig).expect("signal the router");
}

#[tokio::test(flavor = "multi_thread")]
async fn systemd_hears_ready_after_the_listeners_bind_then_reloading_and_stopping() {
    let env = Env::start(EnvOptions { start_router: false, ..Default::default() }).await;
    let path = env.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");

    let log = env.dir.path().join("router-notify.log");
    let notify = path.display().to_string();
    let mut router = RouterProcess::start_with_env(&env.config, &log, &[("NOTIFY_SOCKET", notify.as_str())]);
    assert_eq!(next(&sock, "READY=1 at start"), "READY=1");
    // READY=1 means the listener accepts: the connect below needs no retry.
    std::net::TcpStream::connect(env.https).expect("the TLS listener accepts once READY=1 was sent");

    signal(&router, nix::sys::signal::Signal::SIGHUP);
    let reloading = next(&sock, "RELOADING=1 on SIGHUP");
    let mut lines = reloading.lines();
    assert_eq!(lines.next(), Some("RELOADING=1"), "{reloading}");
    let usec: i128 = lines
        .next()
        .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC beside RELOADING=1: {reloading:?}"));
    assert!((monotonic_usec() - usec).abs() < 30_000_000, "MONOTONIC_USEC {usec} is not the monotonic clock");
    assert_eq!(next(&sock, "READY=1 after the reload"), "READY=1");

    signal(&router, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(next(&sock, "STOPPING=1 on SIGTERM"), "STOPPING=1");
    router.stop();

    // systemd documents a leading `@` as a socket in the abstract namespace.
    let name = format!("snirouter-e2e-notify-{}", std::process::id());
    let addr = UnixAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
    let sock = UnixDatagram::bind_addr(&addr).expect("bind the abstract notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let notify = format!("@{name}");
    let log = env.dir.path().join("router-notify-abstract.log");
    let _router = RouterProcess::start_with_env(&env.config, &log, &[("NOTIFY_SOCKET", notify.as_str())]);
    assert_eq!(next(&sock, "READY=1 on the abstract socket"), "READY=1");
}

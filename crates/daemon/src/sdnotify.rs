//! systemd notifications (`Type=notify`): `READY=1` once the listeners are bound,
//! `RELOADING=1` with `MONOTONIC_USEC` around a reload, `STOPPING=1`, and the watchdog's
//! `WATCHDOG=1` — one datagram each to `$NOTIFY_SOCKET`; without it nothing is sent.
//!
//! Written here rather than taken from the `sd-notify` crate: its 0.5 release connects
//! to `$NOTIFY_SOCKET` as a path only, and systemd documents a leading `@` as a socket in
//! the abstract namespace, which this module honours.

use std::time::Duration;

/// Sends `state` (lines such as `READY=1`) to systemd if it is listening. Errors are
/// logged, never fatal: a router that cannot tell systemd still serves.
fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let path = std::path::PathBuf::from(path);
    let result = (|| {
        let sock = std::os::unix::net::UnixDatagram::unbound()?;
        let bytes = path.as_os_str().as_encoded_bytes();
        if let Some(abstract_name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            sock.send_to(state.as_bytes(), &path)?;
        }
        Ok::<_, std::io::Error>(())
    })();
    if let Err(e) = result {
        tracing::warn!(socket = %path.display(), error = %e, "cannot notify systemd");
    }
}

/// Start-up or a reload is done: the listeners are bound and serve.
pub(crate) fn ready() {
    send("READY=1");
}

/// A reload begins. systemd ≥ 253 wants the monotonic time beside it.
pub(crate) fn reloading() {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(t) => {
            let usec = t.tv_sec() as i128 * 1_000_000 + t.tv_nsec() as i128 / 1_000;
            send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
        }
        Err(_) => send("RELOADING=1"),
    }
}

/// Shutdown begins.
pub(crate) fn stopping() {
    send("STOPPING=1");
}

/// The watchdog ping interval: half of `$WATCHDOG_USEC` when systemd asked for pings
/// (`WatchdogSec=` in the unit) and `$WATCHDOG_PID`, if set, is this process.
pub(crate) fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Sends `WATCHDOG=1` every `period` until `shutdown` turns true. The pings come from
/// the async runtime, so a wedged runtime stops them and systemd restarts the service.
pub(crate) async fn watchdog(period: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        send("WATCHDOG=1");
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

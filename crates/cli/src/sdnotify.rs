//! systemd readiness notification (`Type=notify`), without a libsystemd dependency:
//! one datagram to `$NOTIFY_SOCKET`.

/// Sends `state` (e.g. `READY=1`) to systemd if it is listening. Errors are logged,
/// never fatal: without systemd there is nobody to tell.
pub(crate) fn notify(state: &str) {
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

/// The watchdog ping interval: half of `$WATCHDOG_USEC` when systemd asked for pings
/// (`WatchdogSec=` in the unit) and `$WATCHDOG_PID`, if set, is this process.
pub(crate) fn watchdog_interval() -> Option<std::time::Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| std::time::Duration::from_micros(usec / 2))
}

/// Sends `WATCHDOG=1` every `period` until `shutdown` turns true. The pings come from
/// the async runtime, so a wedged runtime stops them and systemd restarts the service.
pub(crate) async fn watchdog(period: std::time::Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    loop {
        notify("WATCHDOG=1");
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

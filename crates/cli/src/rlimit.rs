//! Raising the open-file limit at start: every client connection and every pooled
//! upstream connection is a file descriptor, and the default soft limit (1024) would
//! cap a router at a few hundred idle clients.

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. Returns `(old, new)` soft limits.
#[allow(unsafe_code)] // libc's getrlimit/setrlimit; see the SAFETY notes.
pub(crate) fn raise_nofile() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let old = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((old, lim.rlim_cur))
}

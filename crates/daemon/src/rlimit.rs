//! Raising the open-file limit at start: every client connection and every pooled
//! upstream connection is a file descriptor, and the default soft limit (1024) would
//! cap a router at a few hundred idle clients.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. Returns `(old, new)` soft limits.
pub fn raise_nofile() -> std::io::Result<(u64, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok((soft, soft.max(hard)))
}

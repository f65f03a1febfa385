//! `snirouter-daemon`: the running router as a library — everything between a parsed
//! configuration and the data path that is not itself a policy of the data path.
//!
//! - [`start`]: start-up order (cached certificates, listeners, `READY=1`, then
//!   tailscaled) and the [`start::Daemon`] handle; [`reload`]: one reload, from re-reading
//!   the file to draining listeners no longer configured; [`shared`]: what both share.
//! - [`admin`]: the admin socket server; [`report`] builds what it answers from
//!   [`status`] (the status document's types); [`admin_client`] is the other end.
//! - [`doctor`]: `snirouter doctor`'s checks, one file per group; [`machine`] holds the
//!   checks of files and directories it shares with `check` and start-up; [`hairpin`]
//!   and [`exposure`] look at the host's network; [`config_file`] is the one place the
//!   config's text is read from disk.
//! - [`health`] (upstream probes), [`history`] (rate history for the status page),
//!   [`sdnotify`] and [`rlimit`]: the process's surroundings.
//!
//! The binary (`crates/cli`) parses arguments, formats output and picks exit codes.

mod admin;
pub mod admin_client;
pub mod config_file;
pub mod doctor;
mod exposure;
pub mod hairpin;
mod health;
mod history;
pub mod machine;
mod reload;
mod report;
pub mod rlimit;
mod sdnotify;
mod shared;
pub mod start;
pub mod status;

//! Output into a closed pipe (`snirouter status | head -1`, `check --print | less` quit
//! early) ends the command quietly, as it does for other Unix tools.
//!
//! Rust ignores `SIGPIPE`, so such a write fails with `EPIPE` and `println!` panics with
//! a backtrace. Restoring the signal's default would also let a socket write kill the
//! daemon, so instead a panic hook recognises that one failure and exits with status 0
//! (as ripgrep does); every other panic is reported as before.

use std::panic::PanicHookInfo;

/// Installs the hook; call first thing in `main`.
pub(crate) fn quiet_when_closed() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if is_closed_pipe(info) {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// `println!`'s panic when its stream was closed: "failed printing to stdout: Broken pipe".
fn is_closed_pipe(info: &PanicHookInfo<'_>) -> bool {
    let message = info
        .payload()
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| info.payload().downcast_ref::<&str>().copied())
        .unwrap_or_default();
    message.starts_with("failed printing to std") && message.contains("Broken pipe")
}

//! `snirouter hosts`: hosts-file lines that send every served name to this host's
//! loopback ([`snirouter_daemon::hairpin`] says why).

use std::path::Path;
use std::process::ExitCode;

use snirouter_daemon::hairpin;

/// `snirouter hosts`: prints a hosts-file line per loopback address and served name.
pub(crate) async fn run(config_path: &Path, suffix: Option<String>) -> ExitCode {
    let config = match snirouter_daemon::config_file::load(config_path) {
        Ok(c) => c,
        Err(diags) => {
            eprintln!("{diags}");
            return ExitCode::from(1);
        }
    };
    let suffix = match suffix.or_else(|| config.tailscale.magic_dns_suffix.clone()) {
        Some(s) => s,
        None => match hairpin::asked_suffix(&config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("snirouter hosts: cannot learn the MagicDNS suffix from tailscaled: {e}");
                eprintln!(
                    "  fix: pass it, e.g. `snirouter hosts --suffix tail1234.ts.net`, or set [tailscale] magic_dns_suffix"
                );
                return ExitCode::from(1);
            }
        },
    };
    print!("{}", hairpin::lines(&hairpin::fqdns(&config, &suffix)));
    ExitCode::SUCCESS
}

//! The configuration file on disk: the one place its text is read (`snirouter_config`
//! itself only parses text). An I/O error becomes a single diagnostic without position,
//! naming the cause and the fix.

use std::path::{Path, PathBuf};

use snirouter_config::{Config, Diagnostic, Diagnostics};

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, Diagnostics> {
    load_with_warnings(path).0
}

/// [`load`] with the warnings of [`snirouter_config::parse_with_warnings`].
pub fn load_with_warnings(path: &Path) -> (Result<Config, Diagnostics>, Vec<Diagnostic>) {
    let origin = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(source) => snirouter_config::parse_with_warnings(&source, &origin),
        Err(e) => (Err(Diagnostics(vec![unreadable(origin, &e)])), Vec::new()),
    }
}

/// The `[admin] socket` of the file at `path`, read leniently (see
/// [`snirouter_config::admin_socket_in`]). `None` when the file cannot be read or sets none.
pub fn admin_socket_of(path: &Path) -> Option<PathBuf> {
    snirouter_config::admin_socket_in(&std::fs::read_to_string(path).ok()?)
}

fn unreadable(origin: String, e: &std::io::Error) -> Diagnostic {
    Diagnostic {
        origin,
        line: 0,
        column: 0,
        key_path: String::new(),
        message: format!("cannot read the configuration file: {e}"),
        help: Some(match e.kind() {
            std::io::ErrorKind::NotFound => "check the path given to --config".to_owned(),
            std::io::ErrorKind::PermissionDenied => "make the file readable by the user snirouter runs as".to_owned(),
            _ => "check that the path is a readable UTF-8 text file".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "[listen]\nhttps = [\"0.0.0.0:443\"]\n[services.grafana]\nupstream = \"http://127.0.0.1:3000\"\n";

    #[test]
    fn io_errors_name_the_file_and_the_fix() {
        let path = Path::new("/nonexistent/snirouter-config-test.toml");
        let err = load(path).expect_err("missing file");
        assert_eq!(err.len(), 1);
        let d = &err.0[0];
        assert_eq!((d.line, d.column, d.key_path.as_str()), (0, 0, ""));
        assert!(
            d.to_string().starts_with("/nonexistent/snirouter-config-test.toml: cannot read the configuration file:"),
            "{d}"
        );
        assert_eq!(d.help.as_deref(), Some("check the path given to --config"));
    }

    #[test]
    fn a_readable_file_is_parsed_with_its_path_as_origin() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file_path = dir.path().join("ok.toml");
        std::fs::write(&file_path, OK).expect("write");
        let cfg = load(&file_path).expect("loads");
        assert_eq!(cfg.origin, file_path.display().to_string());
        std::fs::write(&file_path, "[listen]\nhttps = 5\n").expect("write");
        let err = load(&file_path).expect_err("invalid");
        assert!(err.0.iter().all(|d| d.origin == file_path.display().to_string()));
    }

    #[test]
    fn the_admin_socket_is_found_in_a_file_that_does_not_validate() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file_path = dir.path().join("edited.toml");
        std::fs::write(&file_path, "[admin]\nsocket = \"/run/x/admin.sock\"\n[services.a]\nupstream = 5\n")
            .expect("write");
        assert!(load(&file_path).is_err());
        assert_eq!(admin_socket_of(&file_path), Some(PathBuf::from("/run/x/admin.sock")));
        assert_eq!(admin_socket_of(&dir.path().join("missing.toml")), None);
    }
}

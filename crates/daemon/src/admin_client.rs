//! The admin socket's client side: which socket a command talks to, and one HTTP/1.1
//! exchange on it (`snirouter status`, `reload`, and `doctor`'s look at the running router).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Default config file, read for `[admin] socket` when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/snirouter/config.toml";

/// Why the admin socket could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Nothing listens on the socket.
    #[error("snirouter is not running: cannot connect to {}: {source}", path.display())]
    NotRunning {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The socket exists but this user may not use it.
    #[error(
        "cannot connect to {}: {source}\n  fix: run as root or as a member of the group owning the socket (mode 0660)",
        path.display()
    )]
    Permission {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The exchange failed.
    #[error("admin socket {}: {detail}", path.display())]
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

/// The admin socket to use: `[admin] socket` of `--config`, else of the default config
/// file when it exists and is valid, else the default path.
pub fn socket_path(config: Option<&Path>) -> Result<PathBuf, snirouter_config::Diagnostics> {
    match config {
        Some(path) => match crate::config_file::load(path) {
            Ok(c) => Ok(c.admin.socket),
            // An invalid file (being edited?) still names the running daemon's socket.
            Err(d) => match crate::config_file::admin_socket_of(path) {
                Some(socket) => Ok(socket),
                None if std::fs::metadata(path).is_ok() => Ok(PathBuf::from(snirouter_config::DEFAULT_ADMIN_SOCKET)),
                None => Err(d),
            },
        },
        None => Ok(crate::config_file::load(Path::new(DEFAULT_CONFIG))
            .map(|c| c.admin.socket)
            .unwrap_or_else(|_| PathBuf::from(snirouter_config::DEFAULT_ADMIN_SOCKET))),
    }
}

/// One HTTP/1.1 exchange on the admin socket. Returns status and body.
pub async fn request(socket: &Path, method: http::Method, path: &str) -> Result<(u16, String), AdminError> {
    let proto = |detail: String| AdminError::Protocol { path: socket.to_owned(), detail };
    let stream = match tokio::net::UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(source) if source.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(AdminError::Permission { path: socket.to_owned(), source });
        }
        Err(source) => return Err(AdminError::NotRunning { path: socket.to_owned(), source }),
    };
    let exchange = async {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| proto(e.to_string()))?;
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "snirouter")
            .body(Full::new(Bytes::new()))
            .map_err(|e| proto(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(|e| proto(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| proto(e.to_string()))?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    // A reload re-reads and validates the file; everything else is immediate.
    tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .map_err(|_| proto("no answer within 60s".to_owned()))?
}

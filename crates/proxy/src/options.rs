//! The data path's timeouts and limits, taken from the config file.

use std::time::Duration;

use crate::proxy_header;

/// Timeouts and limits of the data path.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Time allowed for the PROXY header.
    pub proxy_header_timeout: Duration,
    /// Time allowed for the ClientHello plus the TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Time allowed to receive a request's headers.
    pub request_header_timeout: Duration,
    /// A connection, or a body, with no bytes moving for this long is closed.
    pub idle_timeout: Duration,
    /// An upgraded tunnel with no bytes moving for this long is closed (`None`: never).
    pub tunnel_idle_timeout: Option<Duration>,
    /// Upstream connect timeout (TCP and TLS).
    pub upstream_connect_timeout: Duration,
    /// Time for an upstream to start answering once the request body was sent.
    pub upstream_response_timeout: Duration,
    /// Largest request head accepted.
    pub max_header_bytes: usize,
    /// Connections served at once; more are closed at accept.
    pub max_connections: usize,
    /// Connections from one client address; more are closed.
    pub max_connections_per_client: usize,
    /// Requests in flight to one upstream address (`None`: no cap).
    pub max_upstream_connections: Option<usize>,
    /// HTTP/2 streams open at once on one connection.
    pub max_streams_per_connection: u32,
    /// Unread answer bytes one connection may hold (`budget.rs`).
    pub buffer_per_connection: usize,
    /// The same for all connections of one client address.
    pub buffer_per_client: usize,
    /// The same across the process.
    pub buffer_total: usize,
    /// Peers whose PROXY headers `proxy_protocol` listeners accept.
    pub proxy_senders: proxy_header::Senders,
    /// `[log] access_format`.
    pub access_format: snirouter_config::AccessFormat,
    /// `[log] access_file` (`None`: standard error).
    pub access_file: Option<std::path::PathBuf>,
}

impl ProxyOptions {
    /// Options from the config file.
    pub fn from_config(cfg: &snirouter_config::Config) -> ProxyOptions {
        ProxyOptions {
            proxy_header_timeout: cfg.timeouts.proxy_header,
            tls_handshake_timeout: cfg.timeouts.tls_handshake,
            request_header_timeout: cfg.timeouts.request_header,
            idle_timeout: cfg.timeouts.idle,
            tunnel_idle_timeout: cfg.timeouts.tunnel_idle,
            upstream_connect_timeout: cfg.timeouts.upstream_connect,
            upstream_response_timeout: cfg.timeouts.upstream_response,
            max_header_bytes: cfg.limits.max_header_bytes,
            max_connections: cfg.limits.max_connections,
            max_connections_per_client: cfg.limits.max_connections_per_client,
            max_upstream_connections: cfg.limits.max_upstream_connections,
            max_streams_per_connection: cfg.limits.max_streams_per_connection,
            buffer_per_connection: cfg.limits.buffer_per_connection,
            buffer_per_client: cfg.limits.buffer_per_client,
            buffer_total: cfg.limits.buffer_total,
            proxy_senders: proxy_header::Senders::new(cfg.listen.proxy_senders()),
            access_format: cfg.log.access_format,
            access_file: cfg.log.access_file.clone(),
        }
    }
}

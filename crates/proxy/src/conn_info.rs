//! What the HTTP stage knows about its connection: the client (after the PROXY
//! header), the SNI name, and the admission the connection holds.

use std::net::SocketAddr;

use http::HeaderValue;

use crate::admit::Admitted;

/// What the HTTP stage knows about its connection.
#[derive(Debug)]
pub struct ConnInfo {
    /// The client: the PROXY header's source, or the TCP peer.
    pub client: SocketAddr,
    /// The SNI name the TLS session was opened for (lowercase, no trailing dot).
    pub sni: String,
    /// The local address the connection arrived on.
    pub local: Option<SocketAddr>,
    /// `client`'s IP as a header value (`X-Forwarded-For`, `X-Real-IP`), made once per
    /// connection.
    pub(crate) client_ip: HeaderValue,
    /// The connection's admission, kept by any tunnel it turns into.
    _hold: Admitted,
}

impl ConnInfo {
    /// What is known of a connection from `client` for the TLS name `sni`; `hold` is
    /// its admission, released when the connection and any tunnel it became are gone.
    pub fn new(client: SocketAddr, sni: String, local: Option<SocketAddr>, hold: Admitted) -> ConnInfo {
        // An IP address is always a valid header value.
        let client_ip = HeaderValue::from_str(&client.ip().to_string()).unwrap_or(HeaderValue::from_static("unknown"));
        ConnInfo { client, sni, local, client_ip, _hold: hold }
    }

    /// The client's share of the memory budget.
    pub(crate) fn client_budget(&self) -> std::sync::Arc<crate::budget::Level> {
        std::sync::Arc::clone(self._hold.client_budget())
    }
}

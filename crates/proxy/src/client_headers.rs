//! Request headers a client may not set: what the router itself says about the
//! connection. Removed from every client request on every service ([`strip`]) before
//! any policy runs:
//!
//! * identity: the five `Tailscale-*` names of [`crate::identity::HEADERS`];
//! * every `forward_auth.copy_headers` name of the whole config (`Remote-User` …);
//! * forwarding: `Forwarded`, `X-Forwarded-Port`, `X-Forwarded-Prefix` and
//!   `X-Forwarded-Server` are dropped (as rpxy and Traefik do for untrusted clients);
//!   `X-Forwarded-For`, `-Proto`, `-Host` and `X-Real-IP` are replaced by `forward.rs`;
//! * the same names spelled with `_` for `-` (`Tailscale_User_Login`, `Remote_User`):
//!   CGI, WSGI and PHP-FPM fold both spellings into one variable (`HTTP_REMOTE_USER`),
//!   where the forged copy could win over the real one.

use http::header::{self, HeaderMap, HeaderName};

/// `X-Forwarded-For`: replaced with the client address.
pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`: replaced with `https`.
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`: replaced with the request's Host.
pub(crate) const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Real-IP`: replaced with the client address.
pub(crate) const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Forwarding headers this router sets or drops.
static FORWARDING: [HeaderName; 8] = [
    header::FORWARDED,
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-forwarded-server"),
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_REAL_IP,
];

/// Removes every header a client may not set, in any spelling; `copied` are the
/// config's `forward_auth.copy_headers` names. One pass over the names the request has,
/// then a removal only for those present (removing every protected name, present or
/// not, hashed and probed the map ~13 times per request).
pub(crate) fn strip(headers: &mut HeaderMap, copied: &[HeaderName]) {
    let protected = || crate::identity::HEADERS.iter().chain(&FORWARDING).chain(copied);
    let is_protected = |k: &HeaderName| {
        // Names are lowercase here; most requests have no `_` in any of them.
        protected().any(|p| p == k)
            || (k.as_str().contains('_') && {
                let dashed = k.as_str().replace('_', "-");
                protected().any(|p| p.as_str() == dashed)
            })
    };
    let present: Vec<HeaderName> = headers.keys().filter(|k| is_protected(k)).cloned().collect();
    for name in present {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn every_spelling_of_a_protected_header_is_removed() {
        let mut h = HeaderMap::new();
        for n in [
            "Tailscale-User-Login",
            "tailscale-user-name",
            "TAILSCALE-USER-PROFILE-PIC",
            "Tailscale-Funnel-Request",
            "Tailscale-Headers-Info",
            "Tailscale_User_Login",
            "tailscale_user-name",
            "Remote-User",
            "Remote_User",
            "REMOTE_EMAIL",
            "Forwarded",
            "X-Forwarded-Port",
            "X-Forwarded-Prefix",
            "X-Forwarded-Server",
            "X_Forwarded_For",
            "x-forwarded-proto",
            "X-Real-IP",
        ] {
            h.append(HeaderName::from_bytes(n.as_bytes()).expect("name"), HeaderValue::from_static("forged"));
        }
        h.append(crate::identity::USER_LOGIN, HeaderValue::from_static("second"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        h.insert("x_kept_too", HeaderValue::from_static("1"));
        let copied = [HeaderName::from_static("remote-user"), HeaderName::from_static("remote-email")];
        strip(&mut h, &copied);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["x-kept", "x_kept_too"]);
    }
}

//! `[listen] trusted_proxies` and `client_ip_headers`: which peers may say who the
//! client is, and in which headers (Caddy's `trusted_proxies` + `client_ip_headers`,
//! nginx's `set_real_ip_from` + `real_ip_header`).

use http::HeaderName;
use ipnet::IpNet;

use crate::checks::{self, Problem};
use crate::schema::Listen;
use crate::validate::{Entry, Validator, find};

/// What a trusted proxy list may hold.
const FORMS: &str = "write addresses or CIDR ranges of the proxies in front of snirouter, e.g. trusted_proxies = [\"127.0.0.1/32\", \"::1/128\"] for a tunnel (cloudflared) on this host, or \"private_ranges\" for every private network";

/// One `trusted_proxies` entry: `private_ranges` or one network; never "everyone".
fn parse_trusted(raw: &str) -> Result<Vec<IpNet>, Problem> {
    if raw.trim() == "private_ranges" {
        return Ok(Listen::PRIVATE_RANGES.to_vec());
    }
    let net = checks::parse_ip_net(raw)?;
    if net.prefix_len() == 0 {
        return Err(Problem::new(
            format!(
                "trusted_proxies entry {raw:?} trusts every address, so any visitor could claim to be any client (and pass as an address that allow admits)"
            ),
            Some(FORMS.to_owned()),
        ));
    }
    Ok(vec![net])
}

/// One `client_ip_headers` entry: a header name, lowercase.
fn parse_header(raw: &str) -> Result<String, Problem> {
    let name = raw.trim();
    match HeaderName::from_bytes(name.as_bytes()) {
        Ok(h) if !name.is_empty() => Ok(h.as_str().to_owned()),
        _ => Err(Problem::new(
            format!("{raw:?} cannot be a header name"),
            Some("write header names such as \"X-Forwarded-For\", \"CF-Connecting-IP\" or \"Forwarded\"".to_owned()),
        )),
    }
}

impl Validator<'_> {
    /// `trusted_proxies` and `client_ip_headers` of `[listen]`.
    pub(crate) fn client_trust(&mut self, fields: &[Entry<'_>], listen: &mut Listen) {
        if let Some(e) = find(fields, "trusted_proxies") {
            listen.trusted_proxies = self.strings(e, "address or CIDR range", parse_trusted).concat();
            listen.trusted_proxies.dedup();
        }
        let Some(e) = find(fields, "client_ip_headers") else { return };
        let headers = self.strings(e, "header name", parse_header);
        if e.item.as_array().is_some_and(|a| a.is_empty()) {
            self.error(
                e.value_span(),
                &e.path,
                "client_ip_headers = [] names no header to read the client from",
                Some(
                    "remove the key (default: X-Forwarded-For) or list headers, e.g. [\"CF-Connecting-IP\"]".to_owned(),
                ),
            );
        }
        if find(fields, "trusted_proxies").is_none() {
            self.error(
                e.key_span(),
                &e.path,
                "client_ip_headers is read only from trusted_proxies, and none are configured",
                Some(format!("add the proxies whose headers to believe under [listen]: {FORMS}")),
            );
        }
        if !headers.is_empty() {
            listen.client_ip_headers = headers;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_entries() {
        assert_eq!(parse_trusted("127.0.0.1").expect("one host"), ["127.0.0.1/32".parse::<IpNet>().expect("net")]);
        assert_eq!(parse_trusted("private_ranges").expect("shorthand").len(), 6);
        for everyone in ["0.0.0.0/0", "::/0"] {
            let p = parse_trusted(everyone).expect_err(everyone);
            assert!(p.message.contains("trusts every address"), "{}", p.message);
        }
        assert!(parse_trusted("10.0.0.1/8").is_err(), "host bits set");
        assert!(parse_trusted("localhost").is_err());
    }

    #[test]
    fn header_names() {
        assert_eq!(parse_header("CF-Connecting-IP").expect("name"), "cf-connecting-ip");
        for bad in ["", "X Forwarded", "x-forwarded-for:"] {
            assert!(parse_header(bad).is_err(), "{bad:?}");
        }
    }
}

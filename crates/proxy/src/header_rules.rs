//! `request_headers` / `response_headers`: the configured removals and sets, parsed
//! once per route table and applied to the request sent upstream (after everything
//! snirouter adds) and to every answer of the service.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use snirouter_config::HeaderRules;

/// One direction's rules, ready to apply.
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderOps {
    /// Parses validated rules (a name or value that does not parse is skipped: the
    /// config crate already refused those).
    pub(crate) fn new(rules: &HeaderRules) -> HeaderOps {
        HeaderOps {
            remove: rules.remove.iter().filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok()).collect(),
            set: rules
                .set
                .iter()
                .filter_map(|(n, v)| Some((HeaderName::from_bytes(n.as_bytes()).ok()?, HeaderValue::from_str(v).ok()?)))
                .collect(),
        }
    }

    /// Removes, then sets (replacing every value of the name).
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_then_sets() {
        let ops = HeaderOps::new(&HeaderRules {
            remove: vec!["x-middleware-subrequest".into(), "server".into()],
            set: vec![("x-frame-options".into(), "DENY".into()), ("server".into(), "snirouter".into())],
        });
        let mut h = HeaderMap::new();
        h.append("X-Middleware-Subrequest", HeaderValue::from_static("middleware"));
        h.append("x-frame-options", HeaderValue::from_static("ALLOW"));
        h.append("x-frame-options", HeaderValue::from_static("ALLOW2"));
        h.insert("server", HeaderValue::from_static("nginx"));
        ops.apply(&mut h);
        assert!(h.get("x-middleware-subrequest").is_none());
        assert_eq!(h.get_all("x-frame-options").iter().collect::<Vec<_>>(), ["DENY"]);
        assert_eq!(h["server"], "snirouter");
    }
}

//! `Retry-After` (delta seconds, or an HTTP-date) as a wait.

use std::time::{Duration, SystemTime};

/// Parses an HTTP `Retry-After` value: delta-seconds, or an HTTP-date in any of its three
/// forms (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 850, asctime), converted relative to now and
/// saturating at zero.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    parse_retry_after_at(value, SystemTime::now())
}

pub(crate) fn parse_retry_after_at(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse::<u64>().ok().map(Duration::from_secs);
    }
    // IMF-fixdate, and the obsolete RFC 850 and asctime forms recipients must accept.
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_values() {
        use std::time::UNIX_EPOCH;
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after_at("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after_at(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after_at("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after_at("Sun, 06 Nov 1994 08:51:37 GMT", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after_at("Mon, 07 Nov 1994 08:49:37 GMT", now), Some(Duration::from_secs(86_400)));
        // In the past saturates to zero.
        assert_eq!(parse_retry_after_at("Sat, 05 Nov 1994 08:49:37 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after_at("Sunday, 06-Nov-94 08:51:37 GMT", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after_at("Sun Nov  6 08:51:37 1994", now), Some(Duration::from_secs(120)));
        let leap = UNIX_EPOCH + Duration::from_secs(1_835_438_400);
        assert_eq!(parse_retry_after_at("Tue, 29 Feb 2028 12:00:10 GMT", leap), Some(Duration::from_secs(10)));
        assert_eq!(parse_retry_after_at("soon", now), None);
        assert_eq!(parse_retry_after_at("", now), None);
        assert_eq!(parse_retry_after_at("-5", now), None);
        assert_eq!(parse_retry_after_at("Sun, 06 Nov 1994 08:49:37 PST", now), None);
    }
}

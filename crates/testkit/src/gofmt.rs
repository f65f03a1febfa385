//! Small re-implementations of Go standard-library behaviour that tailscaled's
//! responses depend on byte-for-byte: `%q` quoting, `time.ParseDuration` and its
//! error texts, `url.ParseQuery`, path unescaping, and `encoding/json`'s
//! HTML-safe escaping and `SetIndent("", "\t")` layout.
//!
//! Everything here takes untrusted request input and must never panic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Go `strconv.Quote` (what `fmt` `%q` uses for a string).
///
/// Printable characters are kept, `"` and `\` are escaped, the usual C escapes
/// are used for control characters, and other non-printable characters use
/// `\xNN`, `\uNNNN` or `\UNNNNNNNN` like Go.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Approximation of Go's `strconv.IsPrint` for non-ASCII characters: control
/// characters, the C1 block, surrogates/private-use and the explicit
/// separators are non-printable.
fn is_go_printable(c: char) -> bool {
    let u = c as u32;
    if c.is_control() {
        return false;
    }
    !matches!(u, 0x00AD | 0x2028 | 0x2029 | 0xFEFF | 0xE000..=0xF8FF | 0xFFF9..=0xFFFB)
}

/// Go `fmt.Sprintf("%q", []string{...})`: `["a" "b"]` (space separated).
pub fn quote_slice<S: AsRef<str>>(items: &[S]) -> String {
    let parts: Vec<String> = items.iter().map(|s| quote(s.as_ref())).collect();
    format!("[{}]", parts.join(" "))
}

/// The `time` package's private `quote` helper used in duration errors: ASCII
/// printable kept, `"`/`\` escaped, everything else as `\xNN` per byte.
fn time_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        if (c as u32) >= 0x80 || (c as u32) < 0x20 {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        } else {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out.push('"');
    out
}

/// A parsed Go duration (`time.Duration`, nanoseconds, may be negative).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoDuration(pub i64);

impl GoDuration {
    /// The duration clamped to non-negative, as a [`Duration`].
    pub fn to_std_saturating(self) -> Duration {
        if self.0 <= 0 { Duration::ZERO } else { Duration::from_nanos(self.0 as u64) }
    }
}

const NS: u64 = 1;
const US: u64 = 1_000 * NS;
const MS: u64 = 1_000 * US;
const SEC: u64 = 1_000 * MS;
const MIN: u64 = 60 * SEC;
const HOUR: u64 = 60 * MIN;

fn unit_value(u: &str) -> Option<u64> {
    Some(match u {
        "ns" => NS,
        "us" | "\u{b5}s" | "\u{3bc}s" => US,
        "ms" => MS,
        "s" => SEC,
        "m" => MIN,
        "h" => HOUR,
        _ => return None,
    })
}

/// Port of Go's `time.ParseDuration`, including its exact error strings
/// (`time: invalid duration "x"`, `time: missing unit in duration "1"`,
/// `time: unknown unit "x" in duration "1x"`).
pub fn parse_duration(orig: &str) -> Result<GoDuration, String> {
    let invalid = || format!("time: invalid duration {}", time_quote(orig));
    let mut s = orig.as_bytes();
    let mut neg = false;
    if let Some(&c) = s.first()
        && (c == b'-' || c == b'+')
    {
        neg = c == b'-';
        s = &s[1..];
    }
    if s == b"0" {
        return Ok(GoDuration(0));
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut d: u64 = 0;
    while !s.is_empty() {
        let c = s[0];
        if !(c == b'.' || c.is_ascii_digit()) {
            return Err(invalid());
        }
        let (mut v, rest) = leading_int(s).ok_or_else(invalid)?;
        let pre = rest.len() != s.len();
        s = rest;
        let (mut post, mut f, mut scale) = (false, 0u64, 1.0f64);
        if let Some(rest) = s.strip_prefix(b".") {
            let (frac, frac_scale, after) = leading_fraction(rest);
            (post, f, scale) = (after.len() != rest.len(), frac, frac_scale);
            s = after;
        }
        if !pre && !post {
            return Err(invalid());
        }
        // unit
        let mut k = 0;
        while k < s.len() && !(s[k] == b'.' || s[k].is_ascii_digit()) {
            k += 1;
        }
        if k == 0 {
            return Err(format!("time: missing unit in duration {}", time_quote(orig)));
        }
        let u = String::from_utf8_lossy(&s[..k]).into_owned();
        s = &s[k..];
        let Some(unit) = unit_value(&u) else {
            return Err(format!("time: unknown unit {} in duration {}", time_quote(&u), time_quote(orig)));
        };
        if v > (1u64 << 63) / unit {
            return Err(invalid());
        }
        v *= unit;
        if f > 0 {
            v += (f as f64 * (unit as f64 / scale)) as u64;
            if v > 1u64 << 63 {
                return Err(invalid());
            }
        }
        d = d.saturating_add(v);
        if d > 1u64 << 63 {
            return Err(invalid());
        }
    }
    if neg {
        // d <= 1<<63, so the negation always fits.
        return Ok(GoDuration((d as i128).wrapping_neg() as i64));
    }
    if d > (1u64 << 63) - 1 {
        return Err(invalid());
    }
    Ok(GoDuration(d as i64))
}

/// Go's `leadingInt`: the leading digits of `s` and the rest; `None` on overflow
/// past 1<<63.
fn leading_int(s: &[u8]) -> Option<(u64, &[u8])> {
    let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
    let mut v: u64 = 0;
    for &c in &s[..digits] {
        if v > (1u64 << 63) / 10 {
            return None;
        }
        v = v * 10 + u64::from(c - b'0');
        if v > 1u64 << 63 {
            return None;
        }
    }
    Some((v, &s[digits..]))
}

/// Go's `leadingFraction`: the digits after a `.` as a value and a scale (digits past
/// the point where the value would overflow are consumed but ignored), and the rest.
fn leading_fraction(s: &[u8]) -> (u64, f64, &[u8]) {
    let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
    let (mut f, mut scale, mut overflow) = (0u64, 1.0f64, false);
    for &c in &s[..digits] {
        if overflow {
            continue;
        }
        if f > ((1u64 << 63) - 1) / 10 {
            overflow = true;
            continue;
        }
        let y = f * 10 + u64::from(c - b'0');
        if y > 1u64 << 63 {
            overflow = true;
            continue;
        }
        (f, scale) = (y, scale * 10.0);
    }
    (f, scale, &s[digits..])
}

/// Go `time.Duration.String()` for non-negative whole-second durations
/// (enough for `168h0m0s`-style messages).
pub fn format_duration_secs(secs: u64) -> String {
    if secs == 0 {
        return "0s".to_string();
    }
    let h = secs / 3600;
    let m = (secs % 3600) / 60;
    let s = secs % 60;
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

fn unhex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decode (`url.PathUnescape`-like when `plus_is_space` is false,
/// `url.QueryUnescape` when true). `None` on a malformed escape or non-UTF-8.
pub fn unescape(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = unhex(*b.get(i + 1)?)?;
                let lo = unhex(*b.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Go `url.ParseQuery` (lenient: malformed pairs are skipped, as `r.URL.Query()`
/// ignores the error). Keys keep their first-seen order.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for part in q.split('&') {
        if part.is_empty() || part.contains(';') {
            continue;
        }
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let (Some(k), Some(v)) = (unescape(k, true), unescape(v, true)) else {
            continue;
        };
        out.push((k, v));
    }
    out
}

/// `url.Values.Get`: the first value for `key`, or `""`.
pub fn query_get<'a>(q: &'a [(String, String)], key: &str) -> &'a str {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or("")
}

/// Go `strconv.ParseBool`.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Apply Go `encoding/json`'s default HTML escaping (`<`, `>`, `&`, U+2028,
/// U+2029) to already-serialized JSON. Those characters can only occur inside
/// JSON strings, so a textual replacement is exact.
pub fn go_json_escape(json: String) -> String {
    if !json.contains(['<', '>', '&', '\u{2028}', '\u{2029}']) {
        return json;
    }
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// Go `json.Encoder` with `SetIndent("", "\t")`: tab-indented, `": "`
/// separators, trailing newline.
pub fn to_go_json_indented<T: serde::Serialize>(v: &T) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    if v.serialize(&mut ser).is_err() {
        return "null\n".to_string();
    }
    let mut s = go_json_escape(String::from_utf8_lossy(&buf).into_owned());
    s.push('\n');
    s
}

/// A JSON object whose members serialize in the given order, as Go writes a
/// struct's fields (a `serde_json::Map` here would sort them).
#[derive(Clone, Debug)]
pub struct Ordered(pub Vec<(&'static str, serde_json::Value)>);

impl serde::Serialize for Ordered {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Go `json.Marshal` (compact, no trailing newline).
pub fn to_go_json_compact<T: serde::Serialize>(v: &T) -> String {
    go_json_escape(serde_json::to_string(v).unwrap_or_else(|_| "null".to_string()))
}

/// Format a time as Go's `time.Time.String()`-like `2006-01-02 15:04:05 UTC`
/// (used in Let's Encrypt rate-limit texts).
pub fn format_utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// Format a time as RFC 3339 UTC with second precision (`2025-10-01T12:00:00Z`).
pub fn format_rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, (rem % 3600) / 60, rem % 60)
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Lower-case hex encoding.
pub fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b0 = chunk[0] as u32;
        let b1 = chunk.get(1).copied().unwrap_or(0) as u32;
        let b2 = chunk.get(2).copied().unwrap_or(0) as u32;
        let n = b0 << 16 | b1 << 8 | b2;
        out.push(T[(n >> 18 & 63) as usize] as char);
        out.push(T[(n >> 12 & 63) as usize] as char);
        out.push(if chunk.len() > 1 { T[(n >> 6 & 63) as usize] as char } else { '=' });
        out.push(if chunk.len() > 2 { T[(n & 63) as usize] as char } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_like_go() {
        assert_eq!(quote("a.b.ts.net"), "\"a.b.ts.net\"");
        assert_eq!(quote("a\"b\\c\n\x01"), "\"a\\\"b\\\\c\\n\\x01\"");
        assert_eq!(quote("é"), "\"é\"");
        assert_eq!(quote_slice(&["a", "b"]), "[\"a\" \"b\"]");
        assert_eq!(quote_slice::<&str>(&[]), "[]");
    }

    #[test]
    fn parse_duration_like_go() {
        assert_eq!(parse_duration("0"), Ok(GoDuration(0)));
        assert_eq!(parse_duration("0s"), Ok(GoDuration(0)));
        assert_eq!(parse_duration("720h"), Ok(GoDuration(720 * 3600 * 1_000_000_000)));
        assert_eq!(parse_duration("1.5s"), Ok(GoDuration(1_500_000_000)));
        assert_eq!(parse_duration("1h2m3s"), Ok(GoDuration(3723 * 1_000_000_000)));
        assert_eq!(parse_duration("-2m"), Ok(GoDuration(-120 * 1_000_000_000)));
        assert_eq!(parse_duration("1µs"), Ok(GoDuration(1000)));
        assert_eq!(parse_duration("abc").unwrap_err(), "time: invalid duration \"abc\"");
        assert_eq!(parse_duration("").unwrap_err(), "time: invalid duration \"\"");
        assert_eq!(parse_duration("1").unwrap_err(), "time: missing unit in duration \"1\"");
        assert_eq!(parse_duration("1x").unwrap_err(), "time: unknown unit \"x\" in duration \"1x\"");
        assert_eq!(parse_duration(".s").unwrap_err(), "time: invalid duration \".s\"");
        assert_eq!(
            parse_duration("99999999999999999999h").unwrap_err(),
            "time: invalid duration \"99999999999999999999h\""
        );
        assert_eq!(parse_duration("1é").unwrap_err(), "time: unknown unit \"\\xc3\\xa9\" in duration \"1\\xc3\\xa9\"");
    }

    #[test]
    fn query_and_unescape() {
        let q = parse_query("type=pair&min_validity=1h%2030m&x&a+b=c+d&bad=%zz");
        assert_eq!(query_get(&q, "type"), "pair");
        assert_eq!(query_get(&q, "min_validity"), "1h 30m");
        assert_eq!(query_get(&q, "x"), "");
        assert_eq!(query_get(&q, "a b"), "c d");
        assert_eq!(query_get(&q, "bad"), "");
        assert_eq!(unescape("%2A.x", false).as_deref(), Some("*.x"));
        assert_eq!(unescape("%", false), None);
    }

    #[test]
    fn encoders() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(format_duration_secs(168 * 3600), "168h0m0s");
        assert_eq!(format_utc(UNIX_EPOCH + Duration::from_secs(1_700_000_000)), "2023-11-14 22:13:20 UTC");
        assert_eq!(format_rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(go_json_escape("\"<a&b>\"".into()), "\"\\u003ca\\u0026b\\u003e\"");
        let v = serde_json::json!({"a": [1], "b": [], "c": null});
        assert_eq!(to_go_json_indented(&v), "{\n\t\"a\": [\n\t\t1\n\t],\n\t\"b\": [],\n\t\"c\": null\n}\n");
    }
}

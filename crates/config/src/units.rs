//! Human-readable durations (`"10s"`, `"500ms"`, `"1h30m"`) and sizes (`"64KiB"`, `"5MB"`).

use std::time::Duration;

/// Parses a human duration such as `"5s"`, `"500ms"`, `"2m"`, `"1h"` or `"1h30m"`.
///
/// Units: `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`, `d`. Each component is a non-negative
/// number with an optional decimal fraction (`"1.5s"`). A bare number without a unit is
/// rejected because it is ambiguous.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("empty duration; write e.g. \"10s\", \"500ms\", \"2m\" or \"1h\"".to_owned());
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        if num.is_empty() {
            return Err(format!(
                "invalid duration \"{s}\": expected a number at \"{rest}\"; write e.g. \"10s\" or \"1h30m\""
            ));
        }
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let unit = unit.trim();
        let nanos_per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" | "sec" | "secs" => 1_000_000_000,
            "m" | "min" | "mins" => 60_000_000_000,
            "h" | "hr" | "hrs" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            "" => {
                return Err(format!("duration \"{s}\" has no unit; write e.g. \"{num}s\" (units: ms, s, m, h, d)"));
            }
            other => {
                return Err(format!("unknown duration unit \"{other}\" in \"{s}\"; use one of ns, us, ms, s, m, h, d"));
            }
        };
        let nanos =
            scaled(num, nanos_per_unit).ok_or_else(|| format!("invalid number \"{num}\" in duration \"{s}\""))?;
        total = total.checked_add(nanos).ok_or_else(|| format!("duration \"{s}\" is too large"))?;
        rest = next.trim_start();
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| format!("duration \"{s}\" is too large"))?;
    // The remainder is < 1e9 and therefore fits in u32.
    let sub = u32::try_from(total % 1_000_000_000).map_err(|_| format!("duration \"{s}\" is too large"))?;
    Ok(Duration::new(secs, sub))
}

/// `num` (digits with optional `.fraction`) times `scale`, truncated to an integer.
fn scaled(num: &str, scale: u128) -> Option<u128> {
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if frac.contains('.') || int.len() > 30 {
        return None;
    }
    let int_val: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut value = int_val.checked_mul(scale)?;
    let mut denom: u128 = 1;
    let mut frac_val: u128 = 0;
    for c in frac.chars().take(18) {
        frac_val = frac_val * 10 + u128::from(c.to_digit(10)?);
        denom *= 10;
    }
    value = value.checked_add(frac_val.checked_mul(scale)? / denom)?;
    Some(value)
}

/// Formats a duration in the shortest exact form that [`parse_duration`] reads back
/// (`"5s"`, `"10m"`, `"1h"`, `"1500ms"`, `"0s"`).
pub fn format_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    const UNITS: [(u128, &str); 6] = [
        (86_400_000_000_000, "d"),
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "us"),
    ];
    for (scale, unit) in UNITS {
        if nanos.is_multiple_of(scale) {
            return format!("{}{unit}", nanos / scale);
        }
    }
    format!("{nanos}ns")
}

/// Parses a size: a plain number of bytes (`"65536"`) or a number with a unit.
///
/// Decimal units: `B`, `kB`/`KB`/`k`, `MB`/`M`, `GB`/`G` (powers of 1000, as in Caddy's
/// `max_header_size 5MB`). Binary units: `KiB`, `MiB`, `GiB` (powers of 1024). Units are
/// case-insensitive; a space between number and unit is allowed.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let text = s.trim();
    let num_len = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (num, unit) = text.split_at(num_len);
    if num.is_empty() {
        return Err(format!(
            "invalid size \"{s}\": expected a number with an optional unit, e.g. \"64KiB\" or \"5MB\""
        ));
    }
    let scale: u128 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "unknown size unit \"{}\" in \"{s}\"; use B, kB, MB, GB (decimal) or KiB, MiB, GiB (binary)",
                unit.trim()
            ));
        }
    };
    let bytes = scaled(num, scale).ok_or_else(|| format!("invalid number \"{num}\" in size \"{s}\""))?;
    usize::try_from(bytes).map_err(|_| format!("size \"{s}\" is too large"))
}

/// Serde helper: serializes any `Display` value as a string.
pub(crate) mod display_str {
    pub(crate) fn serialize<T: std::fmt::Display, S: serde::Serializer>(v: &T, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(v)
    }
}

/// Serde helper: serializes a [`Duration`] as a human string via [`format_duration`].
pub(crate) mod duration_str {
    use std::time::Duration;

    pub(crate) fn serialize<S: serde::Serializer>(d: &Duration, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(&super::format_duration(*d))
    }

    /// An optional duration: the string, or `null` when unset.
    pub(crate) fn serialize_opt<S: serde::Serializer>(d: &Option<Duration>, ser: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => serialize(d, ser),
            None => ser.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok: &[(&str, Duration)] = &[
            ("10s", Duration::from_secs(10)),
            ("500ms", Duration::from_millis(500)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("1h30m", Duration::from_secs(5400)),
            ("1m 30s", Duration::from_secs(90)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.25h", Duration::from_secs(900)),
            ("250us", Duration::from_micros(250)),
            ("7ns", Duration::from_nanos(7)),
            ("2d", Duration::from_secs(172_800)),
            (" 5s ", Duration::from_secs(5)),
            ("0s", Duration::ZERO),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text).as_ref(), Ok(want), "{text}");
        }
        for bad in ["", "5", "s", "5x", "5 parsecs", "1..2s", "-5s", "5s3", "99999999999999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should fail");
        }
        assert!(parse_duration("5").unwrap_err().contains("\"5s\""));
    }

    #[test]
    fn duration_format_round_trips() {
        for text in ["5s", "10m", "1h", "1500ms", "0s", "2d", "250us", "7ns", "90s"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        assert_eq!(format_duration(Duration::from_secs(300)), "5m");
    }

    #[test]
    fn sizes() {
        let ok: &[(&str, usize)] = &[
            ("65536", 65536),
            ("64KiB", 65536),
            ("64kib", 65536),
            ("5MB", 5_000_000),
            ("5 MB", 5_000_000),
            ("1kB", 1000),
            ("1KB", 1000),
            ("2MiB", 2 * 1024 * 1024),
            ("1GiB", 1 << 30),
            ("1.5KiB", 1536),
            ("100B", 100),
        ];
        for (text, want) in ok {
            assert_eq!(parse_size(text).as_ref(), Ok(want), "{text}");
        }
        for bad in ["", "MB", "5XB", "-1", "1.2.3KB", "5 M B"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should fail");
        }
    }
}

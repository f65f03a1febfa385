//! Go `time.Duration` text formatting, for the `min_validity` query parameter
//! (tailscaled parses it with `time.ParseDuration`).

use std::time::Duration;

/// Formats `d` exactly like Go's `time.Duration.String()`: `0s`, `1.5s`, `1m30s`, `720h0m0s`,
/// `250ms`, `1.5µs`, `10ns`. Durations beyond Go's range (~292 years) are clamped to
/// `i64::MAX` nanoseconds.
pub fn format_go_duration(d: Duration) -> String {
    let u = u64::try_from(d.as_nanos().min(i64::MAX as u128)).unwrap_or(i64::MAX as u64);
    if u == 0 {
        return "0s".to_owned();
    }
    if u < 1_000_000_000 {
        let (unit, scale, prec) = if u < 1_000 {
            ("ns", 1, 0)
        } else if u < 1_000_000 {
            ("µs", 1_000, 3)
        } else {
            ("ms", 1_000_000, 6)
        };
        return format!("{}{}{}", u / scale, frac(u % scale, prec), unit);
    }
    let secs = u / 1_000_000_000;
    let f = frac(u % 1_000_000_000, 9);
    let s = secs % 60;
    let mins = secs / 60;
    if mins == 0 {
        return format!("{s}{f}s");
    }
    let m = mins % 60;
    let h = mins / 60;
    if h == 0 { format!("{m}m{s}{f}s") } else { format!("{h}h{m}m{s}{f}s") }
}

/// `.5` for (500, 3); empty for a zero remainder; trailing zeros dropped.
fn frac(rem: u64, prec: usize) -> String {
    if rem == 0 || prec == 0 {
        return String::new();
    }
    let digits = format!("{rem:0prec$}");
    format!(".{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_go_duration_string() {
        let cases: &[(Duration, &str)] = &[
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ns"),
            (Duration::from_nanos(1_100), "1.1µs"),
            (Duration::from_micros(2_200), "2.2ms"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_secs(59), "59s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(720 * 3600), "720h0m0s"),
            (Duration::from_secs(30 * 24 * 3600 + 61), "720h1m1s"),
            (Duration::from_nanos(3_600_000_000_001), "1h0m0.000000001s"),
            (Duration::from_secs(u64::MAX), "2562047h47m16.854775807s"),
        ];
        for (d, want) in cases {
            assert_eq!(format_go_duration(*d), *want, "{d:?}");
        }
    }
}

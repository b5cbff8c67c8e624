//! The `grpc-timeout` header: at most eight ASCII digits followed by a unit
//! (`H`ours, `M`inutes, `S`econds, `m`illiseconds, `u`microseconds, `n`anoseconds).

use std::time::Duration;

use http::{HeaderName, HeaderValue};

/// The header's name, the one place it is spelled.
pub const HEADER: HeaderName = HeaderName::from_static("grpc-timeout");

/// `d` as the header's value ([`format`]).
pub fn header_value(d: Duration) -> Option<HeaderValue> {
    HeaderValue::from_str(&format(d)).ok()
}

/// Parses a `grpc-timeout` value; `None` when it is not one.
pub fn parse(value: &str) -> Option<Duration> {
    let unit = value.chars().last()?;
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats a duration in the finest unit that fits in eight digits, rounding up so the
/// upstream never sees a deadline earlier than ours would be late.
pub fn format(d: Duration) -> String {
    const UNITS: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    let nanos = d.as_nanos();
    for (per, unit) in UNITS {
        let n = nanos.div_ceil(per);
        if n < 100_000_000 {
            return format!("{n}{unit}");
        }
    }
    "99999999H".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse("4m"), Some(Duration::from_millis(4)));
        assert_eq!(parse("5u"), Some(Duration::from_micros(5)));
        assert_eq!(parse("6n"), Some(Duration::from_nanos(6)));
        assert_eq!(parse("99999999S"), Some(Duration::from_secs(99_999_999)));
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in ["", "S", "123456789S", "1x", "-1S", "1.5S", " 1S", "1é"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn format_round_trips_without_shortening() {
        for d in [
            Duration::from_millis(1500),
            Duration::from_nanos(1),
            Duration::from_secs(86_400 * 365),
        ] {
            let back = parse(&format(d)).unwrap();
            assert!(back >= d, "{d:?} -> {}", format(d));
        }
        assert_eq!(format(Duration::from_millis(1500)), "1500000u");
    }
}

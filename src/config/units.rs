//! Durations and byte sizes as the file writes them.

use std::time::Duration;

/// `"20h"`, `"90m"`, `"1h 30m"`, `"7d"`: humantime's notation, which `humantime::format_duration`
/// also prints, so a default shown back to the user reads like the file.
pub(super) fn parse_duration(text: &str) -> Option<Duration> {
    humantime::parse_duration(text).ok()
}

/// `"64KiB"`, `"1 MiB"`, `"250MB"`, `"1024"`: decimal (kB, MB, GB) and binary (KiB, MiB, GiB)
/// units, case-insensitive.
pub(super) fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// The value as the user wrote it, or the default in the same notation.
pub(super) fn written(raw: Option<&str>, value: Duration) -> String {
    raw.map_or_else(
        || humantime::format_duration(value).to_string(),
        str::to_owned,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_accept_decimal_and_binary_units() {
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("64KiB"), Some(65536));
        assert_eq!(parse_size("1 MiB"), Some(1 << 20));
        assert_eq!(parse_size("250MB"), Some(250_000_000));
        assert_eq!(parse_size("2gib"), Some(2 << 30));
        assert_eq!(parse_size("1.5MB"), None);
        assert_eq!(parse_size("MB"), None);
        assert_eq!(parse_size("99999999999999999999GiB"), None);
    }
}

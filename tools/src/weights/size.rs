//! Byte sizes as people write them: `300MB`, `1.5GiB`, `8 GiB`, `123456`.
//!
//! Decimal units (`KB`, `MB`, `GB`, `TB`, and the bare `K`, `M`, `G`, `T`) are powers
//! of 1000, binary units (`KiB`, `MiB`, `GiB`, `TiB`) powers of 1024, as in SI and
//! IEC 80000-13. Units are case-insensitive; a number without a unit is bytes.

use std::fmt;
use std::str::FromStr;

use anyhow::{Result, bail};

/// A byte count parsed from a human-written size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        if num.is_empty() {
            bail!(
                "size `{s}`: expected a number followed by an optional unit, e.g. 300MB or 1.5GiB"
            );
        }
        let value: f64 = num
            .parse()
            .map_err(|_| anyhow::anyhow!("size `{s}`: `{num}` is not a number"))?;
        let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kb" => 1e3,
            "m" | "mb" => 1e6,
            "g" | "gb" => 1e9,
            "t" | "tb" => 1e12,
            "kib" => 1024.0,
            "mib" => 1024.0 * 1024.0,
            "gib" => 1024.0 * 1024.0 * 1024.0,
            "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            other => bail!(
                "size `{s}`: unknown unit `{other}` (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)"
            ),
        };
        let bytes = (value * mult).round();
        if !(bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64) {
            bail!("size `{s}` is out of range");
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&human_bytes(self.0))
    }
}

/// `1234567` -> `1.23 MB`: decimal units, three significant digits.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else if v >= 100.0 {
        format!("{v:.0} {}", UNITS[u])
    } else if v >= 10.0 {
        format!("{v:.1} {}", UNITS[u])
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> u64 {
        s.parse::<ByteSize>().expect("valid size").0
    }

    #[test]
    fn parses_decimal_and_binary_units() {
        assert_eq!(parse("300MB"), 300_000_000);
        assert_eq!(parse("1.5GiB"), 1_610_612_736);
        assert_eq!(parse("8 GiB"), 8 << 30);
        assert_eq!(parse("123456"), 123_456);
        assert_eq!(parse("2k"), 2000);
        assert_eq!(parse("64kib"), 65_536);
        assert_eq!(parse(" 7B "), 7);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "MB", "1.2.3GB", "5 parsecs", "-3MB", "1e400"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad}");
        }
    }

    #[test]
    fn formats_three_digits() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_234_567), "1.23 MB");
        assert_eq!(human_bytes(98_765_432), "98.8 MB");
        assert_eq!(human_bytes(300_000_000), "300 MB");
    }
}

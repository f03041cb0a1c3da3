//! Humane durations (`"500ms"`, `"30s"`, `"10m"`) and byte sizes (`"16MB"`) in TOML.

use std::time::Duration;

use serde::{de, Deserialize, Deserializer};

/// The longest duration taken: far beyond any useful timeout, and short enough that adding
/// it to the clock, or a multiple of it, cannot overflow.
const LONGEST: Duration = Duration::from_secs(100 * 31_557_600);

/// Parses `"500ms"`, `"30s"`, `"1h 30m"`; a bare integer is not accepted (ambiguous unit).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(s.trim()).map_err(|e| format!("invalid duration {s:?}: {e}"))?;
    if d > LONGEST {
        return Err(format!("duration {s:?} is too long (at most 100 years)"));
    }
    Ok(d)
}

/// serde `deserialize_with` for a required duration string.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(de::Error::custom)
}

/// Parses a byte size: an integer (bytes) or a string with unit B, kB, MB, GB (powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "kB" | "KB" | "kiB" | "KiB" => 1 << 10,
        "MB" | "MiB" => 1 << 20,
        "GB" | "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "invalid size unit {other:?} in {s:?} (use B, kB, MB or GB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// A size given as an integer or a string with a unit.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawSize {
    Int(u64),
    Str(String),
}

/// serde `deserialize_with` for a byte size.
pub fn deserialize_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match RawSize::deserialize(d)? {
        RawSize::Int(n) => Ok(n),
        RawSize::Str(s) => parse_bytes(&s).map_err(de::Error::custom),
    }
}

/// A replication-lag bound: a time or an amount of WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LagLimit {
    /// Replay may be at most this far behind in time.
    Time(Duration),
    /// Replay may be at most this many bytes of WAL behind.
    Bytes(u64),
}

impl<'de> Deserialize<'de> for LagLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match RawSize::deserialize(d)? {
            RawSize::Int(n) => Ok(LagLimit::Bytes(n)),
            RawSize::Str(s) if s.trim_end().ends_with('B') => parse_bytes(&s)
                .map(LagLimit::Bytes)
                .map_err(de::Error::custom),
            RawSize::Str(s) => parse_duration(&s)
                .map(LagLimit::Time)
                .map_err(de::Error::custom),
        }
    }
}

impl std::fmt::Display for LagLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LagLimit::Time(d) => write!(f, "{}", humantime::format_duration(*d)),
            LagLimit::Bytes(b) => write!(f, "{b} bytes"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("10").is_err());
        assert_eq!(parse_duration("100y").map(|d| d > Duration::ZERO), Ok(true));
        assert!(parse_duration("101y").is_err());
        assert!(parse_duration("400000000000y").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("16MB"), Ok(16 << 20));
        assert_eq!(parse_bytes("100"), Ok(100));
        assert_eq!(parse_bytes("4 kB"), Ok(4096));
        assert!(parse_bytes("4 parsecs").is_err());
        assert!(parse_bytes("x").is_err());
    }
}

//! Byte sizes as manifests and settings write them: a number of bytes, or
//! a string with a unit (`"10 MiB"`, `"200MiB"`, `"1GB"`), as durations
//! take `"10s"`.

use serde::{Deserialize, Deserializer};

/// A size as written: a number of bytes or a string with a unit, for a
/// reader that reports a bad one in its own words (others take
/// [`ByteSize`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum WrittenSize {
    Bytes(u64),
    Text(String),
}

/// A size in bytes, read from a number or a string with a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let written = WrittenSize::deserialize(deserializer).map_err(|_| {
            serde::de::Error::custom(
                "expected a size: a number of bytes or a string such as \"10 MiB\"",
            )
        })?;
        match written {
            WrittenSize::Bytes(n) => Ok(ByteSize(n)),
            WrittenSize::Text(text) => parse_size(&text).map(ByteSize).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "`{text}` is not a size such as 10485760 or \"10 MiB\" (units: B, KiB, MiB, GiB, KB, MB, GB)"
                ))
            }),
        }
    }
}

/// `"5 MiB"`, `"200KiB"`, `"1GiB"`, `"123"`, `"10 MB"` (decimal units too).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    number.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_numbers_and_strings_with_units() {
        assert_eq!(parse_size("200MiB"), Some(200 << 20));
        assert_eq!(parse_size(" 10 MiB "), Some(10 << 20));
        assert_eq!(parse_size("3 GB"), Some(3_000_000_000));
        assert_eq!(parse_size("17"), Some(17));
        for bad in [
            "",
            "MiB",
            "10 parsecs",
            "-1",
            "1.5 MiB",
            "99999999999999999999 GiB",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        #[derive(Deserialize)]
        struct Limits {
            size: ByteSize,
        }
        let read = |text: &str| toml::from_str::<Limits>(text).map(|l| l.size.0);
        assert_eq!(read("size = 1024").unwrap(), 1024);
        assert_eq!(read("size = \"2 KiB\"").unwrap(), 2048);
        let err = read("size = \"2 parsecs\"").unwrap_err().to_string();
        assert!(err.contains("not a size"), "{err}");
        assert!(read("size = -3").is_err());
    }
}

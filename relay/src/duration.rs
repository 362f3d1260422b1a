//! Human-friendly durations for flags and the config file: `2s`, `500ms`, `1h`, `30m`,
//! and sums of them such as `1h30m`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration written as one or more `<integer><unit>` terms, units `ms`, `s`, `m`, `h`
/// and `d` (for example `2s`, `500ms`, `1h30m`). A bare number is refused: the unit is
/// always explicit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct HumanDuration(pub Duration);

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// Nothing to parse.
    #[error("empty duration (expected e.g. `2s`, `500ms`, `1h`)")]
    Empty,
    /// A number without a unit.
    #[error("`{0}` has no unit (expected e.g. `2s`, `500ms`, `1h`)")]
    MissingUnit(String),
    /// A unit that is not `ms`, `s`, `m`, `h` or `d`.
    #[error("unknown unit `{unit}` in `{text}` (units: ms, s, m, h, d)")]
    UnknownUnit {
        /// The unit as written.
        unit: String,
        /// The whole input.
        text: String,
    },
    /// A character where a digit was expected.
    #[error("`{0}` is not a duration (expected e.g. `2s`, `500ms`, `1h`)")]
    Invalid(String),
    /// A decimal point: only whole numbers of a unit.
    #[error(
        "`{0}` has a fraction: use a whole number of a smaller unit (e.g. `1500ms`, not `1.5s`)"
    )]
    Fraction(String),
    /// Too large to represent.
    #[error("`{0}` is too large")]
    Overflow(String),
}

/// Parses a duration such as `2s`, `500ms`, `1h` or `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let bytes = text.as_bytes();
    let mut total_ms: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let digits_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == digits_start {
            return Err(DurationError::Invalid(text.to_owned()));
        }
        let number: u64 = text[digits_start..i]
            .parse()
            .map_err(|_| DurationError::Overflow(text.to_owned()))?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &text[unit_start..i];
        let ms_per_unit: u64 = match unit {
            "" if bytes.get(i) == Some(&b'.') => {
                return Err(DurationError::Fraction(text.to_owned()));
            }
            "" if i < bytes.len() => return Err(DurationError::Invalid(text.to_owned())),
            "" => return Err(DurationError::MissingUnit(text.to_owned())),
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            other => {
                return Err(DurationError::UnknownUnit {
                    unit: other.to_owned(),
                    text: text.to_owned(),
                });
            }
        };
        total_ms = number
            .checked_mul(ms_per_unit)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| DurationError::Overflow(text.to_owned()))?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration the way [`parse_duration`] reads it (largest exact unit).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

impl FromStr for HumanDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(Self)
    }
}

impl TryFrom<String> for HumanDuration {
    type Error = DurationError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_units() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn parses_sums() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn refuses_bad_input_with_clear_errors() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(
            parse_duration("10"),
            Err(DurationError::MissingUnit("10".into()))
        );
        assert_eq!(
            parse_duration("1s2"),
            Err(DurationError::MissingUnit("1s2".into()))
        );
        assert_eq!(
            parse_duration("5x"),
            Err(DurationError::UnknownUnit {
                unit: "x".into(),
                text: "5x".into()
            })
        );
        assert_eq!(parse_duration("s"), Err(DurationError::Invalid("s".into())));
        assert_eq!(
            parse_duration(" 2s"),
            Err(DurationError::Invalid(" 2s".into()))
        );
        // A space after the number is not a missing unit: the input is not a duration.
        assert_eq!(
            parse_duration("2 s"),
            Err(DurationError::Invalid("2 s".into()))
        );
        assert_eq!(
            parse_duration("-1s"),
            Err(DurationError::Invalid("-1s".into()))
        );
        // Not "no unit": a fraction, said as such.
        assert_eq!(
            parse_duration("1.5s"),
            Err(DurationError::Fraction("1.5s".into()))
        );
        assert_eq!(
            parse_duration("1.5s").unwrap_err().to_string(),
            "`1.5s` has a fraction: use a whole number of a smaller unit (e.g. `1500ms`, not `1.5s`)"
        );
        let huge = "99999999999999999999s";
        assert_eq!(
            parse_duration(huge),
            Err(DurationError::Overflow(huge.into()))
        );
        let big = "18446744073709551615d";
        assert_eq!(
            parse_duration(big),
            Err(DurationError::Overflow(big.into()))
        );
        let msg = parse_duration("10").unwrap_err().to_string();
        assert_eq!(msg, "`10` has no unit (expected e.g. `2s`, `500ms`, `1h`)");
    }

    #[test]
    fn formats_round_trip() {
        for text in ["0s", "2s", "500ms", "1h", "30m", "1d", "90s", "1500ms"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}

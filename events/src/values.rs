//! Validated values: a [`Priority`] and a [`Capability`] can only be built valid.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::DomainError;

/// A task's priority, 1 (lowest) to 10 (highest). The names `low`, `normal`, `medium`, `high` and
/// `critical` map to 2, 5, 6, 8 and 10.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = u8))]
#[serde(transparent)]
pub struct Priority(#[schemars(range(min = 1, max = 10))] u8);

impl Priority {
    /// The priority of a task that names none.
    pub const NORMAL: Priority = Priority(5);

    /// A priority from its number, 1..=10.
    pub fn new(value: i64) -> Result<Self, DomainError> {
        match u8::try_from(value) {
            Ok(v @ 1..=10) => Ok(Self(v)),
            _ => Err(DomainError::invalid(
                "priority",
                format!("must be 1..10 or low|normal|medium|high|critical, got {value}"),
            )),
        }
    }

    /// A priority from its name (`low`, `normal`, `medium`, `high`, `critical`).
    pub fn from_name(name: &str) -> Result<Self, DomainError> {
        match name.to_ascii_lowercase().as_str() {
            "low" => Ok(Self(2)),
            "normal" => Ok(Self(5)),
            "medium" => Ok(Self(6)),
            "high" => Ok(Self(8)),
            "critical" => Ok(Self(10)),
            other => match other.parse::<i64>() {
                Ok(n) => Self::new(n),
                Err(_) => Err(DomainError::invalid(
                    "priority",
                    format!("must be 1..10 or low|normal|medium|high|critical, got {name:?}"),
                )),
            },
        }
    }

    /// The number, 1..=10.
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Priority::new(i64::from(u8::deserialize(deserializer)?)).map_err(serde::de::Error::custom)
    }
}

/// Something an agent can do and a task can require, such as `rust` or `gpu`: 1 to 64 characters of
/// lower-case letters, digits, `-`, `_`, `.` and `:`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, schemars::JsonSchema)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(value_type = String, pattern = "^[a-z0-9_.:-]{1,64}$")
)]
#[serde(transparent)]
pub struct Capability(#[schemars(length(min = 1, max = 64), pattern(r"^[a-z0-9_.:-]+$"))] String);

impl Capability {
    /// A capability, checked.
    pub fn new(value: impl Into<String>) -> Result<Self, DomainError> {
        let value = value.into();
        let ok = (1..=64).contains(&value.len())
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.:".contains(&b));
        if ok {
            Ok(Self(value))
        } else {
            Err(DomainError::invalid(
                "capability",
                format!("{value:?} must be 1-64 characters of a-z, 0-9, '-', '_', '.', ':'"),
            ))
        }
    }

    /// The capability's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Capability {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Capability::new(String::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// Checks a list of capabilities and sorts it, dropping repeats, so equal sets compare equal.
pub fn capability_set(
    values: impl IntoIterator<Item = impl Into<String>>,
) -> Result<Vec<Capability>, DomainError> {
    let mut caps = values
        .into_iter()
        .map(Capability::new)
        .collect::<Result<Vec<_>, _>>()?;
    caps.sort();
    caps.dedup();
    Ok(caps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_names_and_numbers() {
        assert_eq!(Priority::from_name("critical").unwrap().get(), 10);
        assert_eq!(Priority::from_name("Normal").unwrap(), Priority::NORMAL);
        assert_eq!(Priority::from_name("7").unwrap().get(), 7);
        assert!(Priority::from_name("urgent").is_err());
        assert!(Priority::new(0).is_err());
        assert!(Priority::new(11).is_err());
        assert!(serde_json::from_str::<Priority>("11").is_err());
    }

    #[test]
    fn capabilities_are_checked_and_sorted() {
        let caps = capability_set(["rust", "gpu", "rust"]).unwrap();
        assert_eq!(
            caps,
            vec![
                Capability::new("gpu").unwrap(),
                Capability::new("rust").unwrap()
            ]
        );
        assert!(Capability::new("").is_err());
        assert!(Capability::new("Has Space").is_err());
        assert!(serde_json::from_str::<Capability>("\"UPPER\"").is_err());
    }
}

/// Whether PostgreSQL can store time `at`: it holds no time before 4713 BC (its `timestamptz`
/// begins there), while a time can be written from 262,144 BC on. An event carrying such a time
/// would be refused by the read models on every retry: the API refuses it in a command, and the
/// replay refuses it in an event. Later times all fit (PostgreSQL's end, 294,276 AD, is beyond the
/// latest time there is here).
pub fn storable_time(at: &chrono::DateTime<chrono::Utc>) -> bool {
    use chrono::Datelike;
    // 4712 BC in the proleptic Gregorian calendar's astronomical years: inside PostgreSQL's range,
    // with a margin for its calendar.
    at.year() >= -4711
}

/// Whether JSON text `json` holds a NUL character in a string (the escape `\u0000`; JSON cannot hold
/// a raw one). PostgreSQL can store it neither in text nor in jsonb, so no event may carry one: the
/// API refuses such a body, and the replay refuses such an event (the projector dead-letters it
/// rather than failing on it forever).
pub fn holds_nul(json: &[u8]) -> bool {
    const ESCAPE: &[u8] = b"u0000";
    json.windows(ESCAPE.len())
        .enumerate()
        .filter(|(_, w)| w.eq_ignore_ascii_case(ESCAPE))
        .any(|(at, _)| {
            // An escape only when an odd number of backslashes precede it (`\\u0000` is a
            // backslash, then the text `u0000`).
            let backslashes = json[..at].iter().rev().take_while(|b| **b == b'\\').count();
            backslashes % 2 == 1
        })
}

#[cfg(test)]
mod nul_tests {
    use super::holds_nul;

    #[test]
    fn a_nul_escape_is_found_and_an_escaped_backslash_is_not_one() {
        assert!(holds_nul(br#"{"name":"a\u0000b"}"#));
        assert!(holds_nul(br#"["\\\u0000"]"#));
        assert!(!holds_nul(br#"{"name":"a\\u0000b"}"#));
        assert!(!holds_nul(br#"{"name":"u0000 \u0001"}"#));
        assert!(!holds_nul(b"{}"));
    }

    #[test]
    fn a_time_before_4712_bc_is_not_storable() {
        use chrono::TimeZone;
        let at = |year| chrono::Utc.with_ymd_and_hms(year, 1, 1, 0, 0, 0).unwrap();
        assert!(super::storable_time(&at(2026)));
        assert!(super::storable_time(&at(-4711)));
        assert!(!super::storable_time(&at(-4712)));
        assert!(!super::storable_time(&at(-5000)));
        assert!(super::storable_time(
            &chrono::DateTime::<chrono::Utc>::MAX_UTC
        ));
    }
}

//! Labels: what a task or an agent is about, as string pairs an operator searches by
//! (`GET /api/v1/tasks?label=team:infra`). Bounded, so a label never weighs on a fold or an index.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::DomainError;

/// Labels of a task or an agent: at most [`Labels::MAX`] pairs; a key is 1 to 63 characters of
/// letters, digits, `-`, `_`, `.` and `/` (no `:`, which separates key from value in a filter); a value
/// is up to 256 characters with no control character.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    /// The most pairs one task or agent carries.
    pub const MAX: usize = 32;
    /// The longest key, in characters.
    pub const KEY_MAX: usize = 63;
    /// The longest value, in characters.
    pub const VALUE_MAX: usize = 256;

    /// Labels, checked.
    pub fn new(pairs: BTreeMap<String, String>) -> Result<Self, DomainError> {
        if pairs.len() > Self::MAX {
            return Err(DomainError::invalid(
                "labels",
                format!("at most {} labels, got {}", Self::MAX, pairs.len()),
            ));
        }
        for (key, value) in &pairs {
            Self::check_key(key)?;
            if value.chars().count() > Self::VALUE_MAX || value.chars().any(char::is_control) {
                return Err(DomainError::invalid(
                    "labels",
                    format!(
                        "the value of {key:?} must be at most {} characters, none a control character",
                        Self::VALUE_MAX
                    ),
                ));
            }
        }
        Ok(Self(pairs))
    }

    /// Checks a key: 1 to 63 characters of `A-Z a-z 0-9 - _ . /`.
    pub fn check_key(key: &str) -> Result<(), DomainError> {
        let ok = (1..=Self::KEY_MAX).contains(&key.len())
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
        if ok {
            Ok(())
        } else {
            Err(DomainError::invalid(
                "labels",
                format!(
                    "key {key:?} must be 1-{} characters of A-Z, a-z, 0-9, '-', '_', '.', '/'",
                    Self::KEY_MAX
                ),
            ))
        }
    }

    /// The pairs, by key.
    pub fn pairs(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Result<Labels, DomainError> {
        Labels::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn labels_are_bounded_in_count_key_and_value() {
        assert!(labels(&[("team", "infra"), ("app.kubernetes.io/name", "x:y")]).is_ok());
        assert!(labels(&[("", "x")]).is_err());
        assert!(
            labels(&[("team:a", "x")]).is_err(),
            "':' separates a filter"
        );
        assert!(labels(&[(&"k".repeat(64), "x")]).is_err());
        assert!(labels(&[("k", &"v".repeat(257))]).is_err());
        assert!(labels(&[("k", "a\nb")]).is_err());
        let many: Vec<(String, String)> = (0..33).map(|i| (format!("k{i}"), "v".into())).collect();
        let too_many = Labels::new(many.into_iter().collect());
        assert!(matches!(
            too_many,
            Err(DomainError::Invalid {
                field: "labels",
                ..
            })
        ));
    }
}

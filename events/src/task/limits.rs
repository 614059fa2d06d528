//! How long a task may run and how its executor is stopped: set at creation, read by the scheduler
//! (which times a task out) and by the agent's runtime (which stops the executor).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::DomainError;

/// A task's time limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Limits {
    /// The longest a run may take, from its start to its completion, in seconds (none: no limit).
    pub timeout_secs: Option<u32>,
    /// The longest a running task may go without its agent reporting progress, in seconds (none: no
    /// limit).
    pub heartbeat_timeout_secs: Option<u32>,
    /// How long a stopped executor has between SIGTERM and SIGKILL, in seconds.
    pub cancel_grace_secs: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout_secs: None,
            heartbeat_timeout_secs: None,
            cancel_grace_secs: Self::DEFAULT_CANCEL_GRACE_SECS,
        }
    }
}

/// Which limit a task passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TimeLimit {
    /// `timeout_secs`: it ran too long.
    Timeout,
    /// `heartbeat_timeout_secs`: it reported no progress for too long.
    HeartbeatTimeout,
}

impl TimeLimit {
    /// Why a task that passed it failed, for people.
    pub fn explain(self, secs: u32) -> String {
        match self {
            Self::Timeout => format!("timed_out: ran longer than its timeout_secs ({secs} s)"),
            Self::HeartbeatTimeout => {
                format!("timed_out: no progress for its heartbeat_timeout_secs ({secs} s)")
            }
        }
    }
}

impl Limits {
    /// The grace a task that names none gets.
    pub const DEFAULT_CANCEL_GRACE_SECS: u32 = 10;
    /// The longest `timeout_secs`: 30 days.
    pub const TIMEOUT_MAX: u32 = 30 * 24 * 3600;
    /// The longest `heartbeat_timeout_secs`: a day.
    pub const HEARTBEAT_TIMEOUT_MAX: u32 = 24 * 3600;
    /// The longest `cancel_grace_secs`: an hour.
    pub const CANCEL_GRACE_MAX: u32 = 3600;

    /// Checks each limit's range.
    pub fn check(&self) -> Result<(), DomainError> {
        let within = |field: &'static str, value: Option<u32>, low: u32, high: u32| match value {
            Some(v) if !(low..=high).contains(&v) => Err(DomainError::invalid(
                field,
                format!("must be {low} to {high}, got {v}"),
            )),
            _ => Ok(()),
        };
        within("timeout_secs", self.timeout_secs, 1, Self::TIMEOUT_MAX)?;
        within(
            "heartbeat_timeout_secs",
            self.heartbeat_timeout_secs,
            1,
            Self::HEARTBEAT_TIMEOUT_MAX,
        )?;
        within(
            "cancel_grace_secs",
            Some(self.cancel_grace_secs),
            0,
            Self::CANCEL_GRACE_MAX,
        )
    }

    /// The limit `limit`, if set.
    pub fn of(&self, limit: TimeLimit) -> Option<u32> {
        match limit {
            TimeLimit::Timeout => self.timeout_secs,
            TimeLimit::HeartbeatTimeout => self.heartbeat_timeout_secs,
        }
    }

    /// The first limit a run started at `started_at`, last heard from at `heard_at`, passes, and when.
    pub fn next_passed(
        &self,
        started_at: DateTime<Utc>,
        heard_at: DateTime<Utc>,
    ) -> Option<(DateTime<Utc>, TimeLimit)> {
        let after = |from: DateTime<Utc>, secs: Option<u32>| {
            secs.map(|s| from + chrono::Duration::seconds(i64::from(s)))
        };
        let run = after(started_at, self.timeout_secs).map(|at| (at, TimeLimit::Timeout));
        let silence = after(heard_at, self.heartbeat_timeout_secs)
            .map(|at| (at, TimeLimit::HeartbeatTimeout));
        run.into_iter().chain(silence).min_by_key(|(at, _)| *at)
    }
}

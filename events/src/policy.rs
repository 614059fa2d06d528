//! The timings the rules read: how long a lease lasts, when an agent counts as lost, how a failed task
//! backs off. The rules take them as an argument, like the time, so a test chooses them.

use std::time::Duration;

/// Timings of the rules that depend on the clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// How long an assigned agent has to accept (or start) a task before it is requeued.
    pub assignment_lease: Duration,
    /// How long after its last heartbeat an agent is lost.
    pub heartbeat_timeout: Duration,
    /// The first retry's back-off; each further attempt doubles it.
    pub retry_base: Duration,
    /// The longest back-off.
    pub retry_cap: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            assignment_lease: Duration::from_secs(30),
            heartbeat_timeout: Duration::from_secs(15),
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(300),
        }
    }
}

impl Policy {
    /// The back-off before the attempt after `attempts` failed ones: exponential with "equal jitter",
    /// half the doubled delay plus `jitter` (0..1) of the other half, never above the cap.
    pub fn backoff(&self, attempts: u32, jitter: f64) -> chrono::Duration {
        let doubled = self
            .retry_base
            .saturating_mul(1u32 << attempts.saturating_sub(1).min(20))
            .min(self.retry_cap);
        let delay = doubled.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0));
        chrono::Duration::from_std(delay).unwrap_or_default()
    }

    /// [`Policy::assignment_lease`] as a span of time.
    pub fn lease(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.assignment_lease).unwrap_or_default()
    }

    /// [`Policy::heartbeat_timeout`] as a span of time.
    pub fn heartbeat_timeout(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.heartbeat_timeout).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_half_to_whole_and_stops_at_the_cap() {
        let policy = Policy {
            retry_base: Duration::from_secs(2),
            retry_cap: Duration::from_secs(10),
            ..Policy::default()
        };
        let secs = |attempts, jitter| policy.backoff(attempts, jitter).num_milliseconds();
        assert_eq!((secs(1, 0.0), secs(1, 1.0)), (1_000, 2_000));
        assert_eq!((secs(2, 0.0), secs(2, 1.0)), (2_000, 4_000));
        assert_eq!((secs(3, 0.5), secs(9, 1.0)), (6_000, 10_000));
        assert_eq!(secs(1, 7.0), 2_000, "jitter is clamped");
    }
}

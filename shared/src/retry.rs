//! Retry policy: exponential backoff with full jitter, stored on each task at creation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How long to wait before the next attempt after a failure.
///
/// The wait after the n-th failed attempt is a uniformly random duration between 0 and
/// `min(maxIntervalMs, initialIntervalMs × factor^(n-1))` ("full jitter", which spreads the
/// retries of many tasks that failed together), and never less than `minIntervalMs`.
/// The policy is copied onto each task when it is created, so a deploy that changes a type's
/// policy does not change retries already in flight.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Upper bound of the first wait, in milliseconds.
    pub initial_interval_ms: u64,
    /// Growth of the upper bound per further failure.
    pub factor: f64,
    /// Largest upper bound, in milliseconds.
    pub max_interval_ms: u64,
    /// Smallest wait, in milliseconds, whatever the jitter draws.
    pub min_interval_ms: u64,
}

impl Default for RetryPolicy {
    /// First retry within 30 s, doubling, capped at 1 h, no minimum.
    fn default() -> Self {
        Self {
            initial_interval_ms: 30_000,
            factor: 2.0,
            max_interval_ms: 3_600_000,
            min_interval_ms: 0,
        }
    }
}

impl RetryPolicy {
    /// The upper bound of the wait after `failed_attempts` failures (1 for the first failure).
    pub fn ceiling(&self, failed_attempts: u32) -> Duration {
        let exponent = failed_attempts.saturating_sub(1).min(1000);
        let factor = if self.factor.is_finite() && self.factor >= 1.0 {
            self.factor
        } else {
            1.0
        };
        let grown = self.initial_interval_ms as f64 * factor.powi(exponent as i32);
        let capped = grown.min(self.max_interval_ms as f64).max(0.0);
        Duration::from_millis(capped as u64)
    }

    /// The wait after `failed_attempts` failures for a jitter draw `jitter` in `[0, 1)`.
    pub fn delay(&self, failed_attempts: u32, jitter: f64) -> Duration {
        let jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            1.0
        };
        let ceiling_ms = self.ceiling(failed_attempts).as_millis() as f64;
        let drawn = Duration::from_millis((ceiling_ms * jitter) as u64);
        drawn.max(Duration::from_millis(self.min_interval_ms))
    }

    /// Checks the numbers make sense.
    pub fn validate(&self) -> Result<(), RetryPolicyError> {
        if !(self.factor.is_finite() && (1.0..=100.0).contains(&self.factor)) {
            return Err(RetryPolicyError::Factor(self.factor));
        }
        if self.initial_interval_ms > self.max_interval_ms {
            return Err(RetryPolicyError::InitialAboveMax {
                initial_ms: self.initial_interval_ms,
                max_ms: self.max_interval_ms,
            });
        }
        Ok(())
    }
}

/// A retry policy whose numbers do not make sense; each names the fields at fault.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum RetryPolicyError {
    /// The growth per failure is outside 1 to 100.
    #[error("factor must be between 1 and 100, got {0}")]
    Factor(f64),
    /// The first wait's bound is above the largest bound.
    #[error("initialIntervalMs ({initial_ms}) must not exceed maxIntervalMs ({max_ms})")]
    InitialAboveMax {
        /// The initial interval, in milliseconds.
        initial_ms: u64,
        /// The maximum interval, in milliseconds.
        max_ms: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_from_30s_up_to_one_hour() {
        let policy = RetryPolicy::default();
        let secs: Vec<u64> = (1..=9).map(|n| policy.ceiling(n).as_secs()).collect();
        assert_eq!(secs, vec![30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(policy.ceiling(u32::MAX), Duration::from_secs(3600));
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(2, 0.0), Duration::ZERO);
        assert_eq!(policy.delay(2, 0.5), Duration::from_secs(30));
        assert_eq!(policy.delay(2, 0.999_999), Duration::from_millis(59_999));
        assert_eq!(policy.delay(2, f64::NAN), Duration::from_secs(60));
    }

    #[test]
    fn the_minimum_interval_is_a_floor() {
        let policy = RetryPolicy {
            min_interval_ms: 5_000,
            ..RetryPolicy::default()
        };
        assert_eq!(policy.delay(1, 0.0), Duration::from_secs(5));
        assert_eq!(policy.delay(1, 1.0), Duration::from_secs(30));
    }

    #[test]
    fn nonsense_is_rejected() {
        let bad_factor = RetryPolicy {
            factor: 0.5,
            ..RetryPolicy::default()
        };
        assert_eq!(bad_factor.validate(), Err(RetryPolicyError::Factor(0.5)));
        let inverted = RetryPolicy {
            initial_interval_ms: 10,
            max_interval_ms: 1,
            ..RetryPolicy::default()
        };
        assert_eq!(
            inverted.validate(),
            Err(RetryPolicyError::InitialAboveMax {
                initial_ms: 10,
                max_ms: 1
            })
        );
        assert!(RetryPolicy::default().validate().is_ok());
    }
}

//! What an attempt came to, and the one count of outcomes every run, period and batch keeps
//! ([`Outcomes`], inside a run's [`RunSummary`] and a batch's `WorkSummary`).

use serde::{Deserialize, Serialize};

/// The outcome of one claimed task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The handler succeeded.
    Succeeded,
    /// It failed and the task is due again later.
    Retried,
    /// It failed for good.
    Failed,
    /// The task was given back unstarted (its lease was spent before it could start).
    Released,
    /// Given back because the run's deadline left no time for a fair attempt.
    ReleasedOutOfTime,
    /// Given back unsent because its receiver's circuit is open; due again when it may close.
    Held,
    /// The outcome could not be written (lease lost or store error); logged. The lease expires
    /// and the task runs again.
    Unrecorded,
}

/// Claimed tasks by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcomes {
    /// Attempts that succeeded.
    pub succeeded: usize,
    /// Attempts that failed and will be retried.
    pub retried: usize,
    /// Attempts that failed for good.
    pub failed: usize,
    /// Tasks given back unstarted: out of time for a fair attempt, or (rarely) the claim took
    /// so long that its lease was spent.
    pub released: usize,
    /// Outcomes that could not be written: the task runs again once its lease expires.
    pub unrecorded: usize,
    /// Tasks given back unsent, their receiver's circuit open.
    #[serde(default)]
    pub held: usize,
}

impl Outcomes {
    /// Counts one outcome.
    pub fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Succeeded => self.succeeded += 1,
            Outcome::Retried => self.retried += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Released | Outcome::ReleasedOutOfTime => self.released += 1,
            Outcome::Unrecorded => self.unrecorded += 1,
            Outcome::Held => self.held += 1,
        }
    }

    /// Adds the counts of `other`.
    pub fn absorb(&mut self, other: &Self) {
        self.succeeded += other.succeeded;
        self.retried += other.retried;
        self.failed += other.failed;
        self.released += other.released;
        self.unrecorded += other.unrecorded;
        self.held += other.held;
    }

    /// Every claimed task counted, whatever its outcome.
    pub fn total(&self) -> usize {
        self.succeeded + self.retried + self.failed + self.released + self.unrecorded + self.held
    }
}

/// What one processor run did; the processor Lambda returns it as JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// Tasks claimed (attempts started or given back).
    pub claimed: usize,
    /// The claimed tasks by outcome.
    #[serde(flatten)]
    pub outcomes: Outcomes,
    /// Claims that failed after the first (a first that fails fails the run); the run went on.
    pub failed_claims: usize,
    /// Wall time of the run.
    pub duration_ms: u64,
}

impl RunSummary {
    /// Adds the counts of `other` (a later run of the same invocation) to these.
    pub fn absorb(&mut self, other: &Self) {
        self.claimed += other.claimed;
        self.outcomes.absorb(&other.outcomes);
        self.failed_claims += other.failed_claims;
    }

    /// Store errors: failed claims, and outcomes that could not be written.
    pub fn errors(&self) -> usize {
        self.failed_claims + self.outcomes.unrecorded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_outcome_is_counted_once_and_absorbed() {
        let mut outcomes = Outcomes::default();
        for outcome in [
            Outcome::Succeeded,
            Outcome::Retried,
            Outcome::Failed,
            Outcome::Released,
            Outcome::ReleasedOutOfTime,
            Outcome::Unrecorded,
        ] {
            outcomes.count(outcome);
        }
        assert_eq!(
            (outcomes.released, outcomes.unrecorded, outcomes.total()),
            (2, 1, 6)
        );
        let mut twice = outcomes;
        twice.absorb(&outcomes);
        assert_eq!(twice.total(), 12);
    }
}

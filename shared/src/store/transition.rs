//! Every change of a task's state, defined once.
//!
//! A backend reads the task, asks the [`Transition`] for the task after it, and stores exactly
//! that: SQLite inside one transaction, DynamoDB as a write conditioned on the item being
//! unchanged since the read. The conformance suite checks, for every transition and every
//! backend, that the stored task equals [`Transition::apply`] of the task before, field by field.

use std::time::Duration;

use super::{ListKey, StoreError};
use crate::clock::Timestamp;
use crate::task::{Held, Task, TaskId, TaskStatus};

/// Why a task whose last attempt never reported back is failed instead of run again.
pub const LEASE_EXPIRED_ERROR: &str =
    "lease expired during the final attempt (the processor stopped or timed out)";

/// The outcome a processor writes for an attempt it claimed.
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    /// The handler succeeded.
    Succeeded,
    /// The attempt failed and the task is due again at `retry_at`.
    Retry {
        /// The handler's error message.
        error: String,
        /// When the next attempt may start.
        retry_at: Timestamp,
    },
    /// The attempt failed and the task will not run again.
    Failed {
        /// The handler's error message.
        error: String,
    },
    /// The attempt never started (the invocation ran out of time): give it back uncounted.
    Released,
    /// The attempt did not run because its receiver is known to be down (an open circuit):
    /// given back uncounted, the task due again at `until` and marked held for it.
    Held {
        /// When the task is due again.
        until: Timestamp,
    },
}

/// One change of a task's state, with everything it needs to be applied.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// A processor starts an attempt of a task due at `due_by` (pending and scheduled, or
    /// running with an expired lease) that has attempts left: running until `lease_until`.
    Claim {
        /// Pending tasks scheduled by then, and leases expired by then, are due.
        due_by: Timestamp,
        /// The claim's instant.
        now: Timestamp,
        /// The new lease's expiry.
        lease_until: Timestamp,
        /// The new lease's token, unique to this claim.
        token: String,
    },
    /// The processor holding the claim `token` (attempt `attempt`) records its outcome.
    Settle {
        /// The attempt the claim started.
        attempt: u32,
        /// The claim's token.
        token: String,
        /// What happened.
        outcome: Settlement,
        /// The outcome's instant.
        now: Timestamp,
    },
    /// A running task's final attempt outlived its lease (expired by `due_by`): it fails, under
    /// a lease token of its own, so the attempt's processor, if it reports late, finds its
    /// lease lost rather than an outcome it did not write.
    Expire {
        /// Leases expired by then count.
        due_by: Timestamp,
        /// The failure's instant.
        now: Timestamp,
        /// The expiry's token, unique to it.
        token: String,
    },
    /// A task the due queue cannot see any more (its index entry landed below a watermark, see
    /// `store::dynamodb::sweep`) is made due again at `now`: pending, or running with a lease
    /// expired by `now`, and still at the entry `entry` the sweep found it at. Its scheduled
    /// instant moves to `now`, so its entry moves above the watermark; nothing else changes.
    Rescue {
        /// The rescue's instant.
        now: Timestamp,
        /// The entry the task is stranded at.
        entry: ListKey,
    },
    /// A claim finds a task due by `due_by` (as [`Transition::Claim`] would take it) whose key
    /// is at its limit: instead of starting an attempt, the task waits, pending, until `until`
    /// (out of every claim's path until then), `held` for that limit. A running task whose
    /// lease expired keeps the attempt it used.
    Hold {
        /// Pending tasks scheduled by then, and leases expired by then, are due.
        due_by: Timestamp,
        /// The hold's instant.
        now: Timestamp,
        /// When the task is due again.
        until: Timestamp,
        /// The limit it waits for.
        held: Held,
    },
    /// A task held for its key's concurrency is made due at `now`, because a task of its key
    /// stopped running before the hold's end.
    Wake {
        /// The wake's instant.
        now: Timestamp,
    },
    /// A pending task is cancelled.
    Cancel {
        /// The cancel's instant.
        now: Timestamp,
    },
    /// A failed or cancelled task is put back in the queue, due now, with fresh attempts.
    Retry {
        /// The retry's instant.
        now: Timestamp,
    },
}

/// The transition does not apply to the task as it is; `status` is the task's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The task's status when it was refused.
    pub status: TaskStatus,
}

impl Transition {
    /// A claim with a fresh lease token.
    pub fn claim(due_by: Timestamp, now: Timestamp, lease_until: Timestamp) -> Self {
        Self::Claim {
            due_by,
            now,
            lease_until,
            token: new_lease_token(),
        }
    }

    /// An expiry of a final attempt whose lease expired by `due_by`, with a fresh token.
    pub fn expire(due_by: Timestamp, now: Timestamp) -> Self {
        Self::Expire {
            due_by,
            now,
            token: new_lease_token(),
        }
    }

    /// The outcome of the attempt `claimed` (as a claim returned it); a task that was never
    /// claimed has no lease to settle.
    pub fn settle(claimed: &Task, outcome: Settlement, now: Timestamp) -> Result<Self, StoreError> {
        let token = claimed
            .lease_token
            .clone()
            .ok_or(StoreError::LeaseLost(claimed.id))?;
        Ok(Self::Settle {
            attempt: claimed.attempts,
            token,
            outcome,
            now,
        })
    }

    /// The task after this transition, or why it does not apply.
    pub fn apply(&self, task: &Task) -> Result<Task, Refused> {
        let refused = Refused {
            status: task.status,
        };
        let mut next = task.clone();
        match self {
            Self::Claim {
                due_by,
                now,
                lease_until,
                token,
            } => {
                let due = task.due_at().is_some_and(|at| at <= *due_by);
                if !due || task.attempts >= task.max_attempts {
                    return Err(refused);
                }
                start_attempt(&mut next, *now, *lease_until, token);
            }
            Self::Settle {
                attempt,
                token,
                outcome,
                now,
            } => {
                if !holds_lease(task, *attempt, token) {
                    return Err(refused);
                }
                settle(&mut next, outcome, *now);
            }
            Self::Expire { due_by, now, token } => {
                if !is_expired_final_attempt(task, *due_by) {
                    return Err(refused);
                }
                settle(&mut next, &lease_expired(), *now);
                next.lease_token = Some(token.clone());
            }
            Self::Hold {
                due_by,
                now,
                until,
                held,
            } => {
                let due = task.due_at().is_some_and(|at| at <= *due_by);
                if !due || task.attempts >= task.max_attempts {
                    return Err(refused);
                }
                next.status = TaskStatus::Pending;
                next.scheduled_at = *until;
                next.updated_at = *now;
                next.lease_expires_at = None;
                next.lease_token = None;
                next.held = Some(*held);
            }
            Self::Wake { now } => {
                let held = task.status == TaskStatus::Pending
                    && task.held == Some(Held::Concurrency)
                    && task.scheduled_at > *now;
                if !held {
                    return Err(refused);
                }
                next.scheduled_at = *now;
                next.updated_at = *now;
                next.held = None;
            }
            Self::Rescue { now, entry } => {
                if !rescue(task, &mut next, *now, entry) {
                    return Err(refused);
                }
            }
            Self::Cancel { now } => {
                if task.status != TaskStatus::Pending {
                    return Err(refused);
                }
                next.status = TaskStatus::Cancelled;
                (next.updated_at, next.finished_at) = (*now, Some(*now));
                next.held = None;
            }
            Self::Retry { now } => {
                if !retry(task, &mut next, *now) {
                    return Err(refused);
                }
            }
        }
        Ok(next)
    }

    /// The error a caller gets when the transition does not apply to task `id`.
    pub fn refusal(&self, id: TaskId, refused: Refused) -> StoreError {
        match self {
            Self::Settle { .. } => StoreError::LeaseLost(id),
            _ => StoreError::Conflict {
                id,
                status: refused.status,
            },
        }
    }

    /// The error a caller gets when task `id` does not exist.
    pub fn missing(&self, id: TaskId) -> StoreError {
        match self {
            Self::Settle { .. } => StoreError::LeaseLost(id),
            _ => StoreError::NotFound(id),
        }
    }
}

/// True while `task` is running the attempt `attempt` under the lease `token`.
fn holds_lease(task: &Task, attempt: u32, token: &str) -> bool {
    task.status == TaskStatus::Running
        && task.attempts == attempt
        && task.lease_token.as_deref() == Some(token)
}

/// The failure an expired final attempt is settled with.
fn lease_expired() -> Settlement {
    Settlement::Failed {
        error: LEASE_EXPIRED_ERROR.to_owned(),
    }
}

/// A claimed task's next attempt, running from `now` under the lease `token` until
/// `lease_until`.
fn start_attempt(next: &mut Task, now: Timestamp, lease_until: Timestamp, token: &str) {
    next.status = TaskStatus::Running;
    next.attempts += 1;
    next.updated_at = now;
    next.lease_expires_at = Some(lease_until);
    next.lease_token = Some(token.to_owned());
    next.held = None;
}

/// A rescue of `task` into `next` at `now`, if the task is still due at the entry the sweep
/// read (`entry`) and due before `now`: it gets a new entry at `now`.
fn rescue(task: &Task, next: &mut Task, now: Timestamp, entry: &ListKey) -> bool {
    let due = match task.status {
        TaskStatus::Pending => task.attempts < task.max_attempts,
        TaskStatus::Running => task.lease_expires_at.is_some_and(|at| at <= now),
        _ => false,
    };
    if !due || task.scheduled_at >= now || ListKey::of(task) != *entry {
        return false;
    }
    next.scheduled_at = now;
    next.updated_at = now;
    true
}

/// A retry of the failed or cancelled `task` into `next` at `now`: pending, due now, with
/// fresh attempts.
fn retry(task: &Task, next: &mut Task, now: Timestamp) -> bool {
    if !matches!(task.status, TaskStatus::Failed | TaskStatus::Cancelled) {
        return false;
    }
    // "Now" is never before the finish it follows (a host whose clock is behind), so the task's
    // queue instant is a new one: on DynamoDB, an entry at a key the task had before may be
    // known as finished.
    let after = task.queue_at().plus(Duration::from_millis(1));
    next.status = TaskStatus::Pending;
    next.attempts = 0;
    next.scheduled_at = now.max(after);
    next.updated_at = now;
    next.succeeded_at = None;
    next.finished_at = None;
    next.lease_expires_at = None;
    next.held = None;
    true
}

/// True for a running task whose final attempt's lease expired by `due_by`: it is failed
/// rather than run again.
pub fn is_expired_final_attempt(task: &Task, due_by: Timestamp) -> bool {
    task.status == TaskStatus::Running
        && task.attempts >= task.max_attempts
        && task.lease_expires_at.is_some_and(|lease| lease <= due_by)
}

/// Applies `outcome` to a running attempt.
fn settle(task: &mut Task, outcome: &Settlement, now: Timestamp) {
    task.updated_at = now;
    task.lease_expires_at = None;
    match outcome {
        Settlement::Succeeded => {
            task.status = TaskStatus::Succeeded;
            task.succeeded_at = Some(now);
            task.finished_at = Some(now);
        }
        Settlement::Retry { error, retry_at } => {
            task.status = TaskStatus::Pending;
            task.scheduled_at = *retry_at;
            task.last_error = Some(error.clone());
            task.last_failed_attempt_at = Some(now);
        }
        Settlement::Failed { error } => {
            task.status = TaskStatus::Failed;
            task.last_error = Some(error.clone());
            task.last_failed_attempt_at = Some(now);
            task.finished_at = Some(now);
        }
        Settlement::Released => {
            task.status = TaskStatus::Pending;
            task.attempts = task.attempts.saturating_sub(1);
        }
        Settlement::Held { until } => {
            task.status = TaskStatus::Pending;
            task.attempts = task.attempts.saturating_sub(1);
            task.scheduled_at = *until;
            task.held = Some(Held::Circuit);
        }
    }
}

/// A token no other claim has: a ULID (time plus 80 random bits).
pub fn new_lease_token() -> String {
    ulid::Ulid::new().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::NewTask;

    fn at(seconds: u64) -> Timestamp {
        let t0: Timestamp = "2030-01-01T00:00:00Z".parse().expect("timestamp");
        t0.plus(Duration::from_secs(seconds))
    }

    #[test]
    fn a_claim_applies_only_to_due_tasks_with_attempts_left() {
        let mut new = NewTask::new("t", "{}");
        new.scheduled_at = Some(at(10));
        new.max_attempts = Some(1);
        let task = Task::from_new(new, at(0));
        let early = Transition::claim(at(9), at(9), at(60));
        assert_eq!(
            early.apply(&task),
            Err(Refused {
                status: TaskStatus::Pending
            })
        );
        let claim = Transition::claim(at(10), at(10), at(60));
        let running = claim.apply(&task).expect("due");
        assert_eq!((running.status, running.attempts), (TaskStatus::Running, 1));
        let again = Transition::claim(at(61), at(61), at(120));
        assert!(again.apply(&running).is_err(), "no attempts left");
        let expired = Transition::expire(at(61), at(61))
            .apply(&running)
            .expect("expired");
        assert_eq!(expired.status, TaskStatus::Failed);
        assert_ne!(
            expired.lease_token, running.lease_token,
            "the expiry's own token"
        );
        let late = Transition::settle(&running, Settlement::Succeeded, at(62)).expect("token");
        assert!(
            late.apply(&expired).is_err(),
            "the claimant's late outcome is refused"
        );
    }

    #[test]
    fn a_rescue_makes_an_overdue_task_due_now_and_nothing_else() {
        let task = Task::from_new(NewTask::new("t", "{}"), at(0));
        let rescue = |now| Transition::Rescue {
            now,
            entry: ListKey::of(&task),
        };
        let rescued = rescue(at(700)).apply(&task).expect("pending and overdue");
        assert!(
            rescue(at(800)).apply(&rescued).is_err(),
            "it is at another entry now"
        );
        assert_eq!(
            (rescued.scheduled_at, rescued.updated_at),
            (at(700), at(700))
        );
        assert_eq!(rescued.status, TaskStatus::Pending);
        let running = Transition::claim(at(1), at(1), at(60))
            .apply(&task)
            .expect("due");
        assert!(rescue(at(59)).apply(&running).is_err(), "leased");
        assert!(rescue(at(60)).apply(&running).is_ok(), "lease expired");
    }

    #[test]
    fn only_the_claimant_settles() {
        let task = Task::from_new(NewTask::new("t", "{}"), at(0));
        let running = Transition::claim(at(1), at(1), at(60))
            .apply(&task)
            .expect("claim");
        let mut other = running.clone();
        other.lease_token = Some(new_lease_token());
        let settle = Transition::settle(&other, Settlement::Succeeded, at(2)).expect("token");
        let refused = settle.apply(&running).expect_err("another claim's token");
        assert!(
            matches!(settle.refusal(task.id, refused), StoreError::LeaseLost(id) if id == task.id)
        );
    }
}

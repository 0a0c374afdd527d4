//! One attempt: run a claimed task's handler within its timeout, its lease and the run's
//! deadline, and record the outcome.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::outcomes::Outcome;
use super::settling::Settling;
use super::{ProcessorSettings, Tasker};
use crate::handlers::{MAX_RETRY_AFTER, TaskContext, TaskError, TypeSettings};
use crate::report::Report;
use crate::store::{Settlement, Store};
use crate::task::Task;

/// Time kept back after a handler's timeout to write its outcome before the deadline.
const SETTLE_RESERVE: Duration = Duration::from_secs(2);
/// The least time an attempt gets (or its whole timeout, if shorter); with less left before the
/// deadline the task is given back unstarted.
const MIN_ATTEMPT_TIME: Duration = Duration::from_secs(1);
/// How often an outcome write that failed for a passing reason is tried again, and the first
/// pause between tries (doubling); a lost outcome means the task runs again later.
const SETTLE_RETRIES: u32 = 3;
const SETTLE_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// The time limits of one run, scaled down for short invocations: a 3 s Lambda timeout must
/// still leave room to run something, so no margin takes more than a quarter of the run.
#[derive(Debug, Clone, Copy)]
pub(super) struct RunLimits {
    /// None: the run has no end of its own (`tasker serve`); each attempt still has its timeout.
    deadline: Option<Instant>,
    /// No task starts with less than this left.
    margin: Duration,
    /// Kept back after a handler's timeout to write its outcome.
    settle_reserve: Duration,
    /// The least time an attempt gets (or its whole timeout, if shorter).
    min_attempt: Duration,
}

impl RunLimits {
    pub(super) fn new(
        started: Instant,
        deadline: Option<Instant>,
        settings: &ProcessorSettings,
    ) -> Self {
        let quarter = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(started) / 4);
        Self {
            deadline,
            // Never below 10 ms: an invocation already at its deadline starts nothing.
            margin: settings
                .time_margin
                .min(quarter)
                .max(Duration::from_millis(10)),
            settle_reserve: SETTLE_RESERVE.min(quarter),
            min_attempt: MIN_ATTEMPT_TIME.min(quarter),
        }
    }

    pub(super) fn remaining(&self) -> Duration {
        self.deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        })
    }

    /// The least time left for a claim: the margin, and room for a fair attempt and its
    /// outcome, so a claimed task is not given back at once.
    fn claim_margin(&self) -> Duration {
        self.margin.max(self.min_attempt + self.settle_reserve)
    }

    /// True while new tasks may be claimed.
    pub(super) fn may_claim(&self) -> bool {
        self.remaining() >= self.claim_margin()
    }

    /// When claims stop, if ever.
    pub(super) fn last_claim(&self) -> Option<Instant> {
        self.deadline
            .map(|d| d.checked_sub(self.claim_margin()).unwrap_or(d))
    }
}

/// A claimed task and the instant its lease ends, by this process's monotonic clock.
#[derive(Debug)]
pub(super) struct Claimed {
    pub(super) task: Task,
    pub(super) lease_ends: Instant,
}

impl<S: Store> Tasker<S> {
    /// One attempt of the dispatcher's, whose outcome's first write is counted in `settling`
    /// (where the store commits writes in order: see [`super::settling`]).
    pub(super) async fn run_one(
        &self,
        claimed: Claimed,
        limits: RunLimits,
        settling: Option<Arc<Settling>>,
    ) -> Outcome {
        self.run_attempt_with(claimed, limits, settling.as_deref())
            .await
            .0
    }

    /// One attempt of `claimed`: its outcome, and the task as recorded (none when the outcome
    /// could not be written).
    pub(super) async fn run_attempt(
        &self,
        claimed: Claimed,
        limits: RunLimits,
    ) -> (Outcome, Option<Task>) {
        self.run_attempt_with(claimed, limits, None).await
    }

    async fn run_attempt_with(
        &self,
        claimed: Claimed,
        limits: RunLimits,
        settling: Option<&Settling>,
    ) -> (Outcome, Option<Task>) {
        let Claimed { task, lease_ends } = claimed;
        let remaining = limits.remaining();
        if remaining < limits.margin {
            return self.give_back(&task, true).await;
        }
        let started = Instant::now();
        let result = match self.registry.get(&task.task_type) {
            None => Err(TaskError::Retryable(format!(
                "no handler is registered for task type {:?}",
                task.task_type
            ))),
            Some(handler) => {
                let limit = self
                    .registry
                    .settings(&task.task_type)
                    .map_or(TypeSettings::default().timeout, |settings| settings.timeout);
                let by_deadline = remaining.saturating_sub(limits.settle_reserve);
                // Too little time for a fair attempt: give the task back rather than burn one.
                if by_deadline < limit.min(limits.min_attempt) {
                    return self.give_back(&task, true).await;
                }
                // The handler ends before its lease does, with time left to write its outcome,
                // so no other processor can start the task while this attempt still runs. The
                // lease is the type's timeout plus the grace, so it only cuts in when the claim
                // itself took most of the grace.
                let lease_left = lease_ends
                    .saturating_duration_since(Instant::now())
                    .saturating_sub(self.settings.lease_grace.min(limits.settle_reserve));
                if lease_left.is_zero() {
                    return self.give_back(&task, false).await;
                }
                let timeout = limit.min(by_deadline).min(lease_left);
                let ctx = TaskContext {
                    id: task.id,
                    task_type: task.task_type.clone(),
                    attempt: task.attempts,
                    payload: task.payload.clone(),
                };
                run_handler(handler(ctx), timeout).await
            }
        };
        // The key waits first, so no task of it starts in between the outcome and the wait.
        if let Some(wait) = result.as_ref().err().and_then(TaskError::retry_after) {
            self.defer_rate_key(&task, wait).await;
        }
        let settlement = self.settlement_of(&task, result);
        self.record(&task, settlement, started.elapsed(), settling)
            .await
    }

    /// The other side asked for a pause of `wait` (`Retry-After`): when `task`'s rate key has
    /// a rate, no task of the key starts before then, in any process (the next one after it
    /// at the key's rate). A failure is logged: the task's own retry waits either way.
    async fn defer_rate_key(&self, task: &Task, wait: Duration) {
        let Some(key) = &task.rate_key else { return };
        let Some(rate) = self.key_limits.rate(&task.task_type, key) else {
            return;
        };
        let until = self.clock.now().plus(wait + rate.tolerance());
        if let Err(err) = self.store.key_defer(key, until).await {
            tracing::warn!(task_id = %task.id, key = %key, error = %Report(&err), "could not defer the rate key the receiver asked to wait");
        }
    }

    /// What an attempt of `task` that ended with `result` records: a success, a retry after
    /// the task's backoff, or a failure once the error is permanent or no attempt is left.
    fn settlement_of(&self, task: &Task, result: Result<(), TaskError>) -> Settlement {
        match result {
            Ok(()) => Settlement::Succeeded,
            // Not a failure of the task's: nothing was sent.
            Err(TaskError::Hold { after, .. }) => Settlement::Held {
                until: self
                    .clock
                    .now()
                    .plus(after.clamp(Duration::from_millis(1), MAX_RETRY_AFTER)),
            },
            Err(err) if err.is_permanent() || task.attempts >= task.max_attempts => {
                Settlement::Failed {
                    error: error_text(&err),
                }
            }
            Err(err) => {
                let backoff = task.retry_policy.delay(task.attempts, (self.jitter)());
                // The receiver's wait when it named one (a retry storm is what it asks us
                // not to make), the backoff when that is longer; at least 1 ms later than
                // now, so never due again within this run.
                let wait = backoff
                    .max(err.retry_after().unwrap_or_default())
                    .max(Duration::from_millis(1));
                Settlement::Retry {
                    error: error_text(&err),
                    retry_at: self.clock.now().plus(wait),
                }
            }
        }
    }

    /// Gives `task` back unstarted; `out_of_time` when the run's deadline is why (the run then
    /// claims nothing more), not its spent lease.
    async fn give_back(&self, task: &Task, out_of_time: bool) -> (Outcome, Option<Task>) {
        match self
            .record(task, Settlement::Released, Duration::ZERO, None)
            .await
        {
            (Outcome::Released, recorded) if out_of_time => (Outcome::ReleasedOutOfTime, recorded),
            other => other,
        }
    }

    /// Writes the outcome of `task`'s attempt, trying again after a passing failure; its
    /// first write is counted in `settling`, if given.
    pub(super) async fn record(
        &self,
        task: &Task,
        settlement: Settlement,
        took: Duration,
        settling: Option<&Settling>,
    ) -> (Outcome, Option<Task>) {
        let outcome = match &settlement {
            Settlement::Succeeded => Outcome::Succeeded,
            Settlement::Retry { .. } => Outcome::Retried,
            Settlement::Failed { .. } => Outcome::Failed,
            Settlement::Released => Outcome::Released,
            Settlement::Held { .. } => Outcome::Held,
        };
        let error = match &settlement {
            Settlement::Retry { error, .. } | Settlement::Failed { error } => Some(error.clone()),
            _ => None,
        };
        // One outcome, one instant: a try after one whose answer was lost writes exactly what
        // the first did, so the store recognises its own landed write.
        let now = self.clock.now();
        let first = settling.map(Settling::begin);
        let mut written = self.store.task_settle(task, settlement.clone(), now).await;
        // Only the first write lends the slot: a try again is queued behind the claims it
        // made room for, which may commit without it.
        drop(first);
        let mut pause = SETTLE_RETRY_PAUSE;
        for _ in 0..SETTLE_RETRIES {
            match &written {
                Err(err) if err.is_retryable() => {
                    tracing::warn!(task_id = %task.id, error = %Report(err), "recording the outcome failed; trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    written = self.store.task_settle(task, settlement.clone(), now).await;
                }
                _ => break,
            }
        }
        match written {
            Ok(recorded) => {
                tracing::info!(
                    task_id = %task.id,
                    task_type = %task.task_type,
                    attempt = task.attempts,
                    outcome = ?outcome,
                    duration_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                    error = error.as_deref(),
                    "attempt settled"
                );
                (outcome, Some(recorded))
            }
            Err(err) => {
                tracing::error!(
                    task_id = %task.id,
                    task_type = %task.task_type,
                    attempt = task.attempts,
                    intended = ?outcome,
                    error = %Report(&err),
                    "could not record the outcome; the lease will expire and the task run again"
                );
                (Outcome::Unrecorded, None)
            }
        }
    }
}

/// Runs a handler's future within `timeout`, in a task of its own so that a panic is contained
/// to this attempt: a panic, an abort and a timeout are retryable failures.
async fn run_handler(
    attempt: crate::handlers::HandlerFuture,
    timeout: Duration,
) -> Result<(), TaskError> {
    let mut running = tokio::spawn(attempt);
    match tokio::time::timeout(timeout, &mut running).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) if join.is_panic() => Err(TaskError::Retryable(format!(
            "handler panicked: {}",
            panic_message(join.into_panic())
        ))),
        Ok(Err(join)) => Err(TaskError::Retryable(format!("handler aborted: {join}"))),
        Err(_) => {
            running.abort();
            Err(TaskError::Retryable(format!(
                "handler timed out after {}",
                humantime::format_duration(timeout)
            )))
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// Longest `lastError` kept, in characters: a task's item stays within DynamoDB's 400 KB with
/// the largest payload beside it.
const MAX_ERROR_CHARS: usize = 4096;

/// An attempt's error as its task keeps it: at most [`MAX_ERROR_CHARS`] characters, and U+0000
/// (which PostgreSQL's text cannot hold) as U+FFFD, so the outcome is written on every store.
fn error_text(err: &TaskError) -> String {
    err.to_string()
        .chars()
        .take(MAX_ERROR_CHARS)
        .map(|c| {
            if c == '\0' {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect()
}

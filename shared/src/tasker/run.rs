//! Processing the queue: claim batches of due tasks, run their handlers within the
//! invocation's time, and record each outcome.

use std::time::{Duration, Instant};

use futures::StreamExt;

use super::{PollSettings, ProcessorSettings, RunSummary, Tasker, TaskerError};
use crate::report::Report;
use crate::store::{Settlement, TaskQueue};
use crate::task::Task;
use crate::tasks::{TaskContext, TaskError, TypeSettings};

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
struct RunLimits {
    deadline: Instant,
    /// No task starts with less than this left.
    margin: Duration,
    /// Kept back after a handler's timeout to write its outcome.
    settle_reserve: Duration,
    /// The least time an attempt gets (or its whole timeout, if shorter).
    min_attempt: Duration,
}

impl RunLimits {
    fn new(started: Instant, deadline: Instant, settings: &ProcessorSettings) -> Self {
        let quarter = deadline.saturating_duration_since(started) / 4;
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

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// The outcome of one claimed task inside a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Retried,
    Failed,
    Released,
    /// The outcome could not be written (lease lost or store error); logged.
    Unrecorded,
}

impl<S: TaskQueue> Tasker<S> {
    /// Poll mode: runs [`Tasker::process_queue`] now and then every `poll.interval` until
    /// `poll.window` has passed or `deadline` leaves less than the time margin; the runs' counts
    /// add up. A run that takes longer than the interval is followed at once by the next. Only a
    /// failure of the first run fails the call; later ones are counted as errors and polling goes
    /// on, since the store may recover within the window.
    pub async fn poll_queue(
        &self,
        deadline: Option<Instant>,
        poll: PollSettings,
    ) -> Result<RunSummary, TaskerError> {
        let started = Instant::now();
        let window_end = started + poll.window;
        let interval = poll.interval.max(Duration::from_millis(10));
        let mut total = RunSummary::default();
        let mut next = started;
        let mut runs = 0_u64;
        loop {
            match self.process_queue(deadline).await {
                Ok(run) => total.absorb(&run),
                Err(err) if runs == 0 => return Err(err),
                Err(err) => {
                    tracing::warn!(error = %Report(&err), "a poll run failed; polling goes on");
                    total.errors += 1;
                }
            }
            runs += 1;
            next = (next + interval).max(Instant::now());
            let stop_by = deadline.map(|d| d.checked_sub(self.settings.time_margin).unwrap_or(d));
            if next >= window_end || stop_by.is_some_and(|stop| next >= stop) {
                break;
            }
            tokio::time::sleep_until(next.into()).await;
        }
        total.duration_ms = millis_since(started);
        tracing::info!(
            runs,
            claimed = total.claimed,
            succeeded = total.succeeded,
            duration_ms = total.duration_ms,
            "poll window finished"
        );
        Ok(total)
    }

    /// Claims batches of due tasks and runs them, at most `concurrency` at a time, until a claim
    /// finds nothing or `deadline` (capped at `max_run` from now) leaves less than the time
    /// margin. Only tasks due when the run started are claimed, so a retry scheduled during
    /// the run waits for the next one.
    pub async fn process_queue(
        &self,
        deadline: Option<Instant>,
    ) -> Result<RunSummary, TaskerError> {
        let started = Instant::now();
        let cap = started + self.settings.max_run;
        let deadline = deadline.map_or(cap, |d| d.min(cap));
        let mut summary = RunSummary::default();
        let limits = RunLimits::new(started, deadline, &self.settings);
        let due_by = self.clock.now();
        // The lease covers the whole run: no handler outlives the deadline.
        let lease_until =
            due_by.plus(deadline.saturating_duration_since(started) + self.settings.lease_grace);
        let claim = || {
            self.store.claim_due(
                due_by,
                self.clock.now(),
                self.settings.batch_size,
                lease_until,
            )
        };
        if limits.remaining() < limits.margin {
            tracing::warn!("too little time left to start any task");
            summary.duration_ms = millis_since(started);
            return Ok(summary);
        }
        // Nothing done yet: a failure fails the run so the invocation itself reports the outage.
        let mut batch = claim().await?;
        // Keep claiming until a claim comes back empty: on DynamoDB a batch can be short because
        // another processor won some candidates while more tasks are still due.
        while !batch.is_empty() {
            summary.claimed += batch.len();
            let run = futures::stream::iter(batch)
                .map(|task| self.run_one(task, limits))
                .buffer_unordered(self.settings.concurrency.max(1))
                .collect::<Vec<Outcome>>();
            // The next batch is claimed while this one runs, so the store's round trips overlap
            // the handlers and their outcome writes. Tasks it claims while this batch runs out
            // of time are given back unstarted by the next round, which then claims no more.
            let ahead = async {
                if limits.remaining() < limits.margin {
                    None
                } else {
                    Some(claim().await)
                }
            };
            let (outcomes, ahead) = futures::future::join(run, ahead).await;
            outcomes
                .into_iter()
                .for_each(|outcome| summary.count(outcome));
            batch = match ahead {
                None => break,
                Some(Ok(next)) => next,
                Some(Err(err)) => {
                    tracing::error!(error = %Report(&err), "claiming the next batch failed; ending the run");
                    summary.errors += 1;
                    break;
                }
            };
        }
        summary.duration_ms = millis_since(started);
        summary.log();
        Ok(summary)
    }

    async fn run_one(&self, task: Task, limits: RunLimits) -> Outcome {
        let remaining = limits.remaining();
        if remaining < limits.margin {
            return self
                .record(&task, Settlement::Released, Duration::ZERO)
                .await;
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
                let timeout = limit.min(remaining.saturating_sub(limits.settle_reserve));
                // Too little time for a fair attempt: give the task back rather than burn one.
                if timeout < limit.min(limits.min_attempt) {
                    return self
                        .record(&task, Settlement::Released, Duration::ZERO)
                        .await;
                }
                let ctx = TaskContext {
                    id: task.id,
                    task_type: task.task_type.clone(),
                    attempt: task.attempts,
                    payload: task.payload.clone(),
                };
                // A separate task contains a panic to this attempt.
                let mut running = tokio::spawn(handler(ctx));
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
        };
        let settlement = match result {
            Ok(()) => Settlement::Succeeded,
            Err(err) if err.is_permanent() || task.attempts >= task.max_attempts => {
                Settlement::Failed {
                    error: err.to_string(),
                }
            }
            Err(err) => Settlement::Retry {
                error: err.to_string(),
                // At least 1 ms later than now, so never due again within this run.
                retry_at: self.clock.now().plus(
                    task.retry_policy
                        .delay(task.attempts, (self.jitter)())
                        .max(Duration::from_millis(1)),
                ),
            },
        };
        self.record(&task, settlement, started.elapsed()).await
    }

    async fn record(&self, task: &Task, settlement: Settlement, took: Duration) -> Outcome {
        let outcome = match &settlement {
            Settlement::Succeeded => Outcome::Succeeded,
            Settlement::Retry { .. } => Outcome::Retried,
            Settlement::Failed { .. } => Outcome::Failed,
            Settlement::Released => Outcome::Released,
        };
        let error = match &settlement {
            Settlement::Retry { error, .. } | Settlement::Failed { error } => Some(error.clone()),
            _ => None,
        };
        // One outcome, one instant: a try after one whose answer was lost writes exactly what
        // the first did, so the store recognises its own landed write.
        let now = self.clock.now();
        let mut written = self.store.settle(task, settlement.clone(), now).await;
        let mut pause = SETTLE_RETRY_PAUSE;
        for _ in 0..SETTLE_RETRIES {
            match &written {
                Err(err) if err.is_retryable() => {
                    tracing::warn!(task_id = %task.id, error = %Report(err), "recording the outcome failed; trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    written = self.store.settle(task, settlement.clone(), now).await;
                }
                _ => break,
            }
        }
        match written {
            Ok(_) => {
                tracing::info!(
                    task_id = %task.id,
                    task_type = %task.task_type,
                    attempt = task.attempts,
                    outcome = ?outcome,
                    duration_ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
                    error = error.as_deref(),
                    "attempt settled"
                );
                outcome
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
                Outcome::Unrecorded
            }
        }
    }
}

impl RunSummary {
    /// Counts one task's outcome.
    fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Succeeded => self.succeeded += 1,
            Outcome::Retried => self.retried += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Released => self.released += 1,
            Outcome::Unrecorded => self.errors += 1,
        }
    }

    /// Logs the run: one line, at debug level when it found nothing.
    fn log(&self) {
        if self.claimed == 0 {
            tracing::debug!(
                duration_ms = self.duration_ms,
                "processor run found nothing due"
            );
            return;
        }
        tracing::info!(
            claimed = self.claimed,
            succeeded = self.succeeded,
            retried = self.retried,
            failed = self.failed,
            released = self.released,
            errors = self.errors,
            duration_ms = self.duration_ms,
            "processor run finished"
        );
    }
}

/// Whole milliseconds since `started`.
fn millis_since(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
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

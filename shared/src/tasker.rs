//! The Tasker operations over a store and a registry: create, cancel, process the queue, clean up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;

use crate::clock::{Clock, SystemClock, Timestamp};
use crate::store::{
    Created, Settlement, StoreError, TaskCanceller, TaskPurger, TaskQueue, TaskReader, TaskWriter,
};
use crate::task::{NewTask, Task, TaskId, ValidationError};
use crate::tasks::{Registry, TaskContext, TaskError, TypeSettings};

/// Time kept back after a handler's timeout to write its outcome before the deadline.
const SETTLE_RESERVE: Duration = Duration::from_secs(2);
/// How often an outcome write that failed for a passing reason is tried again, and the first
/// pause between tries (doubling); a lost outcome means the task runs again later.
const SETTLE_RETRIES: u32 = 3;
const SETTLE_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// How a processor run behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessorSettings {
    /// Tasks claimed per run.
    pub batch_size: usize,
    /// Handlers running at once.
    pub concurrency: usize,
    /// Longest a run may last when the caller gives no deadline (`tasker serve`, `tasker process`).
    pub max_run: Duration,
    /// No task starts when less than this remains before the deadline.
    pub time_margin: Duration,
    /// How long a claim outlives the run's deadline, so a slow final write is not mistaken for
    /// a crash; after it a crashed run's tasks are due again.
    pub lease_grace: Duration,
}

impl Default for ProcessorSettings {
    fn default() -> Self {
        Self {
            batch_size: 100,
            concurrency: 16,
            max_run: Duration::from_secs(300),
            time_margin: Duration::from_secs(10),
            lease_grace: Duration::from_secs(30),
        }
    }
}

/// What one processor run did; the processor Lambda returns it as JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// Tasks claimed (attempts started or given back).
    pub claimed: usize,
    /// Attempts that succeeded.
    pub succeeded: usize,
    /// Attempts that failed and will be retried.
    pub retried: usize,
    /// Attempts that failed for good.
    pub failed: usize,
    /// Claimed tasks given back unstarted because the run ran out of time.
    pub released: usize,
    /// Store errors: outcomes that could not be recorded (their lease expires and the task runs
    /// again) and failed claims after the first batch.
    pub errors: usize,
    /// Wall time of the run.
    pub duration_ms: u64,
}

/// What one cleanup run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanupSummary {
    /// Finished tasks deleted.
    pub deleted: u64,
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TaskerError {
    /// The create request breaks a field rule.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// No handler is registered for the type.
    #[error("`type` {0:?} is not a registered task type")]
    UnknownType(String),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
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

/// Tasker over the store `S`.
#[derive(Clone)]
pub struct Tasker<S> {
    store: S,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    settings: ProcessorSettings,
}

impl<S> Tasker<S> {
    /// Tasker over `store` with the system clock.
    pub fn new(store: S, registry: Registry, settings: ProcessorSettings) -> Self {
        Self::with_clock(store, registry, settings, Arc::new(SystemClock))
    }

    /// Tasker with an injected clock.
    pub fn with_clock(
        store: S,
        registry: Registry,
        settings: ProcessorSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            registry: Arc::new(registry),
            clock,
            settings,
        }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The handler registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The current time of this Tasker's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

impl<S: TaskWriter> Tasker<S> {
    /// Validates and stores a new task with its type's default attempts and retry policy; a
    /// repeated idempotency key returns the task it made the first time.
    pub async fn create(&self, new: NewTask) -> Result<Created, TaskerError> {
        new.validate()?;
        let Some(settings) = self.registry.settings(&new.task_type) else {
            return Err(TaskerError::UnknownType(new.task_type));
        };
        let task =
            Task::from_new_with(new, self.clock.now(), settings.max_attempts, settings.retry);
        Ok(self.store.create(task).await?)
    }
}

impl<S: TaskReader> Tasker<S> {
    /// The task with `id`.
    pub async fn get(&self, id: TaskId) -> Result<Task, TaskerError> {
        self.store
            .get(id)
            .await?
            .ok_or(TaskerError::Store(StoreError::NotFound(id)))
    }
}

impl<S: TaskCanceller> Tasker<S> {
    /// Cancels the pending task `id`.
    pub async fn cancel(&self, id: TaskId) -> Result<Task, TaskerError> {
        Ok(self.store.cancel(id, self.clock.now()).await?)
    }

    /// Cancels every pending task with `reference_uid` (and `task_type`, when given).
    pub async fn cancel_by_reference(
        &self,
        reference_uid: &str,
        task_type: Option<&str>,
    ) -> Result<Vec<TaskId>, TaskerError> {
        let now = self.clock.now();
        Ok(self
            .store
            .cancel_by_reference(reference_uid, task_type, now)
            .await?)
    }
}

impl<S: TaskPurger> Tasker<S> {
    /// Deletes finished tasks older than `retention`.
    pub async fn cleanup(&self, retention: Duration) -> Result<CleanupSummary, TaskerError> {
        let cutoff = self.clock.now().minus(retention);
        let deleted = self.store.purge_finished_before(cutoff).await?;
        tracing::info!(deleted, cutoff = %cutoff, "cleanup finished");
        Ok(CleanupSummary { deleted })
    }
}

impl<S: TaskQueue> Tasker<S> {
    /// Claims batches of due tasks and runs them, at most `concurrency` at a time, while full
    /// batches keep coming and `deadline` (capped at `max_run` from now) leaves more than the
    /// time margin. Only tasks due when the run started are claimed, so a retry scheduled during
    /// the run waits for the next one.
    pub async fn process_queue(
        &self,
        deadline: Option<Instant>,
    ) -> Result<RunSummary, TaskerError> {
        let started = Instant::now();
        let cap = started + self.settings.max_run;
        let deadline = deadline.map_or(cap, |d| d.min(cap));
        let mut summary = RunSummary::default();
        let due_by = self.clock.now();
        // The lease covers the whole run: no handler outlives the deadline.
        let lease_until =
            due_by.plus(deadline.saturating_duration_since(started) + self.settings.lease_grace);
        loop {
            if deadline.saturating_duration_since(Instant::now()) < self.settings.time_margin {
                if summary.claimed == 0 {
                    tracing::warn!("too little time left to start any task");
                }
                break;
            }
            let batch = match self
                .store
                .claim_due(
                    due_by,
                    self.clock.now(),
                    self.settings.batch_size,
                    lease_until,
                )
                .await
            {
                Ok(batch) => batch,
                // Nothing done yet: fail the run so the invocation itself reports the outage.
                Err(err) if summary.claimed == 0 => return Err(err.into()),
                Err(err) => {
                    tracing::error!(error = %err, "claiming the next batch failed; ending the run");
                    summary.errors += 1;
                    break;
                }
            };
            let full = batch.len() >= self.settings.batch_size;
            summary.claimed += batch.len();
            let outcomes: Vec<Outcome> = futures::stream::iter(batch)
                .map(|task| self.run_one(task, deadline))
                .buffer_unordered(self.settings.concurrency.max(1))
                .collect()
                .await;
            for outcome in outcomes {
                match outcome {
                    Outcome::Succeeded => summary.succeeded += 1,
                    Outcome::Retried => summary.retried += 1,
                    Outcome::Failed => summary.failed += 1,
                    Outcome::Released => summary.released += 1,
                    Outcome::Unrecorded => summary.errors += 1,
                }
            }
            if !full {
                break;
            }
        }
        summary.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if summary.claimed == 0 {
            tracing::debug!(
                duration_ms = summary.duration_ms,
                "processor run found nothing due"
            );
            return Ok(summary);
        }
        tracing::info!(
            claimed = summary.claimed,
            succeeded = summary.succeeded,
            retried = summary.retried,
            failed = summary.failed,
            released = summary.released,
            errors = summary.errors,
            duration_ms = summary.duration_ms,
            "processor run finished"
        );
        Ok(summary)
    }

    async fn run_one(&self, task: Task, deadline: Instant) -> Outcome {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining < self.settings.time_margin {
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
                let timeout = limit.min(remaining.saturating_sub(SETTLE_RESERVE));
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
                retry_at: self.clock.now().plus(
                    task.retry_policy
                        .delay(task.attempts, rand::random::<f64>()),
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
        let mut written = self
            .store
            .settle(task, settlement.clone(), self.clock.now())
            .await;
        let mut pause = SETTLE_RETRY_PAUSE;
        for _ in 0..SETTLE_RETRIES {
            match &written {
                Err(err) if err.is_retryable() => {
                    tracing::warn!(task_id = %task.id, error = %err, "recording the outcome failed; trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    written = self
                        .store
                        .settle(task, settlement.clone(), self.clock.now())
                        .await;
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
                    error = %err,
                    "could not record the outcome; the lease will expire and the task run again"
                );
                Outcome::Unrecorded
            }
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

//! The Tasker operations over a store and a registry: create, cancel, process the queue, clean up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;

use crate::clock::{Clock, SystemClock, Timestamp};
use crate::store::{
    Backlog, Created, ListFilter, ListKey, QueueStats, Settlement, StatusCounts, StoreError,
    TaskCanceller, TaskLister, TaskPage, TaskPurger, TaskQueue, TaskReader, TaskRetrier,
    TaskWriter,
};
use crate::task::{NewTask, Task, TaskId, ValidationError};
use crate::tasks::{Registry, TaskContext, TaskError, TypeSettings};

/// Time kept back after a handler's timeout to write its outcome before the deadline.
const SETTLE_RESERVE: Duration = Duration::from_secs(2);
/// The least time an attempt gets (or its whole timeout, if shorter); with less left before the
/// deadline the task is given back unstarted.
const MIN_ATTEMPT_TIME: Duration = Duration::from_secs(1);
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

impl RunSummary {
    /// Adds the counts of `other` (a later run of the same invocation) to these.
    pub fn absorb(&mut self, other: &Self) {
        self.claimed += other.claimed;
        self.succeeded += other.succeeded;
        self.retried += other.retried;
        self.failed += other.failed;
        self.released += other.released;
        self.errors += other.errors;
    }
}

/// Poll mode: one invocation keeps running the queue every `interval` until `window` has
/// passed, so a task starts within about `interval` of becoming due instead of waiting for the
/// next scheduled invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollSettings {
    /// How long an invocation keeps polling; zero runs the queue once (poll mode off).
    pub window: Duration,
    /// Time between the starts of two runs.
    pub interval: Duration,
}

impl Default for PollSettings {
    fn default() -> Self {
        Self {
            window: Duration::ZERO,
            interval: Duration::from_secs(1),
        }
    }
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

impl TaskerError {
    /// A short name for the kind of failure, as Lambda's `errorType` wants it.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "InvalidTask",
            Self::UnknownType(_) => "UnknownTaskType",
            Self::Store(store) if store.is_retryable() => "StoreUnavailable",
            Self::Store(_) => "StoreError",
        }
    }
}

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

/// Tasker over the store `S`.
#[derive(Clone)]
pub struct Tasker<S> {
    store: S,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    settings: ProcessorSettings,
    jitter: fn() -> f64,
    due_now: Arc<tokio::sync::Notify>,
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
            jitter: rand::random::<f64>,
            due_now: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Completes once a task created through this Tasker is due at once (or already had
    /// been since the last call): `tasker serve` runs the queue then instead of waiting for
    /// its interval. Lambda functions are separate processes and poll instead.
    pub async fn task_due_now(&self) {
        self.due_now.notified().await;
    }

    /// Replaces the backoff's random draw in `[0, 1)` (tests pin it to check exact schedules).
    pub fn with_jitter(mut self, jitter: fn() -> f64) -> Self {
        self.jitter = jitter;
        self
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
        let now = self.clock.now();
        let task = Task::from_new_with(new, now, settings.max_attempts, settings.retry);
        let created = self.store.create(task).await?;
        if let Created::New(task) = &created {
            if task.scheduled_at <= now {
                self.due_now.notify_one();
            }
        }
        Ok(created)
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

impl<S: TaskRetrier> Tasker<S> {
    /// Puts the failed or cancelled task `id` back in the queue, due now, with fresh attempts.
    pub async fn retry(&self, id: TaskId) -> Result<Task, TaskerError> {
        let task = self.store.retry(id, self.clock.now()).await?;
        self.due_now.notify_one();
        Ok(task)
    }
}

impl<S: QueueStats> Tasker<S> {
    /// Due tasks now and the oldest due instant.
    pub async fn backlog(&self) -> Result<Backlog, TaskerError> {
        Ok(self.store.backlog(self.clock.now()).await?)
    }
}

impl<S: TaskPurger> Tasker<S> {
    /// Deletes finished tasks older than `retention`.
    pub async fn cleanup(&self, retention: Duration) -> Result<CleanupSummary, TaskerError> {
        self.cleanup_with_progress(retention, &|_| ()).await
    }

    /// Deletes finished tasks older than `retention`, calling `progress` with each chunk's count.
    pub async fn cleanup_with_progress(
        &self,
        retention: Duration,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<CleanupSummary, TaskerError> {
        let cutoff = self.clock.now().minus(retention);
        let deleted = self.store.purge_finished_before(cutoff, progress).await?;
        tracing::info!(deleted, cutoff = %cutoff, "cleanup finished");
        Ok(CleanupSummary { deleted })
    }
}

/// Largest page a listing returns.
pub const MAX_LIST_LIMIT: usize = 100;

/// Counts per status and the backlog, as `GET /stats` and `tasker stats` show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Tasks in each status.
    pub counts: StatusCounts,
    /// Tasks due now and not running (pending past their time, or with an expired lease).
    pub due: u64,
    /// Seconds since the oldest of them became due; `None` when nothing is due.
    pub oldest_due_age_seconds: Option<u64>,
}

impl<S: TaskLister> Tasker<S> {
    /// Up to `limit` (at most [`MAX_LIST_LIMIT`]) tasks matching `filter`, newest first, below
    /// `after`.
    pub async fn list(
        &self,
        filter: &ListFilter,
        after: Option<ListKey>,
        limit: usize,
    ) -> Result<TaskPage, TaskerError> {
        Ok(self
            .store
            .list(filter, after, limit.min(MAX_LIST_LIMIT), self.clock.now())
            .await?)
    }
}

impl<S: TaskLister + QueueStats> Tasker<S> {
    /// Counts per status and the backlog, read at once.
    pub async fn stats(&self) -> Result<Stats, TaskerError> {
        let now = self.clock.now();
        let (counts, backlog) =
            futures::future::try_join(self.store.counts(now), self.store.backlog(now)).await?;
        Ok(Stats {
            counts,
            due: backlog.due,
            oldest_due_age_seconds: backlog.oldest_due_at.map(|at| now.since(at).as_secs()),
        })
    }
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
                    tracing::warn!(error = %err, "a poll run failed; polling goes on");
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
        total.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
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
            summary.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
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
            for outcome in outcomes {
                match outcome {
                    Outcome::Succeeded => summary.succeeded += 1,
                    Outcome::Retried => summary.retried += 1,
                    Outcome::Failed => summary.failed += 1,
                    Outcome::Released => summary.released += 1,
                    Outcome::Unrecorded => summary.errors += 1,
                }
            }
            batch = match ahead {
                None => break,
                Some(Ok(next)) => next,
                Some(Err(err)) => {
                    tracing::error!(error = %err, "claiming the next batch failed; ending the run");
                    summary.errors += 1;
                    break;
                }
            };
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

#[cfg(test)]
mod tests {
    //! Clock-driven: time is a `ManualClock`, so schedules, backoff and leases are checked
    //! without sleeping.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::clock::ManualClock;
    use crate::retry::RetryPolicy;
    use crate::store::SqliteStore;
    use crate::task::TaskStatus;

    fn start() -> Timestamp {
        "2030-01-01T00:00:00Z"
            .parse()
            .unwrap_or_else(|_| Timestamp::now_utc())
    }

    fn tasker(registry: Registry) -> (Tasker<SqliteStore>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(start()));
        let store = SqliteStore::in_memory().expect("sqlite");
        let settings = ProcessorSettings {
            time_margin: Duration::from_millis(100),
            ..ProcessorSettings::default()
        };
        let tasker = Tasker::with_clock(store, registry, settings, clock.clone());
        (tasker, clock)
    }

    #[tokio::test]
    async fn creating_a_task_due_now_wakes_the_local_loop() {
        use futures::FutureExt;
        let (registry, _) = counting("t", TypeSettings::default(), None);
        let (tasker, _) = tasker(registry);
        let mut later = NewTask::new("t", "{}");
        later.scheduled_at = Some(start().plus(Duration::from_secs(3600)));
        tasker.create(later).await.expect("create");
        assert!(
            tasker.task_due_now().now_or_never().is_none(),
            "a task due later does not wake the loop"
        );
        tasker
            .create(NewTask::new("t", "{}"))
            .await
            .expect("create");
        assert!(
            tasker.task_due_now().now_or_never().is_some(),
            "a task due now wakes it"
        );
        assert!(tasker.task_due_now().now_or_never().is_none(), "once");
    }

    fn counting(
        task_type: &str,
        settings: TypeSettings,
        fail: Option<TaskError>,
    ) -> (Registry, Arc<AtomicU32>) {
        let runs = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&runs);
        let mut registry = Registry::new();
        registry
            .register_with(task_type, settings, move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
                let fail = fail.clone();
                async move { fail.map_or(Ok(()), Err) }
            })
            .expect("register");
        (registry, runs)
    }

    async fn run(tasker: &Tasker<SqliteStore>) -> RunSummary {
        tasker.process_queue(None).await.expect("run")
    }

    async fn create(tasker: &Tasker<SqliteStore>, new: NewTask) -> TaskId {
        tasker.create(new).await.expect("create").into_task().id
    }

    #[tokio::test]
    async fn a_scheduled_task_waits_for_its_time() {
        let (registry, runs) = counting("t", TypeSettings::default(), None);
        let (tasker, clock) = tasker(registry);
        let mut new = NewTask::new("t", "{}");
        new.scheduled_at = Some(start().plus(Duration::from_secs(60)));
        let id = create(&tasker, new).await;

        assert_eq!(run(&tasker).await.claimed, 0);
        clock.advance(Duration::from_millis(59_999));
        assert_eq!(run(&tasker).await.claimed, 0);
        clock.advance(Duration::from_millis(1));
        assert_eq!(run(&tasker).await.succeeded, 1);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let task = tasker.get(id).await.expect("get");
        assert_eq!(task.status, TaskStatus::Succeeded);
    }

    #[tokio::test]
    async fn failures_back_off_by_the_policy_then_fail() {
        let settings = TypeSettings {
            max_attempts: 4,
            retry: RetryPolicy {
                initial_interval_ms: 10_000,
                factor: 3.0,
                max_interval_ms: 60_000,
                min_interval_ms: 0,
            },
            ..TypeSettings::default()
        };
        let failure = Some(TaskError::Retryable("HTTP 503".into()));
        let (registry, runs) = counting("t", settings, failure);
        let (tasker, clock) = tasker(registry);
        // The jitter draw pinned to one half: each wait is half its ceiling.
        let tasker = tasker.with_jitter(|| 0.5);
        let id = create(&tasker, NewTask::new("t", "{}")).await;

        // Ceilings 10 s, 30 s, then capped at 60 s: waits of 5 s, 15 s, 30 s.
        for expected_wait in [5, 15, 30] {
            assert_eq!(run(&tasker).await.retried, 1);
            let task = tasker.get(id).await.expect("get");
            let now = clock.now();
            assert_eq!(
                task.scheduled_at,
                now.plus(Duration::from_secs(expected_wait))
            );
            assert_eq!(task.last_error.as_deref(), Some("HTTP 503"));
            assert_eq!(run(&tasker).await.claimed, 0, "not again before its time");
            clock.advance(Duration::from_millis(expected_wait * 1000 - 1));
            assert_eq!(run(&tasker).await.claimed, 0, "not 1 ms early either");
            clock.advance(Duration::from_millis(1));
        }

        // Attempt 4 is the last.
        assert_eq!(run(&tasker).await.failed, 1);
        let task = tasker.get(id).await.expect("get");
        assert_eq!((task.status, task.attempts), (TaskStatus::Failed, 4));
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        clock.advance(Duration::from_secs(3600));
        assert_eq!(run(&tasker).await.claimed, 0);
    }

    #[tokio::test]
    async fn full_jitter_of_zero_still_waits_for_the_next_run() {
        let failure = Some(TaskError::Retryable("boom".into()));
        let (registry, runs) = counting("t", TypeSettings::default(), failure);
        let (tasker, clock) = tasker(registry);
        let tasker = tasker.with_jitter(|| 0.0);
        let id = create(&tasker, NewTask::new("t", "{}")).await;
        assert_eq!(run(&tasker).await.retried, 1);
        assert_eq!(runs.load(Ordering::SeqCst), 1, "not rerun within the run");
        let task = tasker.get(id).await.expect("get");
        assert_eq!(
            task.scheduled_at,
            clock.now().plus(Duration::from_millis(1))
        );
    }

    #[tokio::test]
    async fn a_permanent_error_fails_at_once() {
        let failure = Some(TaskError::Permanent("bad payload".into()));
        let (registry, _) = counting("t", TypeSettings::default(), failure);
        let (tasker, _) = tasker(registry);
        let id = create(&tasker, NewTask::new("t", "{}")).await;
        assert_eq!(run(&tasker).await.failed, 1);
        let task = tasker.get(id).await.expect("get");
        assert_eq!((task.status, task.attempts), (TaskStatus::Failed, 1));
    }

    #[tokio::test]
    async fn an_expired_lease_is_recovered_by_a_later_run() {
        let (registry, runs) = counting("t", TypeSettings::default(), None);
        let (tasker, clock) = tasker(registry);
        let id = create(&tasker, NewTask::new("t", "{}")).await;
        // A processor claims it and dies.
        let now = clock.now();
        let lease = now.plus(Duration::from_secs(60));
        let claimed = tasker
            .store()
            .claim_due(now, now, 10, lease)
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1);

        assert_eq!(
            run(&tasker).await.claimed,
            0,
            "leased to the dead processor"
        );
        clock.advance(Duration::from_secs(60));
        assert_eq!(run(&tasker).await.succeeded, 1);
        let task = tasker.get(id).await.expect("get");
        assert_eq!((task.status, task.attempts), (TaskStatus::Succeeded, 2));
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_type_without_handler_fails_its_attempts_without_looping() {
        let (registry, _) = counting("known", TypeSettings::default(), None);
        let (tasker, clock) = tasker(registry);
        let orphan = Task::from_new(NewTask::new("retired.type", "{}"), clock.now());
        tasker.store().create(orphan.clone()).await.expect("create");

        let summary = run(&tasker).await;
        assert_eq!(
            (summary.claimed, summary.retried),
            (1, 1),
            "one attempt per run, no tight loop"
        );
        for _ in 0..2 {
            clock.advance(Duration::from_secs(3600));
            run(&tasker).await;
        }
        let task = tasker.get(orphan.id).await.expect("get");
        assert_eq!(task.status, TaskStatus::Failed);
        let error = task.last_error.unwrap_or_default();
        assert!(error.contains("no handler is registered"), "{error}");
    }

    #[tokio::test]
    async fn a_panic_or_a_timeout_fails_only_its_own_attempt() {
        let mut registry = Registry::new();
        registry
            .register("ok", |_| async { Ok(()) })
            .expect("register");
        registry
            .register("panics", |_| async { panic!("handler bug") })
            .expect("register");
        let slow = TypeSettings {
            timeout: Duration::from_millis(50),
            ..TypeSettings::default()
        };
        registry
            .register_with("slow", slow, |_| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(())
            })
            .expect("register");
        let (tasker, _) = tasker(registry);
        let mut ids = Vec::new();
        for task_type in ["ok", "panics", "slow"] {
            ids.push(create(&tasker, NewTask::new(task_type, "{}")).await);
        }
        let summary = run(&tasker).await;
        assert_eq!(
            (summary.claimed, summary.succeeded, summary.retried),
            (3, 1, 2)
        );
        let panicked = tasker.get(ids[1]).await.expect("get");
        let error = panicked.last_error.unwrap_or_default();
        assert!(error.contains("handler panicked: handler bug"), "{error}");
        let timed_out = tasker.get(ids[2]).await.expect("get");
        let error = timed_out.last_error.unwrap_or_default();
        assert!(error.contains("timed out after 50ms"), "{error}");
    }

    #[tokio::test]
    async fn a_run_without_time_left_claims_nothing() {
        let (registry, runs) = counting("t", TypeSettings::default(), None);
        let (tasker, _) = tasker(registry);
        create(&tasker, NewTask::new("t", "{}")).await;
        let summary = tasker
            .process_queue(Some(Instant::now()))
            .await
            .expect("run");
        assert_eq!(summary.claimed, 0);
        assert_eq!(runs.load(Ordering::SeqCst), 0);
    }
}

#[cfg(test)]
mod deadline_tests {
    //! The deadline with real time: tasks that cannot start in time are given back unstarted.

    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::store::SqliteStore;
    use crate::task::TaskStatus;

    #[tokio::test]
    async fn tasks_that_cannot_start_before_the_deadline_are_released_unstarted() {
        let runs = Arc::new(AtomicU32::new(0));
        let counter = Arc::clone(&runs);
        let mut registry = Registry::new();
        registry
            .register("slow", move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
                async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Ok(())
                }
            })
            .expect("register");
        let settings = ProcessorSettings {
            concurrency: 1,
            ..ProcessorSettings::default()
        };
        let tasker = Tasker::new(
            SqliteStore::in_memory().expect("sqlite"),
            registry,
            settings,
        );
        let mut ids = Vec::new();
        for _ in 0..6 {
            let created = tasker
                .create(NewTask::new("slow", "{}"))
                .await
                .expect("create");
            ids.push(created.into_task().id);
        }
        // A 2 s invocation: the margins shrink to a quarter of it (0.5 s), so tasks run one
        // after another until an attempt could get less than 0.5 s; the rest are given back.
        let deadline = Instant::now() + Duration::from_secs(2);
        let summary = tasker.process_queue(Some(deadline)).await.expect("run");
        assert_eq!(summary.claimed, 6);
        assert_eq!(summary.succeeded + summary.released, 6, "{summary:?}");
        assert!(
            summary.succeeded >= 2,
            "short invocations still run tasks: {summary:?}"
        );
        assert!(summary.released >= 1, "{summary:?}");
        assert_eq!(runs.load(Ordering::SeqCst) as usize, summary.succeeded);
        for id in ids {
            let task = tasker.get(id).await.expect("get");
            match task.status {
                TaskStatus::Succeeded => assert_eq!(task.attempts, 1),
                TaskStatus::Pending => assert_eq!(task.attempts, 0, "released uncounted"),
                other => panic!("unexpected status {other}"),
            }
        }
    }
}

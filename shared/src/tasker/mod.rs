//! The Tasker operations over a store and a registry: create, cancel, retry, list, clean up;
//! [`dispatch`] processes the queue, one [`attempt`] per claimed task.

mod attempt;
mod dispatch;
mod flow;
mod mover;
mod refill;
mod schedules;
mod worker;

pub use attempt::Outcome;
pub use flow::{PAUSES_SEEN_WITHIN, TypeView, TypesView};
pub use mover::{MoveSummary, OVERDUE, RESEND_AFTER};
pub use schedules::{FireSummary, ScheduleView, ticks_to_fire};
pub use worker::{Handled, Message, Work, WorkSummary};

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::clock::{Clock, SystemClock, Timestamp};
use crate::push::{Delivery, Push};
use crate::store::{
    Backlog, Created, Leases, ListFilter, ListKey, LowerBound, QueueStats, QueueSweeper,
    StatusCounts, StoreError, SweepSummary, TaskCanceller, TaskLister, TaskPage, TaskPurger,
    TaskReader, TaskRetrier, TaskWriter,
};
use crate::task::{NewTask, Task, TaskId, ValidationError};
use crate::tasks::{Registry, TypeSettings};

/// How a processor run behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessorSettings {
    /// The most tasks one claim asks for (a claim asks for at most the free slots).
    pub batch_size: usize,
    /// Handlers running at once.
    pub concurrency: usize,
    /// Longest a run may last when the caller gives no deadline (`tasker serve`, `tasker process`).
    pub max_run: Duration,
    /// No task starts when less than this remains before the deadline.
    pub time_margin: Duration,
    /// How long a claim outlives its task type's timeout, so a slow outcome write is not
    /// mistaken for a crash; after it a crashed processor's tasks are due again.
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
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
    /// Claimed tasks given back unstarted: the run ran out of time for a fair attempt, or
    /// (rarely) the claim took so long that its lease was spent.
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

/// What one cleanup run did: its purge and its sweep below the due queue's watermarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanupSummary {
    /// Finished tasks deleted.
    pub deleted: u64,
    /// Due-queue entries the sweep read.
    pub swept: u64,
    /// Tasks the sweep found out of the processors' sight and made due again.
    pub rescued: u64,
    /// The sweep reached every watermark (false: the next run goes on from where it stopped).
    pub sweep_complete: bool,
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
    /// No schedule has the name.
    #[error("schedule {0:?} not found")]
    ScheduleNotFound(String),
    /// A schedule with the name exists.
    #[error("a schedule named {0:?} exists; change it with PUT /schedules/{0}")]
    ScheduleExists(String),
    /// SQS mode's mover was asked to run without a queue to send to.
    #[error(
        "no queue is configured: the mover runs only with TASKER_DISPATCH=sqs and TASKER_QUEUE_URL"
    )]
    NoQueue,
}

impl TaskerError {
    /// A short name for the kind of failure, as Lambda's `errorType` wants it.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "InvalidTask",
            Self::UnknownType(_) => "UnknownTaskType",
            Self::Store(store) if store.is_retryable() => "StoreUnavailable",
            Self::Store(_) => "StoreError",
            Self::NoQueue => "NoQueue",
            Self::ScheduleNotFound(_) => "ScheduleNotFound",
            Self::ScheduleExists(_) => "ScheduleExists",
        }
    }
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
    leases: Leases,
    /// SQS mode: where messages for tasks due soon go.
    push: Option<Arc<dyn Push>>,
    /// SQS mode's mover: what it sent, so it does not send again while a message is on its way.
    moved: Arc<mover::Sent>,
    /// Schedules this process cannot fire, left to others for a while.
    held_schedules: Arc<schedules::Held>,
    /// The paused task types as this process last read them.
    pauses: Arc<flow::Pauses>,
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
        // Each claim lasts its type's timeout and the grace: a handler never outlives its
        // lease, and a dead processor's tasks are due again soon after their timeouts.
        let grace = settings.lease_grace;
        let leases = Leases::by_type(
            TypeSettings::default().timeout + grace,
            registry
                .types()
                .filter_map(|name| {
                    let timeout = registry.settings(name)?.timeout;
                    Some((name.to_owned(), timeout + grace))
                })
                .collect(),
        );
        Self {
            store,
            registry: Arc::new(registry),
            clock,
            settings,
            jitter: rand::random::<f64>,
            due_now: Arc::new(tokio::sync::Notify::new()),
            leases,
            push: None,
            moved: Arc::default(),
            held_schedules: Arc::default(),
            pauses: Arc::default(),
        }
    }

    /// SQS mode: a message for each task due within SQS's longest delay goes to `push` when it
    /// is created or retried (see [`crate::push`]).
    pub fn with_push(mut self, push: Arc<dyn Push>) -> Self {
        self.push = Some(push);
        self
    }

    /// True in SQS mode.
    pub fn pushes(&self) -> bool {
        self.push.is_some()
    }

    /// Sends a message for each of `tasks` due within SQS's longest delay (SQS mode; nothing
    /// otherwise). A failed send is logged and answered `false` (the tasks are stored, and the
    /// mover sends them when they are late); `true` when every message needed went out.
    pub async fn deliver(&self, tasks: &[Task]) -> bool {
        let Some(push) = &self.push else { return true };
        let now = self.clock.now();
        let deliveries: Vec<Delivery> = tasks
            .iter()
            .filter_map(|task| Delivery::of(task, now))
            .collect();
        if deliveries.is_empty() {
            return true;
        }
        match push.send(&deliveries).await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(
                    error = %crate::report::Report(&err),
                    tasks = deliveries.len(),
                    "could not send to the queue; the mover sends these tasks once they are late"
                );
                false
            }
        }
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
        let created = self.create_held(new).await?;
        if let Created::New(task) = &created {
            self.deliver(std::slice::from_ref(task)).await;
        }
        Ok(created)
    }

    /// [`Tasker::create`] without its message in SQS mode: a batch creates its tasks, then
    /// sends their messages ten per call with [`Tasker::deliver`].
    pub async fn create_held(&self, new: NewTask) -> Result<Created, TaskerError> {
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
        self.deliver(std::slice::from_ref(&task)).await;
        Ok(task)
    }
}

impl<S: QueueStats> Tasker<S> {
    /// Tasks finished per minute (SQLite) or hour (DynamoDB) up to now.
    pub async fn throughput(&self) -> Result<crate::store::Throughput, TaskerError> {
        Ok(self.store.throughput(self.clock.now()).await?)
    }

    /// Due tasks now and the oldest due instant.
    pub async fn backlog(&self) -> Result<Backlog, TaskerError> {
        Ok(self.store.backlog(self.clock.now()).await?)
    }
}

impl<S: TaskPurger + QueueSweeper> Tasker<S> {
    /// Deletes finished tasks older than `retention`, then sweeps at most `sweep_entries`
    /// entries below the due queue's watermarks.
    pub async fn cleanup(
        &self,
        retention: Duration,
        sweep_entries: u64,
    ) -> Result<CleanupSummary, TaskerError> {
        self.cleanup_with_progress(retention, sweep_entries, &|_| ())
            .await
    }

    /// [`Tasker::cleanup`], calling `progress` with each chunk's count of deletes.
    pub async fn cleanup_with_progress(
        &self,
        retention: Duration,
        sweep_entries: u64,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<CleanupSummary, TaskerError> {
        let cutoff = self.clock.now().minus(retention);
        let deleted = self.store.purge_finished_before(cutoff, progress).await?;
        // Logged before the sweep, so a sweep that fails does not hide what the purge did.
        tracing::info!(deleted, cutoff = %cutoff, "purge finished");
        let swept = self.sweep(sweep_entries).await?;
        let summary = CleanupSummary {
            deleted,
            swept: swept.entries,
            rescued: swept.rescued,
            sweep_complete: swept.complete,
        };
        tracing::info!(
            deleted,
            swept = swept.entries,
            rescued = swept.rescued,
            sweep_complete = swept.complete,
            "cleanup finished"
        );
        Ok(summary)
    }
}

impl<S: QueueSweeper> Tasker<S> {
    /// Sweeps at most `max_entries` entries below the due queue's watermarks, making every task
    /// found there still due again (see [`QueueSweeper::sweep`]).
    pub async fn sweep(&self, max_entries: u64) -> Result<SweepSummary, TaskerError> {
        Ok(self.store.sweep(self.clock.now(), max_entries).await?)
    }
}

/// Largest page a listing returns.
pub const MAX_LIST_LIMIT: usize = 100;

/// Counts per status and the backlog, as `GET /stats` and `tasker stats` show them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Tasks in each status.
    pub counts: StatusCounts,
    /// Tasks due now and not running (pending past their time, or with an expired lease).
    pub due: u64,
    /// Seconds since the oldest of them became due; `None` when nothing is due.
    pub oldest_due_age_seconds: Option<u64>,
    /// True when every number is exact as of the call (SQLite); see docs/api.md#stats.
    pub exact: bool,
    /// When pending, running, `due` and the oldest due age were seen, when not by this call:
    /// a processor's last look at the queue (DynamoDB).
    pub active_seen_at: Option<Timestamp>,
    /// Numbers that are at least what is shown (their reads reached a cap).
    pub lower_bounds: Vec<LowerBound>,
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

/// What one page of a bulk retry of failed tasks did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetriedPage {
    /// Tasks put back in the queue.
    pub retried: Vec<TaskId>,
    /// Tasks that could not be, with why (a reference held by an active task, a contended
    /// guard, a passing outage): one never stops the rest.
    pub skipped: Vec<(TaskId, String)>,
    /// Where the next page starts; `None` after the last.
    pub next: Option<ListKey>,
}

/// Retries one bulk retry has in flight at once.
const RETRY_CONCURRENCY: usize = 8;

impl<S: TaskLister + TaskRetrier> Tasker<S> {
    /// Retries one page of up to `limit` failed tasks (of `task_type`, when given) below
    /// `after`, several at once.
    pub async fn retry_failed_page(
        &self,
        task_type: Option<String>,
        after: Option<ListKey>,
        limit: usize,
    ) -> Result<RetriedPage, TaskerError> {
        use futures::StreamExt;
        let filter = ListFilter {
            status: Some(crate::task::TaskStatus::Failed),
            task_type,
            ..ListFilter::default()
        };
        let page = self.list(&filter, after, limit).await?;
        let outcomes: Vec<(TaskId, Result<Task, TaskerError>)> = futures::stream::iter(page.tasks)
            .map(|task| async move { (task.id, self.retry(task.id).await) })
            .buffer_unordered(RETRY_CONCURRENCY)
            .collect()
            .await;
        let mut done = RetriedPage {
            next: page.next,
            ..RetriedPage::default()
        };
        for (id, outcome) in outcomes {
            match outcome {
                Ok(_) => done.retried.push(id),
                Err(err) => done.skipped.push((id, err.to_string())),
            }
        }
        Ok(done)
    }
}

impl<S: TaskLister + QueueStats> Tasker<S> {
    /// Counts per status and the backlog, in reads that do not grow with the table.
    pub async fn stats(&self) -> Result<Stats, TaskerError> {
        let now = self.clock.now();
        let overview = self.store.overview(now).await?;
        Ok(Stats {
            counts: overview.counts,
            due: overview.backlog.due,
            oldest_due_age_seconds: overview
                .backlog
                .oldest_due_at
                .map(|at| now.since(at).as_secs()),
            exact: overview.exact,
            active_seen_at: overview.active_seen_at,
            lower_bounds: overview.lower_bounds,
        })
    }
}

#[cfg(test)]
mod dispatch_tests;
#[cfg(test)]
mod flow_tests;
#[cfg(test)]
mod tests;

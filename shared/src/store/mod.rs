//! Task storage: small capability traits, their errors, and the runtime choice of backend.
//!
//! Every state change is a conditional write in the backend, so two processors never claim the
//! same attempt and a processor that lost its lease cannot overwrite a newer outcome.

use std::future::Future;

use crate::clock::Timestamp;
use crate::task::{Task, TaskId, TaskStatus};

#[cfg(feature = "testing")]
pub mod conformance;
pub mod dynamodb;
pub mod sqlite;

pub use dynamodb::DynamoStore;
pub use sqlite::SqliteStore;

/// What went wrong in a store call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// No task has that id.
    #[error("task {0} not found")]
    NotFound(TaskId),
    /// The task's status does not allow the change.
    #[error("task {id} is {status}")]
    Conflict {
        /// The task.
        id: TaskId,
        /// Its current status.
        status: TaskStatus,
    },
    /// A pending or running task with the same `(referenceUid, type)` exists.
    #[error("task {existing} with the same referenceUid and type is still pending or running")]
    Duplicate {
        /// The task that is still pending or running.
        existing: TaskId,
    },
    /// The processor's claim on the task expired and another attempt took over.
    #[error("lease on task {0} was lost to a newer attempt")]
    LeaseLost(TaskId),
    /// A passing failure (throttling, timeout, network): the same call may succeed later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A failure that repeating will not fix (bad configuration, missing table, corrupt item).
    #[error("store error: {0}")]
    Backend(String),
}

impl StoreError {
    /// True when repeating the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// What a create stored.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// A new task.
    New(Task),
    /// Nothing: a task with the same `(type, idempotencyKey)` already exists, and this is it.
    Existing(Task),
}

impl Created {
    /// The task, new or existing.
    pub fn task(&self) -> &Task {
        match self {
            Self::New(task) | Self::Existing(task) => task,
        }
    }

    /// The task, new or existing.
    pub fn into_task(self) -> Task {
        match self {
            Self::New(task) | Self::Existing(task) => task,
        }
    }
}

/// Why a task whose last attempt never reported back is failed instead of run again.
pub(crate) const LEASE_EXPIRED_ERROR: &str =
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
}

/// Reads tasks by id.
pub trait TaskReader: Send + Sync {
    /// The task with `id`, if any.
    fn get(&self, id: TaskId) -> impl Future<Output = Result<Option<Task>, StoreError>> + Send;
}

/// Stores new tasks.
pub trait TaskWriter: Send + Sync {
    /// Stores `task` (status `pending`), unless a task with the same `(type, idempotencyKey)`
    /// exists: then that one is returned as [`Created::Existing`]. Fails with
    /// [`StoreError::Duplicate`] when a pending or running task has the same
    /// `(referenceUid, type)`.
    fn create(&self, task: Task) -> impl Future<Output = Result<Created, StoreError>> + Send;
}

/// Hands due tasks to processors and records their outcomes.
pub trait TaskQueue: Send + Sync {
    /// Claims up to `limit` tasks due at `due_by` (pending and scheduled, or running with an
    /// expired lease), earliest first: each becomes `running` as of `now`, its attempts grow by
    /// one and its lease runs until `lease_until`. A task is claimed by at most one caller.
    fn claim_due(
        &self,
        due_by: Timestamp,
        now: Timestamp,
        limit: usize,
        lease_until: Timestamp,
    ) -> impl Future<Output = Result<Vec<Task>, StoreError>> + Send;

    /// Records the outcome of the attempt `claimed` (as [`TaskQueue::claim_due`] returned it).
    /// Fails with [`StoreError::LeaseLost`] when the task is no longer running that attempt.
    fn settle(
        &self,
        claimed: &Task,
        outcome: Settlement,
        now: Timestamp,
    ) -> impl Future<Output = Result<Task, StoreError>> + Send;
}

/// Cancels pending tasks.
pub trait TaskCanceller: Send + Sync {
    /// Cancels the pending task `id`: [`StoreError::NotFound`] if missing,
    /// [`StoreError::Conflict`] if it is running or finished.
    fn cancel(
        &self,
        id: TaskId,
        now: Timestamp,
    ) -> impl Future<Output = Result<Task, StoreError>> + Send;

    /// Cancels every pending task with `reference_uid` (and `task_type`, when given); returns
    /// the ids cancelled.
    fn cancel_by_reference(
        &self,
        reference_uid: &str,
        task_type: Option<&str>,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<TaskId>, StoreError>> + Send;
}

/// Puts failed or cancelled tasks back in the queue.
pub trait TaskRetrier: Send + Sync {
    /// Makes the `failed` or `cancelled` task `id` pending again, due at `now`, with a fresh
    /// attempt budget; its `lastError` and `lastFailedAttemptAt` are kept.
    /// [`StoreError::NotFound`] if missing, [`StoreError::Conflict`] in any other status,
    /// [`StoreError::Duplicate`] when another active task now holds its `(referenceUid, type)`.
    fn retry(
        &self,
        id: TaskId,
        now: Timestamp,
    ) -> impl Future<Output = Result<Task, StoreError>> + Send;
}

/// How far behind the queue is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Tasks due now and not running (pending past their time, or with an expired lease).
    pub due: u64,
    /// The earliest instant among them.
    pub oldest_due_at: Option<Timestamp>,
}

/// Reports the backlog of due work.
pub trait QueueStats: Send + Sync {
    /// Tasks due at `now` and the oldest of their due instants.
    fn backlog(&self, now: Timestamp) -> impl Future<Output = Result<Backlog, StoreError>> + Send;
}

/// Deletes finished tasks.
pub trait TaskPurger: Send + Sync {
    /// Deletes `succeeded`, `failed` and `cancelled` tasks that finished at or before `cutoff`;
    /// returns how many were deleted. Never touches pending or running tasks. `progress` is
    /// called with the number deleted after each chunk, so a caller can show a long purge.
    fn purge_finished_before(
        &self,
        cutoff: Timestamp,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// A task's place in listings: its queue instant (when it is due while pending, its lease
/// expiry while running, its finish once done), then its id, written `<instant>#<id>`.
/// Unique per task; a greater key is newer. It is also the DynamoDB queue index's sort key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListKey(String);

impl ListKey {
    /// The key of `task` as it is now.
    pub fn of(task: &Task) -> Self {
        Self::at(task.queue_at(), task.id)
    }

    /// The key of task `id` at queue instant `at`.
    pub fn at(at: Timestamp, id: TaskId) -> Self {
        Self(format!("{}#{id}", at.to_text()))
    }

    /// A key above every key of a task queued at or before `at`.
    pub fn after_all_at(at: Timestamp) -> Self {
        // `~` sorts after every character of a ULID.
        Self(format!("{}#~", at.to_text()))
    }

    /// The queue instant of the key.
    pub fn instant(&self) -> Option<Timestamp> {
        self.0.split_once('#').and_then(|(at, _)| at.parse().ok())
    }

    /// The key's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ListKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The text is not a listing cursor.
#[derive(Debug, thiserror::Error)]
#[error("not a cursor from a previous page: {0:?}")]
pub struct InvalidCursor(pub String);

impl std::str::FromStr for ListKey {
    type Err = InvalidCursor;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidCursor(text.chars().take(64).collect());
        let (at, id) = text.split_once('#').ok_or_else(invalid)?;
        let at: Timestamp = at.parse().map_err(|_| invalid())?;
        let id: TaskId = id.parse().map_err(|_| invalid())?;
        let key = Self::at(at, id);
        // Only the canonical spelling, so that text order is the key order.
        if key.0 != text {
            return Err(invalid());
        }
        Ok(key)
    }
}

/// Which tasks a listing returns; every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only tasks in this status.
    pub status: Option<TaskStatus>,
    /// Only tasks of this type.
    pub task_type: Option<String>,
    /// Only tasks with this `referenceUid`.
    pub reference_uid: Option<String>,
}

impl ListFilter {
    /// True when `task` passes every given field.
    pub fn matches(&self, task: &Task) -> bool {
        self.status.is_none_or(|status| task.status == status)
            && self
                .task_type
                .as_ref()
                .is_none_or(|task_type| &task.task_type == task_type)
            && self
                .reference_uid
                .as_ref()
                .is_none_or(|reference| task.reference_uid.as_ref() == Some(reference))
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskPage {
    /// Tasks, newest first (greatest [`ListKey`] first).
    pub tasks: Vec<Task>,
    /// Where the next page starts; `None` when the listing is complete.
    pub next: Option<ListKey>,
}

/// How many tasks are in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusCounts {
    /// Waiting to run (scheduled later, due, or between attempts).
    pub pending: u64,
    /// Claimed by a processor.
    pub running: u64,
    /// Done.
    pub succeeded: u64,
    /// Out of attempts or failed permanently.
    pub failed: u64,
    /// Cancelled before they ran.
    pub cancelled: u64,
}

impl StatusCounts {
    /// Adds `count` to `status`.
    pub fn add(&mut self, status: TaskStatus, count: u64) {
        let slot = match status {
            TaskStatus::Pending => &mut self.pending,
            TaskStatus::Running => &mut self.running,
            TaskStatus::Succeeded => &mut self.succeeded,
            TaskStatus::Failed => &mut self.failed,
            TaskStatus::Cancelled => &mut self.cancelled,
        };
        *slot += count;
    }

    /// The count for `status`.
    pub fn get(&self, status: TaskStatus) -> u64 {
        match status {
            TaskStatus::Pending => self.pending,
            TaskStatus::Running => self.running,
            TaskStatus::Succeeded => self.succeeded,
            TaskStatus::Failed => self.failed,
            TaskStatus::Cancelled => self.cancelled,
        }
    }

    /// All tasks.
    pub fn total(&self) -> u64 {
        self.pending + self.running + self.succeeded + self.failed + self.cancelled
    }
}

/// Lists and counts tasks for operators.
pub trait TaskLister: Send + Sync {
    /// Up to `limit` tasks matching `filter`, newest first, starting below `after` (the `next`
    /// of the previous page). A page may be shorter than `limit` while `next` is set. `now`
    /// bounds where running and succeeded tasks can be (their queue instant has come).
    fn list(
        &self,
        filter: &ListFilter,
        after: Option<ListKey>,
        limit: usize,
        now: Timestamp,
    ) -> impl Future<Output = Result<TaskPage, StoreError>> + Send;

    /// The number of tasks in each status, as of `now`.
    fn counts(
        &self,
        now: Timestamp,
    ) -> impl Future<Output = Result<StatusCounts, StoreError>> + Send;
}

/// The backend chosen at runtime from configuration.
#[derive(Debug, Clone)]
pub enum Store {
    /// Embedded SQLite, for one machine.
    Sqlite(SqliteStore),
    /// DynamoDB, for Lambda.
    DynamoDb(DynamoStore),
}

// The DynamoDB futures are boxed: they nest deep enough that a Lambda's whole future would
// otherwise exceed the compiler's layout depth in release builds, and a store call's network
// round trip dwarfs one allocation.
impl TaskReader for Store {
    async fn get(&self, id: TaskId) -> Result<Option<Task>, StoreError> {
        match self {
            Self::Sqlite(store) => store.get(id).await,
            Self::DynamoDb(store) => Box::pin(store.get(id)).await,
        }
    }
}

impl TaskWriter for Store {
    async fn create(&self, task: Task) -> Result<Created, StoreError> {
        match self {
            Self::Sqlite(store) => store.create(task).await,
            Self::DynamoDb(store) => Box::pin(store.create(task)).await,
        }
    }
}

impl TaskQueue for Store {
    async fn claim_due(
        &self,
        due_by: Timestamp,
        now: Timestamp,
        limit: usize,
        lease_until: Timestamp,
    ) -> Result<Vec<Task>, StoreError> {
        match self {
            Self::Sqlite(store) => store.claim_due(due_by, now, limit, lease_until).await,
            Self::DynamoDb(store) => {
                Box::pin(store.claim_due(due_by, now, limit, lease_until)).await
            }
        }
    }

    async fn settle(
        &self,
        claimed: &Task,
        outcome: Settlement,
        now: Timestamp,
    ) -> Result<Task, StoreError> {
        match self {
            Self::Sqlite(store) => store.settle(claimed, outcome, now).await,
            Self::DynamoDb(store) => Box::pin(store.settle(claimed, outcome, now)).await,
        }
    }
}

impl TaskCanceller for Store {
    async fn cancel(&self, id: TaskId, now: Timestamp) -> Result<Task, StoreError> {
        match self {
            Self::Sqlite(store) => store.cancel(id, now).await,
            Self::DynamoDb(store) => Box::pin(store.cancel(id, now)).await,
        }
    }

    async fn cancel_by_reference(
        &self,
        reference_uid: &str,
        task_type: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<TaskId>, StoreError> {
        match self {
            Self::Sqlite(store) => {
                store
                    .cancel_by_reference(reference_uid, task_type, now)
                    .await
            }
            Self::DynamoDb(store) => {
                Box::pin(store.cancel_by_reference(reference_uid, task_type, now)).await
            }
        }
    }
}

impl TaskRetrier for Store {
    async fn retry(&self, id: TaskId, now: Timestamp) -> Result<Task, StoreError> {
        match self {
            Self::Sqlite(store) => store.retry(id, now).await,
            Self::DynamoDb(store) => Box::pin(store.retry(id, now)).await,
        }
    }
}

impl QueueStats for Store {
    async fn backlog(&self, now: Timestamp) -> Result<Backlog, StoreError> {
        match self {
            Self::Sqlite(store) => store.backlog(now).await,
            Self::DynamoDb(store) => Box::pin(store.backlog(now)).await,
        }
    }
}

impl TaskPurger for Store {
    async fn purge_finished_before(
        &self,
        cutoff: Timestamp,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<u64, StoreError> {
        match self {
            Self::Sqlite(store) => store.purge_finished_before(cutoff, progress).await,
            Self::DynamoDb(store) => Box::pin(store.purge_finished_before(cutoff, progress)).await,
        }
    }
}

impl TaskLister for Store {
    async fn list(
        &self,
        filter: &ListFilter,
        after: Option<ListKey>,
        limit: usize,
        now: Timestamp,
    ) -> Result<TaskPage, StoreError> {
        match self {
            Self::Sqlite(store) => store.list(filter, after, limit, now).await,
            Self::DynamoDb(store) => Box::pin(store.list(filter, after, limit, now)).await,
        }
    }

    async fn counts(&self, now: Timestamp) -> Result<StatusCounts, StoreError> {
        match self {
            Self::Sqlite(store) => store.counts(now).await,
            Self::DynamoDb(store) => Box::pin(store.counts(now)).await,
        }
    }
}

/// The task after `outcome` is applied to the running attempt `task`; both backends use it so
/// they agree on every field.
pub(crate) fn apply_settlement(mut task: Task, outcome: &Settlement, now: Timestamp) -> Task {
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
    }
    task
}

/// The task after a retry of the finished `task`: pending, due now, attempts from zero.
/// "Now" is never before the finish it follows (a host whose clock is behind), so the task's
/// queue instant is a new one: on DynamoDB, an entry at a key the task had before may be known
/// as finished.
pub(crate) fn apply_retry(mut task: Task, now: Timestamp) -> Task {
    let after = task.queue_at().plus(std::time::Duration::from_millis(1));
    task.status = TaskStatus::Pending;
    task.attempts = 0;
    task.scheduled_at = now.max(after);
    task.updated_at = now;
    task.succeeded_at = None;
    task.finished_at = None;
    task.lease_expires_at = None;
    task
}

/// The task after a cancel of the pending `task`.
pub(crate) fn apply_cancel(mut task: Task, now: Timestamp) -> Task {
    task.status = TaskStatus::Cancelled;
    task.updated_at = now;
    task.finished_at = Some(now);
    task
}

/// The task after a claim of the due `task`, with a fresh lease token.
pub(crate) fn apply_claim(mut task: Task, now: Timestamp, lease_until: Timestamp) -> Task {
    task.status = TaskStatus::Running;
    task.attempts += 1;
    task.updated_at = now;
    task.lease_expires_at = Some(lease_until);
    task.lease_token = Some(new_lease_token());
    task
}

/// A token no other claim has: a ULID (time plus 80 random bits).
pub(crate) fn new_lease_token() -> String {
    ulid::Ulid::new().to_string()
}

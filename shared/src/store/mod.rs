//! Task storage: small capability traits, their errors, and the runtime choice of backend.
//!
//! Every state change is a [`Transition`] that each backend stores with a conditional write,
//! so two processors never claim the same attempt and a processor that lost its lease cannot
//! overwrite a newer outcome.

use std::future::Future;

use crate::clock::Timestamp;
use crate::task::{Task, TaskId};

#[cfg(any(feature = "sqlite", feature = "dynamodb"))]
mod chosen;
#[cfg(feature = "testing")]
pub mod conformance;
mod delivery;
#[cfg(feature = "dynamodb")]
pub mod dynamodb;
mod error;
mod flow;
mod lease;
mod listing;
mod schedules;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod transition;

#[cfg(any(feature = "sqlite", feature = "dynamodb"))]
pub use chosen::Store;
pub use delivery::{ClaimById, TaskDelivery};
#[cfg(feature = "dynamodb")]
pub use dynamodb::DynamoStore;
pub use error::{Cause, StoreError};
pub use flow::{ClaimGate, FlowControl, PausedTypes, TypeCount, TypeCounts};
pub use lease::Leases;
pub use listing::{
    InvalidCursor, ListFilter, ListKey, LowerBound, Overview, StatusCounts, TaskPage, Throughput,
};
pub use schedules::{Expect, SCHEDULES_SEEN_WITHIN, ScheduleStore, ScheduleWrite};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;
pub use transition::{
    LEASE_EXPIRED_ERROR, Refused, Settlement, Transition, is_expired_final_attempt,
};

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

/// Reads tasks by id.
pub trait TaskReader: Send + Sync {
    /// The task with `id`, if any.
    fn get(&self, id: TaskId) -> impl Future<Output = Result<Option<Task>, StoreError>> + Send;
}

/// Stores new tasks.
pub trait TaskWriter: Send + Sync {
    /// Stores `task` (status `pending`), unless a task with the same `(type, idempotencyKey)`
    /// or the same id exists: then that one is returned as [`Created::Existing`] (ids are
    /// derived, and so repeat, only for schedules' ticks). Fails with
    /// [`StoreError::Duplicate`] when a pending or running task has the same
    /// `(referenceUid, type)`.
    fn create(&self, task: Task) -> impl Future<Output = Result<Created, StoreError>> + Send;
}

/// Hands due tasks to processors and records their outcomes.
pub trait TaskQueue: Send + Sync {
    /// Claims up to `limit` tasks due at `due_by` (pending and scheduled, or running with an
    /// expired lease), earliest first: each becomes `running` as of `now`, its attempts grow by
    /// one and its lease runs for its type's duration in `leases` from `now`
    /// ([`Transition::Claim`]). A task is claimed by
    /// at most one caller. Running tasks whose final attempt expired are failed on the way
    /// ([`Transition::Expire`]).
    fn claim_due(
        &self,
        due_by: Timestamp,
        now: Timestamp,
        limit: usize,
        leases: &Leases,
    ) -> impl Future<Output = Result<Vec<Task>, StoreError>> + Send {
        self.claim_gated(due_by, now, limit, leases, &flow::OPEN_GATE)
    }

    /// [`TaskQueue::claim_due`], taking only tasks `gate` admits (none of a paused type, no
    /// more of a capped type than its room). The tasks it leaves stay pending and due.
    fn claim_gated(
        &self,
        due_by: Timestamp,
        now: Timestamp,
        limit: usize,
        leases: &Leases,
        gate: &ClaimGate,
    ) -> impl Future<Output = Result<Vec<Task>, StoreError>> + Send;

    /// Records the outcome of the attempt `claimed` (as [`TaskQueue::claim_due`] returned it).
    /// Fails with [`StoreError::LeaseLost`] when the task is no longer running that attempt.
    fn settle(
        &self,
        claimed: &Task,
        outcome: Settlement,
        now: Timestamp,
    ) -> impl Future<Output = Result<Task, StoreError>> + Send;

    /// Writes what this process keeps for a while before writing (DynamoDB's counts of
    /// finished tasks, what it saw of the due queue), if it is time to, or at once at the
    /// `end` of a run. Failures are logged and kept for the next call. Nothing to do for
    /// a store that writes everything as it goes.
    fn flush(&self, now: Timestamp, end: bool) -> impl Future<Output = ()> + Send {
        let _ = (now, end);
        async {}
    }
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

    /// The counts per status and the backlog, as `GET /stats` shows them, in a number of
    /// reads that does not grow with the table, and how exact they are.
    fn overview(&self, now: Timestamp)
    -> impl Future<Output = Result<Overview, StoreError>> + Send;

    /// Tasks finished per bucket up to `now`: the last 60 minutes on SQLite, the last 24
    /// hours on DynamoDB.
    fn throughput(
        &self,
        now: Timestamp,
    ) -> impl Future<Output = Result<Throughput, StoreError>> + Send;
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

/// What a sweep of the due queue did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepSummary {
    /// Index entries read below the due queue's watermarks (each with its item).
    pub entries: u64,
    /// Tasks found there still due, and made due again.
    pub rescued: u64,
    /// True when the sweep reached every shard's watermark; false when it stopped at its read
    /// cap, and the next sweep goes on from there.
    pub complete: bool,
}

/// Finds tasks that processors can no longer see, and makes them due again.
pub trait QueueSweeper: Send + Sync {
    /// Reads at most `max_entries` of the entries no scan reads any more (on DynamoDB, the due
    /// queue below each shard's watermark), going on from where the last sweep stopped; every
    /// task there that is still pending, or running with an expired lease, gets a new entry
    /// at `now` ([`Transition::Rescue`]) and is logged.
    fn sweep(
        &self,
        now: Timestamp,
        max_entries: u64,
    ) -> impl Future<Output = Result<SweepSummary, StoreError>> + Send;
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

/// What the HTTP API and the operator commands use: every capability but claiming and
/// purging.
pub trait ApiStore:
    TaskReader
    + TaskWriter
    + TaskCanceller
    + TaskRetrier
    + TaskLister
    + QueueStats
    + ScheduleStore
    + FlowControl
    + Clone
    + 'static
{
}
impl<S> ApiStore for S where
    S: TaskReader
        + TaskWriter
        + TaskCanceller
        + TaskRetrier
        + TaskLister
        + QueueStats
        + ScheduleStore
        + FlowControl
        + Clone
        + 'static
{
}

/// Every capability: what a backend implements, and what the conformance suite checks.
pub trait FullStore: ApiStore + TaskQueue + TaskDelivery + TaskPurger + QueueSweeper {}
impl<S: ApiStore + TaskQueue + TaskDelivery + TaskPurger + QueueSweeper> FullStore for S {}

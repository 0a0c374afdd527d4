//! The store interface: every call the engine makes of a store, in one list, named noun then
//! verb as River's driver names them (`task_claim`, `schedule_put`, `type_set_paused`), with
//! a params struct where a call takes more than three arguments.
//!
//! The list is written once, in [`store_methods!`]; from it come the [`Store`] trait, each
//! backend's implementation of it (by the backend's inherent methods of the same names and
//! signatures, written in its area modules: a missing or different one does not compile),
//! and the dispatch of [`super::AnyStore`] to the backend it holds. A new call is one entry
//! here and one method per backend.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::Notify;

use super::{
    Backlog, Claim, ClaimById, ClaimedById, Created, Deliverable, Expect, ListPage, Overview,
    PausedTypes, QueueReads, ScheduleWrite, Settlement, StatusCounts, StoreError, SweepSummary,
    TaskPage, Throughput, TypeCounts, WaitingCounts,
};
use crate::clock::Timestamp;
use crate::schedule::Schedule;
use crate::task::{Task, TaskId};

/// Calls `$make!` with `[$extra]` and every method of the store interface, each with its
/// documentation: the one list the trait and every implementation are made from.
macro_rules! store_methods {
    ($make:ident $($extra:tt)*) => {
        $make! { [$($extra)*]
            // Tasks.

            /// The task with `id`, if any.
            fn task_get(&self, id: TaskId) -> Result<Option<Task>, StoreError>;

            /// Stores `task` (status `pending`), unless a task with the same
            /// `(type, idempotencyKey)` or the same id exists: then that one is returned as
            /// [`Created::Existing`] (ids are derived, and so repeat, only for schedules'
            /// ticks). Fails with [`StoreError::Duplicate`] when a pending or running task has
            /// the same `(referenceUid, type)`.
            fn task_create(&self, task: Task) -> Result<Created, StoreError>;

            /// Claims up to `claim.limit` tasks due at `claim.due_by` (pending and scheduled,
            /// or running with an expired lease) that `claim.gate` admits, earliest first: each
            /// becomes `running` as of `claim.now`, its attempts grow by one and its lease runs
            /// for its type's duration in `claim.leases` ([`super::Transition::Claim`]). A task
            /// is claimed by at most one caller. Running tasks whose final attempt expired are
            /// failed on the way ([`super::Transition::Expire`]). The tasks the gate leaves stay
            /// pending and due.
            fn task_claim(&self, claim: Claim<'_>) -> Result<Vec<Task>, StoreError>;

            /// Claims the task `claim.id` if it is due at `claim.due_by` (pending and scheduled
            /// by then with attempts left, or running with a lease expired by then) and
            /// `claim.gate` admits its type: the same [`super::Transition::Claim`] as
            /// [`Store::task_claim`], so a task is claimed by at most one caller whichever way
            /// it was found. A task of a type the gate closes is answered
            /// [`ClaimedById::NotDue`], unchanged. A task its rate key holds is answered
            /// `NotDue` with `held` [`crate::task::Held::Rate`] and the start its key booked for
            /// it (the key's booked starts move one interval), or, for a `claim.booked` message,
            /// the key's next start, booking none: a message per start, not per look.
            fn task_claim_by_id(&self, claim: ClaimById<'_>) -> Result<ClaimedById, StoreError>;

            /// Records the outcome of the attempt `claimed` (as a claim returned it). Fails
            /// with [`StoreError::LeaseLost`] when the task is no longer running that attempt.
            fn task_settle(
                &self,
                claimed: &Task,
                outcome: Settlement,
                now: Timestamp,
            ) -> Result<Task, StoreError>;

            /// Cancels the pending task `id`: [`StoreError::NotFound`] if missing,
            /// [`StoreError::Conflict`] if it is running or finished.
            fn task_cancel(&self, id: TaskId, now: Timestamp) -> Result<Task, StoreError>;

            /// Cancels every pending task with `reference_uid` (and `task_type`, when given);
            /// returns the ids cancelled.
            fn task_cancel_by_reference(
                &self,
                reference_uid: &str,
                task_type: Option<&str>,
                now: Timestamp,
            ) -> Result<Vec<TaskId>, StoreError>;

            /// Makes the `failed` or `cancelled` task `id` pending again, due at `now`, with a
            /// fresh attempt budget; its `lastError` and `lastFailedAttemptAt` are kept.
            /// [`StoreError::NotFound`] if missing, [`StoreError::Conflict`] in any other
            /// status, [`StoreError::Duplicate`] when another active task now holds its
            /// `(referenceUid, type)`.
            fn task_retry(&self, id: TaskId, now: Timestamp) -> Result<Task, StoreError>;

            /// Up to `page.limit` tasks matching `page.filter`, newest first, starting below
            /// `page.after` (the `next` of the previous page). A page may be shorter than its
            /// limit while `next` is set. `page.now` bounds where running and succeeded tasks
            /// can be (their queue instant has come).
            fn task_list(&self, page: ListPage<'_>) -> Result<TaskPage, StoreError>;

            /// The number of tasks in each status, as of `now`.
            fn task_count_by_status(&self, now: Timestamp) -> Result<StatusCounts, StoreError>;

            /// The unfinished tasks not running at `now`, by why they wait, reading at most
            /// `cap` of them; `None` on a store whose reads of them would grow with the queue
            /// (DynamoDB: `GET /stats` leaves them out there).
            fn task_count_waiting(
                &self,
                now: Timestamp,
                cap: u64,
            ) -> Result<Option<WaitingCounts>, StoreError>;

            /// Deletes `succeeded`, `failed` and `cancelled` tasks that finished at or before
            /// `cutoff`; returns how many were deleted. Never touches pending or running tasks.
            /// `progress` is called with the number deleted after each chunk, so a caller can
            /// show a long purge.
            fn task_purge_finished(
                &self,
                cutoff: Timestamp,
                progress: &(dyn Fn(u64) + Send + Sync),
            ) -> Result<u64, StoreError>;

            // SQS mode's delivery.

            /// Up to `find.limit` tasks a message should be on its way for, earliest due
            /// first: pending tasks with attempts left scheduled at or before `find.horizon`,
            /// and running tasks whose lease expired by `find.now` with attempts left, leaving
            /// out the types `find.gate` has paused (so a large paused backlog never crowds out
            /// the others). Running final attempts whose lease expired are failed on the way
            /// ([`super::Transition::Expire`]), paused types' too.
            fn task_list_deliverable(&self, find: Deliverable<'_>) -> Result<Vec<Task>, StoreError>;

            /// A message for `task` is on its way and due by `until`: a backend may skip
            /// reading the task in [`Store::task_list_deliverable`] until then (DynamoDB does;
            /// SQLite reads an index).
            fn task_expect_delivery(&self, task: &Task, until: Timestamp) -> ();

            // The queue as a whole.

            /// Tasks due at `now` and the oldest of their due instants.
            fn queue_backlog(&self, now: Timestamp) -> Result<Backlog, StoreError>;

            /// The counts per status and the backlog, as `GET /stats` shows them, in a number
            /// of reads that does not grow with the table, and how exact they are.
            fn queue_overview(&self, now: Timestamp) -> Result<Overview, StoreError>;

            /// Tasks finished per bucket up to `now`: the last 60 minutes on SQLite, the last
            /// 24 hours on DynamoDB.
            fn queue_throughput(&self, now: Timestamp) -> Result<Throughput, StoreError>;

            /// Reads at most `max_entries` of the entries no scan reads any more (on DynamoDB,
            /// the due queue below each shard's watermark), going on from where the last sweep
            /// stopped; every task there that is still pending, or running with an expired
            /// lease, gets a new entry at `now` ([`super::Transition::Rescue`]) and is logged.
            /// Nothing to do on a store whose claims read an index kept in the same
            /// transaction (SQLite).
            fn queue_sweep(
                &self,
                now: Timestamp,
                max_entries: u64,
            ) -> Result<SweepSummary, StoreError>;

            /// What this store instance's claims have read so far (see [`super::QueueReads`]).
            fn queue_reads(&self) -> QueueReads;

            /// Writes what this process keeps for a while before writing (DynamoDB's counts of
            /// finished tasks, what it saw of the due queue), if it is time to, or at once at
            /// the `end` of a run. Failures are logged and kept for the next call. Nothing to
            /// do for a store that writes everything as it goes.
            fn queue_flush(&self, now: Timestamp, end: bool) -> ();

            /// From now until the process ends, wakes `wake` when another process makes a task
            /// due now (PostgreSQL's `LISTEN/NOTIFY`), so a process that serves the queue starts
            /// it at once instead of at its next look. Nothing on a store that cannot tell
            /// (SQLite, DynamoDB): their processes look every interval.
            fn queue_listen(&self, wake: Arc<Notify>) -> ();

            /// True when this store instance commits its writes in the order they were made,
            /// a later one never before an earlier one (SQLite: one connection, and its groups
            /// in turn); false when they go over several connections or requests that may land
            /// in any order (PostgreSQL, DynamoDB). Where true, the dispatcher claims for the
            /// slots of outcomes being written (see `engine::settling`).
            fn queue_writes_in_order(&self) -> bool;

            // Schedules.

            /// The schedule `name`, read consistently.
            fn schedule_get(&self, name: &str) -> Result<Option<Schedule>, StoreError>;

            /// Every schedule, by name.
            fn schedule_list(&self) -> Result<Vec<Schedule>, StoreError>;

            /// Up to `limit` schedules that are not paused and whose `nextRunAt` is at or
            /// before `now`, earliest first. On DynamoDB, a schedule written by another process
            /// may be found up to [`super::SCHEDULES_SEEN_WITHIN`] late; what is returned was
            /// read consistently.
            fn schedule_list_due(
                &self,
                now: Timestamp,
                limit: usize,
            ) -> Result<Vec<Schedule>, StoreError>;

            /// Writes `schedule` (whose `revision` is the new one) if `expect` holds.
            fn schedule_put(
                &self,
                schedule: &Schedule,
                expect: Expect,
            ) -> Result<ScheduleWrite, StoreError>;

            /// Deletes the schedule `name`; false when there was none.
            fn schedule_delete(&self, name: &str) -> Result<bool, StoreError>;

            // Keys (limits per key).

            /// The rate key `key` starts no task before `until` (its next start moves there
            /// unless it is later already): its receiver asked for a pause. Nothing on a store
            /// that keeps no keys (DynamoDB).
            fn key_defer(&self, key: &str, until: Timestamp) -> Result<(), StoreError>;

            /// True when a claim writes the tasks it holds for their keys
            /// ([`super::Transition::Hold`]: SQLite, PostgreSQL); false when it leaves them as
            /// they are and passes their entries until their time in its own memory (DynamoDB).
            fn key_holds_written(&self) -> bool;

            // Task types (flow control).

            /// The paused types. Cheap enough to read every few seconds (one row or item).
            fn type_list_paused(&self) -> Result<PausedTypes, StoreError>;

            /// Pauses (`paused`) or resumes `task_type` as of `now`; pausing a paused type
            /// keeps its first instant. Returns the paused types after the write.
            fn type_set_paused(
                &self,
                task_type: &str,
                paused: bool,
                now: Timestamp,
            ) -> Result<PausedTypes, StoreError>;

            /// Due and running tasks per type at `now`, in a number of reads that never grows
            /// with the finished tasks: SQLite reads the unfinished ones (later ones included),
            /// DynamoDB a capped look at the due queue.
            fn type_count(&self, now: Timestamp) -> Result<TypeCounts, StoreError>;
        }
    };
}

/// The trait, from the list.
macro_rules! store_trait {
    ([] $(
        $(#[$doc:meta])*
        fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty;
    )*) => {
        /// Everything the engine asks of a store; every backend implements all of it and passes
        /// the one conformance suite ([`super::conformance`], with the `testing` feature).
        /// Every state change is a [`super::Transition`] that each backend stores with a
        /// conditional write, so two processors never claim the same attempt and a processor
        /// that lost its lease cannot overwrite a newer outcome.
        pub trait Store: Clone + Send + Sync + 'static {
            $(
                $(#[$doc])*
                fn $name(&self $(, $arg: $ty)*) -> impl Future<Output = $ret> + Send;
            )*
        }
    };
}

/// A backend's implementation of the trait: each method is the backend's inherent method of
/// the same name (inherent methods come first in path resolution; a missing one would name
/// the trait's own, whose opaque return type cannot then be made: a compile error).
macro_rules! store_by_inherent_methods {
    ([$backend:ty] $(
        $(#[$doc:meta])*
        fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty;
    )*) => {
        impl Store for $backend {
            $(
                fn $name(&self $(, $arg: $ty)*) -> impl Future<Output = $ret> + Send {
                    <$backend>::$name(self $(, $arg)*)
                }
            )*
        }
    };
}

store_methods!(store_trait);
#[cfg(feature = "sqlite")]
store_methods!(store_by_inherent_methods super::SqliteStore);
#[cfg(feature = "dynamodb")]
store_methods!(store_by_inherent_methods super::DynamoStore);
#[cfg(feature = "postgres")]
store_methods!(store_by_inherent_methods super::postgres::PgStore);
#[cfg(any(feature = "sqlite", feature = "dynamodb", feature = "postgres"))]
pub(super) use store_methods;

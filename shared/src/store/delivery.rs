//! What a push queue (SQS mode) needs of a store: a claim of one task named by a message, and
//! the tasks a message should be sent for.

use std::future::Future;

use super::{ClaimGate, Leases, StoreError};
use crate::clock::Timestamp;
use crate::task::{Task, TaskId};

/// What a claim of one task by its id found.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimById {
    /// Claimed: the task is running its next attempt under a fresh lease.
    Claimed(Task),
    /// Not claimable: pending but scheduled after `due_by`, running under a live lease,
    /// finished, or without attempts left (a running final attempt whose lease expired is
    /// failed on the way, and returned failed).
    NotDue(Task),
    /// No task has this id.
    Missing,
}

/// Claims tasks one by one as messages name them, and finds the tasks messages are due for.
pub trait TaskDelivery: Send + Sync {
    /// Claims the task `id` if it is due at `due_by` (pending and scheduled by then with
    /// attempts left, or running with a lease expired by then): the same
    /// [`super::Transition::Claim`] as [`super::TaskQueue::claim_due`], so a task is claimed by
    /// at most one caller whichever way it was found.
    fn claim_by_id(
        &self,
        id: TaskId,
        due_by: Timestamp,
        now: Timestamp,
        leases: &Leases,
    ) -> impl Future<Output = Result<ClaimById, StoreError>> + Send {
        self.claim_by_id_gated(id, due_by, now, leases, &super::flow::OPEN_GATE)
    }

    /// [`TaskDelivery::claim_by_id`], claiming only a task `gate` admits: one of a type it
    /// closes is answered [`ClaimById::NotDue`], unchanged.
    fn claim_by_id_gated(
        &self,
        id: TaskId,
        due_by: Timestamp,
        now: Timestamp,
        leases: &Leases,
        gate: &ClaimGate,
    ) -> impl Future<Output = Result<ClaimById, StoreError>> + Send;

    /// Up to `limit` tasks a message should be on its way for, earliest due first: pending
    /// tasks with attempts left scheduled at or before `horizon`, and running tasks whose lease
    /// expired by `now` with attempts left. Running final attempts whose lease expired are
    /// failed on the way ([`super::Transition::Expire`]).
    fn deliverable(
        &self,
        horizon: Timestamp,
        now: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Task>, StoreError>> + Send {
        self.deliverable_gated(horizon, now, limit, &super::flow::OPEN_GATE)
    }

    /// [`TaskDelivery::deliverable`] without the tasks of the types `gate` has paused (their
    /// running final attempts whose lease expired are still failed): a large paused backlog
    /// never crowds out the other types' tasks.
    fn deliverable_gated(
        &self,
        horizon: Timestamp,
        now: Timestamp,
        limit: usize,
        gate: &ClaimGate,
    ) -> impl Future<Output = Result<Vec<Task>, StoreError>> + Send;

    /// A message for `task` is on its way and due by `until`: a backend may skip reading the
    /// task in [`TaskDelivery::deliverable`] until then (DynamoDB does; SQLite reads an index).
    fn expect_delivery(&self, _task: &Task, _until: Timestamp) {}
}

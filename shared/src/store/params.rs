//! The params of the store calls that take more than three arguments, and what a claim of one
//! task by its id finds.

use super::{ClaimGate, Leases, ListFilter, ListKey, OPEN_GATE};
use crate::clock::Timestamp;
use crate::task::{Task, TaskId};

/// A claim of due tasks ([`super::Store::task_claim`]).
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// Tasks due at or before this instant may be claimed.
    pub due_by: Timestamp,
    /// When the claim is made: the leases run from it.
    pub now: Timestamp,
    /// The most tasks to claim.
    pub limit: usize,
    /// Each claimed task's lease, by its type.
    pub leases: &'a Leases,
    /// Which types may be claimed, and how many of each.
    pub gate: &'a ClaimGate,
}

impl<'a> Claim<'a> {
    /// Up to `limit` tasks of any type due at `now`.
    pub fn due(now: Timestamp, limit: usize, leases: &'a Leases) -> Self {
        Self {
            due_by: now,
            now,
            limit,
            leases,
            gate: &OPEN_GATE,
        }
    }

    /// This claim, taking only what `gate` admits.
    pub fn through(self, gate: &'a ClaimGate) -> Self {
        Self { gate, ..self }
    }
}

/// A claim of the one task a message names ([`super::Store::task_claim_by_id`]).
#[derive(Debug, Clone, Copy)]
pub struct ClaimById<'a> {
    /// The task.
    pub id: TaskId,
    /// It may be claimed if it is due at or before this instant.
    pub due_by: Timestamp,
    /// When the claim is made: the lease runs from it.
    pub now: Timestamp,
    /// Its lease, by its type.
    pub leases: &'a Leases,
    /// Which types may be claimed.
    pub gate: &'a ClaimGate,
    /// The message came for a start the task's rate key booked for it: a task the rate holds
    /// again waits for the key's next start without booking another (see
    /// [`super::Store::task_claim_by_id`]).
    pub booked: bool,
}

impl<'a> ClaimById<'a> {
    /// The task `id`, of any type, if it is due at `now`.
    pub fn due(id: TaskId, now: Timestamp, leases: &'a Leases) -> Self {
        Self {
            id,
            due_by: now,
            now,
            leases,
            gate: &OPEN_GATE,
            booked: false,
        }
    }

    /// This claim, for a message that came for a booked start when `booked`.
    pub fn booked(self, booked: bool) -> Self {
        Self { booked, ..self }
    }

    /// This claim, only if `gate` admits the task's type.
    pub fn through(self, gate: &'a ClaimGate) -> Self {
        Self { gate, ..self }
    }
}

/// What a claim of one task by its id found.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimedById {
    /// Claimed: the task is running its next attempt under a fresh lease.
    Claimed(Task),
    /// Not claimable: pending but scheduled after `due_by`, running under a live lease,
    /// finished, of a type the gate closes, or without attempts left (a running final attempt
    /// whose lease expired is failed on the way, and returned failed).
    NotDue(Task),
    /// No task has this id.
    Missing,
}

/// The tasks SQS mode's mover should send messages for
/// ([`super::Store::task_list_deliverable`]).
#[derive(Debug, Clone, Copy)]
pub struct Deliverable<'a> {
    /// Pending tasks scheduled at or before this instant.
    pub horizon: Timestamp,
    /// Running tasks whose lease expired by this instant.
    pub now: Timestamp,
    /// The most tasks to return.
    pub limit: usize,
    /// The types it has paused are left out.
    pub gate: &'a ClaimGate,
}

/// One page of a listing ([`super::Store::task_list`]).
#[derive(Debug, Clone, Copy)]
pub struct ListPage<'a> {
    /// Which tasks.
    pub filter: &'a ListFilter,
    /// Start below this key (the `next` of the previous page).
    pub after: Option<&'a ListKey>,
    /// The most tasks on the page.
    pub limit: usize,
    /// Where running and succeeded tasks can be: their queue instant has come.
    pub now: Timestamp,
}

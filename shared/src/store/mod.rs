//! Task storage: the one [`Store`] interface, its params and errors, the backends, and the
//! runtime choice between them ([`AnyStore`]).
//!
//! Every state change is a [`Transition`] that each backend stores with a conditional write,
//! so two processors never claim the same attempt and a processor that lost its lease cannot
//! overwrite a newer outcome.

use crate::clock::Timestamp;
use crate::task::Task;

#[cfg(any(feature = "sqlite", feature = "dynamodb", feature = "postgres"))]
mod any;
#[cfg(feature = "testing")]
pub mod conformance;
#[cfg(feature = "dynamodb")]
pub mod dynamodb;
mod error;
mod flow;
mod interface;
mod keys;
mod lease;
mod listing;
mod params;
#[cfg(feature = "postgres")]
pub mod postgres;
mod reads;
mod schedules;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod transition;

#[cfg(any(feature = "sqlite", feature = "dynamodb", feature = "postgres"))]
pub use any::AnyStore;
#[cfg(feature = "dynamodb")]
pub use dynamodb::DynamoStore;
pub use error::{Cause, StoreError};
pub use flow::{ClaimGate, HOLDS_NOTED, OPEN_GATE, PausedTypes, TypeCount, TypeCounts};
pub use interface::Store;
pub use keys::{
    BOOK_AHEAD, Booking, HOLDS_PER_CLAIM, Holders, InvalidKeyLimits, KeyBook, KeyLimits, KeyRule,
    LOOK_AGAIN, NO_LIMITS, Need, Rate, Verdict,
};
pub use lease::Leases;
pub use listing::{
    InvalidCursor, ListFilter, ListKey, LowerBound, Overview, StatusCounts, TaskPage, Throughput,
    WAITING_COUNT_CAP, WAITING_REASON_SQL, WaitingCounts,
};
pub use params::{Claim, ClaimById, ClaimedById, Deliverable, ListPage};
pub use reads::{QueueReads, ReadCounter};
pub use schedules::{Expect, SCHEDULES_SEEN_WITHIN, ScheduleWrite};
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

/// How far behind the queue is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Tasks due now and not running (pending past their time, or with an expired lease).
    pub due: u64,
    /// The earliest instant among them.
    pub oldest_due_at: Option<Timestamp>,
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

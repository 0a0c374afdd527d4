//! What listings and counts are made of: a task's place in a listing, the filter, a page,
//! and the counts per status.

use crate::clock::Timestamp;
use crate::task::{Task, TaskId, TaskStatus};

/// A task's place in listings: its queue instant ([`Task::queue_at`]), then its id, written
/// `<instant>#<id>`.
/// Unique per task; a greater key is newer. It is also the DynamoDB queue index's sort key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListKey(pub(crate) String);

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

    /// The id of the task the key stands for.
    pub fn task_id(&self) -> Option<TaskId> {
        self.0.split_once('#').and_then(|(_, id)| id.parse().ok())
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
    /// Only tasks created by this schedule's ticks.
    pub schedule: Option<String>,
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
            && self
                .schedule
                .as_ref()
                .is_none_or(|schedule| task.schedule_name.as_ref() == Some(schedule))
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

/// Counts and the backlog together, with how exact they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overview {
    /// Tasks in each status.
    pub counts: StatusCounts,
    /// Tasks due now and the oldest of their due instants.
    pub backlog: super::Backlog,
    /// When the unfinished tasks (pending due, running, the backlog) were seen, if not by this
    /// call: a processor's last look at the queue.
    pub active_seen_at: Option<Timestamp>,
    /// Numbers that are at least what is shown: the reads they needed reached their cap.
    pub lower_bounds: Vec<LowerBound>,
    /// Whether every number is exact as of now (SQLite's are).
    pub exact: bool,
}

/// Unfinished tasks that are not running now, by why they wait (the reasons of
/// `crate::engine::Waiting`), as a store counts them in one bounded read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WaitingCounts {
    /// Pending, created for later.
    pub scheduled: u64,
    /// Pending, between attempts.
    pub backing_off: u64,
    /// Pending, held for their concurrency key.
    pub key_concurrency: u64,
    /// Pending, held for their rate key.
    pub key_rate: u64,
    /// Pending, held while their receiver's circuit is open.
    pub circuit_open: u64,
    /// Pending and due, by type: the caller tells a paused type's from the others.
    pub due_by_type: std::collections::BTreeMap<String, u64>,
    /// Running, their lease ended without an outcome.
    pub lease_expired: u64,
    /// False when the read stopped at its cap: the counts are then at least what they say.
    pub exact: bool,
}

impl WaitingCounts {
    /// Adds `count` tasks of `task_type` waiting for `reason` (as the stores' queries name the
    /// reasons); false for a reason it does not know.
    pub fn add(&mut self, reason: &str, task_type: Option<String>, count: u64) -> bool {
        let slot = match reason {
            "scheduled" => &mut self.scheduled,
            "backingOff" => &mut self.backing_off,
            "keyConcurrency" => &mut self.key_concurrency,
            "keyRate" => &mut self.key_rate,
            "circuitOpen" => &mut self.circuit_open,
            "leaseExpired" => &mut self.lease_expired,
            "due" => self
                .due_by_type
                .entry(task_type.unwrap_or_default())
                .or_default(),
            _ => return false,
        };
        *slot += count;
        true
    }

    /// The tasks counted.
    pub fn total(&self) -> u64 {
        self.scheduled
            + self.backing_off
            + self.key_concurrency
            + self.key_rate
            + self.circuit_open
            + self.lease_expired
            + self.due_by_type.values().sum::<u64>()
    }
}

/// Unfinished tasks a store's count of [`WaitingCounts`] reads at most.
pub const WAITING_COUNT_CAP: u64 = 10_000;

/// Each waiting task's reason and, when due, its type: the one query SQLite and PostgreSQL
/// count them with (`?1`/`$1`: now); the reasons are those [`WaitingCounts::add`] knows.
pub const WAITING_REASON_SQL: &str = "CASE WHEN status = 'running' THEN 'leaseExpired' \
     WHEN scheduled_at > {now} AND held = 'concurrency' THEN 'keyConcurrency' \
     WHEN scheduled_at > {now} AND held = 'rate' THEN 'keyRate' \
     WHEN scheduled_at > {now} AND held = 'circuit' THEN 'circuitOpen' \
     WHEN scheduled_at > {now} AND attempts = 0 THEN 'scheduled' \
     WHEN scheduled_at > {now} THEN 'backingOff' ELSE 'due' END AS reason, \
     CASE WHEN status = 'pending' AND scheduled_at <= {now} THEN type END AS due_type";

/// Tasks finished (succeeded, failed or cancelled) per time bucket, up to now: the dashboard's
/// chart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Throughput {
    /// Each bucket's length: a minute on SQLite, an hour on DynamoDB (its counts are kept per
    /// hour).
    pub bucket: std::time::Duration,
    /// The buckets, oldest first, each with its start; the last holds now.
    pub buckets: Vec<(Timestamp, u64)>,
}

/// A number of [`Overview`] that may be larger than shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum LowerBound {
    /// The count of pending tasks.
    Pending,
    /// The count of running tasks.
    Running,
    /// The backlog (`due`), and so the age of its oldest task.
    Due,
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

//! What a schedule write is conditioned on and what became of it: schedules are written only
//! under a condition on what the writer read.

use crate::schedule::Schedule;

/// What a schedule write is conditioned on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No schedule has the name yet.
    Absent,
    /// The stored schedule is still at this revision.
    Revision(u64),
}

/// What became of a conditional schedule write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleWrite {
    /// Written.
    Written,
    /// The condition did not hold; nothing was written. The schedule as it is, if it exists.
    Conflict(Option<Box<Schedule>>),
}

/// How stale a DynamoDB process's list of schedules may get before it reads them all again.
pub const SCHEDULES_SEEN_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

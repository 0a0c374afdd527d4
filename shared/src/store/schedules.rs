//! The schedules capability: stored schedules, written only under a condition on what the
//! writer read, and the ones due now.

use std::future::Future;

use super::StoreError;
use crate::clock::Timestamp;
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

/// Stores schedules and finds the due ones.
pub trait ScheduleStore: Send + Sync {
    /// The schedule `name`, read consistently.
    fn get_schedule(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Schedule>, StoreError>> + Send;

    /// Every schedule, by name.
    fn list_schedules(&self) -> impl Future<Output = Result<Vec<Schedule>, StoreError>> + Send;

    /// Writes `schedule` (whose `revision` is the new one) if `expect` holds.
    fn put_schedule(
        &self,
        schedule: &Schedule,
        expect: Expect,
    ) -> impl Future<Output = Result<ScheduleWrite, StoreError>> + Send;

    /// Deletes the schedule `name`; false when there was none.
    fn delete_schedule(&self, name: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Up to `limit` schedules that are not paused and whose `nextRunAt` is at or before
    /// `now`, earliest first. On DynamoDB, a schedule written by another process may be found
    /// up to [`SCHEDULES_SEEN_WITHIN`] late; what is returned was read consistently.
    fn due_schedules(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Schedule>, StoreError>> + Send;
}

/// How stale a DynamoDB process's list of schedules may get before it reads them all again.
pub const SCHEDULES_SEEN_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

//! The backend chosen at runtime from configuration: an enum over the backends this build
//! has, so handlers stay generic without `dyn`.

use super::{
    Backlog, ClaimById, ClaimGate, Created, Expect, FlowControl, Leases, ListFilter, ListKey,
    Overview, PausedTypes, QueueStats, QueueSweeper, ScheduleStore, ScheduleWrite, Settlement,
    StatusCounts, StoreError, SweepSummary, TaskCanceller, TaskDelivery, TaskLister, TaskPage,
    TaskPurger, TaskQueue, TaskReader, TaskRetrier, TaskWriter, TypeCounts,
};
use crate::clock::Timestamp;
use crate::schedule::Schedule;
use crate::task::{Task, TaskId};

/// The backend chosen at runtime from configuration.
#[derive(Debug, Clone)]
pub enum Store {
    /// Embedded SQLite, for one machine.
    #[cfg(feature = "sqlite")]
    Sqlite(super::SqliteStore),
    /// DynamoDB, for Lambda.
    #[cfg(feature = "dynamodb")]
    DynamoDb(super::DynamoStore),
}

/// Calls `$call` on whichever backend `$self` holds. The DynamoDB futures are boxed: they nest
/// deep enough that a Lambda's whole future would otherwise exceed the compiler's layout depth
/// in release builds, and a store call's network round trip dwarfs one allocation.
macro_rules! on_backend {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite($store) => $call.await,
            #[cfg(feature = "dynamodb")]
            Self::DynamoDb($store) => Box::pin($call).await,
        }
    };
}

impl TaskReader for Store {
    async fn get(&self, id: TaskId) -> Result<Option<Task>, StoreError> {
        on_backend!(self, store => store.get(id))
    }
}

impl TaskWriter for Store {
    async fn create(&self, task: Task) -> Result<Created, StoreError> {
        on_backend!(self, store => store.create(task))
    }
}

impl TaskDelivery for Store {
    async fn claim_by_id_gated(
        &self,
        id: TaskId,
        due_by: Timestamp,
        now: Timestamp,
        leases: &Leases,
        gate: &ClaimGate,
    ) -> Result<ClaimById, StoreError> {
        on_backend!(self, store => store.claim_by_id_gated(id, due_by, now, leases, gate))
    }

    async fn deliverable_gated(
        &self,
        horizon: Timestamp,
        now: Timestamp,
        limit: usize,
        gate: &ClaimGate,
    ) -> Result<Vec<Task>, StoreError> {
        on_backend!(self, store => store.deliverable_gated(horizon, now, limit, gate))
    }

    fn expect_delivery(&self, task: &Task, until: Timestamp) {
        match self {
            #[cfg(feature = "sqlite")]
            Self::Sqlite(store) => store.expect_delivery(task, until),
            #[cfg(feature = "dynamodb")]
            Self::DynamoDb(store) => store.expect_delivery(task, until),
        }
    }
}

impl TaskQueue for Store {
    async fn claim_gated(
        &self,
        due_by: Timestamp,
        now: Timestamp,
        limit: usize,
        leases: &Leases,
        gate: &ClaimGate,
    ) -> Result<Vec<Task>, StoreError> {
        on_backend!(self, store => store.claim_gated(due_by, now, limit, leases, gate))
    }

    async fn settle(
        &self,
        claimed: &Task,
        outcome: Settlement,
        now: Timestamp,
    ) -> Result<Task, StoreError> {
        on_backend!(self, store => store.settle(claimed, outcome, now))
    }

    async fn flush(&self, now: Timestamp, end: bool) {
        on_backend!(self, store => store.flush(now, end))
    }
}

impl TaskCanceller for Store {
    async fn cancel(&self, id: TaskId, now: Timestamp) -> Result<Task, StoreError> {
        on_backend!(self, store => store.cancel(id, now))
    }

    async fn cancel_by_reference(
        &self,
        reference_uid: &str,
        task_type: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<TaskId>, StoreError> {
        on_backend!(self, store => store.cancel_by_reference(reference_uid, task_type, now))
    }
}

impl TaskRetrier for Store {
    async fn retry(&self, id: TaskId, now: Timestamp) -> Result<Task, StoreError> {
        on_backend!(self, store => store.retry(id, now))
    }
}

impl QueueStats for Store {
    async fn backlog(&self, now: Timestamp) -> Result<Backlog, StoreError> {
        on_backend!(self, store => store.backlog(now))
    }

    async fn overview(&self, now: Timestamp) -> Result<Overview, StoreError> {
        on_backend!(self, store => store.overview(now))
    }

    async fn throughput(&self, now: Timestamp) -> Result<super::Throughput, StoreError> {
        on_backend!(self, store => store.throughput(now))
    }
}

impl FlowControl for Store {
    async fn paused_types(&self) -> Result<PausedTypes, StoreError> {
        on_backend!(self, store => store.paused_types())
    }

    async fn set_paused(
        &self,
        task_type: &str,
        paused: bool,
        now: Timestamp,
    ) -> Result<PausedTypes, StoreError> {
        on_backend!(self, store => store.set_paused(task_type, paused, now))
    }

    async fn type_counts(&self, now: Timestamp) -> Result<TypeCounts, StoreError> {
        on_backend!(self, store => store.type_counts(now))
    }
}

impl TaskPurger for Store {
    async fn purge_finished_before(
        &self,
        cutoff: Timestamp,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<u64, StoreError> {
        on_backend!(self, store => store.purge_finished_before(cutoff, progress))
    }
}

impl QueueSweeper for Store {
    async fn sweep(&self, now: Timestamp, max_entries: u64) -> Result<SweepSummary, StoreError> {
        on_backend!(self, store => store.sweep(now, max_entries))
    }
}

impl ScheduleStore for Store {
    async fn get_schedule(&self, name: &str) -> Result<Option<Schedule>, StoreError> {
        on_backend!(self, store => store.get_schedule(name))
    }

    async fn list_schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        on_backend!(self, store => store.list_schedules())
    }

    async fn put_schedule(
        &self,
        schedule: &Schedule,
        expect: Expect,
    ) -> Result<ScheduleWrite, StoreError> {
        on_backend!(self, store => store.put_schedule(schedule, expect))
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool, StoreError> {
        on_backend!(self, store => store.delete_schedule(name))
    }

    async fn due_schedules(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Schedule>, StoreError> {
        on_backend!(self, store => store.due_schedules(now, limit))
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
        on_backend!(self, store => store.list(filter, after, limit, now))
    }

    async fn counts(&self, now: Timestamp) -> Result<StatusCounts, StoreError> {
        on_backend!(self, store => store.counts(now))
    }
}

//! The DynamoDB backend: one table keyed by task id, a sparse sharded queue index, a reference
//! index, and a conditional write for every state change.
//!
//! Layers, bottom up: [`table`] (the primitives: conditional writes answering
//! [`table::Write`], batch reads, range queries, transactions) and [`expr`] (every condition
//! and update, built from the names in [`schema`]); [`item`] (the typed items); then one module
//! per concept: [`tasks`] (reads, creates, transitions), [`guards`], [`queue`] (claims and
//! outcomes) over [`due`] (finding due tasks) and [`watermark`], [`listing`], [`purge`] and
//! [`sweep`] (the safety net below the watermarks).
//! The capability traits below only delegate to them.

mod client;
mod delivery;
pub mod due;
mod expr;
mod guards;
pub mod item;
mod listing;
#[cfg(feature = "testing")]
pub mod probe;
mod purge;
mod queue;
mod schedules;
pub mod schema;
mod sweep;
mod table;
mod tasks;
mod watermark;

use std::time::Duration;

use aws_sdk_dynamodb::Client;

pub use self::client::{client_from_env, retry_config, timeout_config};
use self::due::DueQueue;
use self::queue::Queue;
use self::table::Table;
use super::{
    Backlog, Created, Expect, Leases, ListFilter, ListKey, QueueStats, QueueSweeper, ScheduleStore,
    ScheduleWrite, Settlement, StatusCounts, StoreError, SweepSummary, TaskCanceller, TaskLister,
    TaskPage, TaskPurger, TaskQueue, TaskReader, TaskRetrier, TaskWriter, Transition,
};
use crate::clock::Timestamp;
use crate::schedule::Schedule;
use crate::task::{Task, TaskId};

/// Concurrent single-item writes one store call issues (claims, cancels, deletes).
const WRITE_CONCURRENCY: usize = 16;

/// Tasks in one DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    table: Table,
    ttl_after: Duration,
    /// What this process knows of the due queue, shared by clones.
    due: DueQueue,
    /// The schedules, and this process's list of them.
    schedules: schedules::Schedules,
}

impl DynamoStore {
    /// A store over `table`; finished items get a TTL `ttl_after` their finish.
    pub fn new(client: Client, table: impl Into<String>, ttl_after: Duration) -> Self {
        let table = Table::new(client, table);
        Self {
            due: DueQueue::new(table.clone()),
            schedules: schedules::Schedules::new(table.clone()),
            table,
            ttl_after,
        }
    }

    /// The table name.
    pub fn table(&self) -> &str {
        self.table.name()
    }

    /// The SDK client.
    pub fn client(&self) -> &Client {
        self.table.client()
    }

    /// The watermark of each due-queue shard as the table has it (`None`: never raised).
    pub async fn watermarks(&self) -> Result<Vec<Option<ListKey>>, StoreError> {
        watermark::read_all(&self.table).await
    }

    fn queue(&self) -> Queue<'_> {
        Queue {
            table: &self.table,
            ttl_after: self.ttl_after,
            due: &self.due,
        }
    }
}

impl TaskReader for DynamoStore {
    async fn get(&self, id: TaskId) -> Result<Option<Task>, StoreError> {
        tasks::get(&self.table, id).await
    }
}

impl TaskWriter for DynamoStore {
    async fn create(&self, task: Task) -> Result<Created, StoreError> {
        let created = tasks::create(&self.table, self.ttl_after, task).await?;
        self.due.entry_written(created.task());
        Ok(created)
    }
}

impl TaskQueue for DynamoStore {
    async fn claim_due(
        &self,
        due_by: Timestamp,
        now: Timestamp,
        limit: usize,
        leases: &Leases,
    ) -> Result<Vec<Task>, StoreError> {
        self.queue().claim_due(due_by, now, limit, leases).await
    }

    async fn settle(
        &self,
        claimed: &Task,
        outcome: Settlement,
        now: Timestamp,
    ) -> Result<Task, StoreError> {
        self.queue().settle(claimed, outcome, now).await
    }
}

impl TaskCanceller for DynamoStore {
    async fn cancel(&self, id: TaskId, now: Timestamp) -> Result<Task, StoreError> {
        let cancel = Transition::Cancel { now };
        tasks::apply_to(&self.table, self.ttl_after, id, &cancel).await
    }

    async fn cancel_by_reference(
        &self,
        reference_uid: &str,
        task_type: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<TaskId>, StoreError> {
        tasks::cancel_by_reference(&self.table, self.ttl_after, reference_uid, task_type, now).await
    }
}

impl TaskRetrier for DynamoStore {
    async fn retry(&self, id: TaskId, now: Timestamp) -> Result<Task, StoreError> {
        let task = tasks::get(&self.table, id)
            .await?
            .ok_or(StoreError::NotFound(id))?;
        let retried = tasks::retry(&self.table, self.ttl_after, task, now).await?;
        self.due.entry_written(&retried);
        Ok(retried)
    }
}

impl QueueStats for DynamoStore {
    async fn backlog(&self, now: Timestamp) -> Result<Backlog, StoreError> {
        self.due.backlog(now).await
    }
}

impl TaskPurger for DynamoStore {
    async fn purge_finished_before(
        &self,
        cutoff: Timestamp,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<u64, StoreError> {
        purge::purge_finished_before(&self.table, cutoff, progress).await
    }
}

impl QueueSweeper for DynamoStore {
    async fn sweep(&self, now: Timestamp, max_entries: u64) -> Result<SweepSummary, StoreError> {
        sweep::sweep(&self.table, self.ttl_after, now, max_entries).await
    }
}

impl ScheduleStore for DynamoStore {
    async fn get_schedule(&self, name: &str) -> Result<Option<Schedule>, StoreError> {
        self.schedules.get(name).await
    }

    async fn list_schedules(&self) -> Result<Vec<Schedule>, StoreError> {
        self.schedules.list().await
    }

    async fn put_schedule(
        &self,
        schedule: &Schedule,
        expect: Expect,
    ) -> Result<ScheduleWrite, StoreError> {
        self.schedules.put(schedule, expect).await
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool, StoreError> {
        self.schedules.delete(name).await
    }

    async fn due_schedules(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Schedule>, StoreError> {
        self.schedules.due(now, limit).await
    }
}

impl TaskLister for DynamoStore {
    async fn list(
        &self,
        filter: &ListFilter,
        after: Option<ListKey>,
        limit: usize,
        now: Timestamp,
    ) -> Result<TaskPage, StoreError> {
        listing::list(&self.table, filter, after, limit, now).await
    }

    async fn counts(&self, now: Timestamp) -> Result<StatusCounts, StoreError> {
        listing::counts(&self.table, now).await
    }
}

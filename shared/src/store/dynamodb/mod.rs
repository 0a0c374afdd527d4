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
mod flow;
mod guards;
pub mod item;
mod listing;
mod overview;
#[cfg(feature = "testing")]
pub mod probe;
mod purge;
mod queue;
mod schedules;
pub mod schema;
mod sweep;
mod table;
mod tally;
mod tasks;
mod watermark;

use std::time::Duration;

use aws_sdk_dynamodb::Client;

pub use self::client::{client_from_env, retry_config, timeout_config};
use self::due::DueQueue;
use self::queue::Queue;
use self::table::Table;
use super::{
    Backlog, ClaimGate, Created, Expect, FlowControl, Leases, ListFilter, ListKey, Overview,
    PausedTypes, QueueStats, QueueSweeper, ScheduleStore, ScheduleWrite, Settlement, StatusCounts,
    StoreError, SweepSummary, TaskCanceller, TaskLister, TaskPage, TaskPurger, TaskQueue,
    TaskReader, TaskRetrier, TaskWriter, Transition, TypeCounts,
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
    /// When this process last published its look at the due queue; `None` until it claims
    /// from the due queue (only processors that scan it publish).
    seen: std::sync::Arc<std::sync::Mutex<Option<Option<std::time::Instant>>>>,
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
            seen: std::sync::Arc::default(),
        }
    }

    /// Writes this process's counts of finished tasks now (after an operator's change, which
    /// no later run of this process may follow).
    async fn flush_tally(&self) {
        self.table
            .tally()
            .flush(&self.table, self.ttl_after, true)
            .await;
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
    async fn claim_gated(
        &self,
        due_by: Timestamp,
        now: Timestamp,
        limit: usize,
        leases: &Leases,
        gate: &ClaimGate,
    ) -> Result<Vec<Task>, StoreError> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(None);
        self.queue()
            .claim_due(due_by, now, limit, leases, gate)
            .await
    }

    async fn settle(
        &self,
        claimed: &Task,
        outcome: Settlement,
        now: Timestamp,
    ) -> Result<Task, StoreError> {
        self.queue().settle(claimed, outcome, now).await
    }

    async fn flush(&self, now: Timestamp, end: bool) {
        self.table
            .tally()
            .flush(&self.table, self.ttl_after, end)
            .await;
        // Not at the end of a run: its look would cost the run's last seconds.
        let publish = !end && {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            match seen.as_mut() {
                Some(last) if last.is_none_or(|at| at.elapsed() >= overview::SEEN_EVERY) => {
                    *last = Some(std::time::Instant::now());
                    true
                }
                _ => false,
            }
        };
        if publish {
            if let Err(err) = overview::publish(&self.table, &self.due, now).await {
                tracing::warn!(error = %crate::report::Report(&err), "could not publish this processor's look at the due queue");
            }
        }
    }
}

impl TaskCanceller for DynamoStore {
    async fn cancel(&self, id: TaskId, now: Timestamp) -> Result<Task, StoreError> {
        let cancel = Transition::Cancel { now };
        let cancelled = tasks::apply_to(&self.table, self.ttl_after, id, &cancel).await;
        self.flush_tally().await;
        cancelled
    }

    async fn cancel_by_reference(
        &self,
        reference_uid: &str,
        task_type: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<TaskId>, StoreError> {
        let cancelled =
            tasks::cancel_by_reference(&self.table, self.ttl_after, reference_uid, task_type, now)
                .await;
        self.flush_tally().await;
        cancelled
    }
}

impl TaskRetrier for DynamoStore {
    async fn retry(&self, id: TaskId, now: Timestamp) -> Result<Task, StoreError> {
        let task = tasks::get(&self.table, id)
            .await?
            .ok_or(StoreError::NotFound(id))?;
        let retried = tasks::retry(&self.table, self.ttl_after, task, now).await;
        self.flush_tally().await;
        let retried = retried?;
        self.due.entry_written(&retried);
        Ok(retried)
    }
}

impl QueueStats for DynamoStore {
    async fn backlog(&self, now: Timestamp) -> Result<Backlog, StoreError> {
        self.due.backlog(now).await
    }

    async fn overview(&self, now: Timestamp) -> Result<Overview, StoreError> {
        overview::overview(&self.table, &self.due, self.ttl_after, now).await
    }

    async fn throughput(&self, now: Timestamp) -> Result<super::Throughput, StoreError> {
        tally::hourly(&self.table, now).await
    }
}

impl FlowControl for DynamoStore {
    async fn paused_types(&self) -> Result<PausedTypes, StoreError> {
        flow::paused(&self.table).await
    }

    async fn set_paused(
        &self,
        task_type: &str,
        paused: bool,
        now: Timestamp,
    ) -> Result<PausedTypes, StoreError> {
        flow::set_paused(&self.table, task_type, paused, now).await
    }

    async fn type_counts(&self, now: Timestamp) -> Result<TypeCounts, StoreError> {
        flow::counts(&self.due, now).await
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
        Ok(
            overview::overview(&self.table, &self.due, self.ttl_after, now)
                .await?
                .counts,
        )
    }
}

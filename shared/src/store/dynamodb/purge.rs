//! Cleanup on DynamoDB: deleting finished tasks found through the queue index.

use futures::{StreamExt, TryStreamExt};

use super::expr;
use super::guards;
use super::item::{Queue, from_item};
use super::schema::QUEUE_SHARDS;
use super::table::{Entry, KeyRange, Table, Write};
use super::watermark::{self, Mark};
use super::{DynamoStore, tasks};
use crate::clock::Timestamp;
use crate::report::Report;
use crate::store::{ListKey, StoreError};
use crate::task::{TaskId, TaskStatus};

/// Deletes of one chunk written at once.
const DELETE_CONCURRENCY: usize = 16;
/// Index entries read per cleanup chunk.
const PURGE_CHUNK: usize = 1000;

impl DynamoStore {
    /// Deletes finished tasks that finished at or before `cutoff`; see
    /// [`crate::store::Store::task_purge_finished`]. Failed and cancelled tasks are found
    /// in their queues by finish. Succeeded tasks are in the due queue by scheduled instant:
    /// below the watermark every entry is finished; above it the items are read first, so
    /// pending and running tasks cost no failed delete.
    pub async fn task_purge_finished(
        &self,
        cutoff: Timestamp,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<u64, StoreError> {
        let table = &self.table;
        let mut deleted = 0;
        let upper = ListKey::after_all_at(cutoff);
        let marks = watermark::read_all(table).await?;
        for shard in 0..QUEUE_SHARDS {
            let mark = marks.get(shard as usize).cloned().flatten();
            for queue in [Queue::Due, Queue::Failed, Queue::Cancelled] {
                let range = KeyRange {
                    queue: queue.shard(shard),
                    lo: None,
                    hi: Some(upper.clone()),
                };
                let mut start = None;
                loop {
                    let (entries, next) = table.entries(&range, false, PURGE_CHUNK, start).await?;
                    let ids = purgeable(table, queue, mark.as_ref(), entries, cutoff).await?;
                    let gone: Vec<bool> = futures::stream::iter(ids)
                        .map(|id| purge_one(table, id, queue, cutoff))
                        .buffer_unordered(DELETE_CONCURRENCY)
                        .try_collect()
                        .await?;
                    let chunk = gone.into_iter().filter(|gone| *gone).count() as u64;
                    deleted += chunk;
                    if chunk > 0 {
                        progress(chunk);
                    }
                    start = next;
                    if start.is_none() {
                        break;
                    }
                }
            }
        }
        Ok(deleted)
    }
}

/// The tasks of `entries` (of `queue`) to delete: every failed or cancelled one (their
/// delete is conditioned on their finish); in the due queue, those the watermark `mark`
/// passed (below it and not listed open) and the others read as succeeded by `cutoff`.
async fn purgeable(
    table: &Table,
    queue: Queue,
    mark: Option<&Mark>,
    entries: Vec<Entry>,
    cutoff: Timestamp,
) -> Result<Vec<TaskId>, StoreError> {
    let (sure, unsure): (Vec<Entry>, Vec<Entry>) = entries
        .into_iter()
        .partition(|entry| queue != Queue::Due || mark.is_some_and(|mark| mark.passed(&entry.key)));
    let mut ids: Vec<TaskId> = sure.into_iter().map(|entry| entry.id).collect();
    if !unsure.is_empty() {
        let unsure: Vec<TaskId> = unsure.into_iter().map(|entry| entry.id).collect();
        let tasks = tasks::get_many(table, &unsure, false).await?;
        ids.extend(unsure.into_iter().filter(|id| {
            tasks.get(id).is_some_and(|task| {
                task.status == TaskStatus::Succeeded
                    && task.finished_at.is_some_and(|at| at <= cutoff)
            })
        }));
    }
    Ok(ids)
}

/// Deletes one finished task of `queue` found by cleanup, and frees its guards; false when it
/// changed meanwhile.
async fn purge_one(
    table: &Table,
    id: TaskId,
    queue: Queue,
    cutoff: Timestamp,
) -> Result<bool, StoreError> {
    let condition = match queue {
        Queue::Due => expr::purgeable_success(cutoff),
        Queue::Failed | Queue::Cancelled => expr::purgeable_finished(id, cutoff),
    };
    let old = match table.delete(&id.to_string(), condition).await? {
        Write::Done(old) => old,
        Write::ConditionFailed(_) => return Ok(false),
    };
    match from_item(old) {
        Ok(task) => guards::release_all(table, &task).await?,
        // Deleted all the same; a guard it held is taken over by the next create.
        Err(err) => {
            tracing::warn!(error = %Report(&err), task_id = %id, "deleted an unreadable task; its guards stay")
        }
    }
    Ok(true)
}

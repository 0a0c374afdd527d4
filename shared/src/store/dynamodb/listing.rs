//! Listings and counts on DynamoDB, read from the queue and reference indexes, never by a
//! table scan.

use std::time::Duration;

use super::DynamoStore;
use super::item::Queue;
use super::schema::QUEUE_SHARDS;
use super::table::{Entry, KeyRange, Table};
use super::{tasks, watermark};
use crate::clock::Timestamp;
use crate::store::{ListFilter, ListKey, ListPage, StoreError, TaskPage};
use crate::task::{Task, TaskId, TaskStatus};

/// Index reads one listing page makes at most before it returns a short page.
const LIST_ROUNDS: usize = 4;
/// How far ahead of a listing's `now` a processor's clock may be: running and succeeded tasks
/// are looked for up to this much after it.
const LIST_SKEW: Duration = Duration::from_secs(300);

impl DynamoStore {
    /// One page of tasks, newest first; see [`crate::store::Store::task_list`].
    pub async fn task_list(&self, page: ListPage<'_>) -> Result<TaskPage, StoreError> {
        list(
            &self.table,
            page.filter,
            page.after.cloned(),
            page.limit,
            page.now,
        )
        .await
    }
}

async fn list(
    table: &Table,
    filter: &ListFilter,
    after: Option<ListKey>,
    limit: usize,
    now: Timestamp,
) -> Result<TaskPage, StoreError> {
    if limit == 0 {
        return Ok(TaskPage::default());
    }
    if let Some(reference_uid) = &filter.reference_uid {
        return list_by_reference(table, reference_uid, filter, after, limit).await;
    }
    let (ranges, listed) = ranges_of(table, filter.status, now).await?;
    let mut page = TaskPage::default();
    let mut below = after;
    for _ in 0..LIST_ROUNDS {
        let want = limit - page.tasks.len();
        let (entries, next) = newest_entries(table, &ranges, &listed, below.as_ref(), want).await?;
        let ids: Vec<TaskId> = entries.iter().map(|entry| entry.id).collect();
        let found = tasks::get_many(table, &ids, true).await?;
        for entry in &entries {
            // The index lags the table: a task that moved since is listed where it is now,
            // not at the entry it left, and one listed already is not repeated.
            let task = found
                .get(&entry.id)
                .filter(|task| ListKey::of(task) == entry.key && filter.matches(task));
            if let Some(task) = task {
                if !page.tasks.iter().any(|listed| listed.id == task.id) {
                    page.tasks.push(task.clone());
                }
            }
        }
        below = next;
        if page.tasks.len() >= limit || below.is_none() {
            break;
        }
    }
    page.next = below;
    Ok(page)
}

/// The next `want` entries below `below` across `ranges` and the `listed` ones, newest
/// first, and the key to continue below when more remain.
async fn newest_entries(
    table: &Table,
    ranges: &[KeyRange],
    listed: &[Entry],
    below: Option<&ListKey>,
    want: usize,
) -> Result<(Vec<Entry>, Option<ListKey>), StoreError> {
    let reads = ranges.iter().map(|range| async move {
        // `below` itself is left out after the read: key conditions have no open upper end
        // together with a lower one.
        let hi = match (&range.hi, below) {
            (Some(hi), Some(below)) => Some(hi.min(below).clone()),
            (hi, below) => hi.clone().or_else(|| below.cloned()),
        };
        let range = KeyRange {
            hi,
            ..range.clone()
        };
        let (entries, next) = table
            .entries(&range, true, want.saturating_add(1), None)
            .await?;
        let entries: Vec<Entry> = entries
            .into_iter()
            .filter(|entry| below.is_none_or(|below| entry.key != *below))
            .collect();
        Ok::<_, StoreError>((entries, next.is_some()))
    });
    let results = futures::future::try_join_all(reads).await?;
    // A range with more entries has unread ones below its last: only keys at or above the
    // highest such last key are certainly in order.
    let bound = results
        .iter()
        .filter(|(_, more)| *more)
        .filter_map(|(entries, _)| entries.last().map(|entry| entry.key.clone()))
        .max();
    let unread = results.iter().any(|(_, more)| *more);
    let listed = listed
        .iter()
        .filter(|entry| below.is_none_or(|below| entry.key < *below))
        .cloned();
    let mut entries: Vec<Entry> = results
        .into_iter()
        .flat_map(|(entries, _)| entries)
        .chain(listed)
        .filter(|entry| bound.as_ref().is_none_or(|bound| entry.key >= *bound))
        .collect();
    entries.sort_by(|a, b| b.key.cmp(&a.key));
    let more = unread || entries.len() > want;
    entries.truncate(want);
    let next = if more {
        entries.last().map(|entry| entry.key.clone())
    } else {
        None
    };
    Ok((entries, next))
}

/// The index ranges a listing of `status` (every status when `None`) reads: running and
/// succeeded tasks are due-queue entries whose instant has come, pending ones are above the
/// watermark; and for pending or running, the open entries the watermarks list below them.
async fn ranges_of(
    table: &Table,
    status: Option<TaskStatus>,
    now: Timestamp,
) -> Result<(Vec<KeyRange>, Vec<Entry>), StoreError> {
    let come = Some(ListKey::after_all_at(now.plus(LIST_SKEW)));
    let marks = match status {
        Some(TaskStatus::Pending | TaskStatus::Running) => watermark::read_all(table).await?,
        _ => vec![None; QUEUE_SHARDS as usize],
    };
    let listed: Vec<Entry> = marks
        .iter()
        .flatten()
        .flat_map(|mark| &mark.open)
        .filter_map(|(key, _)| {
            Some(Entry {
                key: key.clone(),
                id: key.task_id()?,
            })
        })
        .collect();
    let due = |above_mark: bool, hi: Option<ListKey>| {
        (0..QUEUE_SHARDS)
            .map(|shard| KeyRange {
                queue: Queue::Due.shard(shard),
                lo: marks
                    .get(shard as usize)
                    .cloned()
                    .flatten()
                    .map(|mark| mark.up_to)
                    .filter(|_| above_mark),
                hi: hi.clone(),
            })
            .collect::<Vec<_>>()
    };
    let whole = |queue: Queue| {
        (0..QUEUE_SHARDS)
            .map(|shard| KeyRange {
                queue: queue.shard(shard),
                lo: None,
                hi: None,
            })
            .collect::<Vec<_>>()
    };
    let ranges = match status {
        None => [
            due(false, None),
            whole(Queue::Failed),
            whole(Queue::Cancelled),
        ]
        .concat(),
        Some(TaskStatus::Pending) => due(true, None),
        Some(TaskStatus::Running) => due(true, come),
        Some(TaskStatus::Succeeded) => due(false, come),
        Some(TaskStatus::Failed) => whole(Queue::Failed),
        Some(TaskStatus::Cancelled) => whole(Queue::Cancelled),
    };
    Ok((ranges, listed))
}

/// A listing by reference: every task of the reference is read, filtered and ordered here.
async fn list_by_reference(
    table: &Table,
    reference_uid: &str,
    filter: &ListFilter,
    after: Option<ListKey>,
    limit: usize,
) -> Result<TaskPage, StoreError> {
    let ids = table
        .reference_ids(reference_uid, filter.task_type.as_deref())
        .await?;
    let mut tasks: Vec<(ListKey, Task)> = tasks::get_many(table, &ids, true)
        .await?
        .into_values()
        .filter(|task| filter.matches(task))
        .map(|task| (ListKey::of(&task), task))
        .filter(|(key, _)| after.as_ref().is_none_or(|after| key < after))
        .collect();
    tasks.sort_by(|a, b| b.0.cmp(&a.0));
    let more = tasks.len() > limit;
    tasks.truncate(limit);
    let next = if more {
        tasks.last().map(|(key, _)| key.clone())
    } else {
        None
    };
    Ok(TaskPage {
        tasks: tasks.into_iter().map(|(_, task)| task).collect(),
        next,
    })
}

//! The sweep below the due queue's watermarks: the safety net for index entries that landed
//! late.
//!
//! A watermark passes only entries at least `due::MARGIN` (10 minutes) old, and every writer of
//! an entry is bounded well inside that. But `queue-index` is eventually consistent, and how
//! far it can lag is not Tasker's to bound: an entry that shows up later than the margin lands
//! below the watermark, where no scan reads, and its task would wait forever. The sweep reads
//! the entries below each shard's watermark with their items, and gives every task still
//! pending (or running with an expired lease) a new entry at the sweep's instant
//! ([`Transition::Rescue`]), so the next scan claims it.
//!
//! A pass reads the shards one after the other, each from its bottom up to its watermark, so
//! an entry however late is found by the pass after it lands. Reads are capped per sweep; where
//! the pass stands is kept in one item (`sweep#due`), so the next sweep goes on from there, and
//! starts a new pass once one is over.

use std::time::Duration;

use super::expr;
use super::item::{Queue, SweepItem, from_item, sweep_key};
use super::schema::QUEUE_SHARDS;
use super::table::{BATCH_GET_KEYS, Entry, KeyRange, Table, Write};
use super::tasks::{self, Applied};
use super::watermark;
use crate::clock::Timestamp;
use crate::report::Report;
use crate::store::transition::new_lease_token;
use crate::store::{ListKey, StoreError, SweepSummary, Transition};

/// Sweeps at most `max_entries` entries below the watermarks; see
/// [`crate::store::QueueSweeper::sweep`].
pub async fn sweep(
    table: &Table,
    ttl_after: Duration,
    now: Timestamp,
    max_entries: u64,
) -> Result<SweepSummary, StoreError> {
    let marks = watermark::read_all(table).await?;
    // Read and written with the calls the cleanup function may make (BatchGetItem,
    // UpdateItem), consistently.
    let read = match table.batch_get(&[sweep_key()], true).await?.pop() {
        Some(item) => Some(SweepItem::from_item(item)?),
        None => None,
    };
    let mut at = match &read {
        Some(progress) if progress.shard < QUEUE_SHARDS => progress.clone(),
        // No pass yet, or the last one is over: a new one begins.
        _ => SweepItem {
            id: sweep_key(),
            shard: 0,
            up_to: None,
            began: Some(now),
            version: None,
        },
    };
    let mut summary = SweepSummary::default();
    while at.shard < QUEUE_SHARDS {
        let budget = max_entries.saturating_sub(summary.entries);
        let shard = at.shard;
        let Some(mark) = marks[shard as usize].clone() else {
            // No watermark: nothing lies below it.
            (at.shard, at.up_to) = (shard + 1, None);
            continue;
        };
        let range = KeyRange {
            queue: Queue::Due.shard(shard),
            lo: at.up_to.clone().map(ListKey),
            hi: Some(mark.clone()),
        };
        let pass = sweep_range(table, ttl_after, &range, &mark, now, budget).await?;
        summary.entries += pass.entries;
        summary.rescued += pass.rescued;
        if !pass.done {
            at.up_to = pass.last.map(|key| key.as_str().to_owned());
            break;
        }
        (at.shard, at.up_to) = (shard + 1, None);
    }
    summary.complete = at.shard >= QUEUE_SHARDS;
    save(table, read.as_ref(), at).await?;
    Ok(summary)
}

/// Writes where the pass stands, unless another sweep wrote since `read`.
async fn save(
    table: &Table,
    read: Option<&SweepItem>,
    mut at: SweepItem,
) -> Result<(), StoreError> {
    let old = read
        .map(SweepItem::to_item)
        .transpose()?
        .unwrap_or_default();
    at.version = Some(new_lease_token());
    let update = expr::changes(&old, &at.to_item()?);
    let condition = expr::progress_as_read(read.and_then(|read| read.version.as_deref()));
    if let Write::ConditionFailed(_) = table.update(&at.id, update, condition).await? {
        tracing::warn!("another sweep ran at the same time; its progress stands");
    }
    Ok(())
}

/// What a sweep did on one shard.
struct Pass {
    entries: u64,
    rescued: u64,
    /// The last entry read.
    last: Option<ListKey>,
    /// The shard's entries up to the watermark are all read.
    done: bool,
}

/// Reads `range` from its bottom, at most `budget` entries, rescuing what is still due.
async fn sweep_range(
    table: &Table,
    ttl_after: Duration,
    range: &KeyRange,
    mark: &ListKey,
    now: Timestamp,
    budget: u64,
) -> Result<Pass, StoreError> {
    let mut pass = Pass {
        entries: 0,
        rescued: 0,
        last: range.lo.clone(),
        done: false,
    };
    let mut start = None;
    loop {
        let left = usize::try_from(budget - pass.entries).unwrap_or(usize::MAX);
        if left == 0 {
            return Ok(pass);
        }
        let (entries, next) = table
            .entries(range, false, left.min(BATCH_GET_KEYS), start)
            .await?;
        pass.entries += entries.len() as u64;
        pass.last = entries.last().map(|entry| entry.key.clone()).or(pass.last);
        pass.rescued += rescue_due(table, ttl_after, &entries, mark, now).await?;
        start = next;
        if start.is_none() {
            pass.done = true;
            return Ok(pass);
        }
    }
}

/// Rescues the tasks of `entries` still due at their entry; how many.
async fn rescue_due(
    table: &Table,
    ttl_after: Duration,
    entries: &[Entry],
    mark: &ListKey,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let ids: Vec<String> = entries.iter().map(|entry| entry.id.to_string()).collect();
    let mut rescued = 0;
    for item in table.batch_get(&ids, false).await? {
        let task = match from_item(item) {
            Ok(task) => task,
            Err(err) => {
                tracing::warn!(error = %Report(&err), "the sweep skipped an unreadable task");
                continue;
            }
        };
        let entry = ListKey::of(&task);
        // A task that moved on is read at its new entry.
        if !entries.iter().any(|e| e.id == task.id && e.key == entry) {
            continue;
        }
        let id = task.id;
        let rescue = Transition::Rescue { now };
        if let Applied::Written(_) = tasks::apply(table, ttl_after, task, &rescue).await? {
            rescued += 1;
            let instant = entry.instant().unwrap_or(now);
            let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            tracing::warn!(
                task_id = %id,
                entry = %entry,
                entry_age_ms = millis(now.since(instant)),
                below_watermark_ms = mark.instant().map_or(0, |mark| millis(mark.since(instant))),
                "rescued a task whose queue entry landed below the watermark (index lag beyond the margin)"
            );
        }
    }
    Ok(rescued)
}

//! The sweep below the due queue's watermarks: the safety net for index entries that landed
//! late.
//!
//! A watermark passes only entries at least `due::MARGIN` (10 minutes) old, and every writer of
//! an entry is bounded well inside that. But `queue-index` is eventually consistent, and how
//! far it can lag is not Tasker's to bound: an entry that shows up later than the margin lands
//! below the watermark, where no scan reads, and its task would wait forever. The sweep reads
//! entries below each shard's watermark with their items, and gives every task still pending
//! (or running with an expired lease) at that entry a new entry at the sweep's instant
//! ([`Transition::Rescue`]), so the next scan claims it.
//!
//! Below each watermark, a sweep reads two regions, so that every entry is read:
//!
//! - the **window**, the last [`RECENT`] below the watermark, where an entry a few hours late
//!   lands: every sweep reads it, newest first, with up to half its cap (shared by the shards),
//!   so such a task is found by the next nightly run whatever the table's size;
//! - the **pass** region, everything older: a pass reads the shards one after the other, each
//!   from its bottom up to the window, with what the cap leaves, so an entry however late is
//!   found by the pass after it lands. Where the pass stands is kept in one item (`sweep#due`),
//!   saved even when a sweep fails part way, so the next sweep goes on from there and starts a
//!   new pass once one is over. An entry the window had no room for this time ages into the
//!   pass region.

use std::time::Duration;

use super::DynamoStore;
use super::expr;
use super::item::{Queue, SweepItem, from_item, sweep_key};
use super::schema::QUEUE_SHARDS;
use super::table::{BATCH_GET_KEYS, Entry, KeyRange, Table, Write};
use super::tasks::Applied;
use super::watermark::{self, Mark};
use crate::clock::Timestamp;
use crate::report::Report;
use crate::store::transition::new_lease_token;
use crate::store::{ListKey, StoreError, SweepSummary, Transition};

/// How far below each watermark every sweep reads before it goes on with its pass.
pub const RECENT: Duration = Duration::from_secs(24 * 3600);

impl DynamoStore {
    /// Sweeps at most `max_entries` entries below the watermarks; see
    /// [`crate::store::Store::queue_sweep`] and the module's documentation.
    pub async fn queue_sweep(
        &self,
        now: Timestamp,
        max_entries: u64,
    ) -> Result<SweepSummary, StoreError> {
        sweep(self, now, max_entries).await
    }
}

async fn sweep(
    store: &DynamoStore,
    now: Timestamp,
    max_entries: u64,
) -> Result<SweepSummary, StoreError> {
    let table = &store.table;
    if max_entries == 0 {
        return Ok(SweepSummary::default());
    }
    let marks = watermark::read_all(table).await?;
    let mut sweep = Sweep {
        store,
        now,
        summary: SweepSummary::default(),
    };
    sweep.window(&marks, max_entries / 2).await?;
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
            began: Some(now),
            ..SweepItem::default()
        },
    };
    let budget = max_entries - sweep.summary.entries;
    let passed = sweep.pass(&marks, &mut at, budget).await;
    // Where the pass stands is saved even when it failed part way.
    save(table, read.as_ref(), at.clone()).await?;
    passed?;
    sweep.summary.complete = at.shard >= QUEUE_SHARDS;
    Ok(sweep.summary)
}

/// Where the window below `mark` begins: entries above this key are in it.
fn window_start(mark: &ListKey) -> Option<ListKey> {
    Some(ListKey::after_all_at(mark.instant()?.minus(RECENT)))
}

/// One sweep in progress.
struct Sweep<'a> {
    store: &'a DynamoStore,
    now: Timestamp,
    summary: SweepSummary,
}

impl Sweep<'_> {
    /// Reads the window below each shard's watermark, newest first, `budget` entries in all.
    async fn window(&mut self, marks: &[Option<Mark>], budget: u64) -> Result<(), StoreError> {
        let shards = marks.iter().flatten().count().max(1) as u64;
        for (shard, mark) in (0..QUEUE_SHARDS).zip(marks) {
            let Some(mark) = mark else { continue };
            let range = KeyRange {
                queue: Queue::Due.shard(shard),
                lo: window_start(&mark.up_to),
                hi: Some(mark.up_to.clone()),
            };
            let mut left = budget / shards;
            let mut start = None;
            while left > 0 {
                let limit = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(BATCH_GET_KEYS);
                let (entries, next) = self.store.table.entries(&range, true, limit, start).await?;
                self.rescue_due(&entries, mark).await?;
                left -= entries.len() as u64;
                self.summary.entries += entries.len() as u64;
                start = next;
                if start.is_none() {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Goes on with the pass from `at` with `budget` entries, moving `at` as it reads.
    async fn pass(
        &mut self,
        marks: &[Option<Mark>],
        at: &mut SweepItem,
        mut budget: u64,
    ) -> Result<(), StoreError> {
        while at.shard < QUEUE_SHARDS {
            // No watermark, or none older than the window: nothing lies in the pass region.
            let Some((mark, end)) = marks[at.shard as usize]
                .as_ref()
                .and_then(|mark| Some((mark, window_start(&mark.up_to)?)))
            else {
                (at.shard, at.up_to) = (at.shard + 1, None);
                continue;
            };
            let mut range = KeyRange {
                queue: Queue::Due.shard(at.shard),
                lo: at.up_to.clone().map(ListKey),
                hi: Some(end),
            };
            let done = self.read_up(&mut range, mark, &mut budget).await;
            at.up_to = range.lo.map(|key| key.as_str().to_owned());
            if !done? {
                return Ok(());
            }
            (at.shard, at.up_to) = (at.shard + 1, None);
        }
        Ok(())
    }

    /// Reads `range` from its bottom within `budget`, rescuing what is still due, and moves its
    /// bottom past what it read; true when it read the range to its end.
    async fn read_up(
        &mut self,
        range: &mut KeyRange,
        mark: &Mark,
        budget: &mut u64,
    ) -> Result<bool, StoreError> {
        loop {
            if *budget == 0 {
                return Ok(false);
            }
            let limit = usize::try_from(*budget)
                .unwrap_or(usize::MAX)
                .min(BATCH_GET_KEYS);
            let (entries, next) = self.store.table.entries(range, false, limit, None).await?;
            self.rescue_due(&entries, mark).await?;
            *budget -= entries.len() as u64;
            self.summary.entries += entries.len() as u64;
            if let Some(last) = entries.last() {
                range.lo = Some(last.key.clone());
            }
            if next.is_none() {
                return Ok(true);
            }
        }
    }

    /// Rescues the tasks of `entries` still due at their entry, but the open entries the
    /// watermark lists (the scans read those again themselves).
    async fn rescue_due(&mut self, entries: &[Entry], mark: &Mark) -> Result<(), StoreError> {
        let ids: Vec<String> = entries.iter().map(|entry| entry.id.to_string()).collect();
        for item in self.store.table.batch_get(&ids, false).await? {
            let task = match from_item(item) {
                Ok(task) => task,
                Err(err) => {
                    tracing::warn!(error = %Report(&err), "the sweep skipped an unreadable task");
                    continue;
                }
            };
            let entry = ListKey::of(&task);
            // A task that moved on is read at its new entry.
            if !entries.iter().any(|e| e.id == task.id && e.key == entry) || !mark.passed(&entry) {
                continue;
            }
            let id = task.id;
            let rescue = Transition::Rescue {
                now: self.now,
                entry: entry.clone(),
            };
            if let Applied::Written(_) = self.store.apply(task, &rescue).await? {
                self.summary.rescued += 1;
                log_rescue(id, &entry, &mark.up_to, self.now);
            }
        }
        Ok(())
    }
}

/// Logs a rescued task: its entry, how old the entry is, and how far below the watermark.
fn log_rescue(id: crate::task::TaskId, entry: &ListKey, mark: &ListKey, now: Timestamp) {
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

//! The due queue on DynamoDB: finding due tasks among the `due#N` index entries without
//! writing anything but the claims.
//!
//! A task's `due#N` entry is written when the task is created (or made due again by a retry)
//! and stays where it is through its claim and its success, so neither of those writes the
//! index: a task that succeeds at its first attempt costs 4 write units in all. Succeeded tasks
//! therefore stay in the due queue until TTL (or cleanup) deletes them, and two marks keep scans
//! from reading them over and over:
//!
//! - A **watermark** item per shard in the table (`mark#due#N`, attribute `upTo`): every entry at
//!   or below it is finished. It only rises, only past entries a scan read as finished, and only
//!   past entries at least [`MARGIN`] old. An index entry is written with an instant no earlier
//!   than its write, so one still on its way through the eventually consistent index cannot land
//!   below a watermark unless it is more than [`MARGIN`] late. It is written once per
//!   [`WATERMARK_BATCH`] entries passed (or after [`WATERMARK_MAX_LAG`]), a small fraction of a
//!   write unit per task.
//! - A **cursor** per shard in this process, which runs ahead of the watermark through finished
//!   entries, recent ones included, and falls back to the watermark every [`RESCAN`], so an
//!   entry that became visible behind it is read at most that much later.

mod ahead;
mod scan;
mod state;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use self::ahead::READ_AHEAD_AGE;
use self::ahead::ReadAhead;
use self::scan::{Scan, ShardReader};
pub use self::state::Open;
use self::state::{DueState, Progress, Raise, Start};
use super::item::{Queue, shard_of};
use super::schema::QUEUE_SHARDS;
use super::table::{KeyRange, Table};
use super::watermark;
use crate::clock::Timestamp;
use crate::report::Report;
use crate::store::{
    Backlog, ClaimGate, ListKey, QueueReads, ReadCounter, StoreError, TypeCount, TypeCounts,
};
use crate::task::{Task, TaskStatus};

/// How old an entry must be before a watermark may pass it: longer than any write of an entry
/// takes to land and show in the index. A create gives up before its put if it is a minute
/// old, and an outcome is written within four tries of at most 60 s each.
pub const MARGIN: Duration = Duration::from_secs(600);
/// How often a process's cursors fall back to the watermark and read forward again.
pub const RESCAN: Duration = Duration::from_secs(60);
/// Entries a watermark write passes at least (unless the oldest waited [`WATERMARK_MAX_LAG`]).
pub const WATERMARK_BATCH: usize = 100;
/// The longest finished entries wait below the cursor for a watermark write.
pub const WATERMARK_MAX_LAG: Duration = Duration::from_secs(3600);
/// Keys of finished entries a process remembers (about 100 bytes each), so its scans need not
/// read their items again.
const FINISHED_CAP: usize = 50_000;
/// Open entries a process tracks at most (about 150 bytes each); past that a cursor stops at
/// an open entry, as every cursor did before open entries were tracked.
const OPEN_CAP: usize = 50_000;
/// How long a process keeps to its shard after a claim of its lost to another processor.
pub const CONTENTION_SPELL: Duration = Duration::from_secs(60);
/// How far behind its cursor a scan that comes up short looks again.
pub const LOOKBACK: Duration = Duration::from_secs(10);
/// Index entries read per query page of a scan, at most.
const PAGE_MAX: usize = 1000;
/// Index entries read per query page of a scan, at least: about what the 4 KB of one billed
/// half read unit hold.
const PAGE_MIN: usize = 40;
/// Items a backlog read looks at before it counts the rest of the due range as due unread.
const BACKLOG_READS: usize = 5000;

/// What one scan of the due queue looks for.
#[derive(Debug, Clone)]
pub struct ScanGoal {
    /// Entries up to this key, included.
    pub upper: ListKey,
    /// Running tasks whose lease expired by then are due again.
    pub due_by: Timestamp,
    /// The scan's present: decides which entries are old enough for the watermark.
    pub now: Timestamp,
    /// Stop once this many due tasks are found.
    pub want: usize,
    /// Stop after reading this many items.
    pub read_cap: usize,
    /// Go on from the entries the last such scan read ahead, if it was a moment ago (see
    /// [`ahead`]), and keep this scan's for the next.
    pub read_ahead: bool,
    /// Stop after taking this many index entries (read or known), so that a scan through
    /// entries this process knows are finished costs a bounded number of index pages too.
    pub entry_cap: usize,
    /// Read the items of entries this process remembers as running under another's lease
    /// (or on their way as a message), instead of trusting the memory: for counts, since such a
    /// task may have finished since.
    pub reread_leased: bool,
    /// The types a claim may take (see [`ClaimGate`]): a due task of a type it does not admit
    /// is passed over like a running one, and one of a paused type is remembered as held, so
    /// later scans do not read its item again while the pause lasts.
    pub gate: ClaimGate,
}

impl ScanGoal {
    /// A look at every unfinished task up to `now` (for counts): at most `read_cap` items and
    /// `entry_cap` index entries, tasks remembered as running read again, nothing claimed.
    fn look(now: Timestamp, read_cap: usize, entry_cap: usize) -> Self {
        Self {
            upper: ListKey::after_all_at(now),
            due_by: now,
            now,
            want: usize::MAX,
            read_cap,
            read_ahead: false,
            entry_cap,
            reread_leased: true,
            gate: ClaimGate::default(),
        }
    }
}

/// What a scan found.
#[derive(Debug, Default)]
pub struct ScanFound {
    /// Due tasks with attempts left, earliest entry first.
    pub claimable: Vec<Task>,
    /// Running tasks whose final attempt's lease expired.
    pub exhausted: Vec<Task>,
    /// Shards the scan left entries unread in, with the last key it read there.
    pub unread: Vec<(u32, Option<ListKey>)>,
    /// Entries of tasks running under a live lease (or not readable yet) the scan passed.
    pub blocking: usize,
    /// The scan stopped at its read or entry cap before it reached `goal.upper`.
    pub capped: bool,
    /// The types of the tasks it read as running under a live lease.
    pub running_types: Vec<String>,
}

/// The tasks of the due queue up to now that are not finished, as one scan saw them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Active {
    /// Pending tasks due now.
    pub pending: u64,
    /// Running tasks, their lease expired or not.
    pub running: u64,
    /// The backlog: tasks due now (pending, or running with an expired lease).
    pub backlog: Backlog,
    /// False when the scan stopped at its read cap: the numbers are what it saw.
    pub complete: bool,
}

/// The due queue of one table, with what this process knows of it (shared by clones).
#[derive(Debug, Clone)]
pub struct DueQueue {
    table: Table,
    state: Arc<Mutex<DueState>>,
    ahead: Arc<Mutex<Option<ReadAhead>>>,
    reads: Arc<ReadCounter>,
}

impl DueQueue {
    /// The due queue of `table`, known nothing of yet.
    pub fn new(table: Table) -> Self {
        Self {
            table,
            state: Arc::default(),
            ahead: Arc::default(),
            reads: Arc::default(),
        }
    }

    /// What this process's scans have read.
    pub fn reads(&self) -> QueueReads {
        self.reads.get()
    }

    /// Reads the due queue from each shard's cursor up to `goal.upper`, earliest entry first
    /// across shards, until it has found `goal.want` due tasks or read `goal.read_cap` items.
    /// Cursors move past what the scan read as finished; watermarks follow in batches. When the
    /// cursors' side comes up short, the last [`LOOKBACK`] behind them is read too, for entries
    /// that landed after the cursor passed their place (a create takes a moment to land).
    pub async fn scan(&self, goal: &ScanGoal) -> Result<ScanFound, StoreError> {
        let starts = self.starts(goal.now).await?;
        let kept = if goal.read_ahead {
            lock(&self.ahead).take()
        } else {
            None
        };
        let (mut readers, since) = ReadAhead::readers(kept, &starts, goal);
        let (preferred, open_room, open_due) = {
            let state = lock(&self.state);
            let open_due = state.open_due(
                &goal.upper,
                goal.due_by,
                &goal.gate,
                goal.want,
                goal.reread_leased,
            );
            (state.preferred_shard(goal.now), state.open_room(), open_due)
        };
        let mut scan = Scan::new(goal, preferred, goal.now.minus(MARGIN), open_room);
        // The open entries whose wait is over first: they are older than what the cursors
        // read, and no cursor reads them again.
        let mut capped = false;
        if !open_due.is_empty() {
            let mut recheck = [ShardReader::recheck(open_due)];
            capped = scan.read(&self.table, &self.state, &mut recheck).await?;
        }
        if !capped && scan.found.claimable.len() < goal.want {
            capped = scan.read(&self.table, &self.state, &mut readers).await?;
        }
        scan.found.capped = capped;
        if capped {
            scan.found.unread = readers
                .iter()
                .filter(|reader| reader.has_more())
                .map(|reader| (reader.shard, reader.read_up_to()))
                .collect();
        } else if scan.found.claimable.len() < goal.want {
            let recent = ListKey::after_all_at(goal.now.minus(LOOKBACK));
            let mut behind: Vec<ShardReader> = starts
                .iter()
                .zip(0..QUEUE_SHARDS)
                .filter_map(|(start, shard)| {
                    let cursor = start.key.as_ref().filter(|cursor| **cursor > recent)?;
                    let to = cursor.min(&goal.upper).clone();
                    Some(ShardReader::behind(shard, recent.clone(), to))
                })
                .collect();
            if !behind.is_empty() {
                // Few entries, and behind the cursor: in key order.
                scan.preferred = None;
                scan.found.capped |= scan.read(&self.table, &self.state, &mut behind).await?;
                scan.found.claimable.sort_by_cached_key(ListKey::of);
                // A kept reader and the look-back may meet at the cursor's millisecond.
                scan.found.claimable.dedup_by_key(|task| task.id);
                scan.found.claimable.truncate(goal.want);
            }
        }
        let (entries, items) = scan.counted();
        self.reads.add(entries, items);
        let progress = readers.iter_mut().map(ShardReader::take_progress).collect();
        lock(&self.state).update_open(scan.opened, scan.closed);
        self.advance(goal.now, &starts, progress, scan.learned)
            .await;
        // A task the gate turned away is open now, read again once its type has room: a
        // kept reader may go on above it.
        if goal.read_ahead {
            let generations = lock(&self.state).generations();
            *lock(&self.ahead) = Some(ReadAhead::new(readers, since, generations));
        }
        Ok(scan.found)
    }

    /// Due tasks at `now`, from a scan that reads at most [`BACKLOG_READS`] items; past that,
    /// the remaining entries up to `now` are counted as due (an upper bound: in a real backlog
    /// most are, but a process whose cursor starts at the watermark also finds up to ten
    /// minutes of finished tasks there).
    pub async fn backlog(&self, now: Timestamp) -> Result<Backlog, StoreError> {
        let upper = ListKey::after_all_at(now);
        let goal = ScanGoal {
            upper: upper.clone(),
            due_by: now,
            now,
            want: usize::MAX,
            read_cap: BACKLOG_READS,
            read_ahead: false,
            entry_cap: usize::MAX,
            reread_leased: false,
            gate: ClaimGate::default(),
        };
        let found = Box::pin(self.scan(&goal)).await?;
        let due_tasks = found.claimable.iter().chain(&found.exhausted);
        let mut backlog = Backlog {
            due: u64::try_from(found.claimable.len() + found.exhausted.len()).unwrap_or(u64::MAX),
            oldest_due_at: due_tasks.filter_map(Task::due_at).min(),
        };
        for (shard, from) in found.unread {
            let range = KeyRange {
                queue: Queue::Due.shard(shard),
                lo: from,
                hi: Some(upper.clone()),
            };
            backlog.due += self.table.count(&range).await?;
        }
        Ok(backlog)
    }

    /// The unfinished tasks up to `now`, from a scan that reads at most `read_cap` items and
    /// takes at most `entry_cap` index entries; tasks remembered as running are read again,
    /// since they may have finished.
    pub async fn active(
        &self,
        now: Timestamp,
        read_cap: usize,
        entry_cap: usize,
    ) -> Result<Active, StoreError> {
        let goal = ScanGoal::look(now, read_cap, entry_cap);
        let found = Box::pin(self.scan(&goal)).await?;
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let due = found.claimable.iter().chain(&found.exhausted);
        let pending = found
            .claimable
            .iter()
            .filter(|task| task.status == TaskStatus::Pending)
            .count();
        Ok(Active {
            pending: count(pending),
            running: count(
                found.blocking + found.claimable.len() - pending + found.exhausted.len(),
            ),
            backlog: Backlog {
                due: count(found.claimable.len() + found.exhausted.len()),
                oldest_due_at: due.filter_map(Task::due_at).min(),
            },
            complete: !found.capped,
        })
    }

    /// Due and running tasks per type up to `now`, from a scan like [`DueQueue::active`]'s; a
    /// running task whose item the scan did not read (not readable yet) is not counted.
    pub async fn active_by_type(
        &self,
        now: Timestamp,
        read_cap: usize,
        entry_cap: usize,
    ) -> Result<TypeCounts, StoreError> {
        let goal = ScanGoal::look(now, read_cap, entry_cap);
        let found = Box::pin(self.scan(&goal)).await?;
        let mut counts = TypeCounts {
            by_type: std::collections::BTreeMap::new(),
            exact: !found.capped,
        };
        for task in found.claimable.iter().chain(&found.exhausted) {
            let entry: &mut TypeCount = counts.by_type.entry(task.task_type.clone()).or_default();
            entry.due += 1;
            if task.status == TaskStatus::Running {
                entry.running += 1;
            }
        }
        for name in found.running_types {
            counts.by_type.entry(name).or_default().running += 1;
        }
        Ok(counts)
    }

    /// This process wrote `task` (a create, a retry, an outcome): if it is pending, a scan
    /// that goes on from entries read ahead must not have passed its entry.
    pub fn entry_written(&self, task: &Task) {
        if task.status != TaskStatus::Pending {
            return;
        }
        if let Some(ahead) = lock(&self.ahead).as_mut() {
            ahead.entry_written(shard_of(task.id) as usize, &ListKey::of(task));
        }
    }

    /// After a round of claims, `lost` of which lost their condition to another processor.
    pub fn after_claim_round(&self, lost: usize, now: Timestamp) {
        lock(&self.state).after_claim_round(lost, now);
    }

    /// Remembers tasks this process just claimed, so scans skip them while their lease runs.
    pub fn remember_running(&self, tasks: &[Task]) {
        let leases = tasks.iter().filter_map(|task| {
            let open = Open {
                task_type: task.task_type.clone(),
                until: task.lease_expires_at?,
            };
            Some((ListKey::of(task), open))
        });
        lock(&self.state).update_open(leases, []);
    }

    /// A message for `task` is on its way, due by `until`: scans need not read its entry
    /// before then (SQS mode's mover).
    pub fn expect_delivery(&self, task: &Task, until: Timestamp) {
        let open = Open {
            task_type: task.task_type.clone(),
            until,
        };
        lock(&self.state).update_open([(ListKey::of(task), open)], []);
    }

    /// The open `entries` are due again from `now` (a concurrency key they were held for has
    /// room): scans read them again.
    pub fn due_again(&self, entries: Vec<ListKey>, now: Timestamp) {
        let mut state = lock(&self.state);
        for entry in entries {
            state.forget_running(entry, false, now);
        }
    }

    /// Records the end of an attempt this process claimed from the entry `key` at `now`;
    /// `finished` when the entry is finished, or left behind, for good.
    pub fn forget_running(&self, key: ListKey, finished: bool, now: Timestamp) {
        lock(&self.state).forget_running(key, finished, now);
    }

    /// Where a scan at `now` starts in each shard, reading the watermarks when a cursor
    /// falls back to them.
    async fn starts(&self, now: Timestamp) -> Result<Vec<Start>, StoreError> {
        let needs_marks = lock(&self.state).needs_watermarks(now);
        let marks = if needs_marks {
            Some(watermark::read_all(&self.table).await?)
        } else {
            None
        };
        Ok(lock(&self.state).starts(now, marks.as_deref()))
    }

    /// Moves the cursors the scan advanced and writes the watermarks that have enough old
    /// finished entries below the cursor.
    async fn advance(
        &self,
        now: Timestamp,
        starts: &[Start],
        progress: Vec<Progress>,
        learned: Vec<ListKey>,
    ) {
        let raises: Vec<(u32, Raise)> = {
            let mut state = lock(&self.state);
            state.remember_finished(learned);
            progress
                .into_iter()
                .zip(starts)
                .zip(0..QUEUE_SHARDS)
                .filter_map(|((progress, start), shard)| {
                    let key = state.advance(shard as usize, start, progress, now)?;
                    Some((shard, key))
                })
                .collect()
        };
        for (shard, Raise { key, open }) in raises {
            // Only an optimisation: a watermark left behind costs reads, never a task.
            if let Err(err) = watermark::raise(&self.table, shard, &key, &open, now).await {
                tracing::warn!(error = %Report(&err), shard, "could not raise the due-queue watermark");
            }
        }
    }
}

/// The state, even if a thread panicked while holding it (it stays consistent: every change
/// is made under one lock).
fn lock<T>(state: &Mutex<T>) -> MutexGuard<'_, T> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

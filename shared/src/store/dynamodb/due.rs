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

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::Select;

use super::item::{Item, Queue, from_item, get_s, s, watermark_key};
use super::schema::{self, QUEUE_SHARDS, names};
use super::{BATCH_GET_KEYS, DynamoStore, sdk_error, unless_condition_failed};
use crate::clock::Timestamp;
use crate::store::{ListKey, StoreError};
use crate::task::{Task, TaskId, TaskStatus};

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
/// How long a process keeps to its shard after a claim of its lost to another processor.
pub const CONTENTION_SPELL: Duration = Duration::from_secs(60);
/// How far behind its cursor a scan that comes up short looks again.
pub const LOOKBACK: Duration = Duration::from_secs(10);
/// Index entries read per query page of a scan, at most.
const PAGE_MAX: usize = 1000;

/// What a process knows about one shard of the due queue.
#[derive(Debug, Default)]
struct ShardCursor {
    /// Every entry at or below this key is finished (`None`: none known).
    key: Option<String>,
    /// When the cursor last fell back to the watermark.
    since: Option<Timestamp>,
    /// Bumped on every change, so a scan that started from an older cursor leaves it alone.
    generation: u64,
    /// Entries passed since then, oldest first, with whether each was [`MARGIN`] old when read.
    passed: VecDeque<(String, bool)>,
}

/// The due-queue knowledge of one process, shared by the store's clones.
#[derive(Debug)]
pub struct DueState {
    shards: Vec<ShardCursor>,
    /// While another processor claims from the same queue (a claim of ours lost its condition
    /// lately), the shard this process takes its batches from first, and until when.
    preferred: Option<(u32, Timestamp)>,
    /// Keys of due entries known to be finished or left: settled by this process, or read.
    finished: HashSet<String>,
    /// Keys of the tasks this process has claimed and not settled yet, with their lease
    /// expiry: until then a scan knows they are running without reading them.
    claimed: HashMap<String, Timestamp>,
}

impl DueState {
    /// Adds finished keys, starting afresh when the set is full (scans then read items again).
    fn remember(&mut self, keys: impl IntoIterator<Item = String>) {
        for key in keys {
            if self.finished.len() >= FINISHED_CAP {
                self.finished.clear();
            }
            self.finished.insert(key);
        }
    }
}

impl Default for DueState {
    fn default() -> Self {
        Self {
            shards: (0..QUEUE_SHARDS).map(|_| ShardCursor::default()).collect(),
            preferred: None,
            finished: HashSet::new(),
            claimed: HashMap::new(),
        }
    }
}

/// [`DueState`] behind the lock the store's clones share.
pub type SharedDueState = Arc<Mutex<DueState>>;

/// What one scan of the due queue looks for.
#[derive(Debug, Clone)]
pub struct ScanGoal {
    /// Entries up to this key, included.
    pub upper: String,
    /// Running tasks whose lease expired by then are due again.
    pub due_by: Timestamp,
    /// The scan's present: decides which entries are old enough for the watermark.
    pub now: Timestamp,
    /// Stop once this many due tasks are found.
    pub want: usize,
    /// Stop after reading this many items.
    pub read_cap: usize,
}

/// What a scan found.
#[derive(Debug, Default)]
pub struct ScanFound {
    /// Due tasks with attempts left, earliest entry first.
    pub claimable: Vec<Task>,
    /// Running tasks whose final attempt's lease expired.
    pub exhausted: Vec<Task>,
    /// Shards the scan left entries unread in, with the last key it read there.
    pub unread: Vec<(u32, Option<String>)>,
}

/// What one index entry says for a scan.
enum Entry {
    /// Finished or moved away: a cursor may pass it. `for_good` when no later read can say
    /// otherwise (a success is final; a failed or cancelled task can be retried, and a stale
    /// read may show it failed after an operator's retry made it due here again).
    Passable { for_good: bool },
    /// Due now.
    Claimable(Task),
    /// Running out of attempts with an expired lease.
    Exhausted(Task),
    /// Pending or running, not due: a cursor stops here.
    Blocking,
}

/// Reads one shard's entries in pages, oldest first.
struct ShardReader {
    shard: u32,
    queue: String,
    /// Entries above this key (the cursor the scan started from)...
    from: Option<String>,
    /// ...up to this one, included.
    to: String,
    buffer: VecDeque<(String, String)>,
    start: Option<Item>,
    more: bool,
    /// The last entry taken out of the buffer.
    last_taken: Option<String>,
    /// The cursor after this scan, and the entries it passed.
    cursor: Option<String>,
    passed: Vec<(String, bool)>,
    blocked: bool,
}

impl ShardReader {
    fn new(shard: u32, from: Option<String>, to: String) -> Self {
        Self {
            shard,
            queue: Queue::Due.shard(shard),
            cursor: from.clone(),
            from,
            to,
            buffer: VecDeque::new(),
            start: None,
            more: true,
            last_taken: None,
            passed: Vec::new(),
            blocked: false,
        }
    }
}

/// One scan in progress.
struct Scan<'a> {
    goal: &'a ScanGoal,
    /// The reader to take entries from first (see [`DynamoStore::note_claims`]).
    preferred: Option<usize>,
    /// Entries at or before this instant are [`MARGIN`] old.
    old_enough: Timestamp,
    found: ScanFound,
    /// Keys this scan read as finished, for [`DueState::finished`].
    learned: Vec<String>,
    /// Items read so far.
    reads: usize,
}

/// The key just above `key`: keys have a fixed width, so nothing else lies between them.
fn just_above(key: &str) -> String {
    format!("{key} ")
}

/// True when no key lies above `lo` and at or below `hi` (DynamoDB refuses such a range).
pub fn is_empty_range(lo: Option<&str>, hi: Option<&str>) -> bool {
    matches!((lo, hi), (Some(lo), Some(hi)) if just_above(lo).as_str() > hi)
}

impl DynamoStore {
    /// A query of `queue` over the keys above `lo` (excluded) up to `hi` (included).
    pub(super) fn range_query(
        &self,
        queue: &str,
        lo: Option<&str>,
        hi: Option<&str>,
    ) -> QueryFluentBuilder {
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(schema::QUEUE_INDEX)
            .expression_attribute_names(names::QUEUE, schema::QUEUE)
            .expression_attribute_values(":queue", s(queue));
        match (lo, hi) {
            (Some(lo), Some(hi)) => query
                .key_condition_expression(schema::KEY_QUEUE_BETWEEN)
                .expression_attribute_values(":lo", s(just_above(lo)))
                .expression_attribute_values(":hi", s(hi)),
            (Some(lo), None) => query
                .key_condition_expression(schema::KEY_QUEUE_FROM)
                .expression_attribute_values(":lo", s(just_above(lo))),
            (None, Some(hi)) => query
                .key_condition_expression(schema::KEY_QUEUE_UP_TO)
                .expression_attribute_values(":until", s(hi)),
            (None, None) => query.key_condition_expression(schema::KEY_QUEUE),
        }
    }

    /// One page of up to `limit` entries `(key, id)` of `queue` above `lo` up to `hi`, oldest
    /// first, from `start`; and where the next page starts, if any.
    pub(super) async fn entries_page(
        &self,
        queue: &str,
        lo: Option<&str>,
        hi: Option<&str>,
        limit: usize,
        start: Option<Item>,
    ) -> Result<(Vec<(String, TaskId)>, Option<Item>), StoreError> {
        let output = self
            .range_query(queue, lo, hi)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(sdk_error)?;
        let entries = output
            .items
            .unwrap_or_default()
            .iter()
            .filter_map(|item| {
                let key = get_s(item, schema::QUEUE_AT)?.to_owned();
                Some((key, get_s(item, schema::ID)?.parse().ok()?))
            })
            .collect();
        Ok((entries, output.last_evaluated_key))
    }

    /// The number of entries of `queue` above `lo` up to `hi` (`Select=COUNT`, index keys only).
    pub(super) async fn count_range(
        &self,
        queue: &str,
        lo: Option<&str>,
        hi: Option<&str>,
    ) -> Result<u64, StoreError> {
        if is_empty_range(lo, hi) {
            return Ok(0);
        }
        let mut count = 0;
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .range_query(queue, lo, hi)
                .select(Select::Count)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(sdk_error)?;
            count += u64::try_from(output.count).unwrap_or_default();
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(count);
            }
        }
    }

    /// The watermark of every shard as the table has it.
    pub(super) async fn watermarks(&self) -> Result<Vec<Option<String>>, StoreError> {
        let keys: Vec<String> = (0..QUEUE_SHARDS).map(watermark_key).collect();
        let items = self.batch_get_items(&keys, false).await?;
        Ok((0..QUEUE_SHARDS)
            .map(|shard| {
                let key = watermark_key(shard);
                items
                    .iter()
                    .find(|item| get_s(item, schema::ID) == Some(key.as_str()))
                    .and_then(|item| get_s(item, schema::UP_TO))
                    .map(str::to_owned)
            })
            .collect())
    }

    /// Raises the watermark of `shard` to `key`, unless it is already as high.
    async fn raise_watermark(
        &self,
        shard: u32,
        key: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(schema::ID, s(watermark_key(shard)))
            .update_expression(schema::UPDATE_WATERMARK)
            .condition_expression(schema::COND_WATERMARK_RISES)
            .expression_attribute_values(":up_to", s(key))
            .expression_attribute_values(":now", s(now.to_text()))
            .send()
            .await;
        // A failed condition: another process raised it further already.
        unless_condition_failed(result).map(|_| ())
    }

    /// Records how a round of claims went: when some lost their condition to another
    /// processor, this process moves to a shard picked at random and takes its batches from
    /// there first for [`CONTENTION_SPELL`], so racing processors mostly claim apart (each is
    /// then earliest first within its shard rather than across all four).
    pub(super) fn note_claims(&self, lost: usize, now: Timestamp) {
        let mut state = self.due.lock().unwrap_or_else(|p| p.into_inner());
        if lost > 0 {
            let shard = rand::random_range(0..QUEUE_SHARDS);
            state.preferred = Some((shard, now.plus(CONTENTION_SPELL)));
        } else if state.preferred.is_some_and(|(_, until)| until <= now) {
            state.preferred = None;
        }
    }

    /// Remembers the tasks this process just claimed, so scans skip them while their lease runs.
    pub(super) fn note_claimed(&self, tasks: &[Task]) {
        let mut state = self.due.lock().unwrap_or_else(|p| p.into_inner());
        if state.claimed.len() >= FINISHED_CAP {
            state.claimed.clear();
        }
        for task in tasks {
            if let Some(lease) = task.lease_expires_at {
                state.claimed.insert(ListKey::of(task).0, lease);
            }
        }
    }

    /// Records the end of an attempt this process claimed from the entry `key`: when
    /// `finished`, the entry is finished or left behind for good, so scans pass it unread.
    pub(super) fn note_settled(&self, key: ListKey, finished: bool) {
        let mut state = self.due.lock().unwrap_or_else(|p| p.into_inner());
        state.claimed.remove(&key.0);
        if finished {
            state.remember([key.0]);
        }
    }

    /// Each shard's cursor and its generation, fallen back to the table's watermark where the
    /// last fallback is [`RESCAN`] old.
    async fn cursors(&self, now: Timestamp) -> Result<Vec<(Option<String>, u64)>, StoreError> {
        let stale = |cursor: &ShardCursor| {
            cursor
                .since
                .is_none_or(|since| now < since || now.since(since) >= RESCAN)
        };
        let needs_marks = {
            let state = self.due.lock().unwrap_or_else(|p| p.into_inner());
            state.shards.iter().any(stale)
        };
        let marks = if needs_marks {
            Some(self.watermarks().await?)
        } else {
            None
        };
        let mut state = self.due.lock().unwrap_or_else(|p| p.into_inner());
        Ok(state
            .shards
            .iter_mut()
            .enumerate()
            .map(|(shard, cursor)| {
                if let Some(marks) = marks.as_ref().filter(|_| stale(cursor)) {
                    cursor.key = marks.get(shard).cloned().flatten();
                    cursor.since = Some(now);
                    cursor.passed.clear();
                    cursor.generation += 1;
                }
                (cursor.key.clone(), cursor.generation)
            })
            .collect())
    }

    /// Reads the due queue from each shard's cursor up to `goal.upper`, earliest entry first
    /// across shards, until it has found `goal.want` due tasks or read `goal.read_cap` items.
    /// Items are read with eventually consistent `BatchGetItem`s: a stale read can only make a
    /// claim fail its condition or stop a cursor early, since a task never leaves `succeeded`.
    /// Cursors move past what the scan read as finished; watermarks follow in batches. When the
    /// cursors' side comes up short, the last [`LOOKBACK`] behind them is read too, for entries
    /// that landed after the cursor passed their place (a create takes a moment to land).
    pub(super) async fn scan_due(&self, goal: &ScanGoal) -> Result<ScanFound, StoreError> {
        let starts = self.cursors(goal.now).await?;
        let mut readers: Vec<ShardReader> = starts
            .iter()
            .zip(0..QUEUE_SHARDS)
            .map(|((key, _), shard)| ShardReader::new(shard, key.clone(), goal.upper.clone()))
            .collect();
        let preferred = {
            let state = self.due.lock().unwrap_or_else(|p| p.into_inner());
            state
                .preferred
                .filter(|(_, until)| goal.now < *until)
                .map(|(shard, _)| shard as usize)
        };
        let mut scan = Scan {
            goal,
            preferred,
            old_enough: goal.now.minus(MARGIN),
            found: ScanFound::default(),
            learned: Vec::new(),
            reads: 0,
        };
        let capped = self.read_merged(&mut readers, &mut scan).await?;
        if capped {
            scan.found.unread = readers
                .iter()
                .filter(|reader| !reader.buffer.is_empty() || reader.more)
                .map(|reader| {
                    (
                        reader.shard,
                        reader.last_taken.clone().or_else(|| reader.from.clone()),
                    )
                })
                .collect();
        } else if scan.found.claimable.len() < goal.want {
            let recent = ListKey::after_all_at(goal.now.minus(LOOKBACK)).0;
            let mut behind: Vec<ShardReader> = starts
                .iter()
                .zip(0..QUEUE_SHARDS)
                .filter_map(|((cursor, _), shard)| {
                    let cursor = cursor.as_ref().filter(|cursor| **cursor > recent)?;
                    let to = cursor.min(&goal.upper).clone();
                    let mut reader = ShardReader::new(shard, Some(recent.clone()), to);
                    // Behind the cursor: nothing read here moves it.
                    reader.blocked = true;
                    Some(reader)
                })
                .collect();
            if !behind.is_empty() {
                // Few entries, and behind the cursor: in key order.
                scan.preferred = None;
                self.read_merged(&mut behind, &mut scan).await?;
                scan.found.claimable.sort_by_cached_key(ListKey::of);
                scan.found.claimable.truncate(goal.want);
            }
        }
        let Scan { found, learned, .. } = scan;
        self.advance(goal.now, &starts, readers, learned).await;
        Ok(found)
    }

    /// Reads the entries of `readers` in key order across them, classifying each, until the
    /// scan has what it wants or the entries run out; true when it stopped on its read cap.
    async fn read_merged(
        &self,
        readers: &mut [ShardReader],
        scan: &mut Scan<'_>,
    ) -> Result<bool, StoreError> {
        let goal = scan.goal;
        let page = goal.want.saturating_add(8).clamp(16, PAGE_MAX);
        loop {
            let refills = readers
                .iter_mut()
                .filter(|reader| reader.buffer.is_empty() && reader.more)
                .map(|reader| self.refill(reader, page));
            futures::future::try_join_all(refills).await?;
            if readers.iter().all(|reader| reader.buffer.is_empty()) {
                return Ok(false);
            }

            // The next entries in key order across shards, as many as still make sense to read.
            let need = goal
                .want
                .saturating_sub(scan.found.claimable.len())
                .clamp(1, BATCH_GET_KEYS);
            let mut chunk: Vec<(usize, String, String, Known)> = Vec::new();
            let mut unknown = 0;
            {
                let state = self.due.lock().unwrap_or_else(|p| p.into_inner());
                while unknown < need {
                    let first = scan
                        .preferred
                        .and_then(|i| readers.get(i).map(|reader| (i, reader)))
                        .filter(|(_, reader)| !reader.buffer.is_empty() || reader.more);
                    let next = match first {
                        Some((i, reader)) if !reader.buffer.is_empty() => Some(i),
                        // The preferred shard needs its next page first.
                        Some(_) => break,
                        // A shard with more entries but none buffered may hold the next one.
                        None if readers
                            .iter()
                            .any(|reader| reader.buffer.is_empty() && reader.more) =>
                        {
                            break;
                        }
                        None => readers
                            .iter()
                            .enumerate()
                            .filter_map(|(i, reader)| {
                                reader.buffer.front().map(|(key, _)| (key, i))
                            })
                            .min()
                            .map(|(_, i)| i),
                    };
                    let Some(i) = next else { break };
                    let Some((key, id)) = readers[i].buffer.pop_front() else {
                        break;
                    };
                    readers[i].last_taken = Some(key.clone());
                    let known = if state.finished.contains(&key) {
                        Known::Finished
                    } else if state
                        .claimed
                        .get(&key)
                        .is_some_and(|lease| *lease > goal.due_by)
                    {
                        Known::Running
                    } else {
                        unknown += 1;
                        Known::Unknown
                    };
                    chunk.push((i, key, id, known));
                }
            }
            let ids: Vec<String> = chunk
                .iter()
                .filter(|(_, _, _, known)| *known == Known::Unknown)
                .map(|(_, _, id, _)| id.clone())
                .collect();
            // One item this version cannot read must not stop every claim: its entry blocks
            // its shard's cursor (and so the watermark) instead.
            let mut tasks: HashMap<String, Option<Task>> = HashMap::with_capacity(ids.len());
            for item in self.batch_get_items(&ids, false).await? {
                let id = get_s(&item, schema::ID).unwrap_or_default().to_owned();
                match from_item(item) {
                    Ok(task) => tasks.insert(id, Some(task)),
                    Err(err) => {
                        tracing::warn!(error = %err, task_id = %id, "skipping an unreadable task");
                        tasks.insert(id, None)
                    }
                };
            }
            scan.reads += ids.len();
            for (i, key, id, known) in chunk {
                let entry = match (known, tasks.get(&id)) {
                    (Known::Finished, _) => Entry::Passable { for_good: true },
                    (Known::Running, _) | (Known::Unknown, Some(None)) => Entry::Blocking,
                    (Known::Unknown, Some(Some(task))) => {
                        classify(&key, Some(task.clone()), goal, scan.old_enough)
                    }
                    (Known::Unknown, None) => classify(&key, None, goal, scan.old_enough),
                };
                let known = known == Known::Finished;
                let reader = &mut readers[i];
                match entry {
                    Entry::Passable { for_good } => {
                        if !known && for_good {
                            scan.learned.push(key.clone());
                        }
                        if !reader.blocked {
                            let eligible = ListKey(key.clone())
                                .instant()
                                .is_some_and(|at| at <= scan.old_enough);
                            reader.cursor = Some(key.clone());
                            reader.passed.push((key, eligible));
                        }
                    }
                    Entry::Claimable(task) => {
                        reader.blocked = true;
                        scan.found.claimable.push(task);
                    }
                    Entry::Exhausted(task) => {
                        reader.blocked = true;
                        scan.found.exhausted.push(task);
                    }
                    Entry::Blocking => reader.blocked = true,
                }
            }
            if scan.found.claimable.len() >= goal.want {
                return Ok(false);
            }
            if scan.reads >= goal.read_cap {
                return Ok(true);
            }
        }
    }

    /// Reads the next page of `reader`'s shard.
    async fn refill(&self, reader: &mut ShardReader, page: usize) -> Result<(), StoreError> {
        if is_empty_range(reader.from.as_deref(), Some(&reader.to)) {
            reader.more = false;
            return Ok(());
        }
        let output = self
            .range_query(&reader.queue, reader.from.as_deref(), Some(&reader.to))
            .limit(i32::try_from(page).unwrap_or(i32::MAX))
            .set_exclusive_start_key(reader.start.take())
            .send()
            .await
            .map_err(sdk_error)?;
        for item in output.items.unwrap_or_default() {
            if let (Some(key), Some(id)) =
                (get_s(&item, schema::QUEUE_AT), get_s(&item, schema::ID))
            {
                reader.buffer.push_back((key.to_owned(), id.to_owned()));
            }
        }
        reader.start = output.last_evaluated_key;
        reader.more = reader.start.is_some();
        Ok(())
    }

    /// Moves the cursors the scan advanced (unless another scan moved them first) and writes
    /// the watermarks that have enough old finished entries below the cursor.
    async fn advance(
        &self,
        now: Timestamp,
        starts: &[(Option<String>, u64)],
        readers: Vec<ShardReader>,
        learned: Vec<String>,
    ) {
        let mut raises = Vec::new();
        {
            let mut state = self.due.lock().unwrap_or_else(|p| p.into_inner());
            state.remember(learned);
            for (reader, (_, generation)) in readers.into_iter().zip(starts) {
                let Some(cursor) = state.shards.get_mut(reader.shard as usize) else {
                    continue;
                };
                if cursor.generation == *generation && !reader.passed.is_empty() {
                    cursor.key = reader.cursor;
                    cursor.passed.extend(reader.passed);
                    cursor.generation += 1;
                }
                let ready = cursor
                    .passed
                    .iter()
                    .take_while(|(_, eligible)| *eligible)
                    .count();
                let waited = cursor
                    .passed
                    .front()
                    .and_then(|(key, _)| ListKey(key.clone()).instant())
                    .is_some_and(|at| now.since(at) >= WATERMARK_MAX_LAG);
                if ready >= WATERMARK_BATCH || (ready > 0 && waited) {
                    let up_to = cursor.passed.drain(..ready).next_back().map(|(key, _)| key);
                    raises.extend(up_to.map(|key| (reader.shard, key)));
                }
            }
        }
        for (shard, key) in raises {
            // Only an optimisation: a watermark left behind costs reads, never a task.
            if let Err(err) = self.raise_watermark(shard, &key, now).await {
                tracing::warn!(error = %err, shard, "could not raise the due-queue watermark");
            }
        }
    }
}

/// What this process knows of an entry before reading its item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    /// Finished or left for good.
    Finished,
    /// Claimed by this process, its lease still running.
    Running,
    /// Nothing: the item must be read.
    Unknown,
}

/// What the entry `key` means, given the item read for it (`None` when it is gone).
fn classify(key: &str, task: Option<Task>, goal: &ScanGoal, old_enough: Timestamp) -> Entry {
    let Some(task) = task else {
        // Deleted, or created a moment ago and not readable yet: only an old entry is gone.
        let old = ListKey(key.to_owned())
            .instant()
            .is_some_and(|at| at <= old_enough);
        return if old {
            Entry::Passable { for_good: true }
        } else {
            Entry::Blocking
        };
    };
    let current = ListKey::of(&task);
    if current.as_str() != key {
        // The index still shows where the task was: it has moved on (a retry, a failure, a
        // cancel) and is read at its new entry. Not for good: the read may be stale and this
        // the new entry (a cancelled task scheduled for tomorrow, retried today, moves down).
        return if Queue::of(task.status) != Queue::Due || current.as_str() > key {
            Entry::Passable { for_good: false }
        } else {
            Entry::Blocking
        };
    }
    let attempts_left = task.attempts < task.max_attempts;
    match task.status {
        TaskStatus::Succeeded => Entry::Passable { for_good: true },
        TaskStatus::Failed | TaskStatus::Cancelled => Entry::Passable { for_good: false },
        TaskStatus::Pending if attempts_left => Entry::Claimable(task),
        TaskStatus::Pending => Entry::Blocking,
        TaskStatus::Running => {
            let expired = task
                .lease_expires_at
                .is_some_and(|lease| lease <= goal.due_by);
            match (expired, attempts_left) {
                (true, true) => Entry::Claimable(task),
                (true, false) => Entry::Exhausted(task),
                (false, _) => Entry::Blocking,
            }
        }
    }
}

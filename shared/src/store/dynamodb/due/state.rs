//! What one process knows of the due queue: a cursor per shard, the entries it knows are
//! finished, its own running claims, and where to claim from while it races another
//! processor. Pure bookkeeping, no I/O.

use std::collections::{HashMap, HashSet, VecDeque};

use super::{CONTENTION_SPELL, FINISHED_CAP, RESCAN, WATERMARK_BATCH, WATERMARK_MAX_LAG};
use crate::clock::Timestamp;
use crate::store::dynamodb::schema::QUEUE_SHARDS;
use crate::store::{ClaimGate, ListKey};

/// What a process knows about one shard of the due queue.
#[derive(Debug, Default)]
struct ShardCursor {
    /// Every entry at or below this key is finished (`None`: none known).
    key: Option<ListKey>,
    /// When the cursor last fell back to the watermark.
    since: Option<Timestamp>,
    /// Bumped on every change, so a scan that started from an older cursor leaves it alone.
    generation: u64,
    /// Entries passed since then, oldest first, with whether each was old enough for a
    /// watermark when read.
    passed: VecDeque<(ListKey, bool)>,
}

impl ShardCursor {
    /// True when the cursor should fall back to the watermark: never set, set in the future
    /// (a clock that went back), or [`RESCAN`] old.
    fn stale(&self, now: Timestamp) -> bool {
        self.since
            .is_none_or(|since| now < since || now.since(since) >= RESCAN)
    }
}

/// Where a scan starts in one shard: the cursor, and its generation then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// Entries above this key are read.
    pub key: Option<ListKey>,
    /// The cursor's generation when the scan started.
    pub generation: u64,
}

/// How far a scan moved one shard's cursor.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// The new cursor, if the scan passed any entry.
    pub cursor: Option<ListKey>,
    /// The entries passed, with whether each was old enough for a watermark.
    pub passed: Vec<(ListKey, bool)>,
}

/// What this process knows of an entry before reading its item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Finished or left for good.
    Finished,
    /// Claimed by this process, its lease still running.
    Running,
    /// Due, but of a type that is paused: held until it is resumed.
    Held,
    /// Nothing: the item must be read.
    Unknown,
}

/// The due-queue knowledge of one process, shared by the store's clones.
#[derive(Debug)]
pub struct DueState {
    shards: Vec<ShardCursor>,
    /// While another processor claims from the same queue (a claim of ours lost its condition
    /// lately), the shard this process takes its batches from first, and until when.
    preferred: Option<(u32, Timestamp)>,
    /// Keys of due entries known to be finished or left: settled by this process, or read.
    finished: HashSet<ListKey>,
    /// Keys of running tasks (claimed by this process and not settled yet, or read as running
    /// under another's lease), with their lease expiry: until then a scan knows they are
    /// running without reading them.
    running: HashMap<ListKey, Timestamp>,
    /// Keys of due tasks read while their type was paused, with the type: a scan passes them
    /// unread while the type stays paused.
    held: HashMap<ListKey, String>,
}

impl Default for DueState {
    fn default() -> Self {
        Self {
            shards: (0..QUEUE_SHARDS).map(|_| ShardCursor::default()).collect(),
            preferred: None,
            finished: HashSet::new(),
            running: HashMap::new(),
            held: HashMap::new(),
        }
    }
}

impl DueState {
    /// True when some cursor must fall back to the watermarks, which must be read first.
    pub fn needs_watermarks(&self, now: Timestamp) -> bool {
        self.shards.iter().any(|cursor| cursor.stale(now))
    }

    /// Where a scan at `now` starts in each shard; stale cursors fall back to `marks`.
    pub fn starts(&mut self, now: Timestamp, marks: Option<&[Option<ListKey>]>) -> Vec<Start> {
        self.shards
            .iter_mut()
            .enumerate()
            .map(|(shard, cursor)| {
                if let Some(marks) = marks.filter(|_| cursor.stale(now)) {
                    cursor.key = marks.get(shard).cloned().flatten();
                    cursor.since = Some(now);
                    cursor.passed.clear();
                    cursor.generation += 1;
                }
                Start {
                    key: cursor.key.clone(),
                    generation: cursor.generation,
                }
            })
            .collect()
    }

    /// True when a running task this process knows of, with its entry above `lo` up to `hi`,
    /// has a lease expired by `due_by`: a scan that skips those entries would miss it.
    pub fn lease_expired_within(
        &self,
        lo: Option<&ListKey>,
        hi: &ListKey,
        due_by: Timestamp,
    ) -> bool {
        self.running
            .iter()
            .any(|(key, lease)| *lease <= due_by && key <= hi && lo.is_none_or(|lo| key > lo))
    }

    /// Each shard's cursor generation now.
    pub fn generations(&self) -> Vec<u64> {
        self.shards.iter().map(|cursor| cursor.generation).collect()
    }

    /// The shard to take entries from first at `now`, while contention lasts.
    pub fn preferred_shard(&self, now: Timestamp) -> Option<usize> {
        self.preferred
            .filter(|(_, until)| now < *until)
            .map(|(shard, _)| shard as usize)
    }

    /// What is known of the entry `key` for a scan due by `due_by` through `gate`.
    pub fn known(&self, key: &ListKey, due_by: Timestamp, gate: &ClaimGate) -> Known {
        if self.finished.contains(key) {
            Known::Finished
        } else if self.running.get(key).is_some_and(|lease| *lease > due_by) {
            Known::Running
        } else if self
            .held
            .get(key)
            .is_some_and(|task_type| gate.is_paused(task_type))
        {
            Known::Held
        } else {
            Known::Unknown
        }
    }

    /// After a round of claims: when `lost` of them lost their condition to another
    /// processor, this process moves to a shard picked at random and takes its batches from
    /// there first for [`CONTENTION_SPELL`], so racing processors mostly claim apart (each is
    /// then earliest first within its shard rather than across all four).
    pub fn after_claim_round(&mut self, lost: usize, now: Timestamp) {
        if lost > 0 {
            let shard = rand::random_range(0..QUEUE_SHARDS);
            self.preferred = Some((shard, now.plus(CONTENTION_SPELL)));
        } else if self.preferred.is_some_and(|(_, until)| until <= now) {
            self.preferred = None;
        }
    }

    /// Remembers the entries of running tasks with their lease's expiry, so scans skip them
    /// while the lease runs: this process's own claims, and tasks a scan read as running under
    /// another processor's lease. (If that processor gives a task back unstarted at the end of
    /// its run, this process claims it once the lease expires: within the run's margin and
    /// lease grace, under a minute.)
    pub fn remember_leases(&mut self, leases: impl IntoIterator<Item = (ListKey, Timestamp)>) {
        for (key, lease) in leases {
            if self.running.len() >= FINISHED_CAP {
                self.running.clear();
            }
            self.running.insert(key, lease);
        }
    }

    /// Remembers entries of due tasks whose type is paused, with their type.
    pub fn remember_held(&mut self, held: impl IntoIterator<Item = (ListKey, String)>) {
        for (key, task_type) in held {
            if self.held.len() >= FINISHED_CAP {
                self.held.clear();
            }
            self.held.insert(key, task_type);
        }
    }

    /// Records the end of an attempt this process claimed from the entry `key`: when
    /// `finished`, the entry is finished or left behind for good, so scans pass it unread.
    pub fn forget_running(&mut self, key: ListKey, finished: bool) {
        self.running.remove(&key);
        if finished {
            self.remember_finished([key]);
        }
    }

    /// Adds finished keys, starting afresh when the set is full (scans then read items again).
    pub fn remember_finished(&mut self, keys: impl IntoIterator<Item = ListKey>) {
        for key in keys {
            if self.finished.len() >= FINISHED_CAP {
                self.finished.clear();
            }
            self.finished.insert(key);
        }
    }

    /// Moves the cursor of `shard` as a scan that started at `start` progressed (unless
    /// another scan moved it first), and answers the key to raise the watermark to, when
    /// enough old finished entries lie below the cursor.
    pub fn advance(
        &mut self,
        shard: usize,
        start: &Start,
        progress: Progress,
        now: Timestamp,
    ) -> Option<ListKey> {
        let cursor = self.shards.get_mut(shard)?;
        if cursor.generation == start.generation && !progress.passed.is_empty() {
            cursor.key = progress.cursor;
            cursor.passed.extend(progress.passed);
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
            .and_then(|(key, _)| key.instant())
            .is_some_and(|at| now.since(at) >= WATERMARK_MAX_LAG);
        if ready >= WATERMARK_BATCH || (ready > 0 && waited) {
            cursor.passed.drain(..ready).next_back().map(|(key, _)| key)
        } else {
            None
        }
    }
}

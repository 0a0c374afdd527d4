//! What one process knows of the due queue: a cursor per shard, the entries it knows are
//! finished, the open entries its cursors passed (with when to look at each again), and where
//! to claim from while it races another processor. Pure bookkeeping, no I/O.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use super::{CONTENTION_SPELL, FINISHED_CAP, OPEN_CAP, RESCAN, WATERMARK_BATCH, WATERMARK_MAX_LAG};
use crate::clock::Timestamp;
use crate::store::dynamodb::item::shard_of;
use crate::store::dynamodb::schema::QUEUE_SHARDS;
use crate::store::dynamodb::table::Entry;
use crate::store::dynamodb::watermark::{Mark, OPEN_LISTED};
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

/// A watermark to write: its key and the open entries at or below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raise {
    /// The new watermark.
    pub key: ListKey,
    /// The open entries it lists.
    pub open: Vec<(ListKey, Open)>,
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
    /// Open and tracked: a scan looks at it again from [`DueState::open_due`], when it waits
    /// for nothing any more, so a cursor passes it unread.
    Open,
    /// Nothing: the item must be read.
    Unknown,
}

/// An entry that is not finished but that the cursors may pass: what it waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The task's type: a claim looks at the entry again only when its gate admits the type
    /// (a paused type's tasks wait for the resume, a capped type's for room).
    pub task_type: String,
    /// And not before this instant: a lease's expiry, a message's delivery, or the instant
    /// the entry was read at for a task that was due then.
    pub until: Timestamp,
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
    /// Entries known to be open (running under a lease, this process's or another's; due but
    /// of a type the gate closed; on their way as a message), with what each waits for. A
    /// cursor passes them: they leave the scan path and come back when they may be claimable.
    open: BTreeMap<ListKey, Open>,
}

impl Default for DueState {
    fn default() -> Self {
        Self {
            shards: (0..QUEUE_SHARDS).map(|_| ShardCursor::default()).collect(),
            preferred: None,
            finished: HashSet::new(),
            open: BTreeMap::new(),
        }
    }
}

impl DueState {
    /// True when some cursor must fall back to the watermarks, which must be read first.
    pub fn needs_watermarks(&self, now: Timestamp) -> bool {
        self.shards.iter().any(|cursor| cursor.stale(now))
    }

    /// Where a scan at `now` starts in each shard; stale cursors fall back to `marks`, and
    /// the open entries the marks list are tracked from then on (a cursor starts below one
    /// there is no room to track: it reads it again).
    pub fn starts(&mut self, now: Timestamp, marks: Option<&[Option<Mark>]>) -> Vec<Start> {
        for shard in 0..self.shards.len() {
            let Some(marks) = marks.filter(|_| self.shards[shard].stale(now)) else {
                continue;
            };
            let mark = marks.get(shard).cloned().flatten();
            let mut key = mark.as_ref().map(|mark| mark.up_to.clone());
            for (listed, open) in mark.into_iter().flat_map(|mark| mark.open) {
                if self.finished.contains(&listed) || self.open.contains_key(&listed) {
                    continue;
                }
                if self.open.len() < OPEN_CAP {
                    self.open.insert(listed, open);
                } else if let Some(at) = listed.instant() {
                    let below = ListKey::after_all_at(at.minus(Duration::from_millis(1)));
                    key = key.map(|key| key.min(below));
                }
            }
            let cursor = &mut self.shards[shard];
            cursor.key = key;
            cursor.since = Some(now);
            cursor.passed.clear();
            cursor.generation += 1;
        }
        self.shards
            .iter()
            .map(|cursor| Start {
                key: cursor.key.clone(),
                generation: cursor.generation,
            })
            .collect()
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

    /// What is known of the entry `key`.
    pub fn known(&self, key: &ListKey) -> Known {
        if self.finished.contains(key) {
            Known::Finished
        } else if self.open.contains_key(key) {
            Known::Open
        } else {
            Known::Unknown
        }
    }

    /// Room for more open entries: past [`OPEN_CAP`] a cursor stops at an open entry again.
    pub fn open_room(&self) -> usize {
        OPEN_CAP.saturating_sub(self.open.len())
    }

    /// The open entries up to `upper` a scan due by `due_by` through `gate` should read
    /// again, earliest first: those whose wait is over and whose type the gate admits, at most
    /// the gate's room of a capped type (the gate hears of any left for want of room) and
    /// `want` in all; with `every`, all of them (a look that counts).
    pub fn open_due(
        &self,
        upper: &ListKey,
        due_by: Timestamp,
        gate: &ClaimGate,
        want: usize,
        every: bool,
    ) -> Vec<Entry> {
        let mut taken: BTreeMap<&str, usize> = BTreeMap::new();
        let mut due = Vec::new();
        for (key, open) in self.open.range(..=upper.clone()) {
            if !every {
                if due.len() >= want {
                    break;
                }
                let room = gate.room(&open.task_type).unwrap_or(usize::MAX);
                let count = taken.entry(open.task_type.as_str()).or_default();
                if open.until > due_by || !gate.admits(&open.task_type) {
                    continue;
                }
                if *count >= room {
                    gate.turn_away();
                    continue;
                }
                *count += 1;
            }
            if let Some(id) = key.task_id() {
                due.push(Entry {
                    key: key.clone(),
                    id,
                });
            }
        }
        due
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

    /// Records open entries with what each waits for (replacing what was known of them), and
    /// forgets `closed` ones, read as finished or moved on.
    pub fn update_open(
        &mut self,
        opened: impl IntoIterator<Item = (ListKey, Open)>,
        closed: impl IntoIterator<Item = ListKey>,
    ) {
        for key in closed {
            self.open.remove(&key);
        }
        for (key, open) in opened {
            if self.open.len() < OPEN_CAP || self.open.contains_key(&key) {
                self.open.insert(key, open);
            }
        }
    }

    /// Records the end of an attempt this process claimed from the entry `key`: when
    /// `finished`, the entry is finished or left behind for good, so scans pass it unread;
    /// otherwise the task is due again there (given back), from `now`.
    pub fn forget_running(&mut self, key: ListKey, finished: bool, now: Timestamp) {
        if finished {
            self.open.remove(&key);
            self.remember_finished([key]);
        } else if let Some(open) = self.open.get_mut(&key) {
            open.until = now;
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
    /// another scan moved it first), and answers the key to raise the watermark to, with the
    /// open entries at or below it, when enough old entries lie below the cursor and no more
    /// than [`OPEN_LISTED`] of them are open.
    pub fn advance(
        &mut self,
        shard: usize,
        start: &Start,
        progress: Progress,
        now: Timestamp,
    ) -> Option<Raise> {
        let in_shard = |key: &ListKey| key.task_id().map(shard_of) == u32::try_from(shard).ok();
        let open = &self.open;
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
        if !(ready >= WATERMARK_BATCH || (ready > 0 && waited)) {
            return None;
        }
        // Not past the first open entry a watermark item has no room to list.
        let unlisted = open.keys().filter(|key| in_shard(key)).nth(OPEN_LISTED);
        let ready = match unlisted {
            Some(unlisted) => cursor
                .passed
                .iter()
                .take(ready)
                .take_while(|(key, _)| key < unlisted)
                .count(),
            None => ready,
        };
        let key = cursor.passed.drain(..ready).next_back()?.0;
        let open = open
            .range(..=key.clone())
            .filter(|(open, _)| in_shard(open))
            .map(|(key, open)| (key.clone(), open.clone()))
            .collect();
        Some(Raise { key, open })
    }
}

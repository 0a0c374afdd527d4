//! One scan of the due queue: reads the shards' entries in key order from their cursors,
//! classifies each by its item, and stops once it has what it looks for.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::state::{DueState, Known, Progress};
use super::{PAGE_MAX, PAGE_MIN, ScanFound, ScanGoal, lock};
use crate::clock::Timestamp;
use crate::store::dynamodb::item::{Item, Queue, from_item, item_id};
use crate::store::dynamodb::table::{BATCH_GET_KEYS, Entry, KeyRange, Table};
use crate::store::{ClaimGate, ListKey, StoreError};
use crate::task::{Task, TaskId, TaskStatus};

/// Reads one shard's entries in pages, oldest first.
#[derive(Debug)]
pub struct ShardReader {
    /// The shard.
    pub shard: u32,
    /// Entries above the cursor the scan started from, up to its upper key.
    range: KeyRange,
    buffer: VecDeque<Entry>,
    start: Option<Item>,
    more: bool,
    /// The last entry taken out of the buffer.
    last_taken: Option<ListKey>,
    /// The last entry a query returned.
    last_read: Option<ListKey>,
    /// How far the scan moved this shard's cursor.
    pub progress: Progress,
    /// The cursor stops here: an entry that is not finished was met (or this reader reads
    /// behind the cursor, where nothing moves it).
    blocked: bool,
}

impl ShardReader {
    /// A reader of `shard` above `from` up to `to`.
    pub fn new(shard: u32, from: Option<ListKey>, to: ListKey) -> Self {
        Self {
            shard,
            range: KeyRange {
                queue: Queue::Due.shard(shard),
                lo: from,
                hi: Some(to),
            },
            buffer: VecDeque::new(),
            start: None,
            more: true,
            last_taken: None,
            last_read: None,
            progress: Progress::default(),
            blocked: false,
        }
    }

    /// A reader behind the cursor: what it reads never moves the cursor.
    pub fn behind(shard: u32, from: ListKey, to: ListKey) -> Self {
        let mut reader = Self::new(shard, Some(from), to);
        reader.blocked = true;
        reader
    }

    /// This reader, kept from an earlier scan, going on up to `to`: its buffered entries
    /// first, then what lies above the last entry it read (from that entry's millisecond on
    /// when nothing is buffered: an entry created in the same millisecond may sort before
    /// it). It never moves the cursor: the entries it skips (those the earlier scan took) may
    /// not be finished.
    /// Never below `floor`, the cursor: what lies behind it is the look-back's to read.
    pub fn resume(self, to: ListKey, floor: Option<&ListKey>) -> Self {
        let lo = match &self.last_read {
            Some(last) if self.buffer.is_empty() => last
                .instant()
                .map(|at| ListKey::after_all_at(at.minus(std::time::Duration::from_millis(1))))
                .or_else(|| Some(last.clone())),
            Some(last) => Some(last.clone()),
            None => self.range.lo.clone(),
        };
        let lo = match (lo, floor) {
            (Some(lo), Some(floor)) => Some(lo.max(floor.clone())),
            (lo, floor) => lo.or_else(|| floor.cloned()),
        };
        Self {
            range: KeyRange {
                queue: self.range.queue,
                lo,
                hi: Some(to),
            },
            start: None,
            more: true,
            progress: Progress::default(),
            blocked: true,
            ..self
        }
    }

    /// The last entry a query of this reader returned.
    pub fn last_read(&self) -> Option<&ListKey> {
        self.last_read.as_ref()
    }

    /// Takes what this reader's scan moved of the cursor.
    pub fn take_progress(&mut self) -> Progress {
        std::mem::take(&mut self.progress)
    }

    /// True while entries remain, buffered or unread.
    pub fn has_more(&self) -> bool {
        !self.buffer.is_empty() || self.more
    }

    /// The last key this reader took, or where it started: the scan left the rest unread.
    pub fn read_up_to(&self) -> Option<ListKey> {
        self.last_taken.clone().or_else(|| self.range.lo.clone())
    }

    /// Reads the next page of `page` entries.
    async fn refill(&mut self, table: &Table, page: usize) -> Result<(), StoreError> {
        let (entries, next) = table
            .entries(&self.range, false, page, self.start.take())
            .await?;
        if let Some(last) = entries.last() {
            self.last_read = Some(last.key.clone());
        }
        self.buffer.extend(entries);
        self.more = next.is_some();
        self.start = next;
        Ok(())
    }

    /// Takes what the scan made of the entry `key`.
    fn take(&mut self, key: ListKey, entry: Classified, scan: &mut Scan<'_>) {
        match entry {
            Classified::Passable => {
                if !self.blocked {
                    let eligible = key.instant().is_some_and(|at| at <= scan.old_enough);
                    self.progress.cursor = Some(key.clone());
                    self.progress.passed.push((key, eligible));
                }
            }
            Classified::Claimable(task) => {
                self.blocked = true;
                scan.found.claimable.push(task);
            }
            Classified::Exhausted(task) => {
                self.blocked = true;
                scan.found.exhausted.push(task);
            }
            Classified::Blocking => {
                self.blocked = true;
                scan.found.blocking += 1;
            }
        }
    }
}

/// What one entry means for the scan.
enum Classified {
    /// Finished or moved away: a cursor may pass it.
    Passable,
    /// Due now.
    Claimable(Task),
    /// Running out of attempts with an expired lease.
    Exhausted(Task),
    /// Pending or running, not due, or unreadable: a cursor stops here.
    Blocking,
}

/// An entry taken for the next read, with what this process knew of it.
struct Candidate {
    reader: usize,
    entry: Entry,
    known: Known,
}

/// One scan in progress.
pub struct Scan<'a> {
    goal: &'a ScanGoal,
    /// The reader to take entries from first, while this process races another.
    pub preferred: Option<usize>,
    /// Entries at or before this instant are old enough for a watermark.
    old_enough: Timestamp,
    /// What the scan found so far.
    pub found: ScanFound,
    /// Keys this scan read as finished for good.
    pub learned: Vec<ListKey>,
    /// Entries of tasks this scan read as running under an unexpired lease (another
    /// processor's), with the lease's expiry: until then later scans need not read them.
    pub leased: Vec<(ListKey, Timestamp)>,
    /// Entries of due tasks of a paused type, with the type.
    pub held: Vec<(ListKey, String)>,
    /// What the gate still admits in this scan.
    gate: ClaimGate,
    /// Items read so far.
    reads: usize,
    /// Index entries taken so far.
    taken: usize,
}

impl<'a> Scan<'a> {
    /// A scan for `goal`.
    pub fn new(goal: &'a ScanGoal, preferred: Option<usize>, old_enough: Timestamp) -> Self {
        Self {
            goal,
            preferred,
            old_enough,
            found: ScanFound::default(),
            learned: Vec::new(),
            leased: Vec::new(),
            held: Vec::new(),
            gate: goal.gate.clone(),
            reads: 0,
            taken: 0,
        }
    }

    /// True when the gate turned a due task away for want of room: the entries past it must
    /// be read again by the next claim, not skipped by a kept reader.
    pub fn turned_away(&self) -> bool {
        self.gate.turned_away()
    }

    /// Reads the entries of `readers` in key order across them, classifying each, until the
    /// scan has what it wants or the entries run out; true when it stopped on its read cap.
    pub async fn read(
        &mut self,
        table: &Table,
        state: &Mutex<DueState>,
        readers: &mut [ShardReader],
    ) -> Result<bool, StoreError> {
        // A query is billed by the 4 KB it reads, so a page shorter than PAGE_MIN costs the
        // same; what the scan does not reach is kept for the next claim (see `ahead`).
        let page = (self
            .goal
            .want
            .min(self.goal.read_cap)
            .min(self.goal.entry_cap))
        .saturating_add(8)
        .clamp(PAGE_MIN, PAGE_MAX);
        loop {
            let refills = readers
                .iter_mut()
                .filter(|reader| reader.buffer.is_empty() && reader.more)
                .map(|reader| reader.refill(table, page));
            futures::future::try_join_all(refills).await?;
            if readers.iter().all(|reader| reader.buffer.is_empty()) {
                return Ok(false);
            }
            let chunk = self.next_chunk(readers, &lock(state));
            self.taken += chunk.len();
            let items = self.read_items(table, &chunk).await?;
            for candidate in chunk {
                let classified = self.classify(&candidate, &items);
                readers[candidate.reader].take(candidate.entry.key, classified, self);
            }
            if self.found.claimable.len() >= self.goal.want {
                return Ok(false);
            }
            if self.reads >= self.goal.read_cap || self.taken >= self.goal.entry_cap {
                return Ok(true);
            }
        }
    }

    /// The next entries in key order across `readers`, as many as still make sense to read:
    /// until as many unknown entries as due tasks are still wanted (at most one batch read).
    fn next_chunk(&self, readers: &mut [ShardReader], state: &DueState) -> Vec<Candidate> {
        let need = self
            .goal
            .want
            .saturating_sub(self.found.claimable.len())
            .min(self.goal.read_cap.saturating_sub(self.reads))
            .clamp(1, BATCH_GET_KEYS);
        let mut chunk = Vec::new();
        let mut unknown = 0;
        while unknown < need && self.taken + chunk.len() < self.goal.entry_cap {
            let Some(i) = self.next_reader(readers) else {
                break;
            };
            let Some(entry) = readers[i].buffer.pop_front() else {
                break;
            };
            readers[i].last_taken = Some(entry.key.clone());
            let known = match state.known(&entry.key, self.goal.due_by, &self.goal.gate) {
                Known::Running | Known::Held if self.goal.reread_leased => Known::Unknown,
                known => known,
            };
            if known == Known::Unknown {
                unknown += 1;
            }
            chunk.push(Candidate {
                reader: i,
                entry,
                known,
            });
        }
        chunk
    }

    /// The reader whose buffered entry comes next, or `None` when one must be refilled first.
    fn next_reader(&self, readers: &[ShardReader]) -> Option<usize> {
        let preferred = self
            .preferred
            .filter(|&i| readers.get(i).is_some_and(ShardReader::has_more));
        if let Some(i) = preferred {
            // The preferred shard first; when it needs its next page, that comes first.
            return (!readers[i].buffer.is_empty()).then_some(i);
        }
        // A shard with more entries but none buffered may hold the next one.
        if readers
            .iter()
            .any(|reader| reader.buffer.is_empty() && reader.more)
        {
            return None;
        }
        readers
            .iter()
            .enumerate()
            .filter_map(|(i, reader)| reader.buffer.front().map(|entry| (&entry.key, i)))
            .min()
            .map(|(_, i)| i)
    }

    /// The items of the unknown candidates, read at once (eventually consistent: a stale read
    /// can only make a claim fail its condition or stop a cursor early). An item this version
    /// cannot decode is `None`: its entry blocks its shard's cursor (and so the watermark)
    /// rather than stopping every claim.
    async fn read_items(
        &mut self,
        table: &Table,
        chunk: &[Candidate],
    ) -> Result<HashMap<TaskId, Option<Task>>, StoreError> {
        let ids: Vec<String> = chunk
            .iter()
            .filter(|candidate| candidate.known == Known::Unknown)
            .map(|candidate| candidate.entry.id.to_string())
            .collect();
        self.reads += ids.len();
        let mut tasks = HashMap::with_capacity(ids.len());
        for item in table.batch_get(&ids, false).await? {
            let Some(id) = item_id(&item) else { continue };
            match from_item(item) {
                Ok(task) => tasks.insert(id, Some(task)),
                Err(err) => {
                    tracing::warn!(error = %crate::report::Report(&err), task_id = %id, "skipping an unreadable task");
                    tasks.insert(id, None)
                }
            };
        }
        Ok(tasks)
    }

    /// What `candidate` means, from what was known of it or its item in `items`.
    fn classify(
        &mut self,
        candidate: &Candidate,
        items: &HashMap<TaskId, Option<Task>>,
    ) -> Classified {
        let key = &candidate.entry.key;
        let read = match candidate.known {
            Known::Finished => return Classified::Passable,
            Known::Running | Known::Held => return Classified::Blocking,
            Known::Unknown => items.get(&candidate.entry.id),
        };
        let (classified, for_good) = match read {
            Some(None) => (Classified::Blocking, false),
            Some(Some(task)) => classify(key, Some(task), self.goal.due_by, self.old_enough),
            None => classify(key, None, self.goal.due_by, self.old_enough),
        };
        if for_good {
            self.learned.push(key.clone());
        }
        let classified = match classified {
            Classified::Claimable(task) if !self.gate.take(&task.task_type) => {
                if self.gate.is_paused(&task.task_type) && ListKey::of(&task) == *key {
                    self.held.push((key.clone(), task.task_type.clone()));
                }
                Classified::Blocking
            }
            classified => classified,
        };
        // Only a task read at this very entry: a read of one that moved on may be stale.
        if let (Classified::Blocking, Some(Some(task))) = (&classified, read) {
            let here = ListKey::of(task) == *key;
            let lease = task
                .lease_expires_at
                .filter(|_| here && task.status == TaskStatus::Running);
            if let Some(lease) = lease.filter(|lease| *lease > self.goal.due_by) {
                self.leased.push((key.clone(), lease));
                self.found.running_types.push(task.task_type.clone());
            }
        }
        classified
    }
}

/// What the entry `key` means, given the item read for it (`None` when it is gone), and
/// whether that holds for good: a success is final, but a failed or cancelled task can be
/// retried, and a stale read may show it failed after an operator's retry made it due here
/// again.
fn classify(
    key: &ListKey,
    task: Option<&Task>,
    due_by: Timestamp,
    old_enough: Timestamp,
) -> (Classified, bool) {
    let Some(task) = task else {
        // Deleted, or created a moment ago and not readable yet: only an old entry is gone.
        let old = key.instant().is_some_and(|at| at <= old_enough);
        return if old {
            (Classified::Passable, true)
        } else {
            (Classified::Blocking, false)
        };
    };
    let current = ListKey::of(task);
    if current != *key {
        // The index still shows where the task was: it has moved on (a retry, a failure, a
        // cancel) and is read at its new entry. Not for good: the read may be stale and this
        // the new entry (a cancelled task scheduled for tomorrow, retried today, moves down).
        return if Queue::of(task.status) != Queue::Due || current > *key {
            (Classified::Passable, false)
        } else {
            (Classified::Blocking, false)
        };
    }
    let attempts_left = task.attempts < task.max_attempts;
    let classified = match task.status {
        TaskStatus::Succeeded => return (Classified::Passable, true),
        TaskStatus::Failed | TaskStatus::Cancelled => Classified::Passable,
        TaskStatus::Pending if attempts_left => Classified::Claimable(task.clone()),
        TaskStatus::Pending => Classified::Blocking,
        TaskStatus::Running => {
            let expired = task.lease_expires_at.is_some_and(|lease| lease <= due_by);
            match (expired, attempts_left) {
                (true, true) => Classified::Claimable(task.clone()),
                (true, false) => Classified::Exhausted(task.clone()),
                (false, _) => Classified::Blocking,
            }
        }
    };
    (classified, false)
}

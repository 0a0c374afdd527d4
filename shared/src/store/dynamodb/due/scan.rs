//! One scan of the due queue: reads the shards' entries in key order from their cursors,
//! classifies each by its item, and stops once it has what it looks for.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::state::{DueState, Known, Open, Progress};
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
    /// The cursor stops here: an entry that is neither finished nor open and tracked was met
    /// (or this reader reads behind the cursor, where nothing moves it).
    blocked: bool,
    /// Reads open entries again (their items are read, whatever is known of them).
    recheck: bool,
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
            recheck: false,
        }
    }

    /// A reader of the open entries `entries` (keys in order), read again: it queries nothing
    /// and never moves a cursor.
    pub fn recheck(entries: Vec<Entry>) -> Self {
        let mut reader = Self::new(u32::MAX, None, ListKey::after_all_at(Timestamp::MAX));
        reader.buffer = entries.into();
        reader.more = false;
        reader.blocked = true;
        reader.recheck = true;
        reader
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

    /// Takes what the scan made of the entry `key`: a cursor passes what is finished, and what
    /// is open while the process has room to track it.
    fn take(&mut self, key: ListKey, entry: Classified, scan: &mut Scan<'_>) {
        let opened = match entry {
            Classified::Passable => {
                scan.closed.push(key.clone());
                self.pass(key, scan);
                return;
            }
            Classified::Tracked => {
                self.pass_open(key, scan);
                return;
            }
            Classified::Claimable(task) => {
                let open = Open {
                    task_type: task.task_type.clone(),
                    until: scan.goal.now,
                };
                scan.found.claimable.push(task);
                Some(open)
            }
            Classified::Exhausted(task) => {
                let open = Open {
                    task_type: task.task_type.clone(),
                    until: scan.goal.now,
                };
                scan.found.exhausted.push(task);
                Some(open)
            }
            Classified::Waiting(open) => {
                scan.found.blocking += 1;
                Some(open)
            }
            Classified::Blocking(task_type) => {
                scan.found.blocking += 1;
                // Read again a while later; a cursor stops here.
                self.recheck.then(|| Open {
                    task_type,
                    until: scan.goal.due_by.plus(super::RESCAN),
                })
            }
        };
        match opened {
            Some(open) if self.recheck || scan.open_room > 0 => {
                if !self.recheck {
                    scan.open_room -= 1;
                }
                scan.opened.push((key.clone(), open));
                self.pass_open(key, scan);
            }
            _ => self.blocked = true,
        }
    }

    /// Moves the cursor past the open entry `key` once it is [`super::LOOKBACK`] old: behind a
    /// younger one, an entry that lands a moment late (a create in flight) is still read by
    /// the next fresh scan rather than only by a look back.
    fn pass_open(&mut self, key: ListKey, scan: &Scan<'_>) {
        if key.instant().is_some_and(|at| at <= scan.settled) {
            self.pass(key, scan);
        } else {
            self.blocked = true;
        }
    }

    /// Moves the cursor past `key`, unless it stopped already; entries old enough may be
    /// passed by a watermark too (an open one is listed in it).
    fn pass(&mut self, key: ListKey, scan: &Scan<'_>) {
        if !self.blocked {
            let eligible = key.instant().is_some_and(|at| at <= scan.old_enough);
            self.progress.cursor = Some(key.clone());
            self.progress.passed.push((key, eligible));
        }
    }
}

/// What one entry means for the scan.
enum Classified {
    /// Finished or moved away: a cursor may pass it.
    Passable,
    /// Open and tracked already: a cursor passes it unread.
    Tracked,
    /// Due now.
    Claimable(Task),
    /// Running out of attempts with an expired lease.
    Exhausted(Task),
    /// Running under a live lease, or due but of a type the gate closed: open, waiting for
    /// what it says.
    Waiting(Open),
    /// Not readable yet, unreadable, read stale, or pending with no attempts left (of the type
    /// named, if known): a cursor stops here.
    Blocking(String),
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
    /// Open entries at or before this instant may be passed by a cursor.
    settled: Timestamp,
    /// What the scan found so far.
    pub found: ScanFound,
    /// Keys this scan read as finished for good.
    pub learned: Vec<ListKey>,
    /// Entries this scan found open, with what each waits for.
    pub opened: Vec<(ListKey, Open)>,
    /// Entries this scan read as finished or moved on.
    pub closed: Vec<ListKey>,
    /// How many more open entries the process can track.
    open_room: usize,
    /// What the gate still admits in this scan.
    gate: ClaimGate,
    /// Items read so far.
    reads: usize,
    /// Index entries taken so far.
    taken: usize,
}

impl<'a> Scan<'a> {
    /// A scan for `goal`, with room to track `open_room` more open entries.
    pub fn new(
        goal: &'a ScanGoal,
        preferred: Option<usize>,
        old_enough: Timestamp,
        open_room: usize,
    ) -> Self {
        Self {
            goal,
            preferred,
            old_enough,
            settled: goal.now.minus(super::LOOKBACK),
            found: ScanFound::default(),
            learned: Vec::new(),
            opened: Vec::new(),
            closed: Vec::new(),
            open_room,
            gate: goal.gate.clone(),
            reads: 0,
            taken: 0,
        }
    }

    /// The index entries this scan took and the items it read.
    pub fn counted(&self) -> (u64, usize) {
        (u64::try_from(self.taken).unwrap_or(u64::MAX), self.reads)
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
            let known = match state.known(&entry.key) {
                Known::Open if readers[i].recheck => Known::Unknown,
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
            Known::Open => return Classified::Tracked,
            Known::Unknown => items.get(&candidate.entry.id),
        };
        let task = read.and_then(Option::as_ref);
        let (classified, for_good) = classify(key, task, self.goal.due_by, self.old_enough);
        if for_good {
            self.learned.push(key.clone());
        }
        match classified {
            Classified::Claimable(task) if !self.gate.take(&task.task_type) => {
                Classified::Waiting(Open {
                    task_type: task.task_type,
                    until: self.goal.now,
                })
            }
            Classified::Waiting(open) => {
                self.found.running_types.push(open.task_type.clone());
                Classified::Waiting(open)
            }
            classified => classified,
        }
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
        // Deleted, or created a moment ago and not readable yet (or unreadable by this
        // version): only an old entry is gone.
        let old = key.instant().is_some_and(|at| at <= old_enough);
        return if old {
            (Classified::Passable, true)
        } else {
            (Classified::Blocking(String::new()), false)
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
            (Classified::Blocking(task.task_type.clone()), false)
        };
    }
    let attempts_left = task.attempts < task.max_attempts;
    let classified = match task.status {
        TaskStatus::Succeeded => return (Classified::Passable, true),
        TaskStatus::Failed | TaskStatus::Cancelled => Classified::Passable,
        TaskStatus::Pending if attempts_left => Classified::Claimable(task.clone()),
        TaskStatus::Pending => Classified::Blocking(task.task_type.clone()),
        TaskStatus::Running => match task.lease_expires_at {
            Some(lease) if lease > due_by => Classified::Waiting(Open {
                task_type: task.task_type.clone(),
                until: lease,
            }),
            Some(_) if attempts_left => Classified::Claimable(task.clone()),
            Some(_) => Classified::Exhausted(task.clone()),
            None => Classified::Blocking(task.task_type.clone()),
        },
    };
    (classified, false)
}

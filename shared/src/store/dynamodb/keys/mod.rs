//! Limits per key on DynamoDB, kept by claims: [`rate`] keys and [`slots`] of concurrency keys,
//! one item per key, read consistently by a claim round that meets the key and changed by one
//! conditional write per key and round before the round claims the key's tasks. A round whose
//! write finds the item changed by another claim since its read starts none of the key's
//! tasks (they stay due for the next round), so the limits hold across processes.
//!
//! A task a round holds is not written (that would move its due entry: about three write
//! units): this process's due state passes its entry until its time, as it passes a message's,
//! and another process judges it when it reads it. Tasks held for a concurrency key come back
//! sooner, in [`holds`]: when an attempt of this process frees a slot of their key, or when a
//! look at the key's item finds slots freed elsewhere ([`local`]).

mod holds;
mod local;
mod rate;
mod slots;

use std::collections::{HashMap, HashSet};

use futures::{Future, StreamExt};

pub use self::local::KeyState;
use self::local::lock;
use self::slots::Slots;
use super::DynamoStore;
use crate::clock::Timestamp;
use crate::store::{Claim, KeyBook, LOOK_AGAIN, ListKey, Need, StoreError, Verdict};
use crate::task::{Held, Task, TaskId};

/// Key items a claim round reads or writes at once.
const KEY_CALLS: usize = 16;
/// Tasks of one key a round starts at most: each is a path of the key item's update, whose
/// expression must stay under DynamoDB's 4 KB (the rest start in the next round).
const TAKES_PER_WRITE: usize = 100;

/// The answers of `calls`, [`KEY_CALLS`] at a time, in their order.
async fn at_once<F: Future>(calls: Vec<F>) -> Vec<F::Output> {
    futures::stream::iter(calls)
        .buffered(KEY_CALLS)
        .collect()
        .await
}

/// A key's item as a claim round read it.
enum KeyRead {
    NextStart(String, Option<Timestamp>),
    Slots(String, Slots),
}

/// The tasks of a claim round that may start, those it held (each with why and until when),
/// and the starting ones it took a slot for, with their lease end: a claim of one of those
/// that fails frees it.
pub(super) struct Judged {
    pub starting: Vec<Task>,
    pub held: Vec<(TaskId, Held, Timestamp)>,
    pub took: HashMap<TaskId, Timestamp>,
}

impl DynamoStore {
    /// See [`crate::store::Store::key_holds_written`]: holds are passed in this process's due state.
    pub async fn key_holds_written(&self) -> bool {
        false
    }

    /// Reads what `need` asks for.
    async fn read_need(&self, need: Need) -> Result<KeyRead, StoreError> {
        Ok(match need {
            Need::NextStart(key) => {
                let next = self.next_start(&key).await?;
                KeyRead::NextStart(key, next)
            }
            Need::Holders(key) => {
                let read = self.slots(&key).await?;
                KeyRead::Slots(key, read)
            }
        })
    }

    /// Reads the item of every key `candidates` need, at once, and tells `book` what they
    /// hold at `now`: the judging itself is in order. Answers the rate keys' next starts and
    /// the concurrency keys' items as read.
    async fn read_keys(
        &self,
        book: &mut KeyBook<'_>,
        candidates: &[Task],
        now: Timestamp,
    ) -> Result<(HashMap<String, Option<Timestamp>>, HashMap<String, Slots>), StoreError> {
        let (mut rates, mut slots) = (HashMap::new(), HashMap::new());
        let mut needs: Vec<Need> = Vec::new();
        for need in candidates.iter().flat_map(|task| book.needs(task)) {
            if !needs.contains(&need) {
                needs.push(need);
            }
        }
        let mut calls = Vec::with_capacity(needs.len());
        for need in needs {
            calls.push(self.read_need(need));
        }
        for read in at_once(calls).await {
            match read? {
                KeyRead::NextStart(key, next) => {
                    rates.insert(key.clone(), next);
                    book.know_next_start(key, next);
                }
                KeyRead::Slots(key, read) => {
                    book.know_holders(key.clone(), read.running(now));
                    slots.insert(key, read);
                }
            }
        }
        Ok((rates, slots))
    }

    /// The `candidates` of a claim round that may start: a task whose key is at its limit is
    /// held (its entry passed until its time, the instant noted on the gate), and the tasks of
    /// a key another process changed since this round read it are left due.
    pub(super) async fn judge_keys(
        &self,
        candidates: Vec<Task>,
        claim: &Claim<'_>,
    ) -> Result<Judged, StoreError> {
        let limits = claim.gate.limits();
        let keyed = |task: &Task| task.rate_key.is_some() || task.concurrency_key.is_some();
        if limits.is_empty() || !candidates.iter().any(keyed) {
            return Ok(Judged {
                starting: candidates,
                held: Vec::new(),
                took: HashMap::new(),
            });
        }
        let mut held = Vec::new();
        let mut book = KeyBook::new(limits, claim.now)
            .with_concurrency_hold_cap(claim.gate.concurrency_hold_cap());
        let mut taken: HashMap<String, Vec<(TaskId, Timestamp)>> = HashMap::new();
        let mut starting = Vec::with_capacity(candidates.len());
        let (rates, slots) = self.read_keys(&mut book, &candidates, claim.now).await?;
        let mut deferred = false;
        for task in candidates {
            if !book.limits(&task) {
                starting.push(task);
                continue;
            }
            let slot_key = task
                .concurrency_key
                .as_ref()
                .filter(|key| limits.concurrency(&task.task_type, key).is_some());
            if let Some(key) = slot_key {
                // A holder already: another claim just took its slot to claim it.
                let holder = slots
                    .get(key)
                    .is_some_and(|read| read.holds(task.id, claim.now));
                let full = taken.get(key).is_some_and(|t| t.len() >= TAKES_PER_WRITE);
                if holder || full {
                    deferred |= full;
                    continue;
                }
            }
            let lease_until = claim.leases.until(&task.task_type, claim.now);
            match book.judge(&task, lease_until) {
                Verdict::Start => {
                    if let Some(key) = slot_key {
                        let attempt = (task.id, lease_until);
                        taken.entry(key.clone()).or_default().push(attempt);
                    }
                    starting.push(task);
                }
                Verdict::Hold { until, held: why } => {
                    self.due.expect_delivery(&task, until);
                    claim.gate.note_hold(until);
                    if let (Held::Concurrency, Some(key)) = (why, &task.concurrency_key) {
                        let entry = ListKey::of(&task);
                        let mut holds = lock(&self.keys.holds);
                        holds.hold(key, entry, &task.task_type, claim.now, until);
                    }
                    held.push((task.id, why, until));
                }
            }
        }
        let (mut took, lost) = self
            .write_keys(&book, &rates, &slots, &taken, claim.now)
            .await?;
        if deferred || !lost.is_empty() {
            claim.gate.turn_away();
            claim.gate.note_hold(claim.now.plus(LOOK_AGAIN));
        }
        if !lost.is_empty() {
            let is_lost = |key: &Option<String>| key.as_ref().is_some_and(|key| lost.contains(key));
            let (dropped, kept): (Vec<Task>, Vec<Task>) = starting
                .into_iter()
                .partition(|task| is_lost(&task.rate_key) || is_lost(&task.concurrency_key));
            starting = kept;
            // A slot this round took for a task whose rate key was lost is freed again.
            for task in dropped {
                if let Some(end) = took.remove(&task.id) {
                    self.release_slot_of(task.id, Some(end), claim.now).await;
                }
            }
        }
        Ok(Judged {
            starting,
            held,
            took,
        })
    }

    /// Writes the keys a round judged: takes the slots of `taken` and moves the rate keys the
    /// book moved, at once. Answers the slots taken (task id → lease end) and the keys lost to
    /// another claim. On an error, the slots already taken are freed again.
    async fn write_keys(
        &self,
        book: &KeyBook<'_>,
        rates: &HashMap<String, Option<Timestamp>>,
        slots: &HashMap<String, Slots>,
        taken: &HashMap<String, Vec<(TaskId, Timestamp)>>,
        now: Timestamp,
    ) -> Result<(HashMap<TaskId, Timestamp>, HashSet<String>), StoreError> {
        let mut lost: HashSet<String> = HashSet::new();
        let mut took = HashMap::new();
        let mut failed = None;
        let empty = Slots::default();
        let mut calls = Vec::with_capacity(taken.len());
        for (key, tasks) in taken {
            let read = slots.get(key).unwrap_or(&empty);
            calls.push(self.take_slots(key, read, tasks, now));
        }
        for ((key, tasks), done) in taken.iter().zip(at_once(calls).await) {
            match done {
                Ok(true) => {
                    self.keys.took(key, tasks, now);
                    took.extend(tasks.iter().copied());
                }
                Ok(false) => {
                    lost.insert(key.clone());
                }
                Err(err) => {
                    failed.get_or_insert(err);
                }
            }
        }
        let moved: Vec<(&str, Timestamp)> = book.moved().collect();
        let mut calls = Vec::with_capacity(moved.len());
        for (key, next) in &moved {
            let before = rates.get(*key).copied().flatten();
            calls.push(self.move_next_start(key, before, *next));
        }
        for ((key, _), done) in moved.iter().zip(at_once(calls).await) {
            match done {
                Ok(true) => {}
                Ok(false) => {
                    lost.insert((*key).to_owned());
                }
                Err(err) => {
                    failed.get_or_insert(err);
                }
            }
        }
        if let Some(err) = failed {
            for (id, end) in took {
                self.release_slot_of(id, Some(end), now).await;
            }
            return Err(err);
        }
        Ok((took, lost))
    }
}

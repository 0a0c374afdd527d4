//! Limits per key on DynamoDB, kept by claims: [`rate`] keys and [`slots`] of concurrency keys,
//! one item per key, read consistently by a claim round that meets the key and moved by one
//! conditional write per key and round before the round claims the key's tasks. A round whose
//! write finds the item moved by another process since its read starts none of the key's
//! tasks (they stay due for the next round), so the limits hold across processes.
//!
//! A task a round holds is not written (that would move its due entry: about three write
//! units): this process's due state passes its entry until its time, as it passes a message's,
//! and another process judges it when it reads it. Tasks held for a concurrency key come back
//! sooner, in [`holds`]: when an attempt of this process frees a slot of their key, or when a
//! look at the key's item finds slots freed elsewhere.

mod holds;
mod rate;
mod slots;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::{Future, StreamExt, TryStreamExt};

use self::holds::Holds;
use self::slots::Slots;
use super::DynamoStore;
use crate::clock::Timestamp;
use crate::report::Report;
use crate::store::{Claim, ClaimGate, KeyBook, LOOK_AGAIN, ListKey, Need, StoreError, Verdict};
use crate::task::{Held, Task, TaskId};

/// Key items a claim round reads or writes at once.
const KEY_CALLS: usize = 16;

/// The answers of `calls`, [`KEY_CALLS`] at a time, in their order.
async fn at_once<T>(
    calls: Vec<impl Future<Output = Result<T, StoreError>>>,
) -> Result<Vec<T>, StoreError> {
    futures::stream::iter(calls)
        .buffered(KEY_CALLS)
        .try_collect()
        .await
}

/// A key's item as a claim round read it.
enum KeyRead {
    NextStart(String, Option<Timestamp>),
    Slots(String, Slots),
}

/// What one process keeps of its keys: the tasks it holds for their concurrency key, and the
/// slots its running attempts took (released when they end).
#[derive(Debug, Clone, Default)]
pub struct KeyState {
    holds: Arc<Mutex<Holds>>,
    /// Task id → the concurrency key it holds a slot of, and its lease's end.
    taken: Arc<Mutex<HashMap<TaskId, (String, Timestamp)>>>,
}

fn lock<T>(state: &Mutex<T>) -> MutexGuard<'_, T> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The tasks of a claim round that may start, those it held (each with why and until when),
/// and the starting ones it took a slot for: a claim of one of those that fails frees it.
pub(super) struct Judged {
    pub starting: Vec<Task>,
    pub held: Vec<(TaskId, Held, Timestamp)>,
    pub took: HashSet<TaskId>,
}

impl DynamoStore {
    /// See [`crate::store::Store::key_holds_written`]: holds are passed in this process's due state.
    pub async fn key_holds_written(&self) -> bool {
        false
    }

    /// Before a claim at `now`: reads the items of the concurrency keys this process holds
    /// tasks of (each at most every [`holds::LOOK_EVERY`]) and makes as many of their held
    /// entries due again as the key has free slots; asks the gate to look again while tasks
    /// stay held.
    pub(super) async fn look_at_holds(&self, gate: &ClaimGate, now: Timestamp) {
        let keys = lock(&self.keys.holds).keys_to_look_at(now);
        for (key, task_type) in keys {
            let Some(limit) = gate.limits().concurrency(&task_type, &key) else {
                continue;
            };
            match self.slots(&key).await {
                Ok(slots) => {
                    let room = limit.saturating_sub(slots.running(now).running) as usize;
                    let woken = lock(&self.keys.holds).wake(&key, room, now);
                    self.due.due_again(woken, now);
                }
                // Only sooner than the hold's end: that still comes.
                Err(err) => {
                    tracing::warn!(error = %Report(&err), key, "could not read a concurrency key")
                }
            }
        }
        if let Some(next) = lock(&self.keys.holds).next_look() {
            gate.note_hold(next.max(now));
        }
    }

    /// After the attempt `claimed` ended at `now` (or was never claimed): frees the slot it
    /// took, if it took one, and wakes the key's earliest task held here. A slot that cannot
    /// be freed frees with the attempt's lease.
    pub(super) async fn release_slot_of(&self, claimed: TaskId, now: Timestamp) {
        let Some((key, end)) = lock(&self.keys.taken).remove(&claimed) else {
            return;
        };
        if let Err(err) = self.release_slot(&key, claimed, end).await {
            tracing::warn!(error = %Report(&err), key, "could not free a concurrency slot; it frees with the lease");
        }
        let woken = lock(&self.keys.holds).wake(&key, 1, now);
        self.due.due_again(woken, now);
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

    /// The `candidates` of a claim round that may start: a task whose key is at its limit is
    /// held (its entry passed until its time, the instant noted on the gate), and the tasks of
    /// a key another process moved since this round read it are left due.
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
                took: HashSet::new(),
            });
        }
        let mut held = Vec::new();
        let mut book = KeyBook::new(limits, claim.now)
            .with_concurrency_hold_cap(claim.gate.concurrency_hold_cap());
        let mut rates: HashMap<String, Option<Timestamp>> = HashMap::new();
        let mut slots: HashMap<String, Slots> = HashMap::new();
        let mut taken: HashMap<String, Vec<(TaskId, Timestamp)>> = HashMap::new();
        let mut starting = Vec::with_capacity(candidates.len());
        // Every key's item is read first, at once: the judging itself is in order.
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
        let reads = at_once(calls).await?;
        for read in reads {
            match read {
                KeyRead::NextStart(key, next) => {
                    rates.insert(key.clone(), next);
                    book.know_next_start(key, next);
                }
                KeyRead::Slots(key, read) => {
                    book.know_holders(key.clone(), read.running(claim.now));
                    slots.insert(key, read);
                }
            }
        }
        for task in candidates {
            if !book.limits(&task) {
                starting.push(task);
                continue;
            }
            let lease_until = claim.leases.until(&task.task_type, claim.now);
            match book.judge(&task, lease_until) {
                Verdict::Start => {
                    let limited =
                        |key: &&String| limits.concurrency(&task.task_type, key).is_some();
                    if let Some(key) = task.concurrency_key.as_ref().filter(limited) {
                        // A holder already: another claim just took its slot to claim it.
                        if slots
                            .get(key)
                            .is_some_and(|read| read.holds(task.id, claim.now))
                        {
                            continue;
                        }
                        taken
                            .entry(key.clone())
                            .or_default()
                            .push((task.id, lease_until));
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
        let mut lost: HashSet<String> = HashSet::new();
        let mut took = HashSet::new();
        let empty = Slots::default();
        let mut calls = Vec::with_capacity(taken.len());
        for (key, tasks) in &taken {
            let read = slots.get(key).unwrap_or(&empty);
            calls.push(self.take_slots(key, read, tasks, claim.now));
        }
        let takes = at_once(calls).await?;
        for ((key, tasks), done) in taken.iter().zip(takes) {
            if done {
                let mut mine = lock(&self.keys.taken);
                mine.extend(tasks.iter().map(|(id, end)| (*id, (key.clone(), *end))));
                took.extend(tasks.iter().map(|(id, _)| *id));
            } else {
                lost.insert(key.clone());
            }
        }
        let moved: Vec<(&str, Timestamp)> = book.moved().collect();
        let mut calls = Vec::with_capacity(moved.len());
        for (key, next) in &moved {
            let before = rates.get(*key).copied().flatten();
            calls.push(self.move_next_start(key, before, *next));
        }
        let moves = at_once(calls).await?;
        for ((key, _), done) in moved.iter().zip(moves) {
            if !done {
                lost.insert((*key).to_owned());
            }
        }
        if !lost.is_empty() {
            claim.gate.turn_away();
            claim.gate.note_hold(claim.now.plus(LOOK_AGAIN));
            let is_lost = |key: &Option<String>| key.as_ref().is_some_and(|key| lost.contains(key));
            let (dropped, kept): (Vec<Task>, Vec<Task>) = starting
                .into_iter()
                .partition(|task| is_lost(&task.rate_key) || is_lost(&task.concurrency_key));
            starting = kept;
            // A slot this round took for a task whose rate key was lost is freed again
            // (another claim of this process may have taken one for the same task).
            for task in dropped.iter().filter(|task| took.remove(&task.id)) {
                self.release_slot_of(task.id, claim.now).await;
            }
        }
        Ok(Judged {
            starting,
            held,
            took,
        })
    }
}

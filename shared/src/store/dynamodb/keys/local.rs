//! What one process keeps of its concurrency keys: the tasks it holds (see [`super::holds`])
//! and the slots its attempts took, freed when they end.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::at_once;
use super::holds::Holds;
use crate::clock::Timestamp;
use crate::report::Report;
use crate::store::ClaimGate;
use crate::store::dynamodb::DynamoStore;
use crate::task::TaskId;

/// Slots remembered past which those whose lease ended are forgotten (an attempt whose claim
/// failed with an error never ends here).
const TAKEN_CAP: usize = 4096;

/// Shared by the store's clones.
#[derive(Debug, Clone, Default)]
pub struct KeyState {
    pub(super) holds: Arc<Mutex<Holds>>,
    /// (task id, the attempt's lease end) → the concurrency key it holds a slot of. Keyed by
    /// the lease end too: a later attempt of the same task has its own slot.
    taken: Arc<Mutex<HashMap<(TaskId, Timestamp), String>>>,
}

pub(super) fn lock<T>(state: &Mutex<T>) -> MutexGuard<'_, T> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl KeyState {
    /// Records that the attempts `tasks` (ids and lease ends) took slots of `key` at `now`.
    pub(super) fn took(&self, key: &str, tasks: &[(TaskId, Timestamp)], now: Timestamp) {
        let mut taken = lock(&self.taken);
        if taken.len() >= TAKEN_CAP {
            taken.retain(|(_, end), _| *end > now);
        }
        taken.extend(tasks.iter().map(|attempt| (*attempt, key.to_owned())));
    }
}

impl DynamoStore {
    /// Before a claim at `now`: reads the items of the concurrency keys this process holds
    /// tasks of (each at most every [`super::holds::LOOK_EVERY`], several at once) and
    /// makes as many of their held entries due again as the key has free slots; asks the
    /// gate to look again while tasks stay held.
    pub(in crate::store::dynamodb) async fn look_at_holds(&self, gate: &ClaimGate, now: Timestamp) {
        let keys = lock(&self.keys.holds).keys_to_look_at(now);
        let mut calls = Vec::with_capacity(keys.len());
        for (key, task_type) in &keys {
            if let Some(limit) = gate.limits().concurrency(task_type, key) {
                calls.push(async move { (key, limit, self.slots(key).await) });
            }
        }
        let looks = at_once(calls).await;
        for (key, limit, read) in looks {
            match read {
                Ok(slots) => {
                    let room = limit.saturating_sub(slots.running(now).running) as usize;
                    let woken = lock(&self.keys.holds).wake(key, room, now);
                    self.due.due_again(woken, now);
                }
                // Only sooner than the hold's end: that still comes.
                Err(err) => {
                    tracing::warn!(error = %Report(&err), key, "could not read a concurrency key");
                }
            }
        }
        if let Some(next) = lock(&self.keys.holds).next_look() {
            gate.note_hold(next.max(now));
        }
    }

    /// After the attempt of task `id` with lease end `end` ended at `now` (or was never
    /// claimed): frees the slot it took, if it took one, and wakes the key's earliest task
    /// held here. A slot that cannot be freed frees with the attempt's lease.
    pub(in crate::store::dynamodb) async fn release_slot_of(
        &self,
        id: TaskId,
        end: Option<Timestamp>,
        now: Timestamp,
    ) {
        let Some(end) = end else {
            return;
        };
        let Some(key) = lock(&self.keys.taken).remove(&(id, end)) else {
            return;
        };
        if let Err(err) = self.release_slot(&key, id, end).await {
            tracing::warn!(error = %Report(&err), key, "could not free a concurrency slot; it frees with the lease");
        }
        let woken = lock(&self.keys.holds).wake(&key, 1, now);
        self.due.due_again(woken, now);
    }
}

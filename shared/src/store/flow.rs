//! Flow control in the store: task types an operator paused (stored, so every process sees
//! them), the tasks of each type due and running, and which types a claim may take.

use std::collections::BTreeMap;

use super::keys::{KeyLimits, NO_LIMITS};
use crate::clock::Timestamp;

/// The paused types, each with when it was paused.
pub type PausedTypes = BTreeMap<String, Timestamp>;

/// Due and running tasks of one type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeCount {
    /// Due now and not running: pending past their time, or running with an expired lease.
    pub due: u64,
    /// Running, their lease expired or not.
    pub running: u64,
}

/// Due and running tasks per type, and whether every one was counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeCounts {
    /// By type; a type with neither is absent.
    pub by_type: BTreeMap<String, TypeCount>,
    /// False when a bounded look stopped before it saw every due or running task (DynamoDB):
    /// the numbers are then at least what they say.
    pub exact: bool,
}

/// Which tasks a claim may take, by type: none of a paused type, and at most `room` more of a
/// type with a concurrency cap in this process. Types not named are open.
#[derive(Debug, Clone, Default)]
pub struct ClaimGate {
    paused: PausedTypes,
    room: BTreeMap<String, usize>,
    /// Set (and seen by every clone) when a due task of a capped type was turned away for
    /// want of room: the claim's answer says nothing of that type's other due tasks.
    turned_away: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// The limits per key every claim through the gate keeps.
    limits: Option<std::sync::Arc<KeyLimits>>,
    /// When the tasks a claim through this gate (or a clone) held for their keys are due
    /// again, so the caller can look then (at most [`HOLDS_NOTED`]).
    holds: Option<std::sync::Arc<std::sync::Mutex<Vec<Timestamp>>>>,
    /// The longest a claim through this gate holds a task for its key's concurrency (SQS
    /// mode: a held task runs when its next message comes, which an outcome cannot hasten).
    concurrency_hold_cap: Option<std::time::Duration>,
}

/// The most hold instants a gate notes.
pub const HOLDS_NOTED: usize = 1024;

/// The gate that admits every task.
pub static OPEN_GATE: ClaimGate = ClaimGate {
    paused: BTreeMap::new(),
    room: BTreeMap::new(),
    turned_away: None,
    limits: None,
    holds: None,
    concurrency_hold_cap: None,
};

impl ClaimGate {
    /// A gate closed to the `paused` types, and to more than `room` tasks of each capped type.
    pub fn new(paused: PausedTypes, room: BTreeMap<String, usize>) -> Self {
        Self {
            paused,
            room,
            turned_away: Some(std::sync::Arc::default()),
            limits: None,
            holds: Some(std::sync::Arc::default()),
            concurrency_hold_cap: None,
        }
    }

    /// This gate, holding a task for its key's concurrency at most `cap`.
    pub fn with_concurrency_hold_cap(mut self, cap: std::time::Duration) -> Self {
        self.concurrency_hold_cap = Some(cap);
        self
    }

    /// The longest a claim through this gate holds a task for its key's concurrency.
    pub fn concurrency_hold_cap(&self) -> Option<std::time::Duration> {
        self.concurrency_hold_cap
    }

    /// Notes that a claim through this gate held a task until `until` (or asks its caller to
    /// look again then): the earliest [`HOLDS_NOTED`] are kept.
    pub fn note_hold(&self, until: Timestamp) {
        if let Some(holds) = &self.holds {
            let mut holds = holds.lock().unwrap_or_else(|p| p.into_inner());
            if holds.len() < HOLDS_NOTED {
                holds.push(until);
            } else if let Some(latest) = holds.iter_mut().max() {
                if until < *latest {
                    *latest = until;
                }
            }
        }
    }

    /// When the tasks held through this gate are due again, as noted.
    pub fn holds(&self) -> Vec<Timestamp> {
        self.holds.as_ref().map_or_else(Vec::new, |holds| {
            holds.lock().unwrap_or_else(|p| p.into_inner()).clone()
        })
    }

    /// This gate, keeping `limits` per key.
    pub fn with_limits(mut self, limits: std::sync::Arc<KeyLimits>) -> Self {
        self.limits = (!limits.is_empty()).then_some(limits);
        self
    }

    /// The limits per key a claim through this gate keeps.
    pub fn limits(&self) -> &KeyLimits {
        self.limits.as_deref().unwrap_or(&NO_LIMITS)
    }

    /// The same limits, shared: for a claim that takes tasks through the gate (a `&mut`) while
    /// it judges them.
    pub fn shared_limits(&self) -> Option<std::sync::Arc<KeyLimits>> {
        self.limits.clone()
    }

    /// True when this gate, or a clone of it, turned a due task away for want of room.
    pub fn turned_away(&self) -> bool {
        self.turned_away
            .as_ref()
            .is_some_and(|flag| flag.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// True when `task_type` is paused.
    pub fn is_paused(&self, task_type: &str) -> bool {
        self.paused.contains_key(task_type)
    }

    /// True when a task of `task_type` may be claimed now.
    pub fn admits(&self, task_type: &str) -> bool {
        !self.is_paused(task_type) && self.room.get(task_type).is_none_or(|room| *room > 0)
    }

    /// How many more tasks of `task_type` it admits, when the type is capped.
    pub fn room(&self, task_type: &str) -> Option<usize> {
        self.room.get(task_type).copied()
    }

    /// Records that a due task of a capped type was left for want of room.
    pub fn turn_away(&self) {
        if let Some(flag) = &self.turned_away {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Takes one task of `task_type` through the gate, if it admits one.
    pub fn take(&mut self, task_type: &str) -> bool {
        if !self.admits(task_type) {
            if !self.is_paused(task_type) {
                self.turn_away();
            }
            return false;
        }
        if let Some(room) = self.room.get_mut(task_type) {
            *room -= 1;
        }
        true
    }

    /// True when a capped type has no room left.
    pub fn any_full(&self) -> bool {
        self.room.values().any(|room| *room == 0)
    }

    /// The types it admits no task of now.
    pub fn closed(&self) -> impl Iterator<Item = &str> {
        self.paused.keys().map(String::as_str).chain(
            self.room
                .iter()
                .filter(|(_, room)| **room == 0)
                .map(|(name, _)| name.as_str()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_admits_open_types_and_capped_ones_while_room_lasts() {
        let paused = PausedTypes::from([("report".to_owned(), Timestamp::now_utc())]);
        let mut gate = ClaimGate::new(paused, BTreeMap::from([("mail".to_owned(), 2)]));
        assert!(!gate.take("report"));
        assert!(gate.take("mail") && gate.take("mail"));
        assert!(!gate.turned_away());
        assert!(!gate.take("mail"));
        assert!(gate.clone().turned_away(), "seen by clones");
        assert!(gate.take("anything"));
        let mut closed: Vec<&str> = gate.closed().collect();
        closed.sort_unstable();
        assert_eq!(closed, ["mail", "report"]);
    }
}

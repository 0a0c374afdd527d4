//! The tasks this process holds for their concurrency key. They are not written: their due
//! entries are passed in the due state until their key has room. An attempt this process ends
//! frees its slot and wakes the key's earliest held entry at once; slots other processes free
//! are seen by reading the key's item at most every [`LOOK_EVERY`] while tasks of it are held
//! here. Pure bookkeeping, no I/O.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::clock::Timestamp;
use crate::store::ListKey;

/// How often a process reads the item of a key it holds tasks of, for slots other processes
/// freed: one read unit per key and look, whatever the number of tasks held.
pub const LOOK_EVERY: Duration = Duration::from_millis(250);

/// Keys held past which those whose holds all ended are forgotten (a process that never
/// claims from the due queue, an SQS worker, never looks at them).
const KEYS_CAP: usize = 1024;

/// A held entry: its task's type (whose rule gives the key's limit) and when the due state
/// looks at it again anyway (the first holder's lease end: its slot is free by then).
#[derive(Debug, Clone)]
struct HeldEntry {
    task_type: String,
    until: Timestamp,
}

#[derive(Debug, Default)]
struct HeldKey {
    entries: BTreeMap<ListKey, HeldEntry>,
    /// When this process last read the key's item for free slots.
    looked: Option<Timestamp>,
}

/// Held entries by concurrency key.
#[derive(Debug, Default)]
pub struct Holds {
    keys: HashMap<String, HeldKey>,
}

impl Holds {
    /// Records `entry` (of a task of `task_type`) held for `key` at `now` until `until` at the
    /// latest; forgets the key's entries whose hold ended.
    pub fn hold(
        &mut self,
        key: &str,
        entry: ListKey,
        task_type: &str,
        now: Timestamp,
        until: Timestamp,
    ) {
        let held = HeldEntry {
            task_type: task_type.to_owned(),
            until,
        };
        if self.keys.len() >= KEYS_CAP {
            self.keys.retain(|_, held| {
                held.entries.retain(|_, entry| entry.until > now);
                !held.entries.is_empty()
            });
        }
        let entries = &mut self.keys.entry(key.to_owned()).or_default().entries;
        entries.retain(|_, entry| entry.until > now);
        entries.insert(entry, held);
    }

    /// Forgets the entries whose hold ended by `now` (the due state reads them again itself),
    /// and answers the keys to read at `now`, each with a held task's type: those not read in
    /// the last [`LOOK_EVERY`]. They count as read from now.
    pub fn keys_to_look_at(&mut self, now: Timestamp) -> Vec<(String, String)> {
        self.keys.retain(|_, held| {
            held.entries.retain(|_, entry| entry.until > now);
            !held.entries.is_empty()
        });
        let mut keys = Vec::new();
        for (key, held) in &mut self.keys {
            if held
                .looked
                .is_some_and(|looked| now >= looked && now.since(looked) < LOOK_EVERY)
            {
                continue;
            }
            held.looked = Some(now);
            if let Some(entry) = held.entries.values().next() {
                keys.push((key.clone(), entry.task_type.clone()));
            }
        }
        keys
    }

    /// Takes the `room` earliest entries held for `key` at `now` (whose hold has not ended:
    /// the others are due already): they are due again.
    pub fn wake(&mut self, key: &str, room: usize, now: Timestamp) -> Vec<ListKey> {
        let Some(held) = self.keys.get_mut(key) else {
            return Vec::new();
        };
        held.entries.retain(|_, entry| entry.until > now);
        let woken: Vec<ListKey> = held.entries.keys().take(room).cloned().collect();
        for entry in &woken {
            held.entries.remove(entry);
        }
        if held.entries.is_empty() {
            self.keys.remove(key);
        }
        woken
    }

    /// When this process should next read a key's item, if it holds any task.
    pub fn next_look(&self) -> Option<Timestamp> {
        self.keys
            .values()
            .map(|held| held.looked.map_or(Timestamp::MIN, |at| at.plus(LOOK_EVERY)))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskId;

    fn at(millis: u64) -> Timestamp {
        let t0: Timestamp = "2030-01-01T00:00:00Z".parse().expect("timestamp");
        t0.plus(Duration::from_millis(millis))
    }

    fn entry(millis: u64) -> ListKey {
        ListKey::at(at(millis), TaskId::new(at(millis).0))
    }

    #[test]
    fn a_key_is_looked_at_once_per_period_and_wakes_its_earliest_entries() {
        let mut holds = Holds::default();
        let (first, second, third) = (entry(3), entry(1), entry(2));
        for held in [&first, &second, &third] {
            holds.hold("k", held.clone(), "hook", at(0), at(60_000));
        }
        assert_eq!(holds.next_look(), Some(Timestamp::MIN), "never looked at");
        assert_eq!(
            holds.keys_to_look_at(at(10)),
            [("k".to_owned(), "hook".to_owned())]
        );
        assert!(holds.keys_to_look_at(at(200)).is_empty());
        assert_eq!(holds.next_look(), Some(at(260)));
        assert_eq!(holds.keys_to_look_at(at(260)).len(), 1);
        assert_eq!(holds.wake("k", 2, at(300)), [second, third]);
        assert_eq!(holds.wake("k", 2, at(300)), [first]);
        assert_eq!(holds.next_look(), None, "nothing held");
        assert!(holds.wake("other", 1, at(300)).is_empty());
    }

    #[test]
    fn an_entry_whose_hold_ended_is_forgotten() {
        let mut holds = Holds::default();
        holds.hold("k", entry(1), "hook", at(0), at(100));
        holds.hold("j", entry(2), "hook", at(0), at(500));
        assert_eq!(
            holds.keys_to_look_at(at(100)),
            [("j".to_owned(), "hook".to_owned())]
        );
        assert!(holds.wake("k", 1, at(100)).is_empty());
    }
}

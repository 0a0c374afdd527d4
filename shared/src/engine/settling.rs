//! Claims ahead of outcomes, on a store that commits its writes in the order they were made
//! ([`crate::store::Store::queue_writes_in_order`]: SQLite). An attempt whose handler has
//! ended and whose outcome's first write is queued lends its slot to the next claim. That
//! claim is queued behind the outcome, so it commits in the same transaction or a later one:
//! the attempts it starts never outnumber the slots whose outcomes are recorded, and the claim
//! shares the outcomes' commit instead of waiting for it (with no-op handlers the drain is
//! that alternation of commits).
//!
//! Several claims may be in flight: one for the slots of outcomes queued after an earlier claim
//! started rides with those outcomes, instead of waiting for that claim's answer and a commit
//! of its own. Their asks add up, so together they never ask for more than the free slots.
//!
//! Only the first write lends the slot. When it fails, a claim it woke may already be queued
//! behind it and commit without it while the outcome is tried again: after a failed write,
//! and only then, the attempts started and not yet recorded can reach twice the slots (each
//! runs again once its lease ends, as any attempt whose outcome was lost).

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// The attempts of one dispatcher whose outcome's first write is under way.
#[derive(Debug, Default)]
pub(super) struct Settling {
    count: AtomicUsize,
    /// Woken as each such write begins: the dispatcher may claim for its slot.
    pub(super) began: Notify,
}

impl Settling {
    /// Outcomes whose first write is under way now.
    pub(super) fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Counts one outcome's first write until the guard drops. Taken just before the write
    /// is queued, in the same poll, so no claim it wakes can be queued ahead of it.
    pub(super) fn begin(&self) -> SettlingGuard<'_> {
        self.count.fetch_add(1, Ordering::AcqRel);
        self.began.notify_one();
        SettlingGuard(self)
    }
}

/// One outcome's first write, counted in its [`Settling`] until dropped.
pub(super) struct SettlingGuard<'a>(&'a Settling);

impl Drop for SettlingGuard<'_> {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The slots a claim may ask for: those no attempt holds, less those the claims in flight
/// asked for. An attempt whose outcome's first write is under way (`settling`, among `running`)
/// holds none, so at most twice the slots are ever claimed at once, and never more than the
/// slots run handlers.
pub(super) fn free_slots(slots: usize, running: usize, settling: usize, asked: usize) -> usize {
    let busy = running - settling.min(running);
    slots.saturating_sub(busy + asked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_being_written_lends_its_slot_and_nothing_more() {
        assert_eq!(free_slots(16, 16, 0, 0), 0, "every slot running");
        assert_eq!(free_slots(16, 16, 5, 0), 5, "five outcomes being written");
        assert_eq!(
            free_slots(16, 16, 5, 5),
            0,
            "and a claim asked for their slots"
        );
        assert_eq!(
            free_slots(16, 10, 10, 0),
            16,
            "all of them writing outcomes"
        );
        // The count is read apart from the set of attempts: never more than those running.
        assert_eq!(free_slots(16, 3, 5, 0), 16);
        assert_eq!(free_slots(16, 0, 0, 20), 0);
    }

    #[test]
    fn a_guard_counts_its_write_until_dropped() {
        let settling = Settling::default();
        let first = settling.begin();
        let second = settling.begin();
        assert_eq!(settling.count(), 2);
        drop(first);
        assert_eq!(settling.count(), 1);
        drop(second);
        assert_eq!(settling.count(), 0);
    }
}

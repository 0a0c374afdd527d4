//! When the dispatcher claims for its free slots: the rules alone, without I/O or a clock of
//! their own, so they are checked instant by instant.

use std::time::{Duration, Instant};

/// The longest a free slot waits for company before it is claimed for alone: claims are batched
/// (a quarter of the slots at a time) without a lone free slot idling behind slow tasks.
pub(super) const LINGER: Duration = Duration::from_millis(20);

/// How many times per interval, at most, slots freed by finished attempts look for newly due
/// tasks once the queue was found empty.
const EARLY_LOOKS_PER_INTERVAL: u32 = 2;

/// After a failed claim the next waits this long, doubling with each failure in a row up to
/// [`RETRY_MOST`], and never longer than the interval: a store back from an outage is used
/// again within seconds even when the interval is an hour, and a store still down is asked
/// at most every 30 s.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait after failed claims (when the interval is longer).
const RETRY_MOST: Duration = Duration::from_secs(30);

/// What the dispatcher knows when it decides to claim.
#[derive(Debug, Clone)]
pub(super) struct Refill {
    slots: usize,
    /// The most one claim asks for.
    batch: usize,
    interval: Duration,
    /// One run, which ends once a claim finds nothing: a short claim that found something
    /// (some lost to another processor) is followed by another before the run ends.
    until_idle: bool,
    /// When the last claim started; none yet: claim at once.
    last_claim: Option<Instant>,
    /// The last claim found fewer tasks than it asked for (or failed): nothing more was due.
    drained: bool,
    /// The last claim found nothing (or failed).
    empty: bool,
    /// The last claim failed: only the retry wait brings the next one.
    failed: bool,
    /// Claims failed in a row.
    failures: u32,
    /// Since when a slot freed by a finished attempt has waited for a claim.
    freed: Option<Instant>,
    /// A task due now was created through this process since the last claim.
    woken: bool,
    /// When tasks this process's claims held for their keys are due again (the earliest
    /// [`crate::store::HOLDS_NOTED`] of them).
    holds: std::collections::BTreeSet<Instant>,
}

impl Refill {
    pub(super) fn new(slots: usize, batch: usize, interval: Duration, until_idle: bool) -> Self {
        Self {
            slots: slots.max(1),
            batch: batch.max(1),
            interval,
            until_idle,
            last_claim: None,
            drained: false,
            empty: false,
            failed: false,
            failures: 0,
            freed: None,
            woken: false,
            holds: std::collections::BTreeSet::new(),
        }
    }

    /// When to claim for `free` slots while `running` attempts run: at or before `now` means
    /// at once; `None`, not until something happens (an attempt ends, a wake).
    pub(super) fn next_claim(&self, now: Instant, free: usize, running: usize) -> Option<Instant> {
        if free == 0 {
            return None;
        }
        let Some(last) = self.last_claim else {
            return Some(now);
        };
        if self.drained {
            if (self.woken || (self.until_idle && running == 0 && !self.empty)) && !self.failed {
                return Some(now);
            }
            if self.failed {
                return Some(last + self.retry_wait());
            }
            let poll = last + self.interval;
            let poll = self.holds.first().map_or(poll, |held| poll.min(*held));
            // A slot freed while the queue was empty looks again sooner: what fell due since is
            // started without waiting the whole interval, and empty looks stay few.
            let early = self
                .freed
                .map(|_| last + self.interval / EARLY_LOOKS_PER_INTERVAL);
            return Some(early.map_or(poll, |early| early.min(poll)));
        }
        let quarter = (self.slots / 4).max(1).min(self.batch);
        if free >= quarter || running == 0 {
            return Some(now);
        }
        self.freed.map(|since| since + LINGER)
    }

    /// How long after a failed claim the next one starts: see [`RETRY_FIRST`].
    pub(super) fn retry_wait(&self) -> Duration {
        let doublings = self.failures.saturating_sub(1).min(16);
        (RETRY_FIRST * 2u32.pow(doublings))
            .min(RETRY_MOST)
            .min(self.interval)
    }

    /// A claim starts at `now`.
    pub(super) fn claiming(&mut self, now: Instant) {
        // What is due by now, this claim sees.
        self.holds = self.holds.split_off(&(now + Duration::from_nanos(1)));
        self.last_claim = Some(now);
        self.freed = None;
        self.woken = false;
    }

    /// The claim asked for `asked` tasks and got `got`, or failed (`None`).
    pub(super) fn claimed(&mut self, asked: usize, got: Option<usize>) {
        self.failed = got.is_none();
        self.failures = if self.failed { self.failures + 1 } else { 0 };
        self.drained = got.is_none_or(|got| got < asked);
        self.empty = got.is_none_or(|got| got == 0);
    }

    /// The last claim's gate held back a type at its concurrency cap: what it found says
    /// nothing of that type's tasks, so a run does not end on it.
    pub(super) fn held_back(&mut self) {
        self.empty = false;
    }

    /// A claim held tasks for their keys until `holds`: the next look is no later than the
    /// first of them.
    pub(super) fn held_until(&mut self, holds: Vec<Instant>) {
        self.holds.extend(holds);
        while self.holds.len() > crate::store::HOLDS_NOTED {
            self.holds.pop_last();
        }
    }

    /// An attempt ended at `now`, freeing its slot.
    pub(super) fn attempt_ended(&mut self, now: Instant) {
        self.freed.get_or_insert(now);
    }

    /// A task due now was created through this process.
    pub(super) fn woken(&mut self) {
        self.woken = true;
    }

    /// True when a wake is already noted (the next claim will see it).
    pub(super) fn is_woken(&self) -> bool {
        self.woken
    }

    /// True when the last claim found fewer tasks than it asked for (or failed).
    pub(super) fn is_drained(&self) -> bool {
        self.drained
    }

    /// True when the last claim found nothing at all (or failed): a run may end.
    pub(super) fn found_nothing(&self) -> bool {
        self.drained && self.empty
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn after(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn the_first_claim_is_at_once_and_a_full_slot_set_never_claims() {
        let t0 = Instant::now();
        let refill = Refill::new(16, 100, SECOND, false);
        assert_eq!(refill.next_claim(t0, 16, 0), Some(t0));
        assert_eq!(refill.next_claim(t0, 0, 16), None);
    }

    #[test]
    fn behind_a_backlog_a_quarter_of_the_slots_claim_at_once_and_one_slot_after_the_linger() {
        let t0 = Instant::now();
        let mut refill = Refill::new(16, 100, SECOND, false);
        refill.claiming(t0);
        refill.claimed(16, Some(16));
        assert_eq!(refill.next_claim(t0, 0, 16), None);
        refill.attempt_ended(after(t0, 5));
        assert_eq!(
            refill.next_claim(after(t0, 6), 1, 15),
            Some(after(t0, 5) + LINGER)
        );
        assert_eq!(refill.next_claim(after(t0, 7), 4, 12), Some(after(t0, 7)));
        assert_eq!(
            refill.next_claim(after(t0, 7), 1, 0),
            Some(after(t0, 7)),
            "idle slots"
        );
    }

    #[test]
    fn tasks_held_for_their_keys_bring_looks_at_their_instants() {
        let t0 = Instant::now();
        let mut refill = Refill::new(16, 100, SECOND, false);
        refill.claiming(t0);
        refill.claimed(16, Some(1));
        refill.held_until(vec![after(t0, 400), after(t0, 200), after(t0, 3_000)]);
        assert_eq!(refill.next_claim(t0, 15, 1), Some(after(t0, 200)));
        refill.claiming(after(t0, 200));
        refill.claimed(15, Some(1));
        assert_eq!(
            refill.next_claim(after(t0, 200), 14, 2),
            Some(after(t0, 400))
        );
        refill.claiming(after(t0, 400));
        refill.claimed(14, Some(0));
        assert_eq!(
            refill.next_claim(after(t0, 400), 14, 2),
            Some(after(t0, 1_400)),
            "the interval comes before the last hold"
        );
    }

    #[test]
    fn once_drained_the_interval_brings_the_next_claim_unless_a_wake_or_a_freed_slot_does() {
        let t0 = Instant::now();
        let mut refill = Refill::new(16, 100, SECOND, false);
        refill.claiming(t0);
        refill.claimed(16, Some(3));
        assert!(refill.is_drained());
        assert_eq!(refill.next_claim(t0, 13, 3), Some(t0 + SECOND));
        refill.attempt_ended(after(t0, 10));
        assert_eq!(
            refill.next_claim(after(t0, 10), 14, 2),
            Some(t0 + SECOND / 2),
            "a freed slot looks again after half an interval"
        );
        refill.woken();
        assert_eq!(refill.next_claim(after(t0, 11), 14, 2), Some(after(t0, 11)));
        refill.claiming(after(t0, 11));
        assert!(!refill.is_woken());
    }

    #[test]
    fn after_a_failed_claim_only_the_interval_brings_the_next() {
        let t0 = Instant::now();
        let mut refill = Refill::new(16, 100, SECOND, false);
        refill.claiming(t0);
        refill.claimed(16, None);
        refill.attempt_ended(after(t0, 10));
        refill.woken();
        assert_eq!(refill.next_claim(after(t0, 20), 16, 0), Some(t0 + SECOND));
    }

    #[test]
    fn failed_claims_are_tried_again_within_seconds_however_long_the_interval() {
        let hour = Duration::from_secs(3600);
        let t0 = Instant::now();
        let mut refill = Refill::new(16, 100, hour, false);
        let mut at = t0;
        for wait in [1, 2, 4, 8, 16, 30, 30] {
            refill.claiming(at);
            refill.claimed(16, None);
            refill.woken();
            let next = at + Duration::from_secs(wait);
            assert_eq!(refill.next_claim(at, 16, 0), Some(next), "after {wait} s");
            at = next;
        }
        refill.claiming(at);
        refill.claimed(16, Some(0));
        refill.claiming(at);
        refill.claimed(16, None);
        assert_eq!(
            refill.retry_wait(),
            SECOND,
            "a success starts the waits over"
        );
    }

    #[test]
    fn a_run_looks_again_after_a_short_claim_that_found_something_before_it_ends() {
        let t0 = Instant::now();
        let mut refill = Refill::new(16, 100, SECOND, true);
        refill.claiming(t0);
        refill.claimed(4, Some(3));
        assert!(!refill.found_nothing());
        assert_eq!(refill.next_claim(after(t0, 50), 16, 0), Some(after(t0, 50)));
        assert_eq!(refill.next_claim(after(t0, 50), 14, 2), Some(t0 + SECOND));
        refill.claiming(after(t0, 50));
        refill.claimed(16, Some(0));
        assert!(refill.found_nothing());
    }

    #[test]
    fn a_batch_smaller_than_a_quarter_of_the_slots_refills_at_its_size() {
        let t0 = Instant::now();
        let mut refill = Refill::new(16, 1, SECOND, false);
        refill.claiming(t0);
        refill.claimed(1, Some(1));
        assert_eq!(refill.next_claim(after(t0, 1), 1, 15), Some(after(t0, 1)));
    }
}

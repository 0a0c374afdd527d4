//! Messages a send could not deliver (SQS stalled or unreachable), kept by the process that
//! tried and sent again after 1 s, 2 s, 4 s… up to [`LAST_WAIT`]: a queue that stalls for a
//! few seconds delays its tasks by seconds, not until the mover finds them late (30 s at
//! least, 5 minutes while the queue has a backlog). The mover stays the repair for a process
//! that stops before it sends them.

use std::sync::Mutex;
use std::time::Duration;

use crate::clock::Timestamp;
use crate::push::Delivery;

/// Messages kept at most; past it the newest wait for the mover.
pub(super) const KEEP_AT_MOST: usize = 10_000;
/// The wait before the first try again.
const FIRST_WAIT: Duration = Duration::from_secs(1);
/// The longest wait between tries.
const LAST_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct State {
    /// Each message as it was to be sent, and when.
    kept: Vec<(Delivery, Timestamp)>,
    /// When to try again, while any is kept.
    next_try: Option<Timestamp>,
    /// The wait after the next failure.
    wait: Duration,
}

/// The messages kept, shared by every clone of a Tasker.
#[derive(Debug, Default)]
pub(super) struct Unsent(Mutex<State>);

impl Unsent {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `deliveries` failed at `at`; answers how long until they are tried again.
    pub(super) fn keep(&self, deliveries: &[Delivery], at: Timestamp) -> Duration {
        let mut state = self.lock();
        let room = KEEP_AT_MOST.saturating_sub(state.kept.len());
        state
            .kept
            .extend(deliveries.iter().take(room).map(|delivery| (*delivery, at)));
        if state.wait.is_zero() {
            state.wait = FIRST_WAIT;
        }
        let wait = state.wait;
        state.next_try.get_or_insert(at.plus(wait));
        state.next_try.map_or(wait, |next| next.since(at))
    }

    /// The messages to try again at `now`, each delayed by what is left of its delay; none
    /// before the time to try again.
    pub(super) fn take_due(&self, now: Timestamp) -> Vec<Delivery> {
        let mut state = self.lock();
        if state.next_try.is_none_or(|next| next > now) {
            return Vec::new();
        }
        state.next_try = None;
        std::mem::take(&mut state.kept)
            .into_iter()
            .map(|(delivery, at)| {
                let gone = u32::try_from(now.since(at).as_secs()).unwrap_or(u32::MAX);
                Delivery {
                    delay_seconds: delivery.delay_seconds.saturating_sub(gone),
                    ..delivery
                }
            })
            .collect()
    }

    /// A try of what [`Unsent::take_due`] gave sent them all: unless others failed
    /// meanwhile, the next failure waits [`FIRST_WAIT`] again.
    pub(super) fn sent(&self) {
        let mut state = self.lock();
        if state.kept.is_empty() {
            state.wait = Duration::ZERO;
        }
    }

    /// A try at `now` of `deliveries` failed again: they wait twice as long as last time (at
    /// most [`LAST_WAIT`]); answers that wait.
    pub(super) fn failed_again(&self, deliveries: &[Delivery], now: Timestamp) -> Duration {
        {
            let mut state = self.lock();
            state.wait = (state.wait * 2).clamp(FIRST_WAIT, LAST_WAIT);
            state.next_try = None;
        }
        self.keep(deliveries, now)
    }

    /// Messages kept now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().kept.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskId;

    fn delivery(delay_seconds: u32) -> Delivery {
        Delivery {
            id: TaskId::new(time::OffsetDateTime::now_utc()),
            delay_seconds,
            booked: None,
        }
    }

    #[test]
    fn kept_messages_wait_then_come_back_with_what_is_left_of_their_delay() {
        let unsent = Unsent::default();
        let t0 = Timestamp::now_utc();
        let wait = unsent.keep(&[delivery(0), delivery(5)], t0);
        assert_eq!(wait, FIRST_WAIT);
        assert!(
            unsent
                .take_due(t0.plus(Duration::from_millis(999)))
                .is_empty()
        );
        let due = unsent.take_due(t0.plus(Duration::from_millis(2500)));
        let delays: Vec<u32> = due.iter().map(|d| d.delay_seconds).collect();
        assert_eq!(delays, [0, 3]);
        assert_eq!(unsent.len(), 0);
        assert!(unsent.take_due(t0.plus(Duration::from_secs(60))).is_empty());
    }

    #[test]
    fn each_failure_again_doubles_the_wait_up_to_the_last_and_a_send_resets_it() {
        let unsent = Unsent::default();
        let mut now = Timestamp::now_utc();
        unsent.keep(&[delivery(0)], now);
        let mut waits = Vec::new();
        for _ in 0..7 {
            now = now.plus(LAST_WAIT);
            let due = unsent.take_due(now);
            waits.push(unsent.failed_again(&due, now).as_secs());
        }
        assert_eq!(waits, [2, 4, 8, 16, 30, 30, 30]);
        now = now.plus(LAST_WAIT);
        assert_eq!(unsent.take_due(now).len(), 1);
        unsent.sent();
        assert_eq!(unsent.keep(&[delivery(0)], now), FIRST_WAIT);
    }

    #[test]
    fn no_more_than_the_most_kept_are_kept() {
        let unsent = Unsent::default();
        let many: Vec<Delivery> = (0..KEEP_AT_MOST + 5).map(|_| delivery(0)).collect();
        unsent.keep(&many, Timestamp::now_utc());
        assert_eq!(unsent.len(), KEEP_AT_MOST);
    }
}

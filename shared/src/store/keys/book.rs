//! One claim's account of the keys it meets: what the store says of each key (tasks running,
//! the rate's next start), the starts this claim adds, and for each due task whether it starts
//! or waits and until when. Every backend asks the same questions inside its claim's
//! transaction and stores what the book decides.

use std::collections::HashMap;
use std::time::Duration;

use super::limits::{KeyLimits, Rate};
use crate::clock::Timestamp;
use crate::store::Transition;
use crate::task::{Held, Task};

/// The running tasks of a concurrency key as the store counts them: leases not yet expired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Holders {
    /// How many.
    pub running: u32,
    /// The earliest of their leases' ends: a slot is free by then whatever happens.
    pub first_end: Option<Timestamp>,
}

/// What a key's state the book still needs from the store before it can judge a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// The running tasks of this concurrency key.
    Holders(String),
    /// The next start of this rate key (its GCRA theoretical arrival time).
    NextStart(String),
}

/// What a claim does with a due task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Start it: its keys had room, and the book counts it.
    Start,
    /// Leave it pending until `until`, held for `held`.
    Hold {
        /// The limit at its end.
        held: Held,
        /// When it is due again.
        until: Timestamp,
    },
}

impl Verdict {
    /// What a claim by `due_by`, at `now`, writes for a task so judged: its claim under a lease
    /// to `lease_until`, or its hold.
    pub fn transition(
        self,
        due_by: Timestamp,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Transition {
        match self {
            Self::Start => Transition::claim(due_by, now, lease_until),
            Self::Hold { held, until } => Transition::Hold {
                due_by,
                now,
                until,
                held,
            },
        }
    }
}

/// A start a rate key books for a task its rate holds, in SQS mode, where a held task waits
/// for a message: each held task gets a start of its own, one interval after the last one
/// booked, so its message comes once, when it may start, instead of every held task's message
/// coming for the key's next start and all but one being held again. A booking only spreads
/// the messages: the claim that starts the task still checks the key's rate. Starts are booked
/// at most [`BOOK_AHEAD`] ahead; a task held past them is held until then, unbooked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Booking<'t> {
    /// The rate key.
    pub key: &'t str,
    /// The key's next start, which the task was held until.
    pub earliest: Timestamp,
    /// The time one start of the key uses up.
    pub interval: Duration,
    /// The last start that may be booked: [`BOOK_AHEAD`] after the claim.
    pub latest: Timestamp,
}

/// How far ahead a rate key books starts. Under the mover's patience with a late task on a
/// store that does not write holds (5 minutes, DynamoDB), so a booked task is not taken for
/// one whose message was lost, and well under SQS's longest delay.
pub const BOOK_AHEAD: Duration = Duration::from_secs(240);

impl Booking<'_> {
    /// The start booked, and the key's first start not booked after it, given the first
    /// start not booked before (`None`: the key never booked one); `None` when that start is
    /// past [`Booking::latest`].
    pub fn start(&self, unbooked: Option<Timestamp>) -> Option<(Timestamp, Timestamp)> {
        let start = unbooked.map_or(self.earliest, |at| at.max(self.earliest));
        (start <= self.latest).then(|| (start, start.plus(self.interval)))
    }

    /// Until when a task is held that the key could not book a start for: the last start it
    /// books (or its next start, when later).
    pub fn beyond(&self) -> Timestamp {
        self.earliest.max(self.latest)
    }

    /// The hold of a task booked to start at `start`.
    pub fn hold(start: Timestamp) -> Verdict {
        Verdict::Hold {
            held: Held::Rate,
            until: start,
        }
    }
}

/// One claim's keys (see the module documentation).
#[derive(Debug)]
pub struct KeyBook<'a> {
    limits: &'a KeyLimits,
    now: Timestamp,
    holders: HashMap<String, Holders>,
    /// Per rate key: the next start as read (`None`: never started), then as this claim moved it.
    next_start: HashMap<String, Option<Timestamp>>,
    /// Per rate key: tasks this claim held, so the held ones are spread one interval apart
    /// instead of all due again at the same instant.
    rate_held: HashMap<String, u32>,
    /// Per concurrency key: tasks this claim held, spread the same way (see [`KeyBook::judge`]).
    concurrency_held: HashMap<String, u32>,
    /// Rate keys whose next start this claim moved: the backend writes them back.
    moved: Vec<String>,
    /// The longest a concurrency hold lasts, when capped.
    concurrency_hold_cap: Option<Duration>,
}

impl<'a> KeyBook<'a> {
    /// An empty book for a claim at `now`.
    pub fn new(limits: &'a KeyLimits, now: Timestamp) -> Self {
        Self {
            limits,
            now,
            holders: HashMap::new(),
            next_start: HashMap::new(),
            rate_held: HashMap::new(),
            concurrency_held: HashMap::new(),
            moved: Vec::new(),
            concurrency_hold_cap: None,
        }
    }

    /// This book, holding a task for its key's concurrency at most `cap` (when given).
    pub fn with_concurrency_hold_cap(mut self, cap: Option<Duration>) -> Self {
        self.concurrency_hold_cap = cap;
        self
    }

    fn concurrency_of<'t>(&self, task: &'t Task) -> Option<(&'t str, u32)> {
        let key = task.concurrency_key.as_deref()?;
        Some((key, self.limits.concurrency(&task.task_type, key)?))
    }

    fn rate_of<'t>(&self, task: &'t Task) -> Option<(&'t str, Rate)> {
        let key = task.rate_key.as_deref()?;
        Some((key, self.limits.rate(&task.task_type, key)?))
    }

    /// True when `task` has a key with a limit: the book must judge it.
    pub fn limits(&self, task: &Task) -> bool {
        self.limits.limit_any(task)
    }

    /// What the store must tell the book before it judges `task`.
    pub fn needs(&self, task: &Task) -> Vec<Need> {
        let mut needs = Vec::new();
        if let Some((key, _)) = self.concurrency_of(task) {
            if !self.holders.contains_key(key) {
                needs.push(Need::Holders(key.to_owned()));
            }
        }
        if let Some((key, _)) = self.rate_of(task) {
            if !self.next_start.contains_key(key) {
                needs.push(Need::NextStart(key.to_owned()));
            }
        }
        needs
    }

    /// The store's count of `key`'s running tasks.
    pub fn know_holders(&mut self, key: String, holders: Holders) {
        self.holders.insert(key, holders);
    }

    /// The store's next start of `key`, if it ever started a task.
    pub fn know_next_start(&mut self, key: String, next: Option<Timestamp>) {
        self.next_start.insert(key, next);
    }

    /// Starts `task` under a lease to `lease_until`, or holds it: held for concurrency when its
    /// concurrency key runs its limit (until the first holder's lease ends; a holder that ends
    /// sooner wakes it), else for rate when its rate key's next start is beyond the burst
    /// (until then, and later tasks of the key one interval apart). A start is counted in the
    /// book. The backend gave the book every [`Need`] first (a missing one counts as none).
    ///
    /// The k-th task a claim holds for a key's concurrency (from 0) is due again `k / limit`
    /// lease lengths after the first holder's lease ends: no sooner can it start if every
    /// holder runs its whole lease, and outcomes wake held tasks earliest first, so a backlog
    /// is not read again at once when the first lease ends.
    pub fn judge(&mut self, task: &Task, lease_until: Timestamp) -> Verdict {
        let concurrency = self.concurrency_of(task).map(|(k, n)| (k.to_owned(), n));
        let rate = self.rate_of(task).map(|(k, r)| (k.to_owned(), r));
        if let Some((key, limit)) = &concurrency {
            let holders = self.holders.get(key).copied().unwrap_or_default();
            if holders.running >= *limit {
                let queued = self.concurrency_held.entry(key.clone()).or_default();
                let lease = lease_until.since(self.now);
                let until = holders
                    .first_end
                    .unwrap_or(self.now.plus(Duration::from_secs(1)))
                    .max(self.now.plus(Duration::from_millis(1)))
                    .plus(lease * (*queued / limit));
                let until = self
                    .concurrency_hold_cap
                    .map_or(until, |cap| until.min(self.now.plus(cap)));
                *queued += 1;
                return Verdict::Hold {
                    held: Held::Concurrency,
                    until,
                };
            }
        }
        if let Some((key, rate)) = &rate {
            let next = self
                .next_start
                .get(key)
                .copied()
                .flatten()
                .unwrap_or(self.now)
                .max(self.now);
            let earliest = next.minus(rate.tolerance());
            if earliest > self.now {
                let queued = self.rate_held.entry(key.clone()).or_default();
                let until = earliest.plus(rate.interval() * *queued);
                *queued += 1;
                return Verdict::Hold {
                    held: Held::Rate,
                    until,
                };
            }
            self.next_start
                .insert(key.clone(), Some(next.plus(rate.interval())));
            if !self.moved.contains(key) {
                self.moved.push(key.clone());
            }
        }
        if let Some((key, _)) = concurrency {
            let holders = self.holders.entry(key).or_default();
            holders.running += 1;
            holders.first_end = Some(
                holders
                    .first_end
                    .map_or(lease_until, |t| t.min(lease_until)),
            );
        }
        Verdict::Start
    }

    /// The booking of a start for `task` when `verdict` holds it for its rate key.
    pub fn booking<'t>(&self, task: &'t Task, verdict: Verdict) -> Option<Booking<'t>> {
        let Verdict::Hold {
            held: Held::Rate,
            until,
        } = verdict
        else {
            return None;
        };
        let (key, rate) = self.rate_of(task)?;
        Some(Booking {
            key,
            earliest: until,
            interval: rate.interval(),
            latest: self.now.plus(BOOK_AHEAD),
        })
    }

    /// The rate keys this claim started tasks of, with their new next start: the backend
    /// stores them in the claim's transaction.
    pub fn moved(&self) -> impl Iterator<Item = (&str, Timestamp)> {
        self.moved.iter().filter_map(|key| {
            let next = self.next_start.get(key).copied().flatten()?;
            Some((key.as_str(), next))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::NewTask;

    fn at(millis: u64) -> Timestamp {
        let t0: Timestamp = "2030-01-01T00:00:00Z".parse().expect("timestamp");
        t0.plus(Duration::from_millis(millis))
    }

    fn task(concurrency: Option<&str>, rate: Option<&str>) -> Task {
        let mut new = NewTask::new("hook", "{}");
        new.concurrency_key = concurrency.map(str::to_owned);
        new.rate_key = rate.map(str::to_owned);
        Task::from_new(new, at(0))
    }

    #[test]
    fn a_full_key_holds_until_its_first_lease_ends() {
        let limits = KeyLimits::parse(r#"[{"type": "hook", "concurrency": 2}]"#).expect("limits");
        let mut book = KeyBook::new(&limits, at(0));
        let t = task(Some("a"), None);
        assert_eq!(book.needs(&t), vec![Need::Holders("a".into())]);
        book.know_holders(
            "a".into(),
            Holders {
                running: 1,
                first_end: Some(at(9_000)),
            },
        );
        assert!(book.needs(&t).is_empty());
        assert_eq!(book.judge(&t, at(30_000)), Verdict::Start);
        assert_eq!(
            book.judge(&t, at(30_000)),
            Verdict::Hold {
                held: Held::Concurrency,
                until: at(9_000)
            }
        );
        assert_eq!(
            book.judge(&task(Some("b"), None), at(30_000)),
            Verdict::Start
        );
        assert_eq!(book.judge(&task(None, None), at(30_000)), Verdict::Start);
    }

    #[test]
    fn a_rate_admits_its_burst_then_spreads_the_rest() {
        let limits = KeyLimits::parse(r#"[{"keyPrefix": "r", "rate": "5/1s", "burst": 2}]"#)
            .expect("limits");
        let mut book = KeyBook::new(&limits, at(1_000));
        let t = task(None, Some("r1"));
        assert_eq!(book.needs(&t), vec![Need::NextStart("r1".into())]);
        book.know_next_start("r1".into(), Some(at(500)));
        let lease = at(60_000);
        assert_eq!(book.judge(&t, lease), Verdict::Start);
        assert_eq!(book.judge(&t, lease), Verdict::Start);
        let holds: Vec<Verdict> = (0..3).map(|_| book.judge(&t, lease)).collect();
        let rate = |until| Verdict::Hold {
            held: Held::Rate,
            until,
        };
        assert_eq!(
            holds,
            vec![rate(at(1_200)), rate(at(1_400)), rate(at(1_600))]
        );
        assert_eq!(book.moved().collect::<Vec<_>>(), vec![("r1", at(1_400))]);
    }

    #[test]
    fn a_booking_starts_after_the_last_one_booked_and_never_before_the_rate_allows() {
        let limits = KeyLimits::parse(r#"[{"keyPrefix": "r", "rate": "5/1s"}]"#).expect("limits");
        let mut book = KeyBook::new(&limits, at(1_000));
        let t = task(None, Some("r1"));
        book.know_next_start("r1".into(), Some(at(1_300)));
        let held = book.judge(&t, at(60_000));
        let booking = book.booking(&t, held).expect("held for its rate");
        assert_eq!(booking.earliest, at(1_300));
        assert_eq!(booking.start(None), Some((at(1_300), at(1_500))));
        assert_eq!(booking.start(Some(at(2_100))), Some((at(2_100), at(2_300))));
        assert_eq!(booking.start(Some(at(900))), Some((at(1_300), at(1_500))));
        let last = at(1_000).plus(BOOK_AHEAD);
        assert_eq!(booking.latest, last);
        assert!(booking.start(Some(last)).is_some());
        assert_eq!(
            booking.start(Some(last.plus(Duration::from_millis(1)))),
            None
        );
        assert_eq!(booking.beyond(), last);
        assert_eq!(book.booking(&t, Verdict::Start), None);
        let unlimited = task(None, Some("other"));
        assert_eq!(book.booking(&unlimited, held), None);
    }
}

//! A circuit breaker per receiving host (`TASKER_WEBHOOK_BREAKER`, off by default), in each
//! process: once most of a host's last attempts failed (a request error or a 5xx), its
//! webhooks are held, not sent, for a while; then one probe goes out, and its answer closes
//! the circuit or opens it again. Held tasks keep their attempts (a dead receiver does not use
//! up its webhooks' retries) and wait out of the queue's way. A request carries the number of
//! times its host's circuit had opened when it was let out, so a late answer from an outage
//! never counts in the window after it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Attempts per host the breaker remembers.
pub const WINDOW: usize = 20;
/// Attempts it needs before it opens at all.
pub const MIN_ATTEMPTS: usize = 10;
/// Hosts it remembers: past this, the closed circuits' histories are forgotten (the open ones
/// stay), so a process that meets many hosts keeps a bounded map.
pub const MAX_HOSTS: usize = 4096;

/// How one host's requests go now.
#[derive(Debug, Clone)]
enum State {
    /// Sent; the last [`WINDOW`] outcomes, true for a failure.
    Closed(VecDeque<bool>),
    /// Held until then.
    Open(Instant),
    /// One probe out since then; the others held.
    Probing(Instant),
}

/// One host's circuit, and how many times it opened: an answer to a request admitted before
/// the last opening is late and counts for nothing.
#[derive(Debug, Clone)]
struct Host {
    state: State,
    openings: u64,
}

/// Whether a request may go out, and as what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Sent as usual, while the host's circuit had opened this many times.
    Send(u64),
    /// Sent as the one probe of a circuit that was open.
    Probe,
    /// Held: try again after this long.
    Hold(Duration),
}

/// Every host's circuit in this process.
#[derive(Debug)]
pub struct Breakers {
    open_for: Duration,
    hosts: Mutex<HashMap<String, Host>>,
}

impl Breakers {
    /// Breakers that stay open `open_for` before a probe.
    pub fn new(open_for: Duration) -> Self {
        Self {
            open_for,
            hosts: Mutex::default(),
        }
    }

    fn hosts(&self) -> std::sync::MutexGuard<'_, HashMap<String, Host>> {
        self.hosts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a request to `host` may go out at `now`. A probe that never reported (its
    /// process stopped) is given up after `open_for`, and another goes out.
    pub fn admit(&self, host: &str, now: Instant) -> Admit {
        let mut hosts = self.hosts();
        let Some(Host { state, openings }) = hosts.get_mut(host) else {
            return Admit::Send(0);
        };
        match *state {
            State::Closed(_) => Admit::Send(*openings),
            State::Open(until) | State::Probing(until) if now < until => Admit::Hold(until - now),
            State::Open(_) | State::Probing(_) => {
                *state = State::Probing(now + self.open_for);
                Admit::Probe
            }
        }
    }

    /// Records the answer of a request `admit` let out: a probe's closes or opens the circuit;
    /// another's opens it once most of the last [`WINDOW`] failed (at least [`MIN_ATTEMPTS`]).
    /// True when this opened it.
    pub fn record(&self, host: &str, admitted: Admit, failed: bool, now: Instant) -> bool {
        let mut hosts = self.hosts();
        if hosts.len() >= MAX_HOSTS && !hosts.contains_key(host) {
            hosts.retain(|_, known| !matches!(known.state, State::Closed(_)));
        }
        let Host { state, openings } = hosts.entry(host.to_owned()).or_insert_with(|| Host {
            state: State::Closed(VecDeque::new()),
            openings: 0,
        });
        let opens = match (admitted, &mut *state) {
            (Admit::Probe, _) => failed,
            // Sent before the circuit last opened: a late answer of the outage.
            (Admit::Send(seen), _) if seen != *openings => return false,
            (_, State::Closed(recent)) => {
                recent.push_back(failed);
                if recent.len() > WINDOW {
                    recent.pop_front();
                }
                let failures = recent.iter().filter(|f| **f).count();
                recent.len() >= MIN_ATTEMPTS && failures * 2 > recent.len()
            }
            // A request sent before the circuit opened answers late: the circuit stands.
            _ => return false,
        };
        *state = if opens {
            *openings += 1;
            State::Open(now + self.open_for)
        } else {
            match (admitted, &*state) {
                (Admit::Probe, _) => State::Closed(VecDeque::new()),
                _ => state.clone(),
            }
        };
        opens
    }

    /// The hosts whose circuit is open or probing at `now`, each with how long it holds yet.
    pub fn open(&self, now: Instant) -> Vec<(String, Duration)> {
        let mut open: Vec<(String, Duration)> = self
            .hosts()
            .iter()
            .filter_map(|(host, known)| match known.state {
                State::Open(until) | State::Probing(until) => {
                    Some((host.clone(), until.saturating_duration_since(now)))
                }
                State::Closed(_) => None,
            })
            .collect();
        open.sort();
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN_FOR: Duration = Duration::from_secs(30);

    #[test]
    fn most_of_the_last_attempts_failing_opens_the_circuit_and_a_probe_closes_it() {
        let breakers = Breakers::new(OPEN_FOR);
        let t0 = Instant::now();
        for i in 0..(MIN_ATTEMPTS - 1) {
            assert_eq!(breakers.admit("h", t0), Admit::Send(0));
            assert!(
                !breakers.record("h", Admit::Send(0), true, t0),
                "too few yet ({i})"
            );
        }
        assert!(
            breakers.record("h", Admit::Send(0), true, t0),
            "the tenth failure opens it"
        );
        assert_eq!(breakers.admit("h", t0), Admit::Hold(OPEN_FOR));
        assert_eq!(breakers.admit("other", t0), Admit::Send(0), "per host");
        assert_eq!(breakers.open(t0), vec![("h".to_owned(), OPEN_FOR)]);

        let later = t0 + OPEN_FOR;
        assert_eq!(breakers.admit("h", later), Admit::Probe);
        assert_eq!(
            breakers.admit("h", later),
            Admit::Hold(OPEN_FOR),
            "one probe at a time"
        );
        assert!(
            breakers.record("h", Admit::Probe, true, later),
            "a failed probe reopens"
        );
        let again = later + OPEN_FOR;
        assert_eq!(breakers.admit("h", again), Admit::Probe);
        assert!(!breakers.record("h", Admit::Probe, false, again));
        assert_eq!(
            breakers.admit("h", again),
            Admit::Send(2),
            "closed, after two openings"
        );
        assert!(breakers.open(again).is_empty());
    }

    #[test]
    fn half_failing_or_late_answers_leave_it_closed() {
        let breakers = Breakers::new(OPEN_FOR);
        let t0 = Instant::now();
        for i in 0..WINDOW {
            assert!(!breakers.record("h", Admit::Send(0), i % 2 == 1, t0));
        }
        assert_eq!(breakers.admit("h", t0), Admit::Send(0), "half is not most");
        for _ in 0..WINDOW {
            breakers.record("h", Admit::Send(0), true, t0);
        }
        assert!(
            !breakers.record("h", Admit::Send(0), true, t0),
            "already open"
        );
        assert_eq!(breakers.admit("h", t0), Admit::Hold(OPEN_FOR));
    }

    #[test]
    fn answers_from_before_an_opening_do_not_count_after_the_probe_closed_it() {
        let breakers = Breakers::new(OPEN_FOR);
        let t0 = Instant::now();
        let early: Vec<Admit> = (0..WINDOW).map(|_| breakers.admit("h", t0)).collect();
        for admitted in &early[..MIN_ATTEMPTS] {
            breakers.record("h", *admitted, true, t0);
        }
        let later = t0 + OPEN_FOR;
        assert_eq!(breakers.admit("h", later), Admit::Probe);
        assert!(!breakers.record("h", Admit::Probe, false, later), "closed");
        for admitted in &early[MIN_ATTEMPTS..] {
            assert!(!breakers.record("h", *admitted, true, later), "late");
        }
        assert_eq!(breakers.admit("h", later), Admit::Send(1), "still closed");
    }

    #[test]
    fn closed_circuits_are_forgotten_past_the_hosts_cap_and_open_ones_kept() {
        let breakers = Breakers::new(OPEN_FOR);
        let t0 = Instant::now();
        for _ in 0..MIN_ATTEMPTS {
            breakers.record("down", Admit::Send(0), true, t0);
        }
        for i in 0..MAX_HOSTS {
            breakers.record(&format!("h{i}"), Admit::Send(0), false, t0);
        }
        assert!(breakers.hosts().len() <= MAX_HOSTS);
        assert_eq!(breakers.admit("down", t0), Admit::Hold(OPEN_FOR));
    }
}

//! When tasks created through this process fall due, so its loop looks then instead of at its
//! next poll: a task created for 1 s from now starts within milliseconds of its instant, not
//! up to an interval later.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::Notify;

use crate::store::HOLDS_NOTED;

/// The earliest instants noted since the loop last took them (at most [`HOLDS_NOTED`]).
#[derive(Debug, Default)]
pub(super) struct DueLater {
    instants: Mutex<BTreeSet<Instant>>,
    noted: Notify,
}

impl DueLater {
    /// A task falls due at `at`.
    pub(super) fn note(&self, at: Instant) {
        let mut instants = self.instants.lock().unwrap_or_else(|p| p.into_inner());
        instants.insert(at);
        while instants.len() > HOLDS_NOTED {
            instants.pop_last();
        }
        drop(instants);
        self.noted.notify_one();
    }

    /// The instants noted since the last call.
    pub(super) fn take(&self) -> Vec<Instant> {
        std::mem::take(&mut *self.instants.lock().unwrap_or_else(|p| p.into_inner()))
            .into_iter()
            .collect()
    }

    /// Completes once an instant is noted (at once if one was since the last wait).
    pub(super) async fn noted(&self) {
        self.noted.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn only_the_earliest_instants_are_kept() {
        let due = DueLater::default();
        let t0 = Instant::now();
        for ms in (0..=HOLDS_NOTED as u64).rev() {
            due.note(t0 + Duration::from_millis(ms));
        }
        let taken = due.take();
        assert_eq!(taken.len(), HOLDS_NOTED);
        assert_eq!(taken.first(), Some(&t0));
        assert!(due.take().is_empty(), "taken once");
    }
}

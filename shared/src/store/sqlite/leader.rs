//! The group commit's leader: the write that finds no leader at work starts one on a thread of
//! the blocking pool, and it runs the queued writes group after group ([`super::group`]) while
//! any are queued.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::group::{GroupWrite, run_group};
use crate::store::StoreError;

/// The longest a leader waits for the next write once the queue is empty (see [`lead`]), and
/// the fewest writes of the group before that make it wait at all.
const LINGER_MOST: Duration = Duration::from_millis(1);
const LINGER_AFTER: usize = 4;

/// The writes waiting for the next group, shared by a store's clones.
pub(super) type Queue = Arc<Mutex<Pending>>;

/// The writes waiting for the next group, and whether a leader is at work.
#[derive(Debug, Default)]
pub(super) struct Pending {
    writes: Vec<Box<dyn GroupWrite>>,
    led: bool,
}

/// Queues `write`: true when no leader is at work, so the caller must start one
/// ([`lead`]).
pub(super) fn push(queue: &Queue, write: Box<dyn GroupWrite>) -> bool {
    let mut pending = queue.lock().unwrap_or_else(|p| p.into_inner());
    pending.writes.push(write);
    !std::mem::replace(&mut pending.led, true)
}

/// A leader's turn: runs groups on `conn` while writes are queued, so that under load one
/// thread goes from group to group instead of a new one waking for each. The connection is
/// handed over fairly after each group, so a read waiting for it (an in-memory store has no
/// other connection) goes before the next group.
///
/// After a group of [`LINGER_AFTER`] writes or more, a leader that finds the queue empty
/// waits for the next write for as long as that group took (at most [`LINGER_MOST`]),
/// yielding its core meanwhile, before its turn ends: under load the group's answers bring
/// the next writes within about that time, and a new leader's thread would take a wake-up to
/// start. A quiet queue's groups (a lone write) end the turn at once.
pub(super) fn lead(conn: &parking_lot::Mutex<Connection>, mut turn: Turn) {
    let mut linger = Duration::ZERO;
    while let Some(batch) = turn.next_batch(linger) {
        let (size, started) = (batch.len(), Instant::now());
        let mut conn = conn.lock();
        run_group(&mut conn, batch);
        parking_lot::MutexGuard::unlock_fair(conn);
        linger = if size >= LINGER_AFTER {
            started.elapsed().min(LINGER_MOST)
        } else {
            Duration::ZERO
        };
    }
}

/// A leader's hold on the queue, made before its thread starts. Dropped before the queue is
/// empty (the thread never ran, as when the runtime shuts down, or a write panicked), it
/// answers what is queued, so that no write waits for a leader that is gone.
pub(super) struct Turn(Option<Queue>);

impl Turn {
    /// The turn of the leader [`push`] asked for.
    pub(super) fn new(queue: Queue) -> Self {
        Self(Some(queue))
    }

    /// The writes queued now, or within `linger` if none are; none (and the turn ends) when
    /// none came.
    fn next_batch(&mut self, linger: Duration) -> Option<Vec<Box<dyn GroupWrite>>> {
        let queue = self.0.as_ref()?;
        let started = Instant::now();
        let mut pending = queue.lock().unwrap_or_else(|p| p.into_inner());
        while pending.writes.is_empty() && started.elapsed() < linger {
            drop(pending);
            std::thread::yield_now();
            pending = queue.lock().unwrap_or_else(|p| p.into_inner());
        }
        if pending.writes.is_empty() {
            pending.led = false;
            drop(pending);
            self.0 = None;
            return None;
        }
        Some(std::mem::take(&mut pending.writes))
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(queue) = self.0.take() else { return };
        let stranded = {
            let mut pending = queue.lock().unwrap_or_else(|p| p.into_inner());
            pending.led = false;
            std::mem::take(&mut pending.writes)
        };
        let err = StoreError::backend("the SQLite writer stopped before the write");
        for write in stranded {
            write.answer(Some(err.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::Transaction;

    use super::*;
    use crate::store::sqlite::group::Write;

    type Answer = tokio::sync::oneshot::Receiver<Result<(), StoreError>>;

    /// A write that changes nothing.
    fn write() -> (Box<dyn GroupWrite>, Answer) {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let work = |_: &Transaction<'_>| Ok(());
        (Box::new(Write::new(work, false, reply)), answer)
    }

    #[test]
    fn a_leader_that_never_ran_answers_the_queued_writes_and_the_next_write_leads() {
        let queue = Queue::default();
        let (first, mut answer) = write();
        assert!(push(&queue, first), "the first write asks for a leader");
        let (second, _) = write();
        assert!(!push(&queue, second), "a leader is at work");
        drop(Turn::new(Arc::clone(&queue)));
        assert!(
            answer
                .try_recv()
                .expect("answered")
                .is_err_and(|e| e.to_string().contains("stopped before the write"))
        );
        let (third, _) = write();
        assert!(push(&queue, third), "the next write asks for a new leader");
    }

    #[test]
    fn a_lingering_leader_takes_a_write_queued_meanwhile_and_a_quiet_one_ends_its_turn() {
        let queue = Queue::default();
        let (first, _) = write();
        assert!(push(&queue, first));
        let mut turn = Turn::new(Arc::clone(&queue));
        assert_eq!(turn.next_batch(Duration::ZERO).map(|b| b.len()), Some(1));
        let pusher = std::thread::spawn({
            let queue = Arc::clone(&queue);
            move || {
                std::thread::sleep(Duration::from_millis(50));
                let (second, _) = write();
                push(&queue, second)
            }
        });
        // Far longer than the push takes: the turn ends as soon as the write is taken.
        let lingered = turn.next_batch(Duration::from_secs(30));
        assert!(
            !pusher.join().expect("pusher"),
            "the lingering leader is still at work"
        );
        assert_eq!(lingered.map(|b| b.len()), Some(1));
        assert!(turn.next_batch(Duration::ZERO).is_none(), "the turn ends");
        let (third, _) = write();
        assert!(push(&queue, third), "the next write asks for a new leader");
    }
}

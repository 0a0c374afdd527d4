//! Group commit: every write of a store (creates, claims, outcomes, the operators' changes)
//! queues here, and the write that finds no leader at work starts one. The leader takes every
//! write queued by then and runs them in one immediate transaction, answering each after the
//! commit, and goes on while writes are queued. Under load a claim shares its commit with the
//! outcomes that freed its slots, and creates share one, instead of a transaction each
//! (SQLite's cost per transaction is its WAL frames and its locks; a task's rows are cheap).
//!
//! A write's failure undoes only that write. A write of several steps runs in a savepoint of
//! its own, rolled back when it fails. The hot writes (a create, an outcome) skip the
//! savepoint, whose cost is a copy of every page they touch: they nearly always fail before
//! changing anything, which the group checks by SQLite's count of changed rows. One that fails
//! after a change fails its whole group, rolled back, each write answered with the error.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::counts;
use super::rows::sqlite_error;
use crate::store::StoreError;

/// The longest a leader waits for the next write once the queue is empty (see [`lead`]), and
/// the fewest writes of the group before that make it wait at all.
const LINGER_MOST: Duration = Duration::from_millis(1);
const LINGER_AFTER: usize = 4;

/// A write waiting for the next group.
pub(super) trait GroupWrite: Send {
    /// Runs in the group's transaction; false when it failed (its changes are undone).
    fn run(&mut self, tx: &Transaction<'_>) -> bool;

    /// True when it runs in a savepoint of its own (it may fail between its steps).
    fn in_savepoint(&self) -> bool;

    /// Answers its caller once the group ended: `failed` when the group was not committed.
    fn answer(self: Box<Self>, failed: Option<StoreError>);
}

impl std::fmt::Debug for dyn GroupWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupWrite")
    }
}

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

/// A write of `work`, whose answer goes to `reply`.
pub(super) struct Write<T, F> {
    work: Option<F>,
    in_savepoint: bool,
    result: Option<Result<T, StoreError>>,
    reply: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Write<T, F> {
    /// A write of `work`; `in_savepoint` as [`GroupWrite::in_savepoint`].
    pub(super) fn new(
        work: F,
        in_savepoint: bool,
        reply: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
    ) -> Self {
        Self {
            work: Some(work),
            in_savepoint,
            result: None,
            reply,
        }
    }
}

impl<T, F> GroupWrite for Write<T, F>
where
    T: Send,
    F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, tx: &Transaction<'_>) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let result = work(tx);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn in_savepoint(&self) -> bool {
        self.in_savepoint
    }

    fn answer(self: Box<Self>, failed: Option<StoreError>) {
        let answer = match (self.result, failed) {
            // Its own failure says more than the group's.
            (Some(Err(err)), _) | (_, Some(err)) => Err(err),
            (Some(Ok(value)), None) => Ok(value),
            (None, None) => Err(StoreError::backend("the SQLite write never ran")),
        };
        let _ = self.reply.send(answer);
    }
}

/// Runs `batch` in one immediate transaction on `conn` and answers each write.
pub(super) fn run_group(conn: &mut Connection, mut batch: Vec<Box<dyn GroupWrite>>) {
    let failed = write_all(conn, &mut batch).err();
    for write in batch {
        write.answer(failed.clone());
    }
}

/// The transaction of [`run_group`]: a failure of the group's own statements (begin,
/// savepoints, commit), one after which SQLite rolled the whole transaction back on its own,
/// or one of a write without a savepoint after it changed a row, fails every write; any other
/// failure of a write undoes only that write.
fn write_all(conn: &mut Connection, batch: &mut [Box<dyn GroupWrite>]) -> Result<(), StoreError> {
    // Status changes a group noted before it failed were undone with it.
    counts::take();
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    if let [only] = batch {
        // Alone, a failed write rolls the transaction back, with no savepoint to pay for.
        return if only.run(&tx) {
            counts::write(&tx, counts::take()).map_err(sqlite_error)?;
            tx.commit().map_err(sqlite_error)
        } else {
            Ok(())
        };
    }
    for write in batch.iter_mut() {
        let in_savepoint = write.in_savepoint();
        if in_savepoint {
            statement(&tx, "SAVEPOINT group_write")?;
        }
        let (mark, changed_before) = (counts::noted(), tx.total_changes());
        if !write.run(&tx) {
            if tx.is_autocommit() {
                return Err(StoreError::backend(
                    "SQLite rolled the transaction back after a failed write",
                ));
            }
            if in_savepoint {
                statement(&tx, "ROLLBACK TO group_write")?;
            } else if tx.total_changes() != changed_before {
                return Err(StoreError::backend(
                    "a write failed after changing a row; its group of writes was rolled back",
                ));
            }
            counts::undo_to(mark);
        }
        if in_savepoint {
            statement(&tx, "RELEASE group_write")?;
        }
    }
    counts::write(&tx, counts::take()).map_err(sqlite_error)?;
    tx.commit().map_err(sqlite_error)
}

/// Runs the fixed statement `sql` (prepared once per connection).
fn statement(tx: &Transaction<'_>, sql: &str) -> Result<(), StoreError> {
    tx.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute([]))
        .map(drop)
        .map_err(sqlite_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskStatus;

    type Answer = tokio::sync::oneshot::Receiver<Result<i64, StoreError>>;

    /// When a test's write fails: never, before its insert or after it.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Fails {
        Never,
        Before,
        After,
    }

    /// A write that inserts `n`, failing as `fails` says, in a savepoint of its own or not.
    fn insert(n: i64, fails: Fails, in_savepoint: bool) -> (Box<dyn GroupWrite>, Answer) {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let work = move |tx: &Transaction<'_>| {
            let failure = || Err(StoreError::backend(format!("write {n} failed")));
            if fails == Fails::Before {
                return failure();
            }
            tx.execute("INSERT INTO t (n) VALUES (?1)", [n])
                .map_err(sqlite_error)?;
            if fails == Fails::After {
                return failure();
            }
            Ok(n)
        };
        (Box::new(Write::new(work, in_savepoint, reply)), answer)
    }

    /// The answers, errors as text.
    fn answered(answers: Vec<Answer>) -> Vec<Result<i64, String>> {
        answers
            .into_iter()
            .map(|mut answer| {
                answer
                    .try_recv()
                    .expect("answered")
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    /// Runs writes of 1, 2 and 3 as one group, the second failing as `fails`; the answers.
    fn group_of_three(
        conn: &mut Connection,
        fails: Fails,
        in_savepoint: bool,
    ) -> Vec<Result<i64, String>> {
        let (writes, answers): (Vec<_>, Vec<_>) = [1, 2, 3]
            .map(|n| insert(n, if n == 2 { fails } else { Fails::Never }, in_savepoint))
            .into_iter()
            .unzip();
        run_group(conn, writes);
        answered(answers)
    }

    fn table() -> Connection {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE t (n INTEGER PRIMARY KEY)")
            .expect("table");
        conn
    }

    fn rows(conn: &Connection) -> Vec<i64> {
        let mut stmt = conn.prepare("SELECT n FROM t ORDER BY n").expect("select");
        stmt.query_map([], |row| row.get(0))
            .expect("rows")
            .collect::<rusqlite::Result<_>>()
            .expect("rows")
    }

    #[test]
    fn a_failed_write_is_undone_and_the_others_in_its_group_are_committed() {
        let mut conn = table();
        let answers = group_of_three(&mut conn, Fails::After, true);
        assert_eq!(rows(&conn), [1, 3]);
        assert_eq!(answers[0], Ok(1));
        assert!(
            answers[1]
                .as_ref()
                .is_err_and(|e| e.contains("write 2 failed")),
            "{answers:?}"
        );
        assert_eq!(answers[2], Ok(3));
    }

    #[test]
    fn a_write_without_a_savepoint_that_fails_before_any_change_fails_alone() {
        let mut conn = table();
        let answers = group_of_three(&mut conn, Fails::Before, false);
        assert_eq!(rows(&conn), [1, 3]);
        assert_eq!(answers[0], Ok(1));
        assert!(answers[1].is_err(), "{answers:?}");
        assert_eq!(answers[2], Ok(3));
    }

    #[test]
    fn a_write_without_a_savepoint_that_fails_after_a_change_fails_its_whole_group() {
        let mut conn = table();
        let answers = group_of_three(&mut conn, Fails::After, false);
        assert!(rows(&conn).is_empty(), "nothing of the group is committed");
        assert!(
            answers[1]
                .as_ref()
                .is_err_and(|e| e.contains("write 2 failed")),
            "{answers:?}"
        );
        for other in [&answers[0], &answers[2]] {
            assert!(
                other.as_ref().is_err_and(|e| e.contains("rolled back")),
                "{answers:?}"
            );
        }
        assert!(conn.is_autocommit(), "no transaction is left open");
    }

    #[test]
    fn a_failed_writes_status_changes_are_undone_with_it_and_the_others_counted_once() {
        let mut conn = table();
        conn.execute_batch(
            "CREATE TABLE task_counts (status TEXT PRIMARY KEY NOT NULL, n INTEGER NOT NULL);
             INSERT INTO task_counts VALUES ('pending', 3), ('running', 0), ('succeeded', 0),
                 ('failed', 0), ('cancelled', 0);",
        )
        .expect("counts");
        // Each write moves one task from pending to running; the second then fails.
        let writes: Vec<Box<dyn GroupWrite>> = [false, true, false]
            .into_iter()
            .enumerate()
            .map(|(i, fails)| {
                let (reply, _) = tokio::sync::oneshot::channel::<Result<(), StoreError>>();
                let work = move |_: &Transaction<'_>| {
                    counts::note(TaskStatus::Pending, TaskStatus::Running);
                    if fails {
                        return Err(StoreError::backend(format!("write {i} failed")));
                    }
                    Ok(())
                };
                Box::new(Write::new(work, true, reply)) as Box<dyn GroupWrite>
            })
            .collect();
        run_group(&mut conn, writes);
        let mut stmt = conn
            .prepare(
                "SELECT n FROM task_counts WHERE status IN ('pending', 'running') ORDER BY status",
            )
            .expect("select");
        let counts: Vec<i64> = stmt
            .query_map([], |row| row.get(0))
            .expect("rows")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        assert_eq!(counts, [1, 2], "pending 1, running 2");
    }

    #[test]
    fn a_leader_that_never_ran_answers_the_queued_writes_and_the_next_write_leads() {
        let queue = Queue::default();
        let (first, mut answer) = insert(1, Fails::Never, false);
        assert!(push(&queue, first), "the first write asks for a leader");
        let (second, _) = insert(2, Fails::Never, false);
        assert!(!push(&queue, second), "a leader is at work");
        drop(Turn::new(Arc::clone(&queue)));
        assert!(
            answer
                .try_recv()
                .expect("answered")
                .is_err_and(|e| e.to_string().contains("stopped before the write"))
        );
        let (third, _) = insert(3, Fails::Never, false);
        assert!(push(&queue, third), "the next write asks for a new leader");
    }

    #[test]
    fn a_lingering_leader_takes_a_write_queued_meanwhile_and_a_quiet_one_ends_its_turn() {
        let queue = Queue::default();
        let (first, _) = insert(1, Fails::Never, false);
        assert!(push(&queue, first));
        let mut turn = Turn::new(Arc::clone(&queue));
        assert_eq!(turn.next_batch(Duration::ZERO).map(|b| b.len()), Some(1));
        let pusher = std::thread::spawn({
            let queue = Arc::clone(&queue);
            move || {
                std::thread::sleep(Duration::from_millis(50));
                let (second, _) = insert(2, Fails::Never, false);
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
        let (third, _) = insert(3, Fails::Never, false);
        assert!(push(&queue, third), "the next write asks for a new leader");
    }

    #[test]
    fn a_failed_write_alone_is_rolled_back() {
        let mut conn = table();
        let (write, mut answer) = insert(7, Fails::After, false);
        run_group(&mut conn, vec![write]);
        assert!(rows(&conn).is_empty());
        assert!(answer.try_recv().expect("answered").is_err());
        assert!(conn.is_autocommit(), "no transaction is left open");
    }

    #[test]
    fn a_group_that_cannot_begin_fails_every_write() {
        let mut conn = table();
        conn.execute_batch("BEGIN").expect("an open transaction");
        let (write, mut answer) = insert(1, Fails::Never, false);
        run_group(&mut conn, vec![write]);
        assert!(answer.try_recv().expect("answered").is_err());
    }
}

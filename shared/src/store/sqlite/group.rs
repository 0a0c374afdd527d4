//! Group commit: every write of a store (creates, claims, outcomes, the operators' changes)
//! queues for a leader ([`super::leader`]), which runs the writes queued by then in one
//! immediate transaction and answers each after the commit. Under load a claim shares its
//! commit with the outcomes that freed its slots, and creates share one, instead of a
//! transaction each (SQLite's cost per transaction is its WAL frames and its locks; a task's
//! rows are cheap).
//!
//! A write's failure undoes only that write. A write of several steps runs in a savepoint of
//! its own, rolled back when it fails. The hot writes (a create, an outcome) skip the
//! savepoint, whose cost is a copy of every page they touch: they nearly always fail before
//! changing anything, which the group checks by SQLite's count of changed rows. One that fails
//! after a change fails its whole group, rolled back, each write answered with the error.

use rusqlite::{Connection, Transaction, TransactionBehavior};

use super::counts;
use super::rows::sqlite_error;
use crate::store::StoreError;

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

//! Limits per key on PostgreSQL, inside the claim's or the outcomes' transaction. Each key a
//! claim judges is first locked for the transaction (an advisory lock on its hash), so two
//! claims never count the same key at once; a claim that finds a key locked leaves that key's
//! tasks due for the claim holding it (as `SKIP LOCKED` leaves a row), so claims never wait
//! for each other. A key's running tasks are counted from `tasks_key_running`, a rate key's
//! next start (and the starts it booked for held tasks in SQS mode) is in `key_rates`, and an
//! outcome wakes the tasks held for its key from
//! `tasks_key_held`.

use std::collections::{BTreeMap, HashSet};

use tokio_postgres::Transaction;

use super::bulk;
use super::pg_error;
use super::rows::{COLUMNS, rows_to_tasks};
use crate::clock::Timestamp;
use crate::store::{Booking, Holders, KeyBook, Need, StoreError, Transition};
use crate::task::{Task, TaskStatus};

/// The advisory locks' first halves: one space for concurrency keys (`tskc`), one for rate
/// keys (`tskr`), apart from any lock the application takes with one number.
const CONCURRENCY_LOCKS: i32 = 1_953_721_187;
const RATE_LOCKS: i32 = 1_953_721_202;

/// The keys a claim found locked by another claim: their tasks are left for it.
#[derive(Debug, Default)]
pub(super) struct Busy(HashSet<(bool, String)>);

impl Busy {
    /// True when any key was found locked.
    pub fn any(&self) -> bool {
        !self.0.is_empty()
    }
}

/// Locks and reads what `book` needs to judge `task`; false when a key of it is locked by
/// another claim (the task is then left as it is).
pub(super) async fn read_needs(
    tx: &Transaction<'_>,
    book: &mut KeyBook<'_>,
    busy: &mut Busy,
    task: &Task,
    now: Timestamp,
) -> Result<bool, StoreError> {
    for need in book.needs(task) {
        let (space, key, is_rate) = match &need {
            Need::Holders(key) => (CONCURRENCY_LOCKS, key, false),
            Need::NextStart(key) => (RATE_LOCKS, key, true),
        };
        if busy.0.contains(&(is_rate, key.clone())) {
            return Ok(false);
        }
        let locked: bool = tx
            .query_one(
                "SELECT pg_try_advisory_xact_lock($1, hashtext($2))",
                &[&space, key],
            )
            .await
            .map_err(|err| pg_error("locking a task key", err))?
            .get(0);
        if !locked {
            busy.0.insert((is_rate, key.clone()));
            return Ok(false);
        }
        match need {
            Need::Holders(key) => {
                let row = tx
                    .query_one(
                        "SELECT COUNT(*), MIN(due_at) FROM tasker.tasks WHERE status = 'running' \
                         AND concurrency_key = $1 AND due_at > $2",
                        &[&key, &now.0],
                    )
                    .await
                    .map_err(|err| pg_error("counting a key's running tasks", err))?;
                let running = u32::try_from(row.get::<_, i64>(0)).unwrap_or(u32::MAX);
                let first_end = row
                    .get::<_, Option<time::OffsetDateTime>>(1)
                    .map(Timestamp::new);
                book.know_holders(key, Holders { running, first_end });
            }
            Need::NextStart(key) => {
                let next = tx
                    .query_opt(
                        "SELECT next_start FROM tasker.key_rates WHERE key = $1",
                        &[&key],
                    )
                    .await
                    .map_err(|err| pg_error("reading a rate key", err))?
                    .map(|row| Timestamp::new(row.get(0)));
                book.know_next_start(key, next);
            }
        }
    }
    Ok(true)
}

/// Books a start of the rate key for a held task ([`Booking`]; SQS mode's claim by id, which
/// holds the key's lock): the start booked, or [`Booking::beyond`] when none may be.
pub(super) async fn book_start(
    tx: &Transaction<'_>,
    booking: &Booking<'_>,
) -> Result<Timestamp, StoreError> {
    let unbooked = tx
        .query_opt(
            "SELECT booked_until FROM tasker.key_rates WHERE key = $1",
            &[&booking.key],
        )
        .await
        .map_err(|err| pg_error("reading a rate key's booked starts", err))?
        .and_then(|row| row.get::<_, Option<time::OffsetDateTime>>(0))
        .map(Timestamp::new);
    let Some((start, after)) = booking.start(unbooked) else {
        return Ok(booking.beyond());
    };
    tx.execute(
        "UPDATE tasker.key_rates SET booked_until = $2 WHERE key = $1",
        &[&booking.key, &after.0],
    )
    .await
    .map_err(|err| pg_error("booking a rate key's start", err))?;
    Ok(start)
}

/// Stores the next start of every rate key `book` started tasks of.
pub(super) async fn write_moved(
    tx: &Transaction<'_>,
    book: &KeyBook<'_>,
) -> Result<(), StoreError> {
    for (key, next) in book.moved() {
        tx.execute(
            "INSERT INTO tasker.key_rates (key, next_start) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET next_start = excluded.next_start",
            &[&key, &next.0],
        )
        .await
        .map_err(|err| pg_error("writing a rate key", err))?;
    }
    Ok(())
}

/// For each task of `settled` that stopped running, makes one task held for its concurrency
/// key due at `now` ([`Transition::Wake`]): a slot is free.
pub(super) async fn wake_held(
    tx: &Transaction<'_>,
    settled: &[&Task],
    now: Timestamp,
) -> Result<(), StoreError> {
    let mut freed: BTreeMap<&str, i64> = BTreeMap::new();
    for task in settled {
        if let (Some(key), false) = (&task.concurrency_key, task.status == TaskStatus::Running) {
            *freed.entry(key).or_default() += 1;
        }
    }
    let wake = Transition::Wake { now };
    let mut woken = Vec::new();
    for (key, slots) in freed {
        // Waits for a claim judging the key to commit, so a task it holds is seen held here
        // (else its wake would be lost); claims only try the lock, so none waits for this.
        // Keys in order: two outcome groups never wait for each other in a circle.
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&CONCURRENCY_LOCKS, &key],
        )
        .await
        .map_err(|err| pg_error("locking a task key", err))?;
        let rows = tx
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM tasker.tasks WHERE held = 'concurrency' \
                     AND status = 'pending' AND concurrency_key = $1 AND due_at > $3 \
                     ORDER BY concurrency_key, due_at, id LIMIT $2 FOR UPDATE SKIP LOCKED"
                ),
                &[&key, &slots, &now.0],
            )
            .await
            .map_err(|err| pg_error("finding tasks held for a key", err))?;
        for task in rows_to_tasks(&rows)? {
            if let Ok(after) = wake.apply(&task) {
                woken.push(after);
            }
        }
    }
    let woken: Vec<&Task> = woken.iter().collect();
    bulk::write_changes(tx, &woken)
        .await
        .map_err(|err| pg_error("waking tasks held for a key", err))
}

/// Deletes the rate keys whose next start is before `cutoff`: a key that long idle starts
/// afresh either way.
pub(super) async fn purge_rates(
    client: &impl tokio_postgres::GenericClient,
    cutoff: Timestamp,
) -> Result<u64, StoreError> {
    client
        .execute(
            "DELETE FROM tasker.key_rates WHERE next_start < $1 \
             AND (booked_until IS NULL OR booked_until < $1)",
            &[&cutoff.0],
        )
        .await
        .map_err(|err| pg_error("purging idle rate keys", err))
}

impl super::PgStore {
    /// See [`crate::store::Store::key_holds_written`]: holds are written in the claim's transaction.
    pub async fn key_holds_written(&self) -> bool {
        true
    }

    /// See [`crate::store::Store::key_defer`].
    pub async fn key_defer(&self, key: &str, until: Timestamp) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO tasker.key_rates (key, next_start) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE \
                 SET next_start = GREATEST(tasker.key_rates.next_start, excluded.next_start)",
                &[&key, &until.0],
            )
            .await
            .map_err(|err| pg_error("deferring a rate key", err))?;
        Ok(())
    }
}

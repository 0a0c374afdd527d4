//! Limits per key on SQLite, inside the claim's or the outcome's transaction: a key's running
//! tasks counted from `tasks_key_running`, a rate key's next start (and the starts it booked
//! for held tasks in SQS mode) in `key_rates`, and the
//! task held for a key woken from `tasks_key_held` when one of the key's tasks stops running.

use rusqlite::{OptionalExtension, params};

use super::rows::{COLUMNS, row_to_task, sqlite_error, update};
use crate::clock::Timestamp;
use crate::store::{Booking, Holders, KeyBook, Need, StoreError, Transition};
use crate::task::{Task, TaskStatus};

/// Tells `book` what it needs of the store to judge `task`.
pub(super) fn read_needs(
    tx: &rusqlite::Transaction<'_>,
    book: &mut KeyBook<'_>,
    task: &Task,
    now: Timestamp,
) -> Result<(), StoreError> {
    for need in book.needs(task) {
        match need {
            Need::Holders(key) => {
                let (running, first_end): (u32, Option<String>) = tx
                    .prepare_cached(
                        "SELECT COUNT(*), MIN(due_at) FROM tasks INDEXED BY tasks_key_running \
                         WHERE status = 'running' AND concurrency_key = ?1 AND due_at > ?2",
                    )
                    .and_then(|mut stmt| {
                        stmt.query_row(params![key, now.to_text()], |row| {
                            Ok((row.get(0)?, row.get(1)?))
                        })
                    })
                    .map_err(sqlite_error)?;
                let first_end = first_end.map(|text| parse(&text)).transpose()?;
                book.know_holders(key, Holders { running, first_end });
            }
            Need::NextStart(key) => {
                let next: Option<String> = tx
                    .prepare_cached("SELECT next_start FROM key_rates WHERE key = ?1")
                    .and_then(|mut stmt| stmt.query_row(params![key], |row| row.get(0)).optional())
                    .map_err(sqlite_error)?;
                let next = next.map(|text| parse(&text)).transpose()?;
                book.know_next_start(key, next);
            }
        }
    }
    Ok(())
}

/// Stores the next start of every rate key `book` started tasks of.
pub(super) fn write_moved(
    tx: &rusqlite::Transaction<'_>,
    book: &KeyBook<'_>,
) -> Result<(), StoreError> {
    for (key, next) in book.moved() {
        tx.prepare_cached(
            "INSERT INTO key_rates (key, next_start) VALUES (?1, ?2) \
             ON CONFLICT (key) DO UPDATE SET next_start = excluded.next_start",
        )
        .and_then(|mut stmt| stmt.execute(params![key, next.to_text()]))
        .map_err(sqlite_error)?;
    }
    Ok(())
}

/// Books a start of the rate key for a held task ([`Booking`]; SQS mode's claim by id): the
/// start booked, or [`Booking::beyond`] when none may be.
pub(super) fn book_start(
    tx: &rusqlite::Transaction<'_>,
    booking: &Booking<'_>,
) -> Result<Timestamp, StoreError> {
    let unbooked: Option<String> = tx
        .prepare_cached("SELECT booked_until FROM key_rates WHERE key = ?1")
        .and_then(|mut stmt| {
            stmt.query_row(params![booking.key], |row| row.get(0))
                .optional()
        })
        .map_err(sqlite_error)?
        .flatten();
    let unbooked = unbooked.map(|text| parse(&text)).transpose()?;
    let Some((start, after)) = booking.start(unbooked) else {
        return Ok(booking.beyond());
    };
    tx.prepare_cached("UPDATE key_rates SET booked_until = ?2 WHERE key = ?1")
        .and_then(|mut stmt| stmt.execute(params![booking.key, after.to_text()]))
        .map_err(sqlite_error)?;
    Ok(start)
}

/// After `settled` stopped running (the outcome just written), makes the first task held
/// for its concurrency key due at `now` ([`Transition::Wake`]): a slot is free.
pub(super) fn wake_held(
    tx: &rusqlite::Transaction<'_>,
    settled: &Task,
    now: Timestamp,
) -> Result<(), StoreError> {
    let Some(key) = &settled.concurrency_key else {
        return Ok(());
    };
    if settled.status == TaskStatus::Running {
        return Ok(());
    }
    let held: Option<Task> = tx
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM tasks INDEXED BY tasks_key_held \
             WHERE held = 'concurrency' AND status = 'pending' AND concurrency_key = ?1 \
             AND due_at > ?2 ORDER BY due_at, id LIMIT 1"
        ))
        .and_then(|mut stmt| {
            stmt.query_row(params![key, now.to_text()], row_to_task)
                .optional()
        })
        .map_err(sqlite_error)?;
    let Some(held) = held else {
        return Ok(());
    };
    let wake = Transition::Wake { now };
    if let Ok(woken) = wake.apply(&held) {
        update(tx, &held, &woken).map_err(sqlite_error)?;
    }
    Ok(())
}

/// Deletes the rate keys whose next start is before `cutoff`: a key that long idle starts
/// afresh either way.
pub(super) fn purge_rates(
    tx: &rusqlite::Transaction<'_>,
    cutoff: Timestamp,
) -> Result<u64, StoreError> {
    let deleted = tx
        .execute(
            "DELETE FROM key_rates WHERE next_start < ?1 \
             AND (booked_until IS NULL OR booked_until < ?1)",
            params![cutoff.to_text()],
        )
        .map_err(sqlite_error)?;
    Ok(deleted as u64)
}

fn parse(text: &str) -> Result<Timestamp, StoreError> {
    text.parse()
        .map_err(|err| StoreError::backend_from("SQLite: a stored instant", err))
}

impl super::SqliteStore {
    /// See [`crate::store::Store::key_holds_written`]: holds are written in the claim's transaction.
    pub async fn key_holds_written(&self) -> bool {
        true
    }

    /// See [`crate::store::Store::key_defer`].
    pub async fn key_defer(&self, key: &str, until: Timestamp) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.write(move |tx| {
            // Instants are stored as fixed-width UTC text: text order is time order.
            tx.execute(
                "INSERT INTO key_rates (key, next_start) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET next_start = MAX(next_start, excluded.next_start)",
                params![key, until.to_text()],
            )
            .map_err(sqlite_error)?;
            Ok(())
        })
        .await
    }
}

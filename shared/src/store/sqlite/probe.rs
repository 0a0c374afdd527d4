//! The benchmark's ceiling on SQLite: how fast one WAL connection (as the store holds it) takes
//! single-row conditional updates, each in its own immediate transaction.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use rusqlite::{Connection, TransactionBehavior};

use super::rows::sqlite_error;
use crate::store::StoreError;

/// Writes `count` counter rows into a fresh database at `path`, then times `count` conditional
/// increments of them, `concurrency` callers at once, calling `tick` after each; the time they
/// took.
pub async fn conditional_writes(
    path: &Path,
    count: usize,
    concurrency: usize,
    tick: &(dyn Fn() + Sync),
) -> Result<Duration, StoreError> {
    let conn = Connection::open(path).map_err(sqlite_error)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sqlite_error)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sqlite_error)?;
    conn.execute_batch(
        "CREATE TABLE ceiling (id TEXT PRIMARY KEY NOT NULL, n INTEGER NOT NULL) STRICT;",
    )
    .map_err(sqlite_error)?;
    {
        let tx = conn.unchecked_transaction().map_err(sqlite_error)?;
        for i in 0..count {
            tx.execute(
                "INSERT INTO ceiling (id, n) VALUES (?1, 0)",
                [format!("ceiling#{i}")],
            )
            .map_err(sqlite_error)?;
        }
        tx.commit().map_err(sqlite_error)?;
    }
    let conn = Arc::new(Mutex::new(conn));
    let started = Instant::now();
    futures::stream::iter(0..count)
        .map(|i| {
            let conn = Arc::clone(&conn);
            async move {
                tokio::task::spawn_blocking(move || increment(&conn, &format!("ceiling#{i}")))
                    .await
                    .map_err(|err| StoreError::backend_from("a ceiling writer failed", err))??;
                tick();
                Ok::<_, StoreError>(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(started.elapsed())
}

/// One conditional increment of the row `id` in its own immediate transaction.
fn increment(conn: &Mutex<Connection>, id: &str) -> Result<(), StoreError> {
    let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    let changed = tx
        .execute(
            "UPDATE ceiling SET n = n + 1 WHERE id = ?1 AND n >= 0",
            [id],
        )
        .map_err(sqlite_error)?;
    tx.commit().map_err(sqlite_error)?;
    if changed == 1 {
        Ok(())
    } else {
        Err(StoreError::backend(format!(
            "ceiling row {id} was not updated"
        )))
    }
}

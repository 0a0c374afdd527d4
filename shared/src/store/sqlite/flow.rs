//! Flow control on SQLite: the paused types in a table of their own, and the due and running
//! tasks per type from the index of unfinished tasks.

use rusqlite::{Connection, params};

use super::SqliteStore;
use super::rows::sqlite_error;
use crate::clock::Timestamp;
use crate::store::{PausedTypes, StoreError, TypeCount, TypeCounts};

fn paused_in(conn: &Connection) -> Result<PausedTypes, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT type, paused_at FROM paused_types")
        .map_err(sqlite_error)?;
    let rows: Vec<(String, String)> = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .map_err(sqlite_error)?
        .collect::<rusqlite::Result<_>>()
        .map_err(sqlite_error)?;
    rows.into_iter()
        .map(|(name, at)| {
            let at = at
                .parse()
                .map_err(|err| StoreError::backend_from("SQLite: a paused type's instant", err))?;
            Ok((name, at))
        })
        .collect()
}

impl SqliteStore {
    pub async fn type_list_paused(&self) -> Result<PausedTypes, StoreError> {
        self.with_reader(|conn| paused_in(conn)).await
    }

    pub async fn type_set_paused(
        &self,
        task_type: &str,
        paused: bool,
        now: Timestamp,
    ) -> Result<PausedTypes, StoreError> {
        let task_type = task_type.to_owned();
        self.write(move |tx| {
            if paused {
                tx.execute(
                    "INSERT INTO paused_types (type, paused_at) VALUES (?1, ?2) \
                     ON CONFLICT (type) DO NOTHING",
                    params![task_type, now.to_text()],
                )
            } else {
                tx.execute(
                    "DELETE FROM paused_types WHERE type = ?1",
                    params![task_type],
                )
            }
            .map_err(sqlite_error)?;
            paused_in(tx)
        })
        .await
    }

    pub async fn type_count(&self, now: Timestamp) -> Result<TypeCounts, StoreError> {
        self.with_reader(move |conn| {
            // The unfinished tasks' index: as long as what is pending (later ones included)
            // and running, never the history.
            let mut stmt = conn
                .prepare_cached(
                    "SELECT type, \
                     SUM(due_at <= ?1 AND (status = 'running' OR attempts < max_attempts)), \
                     SUM(status = 'running') \
                     FROM tasks INDEXED BY tasks_open WHERE finished_at IS NULL GROUP BY type",
                )
                .map_err(sqlite_error)?;
            let rows: Vec<(String, i64, i64)> = stmt
                .query_map(params![now.to_text()], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .map_err(sqlite_error)?
                .collect::<rusqlite::Result<_>>()
                .map_err(sqlite_error)?;
            let count = |n: i64| u64::try_from(n).unwrap_or_default();
            let by_type = rows
                .into_iter()
                .map(|(name, due, running)| {
                    let counts = TypeCount {
                        due: count(due),
                        running: count(running),
                    };
                    (name, counts)
                })
                .filter(|(_, counts)| *counts != TypeCount::default())
                .collect();
            Ok(TypeCounts {
                by_type,
                exact: true,
            })
        })
        .await
    }
}

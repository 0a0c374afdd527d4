//! Listings, counts and the backlog on SQLite, read on the query-only connection.

use rusqlite::params;

use super::SqliteStore;
use super::rows::{COLUMNS, row_to_task, sqlite_error};
use crate::clock::Timestamp;
use crate::store::{
    Backlog, ListFilter, ListKey, QueueStats, StatusCounts, StoreError, TaskLister, TaskPage,
};
use crate::task::{Task, TaskStatus};

/// The listing key of a row, as [`ListKey::of`] computes it for a task.
const LIST_KEY_SQL: &str = "(CASE WHEN status IN ('pending', 'running', 'succeeded') \
     THEN MAX(scheduled_at, created_at) ELSE COALESCE(finished_at, updated_at) END || '#' || id)";

impl TaskLister for SqliteStore {
    async fn list(
        &self,
        filter: &ListFilter,
        after: Option<ListKey>,
        limit: usize,
        _now: Timestamp,
    ) -> Result<TaskPage, StoreError> {
        let filter = filter.clone();
        self.with_reader(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM tasks WHERE (?1 IS NULL OR status = ?1) \
                     AND (?2 IS NULL OR type = ?2) AND (?3 IS NULL OR reference_uid = ?3) \
                     AND (?4 IS NULL OR {LIST_KEY_SQL} < ?4) \
                     AND (?6 IS NULL OR schedule_name = ?6) \
                     ORDER BY {LIST_KEY_SQL} DESC LIMIT ?5"
                ))
                .map_err(sqlite_error)?;
            // One more than asked says whether another page exists.
            let want = i64::try_from(limit).unwrap_or(i64::MAX).saturating_add(1);
            let mut tasks: Vec<Task> = stmt
                .query_map(
                    params![
                        filter.status.map(|status| status.as_str()),
                        filter.task_type,
                        filter.reference_uid,
                        after.as_ref().map(ListKey::as_str),
                        want,
                        filter.schedule,
                    ],
                    row_to_task,
                )
                .map_err(sqlite_error)?
                .collect::<rusqlite::Result<_>>()
                .map_err(sqlite_error)?;
            let more = tasks.len() > limit;
            tasks.truncate(limit);
            let next = if more {
                tasks.last().map(ListKey::of)
            } else {
                None
            };
            Ok(TaskPage { tasks, next })
        })
        .await
    }

    async fn counts(&self, _now: Timestamp) -> Result<StatusCounts, StoreError> {
        self.with_reader(move |conn| {
            let mut stmt = conn
                .prepare_cached("SELECT status, COUNT(*) FROM tasks GROUP BY status")
                .map_err(sqlite_error)?;
            let rows: Vec<(String, i64)> = stmt
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                .map_err(sqlite_error)?
                .collect::<rusqlite::Result<_>>()
                .map_err(sqlite_error)?;
            let mut counts = StatusCounts::default();
            for (status, count) in rows {
                let status: TaskStatus = status
                    .parse()
                    .map_err(|err| StoreError::backend_from("SQLite: a stored status", err))?;
                counts.add(status, u64::try_from(count).unwrap_or_default());
            }
            Ok(counts)
        })
        .await
    }
}

impl QueueStats for SqliteStore {
    async fn backlog(&self, now: Timestamp) -> Result<Backlog, StoreError> {
        self.with_reader(move |conn| {
            let (due, oldest): (i64, Option<String>) = conn
                .query_row(
                    "SELECT COUNT(*), MIN(due_at) FROM tasks WHERE due_at <= ?1",
                    params![now.to_text()],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .map_err(sqlite_error)?;
            Ok(Backlog {
                due: u64::try_from(due).unwrap_or_default(),
                oldest_due_at: oldest.and_then(|text| text.parse().ok()),
            })
        })
        .await
    }
}

//! The mapping between rows and tasks, and the writes of one task.

use rusqlite::{Connection, OptionalExtension, params};

use crate::clock::Timestamp;
use crate::store::{ListKey, StoreError};
use crate::task::{Task, TaskId};

pub const COLUMNS: &str = "id, type, payload, status, scheduled_at, created_at, updated_at, attempts, \
    max_attempts, last_error, last_failed_attempt_at, succeeded_at, finished_at, reference_uid, \
    lease_expires_at, due_at, idempotency_key, retry_policy, lease_token, schedule_name, schedule_tick";

pub fn backend(err: rusqlite::Error) -> StoreError {
    StoreError::backend_from("SQLite", err)
}

/// Lock contention is passing; everything else is not.
pub fn sqlite_error(err: rusqlite::Error) -> StoreError {
    match err.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            StoreError::unavailable_from("SQLite", err)
        }
        _ => backend(err),
    }
}

fn text(value: Option<Timestamp>) -> Option<String> {
    value.map(Timestamp::to_text)
}

fn parse_column<T: std::str::FromStr>(index: usize, value: &str) -> rusqlite::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    value.parse().map_err(|err| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(err))
    })
}

fn parse_optional<T: std::str::FromStr>(
    index: usize,
    value: Option<String>,
) -> rusqlite::Result<Option<T>>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    value.map(|v| parse_column(index, &v)).transpose()
}

pub fn row_to_task(row: &rusqlite::Row<'_>) -> rusqlite::Result<Task> {
    Ok(Task {
        id: parse_column(0, &row.get::<_, String>(0)?)?,
        task_type: row.get(1)?,
        payload: row.get(2)?,
        status: parse_column(3, &row.get::<_, String>(3)?)?,
        scheduled_at: parse_column(4, &row.get::<_, String>(4)?)?,
        created_at: parse_column(5, &row.get::<_, String>(5)?)?,
        updated_at: parse_column(6, &row.get::<_, String>(6)?)?,
        attempts: row.get(7)?,
        max_attempts: row.get(8)?,
        last_error: row.get(9)?,
        last_failed_attempt_at: parse_optional(10, row.get(10)?)?,
        succeeded_at: parse_optional(11, row.get(11)?)?,
        finished_at: parse_optional(12, row.get(12)?)?,
        reference_uid: row.get(13)?,
        lease_expires_at: parse_optional(14, row.get(14)?)?,
        idempotency_key: row.get(16)?,
        retry_policy: serde_json::from_str(&row.get::<_, String>(17)?).map_err(|err| {
            rusqlite::Error::FromSqlConversionFailure(
                17,
                rusqlite::types::Type::Text,
                Box::new(err),
            )
        })?,
        lease_token: row.get(18)?,
        schedule_name: row.get(19)?,
        schedule_tick: parse_optional(20, row.get(20)?)?,
    })
}

pub fn load(conn: &Connection, id: TaskId) -> Result<Option<Task>, StoreError> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"),
        params![id.to_string()],
        row_to_task,
    )
    .optional()
    .map_err(sqlite_error)
}

pub fn insert(conn: &Connection, task: &Task) -> rusqlite::Result<()> {
    conn.execute(
        &format!(
            "INSERT INTO tasks ({COLUMNS}, list_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, \
             ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)"
        ),
        params![
            task.id.to_string(),
            task.task_type,
            task.payload,
            task.status.as_str(),
            task.scheduled_at.to_text(),
            task.created_at.to_text(),
            task.updated_at.to_text(),
            task.attempts,
            task.max_attempts,
            task.last_error,
            text(task.last_failed_attempt_at),
            text(task.succeeded_at),
            text(task.finished_at),
            task.reference_uid,
            text(task.lease_expires_at),
            text(task.due_at()),
            task.idempotency_key,
            serde_json::to_string(&task.retry_policy).unwrap_or_default(),
            task.lease_token,
            task.schedule_name,
            text(task.schedule_tick),
            ListKey::of(task).as_str(),
        ],
    )?;
    Ok(())
}

/// Rewrites every mutable column of `after`, the task `before` was. The listing key is written
/// only when it moved: SQLite rewrites the entries of every index on a column a statement
/// sets, even to the same value, and a claim or a success leaves the key where it is.
pub fn update(conn: &Connection, before: &Task, after: &Task) -> rusqlite::Result<()> {
    let key = ListKey::of(after);
    let moved = ListKey::of(before) != key;
    let sql = if moved {
        "UPDATE tasks SET status = ?2, scheduled_at = ?3, updated_at = ?4, attempts = ?5, \
         last_error = ?6, last_failed_attempt_at = ?7, succeeded_at = ?8, finished_at = ?9, \
         lease_expires_at = ?10, due_at = ?11, lease_token = ?12, list_key = ?13 WHERE id = ?1"
    } else {
        "UPDATE tasks SET status = ?2, scheduled_at = ?3, updated_at = ?4, attempts = ?5, \
         last_error = ?6, last_failed_attempt_at = ?7, succeeded_at = ?8, finished_at = ?9, \
         lease_expires_at = ?10, due_at = ?11, lease_token = ?12 WHERE id = ?1"
    };
    let (id, status, key) = (after.id.to_string(), after.status.as_str(), key.as_str());
    let (scheduled_at, updated_at) = (after.scheduled_at.to_text(), after.updated_at.to_text());
    let (failed_at, succeeded_at) = (text(after.last_failed_attempt_at), text(after.succeeded_at));
    let (finished_at, lease_expires_at, due_at) = (
        text(after.finished_at),
        text(after.lease_expires_at),
        text(after.due_at()),
    );
    let values: [&dyn rusqlite::ToSql; 13] = [
        &id,
        &status,
        &scheduled_at,
        &updated_at,
        &after.attempts,
        &after.last_error,
        &failed_at,
        &succeeded_at,
        &finished_at,
        &lease_expires_at,
        &due_at,
        &after.lease_token,
        &key,
    ];
    let used = if moved { 13 } else { 12 };
    conn.prepare_cached(sql)?.execute(&values[..used])?;
    Ok(())
}

/// Stores the new or changed `task` with `write`; a broken reference rule (the partial unique
/// index on active references) becomes [`StoreError::Duplicate`] naming the active task.
pub fn store_with(
    conn: &Connection,
    task: &Task,
    write: impl FnOnce() -> rusqlite::Result<()>,
) -> Result<(), StoreError> {
    match write() {
        Ok(()) => Ok(()),
        Err(err) if err.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) => {
            let holder: Option<String> = conn
                .query_row(
                    "SELECT id FROM tasks WHERE reference_uid = ?1 AND type = ?2 \
                     AND status IN ('pending', 'running') AND id <> ?3",
                    params![task.reference_uid, task.task_type, task.id.to_string()],
                    |row| row.get(0),
                )
                .optional()
                .map_err(sqlite_error)?;
            match holder.map(|id| id.parse::<TaskId>()) {
                Some(Ok(existing)) => Err(StoreError::Duplicate { existing }),
                Some(Err(bad)) => Err(StoreError::backend_from("SQLite: a stored task id", bad)),
                None => Err(backend(err)),
            }
        }
        Err(err) => Err(sqlite_error(err)),
    }
}

//! Statements over many tasks at once, each one round trip whatever the count: the rows a group
//! of outcomes settles, locked together, and the changes of a claim or a group written
//! together from arrays. Parameters are typed, so the server plans each statement without a
//! separate prepare.

use std::collections::HashMap;

use time::OffsetDateTime;
use tokio_postgres::Transaction;
use tokio_postgres::types::{ToSql, Type};

use super::pg_error;
use super::rows::{COLUMNS, row_to_task};
use crate::store::{ListKey, StoreError};
use crate::task::{Held, Task, TaskId};

/// The tasks `ids` that exist, locked for this transaction (in id order, so two writers never
/// wait on each other in a circle), by id.
pub async fn load_locked(
    tx: &Transaction<'_>,
    ids: &[TaskId],
) -> Result<HashMap<TaskId, Task>, StoreError> {
    let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
    let rows = tx
        .query_typed(
            &format!(
                "SELECT {COLUMNS} FROM tasker.tasks WHERE id = ANY($1) ORDER BY id FOR UPDATE"
            ),
            &[(&ids, Type::TEXT_ARRAY)],
        )
        .await
        .map_err(|err| pg_error("reading the tasks of a group", err))?;
    rows.iter()
        .map(|row| row_to_task(row).map(|task| (task.id, task)))
        .collect()
}

/// Writes the columns a transition may change of every task in `tasks`, in one statement.
pub async fn write_changes(
    tx: &Transaction<'_>,
    tasks: &[&Task],
) -> Result<(), tokio_postgres::Error> {
    if tasks.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&Task) -> Option<OffsetDateTime>| -> Vec<Option<OffsetDateTime>> {
        tasks.iter().map(|task| f(task)).collect()
    };
    let ids: Vec<String> = tasks.iter().map(|task| task.id.to_string()).collect();
    let statuses: Vec<&str> = tasks.iter().map(|task| task.status.as_str()).collect();
    let scheduled = column(|task| Some(task.scheduled_at.0));
    let updated = column(|task| Some(task.updated_at.0));
    let failed = column(|task| task.last_failed_attempt_at.map(|at| at.0));
    let succeeded = column(|task| task.succeeded_at.map(|at| at.0));
    let finished = column(|task| task.finished_at.map(|at| at.0));
    let lease = column(|task| task.lease_expires_at.map(|at| at.0));
    let due = column(|task| task.due_at().map(|at| at.0));
    let attempts: Vec<i32> = tasks
        .iter()
        .map(|task| i32::try_from(task.attempts).unwrap_or(i32::MAX))
        .collect();
    let errors: Vec<Option<&str>> = tasks
        .iter()
        .map(|task| task.last_error.as_deref())
        .collect();
    let tokens: Vec<Option<&str>> = tasks
        .iter()
        .map(|task| task.lease_token.as_deref())
        .collect();
    let keys: Vec<String> = tasks
        .iter()
        .map(|task| ListKey::of(task).as_str().to_owned())
        .collect();
    let held: Vec<Option<&str>> = tasks
        .iter()
        .map(|task| task.held.map(Held::as_str))
        .collect();
    let params: [(&(dyn ToSql + Sync), Type); 14] = [
        (&ids, Type::TEXT_ARRAY),
        (&statuses, Type::TEXT_ARRAY),
        (&scheduled, Type::TIMESTAMPTZ_ARRAY),
        (&updated, Type::TIMESTAMPTZ_ARRAY),
        (&failed, Type::TIMESTAMPTZ_ARRAY),
        (&succeeded, Type::TIMESTAMPTZ_ARRAY),
        (&finished, Type::TIMESTAMPTZ_ARRAY),
        (&lease, Type::TIMESTAMPTZ_ARRAY),
        (&due, Type::TIMESTAMPTZ_ARRAY),
        (&attempts, Type::INT4_ARRAY),
        (&errors, Type::TEXT_ARRAY),
        (&tokens, Type::TEXT_ARRAY),
        (&keys, Type::TEXT_ARRAY),
        (&held, Type::TEXT_ARRAY),
    ];
    tx.execute_typed(
        "UPDATE tasker.tasks t SET status = u.status, scheduled_at = u.scheduled_at, \
         updated_at = u.updated_at, last_failed_attempt_at = u.failed, \
         succeeded_at = u.succeeded, finished_at = u.finished, lease_expires_at = u.lease, \
         due_at = u.due, attempts = u.attempts, last_error = u.error, lease_token = u.token, \
         list_key = u.list_key, held = u.held \
         FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
           AS u(id, status, scheduled_at, updated_at, failed, succeeded, finished, lease, due, \
                attempts, error, token, list_key, held) \
         WHERE t.id = u.id COLLATE \"C\"",
        &params,
    )
    .await?;
    Ok(())
}

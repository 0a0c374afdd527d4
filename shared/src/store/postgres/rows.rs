//! The mapping between rows and tasks, and the writes of one task.

use time::OffsetDateTime;
use tokio_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::pg_error;
use crate::clock::Timestamp;
use crate::store::{ListKey, StoreError};
use crate::task::{Held, Task, TaskId};

pub const COLUMNS: &str = "id, type, payload, status, scheduled_at, created_at, updated_at, \
    attempts, max_attempts, last_error, last_failed_attempt_at, succeeded_at, finished_at, \
    reference_uid, lease_expires_at, due_at, idempotency_key, retry_policy, lease_token, \
    schedule_name, schedule_tick, concurrency_key, rate_key, held";

/// A parameter of a statement.
pub type Param = Box<dyn ToSql + Sync + Send>;

/// `params` as the driver takes them.
pub fn refs(params: &[Param]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

fn corrupt(what: &str, err: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::backend_from(format!("PostgreSQL: a stored {what}"), err)
}

fn instant(value: Option<OffsetDateTime>) -> Option<Timestamp> {
    value.map(Timestamp::new)
}

fn count(value: i32, what: &str) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|err| corrupt(what, err))
}

/// The task in `row` (selected with [`COLUMNS`]).
pub fn row_to_task(row: &tokio_postgres::Row) -> Result<Task, StoreError> {
    let get = |err: tokio_postgres::Error| pg_error("reading a task row", err);
    Ok(Task {
        id: row
            .try_get::<_, &str>(0)
            .map_err(get)?
            .parse()
            .map_err(|err| corrupt("task id", err))?,
        task_type: row.try_get(1).map_err(get)?,
        payload: row.try_get(2).map_err(get)?,
        status: row
            .try_get::<_, &str>(3)
            .map_err(get)?
            .parse()
            .map_err(|err| corrupt("status", err))?,
        scheduled_at: Timestamp::new(row.try_get(4).map_err(get)?),
        created_at: Timestamp::new(row.try_get(5).map_err(get)?),
        updated_at: Timestamp::new(row.try_get(6).map_err(get)?),
        attempts: count(row.try_get(7).map_err(get)?, "attempt count")?,
        max_attempts: count(row.try_get(8).map_err(get)?, "attempt limit")?,
        last_error: row.try_get(9).map_err(get)?,
        last_failed_attempt_at: instant(row.try_get(10).map_err(get)?),
        succeeded_at: instant(row.try_get(11).map_err(get)?),
        finished_at: instant(row.try_get(12).map_err(get)?),
        reference_uid: row.try_get(13).map_err(get)?,
        lease_expires_at: instant(row.try_get(14).map_err(get)?),
        idempotency_key: row.try_get(16).map_err(get)?,
        retry_policy: serde_json::from_str(row.try_get::<_, &str>(17).map_err(get)?)
            .map_err(|err| corrupt("retry policy", err))?,
        lease_token: row.try_get(18).map_err(get)?,
        schedule_name: row.try_get(19).map_err(get)?,
        schedule_tick: instant(row.try_get(20).map_err(get)?),
        concurrency_key: row.try_get(21).map_err(get)?,
        rate_key: row.try_get(22).map_err(get)?,
        held: row
            .try_get::<_, Option<&str>>(23)
            .map_err(get)?
            .and_then(Held::parse),
    })
}

/// The tasks `rows` hold.
pub fn rows_to_tasks(rows: &[tokio_postgres::Row]) -> Result<Vec<Task>, StoreError> {
    rows.iter().map(row_to_task).collect()
}

/// The task `id`, locked for this transaction when `lock`.
pub async fn load(
    client: &impl GenericClient,
    id: TaskId,
    lock: bool,
) -> Result<Option<Task>, StoreError> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM tasker.tasks WHERE id = $1{lock}"),
            &[&id.to_string()],
        )
        .await
        .map_err(|err| pg_error("reading a task", err))?;
    row.as_ref().map(row_to_task).transpose()
}

fn at(value: Option<Timestamp>) -> Option<OffsetDateTime> {
    value.map(|t| t.0)
}

fn int(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// Inserts `task`.
pub async fn insert(client: &impl GenericClient, task: &Task) -> Result<(), tokio_postgres::Error> {
    let policy = serde_json::to_string(&task.retry_policy).unwrap_or_default();
    client
        .execute(
            &format!(
                "INSERT INTO tasker.tasks ({COLUMNS}, list_key) VALUES ($1, $2, $3, $4, $5, $6, \
                 $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25)"
            ),
            &[
                &task.id.to_string(),
                &task.task_type,
                &task.payload,
                &task.status.as_str(),
                &task.scheduled_at.0,
                &task.created_at.0,
                &task.updated_at.0,
                &int(task.attempts),
                &int(task.max_attempts),
                &task.last_error,
                &at(task.last_failed_attempt_at),
                &at(task.succeeded_at),
                &at(task.finished_at),
                &task.reference_uid,
                &at(task.lease_expires_at),
                &at(task.due_at()),
                &task.idempotency_key,
                &policy,
                &task.lease_token,
                &task.schedule_name,
                &at(task.schedule_tick),
                &task.concurrency_key,
                &task.rate_key,
                &task.held.map(Held::as_str),
                &ListKey::of(task).as_str(),
            ],
        )
        .await?;
    Ok(())
}

/// Writes the columns a transition may change in which `after` differs from `before` (a
/// partial index's entry moves only when a column it holds changes).
pub async fn update(
    client: &impl GenericClient,
    before: &Task,
    after: &Task,
) -> Result<(), tokio_postgres::Error> {
    let mut params: Vec<Param> = vec![Box::new(after.id.to_string())];
    let mut sets = Vec::new();
    let mut set = |column: &str, value: Param| {
        params.push(value);
        sets.push(format!("{column} = ${}", params.len()));
    };
    if before.status != after.status {
        set("status", Box::new(after.status.as_str()));
    }
    let instants = [
        (
            "scheduled_at",
            Some(before.scheduled_at),
            Some(after.scheduled_at),
        ),
        (
            "updated_at",
            Some(before.updated_at),
            Some(after.updated_at),
        ),
        (
            "last_failed_attempt_at",
            before.last_failed_attempt_at,
            after.last_failed_attempt_at,
        ),
        ("succeeded_at", before.succeeded_at, after.succeeded_at),
        ("finished_at", before.finished_at, after.finished_at),
        (
            "lease_expires_at",
            before.lease_expires_at,
            after.lease_expires_at,
        ),
        ("due_at", before.due_at(), after.due_at()),
    ];
    for (column, old, new) in instants {
        if old != new {
            set(column, Box::new(at(new)));
        }
    }
    if before.attempts != after.attempts {
        set("attempts", Box::new(int(after.attempts)));
    }
    if before.last_error != after.last_error {
        set("last_error", Box::new(after.last_error.clone()));
    }
    if before.lease_token != after.lease_token {
        set("lease_token", Box::new(after.lease_token.clone()));
    }
    if before.held != after.held {
        set("held", Box::new(after.held.map(Held::as_str)));
    }
    let key = ListKey::of(after);
    if ListKey::of(before) != key {
        set("list_key", Box::new(key.as_str().to_owned()));
    }
    if sets.is_empty() {
        return Ok(());
    }
    let sql = format!("UPDATE tasker.tasks SET {} WHERE id = $1", sets.join(", "));
    client.execute(&sql, &refs(&params)).await?;
    Ok(())
}

/// The unique index a failed write broke, if that is why it failed.
pub fn broken_unique(err: &tokio_postgres::Error) -> Option<&str> {
    let db = err.as_db_error()?;
    (db.code() == &tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
        .then(|| db.constraint().unwrap_or_default())
}

/// The pending or running task other than `task` that holds its `(referenceUid, type)`.
pub async fn reference_holder(
    client: &impl GenericClient,
    task: &Task,
) -> Result<Option<TaskId>, StoreError> {
    let row = client
        .query_opt(
            "SELECT id FROM tasker.tasks WHERE reference_uid = $1 AND type = $2 \
             AND status IN ('pending', 'running') AND id <> $3",
            &[&task.reference_uid, &task.task_type, &task.id.to_string()],
        )
        .await
        .map_err(|err| pg_error("reading a reference's holder", err))?;
    row.map(|row| {
        row.get::<_, &str>(0)
            .parse()
            .map_err(|err| corrupt("task id", err))
    })
    .transpose()
}

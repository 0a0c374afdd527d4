//! The mapping between rows and tasks, and the writes of one task.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params};

use crate::clock::Timestamp;
use crate::store::{ListKey, StoreError};
use crate::task::{Held, Task, TaskId};

/// A task row's columns, as a literal, so the statements every task runs are constants
/// (`concat!`) instead of text built for each call.
macro_rules! columns {
    () => {
        "id, type, payload, status, scheduled_at, created_at, updated_at, attempts, \
         max_attempts, last_error, last_failed_attempt_at, succeeded_at, finished_at, \
         reference_uid, lease_expires_at, due_at, idempotency_key, retry_policy, lease_token, \
         schedule_name, schedule_tick, concurrency_key, rate_key, held"
    };
}
pub(super) use columns;

pub const COLUMNS: &str = columns!();

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
        concurrency_key: row.get(21)?,
        rate_key: row.get(22)?,
        held: row
            .get::<_, Option<String>>(23)?
            .as_deref()
            .and_then(Held::parse),
    })
}

pub fn load(conn: &Connection, id: TaskId) -> Result<Option<Task>, StoreError> {
    conn.prepare_cached(concat!("SELECT ", columns!(), " FROM tasks WHERE id = ?1"))
        .and_then(|mut stmt| stmt.query_row(params![id.to_string()], row_to_task))
        .optional()
        .map_err(sqlite_error)
}

pub fn insert(conn: &Connection, task: &Task) -> rusqlite::Result<()> {
    conn.prepare_cached(concat!(
        "INSERT INTO tasks (",
        columns!(),
        ", list_key) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, \
         ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25)"
    ))?
    .execute(params![
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
        task.concurrency_key,
        task.rate_key,
        task.held.map(Held::as_str),
        ListKey::of(task).as_str(),
    ])?;
    Ok(())
}

/// A column that transitions change: whether two versions of a task differ in it (compared as
/// values, not as text), and its stored value.
struct Mutable {
    name: &'static str,
    differs: fn(&Task, &Task) -> bool,
    value: fn(&Task) -> Value,
}

fn text_of(value: Option<Timestamp>) -> Value {
    value.map_or(Value::Null, |t| Value::Text(t.to_text()))
}

fn optional(value: &Option<String>) -> Value {
    value.clone().map_or(Value::Null, Value::Text)
}

/// Every column a transition may change; `update` writes only those that did.
static MUTABLE: [Mutable; 13] = [
    Mutable {
        name: "status",
        differs: |a, b| a.status != b.status,
        value: |t| Value::Text(t.status.as_str().to_owned()),
    },
    Mutable {
        name: "scheduled_at",
        differs: |a, b| a.scheduled_at != b.scheduled_at,
        value: |t| Value::Text(t.scheduled_at.to_text()),
    },
    Mutable {
        name: "updated_at",
        differs: |a, b| a.updated_at != b.updated_at,
        value: |t| Value::Text(t.updated_at.to_text()),
    },
    Mutable {
        name: "attempts",
        differs: |a, b| a.attempts != b.attempts,
        value: |t| Value::Integer(i64::from(t.attempts)),
    },
    Mutable {
        name: "last_error",
        differs: |a, b| a.last_error != b.last_error,
        value: |t| optional(&t.last_error),
    },
    Mutable {
        name: "last_failed_attempt_at",
        differs: |a, b| a.last_failed_attempt_at != b.last_failed_attempt_at,
        value: |t| text_of(t.last_failed_attempt_at),
    },
    Mutable {
        name: "succeeded_at",
        differs: |a, b| a.succeeded_at != b.succeeded_at,
        value: |t| text_of(t.succeeded_at),
    },
    Mutable {
        name: "finished_at",
        differs: |a, b| a.finished_at != b.finished_at,
        value: |t| text_of(t.finished_at),
    },
    Mutable {
        name: "lease_expires_at",
        differs: |a, b| a.lease_expires_at != b.lease_expires_at,
        value: |t| text_of(t.lease_expires_at),
    },
    Mutable {
        name: "due_at",
        differs: |a, b| a.due_at() != b.due_at(),
        value: |t| text_of(t.due_at()),
    },
    Mutable {
        name: "lease_token",
        differs: |a, b| a.lease_token != b.lease_token,
        value: |t| optional(&t.lease_token),
    },
    Mutable {
        name: "held",
        differs: |a, b| a.held != b.held,
        value: |t| {
            t.held
                .map_or(Value::Null, |held| Value::Text(held.as_str().to_owned()))
        },
    },
    Mutable {
        name: "list_key",
        differs: |a, b| a.queue_at() != b.queue_at() || a.id != b.id,
        value: |t| Value::Text(ListKey::of(t).as_str().to_owned()),
    },
];

thread_local! {
    /// Each update's text by the columns it sets (a bit each) and whether it is conditional:
    /// built once, so the statement cache is looked up without formatting a statement.
    static UPDATES: std::cell::RefCell<std::collections::HashMap<(u16, bool), std::rc::Rc<str>>> =
        std::cell::RefCell::default();
}

/// The text of the update setting the columns of `changed` (bits of [`MUTABLE`]), with a
/// condition on every column's old value when `conditional`.
fn update_sql(changed: u16, conditional: bool) -> std::rc::Rc<str> {
    UPDATES.with(|cache| {
        std::rc::Rc::clone(
            cache
                .borrow_mut()
                .entry((changed, conditional))
                .or_insert_with(|| {
                    let mut n = 1;
                    let mut sets = Vec::new();
                    for (bit, column) in MUTABLE.iter().enumerate() {
                        if changed & (1 << bit) != 0 {
                            n += 1;
                            sets.push(format!("{} = ?{n}", column.name));
                        }
                    }
                    let mut sql = format!("UPDATE tasks SET {} WHERE id = ?1", sets.join(", "));
                    if conditional {
                        for column in &MUTABLE {
                            n += 1;
                            sql.push_str(&format!(" AND {} IS ?{n}", column.name));
                        }
                    }
                    sql.into()
                }),
        )
    })
}

/// Writes the columns in which `after` differs from `before`, the task as read in the same
/// transaction. Only those: SQLite rewrites the entries of every index on a column a statement
/// sets, even to the value it had, and most indexes (the listing key's, the type's) do not
/// change in a claim or a success.
pub fn update(conn: &Connection, before: &Task, after: &Task) -> rusqlite::Result<()> {
    update_where(conn, before, after, false).map(|_| ())
}

/// [`update`] for a `before` not read in this transaction: the row changes only if its columns
/// are still `before`'s. True when it did (or nothing was to change); false when the row is
/// gone or was changed since.
pub fn update_if_still(conn: &Connection, before: &Task, after: &Task) -> rusqlite::Result<bool> {
    update_where(conn, before, after, true)
}

fn update_where(
    conn: &Connection,
    before: &Task,
    after: &Task,
    conditional: bool,
) -> rusqlite::Result<bool> {
    let mut changed = 0u16;
    let mut values = vec![Value::Text(after.id.to_string())];
    for (bit, column) in MUTABLE.iter().enumerate() {
        if (column.differs)(before, after) {
            changed |= 1 << bit;
            values.push((column.value)(after));
        }
    }
    if changed == 0 {
        return Ok(true);
    }
    if conditional {
        values.extend(MUTABLE.iter().map(|column| (column.value)(before)));
    }
    let sql = update_sql(changed, conditional);
    let rows = conn
        .prepare_cached(&sql)?
        .execute(rusqlite::params_from_iter(values))?;
    if rows == 1 {
        super::counts::note(before.status, after.status);
    }
    Ok(rows == 1)
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

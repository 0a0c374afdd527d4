//! The SQLite schema: tables, the indexes every listing reads in its own order, the triggers
//! that count created and purged tasks per status, and the upgrade of a file an earlier
//! Tasker made.

use rusqlite::{Connection, TransactionBehavior};

use super::rows::backend;
use crate::store::StoreError;

/// The schema version this code writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 8;

/// `due_at` is the claimable instant (see [`crate::task::Task::due_at`]) and `list_key` the
/// listing key ([`crate::store::ListKey`]), kept as columns so that an index answers "what is
/// due" and each listing page without reading other rows.
const TABLES: &str = "
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY NOT NULL,
    type TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    scheduled_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    last_error TEXT,
    last_failed_attempt_at TEXT,
    succeeded_at TEXT,
    finished_at TEXT,
    reference_uid TEXT,
    lease_expires_at TEXT,
    due_at TEXT,
    idempotency_key TEXT,
    retry_policy TEXT NOT NULL,
    lease_token TEXT,
    schedule_name TEXT,
    schedule_tick TEXT,
    list_key TEXT NOT NULL,
    concurrency_key TEXT,
    rate_key TEXT,
    held TEXT
) STRICT;
CREATE TABLE IF NOT EXISTS schedules (
    name TEXT PRIMARY KEY NOT NULL,
    body TEXT NOT NULL,
    due_at TEXT,
    revision INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS paused_types (
    type TEXT PRIMARY KEY NOT NULL,
    paused_at TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS key_rates (
    key TEXT PRIMARY KEY NOT NULL,
    next_start TEXT NOT NULL,
    booked_until TEXT
) STRICT, WITHOUT ROWID;
";

/// The counts per status, one row each, changed in the transaction that changes a task (by
/// trigger for a create or a purge, by the group commit for a change of status: see
/// `counts.rs`; version 8 dropped the trigger per update): `GET /stats` reads five rows
/// instead of counting the table.
const COUNTS: &str = "
CREATE TABLE task_counts (status TEXT PRIMARY KEY NOT NULL, n INTEGER NOT NULL) STRICT, WITHOUT ROWID;
INSERT INTO task_counts (status, n)
    SELECT s.column1, (SELECT COUNT(*) FROM tasks WHERE status = s.column1)
    FROM (VALUES ('pending'), ('running'), ('succeeded'), ('failed'), ('cancelled')) AS s;
";

/// Listings: indexes in listing order, so a page reads its own rows (and, for a status, few
/// others) at any depth of cursor. Each is chosen so that a task's run writes as few index
/// entries as it can: a claim moves none of them (it writes only changed columns, and neither
/// `list_key`, `type` nor `finished_at` changes), a success one (it leaves `tasks_open`).
/// Unfinished tasks are exactly those without `finished_at`. A claim that keeps limits per
/// key counts a key's running tasks in `tasks_key_running`; an outcome wakes a task held for
/// its key from `tasks_key_held`. Claims read three: `tasks_due`
/// (due tasks by instant), `tasks_type_due` (the same per type, so that a claim with a paused
/// or capped type reads only the open types' ranges) and `tasks_final` (running final
/// attempts, whose expiry a claim fails whatever their type).
const INDEXES: &str = "
CREATE INDEX IF NOT EXISTS tasks_due ON tasks (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_type_due ON tasks (type, due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_final ON tasks (due_at)
    WHERE status = 'running' AND attempts >= max_attempts;
CREATE INDEX IF NOT EXISTS tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_reference ON tasks (reference_uid, type) WHERE reference_uid IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS tasks_active_reference ON tasks (reference_uid, type)
    WHERE reference_uid IS NOT NULL AND status IN ('pending', 'running');
CREATE UNIQUE INDEX IF NOT EXISTS tasks_idempotency ON tasks (type, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
DROP INDEX IF EXISTS tasks_schedule;
DROP INDEX IF EXISTS tasks_status_list;
DROP INDEX IF EXISTS tasks_type_status_list;
CREATE INDEX IF NOT EXISTS tasks_list ON tasks (list_key);
CREATE INDEX IF NOT EXISTS tasks_open ON tasks (list_key) WHERE finished_at IS NULL;
CREATE INDEX IF NOT EXISTS tasks_closed ON tasks (status, list_key)
    WHERE status IN ('failed', 'cancelled');
CREATE INDEX IF NOT EXISTS tasks_type_list ON tasks (type, list_key);
CREATE INDEX IF NOT EXISTS tasks_schedule_list ON tasks (schedule_name, list_key)
    WHERE schedule_name IS NOT NULL;
CREATE INDEX IF NOT EXISTS schedules_due ON schedules (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_key_running ON tasks (concurrency_key, due_at)
    WHERE status = 'running' AND concurrency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_key_held ON tasks (concurrency_key, due_at)
    WHERE held = 'concurrency' AND status = 'pending';
CREATE TRIGGER IF NOT EXISTS tasks_counted_insert AFTER INSERT ON tasks BEGIN
    UPDATE task_counts SET n = n + 1 WHERE status = NEW.status;
END;
DROP TRIGGER IF EXISTS tasks_counted_update;
CREATE TRIGGER IF NOT EXISTS tasks_counted_delete AFTER DELETE ON tasks BEGIN
    UPDATE task_counts SET n = n - 1 WHERE status = OLD.status;
END;
";

/// The listing key of a row, as [`crate::store::ListKey::of`] computes it: only for rows an
/// earlier schema stored without it.
const LIST_KEY_SQL: &str = "CASE WHEN status IN ('pending', 'running', 'succeeded') \
     THEN MAX(scheduled_at, created_at) ELSE COALESCE(finished_at, updated_at) END || '#' || id";

/// Brings the database to [`SCHEMA_VERSION`] in one immediate transaction, so no other
/// process writes a task between the counts' first tally and their triggers.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend)?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(backend)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::backend(format!(
            "the database has schema version {version}; this Tasker knows up to {SCHEMA_VERSION}"
        )));
    }
    add_missing_columns(&tx)?;
    tx.execute_batch(TABLES).map_err(backend)?;
    tx.execute(
        &format!("UPDATE tasks SET list_key = {LIST_KEY_SQL} WHERE list_key = ''"),
        [],
    )
    .map_err(backend)?;
    let counted: bool = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'task_counts')",
            [],
            |row| row.get(0),
        )
        .map_err(backend)?;
    if !counted {
        tx.execute_batch(COUNTS).map_err(backend)?;
    }
    tx.execute_batch(INDEXES).map_err(backend)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(backend)?;
    tx.commit().map_err(backend)
}

/// The columns of `table` (none when it does not exist).
fn columns(conn: &Connection, table: &str) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_table_info(?1)")
        .map_err(backend)?;
    stmt.query_map([table], |row| row.get(0))
        .map_err(backend)?
        .collect::<rusqlite::Result<_>>()
        .map_err(backend)
}

/// Columns added after the first schema: a database made by an earlier Tasker gets them (with
/// their defaults) before the indexes that use them are created.
fn add_missing_columns(conn: &Connection) -> Result<(), StoreError> {
    let rates = columns(conn, "key_rates")?;
    if !rates.is_empty() && !rates.iter().any(|name| name == "booked_until") {
        conn.execute_batch("ALTER TABLE key_rates ADD COLUMN booked_until TEXT")
            .map_err(backend)?;
    }
    let existing = columns(conn, "tasks")?;
    if existing.is_empty() {
        return Ok(());
    }
    let default_policy = serde_json::to_string(&crate::retry::RetryPolicy::default())
        .map_err(|err| StoreError::backend_from("encoding the default retry policy", err))?
        .replace('\'', "''");
    let added = [
        ("idempotency_key", "TEXT".to_owned()),
        (
            "retry_policy",
            format!("TEXT NOT NULL DEFAULT '{default_policy}'"),
        ),
        ("lease_token", "TEXT".to_owned()),
        ("schedule_name", "TEXT".to_owned()),
        ("schedule_tick", "TEXT".to_owned()),
        // Filled in from the other columns by `migrate`.
        ("list_key", "TEXT NOT NULL DEFAULT ''".to_owned()),
        ("concurrency_key", "TEXT".to_owned()),
        ("rate_key", "TEXT".to_owned()),
        ("held", "TEXT".to_owned()),
    ];
    for (column, definition) in added {
        if !existing.iter().any(|name| name == column) {
            conn.execute_batch(&format!(
                "ALTER TABLE tasks ADD COLUMN {column} {definition}"
            ))
            .map_err(backend)?;
        }
    }
    Ok(())
}

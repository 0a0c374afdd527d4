//! The embedded SQLite backend: one file, WAL journal, every change in an immediate transaction.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{
    Backlog, Created, LEASE_EXPIRED_ERROR, ListFilter, ListKey, QueueStats, Settlement,
    StatusCounts, StoreError, TaskCanceller, TaskLister, TaskPage, TaskPurger, TaskQueue,
    TaskReader, TaskRetrier, TaskWriter, apply_cancel, apply_claim, apply_retry, apply_settlement,
};
use crate::clock::Timestamp;
use crate::task::{Task, TaskId, TaskStatus};

/// How long a writer waits for another process's write transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// `due_at` is the claimable instant (see [`Task::due_at`]), kept as a column so that one partial
/// index answers "what is due" without reading finished tasks.
const SCHEMA: &str = "
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
    lease_token TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS tasks_due ON tasks (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_reference ON tasks (reference_uid, type) WHERE reference_uid IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS tasks_active_reference ON tasks (reference_uid, type)
    WHERE reference_uid IS NOT NULL AND status IN ('pending', 'running');
CREATE UNIQUE INDEX IF NOT EXISTS tasks_idempotency ON tasks (type, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
";

/// The schema version this code writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

const COLUMNS: &str = "id, type, payload, status, scheduled_at, created_at, updated_at, attempts, \
    max_attempts, last_error, last_failed_attempt_at, succeeded_at, finished_at, reference_uid, \
    lease_expires_at, due_at, idempotency_key, retry_policy, lease_token";

/// Tasks in one SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// A second, query-only connection to a database file: listings, counts and reads run
    /// on it, so they never hold up the processor's writes (WAL lets both work at once).
    reader: Option<Arc<Mutex<Connection>>>,
    settles: Arc<Mutex<Vec<SettleRequest>>>,
}

/// An outcome write waiting for the next group commit, and where its answer goes.
struct SettleRequest {
    id: TaskId,
    attempt: u32,
    token: Option<String>,
    outcome: Settlement,
    now: Timestamp,
    reply: tokio::sync::oneshot::Sender<Result<Task, StoreError>>,
}

impl std::fmt::Debug for SettleRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettleRequest")
            .field("id", &self.id)
            .finish()
    }
}

/// The outcome of one request inside the group commit's transaction.
fn settle_in(tx: &rusqlite::Transaction<'_>, request: &SettleRequest) -> Result<Task, StoreError> {
    let id = request.id;
    let task = load(tx, id)?.ok_or(StoreError::LeaseLost(id))?;
    let holds_lease = task.status == TaskStatus::Running
        && task.attempts == request.attempt
        && task.lease_token.is_some()
        && task.lease_token == request.token;
    if !holds_lease {
        return Err(StoreError::LeaseLost(id));
    }
    let task = apply_settlement(task, &request.outcome, request.now);
    update(tx, &task)?;
    Ok(task)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and its schema.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let conn = Connection::open(path.as_ref()).map_err(|err| {
            StoreError::Backend(format!(
                "cannot open SQLite database {}: {err}",
                path.as_ref().display()
            ))
        })?;
        let mut store = Self::init(conn)?;
        let reader = Connection::open(path.as_ref()).map_err(backend)?;
        reader.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
        reader
            .pragma_update(None, "query_only", true)
            .map_err(backend)?;
        store.reader = Some(Arc::new(Mutex::new(reader)));
        Ok(store)
    }

    /// A private in-memory database, gone when the store is dropped.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory().map_err(backend)?)
    }

    fn init(conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
        // WAL lets readers in other processes work while a processor writes.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(backend)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(backend)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Backend(format!(
                "the database has schema version {version}; this Tasker knows up to {SCHEMA_VERSION}"
            )));
        }
        add_missing_columns(&conn)?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(backend)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            reader: None,
            settles: Arc::default(),
        })
    }

    /// Runs the read-only `work` on the reading connection (the writing one for an in-memory
    /// database, which a second connection would not see).
    async fn with_reader<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        on(self.reader.as_ref().unwrap_or(&self.conn), work).await
    }

    /// Runs `work` on the writing connection off the async runtime.
    async fn with_conn<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        on(&self.conn, work).await
    }

    /// Runs `work` inside an immediate (write-locking) transaction, committing on success.
    async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.with_conn(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_error)?;
            let value = work(&tx)?;
            tx.commit().map_err(sqlite_error)?;
            Ok(value)
        })
        .await
    }
}

/// Runs `work` on `conn` off the async runtime.
async fn on<T, F>(conn: &Arc<Mutex<Connection>>, work: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
{
    let conn = Arc::clone(conn);
    tokio::task::spawn_blocking(move || {
        let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        work(&mut guard)
    })
    .await
    .map_err(|err| StoreError::Backend(format!("SQLite worker failed: {err}")))?
}

/// Columns added after the first schema: a database made by an earlier Tasker gets them (with
/// their defaults) before the indexes that use them are created.
fn add_missing_columns(conn: &Connection) -> Result<(), StoreError> {
    let existing: Vec<String> = {
        let mut stmt = conn
            .prepare("SELECT name FROM pragma_table_info('tasks')")
            .map_err(backend)?;
        stmt.query_map([], |row| row.get(0))
            .map_err(backend)?
            .collect::<rusqlite::Result<_>>()
            .map_err(backend)?
    };
    if existing.is_empty() {
        return Ok(());
    }
    let default_policy = serde_json::to_string(&crate::retry::RetryPolicy::default())
        .map_err(|err| StoreError::Backend(err.to_string()))?
        .replace('\'', "''");
    let added = [
        ("idempotency_key", "TEXT".to_owned()),
        (
            "retry_policy",
            format!("TEXT NOT NULL DEFAULT '{default_policy}'"),
        ),
        ("lease_token", "TEXT".to_owned()),
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

fn backend(err: rusqlite::Error) -> StoreError {
    StoreError::Backend(format!("SQLite: {err}"))
}

/// Lock contention is passing; everything else is not.
fn sqlite_error(err: rusqlite::Error) -> StoreError {
    match err.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            StoreError::Unavailable(format!("SQLite: {err}"))
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

fn row_to_task(row: &rusqlite::Row<'_>) -> rusqlite::Result<Task> {
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
    })
}

fn load(conn: &Connection, id: TaskId) -> Result<Option<Task>, StoreError> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"),
        params![id.to_string()],
        row_to_task,
    )
    .optional()
    .map_err(sqlite_error)
}

fn insert(conn: &Connection, task: &Task) -> rusqlite::Result<usize> {
    conn.execute(
        &format!(
            "INSERT INTO tasks ({COLUMNS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"
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
        ],
    )
}

/// Rewrites every mutable column of `task`.
fn update(conn: &Connection, task: &Task) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE tasks SET status = ?2, scheduled_at = ?3, updated_at = ?4, attempts = ?5, \
         last_error = ?6, last_failed_attempt_at = ?7, succeeded_at = ?8, finished_at = ?9, \
         lease_expires_at = ?10, due_at = ?11, lease_token = ?12 WHERE id = ?1",
        params![
            task.id.to_string(),
            task.status.as_str(),
            task.scheduled_at.to_text(),
            task.updated_at.to_text(),
            task.attempts,
            task.last_error,
            text(task.last_failed_attempt_at),
            text(task.succeeded_at),
            text(task.finished_at),
            text(task.lease_expires_at),
            text(task.due_at()),
            task.lease_token,
        ],
    )
    .map_err(sqlite_error)?;
    Ok(())
}

impl TaskReader for SqliteStore {
    async fn get(&self, id: TaskId) -> Result<Option<Task>, StoreError> {
        self.with_reader(move |conn| load(conn, id)).await
    }
}

impl TaskWriter for SqliteStore {
    async fn create(&self, task: Task) -> Result<Created, StoreError> {
        self.write(move |tx| {
            if let Some(key) = &task.idempotency_key {
                let existing = tx
                    .query_row(
                        &format!(
                            "SELECT {COLUMNS} FROM tasks WHERE type = ?1 AND idempotency_key = ?2"
                        ),
                        params![task.task_type, key],
                        row_to_task,
                    )
                    .optional()
                    .map_err(sqlite_error)?;
                if let Some(existing) = existing {
                    return Ok(Created::Existing(existing));
                }
            }
            insert_new(tx, task)
        })
        .await
    }
}

/// Inserts a new task; a violated reference rule names the active task.
fn insert_new(tx: &rusqlite::Transaction<'_>, task: Task) -> Result<Created, StoreError> {
    {
        match insert(tx, &task) {
            Ok(_) => Ok(Created::New(task)),
            Err(err)
                if err.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) =>
            {
                let existing: Option<String> = tx
                    .query_row(
                        "SELECT id FROM tasks WHERE reference_uid = ?1 AND type = ?2 \
                         AND status IN ('pending', 'running')",
                        params![task.reference_uid, task.task_type],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(sqlite_error)?;
                match existing {
                    Some(id) => Err(StoreError::Duplicate {
                        existing: id
                            .parse()
                            .map_err(|e| StoreError::Backend(format!("{e}")))?,
                    }),
                    None => Err(backend(err)),
                }
            }
            Err(err) => Err(sqlite_error(err)),
        }
    }
}

impl TaskQueue for SqliteStore {
    async fn claim_due(
        &self,
        due_by: Timestamp,
        now: Timestamp,
        limit: usize,
        lease_until: Timestamp,
    ) -> Result<Vec<Task>, StoreError> {
        self.write(move |tx| {
            let mut claimed = Vec::new();
            // Exhausted tasks with an expired lease are settled here, so they never block the
            // head of the queue; keep reading until `limit` runnable tasks are found.
            loop {
                let due: Vec<Task> = {
                    let mut stmt = tx
                        .prepare_cached(&format!(
                            "SELECT {COLUMNS} FROM tasks WHERE due_at <= ?1 \
                             ORDER BY due_at, id LIMIT ?2"
                        ))
                        .map_err(sqlite_error)?;
                    let want = i64::try_from(limit - claimed.len()).unwrap_or(i64::MAX);
                    stmt.query_map(params![due_by.to_text(), want], row_to_task)
                        .map_err(sqlite_error)?
                        .collect::<rusqlite::Result<_>>()
                        .map_err(sqlite_error)?
                };
                if due.is_empty() {
                    break;
                }
                for task in due {
                    if task.status == TaskStatus::Running && task.attempts >= task.max_attempts {
                        let error = Settlement::Failed {
                            error: LEASE_EXPIRED_ERROR.to_owned(),
                        };
                        update(tx, &apply_settlement(task, &error, now))?;
                    } else {
                        let task = apply_claim(task, now, lease_until);
                        update(tx, &task)?;
                        claimed.push(task);
                    }
                }
                if claimed.len() >= limit {
                    break;
                }
            }
            Ok(claimed)
        })
        .await
    }

    async fn settle(
        &self,
        claimed: &Task,
        outcome: Settlement,
        now: Timestamp,
    ) -> Result<Task, StoreError> {
        // Group commit: outcomes that arrive while another transaction holds the connection are
        // written together in the next one, so a drain commits once per group instead of once
        // per task. The request that finds the queue empty leads: once it holds the
        // connection it takes every request queued by then (its own among them), writes them
        // in one transaction and answers each after the commit.
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = SettleRequest {
            id: claimed.id,
            attempt: claimed.attempts,
            token: claimed.lease_token.clone(),
            outcome,
            now,
            reply,
        };
        let leads = {
            let mut queue = self.settles.lock().unwrap_or_else(|p| p.into_inner());
            queue.push(request);
            queue.len() == 1
        };
        if leads {
            let queue = Arc::clone(&self.settles);
            let written = self
                .with_conn(move |conn| {
                    let batch =
                        std::mem::take(&mut *queue.lock().unwrap_or_else(|p| p.into_inner()));
                    let written = conn
                        .transaction_with_behavior(TransactionBehavior::Immediate)
                        .map_err(sqlite_error)
                        .and_then(|tx| {
                            let mut results = Vec::with_capacity(batch.len());
                            for request in &batch {
                                let result = settle_in(&tx, request);
                                // A lost lease writes nothing and the others go on. Any other
                                // failure may have rolled the transaction back (SQLite does so on
                                // its own for some errors): the whole group fails, and its
                                // outcomes are written again by the processor's retries.
                                if let Err(err) = &result {
                                    if !matches!(err, StoreError::LeaseLost(_)) {
                                        return Err(err.clone());
                                    }
                                }
                                results.push(result);
                            }
                            tx.commit().map_err(sqlite_error)?;
                            Ok(results)
                        });
                    match written {
                        Ok(results) => {
                            for (request, result) in batch.into_iter().zip(results) {
                                let _ = request.reply.send(result);
                            }
                        }
                        Err(err) => {
                            for request in batch {
                                let _ = request.reply.send(Err(err.clone()));
                            }
                        }
                    }
                    Ok(())
                })
                .await;
            // The worker never ran (the runtime is shutting down): answer whoever is queued,
            // or the next request would wait behind a leader that is gone.
            if let Err(err) = written {
                let stranded =
                    std::mem::take(&mut *self.settles.lock().unwrap_or_else(|p| p.into_inner()));
                for request in stranded {
                    let _ = request.reply.send(Err(err.clone()));
                }
            }
        }
        answer.await.map_err(|_| {
            StoreError::Backend("the SQLite writer stopped before recording the outcome".into())
        })?
    }
}

impl TaskCanceller for SqliteStore {
    async fn cancel(&self, id: TaskId, now: Timestamp) -> Result<Task, StoreError> {
        self.write(move |tx| {
            let task = load(tx, id)?.ok_or(StoreError::NotFound(id))?;
            if task.status != TaskStatus::Pending {
                return Err(StoreError::Conflict {
                    id,
                    status: task.status,
                });
            }
            let task = apply_cancel(task, now);
            update(tx, &task)?;
            Ok(task)
        })
        .await
    }

    async fn cancel_by_reference(
        &self,
        reference_uid: &str,
        task_type: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<TaskId>, StoreError> {
        let reference_uid = reference_uid.to_owned();
        let task_type = task_type.map(str::to_owned);
        self.write(move |tx| {
            let pending: Vec<Task> = {
                let mut stmt = tx
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM tasks WHERE reference_uid = ?1 \
                         AND (?2 IS NULL OR type = ?2) AND status = 'pending' ORDER BY id"
                    ))
                    .map_err(sqlite_error)?;
                stmt.query_map(params![reference_uid, task_type], row_to_task)
                    .map_err(sqlite_error)?
                    .collect::<rusqlite::Result<_>>()
                    .map_err(sqlite_error)?
            };
            let mut ids = Vec::with_capacity(pending.len());
            for task in pending {
                ids.push(task.id);
                update(tx, &apply_cancel(task, now))?;
            }
            Ok(ids)
        })
        .await
    }
}

/// Tasks deleted per purge transaction: short transactions let processors write in between.
const PURGE_CHUNK: i64 = 1000;

impl TaskPurger for SqliteStore {
    async fn purge_finished_before(
        &self,
        cutoff: Timestamp,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let deleted = self
                .write(move |tx| {
                    let deleted = tx
                        .execute(
                            "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks \
                             WHERE finished_at IS NOT NULL AND finished_at <= ?1 \
                             AND status IN ('succeeded', 'failed', 'cancelled') LIMIT ?2)",
                            params![cutoff.to_text(), PURGE_CHUNK],
                        )
                        .map_err(sqlite_error)?;
                    Ok(deleted as u64)
                })
                .await?;
            total += deleted;
            if deleted == 0 {
                return Ok(total);
            }
            progress(deleted);
        }
    }
}

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
                        want
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
                    .map_err(|err| StoreError::Backend(format!("SQLite: {err}")))?;
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

impl TaskRetrier for SqliteStore {
    async fn retry(&self, id: TaskId, now: Timestamp) -> Result<Task, StoreError> {
        self.write(move |tx| {
            let task = load(tx, id)?.ok_or(StoreError::NotFound(id))?;
            if !matches!(task.status, TaskStatus::Failed | TaskStatus::Cancelled) {
                return Err(StoreError::Conflict {
                    id,
                    status: task.status,
                });
            }
            let retried = apply_retry(task, now);
            match update(tx, &retried) {
                // The partial unique index: another active task holds the reference now.
                Err(StoreError::Backend(message)) if message.contains("UNIQUE") => {
                    let holder: String = tx
                        .query_row(
                            "SELECT id FROM tasks WHERE reference_uid = ?1 AND type = ?2 \
                             AND status IN ('pending', 'running') AND id <> ?3",
                            params![retried.reference_uid, retried.task_type, id.to_string()],
                            |row| row.get(0),
                        )
                        .map_err(sqlite_error)?;
                    Err(StoreError::Duplicate {
                        existing: holder
                            .parse()
                            .map_err(|e| StoreError::Backend(format!("{e}")))?,
                    })
                }
                Err(err) => Err(err),
                Ok(()) => Ok(retried),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_of_a_file_do_not_wait_for_the_writer() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path().join("tasks.db")).expect("open");
        let now = Timestamp::now_utc();
        let task = Task::from_new(crate::task::NewTask::new("t", "{}"), now);
        store.create(task.clone()).await.expect("create");
        // A long write holds the writing connection...
        let writer = Arc::clone(&store.conn);
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let _held = writer.lock().unwrap_or_else(|p| p.into_inner());
            let _ = locked_tx.send(());
            let _ = release_rx.recv();
        });
        locked_rx.recv().expect("writer held");
        // ...and listings, counts and reads still answer.
        let reads = async {
            let now = Timestamp::now_utc();
            let page = store.list(&ListFilter::default(), None, 10, now).await?;
            let counts = store.counts(now).await?;
            let got = store.get(task.id).await?;
            Ok::<_, StoreError>((page, counts, got))
        };
        let (page, counts, got) = tokio::time::timeout(Duration::from_secs(30), reads)
            .await
            .expect("reads did not wait for the writer")
            .expect("reads");
        assert_eq!(page.tasks.len(), 1);
        assert_eq!(counts.pending, 1);
        assert_eq!(got, Some(task));
        release_tx.send(()).expect("release");
        holder.join().expect("holder");
    }

    #[tokio::test]
    async fn a_database_from_the_first_schema_is_upgraded_in_place() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("old.db");
        {
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(
                "CREATE TABLE tasks (id TEXT PRIMARY KEY NOT NULL, type TEXT NOT NULL, \
                 payload TEXT NOT NULL, status TEXT NOT NULL, scheduled_at TEXT NOT NULL, \
                 created_at TEXT NOT NULL, updated_at TEXT NOT NULL, attempts INTEGER NOT NULL, \
                 max_attempts INTEGER NOT NULL, last_error TEXT, last_failed_attempt_at TEXT, \
                 succeeded_at TEXT, finished_at TEXT, reference_uid TEXT, lease_expires_at TEXT, \
                 due_at TEXT) STRICT;
                 INSERT INTO tasks VALUES ('01JD0000000000000000000000', 't', '{}', 'pending', \
                 '2030-01-01T00:00:00.000Z', '2030-01-01T00:00:00.000Z', \
                 '2030-01-01T00:00:00.000Z', 0, 3, NULL, NULL, NULL, NULL, NULL, NULL, \
                 '2030-01-01T00:00:00.000Z');",
            )
            .expect("old schema");
        }
        let store = SqliteStore::open(&path).expect("upgrade");
        let id: TaskId = "01JD0000000000000000000000".parse().expect("id");
        let task = store.get(id).await.expect("get").expect("kept");
        assert_eq!(task.retry_policy, crate::retry::RetryPolicy::default());
        assert_eq!(task.idempotency_key, None);
        // Opening again is a no-op.
        SqliteStore::open(&path).expect("reopen");
    }
}

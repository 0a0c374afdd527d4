//! The embedded SQLite backend: one file, WAL journal, every change in an immediate
//! transaction. [`schema`] holds the tables, indexes and counts, [`rows`] the row mapping, [`queue`] the claims and the
//! group commit of outcomes, [`listing`] the reads for operators.

mod counts;
mod delivery;
mod flow;
mod group;
mod keys;
mod leader;
mod listing;
#[cfg(feature = "testing")]
pub mod probe;
mod queue;
mod rows;
mod schedules;
mod schema;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OptionalExtension, params};

use self::rows::{COLUMNS, backend, insert, load, row_to_task, sqlite_error, store_with, update};
use super::{Created, QueueReads, ReadCounter, StoreError, SweepSummary, Transition};
use crate::clock::Timestamp;
use crate::task::{Task, TaskId};

/// Prepared statements kept per connection: the listings' (one per filter) and the updates'
/// (one per set of changed columns) besides the others.
const STATEMENT_CACHE: usize = 64;
/// How long a writer waits for another process's write transaction before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Tasks in one SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// A second, query-only connection to a database file: listings, counts and reads run
    /// on it, so they never hold up the processor's writes (WAL lets both work at once).
    reader: Option<Arc<Mutex<Connection>>>,
    /// The writes waiting for the next group commit.
    writes: leader::Queue,
    /// What the claims have read.
    reads: Arc<ReadCounter>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and its schema.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let conn = Connection::open(path.as_ref()).map_err(|err| {
            StoreError::backend_from(
                format!("cannot open SQLite database {}", path.as_ref().display()),
                err,
            )
        })?;
        let mut store = Self::init(conn)?;
        let reader = Connection::open(path.as_ref()).map_err(backend)?;
        reader.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
        reader.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
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

    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // WAL lets readers in other processes work while a processor writes.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(backend)?;
        // Plans that never depend on bound values: otherwise the partial indexes make SQLite
        // prepare the claim's query again each time its instant changes (a tenth of a drain).
        conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
            .map_err(backend)?;
        // A group commit's savepoints and the count triggers' statement journals stay in
        // memory instead of spilling to temporary files.
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(backend)?;
        schema::migrate(&mut conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            reader: None,
            writes: Arc::default(),
            reads: Arc::default(),
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

    /// Runs `work` inside an immediate (write-locking) transaction, committing on success:
    /// with the writes queued beside it, in one group commit ([`group`]), in a savepoint of
    /// its own that undoes it alone when it fails.
    async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_in(work, true).await
    }

    /// [`Self::write`] without a savepoint, for the hot writes (a create, an outcome), which
    /// nearly always fail before they change a row: one that fails after fails its group.
    async fn write_lean<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_in(work, false).await
    }

    async fn write_in<T, F>(&self, work: F, in_savepoint: bool) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let write = group::Write::new(work, in_savepoint, reply);
        if leader::push(&self.writes, Box::new(write)) {
            let (conn, turn) = (
                Arc::clone(&self.conn),
                leader::Turn::new(Arc::clone(&self.writes)),
            );
            // Not awaited: the leader answers each write, its caller's among them, as its
            // group commits, and may go on leading long after.
            drop(tokio::task::spawn_blocking(move || {
                leader::lead(&conn, turn)
            }));
        }
        answer
            .await
            .map_err(|_| StoreError::backend("the SQLite writer stopped before the write"))?
    }
}

/// Runs `work` on `conn` off the async runtime.
async fn on<T, F>(conn: &Arc<Mutex<Connection>>, work: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
{
    let conn = Arc::clone(conn);
    tokio::task::spawn_blocking(move || work(&mut conn.lock()))
        .await
        .map_err(|err| StoreError::backend_from("the SQLite worker failed", err))?
}

impl SqliteStore {
    pub async fn task_get(&self, id: TaskId) -> Result<Option<Task>, StoreError> {
        self.with_reader(move |conn| load(conn, id)).await
    }
}

impl SqliteStore {
    pub async fn task_create(&self, task: Task) -> Result<Created, StoreError> {
        self.write_lean(move |tx| {
            if let Some(key) = &task.idempotency_key {
                let existing = tx
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM tasks WHERE type = ?1 AND idempotency_key = ?2"
                    ))
                    .and_then(|mut stmt| stmt.query_row(params![task.task_type, key], row_to_task))
                    .optional()
                    .map_err(sqlite_error)?;
                if let Some(existing) = existing {
                    return Ok(Created::Existing(existing));
                }
            }
            if let Err(err) = store_with(tx, &task, || insert(tx, &task)) {
                // A derived id (a schedule's tick) that an earlier create stored breaks the
                // primary key; any other failure is reported as it is.
                if let StoreError::Backend { .. } = err {
                    if let Ok(Some(existing)) = load(tx, task.id) {
                        return Ok(Created::Existing(existing));
                    }
                }
                return Err(err);
            }
            Ok(Created::New(task))
        })
        .await
    }
}

impl SqliteStore {
    pub async fn task_cancel(&self, id: TaskId, now: Timestamp) -> Result<Task, StoreError> {
        self.write(move |tx| apply(tx, id, &Transition::Cancel { now }))
            .await
    }

    pub async fn task_cancel_by_reference(
        &self,
        reference_uid: &str,
        task_type: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<TaskId>, StoreError> {
        let reference_uid = reference_uid.to_owned();
        let task_type = task_type.map(str::to_owned);
        self.write(move |tx| {
            let pending: Vec<TaskId> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT id FROM tasks WHERE reference_uid = ?1 \
                         AND (?2 IS NULL OR type = ?2) AND status = 'pending' ORDER BY id",
                    )
                    .map_err(sqlite_error)?;
                stmt.query_map(params![reference_uid, task_type], |row| {
                    row.get::<_, String>(0)
                })
                .map_err(sqlite_error)?
                .collect::<rusqlite::Result<Vec<String>>>()
                .map_err(sqlite_error)?
                .iter()
                .map(|id| id.parse::<TaskId>())
                .collect::<Result<_, _>>()
                .map_err(|err| StoreError::backend_from("SQLite: a stored task id", err))?
            };
            let cancel = Transition::Cancel { now };
            for &id in &pending {
                apply(tx, id, &cancel)?;
            }
            Ok(pending)
        })
        .await
    }
}

/// Tasks deleted per purge transaction: short transactions let processors write in between.
const PURGE_CHUNK: i64 = 1000;

impl SqliteStore {
    pub async fn task_purge_finished(
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
                self.write(move |tx| keys::purge_rates(tx, cutoff)).await?;
                return Ok(total);
            }
            progress(deleted);
        }
    }
}

impl SqliteStore {
    pub async fn task_retry(&self, id: TaskId, now: Timestamp) -> Result<Task, StoreError> {
        self.write(move |tx| apply(tx, id, &Transition::Retry { now }))
            .await
    }
}

impl SqliteStore {
    /// Nothing to write later: every change is written as it is made.
    pub async fn queue_flush(&self, _now: Timestamp, _end: bool) {}

    /// Nothing to listen to: another process's tasks are found at the next look.
    pub async fn queue_listen(&self, _wake: Arc<tokio::sync::Notify>) {}

    /// Every write queues for the one connection's next group, and the groups run in turn;
    /// see [`crate::store::Store::queue_writes_in_order`].
    pub async fn queue_writes_in_order(&self) -> bool {
        true
    }

    /// What the claims have read; see [`crate::store::Store::queue_reads`].
    pub async fn queue_reads(&self) -> QueueReads {
        self.reads.get()
    }

    /// Nothing to sweep: claims find due tasks through an index that the same transaction
    /// keeps, so no task is ever out of a claim's sight.
    pub async fn queue_sweep(
        &self,
        _now: Timestamp,
        _max_entries: u64,
    ) -> Result<SweepSummary, StoreError> {
        Ok(SweepSummary {
            complete: true,
            ..SweepSummary::default()
        })
    }
}

/// Applies `transition` to the task `id` inside the transaction `tx`: SQLite's one encoding of
/// every state change.
fn apply(tx: &Connection, id: TaskId, transition: &Transition) -> Result<Task, StoreError> {
    let before = load(tx, id)?.ok_or_else(|| transition.missing(id))?;
    let after = transition
        .apply(&before)
        .map_err(|refused| transition.refusal(id, refused))?;
    store_with(tx, &after, || update(tx, &before, &after))?;
    Ok(after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ListFilter, ListPage};

    #[tokio::test]
    async fn reads_of_a_file_do_not_wait_for_the_writer() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path().join("tasks.db")).expect("open");
        let now = Timestamp::now_utc();
        let task = Task::from_new(crate::task::NewTask::new("t", "{}"), now);
        store.task_create(task.clone()).await.expect("create");
        // A long write holds the writing connection...
        let writer = Arc::clone(&store.conn);
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let _held = writer.lock();
            let _ = locked_tx.send(());
            let _ = release_rx.recv();
        });
        locked_rx.recv().expect("writer held");
        // ...and listings, counts and reads still answer.
        let reads = async {
            let now = Timestamp::now_utc();
            let page = store
                .task_list(ListPage {
                    filter: &ListFilter::default(),
                    after: None,
                    limit: 10,
                    now,
                })
                .await?;
            let counts = store.task_count_by_status(now).await?;
            let got = store.task_get(task.id).await?;
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
        let task = store.task_get(id).await.expect("get").expect("kept");
        assert_eq!(task.retry_policy, crate::retry::RetryPolicy::default());
        assert_eq!(task.idempotency_key, None);
        // The listing key and the counts are filled in from the rows.
        let now = Timestamp::now_utc();
        let page = store
            .task_list(ListPage {
                filter: &ListFilter::default(),
                after: None,
                limit: 10,
                now,
            })
            .await
            .expect("list");
        assert_eq!(page.tasks, vec![task]);
        assert_eq!(
            store
                .task_count_by_status(now)
                .await
                .expect("counts")
                .pending,
            1
        );
        // Opening again is a no-op.
        SqliteStore::open(&path).expect("reopen");
    }

    #[tokio::test]
    async fn rate_keys_from_version_six_keep_their_next_start_and_gain_booked_starts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("v6.db");
        SqliteStore::open(&path).expect("create");
        {
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(
                "DROP TABLE key_rates;
                 CREATE TABLE key_rates (key TEXT PRIMARY KEY NOT NULL, next_start TEXT NOT NULL) \
                 STRICT, WITHOUT ROWID;
                 INSERT INTO key_rates VALUES ('r', '2030-01-01T00:00:00.000Z');
                 PRAGMA user_version = 6;",
            )
            .expect("version 6's rate keys");
        }
        SqliteStore::open(&path).expect("upgrade");
        let conn = Connection::open(&path).expect("open");
        let row: (String, Option<String>) = conn
            .query_row(
                "SELECT next_start, booked_until FROM key_rates WHERE key = 'r'",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .expect("the key kept");
        assert_eq!(row, ("2030-01-01T00:00:00.000Z".to_owned(), None));
    }
}

//! The PostgreSQL backend: a bounded pool of connections to the application's own database and
//! Tasker's schema in it (`tasker`), brought up to date at start by [`schema::migrate`], safely
//! when several processes start at once. Every change is a transaction that locks the rows it
//! changes; claims skip the rows other claims hold (`FOR UPDATE SKIP LOCKED`). [`rows`] maps
//! rows and tasks, [`queue`] claims and settles, [`listing`] reads for operators.

mod bulk;
mod delivery;
mod flow;
mod keys;
mod listing;
mod outcomes;
pub mod probe;
mod queue;
mod rows;
mod schedules;
pub mod schema;
mod tls;

use std::time::Duration;

use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::Transaction;
use tokio_postgres_rustls::MakeRustlsConnect;

use self::rows::{broken_unique, insert, load, reference_holder, update};
use super::{Created, QueueReads, ReadCounter, StoreError, SweepSummary, Transition};
use crate::clock::Timestamp;
use crate::task::{Task, TaskId};

/// Connections a pool opens at most unless told otherwise.
pub const DEFAULT_POOL_SIZE: usize = 10;
/// How often a process folds the counts' changes into their rows.
const FOLD_EVERY: Duration = Duration::from_secs(10);
/// How long a call waits for a free connection, and for a new one to open.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// Tasker's tables in one PostgreSQL database, through a bounded pool.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// Where the pool connects: also the listener's connection.
    config: tokio_postgres::Config,
    /// TLS, when the URL asks for it ([`tls`]).
    tls: MakeRustlsConnect,
    /// What the claims have read.
    reads: Arc<ReadCounter>,
    /// Claims also read PostgreSQL's counters of rows read ([`Self::metered`]).
    metered: bool,
    /// When this process last folded the counts (Unix seconds).
    folded: Arc<std::sync::atomic::AtomicU64>,
    /// Outcomes waiting for their group commit.
    groups: Arc<outcomes::Groups>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PgStore")
            .field("max_size", &status.max_size)
            .field("open", &status.size)
            .finish()
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/database`, or key=value
    /// pairs) with at most `pool_size` connections, and brings Tasker's schema up to date.
    pub async fn connect(url: &str, pool_size: usize) -> Result<Self, StoreError> {
        Self::open(url, pool_size, true).await
    }

    /// As [`Self::connect`], or, when `migrate` is false, only checks that Tasker's schema is
    /// up to date (`TASKER_DATABASE_MIGRATE=never`).
    pub async fn open(url: &str, pool_size: usize, migrate: bool) -> Result<Self, StoreError> {
        let tls::Target { config, tls } = tls::target(url)?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_WAIT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|err| StoreError::backend_from("building the connection pool", err))?;
        let store = Self {
            pool,
            config,
            tls,
            reads: Arc::default(),
            metered: false,
            folded: Arc::default(),
            groups: Arc::default(),
        };
        let mut client = store.client().await?;
        if migrate {
            schema::migrate(&mut client).await?;
        } else {
            schema::check(&client).await?;
        }
        Ok(store)
    }

    /// This store with claims that also count the index entries and rows they read, from
    /// PostgreSQL's own counters (two statements more per claim), for
    /// [`crate::store::Store::queue_reads`]: for the tests and the benchmark that bound what
    /// a claim reads. Unmetered, a claim reports only the rows it returned.
    pub fn metered(mut self) -> Self {
        self.metered = true;
        self
    }

    /// Brings Tasker's schema in the database at `url` up to date over one connection of its
    /// own (`tasker migrate`); what it did.
    pub async fn migrate(url: &str) -> Result<schema::Migrated, StoreError> {
        let tls::Target { config, tls } = tls::target(url)?;
        let (mut client, connection) = config
            .connect(tls)
            .await
            .map_err(|err| pg_error("connecting to PostgreSQL", err))?;
        let driver = tokio::spawn(connection);
        let migrated = schema::migrate(&mut client).await;
        drop(client);
        let _ = driver.await;
        migrated
    }

    /// A connection from the pool.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|err| match err {
            deadpool_postgres::PoolError::Backend(err) => pg_error("connecting to PostgreSQL", err),
            other => StoreError::unavailable_from("waiting for a PostgreSQL connection", other),
        })
    }

    /// The version of Tasker's schema in the database.
    pub async fn schema_version(&self) -> Result<i32, StoreError> {
        let client = self.client().await?;
        schema::version(&**client).await
    }
}

/// A PostgreSQL error as a store error: passing (retryable) when the connection failed or the
/// server said so (serialization failures, deadlocks, too many connections, shutting down),
/// lasting otherwise.
pub(crate) fn pg_error(context: &str, err: tokio_postgres::Error) -> StoreError {
    use tokio_postgres::error::SqlState;
    let passing = match err.code() {
        None => err.is_closed() || err.as_db_error().is_none(),
        Some(code) => [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::CONNECTION_FAILURE,
            SqlState::LOCK_NOT_AVAILABLE,
        ]
        .contains(code),
    };
    if passing {
        StoreError::unavailable_from(context.to_owned(), err)
    } else {
        StoreError::backend_from(context.to_owned(), err)
    }
}

/// The driver's client behind a pooled connection (its own transactions, not the pool
/// wrapper's).
fn raw(object: &mut deadpool_postgres::Object) -> &mut tokio_postgres::Client {
    object
}

/// Why a write inside a transaction did not happen.
enum Refused {
    /// The store refused it (missing, conflict, lost lease) or failed.
    Store(StoreError),
    /// It broke a unique index (the transaction is aborted): the task it tried to write.
    Unique(Box<Task>, tokio_postgres::Error),
}

impl From<StoreError> for Refused {
    fn from(err: StoreError) -> Self {
        Self::Store(err)
    }
}

/// Applies `transition` to the task `id` (locked) inside `tx`: the one encoding of every
/// state change.
async fn apply(
    tx: &Transaction<'_>,
    id: TaskId,
    transition: &Transition,
) -> Result<(Task, Task), Refused> {
    let before = load(tx, id, true)
        .await?
        .ok_or_else(|| transition.missing(id))?;
    let after = transition
        .apply(&before)
        .map_err(|refused| transition.refusal(id, refused))?;
    match update(tx, &before, &after).await {
        Ok(()) => Ok((before, after)),
        Err(err) if broken_unique(&err).is_some() => Err(Refused::Unique(Box::new(after), err)),
        Err(err) => Err(Refused::Store(pg_error("writing a task", err))),
    }
}

impl PgStore {
    /// Runs one transition of the task `id` in a transaction of its own; a broken reference
    /// rule becomes [`StoreError::Duplicate`] naming the active task.
    async fn transition(&self, id: TaskId, transition: &Transition) -> Result<Task, StoreError> {
        let mut client = self.client().await?;
        let tx = raw(&mut client)
            .transaction()
            .await
            .map_err(|err| pg_error("starting a transaction", err))?;
        match apply(&tx, id, transition).await {
            Ok((_, after)) => {
                tx.commit()
                    .await
                    .map_err(|err| pg_error("committing a task's change", err))?;
                Ok(after)
            }
            Err(Refused::Store(err)) => Err(err),
            Err(Refused::Unique(task, err)) => {
                drop(tx);
                duplicate(&client, &task, err).await
            }
        }
    }
}

/// The answer to a write that broke a unique index: [`StoreError::Duplicate`] when another
/// active task holds `task`'s reference, the database's error otherwise.
async fn duplicate<T>(
    client: &tokio_postgres::Client,
    task: &Task,
    err: tokio_postgres::Error,
) -> Result<T, StoreError> {
    match reference_holder(client, task).await? {
        Some(existing) => Err(StoreError::Duplicate { existing }),
        None => Err(pg_error("writing a task", err)),
    }
}

impl PgStore {
    pub async fn task_get(&self, id: TaskId) -> Result<Option<Task>, StoreError> {
        let client = self.client().await?;
        load(&**client, id, false).await
    }

    pub async fn task_create(&self, task: Task) -> Result<Created, StoreError> {
        let client = self.client().await?;
        if let Some(existing) = by_idempotency_key(&client, &task).await? {
            return Ok(Created::Existing(existing));
        }
        let Err(err) = insert(&**client, &task).await else {
            return Ok(Created::New(task));
        };
        match broken_unique(&err) {
            // Another create with the key got in first.
            Some("tasks_idempotency") => by_idempotency_key(&client, &task)
                .await?
                .map(Created::Existing)
                .ok_or_else(|| pg_error("creating a task", err)),
            // A derived id (a schedule's tick) that an earlier create stored.
            Some("tasks_pkey") => load(&**client, task.id, false)
                .await?
                .map(Created::Existing)
                .ok_or_else(|| pg_error("creating a task", err)),
            Some(_) => duplicate(&client, &task, err).await,
            None => Err(pg_error("creating a task", err)),
        }
    }

    pub async fn task_cancel(&self, id: TaskId, now: Timestamp) -> Result<Task, StoreError> {
        self.transition(id, &Transition::Cancel { now }).await
    }

    pub async fn task_cancel_by_reference(
        &self,
        reference_uid: &str,
        task_type: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<TaskId>, StoreError> {
        let mut client = self.client().await?;
        let tx = raw(&mut client)
            .transaction()
            .await
            .map_err(|err| pg_error("starting a transaction", err))?;
        let rows = tx
            .query(
                "SELECT id FROM tasker.tasks WHERE reference_uid = $1 \
                 AND ($2::text IS NULL OR type = $2) AND status = 'pending' ORDER BY id FOR UPDATE",
                &[&reference_uid, &task_type],
            )
            .await
            .map_err(|err| pg_error("finding a reference's pending tasks", err))?;
        let pending: Vec<TaskId> = rows
            .iter()
            .map(|row| row.get::<_, &str>(0).parse())
            .collect::<Result<_, _>>()
            .map_err(|err| StoreError::backend_from("PostgreSQL: a stored task id", err))?;
        let cancel = Transition::Cancel { now };
        for &id in &pending {
            match apply(&tx, id, &cancel).await {
                Ok(_) => {}
                Err(Refused::Store(err)) => return Err(err),
                Err(Refused::Unique(_, err)) => return Err(pg_error("cancelling a task", err)),
            }
        }
        tx.commit()
            .await
            .map_err(|err| pg_error("committing the cancels", err))?;
        Ok(pending)
    }

    pub async fn task_retry(&self, id: TaskId, now: Timestamp) -> Result<Task, StoreError> {
        self.transition(id, &Transition::Retry { now }).await
    }

    pub async fn task_purge_finished(
        &self,
        cutoff: Timestamp,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let mut total = 0;
        loop {
            // Short statements, so processors write in between.
            let deleted = client
                .execute(
                    "DELETE FROM tasker.tasks WHERE id IN (SELECT id FROM tasker.tasks \
                     WHERE finished_at IS NOT NULL AND finished_at <= $1 \
                     AND status IN ('succeeded', 'failed', 'cancelled') LIMIT 1000)",
                    &[&cutoff.0],
                )
                .await
                .map_err(|err| pg_error("purging finished tasks", err))?;
            total += deleted;
            if deleted == 0 {
                keys::purge_rates(&**client, cutoff).await?;
                return Ok(total);
            }
            progress(deleted);
        }
    }

    /// Folds the counts' changes (see `schema.rs`) at most every [`FOLD_EVERY`], or at once
    /// at the `end` of a run; a failure is logged, and the next call tries again.
    pub async fn queue_flush(&self, now: Timestamp, end: bool) {
        let at = u64::try_from(now.0.unix_timestamp()).unwrap_or_default();
        let last = self.folded.load(std::sync::atomic::Ordering::Relaxed);
        if !end && at < last.saturating_add(FOLD_EVERY.as_secs()) {
            return;
        }
        self.folded.store(at, std::sync::atomic::Ordering::Relaxed);
        let folded = match self.client().await {
            Ok(mut client) => schema::fold_counts(&mut client).await,
            Err(err) => Err(err),
        };
        if let Err(err) = folded {
            tracing::warn!(error = %crate::Report(&err), "could not fold the task counts");
        }
    }

    /// Listens on [`schema::DUE_CHANNEL`] on a connection of its own, outside the pool, for as
    /// long as the process runs; see [`crate::store::Store::queue_listen`].
    pub async fn queue_listen(&self, wake: Arc<tokio::sync::Notify>) {
        tokio::spawn(listen(self.config.clone(), self.tls.clone(), wake));
    }

    /// Writes go over a pool of connections, each committing on its own; see
    /// [`crate::store::Store::queue_writes_in_order`].
    pub async fn queue_writes_in_order(&self) -> bool {
        false
    }

    /// What the claims have read; see [`crate::store::Store::queue_reads`].
    pub async fn queue_reads(&self) -> QueueReads {
        self.reads.get()
    }

    /// Nothing to sweep: claims find due tasks through an index the same transaction keeps.
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

/// The task with `task`'s type and idempotency key, if it has one and it exists.
async fn by_idempotency_key(
    client: &tokio_postgres::Client,
    task: &Task,
) -> Result<Option<Task>, StoreError> {
    let Some(key) = &task.idempotency_key else {
        return Ok(None);
    };
    let row = client
        .query_opt(
            &format!(
                "SELECT {} FROM tasker.tasks WHERE type = $1 AND idempotency_key = $2",
                rows::COLUMNS
            ),
            &[&task.task_type, key],
        )
        .await
        .map_err(|err| pg_error("reading a task by its idempotency key", err))?;
    row.as_ref().map(rows::row_to_task).transpose()
}

/// Holds a connection that listens on [`schema::DUE_CHANNEL`] and wakes `wake` at each
/// notification. After a failure it connects again (a second later, then up to 30 s apart)
/// and wakes once: a notification may have been missed in between.
async fn listen(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    wake: Arc<tokio::sync::Notify>,
) {
    use futures::StreamExt;
    const MOST: Duration = Duration::from_secs(30);
    let mut pause = Duration::from_secs(1);
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                // The connection's messages carry the notifications; they must be read for
                // the client's statements to be answered as well.
                let (heard, mut hearing) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                                let _ = heard.send(());
                            }
                            Ok(_) => {}
                            Err(err) => {
                                tracing::warn!(error = %err, "the PostgreSQL listener's connection failed");
                                break;
                            }
                        }
                    }
                });
                match client
                    .batch_execute(&format!("LISTEN {}", schema::DUE_CHANNEL))
                    .await
                {
                    Ok(()) => {
                        pause = Duration::from_secs(1);
                        wake.notify_one();
                        while hearing.recv().await.is_some() {
                            wake.notify_one();
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot LISTEN for due tasks");
                    }
                }
                driver.abort();
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot connect the PostgreSQL listener");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MOST);
    }
}

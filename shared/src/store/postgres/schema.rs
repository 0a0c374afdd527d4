//! Tasker's schema in PostgreSQL: everything lives in the `tasker` schema, so it can share the
//! application's database; versions are applied in order, each once, and recorded in
//! `tasker.migrations`. A transaction-scoped advisory lock makes the processes that start at
//! once take turns: the first applies what is missing, the others find it done.

use tokio_postgres::Client;

use super::pg_error;
use crate::store::StoreError;

/// The advisory lock key the migrations take (any constant every Tasker agrees on).
const MIGRATION_LOCK: i64 = 0x7461_736b_6572; // "tasker"

/// The migrations, in order; version N is `MIGRATIONS[N - 1]`. A released one never changes.
const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6];

/// The version this code writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Tasks, schedules and paused types as in the SQLite store, with instants as `timestamptz`;
/// ids and listing keys compare byte by byte (`COLLATE "C"`), as their text order is the
/// order of their instants whatever the database's own collation.
/// `due_at` is the claimable instant and `list_key` the listing key, kept as columns so
/// partial indexes answer "what is due" and each listing page without reading other rows.
/// The counts per status are kept by statement triggers in the transaction that changes a
/// task, as rows appended to `task_count_changes` (appends take no row lock, so concurrent
/// claims and outcomes never wait on each other or deadlock over a count); `fold_counts` moves
/// them into the five rows of `task_counts` now and then, so `GET /stats` reads five rows and
/// the changes since the last fold instead of counting the table.
const V1: &str = r#"
CREATE TABLE tasker.tasks (
    id text COLLATE "C" PRIMARY KEY,
    type text NOT NULL,
    payload text NOT NULL,
    status text NOT NULL
        CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
    scheduled_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    attempts integer NOT NULL,
    max_attempts integer NOT NULL,
    last_error text,
    last_failed_attempt_at timestamptz,
    succeeded_at timestamptz,
    finished_at timestamptz,
    reference_uid text,
    lease_expires_at timestamptz,
    due_at timestamptz,
    idempotency_key text,
    retry_policy text NOT NULL,
    lease_token text,
    schedule_name text,
    schedule_tick timestamptz,
    list_key text COLLATE "C" NOT NULL
);
CREATE TABLE tasker.schedules (
    name text PRIMARY KEY,
    body text NOT NULL,
    due_at timestamptz,
    revision bigint NOT NULL
);
CREATE TABLE tasker.paused_types (
    type text PRIMARY KEY,
    paused_at timestamptz NOT NULL
);
CREATE INDEX tasks_type_due ON tasker.tasks (type, due_at, id) WHERE due_at IS NOT NULL;
CREATE INDEX tasks_final ON tasker.tasks (due_at, id)
    WHERE status = 'running' AND attempts >= max_attempts;
CREATE INDEX tasks_finished ON tasker.tasks (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX tasks_reference ON tasker.tasks (reference_uid, type)
    WHERE reference_uid IS NOT NULL;
CREATE UNIQUE INDEX tasks_active_reference ON tasker.tasks (reference_uid, type)
    WHERE reference_uid IS NOT NULL AND status IN ('pending', 'running');
CREATE UNIQUE INDEX tasks_idempotency ON tasker.tasks (type, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX tasks_list ON tasker.tasks (list_key);
CREATE INDEX tasks_open ON tasker.tasks (list_key) WHERE finished_at IS NULL;
CREATE INDEX tasks_closed ON tasker.tasks (status, list_key)
    WHERE status IN ('failed', 'cancelled');
CREATE INDEX tasks_type_list ON tasker.tasks (type, list_key);
CREATE INDEX tasks_schedule_list ON tasker.tasks (schedule_name, list_key)
    WHERE schedule_name IS NOT NULL;
CREATE INDEX schedules_due ON tasker.schedules (due_at) WHERE due_at IS NOT NULL;

CREATE TABLE tasker.task_counts (
    status text PRIMARY KEY,
    n bigint NOT NULL
);
INSERT INTO tasker.task_counts (status, n)
    SELECT s, 0 FROM unnest(ARRAY['pending', 'running', 'succeeded', 'failed', 'cancelled']) AS s;
CREATE TABLE tasker.task_count_changes (
    status text NOT NULL,
    n bigint NOT NULL
);
CREATE FUNCTION tasker.count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tasker.task_count_changes (status, n)
        SELECT status, COUNT(*) FROM new_rows GROUP BY status;
    RETURN NULL;
END $$;
CREATE FUNCTION tasker.count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tasker.task_count_changes (status, n)
        SELECT status, -COUNT(*) FROM old_rows GROUP BY status;
    RETURN NULL;
END $$;
CREATE FUNCTION tasker.count_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO tasker.task_count_changes (status, n)
        SELECT status, SUM(n) FROM (
            SELECT o.status, -1 AS n FROM old_rows o JOIN new_rows w USING (id)
                WHERE o.status <> w.status
            UNION ALL
            SELECT w.status, 1 AS n FROM old_rows o JOIN new_rows w USING (id)
                WHERE o.status <> w.status
        ) AS moved GROUP BY status HAVING SUM(n) <> 0;
    RETURN NULL;
END $$;
CREATE TRIGGER tasks_counted_insert AFTER INSERT ON tasker.tasks
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION tasker.count_inserted();
CREATE TRIGGER tasks_counted_delete AFTER DELETE ON tasker.tasks
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
    EXECUTE FUNCTION tasker.count_deleted();
CREATE TRIGGER tasks_counted_update AFTER UPDATE ON tasker.tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION tasker.count_updated();
"#;

/// The channel on which a transaction that makes a task due now says so, at its commit.
pub const DUE_CHANNEL: &str = "tasker_due";

/// Announcements on [`DUE_CHANNEL`]: a create of a task due now (a second of slack for the
/// clocks of the processes), a retry that makes a task pending and due now, and a resumed type.
/// One notification per transaction at most (PostgreSQL folds equal ones).
const V2: &str = r#"
CREATE FUNCTION tasker.announce_created() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_rows WHERE due_at <= now() + interval '1 second') THEN
        PERFORM pg_notify('tasker_due', '');
    END IF;
    RETURN NULL;
END $$;
CREATE FUNCTION tasker.announce_retried() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_rows w JOIN old_rows o USING (id)
               WHERE w.status = 'pending' AND o.status <> 'pending'
               AND w.due_at <= now() + interval '1 second') THEN
        PERFORM pg_notify('tasker_due', '');
    END IF;
    RETURN NULL;
END $$;
CREATE FUNCTION tasker.announce_resumed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tasker_due', '');
    RETURN NULL;
END $$;
CREATE TRIGGER tasks_announce_insert AFTER INSERT ON tasker.tasks
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION tasker.announce_created();
CREATE TRIGGER tasks_announce_update AFTER UPDATE ON tasker.tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION tasker.announce_retried();
CREATE TRIGGER paused_types_announce_delete AFTER DELETE ON tasker.paused_types
    FOR EACH STATEMENT EXECUTE FUNCTION tasker.announce_resumed();
"#;

/// Reads that stay flat as the table grows, and a table that is cleaned as fast as a queue
/// dirties it.
/// - Unfinished tasks by status: a listing of `running` tasks read every pending one's entry
///   (and `pending` every running one's) in the old index of unfinished tasks.
/// - A reference's tasks in listing order, so its listing walks them in order like every
///   other (cancels and the holder of a reference find them by its first column as before).
/// - Autovacuum by a fixed number of dead rows, not a fifth of the table (the default): every
///   task leaves two or three dead versions behind, and until they are vacuumed their entries
///   stay in the partial indexes the claims and listings read. The change log of the counts is
///   emptied by every fold, so its dead rows are all it ever has.
const V3: &str = r#"
CREATE INDEX tasks_open_status ON tasker.tasks (status, list_key) WHERE finished_at IS NULL;
DROP INDEX tasker.tasks_open;
CREATE INDEX tasks_reference_list ON tasker.tasks (reference_uid, list_key)
    WHERE reference_uid IS NOT NULL;
DROP INDEX tasker.tasks_reference;
ALTER TABLE tasker.tasks SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02
);
ALTER TABLE tasker.task_count_changes SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 1000
);
"#;

/// Version 4: limits per key.
/// - A task's `concurrency_key` and `rate_key` (fixed at its create) and `held`, the limit a
///   claim held it back for.
/// - `tasks_key_running`: a key's running tasks, which a claim counts (their `due_at` is their
///   lease's end); `tasks_key_held`: the tasks held for a key's concurrency, which an outcome
///   of the key's wakes.
/// - `key_rates`: each rate key's next start (GCRA's theoretical arrival time).
const V4: &str = r#"
ALTER TABLE tasker.tasks ADD COLUMN concurrency_key text, ADD COLUMN rate_key text,
    ADD COLUMN held text CHECK (held IN ('concurrency', 'rate'));
CREATE INDEX tasks_key_running ON tasker.tasks (concurrency_key, due_at)
    WHERE status = 'running' AND concurrency_key IS NOT NULL;
CREATE INDEX tasks_key_held ON tasker.tasks (concurrency_key, due_at, id)
    WHERE held = 'concurrency' AND status = 'pending';
CREATE TABLE tasker.key_rates (
    key text PRIMARY KEY,
    next_start timestamptz NOT NULL
);
"#;

/// Version 5: a task may be held for its receiver's open circuit (`held = 'circuit'`). The
/// wider check holds for every row the narrower one admitted: `NOT VALID` spares the migration
/// a scan of the table under its lock.
const V5: &str = r#"
ALTER TABLE tasker.tasks DROP CONSTRAINT tasks_held_check;
ALTER TABLE tasker.tasks ADD CONSTRAINT tasks_held_check
    CHECK (held IN ('concurrency', 'rate', 'circuit')) NOT VALID;
"#;

/// Version 6: a rate key's `booked_until`, the first start it has not booked for a held task
/// yet (SQS mode books each held task a start of its own; see `docs/limits.md`).
const V6: &str = r#"
ALTER TABLE tasker.key_rates ADD COLUMN booked_until timestamptz;
"#;

/// What a migration did: the schema's version before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// The version found (0: no Tasker schema yet).
    pub from: i32,
    /// The version now: [`SCHEMA_VERSION`].
    pub to: i32,
}

/// The database's error for a version newer than this Tasker knows.
fn newer(current: i32) -> StoreError {
    StoreError::backend(format!(
        "the database has Tasker schema version {current}; this Tasker knows up to \
         {SCHEMA_VERSION}: run the newer Tasker, or a database of its own"
    ))
}

/// Checks, without changing anything, that the schema is at [`SCHEMA_VERSION`]: for processes
/// started with `TASKER_DATABASE_MIGRATE=never`, whose user may not change the schema.
pub async fn check(client: &Client) -> Result<(), StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('tasker.migrations') IS NOT NULL", &[])
        .await
        .map_err(|err| pg_error("looking for the tasker schema", err))?
        .get(0);
    let current = if exists { version(client).await? } else { 0 };
    match current {
        SCHEMA_VERSION => Ok(()),
        newer_one if newer_one > SCHEMA_VERSION => Err(newer(newer_one)),
        older => Err(StoreError::backend(format!(
            "the database has Tasker schema version {older}, this Tasker needs \
             {SCHEMA_VERSION}, and TASKER_DATABASE_MIGRATE=never: run `tasker migrate` first"
        ))),
    }
}

/// Brings the `tasker` schema to [`SCHEMA_VERSION`] in one transaction, under the migration
/// lock; refuses a database a newer Tasker has migrated past what this one knows.
pub async fn migrate(client: &mut Client) -> Result<Migrated, StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(|err| pg_error("starting the migration", err))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|err| pg_error("taking the migration lock", err))?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS tasker;
         CREATE TABLE IF NOT EXISTS tasker.migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         );",
    )
    .await
    .map_err(|err| pg_error("creating the tasker schema", err))?;
    let current = version(&tx).await?;
    if current > SCHEMA_VERSION {
        return Err(newer(current));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = index as i32 + 1;
        tx.batch_execute(migration)
            .await
            .map_err(|err| pg_error(&format!("applying Tasker schema version {version}"), err))?;
        tx.execute(
            "INSERT INTO tasker.migrations (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(|err| pg_error("recording a migration", err))?;
    }
    tx.commit()
        .await
        .map_err(|err| pg_error("committing the migration", err))?;
    Ok(Migrated {
        from: current,
        to: SCHEMA_VERSION,
    })
}

/// The highest version applied (0 for none).
pub async fn version(client: &impl tokio_postgres::GenericClient) -> Result<i32, StoreError> {
    let row = client
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM tasker.migrations",
            &[],
        )
        .await
        .map_err(|err| pg_error("reading the schema version", err))?;
    Ok(row.get(0))
}

/// The advisory lock a fold of the counts takes (one folds at a time; the others skip).
const FOLD_LOCK: i64 = 0x7461_736b_6572_0001;

/// Moves the appended count changes into `task_counts`, in one statement, unless another
/// process is folding them now. Readers see the counts whole before or after.
pub async fn fold_counts(client: &mut Client) -> Result<(), StoreError> {
    let tx = client
        .transaction()
        .await
        .map_err(|err| pg_error("starting a fold of the counts", err))?;
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&FOLD_LOCK])
        .await
        .map_err(|err| pg_error("taking the fold lock", err))?
        .get(0);
    if locked {
        tx.execute(
            "WITH moved AS (DELETE FROM tasker.task_count_changes RETURNING status, n), \
                  totals AS (SELECT status, SUM(n) AS n FROM moved GROUP BY status) \
             UPDATE tasker.task_counts c SET n = c.n + totals.n FROM totals \
             WHERE c.status = totals.status",
            &[],
        )
        .await
        .map_err(|err| pg_error("folding the counts", err))?;
    }
    tx.commit()
        .await
        .map_err(|err| pg_error("committing a fold of the counts", err))
}

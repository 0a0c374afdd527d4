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
const MIGRATIONS: &[&str] = &[V1];

/// The version this code writes.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Tasks, schedules and paused types as in the SQLite store, with instants as `timestamptz`.
/// `due_at` is the claimable instant and `list_key` the listing key, kept as columns so
/// partial indexes answer "what is due" and each listing page without reading other rows.
/// The counts per status are kept in 16 slots per status, changed by triggers in the
/// transaction that changes a task: concurrent writers seldom share a slot's row lock, and
/// `GET /stats` sums 80 small rows instead of counting the table.
const V1: &str = "
CREATE TABLE tasker.tasks (
    id text PRIMARY KEY,
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
    list_key text NOT NULL
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
CREATE INDEX tasks_due ON tasker.tasks (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX tasks_type_due ON tasker.tasks (type, due_at) WHERE due_at IS NOT NULL;
CREATE INDEX tasks_final ON tasker.tasks (due_at)
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
    status text NOT NULL,
    slot smallint NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (status, slot)
);
INSERT INTO tasker.task_counts (status, slot, n)
    SELECT s, slot, 0
    FROM unnest(ARRAY['pending', 'running', 'succeeded', 'failed', 'cancelled']) AS s,
         generate_series(0, 15) AS slot;
CREATE FUNCTION tasker.count_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE tasker.task_counts SET n = n - 1
            WHERE status = OLD.status AND slot = abs(hashtext(OLD.id)) % 16;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        UPDATE tasker.task_counts SET n = n + 1
            WHERE status = NEW.status AND slot = abs(hashtext(NEW.id)) % 16;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER tasks_counted_insert_delete AFTER INSERT OR DELETE ON tasker.tasks
    FOR EACH ROW EXECUTE FUNCTION tasker.count_tasks();
CREATE TRIGGER tasks_counted_update AFTER UPDATE OF status ON tasker.tasks
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION tasker.count_tasks();
";

/// Brings the `tasker` schema to [`SCHEMA_VERSION`] in one transaction, under the migration
/// lock; refuses a database a newer Tasker has migrated past what this one knows.
pub async fn migrate(client: &mut Client) -> Result<(), StoreError> {
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
        return Err(StoreError::backend(format!(
            "the database has Tasker schema version {current}; this Tasker knows up to \
             {SCHEMA_VERSION}: run the newer Tasker, or a database of its own"
        )));
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
        .map_err(|err| pg_error("committing the migration", err))
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

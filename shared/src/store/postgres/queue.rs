//! The task queue on PostgreSQL: a claim locks the due rows it takes and skips those another
//! claim holds (`FOR UPDATE SKIP LOCKED`), in one transaction (outcomes: `outcomes.rs`).

use tokio_postgres::Transaction;

use tokio_postgres::types::Type;

use super::keys::{self, Busy};
use super::rows::{COLUMNS, rows_to_tasks};
use super::{PgStore, bulk, pg_error, raw};
use crate::clock::Timestamp;
use crate::store::{
    Claim, HOLDS_PER_CLAIM, KeyBook, LOOK_AGAIN, NO_LIMITS, StoreError, Transition, Verdict,
    is_expired_final_attempt,
};

use crate::task::Task;

/// Rows of `tasks` this connection has read by index or by scan and not yet reported to the
/// statistics (`pg_stat_xact_user_tables`): read before and after a claim, the difference is
/// what [`crate::store::Store::queue_reads`] reports as the claim's entries.
async fn read_so_far(tx: &Transaction<'_>) -> Result<u64, StoreError> {
    let row = tx
        .query_one(
            "SELECT COALESCE(SUM(seq_tup_read + COALESCE(idx_tup_fetch, 0)), 0)::bigint \
             FROM pg_stat_xact_user_tables WHERE schemaname = 'tasker' AND relname = 'tasks'",
            &[],
        )
        .await
        .map_err(|err| pg_error("reading the claim's counters", err))?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or_default())
}

/// Up to `want` tasks due by `due_by`, earliest first, locked for this transaction, none that
/// another transaction holds, none of the `closed` types but their expired final attempts
/// (which the claim fails): each open type's range of `tasks_type_due`, merged, and when those
/// leave room the expired final attempts. There is no index of due tasks across types on
/// purpose: with one, the planner walked it for a single type's tasks once the table had
/// statistics (they said most rows were of that type) and stepped over every closed type's
/// task ahead; a claim never reads a closed type's due tasks, however many there are.
async fn due_candidates(
    tx: &Transaction<'_>,
    due_by: Timestamp,
    want: i64,
    closed: &[String],
) -> Result<Vec<Task>, StoreError> {
    let want_rows = usize::try_from(want).unwrap_or(usize::MAX);
    let per_type = format!(
        "SELECT {COLUMNS} FROM tasker.tasks WHERE type = $3 AND due_at <= $1 \
         AND (status = 'running' OR attempts < max_attempts) \
         ORDER BY due_at, id LIMIT $2 FOR UPDATE SKIP LOCKED"
    );
    let mut due = Vec::new();
    for task_type in due_types(tx).await? {
        if !closed.contains(&task_type) {
            let rows = tx
                .query_typed(
                    &per_type,
                    &[
                        (&due_by.0, Type::TIMESTAMPTZ),
                        (&want, Type::INT8),
                        (&task_type, Type::TEXT),
                    ],
                )
                .await
                .map_err(|err| pg_error("finding due tasks", err))?;
            due.extend(rows_to_tasks(&rows)?);
        }
    }
    if !closed.is_empty() && due.len() < want_rows {
        let rows = tx
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM tasker.tasks WHERE status = 'running' \
                     AND attempts >= max_attempts AND due_at <= $1 AND type = ANY($3) \
                     ORDER BY due_at, id LIMIT $2 FOR UPDATE SKIP LOCKED"
                ),
                &[&due_by.0, &want, &closed],
            )
            .await
            .map_err(|err| pg_error("finding expired final attempts", err))?;
        due.extend(rows_to_tasks(&rows)?);
    }
    due.sort_by_key(|task| (task.due_at(), task.id));
    due.truncate(want_rows);
    Ok(due)
}

/// The types that have a task with a due instant, one index seek each (a loose scan of
/// `tasks_type_due`), however many tasks each has.
pub(super) async fn due_types(tx: &Transaction<'_>) -> Result<Vec<String>, StoreError> {
    let rows = tx
        .query_typed(
            // Each step's order is the index's whole order, so the planner takes its first
            // entry instead of sorting another index's.
            "WITH RECURSIVE seen(type) AS ( \
               SELECT (SELECT type FROM tasker.tasks WHERE due_at IS NOT NULL \
                       ORDER BY type, due_at, id LIMIT 1) \
               UNION ALL \
               SELECT (SELECT t.type FROM tasker.tasks t WHERE t.due_at IS NOT NULL \
                       AND t.type > seen.type ORDER BY t.type, t.due_at, t.id LIMIT 1) \
               FROM seen WHERE seen.type IS NOT NULL) \
             SELECT type FROM seen WHERE type IS NOT NULL",
            &[],
        )
        .await
        .map_err(|err| pg_error("finding the types with due tasks", err))?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

impl PgStore {
    /// Claims due tasks in one transaction; see [`crate::store::Store::task_claim`].
    pub async fn task_claim(&self, claim: Claim<'_>) -> Result<Vec<Task>, StoreError> {
        let Claim {
            due_by, now, limit, ..
        } = claim;
        let mut gate = claim.gate.clone();
        let mut client = self.client().await?;
        let tx = raw(&mut client)
            .transaction()
            .await
            .map_err(|err| pg_error("starting a claim", err))?;
        // The claim's statements are written for the due indexes; the planner would scan a
        // small table instead, and read every row of it.
        tx.batch_execute("SET LOCAL enable_seqscan = off")
            .await
            .map_err(|err| pg_error("starting a claim", err))?;
        // The counters also hold earlier transactions' reads not yet reported (PostgreSQL
        // reports them at most once a second): what this claim read is the difference. Two
        // statements more, so only when the store is metered.
        let before = if self.metered {
            read_so_far(&tx).await?
        } else {
            0
        };
        let limits = gate.shared_limits();
        let mut book = KeyBook::new(limits.as_deref().unwrap_or(&NO_LIMITS), now);
        let mut busy = Busy::default();
        let mut holds = 0;
        let mut claimed = Vec::new();
        let mut read_rows = 0;
        // Exhausted tasks with an expired lease are failed here, so they never block the head
        // of the queue; keep reading until `limit` runnable tasks are found. Each round leaves
        // out the types the gate has closed.
        loop {
            let closed: Vec<String> = gate.closed().map(str::to_owned).collect();
            let want = i64::try_from(limit - claimed.len()).unwrap_or(i64::MAX);
            let due = due_candidates(&tx, due_by, want, &closed).await?;
            read_rows += due.len();
            if due.is_empty() {
                break;
            }
            // The round's claims and failed final attempts, written in one statement.
            let mut changes = Vec::with_capacity(due.len());
            let mut claims = Vec::with_capacity(due.len());
            for task in due {
                let exhausted = is_expired_final_attempt(&task, due_by);
                if !exhausted && !gate.admits(&task.task_type) {
                    gate.take(&task.task_type);
                    continue;
                }
                let lease_until = claim.leases.until(&task.task_type, now);
                let mut transition = if exhausted {
                    Transition::expire(due_by, now)
                } else {
                    Transition::claim(due_by, now, lease_until)
                };
                if !exhausted && book.limits(&task) {
                    if !keys::read_needs(&tx, &mut book, &mut busy, &task, now).await? {
                        continue;
                    }
                    let verdict = book.judge(&task, lease_until);
                    if let Verdict::Hold { until, .. } = verdict {
                        gate.note_hold(until);
                        holds += 1;
                        transition = verdict.transition(due_by, now, lease_until);
                    }
                }
                let starts = matches!(transition, Transition::Claim { .. });
                if starts {
                    gate.take(&task.task_type);
                }
                let changed = transition
                    .apply(&task)
                    .map_err(|refused| transition.refusal(task.id, refused))?;
                if starts {
                    claims.push(changes.len());
                }
                changes.push(changed);
            }
            let written: Vec<&Task> = changes.iter().collect();
            bulk::write_changes(&tx, &written)
                .await
                .map_err(|err| pg_error("claiming tasks", err))?;
            claimed.extend(claims.into_iter().map(|at| changes[at].clone()));
            if claimed.len() >= limit {
                break;
            }
            // A task left for a claim judging its key would be read again, locked by this
            // claim's own transaction: this claim ends here, and its caller claims again soon
            // (not a whole interval later), when that claim has committed.
            if busy.any() || holds >= HOLDS_PER_CLAIM {
                gate.turn_away();
                gate.note_hold(now.plus(LOOK_AGAIN));
                break;
            }
        }
        keys::write_moved(&tx, &book).await?;
        let entries = if self.metered {
            read_so_far(&tx).await?.saturating_sub(before)
        } else {
            0
        };
        tx.commit()
            .await
            .map_err(|err| pg_error("committing a claim", err))?;
        self.reads.add(entries, read_rows);
        Ok(claimed)
    }
}

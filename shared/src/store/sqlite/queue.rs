//! The task queue on SQLite: claims and outcomes, each a write of the store's group commit.

use std::sync::Arc;

use rusqlite::{StatementStatus, params};

use super::keys::{read_needs, wake_held, write_moved};
use super::rows::{
    COLUMNS, columns, load, row_to_task, sqlite_error, store_with, update, update_if_still,
};
use super::{SqliteStore, apply};
use crate::clock::Timestamp;
use crate::store::{
    Claim, HOLDS_PER_CLAIM, KeyBook, LOOK_AGAIN, NO_LIMITS, Settlement, StoreError, Transition,
    Verdict, is_expired_final_attempt,
};
use crate::task::Task;

/// Writes the outcome `settle` of the attempt `claimed`, which makes `written` of it when it
/// applies, and wakes a task held for the slot it frees. While the row is still as claimed
/// (nearly always) one conditional update writes it, without reading it first.
fn settle_in(
    tx: &rusqlite::Transaction<'_>,
    claimed: &Task,
    settle: &Transition,
    written: Option<Task>,
) -> Result<Task, StoreError> {
    let id = claimed.id;
    let in_place = match &written {
        Some(after) => written_in_place(tx, claimed, after)?,
        None => false,
    };
    // Written in place: the outcome is what was written, with no earlier write to recognise.
    let (applied, written) = match written {
        Some(after) if in_place => (Ok(after), None),
        written => (apply(tx, id, settle), written),
    };
    if let (Ok(task), Transition::Settle { now, .. }) = (&applied, settle) {
        wake_held(tx, task, *now)?;
    }
    match applied {
        // The same outcome, written before (the processor tries again when an answer is lost):
        // it stands, as on DynamoDB.
        Err(StoreError::LeaseLost(_)) if written.is_some() && load(tx, id)? == written => {
            written.ok_or(StoreError::LeaseLost(id))
        }
        other => other,
    }
}

/// Writes `after` over the row if it is still `claimed`; false when it changed since.
fn written_in_place(
    tx: &rusqlite::Transaction<'_>,
    claimed: &Task,
    after: &Task,
) -> Result<bool, StoreError> {
    let mut still = false;
    store_with(tx, after, || {
        still = update_if_still(tx, claimed, after)?;
        Ok(())
    })?;
    Ok(still)
}

/// Up to `want` tasks due by `due_by`, earliest first, none of the `closed` types but their
/// expired final attempts (which the claim fails). With nothing closed, one walk of
/// `tasks_due`; otherwise each open type's own range of `tasks_type_due` and, when those leave
/// room, the expired final attempts from `tasks_final`, so that a claim never steps over a
/// closed type's due tasks, however many there are. `steps` adds up the statements' virtual-machine steps (see
/// [`SqliteStore::queue_reads`]).
fn due_candidates(
    tx: &rusqlite::Transaction<'_>,
    due_by: Timestamp,
    want: i64,
    closed: &[String],
    steps: &mut u64,
) -> Result<Vec<Task>, StoreError> {
    let due_by = due_by.to_text();
    if closed.is_empty() {
        let sql = concat!(
            "SELECT ",
            columns!(),
            " FROM tasks WHERE due_at <= ?1 \
             AND (status = 'running' OR attempts < max_attempts) \
             ORDER BY due_at, id LIMIT ?2"
        );
        return query_tasks(tx, sql, params![due_by, want], steps);
    }
    let want_rows = usize::try_from(want).unwrap_or(usize::MAX);
    let sql = format!(
        "SELECT {COLUMNS} FROM tasks INDEXED BY tasks_type_due WHERE type = ?1 AND due_at <= ?2 \
         AND (status = 'running' OR attempts < max_attempts) ORDER BY due_at, id LIMIT ?3"
    );
    let mut due = Vec::new();
    for task_type in due_types(tx, steps)? {
        if !closed.contains(&task_type) {
            due.extend(query_tasks(
                tx,
                &sql,
                params![task_type, due_by, want],
                steps,
            )?);
        }
    }
    // A closed type's expired final attempts are failed when the open types leave room: they
    // wait for nothing else, but need not cost every claim a statement.
    if due.len() < want_rows {
        let closed_json = serde_json::to_string(closed)
            .map_err(|err| StoreError::backend_from("encoding the closed task types", err))?;
        let sql = format!(
            "SELECT {COLUMNS} FROM tasks INDEXED BY tasks_final \
             WHERE status = 'running' AND attempts >= max_attempts AND due_at <= ?1 \
             AND type IN (SELECT value FROM json_each(?3)) ORDER BY due_at, id LIMIT ?2"
        );
        due.extend(query_tasks(
            tx,
            &sql,
            params![due_by, want, closed_json],
            steps,
        )?);
    }
    due.sort_by_key(|task| (task.due_at(), task.id));
    due.truncate(want_rows);
    Ok(due)
}

/// The types that have a task with a due instant (pending, or running), one index seek each
/// (a loose scan of `tasks_type_due`), however many tasks each has.
fn due_types(tx: &rusqlite::Transaction<'_>, steps: &mut u64) -> Result<Vec<String>, StoreError> {
    let mut stmt = tx
        .prepare_cached(
            "WITH RECURSIVE seen(type) AS ( \
               SELECT (SELECT type FROM tasks INDEXED BY tasks_type_due \
                       WHERE due_at IS NOT NULL ORDER BY type LIMIT 1) \
               UNION ALL \
               SELECT (SELECT type FROM tasks INDEXED BY tasks_type_due \
                       WHERE due_at IS NOT NULL AND type > seen.type ORDER BY type LIMIT 1) \
               FROM seen WHERE seen.type IS NOT NULL) \
             SELECT type FROM seen WHERE type IS NOT NULL",
        )
        .map_err(sqlite_error)?;
    let types = stmt
        .query_map([], |row| row.get(0))
        .map_err(sqlite_error)?
        .collect::<rusqlite::Result<Vec<String>>>()
        .map_err(sqlite_error)?;
    *steps += u64::try_from(stmt.reset_status(StatementStatus::VmStep)).unwrap_or(0);
    Ok(types)
}

/// The tasks `sql` selects with `params`, its steps added to `steps`.
fn query_tasks(
    tx: &rusqlite::Transaction<'_>,
    sql: &str,
    params: impl rusqlite::Params,
    steps: &mut u64,
) -> Result<Vec<Task>, StoreError> {
    let mut stmt = tx.prepare_cached(sql).map_err(sqlite_error)?;
    let tasks = stmt
        .query_map(params, row_to_task)
        .map_err(sqlite_error)?
        .collect::<rusqlite::Result<Vec<Task>>>()
        .map_err(sqlite_error)?;
    *steps += u64::try_from(stmt.reset_status(StatementStatus::VmStep)).unwrap_or(0);
    Ok(tasks)
}

impl SqliteStore {
    /// Claims due tasks in one immediate transaction; see [`crate::store::Store::task_claim`].
    pub async fn task_claim(&self, claim: Claim<'_>) -> Result<Vec<Task>, StoreError> {
        let Claim {
            due_by, now, limit, ..
        } = claim;
        let leases = claim.leases.clone();
        let mut gate = claim.gate.clone();
        let reads = Arc::clone(&self.reads);
        self.write(move |tx| {
            let limits = gate.shared_limits();
            let mut book = KeyBook::new(limits.as_deref().unwrap_or(&NO_LIMITS), now);
            let mut holds = 0;
            let mut claimed = Vec::new();
            let mut steps = 0;
            // Exhausted tasks with an expired lease are failed here, so they never block the
            // head of the queue; keep reading until `limit` runnable tasks are found. A pending
            // task with no attempts left is never due. Each round leaves out the types the
            // gate has closed, so one that closes in a round is not read again.
            loop {
                let closed: Vec<String> = gate.closed().map(str::to_owned).collect();
                let want = i64::try_from(limit - claimed.len()).unwrap_or(i64::MAX);
                let due = due_candidates(tx, due_by, want, &closed, &mut steps)?;
                reads.add(steps, due.len());
                steps = 0;
                if due.is_empty() {
                    break;
                }
                for task in due {
                    let exhausted = is_expired_final_attempt(&task, due_by);
                    if !exhausted && !gate.admits(&task.task_type) {
                        gate.take(&task.task_type);
                        continue;
                    }
                    let lease_until = leases.until(&task.task_type, now);
                    if !exhausted && book.limits(&task) {
                        read_needs(tx, &mut book, &task, now)?;
                        let verdict = book.judge(&task, lease_until);
                        if let Verdict::Hold { until, .. } = verdict {
                            let hold = verdict.transition(due_by, now, lease_until);
                            let waiting = hold
                                .apply(&task)
                                .map_err(|refused| hold.refusal(task.id, refused))?;
                            update(tx, &task, &waiting).map_err(sqlite_error)?;
                            gate.note_hold(until);
                            holds += 1;
                            continue;
                        }
                    }
                    // Each claim gets a token of its own.
                    let transition = if exhausted {
                        Transition::expire(due_by, now)
                    } else {
                        gate.take(&task.task_type);
                        Transition::claim(due_by, now, lease_until)
                    };
                    let changed = transition
                        .apply(&task)
                        .map_err(|refused| transition.refusal(task.id, refused))?;
                    update(tx, &task, &changed).map_err(sqlite_error)?;
                    if !exhausted {
                        claimed.push(changed);
                    }
                }
                if claimed.len() >= limit {
                    break;
                }
                if holds >= HOLDS_PER_CLAIM {
                    // More may be due: the caller claims again soon rather than ending its run.
                    gate.turn_away();
                    gate.note_hold(now.plus(LOOK_AGAIN));
                    break;
                }
            }
            write_moved(tx, &book)?;
            Ok(claimed)
        })
        .await
    }

    /// Records an outcome (by group commit); see [`crate::store::Store::task_settle`].
    pub async fn task_settle(
        &self,
        claimed: &Task,
        outcome: Settlement,
        now: Timestamp,
    ) -> Result<Task, StoreError> {
        let settle = Transition::settle(claimed, outcome, now)?;
        let written = settle.apply(claimed).ok();
        let claimed = claimed.clone();
        self.write_lean(move |tx| settle_in(tx, &claimed, &settle, written))
            .await
    }
}

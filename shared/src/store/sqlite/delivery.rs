//! SQS mode on SQLite: claims by id and the tasks due for a message, each in one immediate
//! transaction.

use rusqlite::params;

use super::SqliteStore;
use super::keys::{book_start, read_needs, write_moved};
use super::rows::{COLUMNS, load, row_to_task, sqlite_error, update};
use crate::clock::Timestamp;
use crate::store::{
    Booking, ClaimById, ClaimedById, Deliverable, KeyBook, StoreError, Transition,
    is_expired_final_attempt,
};
use crate::task::Task;

impl SqliteStore {
    /// Claims the task a message names; see [`crate::store::Store::task_claim_by_id`].
    pub async fn task_claim_by_id(&self, claim: ClaimById<'_>) -> Result<ClaimedById, StoreError> {
        let ClaimById {
            id,
            due_by,
            now,
            booked,
            ..
        } = claim;
        let leases = claim.leases.clone();
        let gate = claim.gate.clone();
        self.write(move |tx| {
            let Some(task) = load(tx, id)? else {
                return Ok(ClaimedById::Missing);
            };
            let lease_until = leases.until(&task.task_type, now);
            let mut book = KeyBook::new(gate.limits(), now)
                .with_concurrency_hold_cap(gate.concurrency_hold_cap());
            let due = task.due_at().is_some_and(|at| at <= due_by);
            let transition = if is_expired_final_attempt(&task, due_by) {
                Transition::expire(due_by, now)
            } else if !gate.admits(&task.task_type) {
                return Ok(ClaimedById::NotDue(task));
            } else if due && book.limits(&task) {
                read_needs(tx, &mut book, &task, now)?;
                let mut verdict = book.judge(&task, lease_until);
                if let Some(booking) = book.booking(&task, verdict).filter(|_| !booked) {
                    verdict = Booking::hold(book_start(tx, &booking)?);
                }
                verdict.transition(due_by, now, lease_until)
            } else {
                Transition::claim(due_by, now, lease_until)
            };
            let Ok(changed) = transition.apply(&task) else {
                return Ok(ClaimedById::NotDue(task));
            };
            update(tx, &task, &changed).map_err(sqlite_error)?;
            write_moved(tx, &book)?;
            Ok(match transition {
                Transition::Claim { .. } => ClaimedById::Claimed(changed),
                _ => ClaimedById::NotDue(changed),
            })
        })
        .await
    }

    /// The tasks due for a message; see [`crate::store::Store::task_list_deliverable`].
    pub async fn task_list_deliverable(
        &self,
        find: Deliverable<'_>,
    ) -> Result<Vec<Task>, StoreError> {
        let (horizon, now, limit, gate) = (find.horizon, find.now, find.limit, find.gate);
        let paused: Vec<String> = gate
            .closed()
            .filter(|name| gate.is_paused(name))
            .map(str::to_owned)
            .collect();
        let paused = serde_json::to_string(&paused)
            .map_err(|err| StoreError::backend_from("encoding the paused task types", err))?;
        self.write(move |tx| {
            // Running tasks are due from their lease's expiry, pending ones from their
            // schedule: one range of the due index up to the horizon, then the running ones
            // whose lease is still live are left out.
            let candidates: Vec<Task> = {
                let mut stmt = tx
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM tasks WHERE due_at <= ?1 \
                         AND (status = 'running' AND due_at <= ?2 \
                              OR status = 'pending' AND attempts < max_attempts) \
                         AND (type NOT IN (SELECT value FROM json_each(?4)) \
                              OR status = 'running' AND attempts >= max_attempts) \
                         ORDER BY due_at, id LIMIT ?3"
                    ))
                    .map_err(sqlite_error)?;
                let want = i64::try_from(limit).unwrap_or(i64::MAX);
                stmt.query_map(
                    params![horizon.to_text(), now.to_text(), want, paused],
                    row_to_task,
                )
                .map_err(sqlite_error)?
                .collect::<rusqlite::Result<_>>()
                .map_err(sqlite_error)?
            };
            let mut deliverable = Vec::with_capacity(candidates.len());
            for task in candidates {
                if is_expired_final_attempt(&task, now) {
                    let expire = Transition::expire(now, now);
                    let failed = expire
                        .apply(&task)
                        .map_err(|refused| expire.refusal(task.id, refused))?;
                    update(tx, &task, &failed).map_err(sqlite_error)?;
                } else {
                    deliverable.push(task);
                }
            }
            Ok(deliverable)
        })
        .await
    }

    /// Nothing to note: the mover's reads go through an index, never a cursor to skip with.
    pub async fn task_expect_delivery(&self, _task: &Task, _until: Timestamp) {}
}

//! Claims by id (SQS mode's workers) and the tasks a message should be on its way for.

use super::keys::{self, Busy};
use super::rows::{COLUMNS, load, rows_to_tasks, update};
use super::{PgStore, bulk, pg_error, raw};
use crate::clock::Timestamp;
use crate::store::{
    Booking, ClaimById, ClaimedById, Deliverable, KeyBook, StoreError, Transition,
    is_expired_final_attempt,
};
use crate::task::Task;

impl PgStore {
    /// See [`crate::store::Store::task_claim_by_id`].
    pub async fn task_claim_by_id(&self, claim: ClaimById<'_>) -> Result<ClaimedById, StoreError> {
        let ClaimById {
            id,
            due_by,
            now,
            booked,
            ..
        } = claim;
        let mut client = self.client().await?;
        let tx = raw(&mut client)
            .transaction()
            .await
            .map_err(|err| pg_error("starting a claim", err))?;
        let Some(task) = load(&tx, id, true).await? else {
            return Ok(ClaimedById::Missing);
        };
        let lease_until = claim.leases.until(&task.task_type, now);
        let limits = claim.gate.limits().clone();
        let mut book =
            KeyBook::new(&limits, now).with_concurrency_hold_cap(claim.gate.concurrency_hold_cap());
        let due = task.due_at().is_some_and(|at| at <= due_by);
        let transition = if is_expired_final_attempt(&task, due_by) {
            Transition::expire(due_by, now)
        } else if !claim.gate.admits(&task.task_type) {
            return Ok(ClaimedById::NotDue(task));
        } else if due && book.limits(&task) {
            let mut busy = Busy::default();
            if !keys::read_needs(&tx, &mut book, &mut busy, &task, now).await? {
                // Another claim is judging its key: the message comes again.
                return Ok(ClaimedById::NotDue(task));
            }
            let mut verdict = book.judge(&task, lease_until);
            if let Some(booking) = book.booking(&task, verdict).filter(|_| !booked) {
                verdict = Booking::hold(keys::book_start(&tx, &booking).await?);
            }
            verdict.transition(due_by, now, lease_until)
        } else {
            Transition::claim(due_by, now, lease_until)
        };
        let Ok(changed) = transition.apply(&task) else {
            return Ok(ClaimedById::NotDue(task));
        };
        update(&tx, &task, &changed)
            .await
            .map_err(|err| pg_error("claiming a task", err))?;
        keys::write_moved(&tx, &book).await?;
        tx.commit()
            .await
            .map_err(|err| pg_error("committing a claim", err))?;
        Ok(match transition {
            Transition::Claim { .. } => ClaimedById::Claimed(changed),
            _ => ClaimedById::NotDue(changed),
        })
    }

    /// See [`crate::store::Store::task_list_deliverable`].
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
        let mut client = self.client().await?;
        let tx = raw(&mut client)
            .transaction()
            .await
            .map_err(|err| pg_error("starting a delivery scan", err))?;
        // Enough for the `limit` earliest: each type's range of the per-type due index,
        // merged (there is no index of due tasks across types; see `queue.rs`).
        let want = i64::try_from(limit).unwrap_or(i64::MAX);
        tx.batch_execute("SET LOCAL enable_seqscan = off")
            .await
            .map_err(|err| pg_error("starting a delivery scan", err))?;
        let open = format!(
            "SELECT {COLUMNS} FROM tasker.tasks WHERE type = $4 AND due_at <= $1 \
             AND (status = 'running' AND due_at <= $2 \
                  OR status = 'pending' AND attempts < max_attempts) \
             ORDER BY due_at, id LIMIT $3 FOR UPDATE SKIP LOCKED"
        );
        // A paused type's tasks wait, but its expired final attempts are failed.
        let closed = format!(
            "SELECT {COLUMNS} FROM tasker.tasks WHERE type = $4 AND due_at <= $2 \
             AND status = 'running' AND attempts >= max_attempts AND due_at <= $1 \
             ORDER BY due_at, id LIMIT $3 FOR UPDATE SKIP LOCKED"
        );
        let mut rows = Vec::new();
        for task_type in super::queue::due_types(&tx).await? {
            let statement = if paused.contains(&task_type) {
                &closed
            } else {
                &open
            };
            rows.extend(
                tx.query(statement, &[&horizon.0, &now.0, &want, &task_type])
                    .await
                    .map_err(|err| pg_error("finding deliverable tasks", err))?,
            );
        }
        let mut found = rows_to_tasks(&rows)?;
        found.sort_by_key(|task| (task.due_at(), task.id));
        found.truncate(limit);
        // Expired final attempts are failed here, all in one statement; the rest are sent.
        let mut deliverable = Vec::with_capacity(found.len());
        let mut failed = Vec::new();
        for task in found {
            if is_expired_final_attempt(&task, now) {
                let expire = Transition::expire(now, now);
                failed.push(
                    expire
                        .apply(&task)
                        .map_err(|refused| expire.refusal(task.id, refused))?,
                );
            } else {
                deliverable.push(task);
            }
        }
        let failed: Vec<&Task> = failed.iter().collect();
        bulk::write_changes(&tx, &failed)
            .await
            .map_err(|err| pg_error("failing expired final attempts", err))?;
        tx.commit()
            .await
            .map_err(|err| pg_error("committing a delivery scan", err))?;
        Ok(deliverable)
    }

    /// Nothing to remember: the scan reads an index.
    pub async fn task_expect_delivery(&self, _task: &Task, _until: Timestamp) {}
}

//! SQS mode on DynamoDB: a claim of the task a message names, and the mover's scan of the due
//! queue up to the delivery horizon.

use super::DynamoStore;
use super::due::ScanGoal;
use super::tasks::{self, Applied};
use crate::clock::Timestamp;
use crate::store::{
    ClaimById, ClaimGate, Leases, ListKey, StoreError, TaskDelivery, Transition,
    is_expired_final_attempt,
};
use crate::task::{Task, TaskId};

/// Items one mover scan reads at most per task it may return: finished entries it passes
/// count against it, so a scan over a long stretch of them ends and the next goes on.
const READS_PER_WANTED: usize = 4;

impl TaskDelivery for DynamoStore {
    async fn claim_by_id_gated(
        &self,
        id: TaskId,
        due_by: Timestamp,
        now: Timestamp,
        leases: &Leases,
        gate: &ClaimGate,
    ) -> Result<ClaimById, StoreError> {
        // An eventually consistent read first (half the units); a task it misses or shows not
        // due is read again consistently, since the message may have overtaken the write that
        // made it due.
        let found = tasks::get_many(&self.table, &[id], false).await?;
        if let Some(task) = found.get(&id).cloned() {
            // A task's type never changes, so a stale read tells it as well as a fresh one.
            if !gate.admits(&task.task_type) && !is_expired_final_attempt(&task, due_by) {
                return Ok(ClaimById::NotDue(task));
            }
            if let Some(claimed) = self.try_claim(task, due_by, now, leases).await? {
                return Ok(claimed);
            }
        }
        match tasks::get(&self.table, id).await? {
            None => Ok(ClaimById::Missing),
            Some(task)
                if !gate.admits(&task.task_type) && !is_expired_final_attempt(&task, due_by) =>
            {
                Ok(ClaimById::NotDue(task))
            }
            Some(task) => Ok(self
                .try_claim(task.clone(), due_by, now, leases)
                .await?
                .unwrap_or(ClaimById::NotDue(task))),
        }
    }

    async fn deliverable_gated(
        &self,
        horizon: Timestamp,
        now: Timestamp,
        limit: usize,
        gate: &ClaimGate,
    ) -> Result<Vec<Task>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Pending entries up to the horizon are due for a message; running ones only once
        // their lease expired by now.
        let goal = ScanGoal {
            upper: ListKey::after_all_at(horizon),
            due_by: now,
            now,
            want: limit,
            read_cap: limit.saturating_mul(READS_PER_WANTED),
            read_ahead: false,
            entry_cap: usize::MAX,
            reread_leased: false,
            // Only the pauses: the mover sends for any type, capped or not.
            gate: ClaimGate::new(
                gate.closed()
                    .filter(|name| gate.is_paused(name))
                    .map(|name| (name.to_owned(), now))
                    .collect(),
                std::collections::BTreeMap::new(),
            ),
        };
        let found = Box::pin(self.due.scan(&goal)).await?;
        let queue = self.queue();
        for task in found.exhausted {
            queue.expire(task, now, now).await?;
        }
        Ok(found.claimable)
    }

    fn expect_delivery(&self, task: &Task, until: Timestamp) {
        self.due.expect_delivery(ListKey::of(task), until);
    }
}

impl DynamoStore {
    /// Claims `task` as read; `None` when the read may be stale (the claim was refused or
    /// the item was gone), so the caller reads it again.
    async fn try_claim(
        &self,
        task: Task,
        due_by: Timestamp,
        now: Timestamp,
        leases: &Leases,
    ) -> Result<Option<ClaimById>, StoreError> {
        if is_expired_final_attempt(&task, due_by) {
            let expire = Transition::expire(due_by, now);
            return Ok(
                match tasks::apply(&self.table, self.ttl_after, task, &expire).await? {
                    Applied::Written(failed) => Some(ClaimById::NotDue(failed)),
                    Applied::Refused(current, _) => Some(ClaimById::NotDue(current)),
                    Applied::Gone => None,
                },
            );
        }
        let claim = Transition::claim(due_by, now, leases.until(&task.task_type, now));
        Ok(
            match tasks::apply(&self.table, self.ttl_after, task, &claim).await? {
                Applied::Written(running) => {
                    self.due.remember_running(std::slice::from_ref(&running));
                    Some(ClaimById::Claimed(running))
                }
                Applied::Refused(..) | Applied::Gone => None,
            },
        )
    }
}

//! SQS mode on DynamoDB: a claim of the task a message names, and the mover's scan of the due
//! queue up to the delivery horizon.

use super::DynamoStore;
use super::due::ScanGoal;
use super::tasks::{self, Applied};
use crate::clock::Timestamp;
use crate::store::{
    Claim, ClaimById, ClaimGate, ClaimedById, Deliverable, KeyBook, ListKey, StoreError,
    Transition, Verdict, is_expired_final_attempt,
};
use crate::task::Task;

/// Items one mover scan reads at most per task it may return: finished entries it passes
/// count against it, so a scan over a long stretch of them ends and the next goes on.
const READS_PER_WANTED: usize = 4;

impl DynamoStore {
    /// Claims the task a message names; see [`crate::store::Store::task_claim_by_id`].
    pub async fn task_claim_by_id(&self, claim: ClaimById<'_>) -> Result<ClaimedById, StoreError> {
        let (id, due_by, gate) = (claim.id, claim.due_by, claim.gate);
        // An eventually consistent read first (half the units); a task it misses or shows not
        // due is read again consistently, since the message may have overtaken the write that
        // made it due.
        let found = tasks::get_many(&self.table, &[id], false).await?;
        if let Some(task) = found.get(&id).cloned() {
            // A task's type never changes, so a stale read tells it as well as a fresh one.
            if !gate.admits(&task.task_type) && !is_expired_final_attempt(&task, due_by) {
                return Ok(ClaimedById::NotDue(task));
            }
            if let Some(claimed) = self.try_claim(task, claim).await? {
                return Ok(claimed);
            }
        }
        match tasks::get(&self.table, id).await? {
            None => Ok(ClaimedById::Missing),
            Some(task)
                if !gate.admits(&task.task_type) && !is_expired_final_attempt(&task, due_by) =>
            {
                Ok(ClaimedById::NotDue(task))
            }
            Some(task) => Ok(self
                .try_claim(task.clone(), claim)
                .await?
                .unwrap_or(ClaimedById::NotDue(task))),
        }
    }

    /// The tasks due for a message; see [`crate::store::Store::task_list_deliverable`].
    pub async fn task_list_deliverable(
        &self,
        find: Deliverable<'_>,
    ) -> Result<Vec<Task>, StoreError> {
        let Deliverable {
            horizon,
            now,
            limit,
            gate,
        } = find;
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
        for task in found.exhausted {
            self.expire(task, now, now).await?;
        }
        Ok(found.claimable)
    }

    /// A message for `task` is on its way, due by `until`: scans skip its item until then.
    pub async fn task_expect_delivery(&self, task: &Task, until: Timestamp) {
        self.due.expect_delivery(task, until);
    }
}

/// What a message's claim does with a due task, by its keys.
enum ById {
    /// Claim it; `took`: the lease end of the concurrency slot taken for it, if one was.
    Start { took: Option<Timestamp> },
    /// Answer it as not due.
    Held(Box<Task>),
}

impl DynamoStore {
    /// Claims `task` as read; `None` when the read may be stale (the claim was refused or
    /// the item was gone), so the caller reads it again.
    async fn try_claim(
        &self,
        task: Task,
        by_id: ClaimById<'_>,
    ) -> Result<Option<ClaimedById>, StoreError> {
        let ClaimById {
            due_by,
            now,
            leases,
            gate,
            booked,
            ..
        } = by_id;
        if is_expired_final_attempt(&task, due_by) {
            let expire = Transition::expire(due_by, now);
            return Ok(match self.apply(task, &expire).await? {
                Applied::Written(failed) => Some(ClaimedById::NotDue(failed)),
                Applied::Refused(current, _) => Some(ClaimedById::NotDue(current)),
                Applied::Gone => None,
            });
        }
        let mut took = None;
        if task.due_at().is_some_and(|at| at <= due_by) {
            let claim = Claim {
                due_by,
                now,
                limit: 1,
                leases,
                gate,
            };
            match self.judge_by_id(task.clone(), &claim, booked).await? {
                ById::Start { took: slot } => took = slot,
                ById::Held(held) => return Ok(Some(ClaimedById::NotDue(*held))),
            }
        }
        let id = task.id;
        let claim = Transition::claim(due_by, now, leases.until(&task.task_type, now));
        Ok(match self.apply(task, &claim).await? {
            Applied::Written(running) => {
                self.due.remember_running(std::slice::from_ref(&running));
                Some(ClaimedById::Claimed(running))
            }
            Applied::Refused(..) | Applied::Gone => {
                self.release_slot_of(id, took, now).await;
                None
            }
        })
    }

    /// Judges the due `task` by its keys' limits: it may start (`took`: a slot taken for it),
    /// or it is held (not written: the caller's next message comes at its `scheduledAt`, for
    /// a rate hold the start its key books for it unless the message was `booked` already),
    /// or left as read when another claim moved its key first.
    async fn judge_by_id(
        &self,
        task: Task,
        claim: &Claim<'_>,
        booked: bool,
    ) -> Result<ById, StoreError> {
        let judged = self.judge_keys(vec![task.clone()], claim).await?;
        if !judged.starting.is_empty() {
            return Ok(ById::Start {
                took: judged.took.get(&task.id).copied(),
            });
        }
        let Some((_, held, mut until)) = judged.held.first().copied() else {
            return Ok(ById::Held(Box::new(task)));
        };
        let book = KeyBook::new(claim.gate.limits(), claim.now);
        let verdict = Verdict::Hold { held, until };
        if let Some(booking) = book.booking(&task, verdict).filter(|_| !booked) {
            until = self.book_start(&booking).await?;
        }
        let hold = Transition::Hold {
            due_by: claim.due_by,
            now: claim.now,
            until,
            held,
        };
        Ok(ById::Held(Box::new(hold.apply(&task).unwrap_or(task))))
    }
}

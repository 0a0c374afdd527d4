//! The task queue on DynamoDB: claims of due tasks found by the due queue, and outcomes.

use futures::StreamExt;

use super::DynamoStore;
use super::due::ScanGoal;
use super::keys::Judged;
use super::tasks::{self, Applied};
use crate::clock::Timestamp;
use crate::report::Report;
use crate::store::{
    Claim, LOOK_AGAIN, Leases, ListKey, Settlement, StoreError, Transition,
    is_expired_final_attempt,
};
use crate::task::{Task, TaskId};

/// Claims of one round written at once.
const CLAIM_CONCURRENCY: usize = 16;
/// Scans a claim makes at most when every claim of a round lost to another processor.
const CLAIM_ROUNDS: usize = 3;

/// What one round of a claim did.
#[derive(Default)]
struct Round {
    /// The tasks it claimed.
    won: Vec<Task>,
    /// Candidates another processor claimed first.
    lost: usize,
    /// Candidates held for their keys (their entries passed from now on).
    held: usize,
    /// The first claim that failed, if one did.
    error: Option<StoreError>,
}

impl DynamoStore {
    /// Claims up to `claim.limit` due tasks; see [`crate::store::Store::task_claim`]. The due
    /// entries and their items are read first, and only what is due is claimed: a claim that
    /// fails its condition is billed like one that succeeds.
    pub async fn task_claim(&self, claim: Claim<'_>) -> Result<Vec<Task>, StoreError> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(None);
        let Claim {
            due_by,
            now,
            limit,
            gate,
            ..
        } = claim;
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.look_at_holds(gate, now).await;
        let mut goal = ScanGoal {
            upper: ListKey::after_all_at(due_by),
            due_by,
            now,
            want: limit,
            read_cap: usize::MAX,
            read_ahead: true,
            entry_cap: usize::MAX,
            reread_leased: false,
            gate: gate.clone(),
        };
        let mut claimed = Vec::with_capacity(limit);
        let mut first_error = None;
        let mut lost_rounds = 0;
        // A round that lost every claim to another processor says nothing about what is still
        // due: look again (from another shard, see `after_claim_round`) before answering empty.
        // A round that held tasks for their keys passed their entries: the next reads on, so
        // a key's backlog never stands in the way of other tasks.
        loop {
            goal.want = limit - claimed.len();
            // An error after earlier rounds won tasks still answers them (see below).
            let round = match self.claim_round(&goal, &claim).await {
                Ok(round) => round,
                Err(err) => {
                    first_error.get_or_insert(err);
                    break;
                }
            };
            self.due.after_claim_round(round.lost, now);
            self.due.remember_running(&round.won);
            claimed.extend(round.won);
            if let Some(err) = round.error {
                first_error.get_or_insert(err);
            }
            if first_error.is_some() || claimed.len() >= limit {
                break;
            }
            lost_rounds += 1;
            if round.held > 0 {
                if lost_rounds < CLAIM_ROUNDS {
                    continue;
                }
                // More may be due: the caller looks again soon rather than ending its run.
                gate.turn_away();
                gate.note_hold(now.plus(LOOK_AGAIN));
                break;
            }
            if !claimed.is_empty() || round.lost == 0 || lost_rounds >= CLAIM_ROUNDS {
                break;
            }
        }
        // Claims that succeeded must reach the caller even when a sibling failed: dropping
        // them would leave running tasks nobody works on until their lease expires.
        match first_error {
            Some(err) if claimed.is_empty() => Err(err),
            Some(err) => {
                tracing::warn!(error = %Report(&err), claimed = claimed.len(), "some claims failed; running the rest");
                Ok(claimed)
            }
            None => Ok(claimed),
        }
    }

    /// One round of a claim: a scan, the exhausted tasks it found failed, the candidates
    /// claimed at once.
    async fn claim_round(&self, goal: &ScanGoal, claim: &Claim<'_>) -> Result<Round, StoreError> {
        // Boxed: the scan's future is deep, and callers' futures nest it several levels down.
        let found = Box::pin(self.due.scan(goal)).await?;
        for task in found.exhausted {
            self.expire(task, claim.due_by, claim.now).await?;
        }
        let candidates: Vec<Task> = found.claimable.into_iter().take(goal.want).collect();
        let Judged {
            starting,
            held,
            took,
        } = self.judge_keys(candidates, claim).await?;
        let tried = starting.len();
        let ids: Vec<TaskId> = starting.iter().map(|task| task.id).collect();
        let results: Vec<Result<Option<Task>, StoreError>> = futures::stream::iter(starting)
            .map(|task| self.claim_one(task, claim.due_by, claim.now, claim.leases))
            .buffered(CLAIM_CONCURRENCY)
            .collect()
            .await;
        let mut round = Round {
            held: held.len(),
            ..Round::default()
        };
        let mut failed = 0;
        for (id, result) in ids.into_iter().zip(results) {
            match result {
                Ok(Some(won)) => round.won.push(won),
                Ok(None) => {
                    self.release_slot_of(id, took.get(&id).copied(), claim.now)
                        .await
                }
                Err(err) => {
                    // Maybe claimed: its slot stays, and frees with the lease it may have.
                    failed += 1;
                    round.error.get_or_insert(err);
                }
            }
        }
        round.lost = tried - round.won.len() - failed;
        Ok(round)
    }

    /// Claims the candidate `task` (as the scan read it); `None` when another processor got
    /// there first, or its final attempt expired (it is failed then).
    async fn claim_one(
        &self,
        task: Task,
        due_by: Timestamp,
        now: Timestamp,
        leases: &Leases,
    ) -> Result<Option<Task>, StoreError> {
        let claim = Transition::claim(due_by, now, leases.until(&task.task_type, now));
        match self.apply(task, &claim).await? {
            Applied::Written(running) => Ok(Some(running)),
            Applied::Refused(current, _) => {
                self.expire(current, due_by, now).await?;
                Ok(None)
            }
            Applied::Gone => Ok(None),
        }
    }

    /// Fails `task` if it is a running final attempt whose lease expired by `due_by`.
    pub(super) async fn expire(
        &self,
        task: Task,
        due_by: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        if !is_expired_final_attempt(&task, due_by) {
            return Ok(());
        }
        let entry = ListKey::of(&task);
        let expire = Transition::expire(due_by, now);
        if let Applied::Written(_) = self.apply(task, &expire).await? {
            // The task left the due queue for the failed one.
            self.due.forget_running(entry, true, now);
        }
        Ok(())
    }

    /// Records the outcome of the attempt `claimed`; see [`crate::store::Store::task_settle`].
    pub async fn task_settle(
        &self,
        claimed: &Task,
        outcome: Settlement,
        now: Timestamp,
    ) -> Result<Task, StoreError> {
        let settle = Transition::settle(claimed, outcome, now)?;
        let applied = self.apply(claimed.clone(), &settle).await;
        // The attempt is over, recorded or not (a lost lease): its slot frees.
        self.release_slot_of(claimed.id, claimed.lease_expires_at, now)
            .await;
        let recorded = tasks::written(applied?, claimed.id, &settle)?;
        self.due.entry_written(&recorded);
        // The entry the task was claimed from is finished, or left behind by a move.
        let entry = ListKey::of(claimed);
        let left = recorded.status.is_finished() || ListKey::of(&recorded) != entry;
        self.due.forget_running(entry, left, now);
        Ok(recorded)
    }
}

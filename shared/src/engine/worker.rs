//! SQS mode's worker: each message names a task; the task is claimed by id with the same
//! conditional write as a poll-mode claim, run as one attempt, and its next message sent when
//! it is due again within SQS's longest delay. Attempts are counted in the table, never by
//! SQS's receive count.

use std::time::Instant;

use futures::StreamExt;
use serde::Serialize;

use super::Tasker;
use super::attempt::{Claimed, RunLimits};
use super::outcomes::{Outcome, Outcomes, RunSummary};
use crate::clock::Timestamp;
use crate::push::{Body, Delivery, EARLY_WAIT};
use crate::report::Report;
use crate::store::{ClaimById, ClaimGate, ClaimedById, LOOK_AGAIN, Store};
use crate::task::{Held, Task, TaskId, TaskStatus};

/// The longest a worker's claim holds a task for its key's concurrency (see
/// [`crate::store::ClaimGate::with_concurrency_hold_cap`]): the latency of a slot freed in
/// SQS mode, against one message and one write per held task per hold.
pub const SQS_CONCURRENCY_HOLD: std::time::Duration = std::time::Duration::from_secs(2);
/// How often a task that came for a booked start looks again in place for a free slot of its
/// key (see `claim_message`).
const SLOT_LOOK: std::time::Duration = std::time::Duration::from_millis(200);

/// One message handed to a worker.
#[derive(Debug, Clone)]
pub struct Message {
    /// SQS's id of the message (reported back for a message to deliver again).
    pub message_id: String,
    /// What it carries: a task id.
    pub body: String,
}

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Done with: delete it. Its task ran, or needs no run (cancelled, finished, claimed
    /// elsewhere, missing), or its next message was sent.
    Done(Work),
    /// Leave it on the queue, to be delivered again after its visibility timeout: the store
    /// failed, the invocation ran out of time, the task's next message could not be sent, or
    /// it names no task (a poison message, which the queue's redrive policy moves to the
    /// dead-letter queue after enough receives).
    Again,
}

/// What a message led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    /// An attempt ran (or was given back unstarted) with this outcome.
    Ran(Outcome),
    /// The task was not due: finished, cancelled, running elsewhere, or scheduled later.
    Dropped,
    /// No such task.
    Missing,
}

/// What a batch of messages did, as the worker logs and returns it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkSummary {
    /// Messages handled.
    pub messages: usize,
    /// The attempts the messages led to, by outcome.
    #[serde(flatten)]
    pub outcomes: Outcomes,
    /// Messages for tasks that were not due (duplicates, cancels, late copies): deleted.
    pub dropped: usize,
    /// Messages left on the queue to be delivered again.
    pub again: usize,
}

impl WorkSummary {
    /// The same counts as a processor run's, for the metrics line the alarms read: messages
    /// left on the queue count with the failed claims.
    pub fn as_run(&self, duration_ms: u64) -> RunSummary {
        RunSummary {
            claimed: self.outcomes.total(),
            outcomes: self.outcomes,
            failed_claims: self.again,
            duration_ms,
        }
    }

    /// Adds the counts of `other` (another receive loop's) to these.
    pub fn absorb(&mut self, other: &Self) {
        self.messages += other.messages;
        self.outcomes.absorb(&other.outcomes);
        self.dropped += other.dropped;
        self.again += other.again;
    }

    /// Counts `handled`.
    pub fn count(&mut self, handled: Handled) {
        self.messages += 1;
        match handled {
            Handled::Again => self.again += 1,
            Handled::Done(Work::Dropped | Work::Missing) => self.dropped += 1,
            Handled::Done(Work::Ran(outcome)) => self.outcomes.count(outcome),
        }
    }
}

/// What a claim of a message's task found.
struct MessageClaim {
    /// When the claim started: the lease counts from then.
    started: Instant,
    found: ClaimedById,
    /// The task's type is paused.
    paused: bool,
    /// The task holds a start its rate key booked for it: the message came for one, or a claim
    /// of it booked one.
    booked: bool,
}

impl<S: Store> Tasker<S> {
    /// Works the `messages` of one batch, up to `concurrency` at once, each within `deadline`
    /// (the invocation's, in Lambda); answers what became of each, in order.
    pub async fn work(&self, messages: &[Message], deadline: Option<Instant>) -> Vec<Handled> {
        let limits = RunLimits::new(Instant::now(), deadline, &self.settings);
        // Owned messages: futures that borrow them keep the caller's future from being `Send`
        // for every lifetime (a spawned worker loop needs that).
        let handled = futures::stream::iter(messages.to_vec())
            .map(|message| async move { self.work_one(&message, limits).await })
            .buffered(self.settings.concurrency.max(1))
            .collect()
            .await;
        // The counts of finished tasks, at most every few seconds: a write per batch would add
        // a write unit per ten tasks.
        self.store.queue_flush(self.clock.now(), false).await;
        handled
    }

    /// Works one message with no deadline of its own (`tasker worker`, which receives more as
    /// each one is done with): as [`Tasker::work`] does each message of a batch.
    pub async fn work_message(&self, message: &Message) -> Handled {
        let limits = RunLimits::new(Instant::now(), None, &self.settings);
        let handled = self.work_one(message, limits).await;
        self.store.queue_flush(self.clock.now(), false).await;
        handled
    }

    async fn work_one(&self, message: &Message, limits: RunLimits) -> Handled {
        let Some(Body { id, booked }) = Body::parse(&message.body) else {
            let body: String = message.body.chars().take(80).collect();
            tracing::error!(
                message_id = %message.message_id,
                body = %body,
                "the message names no task; leaving it on the queue (its redrive policy moves it to the dead-letter queue)"
            );
            return Handled::Again;
        };
        if !limits.may_claim() {
            return Handled::Again;
        }
        let claim = match self.claim_message(id, booked, limits).await {
            Ok(claim) => claim,
            Err(handled) => return handled,
        };
        let task = match claim.found {
            ClaimedById::Claimed(task) => task,
            ClaimedById::Missing => {
                tracing::info!(task_id = %id, message_id = %message.message_id, "no such task; message dropped");
                return Handled::Done(Work::Missing);
            }
            ClaimedById::NotDue(task) => {
                return self.not_due(task, claim.paused, claim.booked).await;
            }
        };
        let lease_ends = claim.started + self.leases.duration(&task.task_type);
        let (outcome, recorded) = self.run_attempt(Claimed { task, lease_ends }, limits).await;
        // A retry, or a task given back: its next message, if due within the longest delay
        // (otherwise the mover sends it when it falls due). When that send fails this message
        // stays, and comes back after its visibility timeout to claim the task then.
        if let Some(next) = recorded.filter(|task| task.status == TaskStatus::Pending) {
            if !self.deliver(std::slice::from_ref(&next)).await {
                return Handled::Again;
            }
        }
        Handled::Done(Work::Ran(outcome))
    }

    /// A message for `task`, which is not due: dropped. A paused type's task gets its message
    /// from the mover once resumed; one that came early (a clock behind SQS's, or a copy of an
    /// older message) and is still pending gets a message for its time, unless that send
    /// fails: then this one comes back after its visibility timeout. A task that came for a
    /// `booked` start keeps it: held again for any limit, its next message is booked too, so
    /// it waits at the front of its key, not behind the starts booked since.
    async fn not_due(&self, task: Task, paused: bool, booked: bool) -> Handled {
        if task.status == TaskStatus::Pending && paused {
            tracing::info!(task_id = %task.id, task_type = %task.task_type, "task type paused; message dropped (the mover sends one once it is resumed)");
            return Handled::Done(Work::Dropped);
        }
        let mut next = Delivery::of(&task, self.clock.now());
        if let Some(delivery) = next.as_mut().filter(|_| booked && task.held.is_some()) {
            delivery.booked.get_or_insert(task.scheduled_at);
        }
        if task.status == TaskStatus::Pending && !self.send(next.as_slice()).await {
            return Handled::Again;
        }
        tracing::debug!(task_id = %task.id, status = %task.status, held = ?task.held, scheduled_at = %task.scheduled_at, booked = ?booked, "task not due; message dropped");
        Handled::Done(Work::Dropped)
    }

    /// Claims the task `id` now, or after short waits in place, within [`EARLY_WAIT`] of the
    /// first try (and never past the run's last claim): for a task less than that early
    /// (delays are whole seconds, rounded down, so a message may come up to a second before
    /// its task is due), [`LOOK_AGAIN`] for one due whose key another claim was writing at the
    /// same moment, and, once its rate key booked it a start, [`SLOT_LOOK`] while its key has
    /// no free slot: its next message would otherwise come at once or within
    /// [`SQS_CONCURRENCY_HOLD`], and race again. A store failure leaves the message on the
    /// queue.
    async fn claim_message(
        &self,
        id: TaskId,
        booked: Option<Timestamp>,
        limits: RunLimits,
    ) -> Result<MessageClaim, Handled> {
        let last = limits.last_claim();
        let until = |wait: std::time::Duration| {
            let at = Instant::now() + wait;
            last.map_or(at, |last| at.min(last))
        };
        // A booked start is in the message: the store may not have it (DynamoDB does not
        // write holds), and a claim before it would only hold the task again.
        if let Some(start) = booked {
            let early = start.since(self.clock.now()).min(EARLY_WAIT);
            tokio::time::sleep_until(until(early).into()).await;
        }
        let deadline = until(EARLY_WAIT);
        // Once a claim held the task for its rate it holds a start of its own (or waits for
        // the key's next one): looking again must not book another.
        let mut booked = booked.is_some();
        loop {
            let mut claim = self.claim_message_now(id, booked).await?;
            let ClaimedById::NotDue(task) = &claim.found else {
                return Ok(claim);
            };
            booked |= task.held == Some(Held::Rate);
            claim.booked = booked;
            if claim.paused || task.status != TaskStatus::Pending {
                return Ok(claim);
            }
            let wait = if booked && task.held == Some(Held::Concurrency) {
                SLOT_LOOK
            } else {
                task.scheduled_at.since(self.clock.now()).max(LOOK_AGAIN)
            };
            if Instant::now() + wait > deadline {
                return Ok(claim);
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Claims the task `id` now, unless its type is paused (`booked`: the message came for a
    /// start its rate key booked for it).
    async fn claim_message_now(&self, id: TaskId, booked: bool) -> Result<MessageClaim, Handled> {
        let started = Instant::now();
        let claimed = async {
            // An outcome makes a task held for its key due at once, but its message comes
            // when it was sent for: holds stay short, each ending in a new message.
            let gate = ClaimGate::new(self.paused_now().await?, Default::default())
                .with_limits(self.key_limits.clone())
                .with_concurrency_hold_cap(SQS_CONCURRENCY_HOLD);
            let now = self.clock.now();
            let claim = ClaimById::due(id, now, &self.leases)
                .through(&gate)
                .booked(booked);
            let claimed = self.store.task_claim_by_id(claim).await?;
            let paused = match &claimed {
                ClaimedById::NotDue(task) => gate.is_paused(&task.task_type),
                _ => false,
            };
            Ok::<_, crate::store::StoreError>((claimed, paused))
        };
        match claimed.await {
            Ok((found, paused)) => Ok(MessageClaim {
                started,
                found,
                paused,
                booked,
            }),
            Err(err) => {
                tracing::warn!(task_id = %id, error = %Report(&err), "claiming the message's task failed; it will be delivered again");
                Err(Handled::Again)
            }
        }
    }
}

//! SQS mode's mover, run by the minute processor instead of claims: it sends a message for
//! each task that falls due within SQS's longest delay and has none on its way: far-future
//! creates and long retries entering the window, sends that failed or were lost, and tasks
//! whose lease expired after a worker died. A double send is harmless (the claim decides); a
//! lost one is repaired by the first run after the task is [`OVERDUE`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{Tasker, TaskerError};
use crate::clock::Timestamp;
use crate::push::{Delivery, MAX_DELAY, Push, PushError};
use crate::report::Report;
use crate::store::{ClaimGate, Deliverable, Store};
use crate::task::{Task, TaskId, TaskStatus};

/// How late a task whose writer sent its message must be before the mover sends another:
/// long enough for a worker to have received and claimed it.
pub const OVERDUE: Duration = Duration::from_secs(30);
/// How long the mover trusts its own message to be on its way before it sends again.
pub const RESEND_AFTER: Duration = Duration::from_secs(300);
/// Tasks one mover run looks at most.
pub const MOVE_LIMIT: usize = 1000;
/// How long a late task the mover leaves alone (its message is likely queued behind a backlog)
/// stays out of its scans: two of its runs, so the rest of the window gets read meanwhile.
const LATE_REREAD: Duration = Duration::from_secs(120);

/// What the mover sent, by task: the task's `updatedAt` when it did (a later write makes the
/// record stale) and until when it trusts that message.
#[derive(Debug, Default)]
pub struct Sent(Mutex<HashMap<TaskId, (Timestamp, Timestamp)>>);

impl Sent {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, (Timestamp, Timestamp)>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What one mover run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MoveSummary {
    /// Tasks due within the window that the store returned.
    pub found: usize,
    /// Messages sent for tasks that had none on its way.
    pub sent: usize,
    /// Of those, tasks late past [`OVERDUE`] or with an expired lease: lost or failed sends.
    pub repaired: usize,
    /// Messages that could not be sent (tried again by the next run).
    pub send_failures: usize,
    /// Wall time of the run.
    pub duration_ms: u64,
}

/// Why the mover sends a message for `task` at `now`, if it should: `Some(true)` for a repair
/// (its message should have come), `Some(false)` for a task entering the window that its
/// writer did not send. `queue_busy` when messages wait on the queue: a late task is then more
/// likely behind them than lost, until it is [`RESEND_AFTER`] late.
fn needs_message(task: &Task, now: Timestamp, queue_busy: bool) -> Option<bool> {
    match task.status {
        // A lease expired: its worker died; the message it held may be gone for good.
        TaskStatus::Running => Some(true),
        TaskStatus::Pending => {
            // Its writer (a create, a worker's retry, an operator's retry) sent one when it
            // was due within the longest delay.
            let writer_sent = task.scheduled_at <= task.updated_at.plus(MAX_DELAY);
            let overdue = task.scheduled_at <= now.minus(OVERDUE);
            let long_overdue = task.scheduled_at <= now.minus(RESEND_AFTER);
            match (writer_sent, overdue) {
                (false, _) => Some(false),
                (true, true) if !queue_busy || long_overdue => Some(true),
                (true, _) => None,
            }
        }
        _ => None,
    }
}

impl<S: Store> Tasker<S> {
    /// One mover run (SQS mode); see the module's documentation.
    pub async fn move_due(&self) -> Result<MoveSummary, TaskerError> {
        let started = Instant::now();
        let Some(push) = &self.push else {
            return Err(TaskerError::NoQueue);
        };
        let now = self.clock.now();
        let tasks = self.deliverable(now).await?;
        let queue_busy = match push.waiting().await {
            Ok(waiting) => waiting > 0,
            Err(err) => {
                tracing::warn!(error = %Report(&err), "could not read the queue's depth; sending for late tasks anyway");
                false
            }
        };
        let mut summary = MoveSummary {
            found: tasks.len(),
            ..MoveSummary::default()
        };
        let holds_written = self.store.key_holds_written().await;
        let Sorted {
            to_send,
            on_their_way,
        } = self.sort_found(tasks, now, queue_busy, holds_written);
        for (task, until) in &on_their_way {
            self.store.task_expect_delivery(task, *until).await;
        }
        let refused = send_all(push.as_ref(), &to_send, self.clock.now()).await;
        for (task, repair) in &to_send {
            if refused.contains(&task.id) {
                summary.send_failures += 1;
                continue;
            }
            summary.sent += 1;
            summary.repaired += usize::from(*repair);
            let until = task.due_at().unwrap_or(now).max(now).plus(RESEND_AFTER);
            self.moved.lock().insert(task.id, (task.updated_at, until));
            self.store.task_expect_delivery(task, until).await;
            if *repair {
                tracing::warn!(task_id = %task.id, status = %task.status, due_at = ?task.due_at(), "no message was on its way for a due task; sent one");
            }
        }
        summary.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(
            found = summary.found,
            sent = summary.sent,
            repaired = summary.repaired,
            send_failures = summary.send_failures,
            duration_ms = summary.duration_ms,
            "mover run finished"
        );
        Ok(summary)
    }

    /// The tasks due for a message at `now`. A paused type's tasks get theirs once it is
    /// resumed (a worker drops any that arrive meanwhile); the store leaves them out, so they
    /// never crowd out others.
    async fn deliverable(&self, now: Timestamp) -> Result<Vec<Task>, TaskerError> {
        let paused = self.paused_now().await?;
        let gate = ClaimGate::new(paused, std::collections::BTreeMap::new());
        let find = Deliverable {
            horizon: now.plus(MAX_DELAY),
            now,
            limit: MOVE_LIMIT,
            gate: &gate,
        };
        let tasks = self.store.task_list_deliverable(find).await?;
        // The expired final attempts that read failed, in the counts of finished tasks.
        self.store.queue_flush(now, true).await;
        Ok(tasks)
    }

    /// Sorts what a scan found at `now`: the tasks to send a message for (with whether it is a
    /// repair), and those whose message is on its way with the instant until which a scan need
    /// not read them again (before they are due and late; a late one behind a backlog, not for
    /// two runs or until it is long late). A task a limit of its keys may hold, in a store
    /// that does not write holds (`holds_written` false: DynamoDB), is late by design while
    /// its key is busy, its message booked for later: it is taken as behind a backlog.
    fn sort_found(
        &self,
        tasks: Vec<Task>,
        now: Timestamp,
        queue_busy: bool,
        holds_written: bool,
    ) -> Sorted {
        let mut to_send = Vec::new();
        let mut on_their_way = Vec::new();
        let mut sent = self.moved.lock();
        sent.retain(|_, (_, until)| *until > now);
        for task in tasks {
            let ours = sent
                .get(&task.id)
                .is_some_and(|(state, _)| *state == task.updated_at);
            let due = task.due_at().unwrap_or(now);
            let busy = queue_busy || (!holds_written && self.key_limits.limit_any(&task));
            match needs_message(&task, now, busy) {
                Some(repair) if !ours => to_send.push((task, repair)),
                _ if task.status == TaskStatus::Pending => {
                    let until = if due > now.minus(OVERDUE) {
                        due.plus(OVERDUE)
                    } else {
                        now.plus(LATE_REREAD).min(due.plus(RESEND_AFTER))
                    };
                    on_their_way.push((task, until));
                }
                _ => {}
            }
        }
        Sorted {
            to_send,
            on_their_way,
        }
    }
}

/// What a mover run does with the tasks its scan found.
struct Sorted {
    /// Tasks to send a message for, each with whether it is a repair (its message should have
    /// come).
    to_send: Vec<(Task, bool)>,
    /// Tasks whose message is on its way, each with when a scan should read it again.
    on_their_way: Vec<(Task, Timestamp)>,
}

/// Sends a message for each of `to_send` with its delay from `sending`; the tasks whose
/// message did not go (logged), for the next run to send again.
async fn send_all(push: &dyn Push, to_send: &[(Task, bool)], sending: Timestamp) -> Vec<TaskId> {
    let deliveries: Vec<Delivery> = to_send
        .iter()
        .filter_map(|(task, _)| Delivery::of(task, sending))
        .collect();
    match push.send(&deliveries).await {
        Ok(()) => Vec::new(),
        Err(PushError::Refused { ids, first }) => {
            tracing::warn!(refused = ids.len(), first = %first, "the queue refused some messages; the next run sends them again");
            ids
        }
        Err(err) => {
            tracing::warn!(error = %Report(&err), tasks = deliveries.len(), "could not send to the queue; the next run tries again");
            deliveries.iter().map(|d| d.id).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewTask;

    fn at(now: Timestamp, created_ago: u64, due_in: i64) -> Task {
        let created = now.minus(Duration::from_secs(created_ago));
        let scheduled = if due_in >= 0 {
            now.plus(Duration::from_secs(due_in.unsigned_abs()))
        } else {
            now.minus(Duration::from_secs(due_in.unsigned_abs()))
        };
        let new = NewTask {
            scheduled_at: Some(scheduled.max(created)),
            ..NewTask::new("t", "{}")
        };
        Task::from_new(new, created)
    }

    #[test]
    fn the_mover_sends_what_has_no_message_on_its_way() {
        let now: Timestamp = "2026-11-29T12:00:00Z".parse().expect("instant");
        // Created an hour ago for five minutes from now: its writer sent nothing.
        assert_eq!(needs_message(&at(now, 3600, 300), now, false), Some(false));
        assert_eq!(needs_message(&at(now, 3600, 300), now, true), Some(false));
        // Created a minute ago for now: its writer sent it; not late yet.
        assert_eq!(needs_message(&at(now, 60, 0), now, false), None);
        // 40 s late: lost, unless the queue has a backlog it may be behind.
        assert_eq!(needs_message(&at(now, 100, -40), now, false), Some(true));
        assert_eq!(needs_message(&at(now, 100, -40), now, true), None);
        // Five minutes late: sent again even behind a backlog.
        assert_eq!(needs_message(&at(now, 400, -300), now, true), Some(true));
        // A running task the store returned has an expired lease: its worker died.
        let mut running = at(now, 600, -600);
        running.status = TaskStatus::Running;
        assert_eq!(needs_message(&running, now, true), Some(true));
        let mut done = at(now, 600, -600);
        done.status = TaskStatus::Succeeded;
        assert_eq!(needs_message(&done, now, false), None);
    }
}

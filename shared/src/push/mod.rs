//! SQS mode's delivery: task ids sent to a queue ahead of their due time, for the workers
//! that read it. The table stays the source of truth: a message only says "look at this task
//! then", and the claim decides, so a lost message is repaired by the mover and a duplicate is
//! dropped.

#[cfg(feature = "sqs")]
pub mod sqs;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::clock::Timestamp;
use crate::task::{Task, TaskId, TaskStatus};

/// SQS's longest message delay: a task due further out waits in the table for the mover.
pub const MAX_DELAY: Duration = Duration::from_secs(900);
/// How early a message may arrive for the worker to wait in place for its task to fall due;
/// one earlier than that (a clock running behind, a copy of an older message) is sent again
/// for the task's time.
pub const EARLY_WAIT: Duration = Duration::from_secs(1);

/// A message to send: the task it names, and how long SQS keeps it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The task.
    pub id: TaskId,
    /// Whole seconds, rounded down: the message arrives less than a second before the task is
    /// due, and the worker waits out the rest ([`EARLY_WAIT`]), so the start is not late by
    /// SQS's one-second granularity.
    pub delay_seconds: u32,
}

impl Delivery {
    /// The message for `task` as of `now`: `None` unless it is pending with attempts left and
    /// due within [`MAX_DELAY`], or running (a lease that expired: due now).
    pub fn of(task: &Task, now: Timestamp) -> Option<Self> {
        let due = match task.status {
            TaskStatus::Pending if task.attempts < task.max_attempts => task.scheduled_at,
            TaskStatus::Running => now,
            _ => return None,
        };
        let wait = due.since(now);
        if wait > MAX_DELAY {
            return None;
        }
        let millis = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX);
        Some(Self {
            id: task.id,
            delay_seconds: millis / 1000,
        })
    }
}

/// Why a send failed. The tasks are in the table either way: the mover sends them later.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The call failed (the queue is unreachable, throttled or refused the request).
    #[error("sending to the queue failed: {message}")]
    Call {
        /// What failed.
        message: String,
        /// The SDK's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The queue took some messages of a batch and refused these.
    #[error("the queue refused {} of the messages: {first}", ids.len())]
    Refused {
        /// The tasks whose messages were refused.
        ids: Vec<TaskId>,
        /// The first refusal's reason.
        first: String,
    },
}

/// A boxed future of a push call.
pub type PushFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, PushError>> + Send + 'a>>;

/// Where deliveries go: SQS, through [`sqs::SqsQueue`].
pub trait Push: Send + Sync {
    /// Sends one message per delivery (in batches where the queue takes them).
    fn send<'a>(&'a self, deliveries: &'a [Delivery]) -> PushFuture<'a, ()>;

    /// Messages waiting to be received now (SQS's approximate count): while some are, a late
    /// task is more likely queued behind them than lost.
    fn waiting(&self) -> PushFuture<'_, u64>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NewTask;

    fn task(scheduled_in: Duration) -> (Task, Timestamp) {
        let now: Timestamp = "2026-11-29T00:00:00Z".parse().expect("a valid instant");
        let new = NewTask {
            scheduled_at: Some(now.plus(scheduled_in)),
            ..NewTask::new("sendWebhook", "{}")
        };
        let task = Task::from_new_with(new, now, 3, crate::RetryPolicy::default());
        (task, now)
    }

    #[test]
    fn a_delay_rounds_down_and_stops_at_fifteen_minutes() {
        let (due_now, now) = task(Duration::ZERO);
        assert_eq!(
            Delivery::of(&due_now, now).map(|d| d.delay_seconds),
            Some(0)
        );
        let (soon, now) = task(Duration::from_millis(1999));
        assert_eq!(Delivery::of(&soon, now).map(|d| d.delay_seconds), Some(1));
        let (edge, now) = task(MAX_DELAY);
        assert_eq!(Delivery::of(&edge, now).map(|d| d.delay_seconds), Some(900));
        let (far, now) = task(MAX_DELAY + Duration::from_millis(1));
        assert_eq!(Delivery::of(&far, now), None);
        let (late, now) = task(Duration::ZERO);
        let later = now.plus(Duration::from_secs(60));
        assert_eq!(Delivery::of(&late, later).map(|d| d.delay_seconds), Some(0));
    }
}

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
use crate::task::{Held, Task, TaskId, TaskStatus};

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
    /// The start the task's rate key booked for it, when it holds one: the message comes for
    /// that start, and a claim that must hold the task again books none (see [`Body`]).
    pub booked: Option<Timestamp>,
}

/// What a message's body says: a task id, then ` booked <instant>` when the task holds a start
/// its rate key booked for it (SQS mode's rate holds; see `docs/limits.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Body {
    /// The task.
    pub id: TaskId,
    /// The booked start the message comes for.
    pub booked: Option<Timestamp>,
}

/// The word after the id of a message for a booked start.
const BOOKED: &str = "booked";

impl Body {
    /// The body of `text`, or `None` when it names no task (a poison message). Anything after
    /// the id but a booked start is ignored: the claim decides what becomes of the task.
    pub fn parse(text: &str) -> Option<Self> {
        let mut words = text.split_whitespace();
        let id = words.next()?.parse().ok()?;
        let booked = match (words.next(), words.next(), words.next()) {
            (Some(BOOKED), Some(start), None) => start.parse().ok(),
            _ => None,
        };
        Some(Self { id, booked })
    }
}

impl std::fmt::Display for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.booked {
            Some(start) => write!(f, "{} {BOOKED} {}", self.id, start.to_text()),
            None => write!(f, "{}", self.id),
        }
    }
}

impl Delivery {
    /// The message's body.
    pub fn body(&self) -> String {
        Body {
            id: self.id,
            booked: self.booked,
        }
        .to_string()
    }

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
            booked: (task.status == TaskStatus::Pending && task.held == Some(Held::Rate))
                .then_some(task.scheduled_at),
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

    #[test]
    fn a_body_is_a_task_id_and_says_when_its_start_was_booked() {
        let (mut task, now) = task(Duration::from_secs(3));
        let plain = Delivery::of(&task, now).expect("due within the longest delay");
        assert_eq!(plain.body(), task.id.to_string());
        task.held = Some(Held::Rate);
        let booked = Delivery::of(&task, now).expect("due within the longest delay");
        let start = task.scheduled_at;
        assert_eq!(
            booked.body(),
            format!("{} booked {}", task.id, start.to_text())
        );
        let parsed = |text: &str| Body::parse(text);
        assert_eq!(
            parsed(&booked.body()),
            Some(Body {
                id: task.id,
                booked: Some(start)
            })
        );
        let unbooked = |text: String| parsed(&text).map(|b| (b.id, b.booked));
        assert_eq!(unbooked(format!(" {}\n", task.id)), Some((task.id, None)));
        assert_eq!(
            unbooked(format!("{} booked", task.id)),
            Some((task.id, None))
        );
        assert_eq!(
            unbooked(format!("{} booked soon", task.id)),
            Some((task.id, None))
        );
        assert_eq!(unbooked(format!("{} wake", task.id)), Some((task.id, None)));
        let trailing = format!("{} booked {} now", task.id, start.to_text());
        assert_eq!(unbooked(trailing), Some((task.id, None)));
        assert_eq!(parsed("not-a-task"), None);
        assert_eq!(parsed(""), None);
    }
}

//! Why an unfinished task is not running: what `GET /tasks/{id}`, `tasker show` and the
//! dashboard say of a task that waits.

use serde::Serialize;

use super::Tasker;
use crate::clock::Timestamp;
use crate::report::Report;
use crate::store::{PausedTypes, Store, StoreError, WAITING_COUNT_CAP, WaitingCounts};
use crate::task::{Held, Task, TaskId, TaskStatus};

/// Why a task waits, with the instant it stops waiting where one is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "reason",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Waiting {
    /// Created for later: due at `until`.
    Scheduled {
        /// When it becomes due.
        until: Timestamp,
    },
    /// Attempt `after_attempt` failed; the next one is due at `until` (the backoff, or the
    /// wait the other side asked for).
    BackingOff {
        /// When the next attempt becomes due.
        until: Timestamp,
        /// The attempt that failed.
        after_attempt: u32,
    },
    /// Its `concurrencyKey` `key` ran as many tasks as its limit allows when a claim found it
    /// due: held until `until` (the first of those tasks' leases ends), or sooner when one of
    /// them finishes.
    KeyConcurrency {
        /// The concurrency key.
        key: String,
        /// When it is due again at the latest.
        until: Timestamp,
    },
    /// Its `rateKey` `key` had started as many tasks as its rate allows: held until `until`.
    KeyRate {
        /// The rate key.
        key: String,
        /// When it is due again.
        until: Timestamp,
    },
    /// Its receiver's circuit was open (most of the last attempts to `host` failed): given
    /// back unsent, its attempt uncounted, and held until `until`.
    CircuitOpen {
        /// The receiving host, when the payload names one (`sendWebhook`'s `url`).
        host: Option<String>,
        /// When it is due again.
        until: Timestamp,
    },
    /// Due, but its type is paused (since `since`): nothing claims it until it is resumed.
    TypePaused {
        /// When the type was paused.
        since: Timestamp,
    },
    /// Due since `since`: the next claim with room takes it.
    Due {
        /// When it became due.
        since: Timestamp,
    },
    /// Claimed, but its lease ended at `since` without an outcome (the processor stopped or
    /// lost its store): the next claim takes it again, or fails it when that was its last
    /// attempt (`last_attempt`); while its type is paused, nothing does (`type_paused`).
    LeaseExpired {
        /// When the lease ended.
        since: Timestamp,
        /// The attempt was its last: the next claim fails the task instead of running it.
        last_attempt: bool,
        /// Its type is paused: no claim takes it until the type is resumed.
        type_paused: bool,
    },
}

impl Waiting {
    /// Why `task` waits at `now`, given the paused types; none for a running task whose lease
    /// holds, and for a finished one.
    pub fn of(task: &Task, now: Timestamp, paused: &PausedTypes) -> Option<Self> {
        let held_key = match task.held {
            Some(Held::Concurrency) => task.concurrency_key.clone(),
            Some(Held::Rate) => task.rate_key.clone(),
            Some(Held::Circuit) | None => None,
        };
        match task.status {
            TaskStatus::Pending if task.scheduled_at > now && task.held == Some(Held::Circuit) => {
                Some(Self::CircuitOpen {
                    host: crate::handlers::webhook::target_host(&task.payload),
                    until: task.scheduled_at,
                })
            }
            TaskStatus::Pending if task.scheduled_at > now && held_key.is_some() => {
                let (key, until) = (held_key.unwrap_or_default(), task.scheduled_at);
                Some(match task.held {
                    Some(Held::Concurrency) => Self::KeyConcurrency { key, until },
                    _ => Self::KeyRate { key, until },
                })
            }
            TaskStatus::Pending if task.scheduled_at > now => Some(if task.attempts == 0 {
                Self::Scheduled {
                    until: task.scheduled_at,
                }
            } else {
                Self::BackingOff {
                    until: task.scheduled_at,
                    after_attempt: task.attempts,
                }
            }),
            TaskStatus::Pending => Some(match paused.get(&task.task_type) {
                Some(since) => Self::TypePaused { since: *since },
                None => Self::Due {
                    since: task.scheduled_at,
                },
            }),
            TaskStatus::Running => task
                .lease_expires_at
                .filter(|ends| *ends <= now)
                .map(|since| Self::LeaseExpired {
                    since,
                    last_attempt: task.attempts >= task.max_attempts,
                    type_paused: paused.contains_key(&task.task_type),
                }),
            TaskStatus::Succeeded | TaskStatus::Failed | TaskStatus::Cancelled => None,
        }
    }

    /// One line for people: the reason and its instant.
    pub fn describe(&self) -> String {
        match self {
            Self::Scheduled { until } => format!("scheduled for {until}"),
            Self::BackingOff {
                until,
                after_attempt,
            } => format!("backing off until {until} after attempt {after_attempt} failed"),
            Self::KeyConcurrency { key, until } => format!(
                "concurrency key {key:?} is at its limit; held until {until} at the latest \
                 (sooner when one of its running tasks ends)"
            ),
            Self::KeyRate { key, until } => {
                format!("rate key {key:?} is at its rate; held until {until}")
            }
            Self::CircuitOpen { host, until } => match host {
                Some(host) => format!("the circuit for {host} is open; held until {until}"),
                None => format!("its receiver's circuit is open; held until {until}"),
            },
            Self::TypePaused { since } => format!("its type is paused (since {since})"),
            Self::Due { since } => format!("due since {since}, waiting for a processor"),
            Self::LeaseExpired {
                since,
                last_attempt,
                type_paused,
            } => {
                let next = match (type_paused, last_attempt) {
                    (true, _) => "its type is paused, so nothing takes it until resumed",
                    (false, true) => "it was the last attempt: the next claim fails it",
                    (false, false) => "due again",
                };
                format!("its lease ended at {since} without an outcome; {next}")
            }
        }
    }

    /// `task` as the API shows it read by id: its fields and `waiting` (the reason with its
    /// instants and [`Waiting::describe`] as `message`), or null.
    pub fn view<'a>(task: &'a Task, waiting: Option<&'a Self>) -> TaskWithWaiting<'a> {
        TaskWithWaiting {
            task,
            waiting: waiting.map(|reason| Described {
                message: reason.describe(),
                reason,
            }),
        }
    }
}

/// A task read by id, as the API, `tasker show --json` and the TypeScript client see it.
#[derive(Debug, Serialize)]
pub struct TaskWithWaiting<'a> {
    #[serde(flatten)]
    task: &'a Task,
    waiting: Option<Described<'a>>,
}

/// A page of a listing, each task with why it waits: as `GET /tasks` and `tasker list --json`
/// answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PageWithWaiting<'a> {
    tasks: Vec<TaskWithWaiting<'a>>,
    next_cursor: Option<String>,
}

impl<'a> PageWithWaiting<'a> {
    /// `tasks` with their reasons (in the same order) and the next page's cursor.
    pub fn new(tasks: &'a [Task], waiting: &'a [Option<Waiting>], next: Option<String>) -> Self {
        Self {
            tasks: tasks
                .iter()
                .zip(waiting)
                .map(|(task, waiting)| Waiting::view(task, waiting.as_ref()))
                .collect(),
            next_cursor: next,
        }
    }
}

/// A reason and its line for people.
#[derive(Debug, Serialize)]
struct Described<'a> {
    #[serde(flatten)]
    reason: &'a Waiting,
    message: String,
}

impl<S: Store> Tasker<S> {
    /// The task with `id` and why it waits now, if it does.
    pub async fn get_waiting(
        &self,
        id: TaskId,
    ) -> Result<(Task, Option<Waiting>), super::TaskerError> {
        let task = self.get(id).await?;
        let waiting = self
            .waiting_of(std::slice::from_ref(&task))
            .await
            .pop()
            .flatten();
        Ok((task, waiting))
    }

    /// Why each of `tasks` waits now, in order. The paused types are read once, and only when
    /// one of them is due; they are this process's copy (at most
    /// [`super::PAUSES_SEEN_WITHIN`] old), and when they cannot be read the tasks are still
    /// answered, as if no type were paused.
    /// The unfinished tasks not running now, by why they wait (`None` where the store does
    /// not count them). A failed read of the paused types counts their due tasks as `due`.
    pub async fn waiting_tally(&self) -> Result<Option<WaitingTally>, StoreError> {
        let counts = self
            .store
            .task_count_waiting(self.clock.now(), WAITING_COUNT_CAP)
            .await?;
        let Some(counts) = counts else {
            return Ok(None);
        };
        let paused = if counts.due_by_type.is_empty() {
            PausedTypes::new()
        } else {
            self.paused_now().await.unwrap_or_else(|err| {
                tracing::warn!(error = %Report(&err), "could not read the paused types; waiting counts leave them out");
                PausedTypes::new()
            })
        };
        Ok(Some(WaitingTally::of(counts, &paused)))
    }

    pub async fn waiting_of(&self, tasks: &[Task]) -> Vec<Option<Waiting>> {
        let now = self.clock.now();
        let due = tasks
            .iter()
            .any(|task| task.due_at().is_some_and(|due| due <= now));
        let paused = if due {
            self.paused_now().await.unwrap_or_else(|err| {
                tracing::warn!(error = %Report(&err), "could not read the paused types; waiting reasons leave them out");
                PausedTypes::new()
            })
        } else {
            PausedTypes::new()
        };
        tasks
            .iter()
            .map(|task| Waiting::of(task, now, &paused))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::task::NewTask;

    fn at(seconds: u64) -> Timestamp {
        let t0: Timestamp = "2030-01-01T00:00:00Z".parse().expect("a timestamp");
        t0.plus(Duration::from_secs(seconds))
    }

    fn task(status: TaskStatus, attempts: u32, scheduled: u64) -> Task {
        let mut new = NewTask::new("t", "{}");
        new.scheduled_at = Some(at(scheduled));
        let mut task = Task::from_new(new, at(0));
        task.status = status;
        task.attempts = attempts;
        task
    }

    #[test]
    fn each_unfinished_task_says_why_it_waits() {
        let none = PausedTypes::new();
        let paused = PausedTypes::from([("t".to_owned(), at(5))]);
        let now = at(10);
        let later = task(TaskStatus::Pending, 0, 60);
        assert_eq!(
            Waiting::of(&later, now, &paused),
            Some(Waiting::Scheduled { until: at(60) }),
            "a pause does not matter before the task is due"
        );
        assert_eq!(
            Waiting::of(&task(TaskStatus::Pending, 2, 60), now, &none),
            Some(Waiting::BackingOff {
                until: at(60),
                after_attempt: 2
            })
        );
        let due = task(TaskStatus::Pending, 0, 3);
        assert_eq!(
            Waiting::of(&due, now, &paused),
            Some(Waiting::TypePaused { since: at(5) })
        );
        assert_eq!(
            Waiting::of(&due, now, &none),
            Some(Waiting::Due { since: at(3) })
        );
        let mut running = task(TaskStatus::Running, 1, 0);
        running.lease_expires_at = Some(at(30));
        assert_eq!(Waiting::of(&running, now, &none), None, "running");
        assert_eq!(
            Waiting::of(&running, at(30), &none),
            Some(Waiting::LeaseExpired {
                since: at(30),
                last_attempt: false,
                type_paused: false
            })
        );
        running.attempts = running.max_attempts;
        let last = Waiting::of(&running, at(30), &paused);
        assert_eq!(
            last,
            Some(Waiting::LeaseExpired {
                since: at(30),
                last_attempt: true,
                type_paused: true
            })
        );
        assert!(
            last.map(|w| w.describe())
                .unwrap_or_default()
                .ends_with("its type is paused, so nothing takes it until resumed")
        );
        for finished in [
            TaskStatus::Succeeded,
            TaskStatus::Failed,
            TaskStatus::Cancelled,
        ] {
            assert_eq!(Waiting::of(&task(finished, 1, 0), now, &paused), None);
        }
    }

    #[test]
    fn the_reason_is_tagged_json_with_its_instant() {
        let waiting = Waiting::BackingOff {
            until: at(60),
            after_attempt: 2,
        };
        assert_eq!(
            serde_json::to_value(&waiting).ok(),
            Some(serde_json::json!({
                "reason": "backingOff",
                "until": "2030-01-01T00:01:00.000Z",
                "afterAttempt": 2,
            }))
        );
        assert_eq!(
            serde_json::to_value(Waiting::view(
                &task(TaskStatus::Pending, 2, 60),
                Some(&waiting)
            ))
            .ok()
            .map(|view| view["waiting"].clone()),
            Some(serde_json::json!({
                "reason": "backingOff",
                "until": "2030-01-01T00:01:00.000Z",
                "afterAttempt": 2,
                "message": "backing off until 2030-01-01T00:01:00.000Z after attempt 2 failed",
            }))
        );
    }
}

/// The unfinished tasks that are not running, by why they wait, as `GET /stats` and the
/// dashboard show them: one count per [`Waiting`] reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WaitingTally {
    /// Created for later.
    pub scheduled: u64,
    /// Between attempts.
    pub backing_off: u64,
    /// Held for their concurrency key.
    pub key_concurrency: u64,
    /// Held for their rate key.
    pub key_rate: u64,
    /// Held while their receiver's circuit is open.
    pub circuit_open: u64,
    /// Due, of a paused type.
    pub type_paused: u64,
    /// Due, waiting for a processor.
    pub due: u64,
    /// Running, their lease ended without an outcome.
    pub lease_expired: u64,
    /// False when the count stopped at its cap ([`WAITING_COUNT_CAP`] tasks read): the counts
    /// are then at least what they say.
    pub exact: bool,
}

impl WaitingTally {
    /// The store's `counts`, their due tasks split by the `paused` types.
    pub fn of(counts: WaitingCounts, paused: &PausedTypes) -> Self {
        let (mut type_paused, mut due) = (0, 0);
        for (task_type, count) in &counts.due_by_type {
            if paused.contains_key(task_type) {
                type_paused += count;
            } else {
                due += count;
            }
        }
        Self {
            scheduled: counts.scheduled,
            backing_off: counts.backing_off,
            key_concurrency: counts.key_concurrency,
            key_rate: counts.key_rate,
            circuit_open: counts.circuit_open,
            type_paused,
            due,
            lease_expired: counts.lease_expired,
            exact: counts.exact,
        }
    }
}

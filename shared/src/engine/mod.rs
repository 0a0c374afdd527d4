//! The engine: [`Tasker`] over a store and a registry of task types. Its [`operations`] create,
//! read, cancel, retry and list tasks; [`dispatch`] runs the queue, one [`attempt`] per
//! claimed task; SQS mode's [`worker`] and [`mover`]; [`schedules`], [`flow`] control and
//! [`cleanup`].

mod attempt;
mod cleanup;
mod dispatch;
mod due_later;
mod fit;
mod flow;
mod mover;
mod operations;
mod outcomes;
mod refill;
mod schedules;
mod settings;
mod settling;
mod unsent;
mod waiting;
mod worker;

pub use cleanup::CleanupSummary;
pub use fit::LeaseTooLong;
pub use flow::{PAUSES_SEEN_WITHIN, TypeView, TypesView};
pub use mover::{MoveSummary, OVERDUE, RESEND_AFTER};
pub use operations::{MAX_LIST_LIMIT, RetriedPage, Stats};
pub use outcomes::{Outcome, Outcomes, RunSummary};
pub use schedules::{FireSummary, ScheduleView, ticks_to_fire};
pub use settings::{PollSettings, ProcessorSettings};
pub use waiting::{PageWithWaiting, TaskWithWaiting, Waiting, WaitingTally};
pub use worker::{Handled, Message, Work, WorkSummary};

use std::sync::Arc;

use crate::clock::{Clock, SystemClock, Timestamp};
use crate::handlers::{Registry, TypeSettings};
use crate::push::{Delivery, Push};
use crate::store::{KeyLimits, Leases, StoreError};
use crate::task::{Task, ValidationError};

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TaskerError {
    /// The create request breaks a field rule.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// No handler is registered for the type.
    #[error("`type` {0:?} is not a registered task type")]
    UnknownType(String),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No schedule has the name.
    #[error("schedule {0:?} not found")]
    ScheduleNotFound(String),
    /// A schedule with the name exists.
    #[error("a schedule named {0:?} exists; change it with PUT /schedules/{0}")]
    ScheduleExists(String),
    /// SQS mode's mover was asked to run without a queue to send to.
    #[error(
        "no queue is configured: the mover runs only with TASKER_DISPATCH=sqs and TASKER_QUEUE_URL"
    )]
    NoQueue,
    /// A task type's claims outlast what this home gives an attempt.
    #[error(transparent)]
    LeaseTooLong(#[from] LeaseTooLong),
}

impl TaskerError {
    /// A short name for the kind of failure, as Lambda's `errorType` wants it.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "InvalidTask",
            Self::UnknownType(_) => "UnknownTaskType",
            Self::Store(store) if store.is_retryable() => "StoreUnavailable",
            Self::Store(_) => "StoreError",
            Self::NoQueue => "NoQueue",
            Self::LeaseTooLong(_) => "LeaseTooLong",
            Self::ScheduleNotFound(_) => "ScheduleNotFound",
            Self::ScheduleExists(_) => "ScheduleExists",
        }
    }
}

/// Tasker over the store `S`.
#[derive(Clone)]
pub struct Tasker<S> {
    store: S,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    settings: ProcessorSettings,
    jitter: fn() -> f64,
    due_now: Arc<tokio::sync::Notify>,
    /// When tasks created through this process for later fall due.
    due_later: Arc<due_later::DueLater>,
    leases: Leases,
    /// SQS mode: where messages for tasks due soon go.
    push: Option<Arc<dyn Push>>,
    /// SQS mode's mover: what it sent, so it does not send again while a message is on its way.
    moved: Arc<mover::Sent>,
    /// SQS mode: messages a send could not deliver, tried again by [`Tasker::resend`].
    unsent: Arc<unsent::Unsent>,
    /// Schedules this process cannot fire, left to others for a while.
    held_schedules: Arc<schedules::Held>,
    /// The paused task types as this process last read them.
    pauses: Arc<flow::Pauses>,
    /// The limits per key every claim keeps.
    key_limits: Arc<KeyLimits>,
}

impl<S> Tasker<S> {
    /// Tasker over `store` with the system clock.
    pub fn new(store: S, registry: Registry, settings: ProcessorSettings) -> Self {
        Self::with_clock(store, registry, settings, Arc::new(SystemClock))
    }

    /// Tasker with an injected clock.
    pub fn with_clock(
        store: S,
        registry: Registry,
        settings: ProcessorSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        // Each claim lasts its type's timeout and the grace: a handler never outlives its
        // lease, and a dead processor's tasks are due again soon after their timeouts.
        let grace = settings.lease_grace;
        let leases = Leases::by_type(
            TypeSettings::default().timeout + grace,
            registry
                .types()
                .filter_map(|name| {
                    let timeout = registry.settings(name)?.timeout;
                    Some((name.to_owned(), timeout + grace))
                })
                .collect(),
        );
        Self {
            store,
            registry: Arc::new(registry),
            clock,
            settings,
            jitter: rand::random::<f64>,
            due_now: Arc::new(tokio::sync::Notify::new()),
            due_later: Arc::default(),
            leases,
            push: None,
            moved: Arc::default(),
            unsent: Arc::default(),
            held_schedules: Arc::default(),
            pauses: Arc::default(),
            key_limits: Arc::default(),
        }
    }

    /// Claims keep `limits` per `concurrencyKey` and `rateKey`.
    pub fn with_key_limits(mut self, limits: Arc<KeyLimits>) -> Self {
        self.key_limits = limits;
        self
    }

    /// How many tasks this Tasker runs at once.
    pub fn concurrency(&self) -> usize {
        self.settings.concurrency.max(1)
    }

    /// The limits per key this Tasker's claims keep.
    pub fn key_limits(&self) -> &KeyLimits {
        &self.key_limits
    }

    /// SQS mode: a message for each task due within SQS's longest delay goes to `push` when it
    /// is created or retried (see [`crate::push`]).
    pub fn with_push(mut self, push: Arc<dyn Push>) -> Self {
        self.push = Some(push);
        self
    }

    /// True in SQS mode.
    pub fn pushes(&self) -> bool {
        self.push.is_some()
    }

    /// Sends a message for each of `tasks` due within SQS's longest delay (SQS mode; nothing
    /// otherwise). A failed send is logged and answered `false` (the tasks are stored, and the
    /// mover sends them when they are late); `true` when every message needed went out.
    pub async fn deliver(&self, tasks: &[Task]) -> bool {
        let now = self.clock.now();
        let deliveries: Vec<Delivery> = tasks
            .iter()
            .filter_map(|task| Delivery::of(task, now))
            .collect();
        self.send(&deliveries).await
    }

    /// Sends `deliveries` (SQS mode; nothing otherwise), as [`Tasker::deliver`] does. What
    /// could not be sent is kept and tried again by [`Tasker::resend`].
    pub(crate) async fn send(&self, deliveries: &[Delivery]) -> bool {
        let Some(push) = &self.push else { return true };
        if deliveries.is_empty() {
            return true;
        }
        match push.send(deliveries).await {
            Ok(()) => {
                // The queue answers again: what an earlier send kept may go too (the enqueue
                // Lambda has no other moment to send it).
                self.resend().await;
                true
            }
            Err(err) => {
                let again_in = self.unsent.keep(deliveries, self.clock.now());
                tracing::warn!(
                    error = %crate::report::Report(&err),
                    tasks = deliveries.len(),
                    again_in_ms = again_in.as_millis(),
                    "could not send to the queue; this process tries again (the mover sends them if it stops)"
                );
                false
            }
        }
    }

    /// Sends again what earlier sends could not, once their wait is over (SQS mode; nothing
    /// otherwise). Cheap when nothing waits: `tasker serve` calls it every second, `tasker
    /// worker` at each receive, and every send that succeeds.
    pub async fn resend(&self) {
        let Some(push) = &self.push else { return };
        let now = self.clock.now();
        let due = self.unsent.take_due(now);
        if due.is_empty() {
            return;
        }
        match push.send(&due).await {
            Ok(()) => {
                self.unsent.sent();
                tracing::info!(tasks = due.len(), "sent what an earlier send could not");
            }
            Err(err) => {
                let again_in = self.unsent.failed_again(&due, self.clock.now());
                tracing::warn!(
                    error = %crate::report::Report(&err),
                    tasks = due.len(),
                    again_in_ms = again_in.as_millis(),
                    "could not send to the queue again; this process tries again (the mover sends them if it stops)"
                );
            }
        }
    }

    /// Replaces the backoff's random draw in `[0, 1)` (tests pin it to check exact schedules).
    pub fn with_jitter(mut self, jitter: fn() -> f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The handler registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The current time of this Tasker's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

#[cfg(test)]
mod dispatch_tests;
#[cfg(test)]
mod flow_tests;
#[cfg(test)]
mod tests;

//! The operations the API, the dashboard and the CLI call: create, read, cancel, retry, list,
//! count; each one store call, with the validation and the wake-ups around it.

use serde::Serialize;

/// Creates of one batch written at once.
pub const BATCH_CONCURRENCY: usize = 8;

use super::{Tasker, TaskerError};
use crate::clock::Timestamp;
use crate::store::{
    Backlog, Created, ListFilter, ListKey, ListPage, LowerBound, StatusCounts, Store, StoreError,
    TaskPage,
};
use crate::task::{NewTask, Task, TaskId};

/// Largest page a listing returns.
pub const MAX_LIST_LIMIT: usize = 100;

/// Counts per status and the backlog, as `GET /stats` and `tasker stats` show them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Tasks in each status.
    pub counts: StatusCounts,
    /// Tasks due now and not running (pending past their time, or with an expired lease).
    pub due: u64,
    /// Seconds since the oldest of them became due; `None` when nothing is due.
    pub oldest_due_age_seconds: Option<u64>,
    /// True when every number is exact as of the call (SQLite); see docs/api.md#stats.
    pub exact: bool,
    /// When pending, running, `due` and the oldest due age were seen, when not by this call:
    /// a processor's last look at the queue (DynamoDB).
    pub active_seen_at: Option<Timestamp>,
    /// Numbers that are at least what is shown (their reads reached a cap).
    pub lower_bounds: Vec<LowerBound>,
    /// The unfinished tasks not running, by why they wait; `None` on DynamoDB.
    pub waiting: Option<super::waiting::WaitingTally>,
}

/// What one page of a bulk retry of failed tasks did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetriedPage {
    /// Tasks put back in the queue.
    pub retried: Vec<TaskId>,
    /// Tasks that could not be, with why (a reference held by an active task, a contended
    /// guard, a passing outage): one never stops the rest.
    pub skipped: Vec<(TaskId, String)>,
    /// Where the next page starts; `None` after the last.
    pub next: Option<ListKey>,
}

/// Retries one bulk retry has in flight at once.
const RETRY_CONCURRENCY: usize = 8;

impl<S: Store> Tasker<S> {
    /// Validates and stores a new task with its type's default attempts and retry policy; a
    /// repeated idempotency key returns the task it made the first time.
    pub async fn create(&self, new: NewTask) -> Result<Created, TaskerError> {
        let created = self.create_held(new).await?;
        if let Created::New(task) = &created {
            self.deliver(std::slice::from_ref(task)).await;
        }
        Ok(created)
    }

    /// Gives `new` its payload `url`'s host as both keys when its type's limits say so
    /// (`keysFromHost`) and it has none; a host no key may be (too long) leaves it without.
    fn default_keys(&self, new: &mut NewTask) {
        let keyless = new.concurrency_key.is_none() && new.rate_key.is_none();
        if !keyless || !self.key_limits.keys_from_host(&new.task_type) {
            return;
        }
        let Some(host) = crate::handlers::webhook::target_host(&new.payload) else {
            return;
        };
        if crate::task::validate_key("concurrencyKey", &host).is_ok() {
            new.concurrency_key = Some(host.clone());
            new.rate_key = Some(host);
        }
    }

    /// Creates each of `news` as [`Tasker::create`] does, up to [`BATCH_CONCURRENCY`] at
    /// once, answering each one's outcome in order; one never stops the others. In SQS mode
    /// the new tasks' messages go out together afterwards, ten per call.
    pub async fn create_many(&self, news: Vec<NewTask>) -> Vec<Result<Created, TaskerError>> {
        use futures::StreamExt;
        let outcomes: Vec<Result<Created, TaskerError>> = futures::stream::iter(news)
            .map(|new| self.create_held(new))
            .buffered(BATCH_CONCURRENCY)
            .collect()
            .await;
        let fresh: Vec<Task> = outcomes
            .iter()
            .filter_map(|outcome| match outcome {
                Ok(Created::New(task)) => Some(task.clone()),
                _ => None,
            })
            .collect();
        self.deliver(&fresh).await;
        outcomes
    }

    /// [`Tasker::create`] without its message in SQS mode, for a caller that sends the
    /// messages itself ([`Tasker::deliver`]).
    pub async fn create_held(&self, mut new: NewTask) -> Result<Created, TaskerError> {
        new.validate()?;
        self.default_keys(&mut new);
        let Some(settings) = self.registry.settings(&new.task_type) else {
            return Err(TaskerError::UnknownType(new.task_type));
        };
        self.registry.check_payload(&new.task_type, &new.payload)?;
        let now = self.clock.now();
        let task = Task::from_new_with(new, now, settings.max_attempts, settings.retry);
        let created = self.store.task_create(task).await?;
        if let Created::New(task) = &created {
            if task.scheduled_at <= now {
                self.due_now.notify_one();
            } else {
                // A millisecond late rather than early: a look before the instant finds it
                // not yet due.
                let wait = task.scheduled_at.since(now) + std::time::Duration::from_millis(1);
                if let Some(at) = std::time::Instant::now().checked_add(wait) {
                    self.due_later.note(at);
                }
            }
        }
        Ok(created)
    }

    /// The task with `id`.
    pub async fn get(&self, id: TaskId) -> Result<Task, TaskerError> {
        self.store
            .task_get(id)
            .await?
            .ok_or(TaskerError::Store(StoreError::NotFound(id)))
    }

    /// Cancels the pending task `id`.
    pub async fn cancel(&self, id: TaskId) -> Result<Task, TaskerError> {
        Ok(self.store.task_cancel(id, self.clock.now()).await?)
    }

    /// Cancels every pending task with `reference_uid` (and `task_type`, when given).
    pub async fn cancel_by_reference(
        &self,
        reference_uid: &str,
        task_type: Option<&str>,
    ) -> Result<Vec<TaskId>, TaskerError> {
        let now = self.clock.now();
        Ok(self
            .store
            .task_cancel_by_reference(reference_uid, task_type, now)
            .await?)
    }

    /// Puts the failed or cancelled task `id` back in the queue, due now, with fresh attempts.
    pub async fn retry(&self, id: TaskId) -> Result<Task, TaskerError> {
        let task = self.store.task_retry(id, self.clock.now()).await?;
        self.due_now.notify_one();
        self.deliver(std::slice::from_ref(&task)).await;
        Ok(task)
    }

    /// Tasks finished per minute (SQLite) or hour (DynamoDB) up to now.
    pub async fn throughput(&self) -> Result<crate::store::Throughput, TaskerError> {
        Ok(self.store.queue_throughput(self.clock.now()).await?)
    }

    /// Due tasks now and the oldest due instant.
    pub async fn backlog(&self) -> Result<Backlog, TaskerError> {
        Ok(self.store.queue_backlog(self.clock.now()).await?)
    }

    /// Up to `limit` (at most [`MAX_LIST_LIMIT`]) tasks matching `filter`, newest first, below
    /// `after`.
    pub async fn list(
        &self,
        filter: &ListFilter,
        after: Option<ListKey>,
        limit: usize,
    ) -> Result<TaskPage, TaskerError> {
        let page = ListPage {
            filter,
            after: after.as_ref(),
            limit: limit.min(MAX_LIST_LIMIT),
            now: self.clock.now(),
        };
        Ok(self.store.task_list(page).await?)
    }

    /// Retries one page of up to `limit` failed tasks (of `task_type`, when given) below
    /// `after`, several at once.
    pub async fn retry_failed_page(
        &self,
        task_type: Option<String>,
        after: Option<ListKey>,
        limit: usize,
    ) -> Result<RetriedPage, TaskerError> {
        use futures::StreamExt;
        let filter = ListFilter {
            status: Some(crate::task::TaskStatus::Failed),
            task_type,
            ..ListFilter::default()
        };
        let page = self.list(&filter, after, limit).await?;
        let outcomes: Vec<(TaskId, Result<Task, TaskerError>)> = futures::stream::iter(page.tasks)
            .map(|task| async move { (task.id, self.retry(task.id).await) })
            .buffer_unordered(RETRY_CONCURRENCY)
            .collect()
            .await;
        let mut done = RetriedPage {
            next: page.next,
            ..RetriedPage::default()
        };
        for (id, outcome) in outcomes {
            match outcome {
                Ok(_) => done.retried.push(id),
                Err(err) => done.skipped.push((id, err.to_string())),
            }
        }
        Ok(done)
    }

    /// Counts per status and the backlog, in reads that do not grow with the table.
    pub async fn stats(&self) -> Result<Stats, TaskerError> {
        let now = self.clock.now();
        let overview = self.store.queue_overview(now).await?;
        // The counts per status stand without the reasons.
        let waiting = self.waiting_tally().await.unwrap_or_else(|err| {
            tracing::warn!(error = %crate::report::Report(&err), "could not count the waiting tasks by reason");
            None
        });
        Ok(Stats {
            counts: overview.counts,
            due: overview.backlog.due,
            oldest_due_age_seconds: overview
                .backlog
                .oldest_due_at
                .map(|at| now.since(at).as_secs()),
            exact: overview.exact,
            active_seen_at: overview.active_seen_at,
            lower_bounds: overview.lower_bounds,
            waiting,
        })
    }
}

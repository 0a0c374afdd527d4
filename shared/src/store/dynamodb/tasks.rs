//! Task items: reading them, creating them, and writing every [`Transition`] as an update
//! conditioned on the item being unchanged since it was read.

use std::collections::HashMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};

use super::DynamoStore;
use super::expr;
use super::guards;
use super::item::{from_item, to_item};
use super::table::{Table, Transact, Write};
use crate::clock::Timestamp;
use crate::store::transition::new_lease_token;
use crate::store::{Created, Refused, StoreError, Transition};
use crate::task::{Task, TaskId};

/// How old a create may be when it writes its task; older ones give up (see `due::MARGIN`).
const CREATE_DEADLINE: Duration = Duration::from_secs(60);
/// Concurrent single-item writes one call issues (cancels of a reference's tasks).
const WRITE_CONCURRENCY: usize = 16;
/// How often a transition is computed again from the item a failed condition returned,
/// before the caller is told to try again.
const TRANSITION_TRIES: usize = 4;

/// What became of a transition.
#[derive(Debug)]
pub enum Applied {
    /// Written: the task as it is stored now.
    Written(Task),
    /// It does not apply to the task as it is now (given).
    Refused(Task, Refused),
    /// The task does not exist.
    Gone,
}

/// The task `id`, read consistently.
pub async fn get(table: &Table, id: TaskId) -> Result<Option<Task>, StoreError> {
    table.get(&id.to_string()).await?.map(from_item).transpose()
}

/// The tasks with `ids` that exist, by id; `consistent` picks strongly consistent reads.
pub async fn get_many(
    table: &Table,
    ids: &[TaskId],
    consistent: bool,
) -> Result<HashMap<TaskId, Task>, StoreError> {
    let keys: Vec<String> = ids.iter().map(TaskId::to_string).collect();
    let mut found = HashMap::with_capacity(ids.len());
    for item in table.batch_get(&keys, consistent).await? {
        let task = from_item(item)?;
        found.insert(task.id, task);
    }
    Ok(found)
}

impl DynamoStore {
    /// The task `id`, read consistently.
    pub async fn task_get(&self, id: TaskId) -> Result<Option<Task>, StoreError> {
        get(&self.table, id).await
    }

    /// Stores the new `task` with its guards; see [`crate::store::Store::task_create`].
    pub async fn task_create(&self, task: Task) -> Result<Created, StoreError> {
        let created = create(&self.table, self.ttl_after, task).await?;
        self.due.entry_written(created.task());
        Ok(created)
    }

    /// Cancels the pending task `id`; see [`crate::store::Store::task_cancel`].
    pub async fn task_cancel(&self, id: TaskId, now: Timestamp) -> Result<Task, StoreError> {
        let cancel = Transition::Cancel { now };
        let cancelled = self.apply_to(id, &cancel).await;
        self.flush_tally().await;
        cancelled
    }

    /// Cancels every pending task with `reference_uid` (and `task_type`); the ids cancelled.
    pub async fn task_cancel_by_reference(
        &self,
        reference_uid: &str,
        task_type: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<TaskId>, StoreError> {
        let cancelled = self.cancel_reference(reference_uid, task_type, now).await;
        self.flush_tally().await;
        cancelled
    }

    /// Retries the failed or cancelled task `id`; see [`crate::store::Store::task_retry`].
    pub async fn task_retry(&self, id: TaskId, now: Timestamp) -> Result<Task, StoreError> {
        let task = get(&self.table, id)
            .await?
            .ok_or(StoreError::NotFound(id))?;
        let retried = self.retry_read(task, now).await;
        self.flush_tally().await;
        let retried = retried?;
        self.due.entry_written(&retried);
        Ok(retried)
    }
}

/// Stores the new `task` with its guards.
async fn create(table: &Table, ttl_after: Duration, task: Task) -> Result<Created, StoreError> {
    if let Some(key) = &task.idempotency_key {
        if let Some(existing) = guards::idempotent_replay(table, &task, key).await? {
            return Ok(existing);
        }
    }
    let mut written = guards::take_reference(table, &task, task.created_at).await;
    if written.is_ok() && Timestamp::now_utc().since(task.created_at) > CREATE_DEADLINE {
        // The due-queue entry is keyed by the creation instant: one that lands much later
        // could fall below a watermark (see `due::MARGIN`) and never be claimed.
        written = Err(StoreError::unavailable(
            "the create took too long to reach DynamoDB; try again",
        ));
    }
    if written.is_ok() {
        written = match table
            .put(to_item(&task, ttl_after)?, expr::new_item())
            .await
        {
            Ok(Write::Done(())) | Ok(Write::ConditionFailed(None)) => Ok(()),
            Ok(Write::ConditionFailed(Some(item))) => {
                let existing = from_item(item)?;
                // A fresh ULID is found only by an SDK retry of our own landed put. A derived
                // id (a schedule's tick) finds the task an earlier create stored, maybe
                // another processor's identical one: it is reported as existing, even in the
                // rare case that it was our own retried put (the mover then sends its message
                // late, in SQS mode).
                if existing != task || task.schedule_name.is_some() {
                    return Ok(Created::Existing(existing));
                }
                Ok(())
            }
            Err(err) => Err(err),
        };
    }
    if let Err(err) = written {
        // Free the guards at once rather than leave them naming a task that does not exist.
        if let Err(release) = guards::release_all(table, &task).await {
            tracing::warn!(error = %crate::report::Report(&release), task_id = %task.id, "could not release the guards");
        }
        return Err(err);
    }
    Ok(Created::New(task))
}

/// The task a transition wrote, or the caller's error for why it did not.
pub fn written(applied: Applied, id: TaskId, transition: &Transition) -> Result<Task, StoreError> {
    match applied {
        Applied::Written(task) => Ok(task),
        Applied::Refused(_, refused) => Err(transition.refusal(id, refused)),
        Applied::Gone => Err(transition.missing(id)),
    }
}

impl DynamoStore {
    /// Writes `transition` over `before`, the task as read: the update sets what the transition
    /// changes, conditioned on the item being unchanged since. When it changed, the transition is
    /// computed again from the item as it is now.
    pub(super) async fn apply(
        &self,
        mut before: Task,
        transition: &Transition,
    ) -> Result<Applied, StoreError> {
        let (table, ttl_after) = (&self.table, self.ttl_after);
        for _ in 0..TRANSITION_TRIES {
            let after = match transition.apply(&before) {
                Ok(after) => after,
                Err(refused) => return Ok(Applied::Refused(before, refused)),
            };
            let (old, new) = (to_item(&before, ttl_after)?, to_item(&after, ttl_after)?);
            let update = expr::changes(&old, &new);
            match table
                .update(&before.id.to_string(), update, expr::unchanged(&old))
                .await?
            {
                Write::Done(()) => {
                    self.tally.record(&before, &after);
                    return Ok(Applied::Written(after));
                }
                Write::ConditionFailed(None) => return Ok(Applied::Gone),
                Write::ConditionFailed(Some(item)) => {
                    let current = from_item(item)?;
                    // An SDK retry of this very write, whose first try landed.
                    if current == after {
                        self.tally.record(&before, &after);
                        return Ok(Applied::Written(after));
                    }
                    before = current;
                }
            }
        }
        Err(StoreError::unavailable(format!(
            "task {} kept changing while it was written; try again",
            before.id
        )))
    }

    /// Writes `transition` over the task `id` as it is now.
    async fn apply_to(&self, id: TaskId, transition: &Transition) -> Result<Task, StoreError> {
        let Some(before) = get(&self.table, id).await? else {
            return Err(transition.missing(id));
        };
        written(self.apply(before, transition).await?, id, transition)
    }

    /// Retries the failed or cancelled task `before` (read just now). A task with a reference takes it again first, then
    /// flips the task and re-versions the guard in one transaction: a create or another retry that
    /// read the guard before the flip fails its own conditional write instead of becoming a second
    /// active holder.
    async fn retry_read(&self, before: Task, now: Timestamp) -> Result<Task, StoreError> {
        let (table, ttl_after) = (&self.table, self.ttl_after);
        let id = before.id;
        let transition = Transition::Retry { now };
        let after = transition
            .apply(&before)
            .map_err(|refused| transition.refusal(id, refused))?;
        let Some(reference) = before.reference_uid.clone() else {
            return written(self.apply(before, &transition).await?, id, &transition);
        };
        guards::take_reference(table, &before, now).await?;
        let old = to_item(&before, ttl_after)?;
        let writes = vec![
            guards::retake_reference(table, &before, &reference, now)?,
            table.update_in_transaction(
                &id.to_string(),
                expr::changes(&old, &to_item(&after, ttl_after)?),
                expr::unchanged(&old),
            )?,
        ];
        let failed = match table.transact(writes, &new_lease_token()).await? {
            Transact::Done => {
                self.tally.record(&before, &after);
                return Ok(after);
            }
            Transact::ConditionsFailed(failed) => failed,
        };
        if failed.first() == Some(&true) {
            // Another create or retry took the reference in between.
            return Err(
                match guards::reference_holder(table, &before.task_type, &reference).await? {
                    Some(existing) => StoreError::Duplicate { existing },
                    None => StoreError::unavailable("the reference changed; try again"),
                },
            );
        }
        // The task changed since it was read.
        let current = get(table, id).await?.ok_or(StoreError::NotFound(id))?;
        match transition.apply(&current) {
            Err(refused) => Err(transition.refusal(id, refused)),
            Ok(_) => Err(StoreError::unavailable(format!(
                "task {id} changed while it was retried; try again"
            ))),
        }
    }

    /// Cancels every pending task with `reference_uid` (and `task_type`); the ids cancelled.
    async fn cancel_reference(
        &self,
        reference_uid: &str,
        task_type: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<TaskId>, StoreError> {
        let table = &self.table;
        let mut ids = table.reference_ids(reference_uid, task_type).await?;
        // The index is eventually consistent; the guard item is read consistently, so a task
        // created a moment ago is found too when the type is known.
        if let Some(task_type) = task_type {
            let holder = guards::reference_holder(table, task_type, reference_uid).await?;
            if let Some(holder) = holder.filter(|holder| !ids.contains(holder)) {
                ids.push(holder);
            }
        }
        // The index holds keys only: read the tasks, and write only to the pending ones.
        let pending: Vec<Task> = get_many(table, &ids, true)
            .await?
            .into_values()
            .filter(|task| task.status == crate::task::TaskStatus::Pending)
            .collect();
        let transition = Transition::Cancel { now };
        let cancelled: Vec<Applied> = futures::stream::iter(pending)
            .map(|task| self.apply(task, &transition))
            .buffered(WRITE_CONCURRENCY)
            .try_collect()
            .await?;
        let mut ids: Vec<TaskId> = cancelled
            .into_iter()
            .filter_map(|applied| match applied {
                Applied::Written(task) => Some(task.id),
                Applied::Refused(..) | Applied::Gone => None,
            })
            .collect();
        ids.sort();
        Ok(ids)
    }
}

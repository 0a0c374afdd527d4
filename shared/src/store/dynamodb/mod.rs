//! The DynamoDB backend: one table keyed by task id, a sparse sharded queue index, a reference
//! index, and a conditional write for every state change.

pub mod item;
pub mod schema;

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::BehaviorVersion;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, Put, ReturnValue, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update,
};
use futures::{StreamExt, TryStreamExt};

use self::item::{
    Item, from_item, get_s, guard_key, idempotency_key_of, n, queue_of, queues, s, to_item,
};
use self::schema::names;
use super::{
    Backlog, Created, LEASE_EXPIRED_ERROR, ListFilter, ListKey, QueueStats, Settlement,
    StatusCounts, StoreError, TaskCanceller, TaskLister, TaskPage, TaskPurger, TaskQueue,
    TaskReader, TaskRetrier, TaskWriter, apply_settlement, new_lease_token,
};
use crate::clock::Timestamp;
use crate::task::{Task, TaskId, TaskStatus};

/// Concurrent single-item writes one store call issues (claims, cancels, deletes).
const WRITE_CONCURRENCY: usize = 16;
/// How long a reference guard whose task is not written yet counts as a create in flight.
const GUARD_GRACE: Duration = Duration::from_secs(30);
/// How often a create retries taking a guard that others keep changing.
const GUARD_ATTEMPTS: usize = 5;
/// How often, and how far apart, a repeated create looks for the task of a create in flight.
const IN_FLIGHT_POLLS: usize = 25;
const IN_FLIGHT_WAIT: Duration = Duration::from_millis(200);

/// Why a guard stopped a create.
enum GuardStop {
    /// An active task holds the reference.
    Duplicate(TaskId),
    /// The idempotency key already made this task.
    Existing(Box<Task>),
    /// The holder's create has not written its task yet.
    InFlight(TaskId),
}

/// Tasks in one DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    ttl_after: Duration,
}

impl DynamoStore {
    /// A store over `table`; finished items get a TTL `ttl_after` their finish.
    pub fn new(client: Client, table: impl Into<String>, ttl_after: Duration) -> Self {
        Self {
            client,
            table: table.into(),
            ttl_after,
        }
    }

    /// A client from the standard AWS environment (region, credentials,
    /// `AWS_ENDPOINT_URL_DYNAMODB` for DynamoDB Local).
    pub async fn client_from_env() -> Client {
        let config = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(retry_config())
            .timeout_config(timeout_config())
            .load()
            .await;
        Client::new(&config)
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The SDK client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn load(&self, key: &str) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(schema::ID, s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk_error)?;
        Ok(output.item)
    }

    /// Claims one candidate; `None` when another processor got there first or it is exhausted.
    async fn claim_one(
        &self,
        id: String,
        due_by: Timestamp,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Task>, StoreError> {
        let token = new_lease_token();
        let task_id: TaskId = id
            .parse()
            .map_err(|err| StoreError::Backend(format!("queue index holds a bad id: {err}")))?;
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(schema::ID, s(&id))
            .update_expression(schema::UPDATE_CLAIM)
            .condition_expression(schema::COND_CLAIMABLE)
            .expression_attribute_names(names::STATUS, schema::STATUS)
            .expression_attribute_names(names::QUEUE, schema::QUEUE)
            .expression_attribute_values(":running", s(TaskStatus::Running.as_str()))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":lease", s(lease_until.to_text()))
            .expression_attribute_values(":lease_key", s(ListKey::at(lease_until, task_id).0))
            .expression_attribute_values(":now", s(now.to_text()))
            .expression_attribute_values(":due_by", s(ListKey::after_all_at(due_by).0))
            .expression_attribute_values(
                ":pending_queue",
                s(queue_of(task_id, TaskStatus::Pending)),
            )
            .expression_attribute_values(
                ":running_queue",
                s(queue_of(task_id, TaskStatus::Running)),
            )
            .expression_attribute_values(":token", s(&token))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => {
                let item = output.attributes.ok_or_else(|| {
                    StoreError::Backend(format!("claim of {id} returned no attributes"))
                })?;
                from_item(item).map(Some)
            }
            Err(err) => match conditional_failure(&err) {
                // An SDK retry of a claim whose first try landed: the claim is ours.
                Some(Some(old)) if get_s(&old, schema::LEASE_TOKEN) == Some(token.as_str()) => {
                    from_item(old).map(Some)
                }
                Some(old) => {
                    self.fail_exhausted(old, due_by, now).await?;
                    Ok(None)
                }
                None => Err(sdk_error(err)),
            },
        }
    }

    /// A running task whose final attempt's lease expired is failed, not run again.
    async fn fail_exhausted(
        &self,
        old: Option<Item>,
        due_by: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let Some(old) = old else { return Ok(()) };
        let task = from_item(old)?;
        let expired = task.lease_expires_at.is_some_and(|lease| lease <= due_by);
        if task.status != TaskStatus::Running || task.attempts < task.max_attempts || !expired {
            return Ok(());
        }
        let outcome = Settlement::Failed {
            error: LEASE_EXPIRED_ERROR.to_owned(),
        };
        match self.settle(&task, outcome, now).await {
            Ok(_) | Err(StoreError::LeaseLost(_)) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// A query of one queue for the tasks queued at or before `until`, oldest first.
    fn queue_query(
        &self,
        queue: &str,
        until: Timestamp,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.table)
            .index_name(schema::QUEUE_INDEX)
            .key_condition_expression(schema::KEY_QUEUE_UP_TO)
            .expression_attribute_names(names::QUEUE, schema::QUEUE)
            .expression_attribute_values(":queue", s(queue))
            .expression_attribute_values(":until", s(ListKey::after_all_at(until).0))
    }

    /// Ids and queue keys from one queue, oldest first, up to `until`.
    async fn query_queue(
        &self,
        queue: String,
        until: Timestamp,
        limit: Option<usize>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut found = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page_limit = limit.map(|l| i32::try_from(l - found.len()).unwrap_or(i32::MAX));
            let output = self
                .queue_query(&queue, until)
                .set_limit(page_limit)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(sdk_error)?;
            for item in output.items.unwrap_or_default() {
                if let (Some(id), Some(at)) =
                    (get_s(&item, schema::ID), get_s(&item, schema::QUEUE_AT))
                {
                    found.push((id.to_owned(), at.to_owned()));
                }
            }
            start = output.last_evaluated_key;
            let full = limit.is_some_and(|l| found.len() >= l);
            if start.is_none() || full {
                return Ok(found);
            }
        }
    }

    /// Takes the guard item `key` for `task`. When another task holds it, `decide` sees the
    /// holder (absent if not written yet, with whether its guard is younger than the grace
    /// period) and either stops the create or lets this task take the guard over.
    /// Every guard write carries a fresh version token: a takeover is conditioned on the holder
    /// *and* the version it read, so any write in between (a retry re-taking the guard) wins.
    /// `now` is written as the guard's time, which decides whether a holder not yet written
    /// is still in flight.
    async fn take_guard(
        &self,
        key: &str,
        task: &Task,
        now: Timestamp,
        decide: impl Fn(TaskId, Option<Task>, bool) -> Option<GuardStop>,
    ) -> Result<Option<GuardStop>, StoreError> {
        let mut expected: Option<(String, Option<String>)> = None;
        for _ in 0..GUARD_ATTEMPTS {
            let mut put = self
                .client
                .put_item()
                .table_name(&self.table)
                .item(schema::ID, s(key))
                .item(schema::GUARD_TASK_ID, s(task.id.to_string()))
                .item(schema::GUARD_CREATED_AT, s(now.to_text()))
                .item(schema::GUARD_VERSION, s(new_lease_token()))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                );
            put = match &expected {
                None => put.condition_expression(schema::COND_NEW_ITEM),
                Some((holder, Some(version))) => put
                    .condition_expression(schema::COND_GUARD_VERSION)
                    .expression_attribute_values(":task", s(holder))
                    .expression_attribute_values(":version", s(version)),
                Some((holder, None)) => put
                    .condition_expression(schema::COND_GUARD_UNVERSIONED)
                    .expression_attribute_values(":task", s(holder)),
            };
            let err = match put.send().await {
                Ok(_) => return Ok(None),
                Err(err) => err,
            };
            let Some(old) = conditional_failure(&err) else {
                return Err(sdk_error(err));
            };
            // The guard exists (or changed since we read it): look at its holder.
            let Some(old) = old else {
                expected = None;
                continue;
            };
            let holder = get_s(&old, schema::GUARD_TASK_ID)
                .unwrap_or_default()
                .to_owned();
            if holder == task.id.to_string() {
                // An SDK retry of a put whose first try landed: the guard is ours.
                return Ok(None);
            }
            let version = get_s(&old, schema::GUARD_VERSION).map(str::to_owned);
            let written: Option<Timestamp> =
                get_s(&old, schema::GUARD_CREATED_AT).and_then(|at| at.parse().ok());
            let young = written.is_some_and(|at| at.plus(GUARD_GRACE) > now);
            if let Ok(holder_id) = holder.parse::<TaskId>() {
                let holder_task = self.get(holder_id).await?;
                if let Some(stop) = decide(holder_id, holder_task, young) {
                    return Ok(Some(stop));
                }
            }
            expected = Some((holder, version));
        }
        Err(StoreError::Unavailable(format!(
            "{key:?} is contended; try again"
        )))
    }

    /// Takes the reference guard of `task`, if it has a reference: refused with
    /// [`StoreError::Duplicate`] while another task holding it is pending or running (or was
    /// created moments ago and is not written yet); taken over from a finished holder.
    async fn take_reference(&self, task: &Task, now: Timestamp) -> Result<(), StoreError> {
        let Some(reference) = &task.reference_uid else {
            return Ok(());
        };
        let guard = guard_key(&task.task_type, reference);
        let stop = self
            .take_guard(
                &guard,
                task,
                now,
                |holder, existing, young| match existing {
                    Some(active) if !active.status.is_finished() => {
                        Some(GuardStop::Duplicate(holder))
                    }
                    None if young => Some(GuardStop::Duplicate(holder)),
                    _ => None,
                },
            )
            .await?;
        match stop {
            None => Ok(()),
            Some(GuardStop::Duplicate(existing) | GuardStop::InFlight(existing)) => {
                Err(StoreError::Duplicate { existing })
            }
            Some(GuardStop::Existing(existing)) => Err(StoreError::Duplicate {
                existing: existing.id,
            }),
        }
    }

    /// Deletes the guard `key` if it still names `task_id`.
    async fn release_guard(&self, key: String, task_id: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(schema::ID, s(key))
            .condition_expression(schema::COND_GUARD_HELD_BY)
            .expression_attribute_values(":task", s(task_id))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if conditional_failure(&err).is_some() => Ok(()),
            Err(err) => Err(sdk_error(err)),
        }
    }

    /// Deletes the guards a task item holds (reference and idempotency), if they still name it.
    async fn release_guards_of(&self, item: &Item, task_id: &str) -> Result<(), StoreError> {
        let Some(task_type) = get_s(item, schema::TYPE) else {
            return Ok(());
        };
        if let Some(reference) = get_s(item, schema::REFERENCE_UID) {
            self.release_guard(guard_key(task_type, reference), task_id)
                .await?;
        }
        if let Some(key) = get_s(item, schema::IDEMPOTENCY_KEY) {
            self.release_guard(idempotency_key_of(task_type, key), task_id)
                .await?;
        }
        Ok(())
    }

    /// Finds the task an idempotency guard names, waiting briefly for a create in flight.
    async fn idempotent_replay(
        &self,
        task: &Task,
        key: &str,
    ) -> Result<Option<Created>, StoreError> {
        let guard = idempotency_key_of(&task.task_type, key);
        for _ in 0..IN_FLIGHT_POLLS {
            let stop =
                self.take_guard(&guard, task, task.created_at, |holder, existing, young| {
                    match existing {
                        Some(existing) => Some(GuardStop::Existing(Box::new(existing))),
                        None if young => Some(GuardStop::InFlight(holder)),
                        None => None,
                    }
                })
                .await?;
            match stop {
                None => return Ok(None),
                Some(GuardStop::Existing(existing)) => {
                    return Ok(Some(Created::Existing(*existing)));
                }
                Some(GuardStop::InFlight(_)) => tokio::time::sleep(IN_FLIGHT_WAIT).await,
                Some(GuardStop::Duplicate(id)) => {
                    return Err(StoreError::Duplicate { existing: id });
                }
            }
        }
        Err(StoreError::Unavailable(format!(
            "a create with idempotencyKey {key:?} is still in progress; try again"
        )))
    }

    /// Deletes one finished task found by cleanup; false when it changed meanwhile.
    async fn purge_one(&self, id: String, cutoff: Timestamp) -> Result<bool, StoreError> {
        let task_id: TaskId = id
            .parse()
            .map_err(|err| StoreError::Backend(format!("queue index holds a bad id: {err}")))?;
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(schema::ID, s(&id))
            .condition_expression(schema::COND_PURGEABLE)
            .expression_attribute_names(names::QUEUE, schema::QUEUE)
            .expression_attribute_values(
                ":succeeded_queue",
                s(queue_of(task_id, TaskStatus::Succeeded)),
            )
            .expression_attribute_values(":failed_queue", s(queue_of(task_id, TaskStatus::Failed)))
            .expression_attribute_values(
                ":cancelled_queue",
                s(queue_of(task_id, TaskStatus::Cancelled)),
            )
            .expression_attribute_values(":cutoff", s(ListKey::after_all_at(cutoff).0))
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        let old = match result {
            Ok(output) => output.attributes.unwrap_or_default(),
            Err(err) if conditional_failure(&err).is_some() => return Ok(false),
            Err(err) => return Err(sdk_error(err)),
        };
        self.release_guards_of(&old, &id).await?;
        Ok(true)
    }
}

/// The SDK's retries for Tasker: more attempts than the default 3, because a lost write of an
/// outcome costs a second run of the task after its lease expires.
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(6)
        .with_initial_backoff(Duration::from_millis(50))
}

/// Bounds on each call, so a stalled connection becomes a reported, retried error instead of a
/// run that never ends: 3 s to connect, 10 s per attempt, 60 s per call with its retries.
pub fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(10))
        .operation_timeout(Duration::from_secs(60))
        .build()
}

/// `Some(old item)` when `err` is a failed condition check (the item may be absent).
fn conditional_failure<E, R>(err: &SdkError<E, R>) -> Option<Option<Item>>
where
    E: ProvideErrorMetadata + 'static,
{
    let service = err.as_service_error()?;
    if service.code() != Some("ConditionalCheckFailedException") {
        return None;
    }
    Some(old_item_of(err))
}

/// The item a `ConditionalCheckFailedException` carries, whichever operation raised it.
fn old_item_of<E: 'static, R>(err: &SdkError<E, R>) -> Option<Item> {
    use aws_sdk_dynamodb::operation::{
        delete_item::DeleteItemError, put_item::PutItemError, update_item::UpdateItemError,
    };
    let service = err.as_service_error()?;
    let any = service as &dyn std::any::Any;
    let item = if let Some(PutItemError::ConditionalCheckFailedException(e)) =
        any.downcast_ref::<PutItemError>()
    {
        e.item()
    } else if let Some(UpdateItemError::ConditionalCheckFailedException(e)) =
        any.downcast_ref::<UpdateItemError>()
    {
        e.item()
    } else if let Some(DeleteItemError::ConditionalCheckFailedException(e)) =
        any.downcast_ref::<DeleteItemError>()
    {
        e.item()
    } else {
        None
    };
    item.filter(|item| !item.is_empty()).cloned()
}

/// Error codes that mean "slow down or try again", as the AWS SDKs classify them.
const RETRYABLE_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
    "LimitExceededException",
];

/// Converts an SDK error, keeping its full context in the message.
pub(crate) fn sdk_error<E, R>(err: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let retryable = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => service
            .err()
            .code()
            .is_some_and(|code| RETRYABLE_CODES.contains(&code)),
        _ => false,
    };
    let message = format!("DynamoDB: {}", DisplayErrorContext(&err));
    if retryable {
        StoreError::Unavailable(message)
    } else {
        StoreError::Backend(message)
    }
}

impl TaskReader for DynamoStore {
    async fn get(&self, id: TaskId) -> Result<Option<Task>, StoreError> {
        self.load(&id.to_string()).await?.map(from_item).transpose()
    }
}

impl TaskWriter for DynamoStore {
    async fn create(&self, task: Task) -> Result<Created, StoreError> {
        let id = task.id.to_string();
        if let Some(key) = &task.idempotency_key {
            if let Some(existing) = self.idempotent_replay(&task, key).await? {
                return Ok(existing);
            }
        }
        let mut written = self.take_reference(&task, task.created_at).await;
        if written.is_ok() {
            written = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(to_item(&task, self.ttl_after)?))
                .condition_expression(schema::COND_NEW_ITEM)
                .send()
                .await
                .map(|_| ())
                .or_else(|err| match conditional_failure(&err) {
                    // Ids are fresh ULIDs: only an SDK retry of our own landed put finds one.
                    Some(_) => Ok(()),
                    None => Err(sdk_error(err)),
                });
        }
        if let Err(err) = written {
            // Free the guards at once rather than leave them naming a task that does not exist.
            let item = to_item(&task, self.ttl_after)?;
            if let Err(release) = self.release_guards_of(&item, &id).await {
                tracing::warn!(error = %release, task_id = %id, "could not release the guards");
            }
            return Err(err);
        }
        Ok(Created::New(task))
    }
}

impl TaskQueue for DynamoStore {
    async fn claim_due(
        &self,
        due_by: Timestamp,
        now: Timestamp,
        limit: usize,
        lease_until: Timestamp,
    ) -> Result<Vec<Task>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Read up to `limit` candidates from every pending and running queue (expired leases),
        // then claim the oldest first.
        let shards = queues(&[TaskStatus::Pending, TaskStatus::Running])
            .into_iter()
            .map(|queue| self.query_queue(queue, due_by, Some(limit)));
        let mut candidates: Vec<(String, String)> = futures::future::try_join_all(shards)
            .await?
            .into_iter()
            .flatten()
            .collect();
        candidates.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));

        let mut claimed = Vec::with_capacity(limit);
        let mut first_error = None;
        let mut remaining = candidates.into_iter().map(|(id, _)| id).peekable();
        while claimed.len() < limit && remaining.peek().is_some() && first_error.is_none() {
            let round: Vec<String> = remaining.by_ref().take(limit - claimed.len()).collect();
            let results: Vec<Result<Option<Task>, StoreError>> = futures::stream::iter(round)
                .map(|id| self.claim_one(id, due_by, now, lease_until))
                .buffered(WRITE_CONCURRENCY)
                .collect()
                .await;
            for result in results {
                match result {
                    Ok(won) => claimed.extend(won),
                    Err(err) => {
                        first_error.get_or_insert(err);
                    }
                }
            }
        }
        // Claims that succeeded must reach the caller even when a sibling failed: dropping
        // them would leave running tasks nobody works on until their lease expires.
        match first_error {
            Some(err) if claimed.is_empty() => Err(err),
            Some(err) => {
                tracing::warn!(error = %err, claimed = claimed.len(), "some claims failed; running the rest");
                Ok(claimed)
            }
            None => Ok(claimed),
        }
    }

    async fn settle(
        &self,
        claimed: &Task,
        outcome: Settlement,
        now: Timestamp,
    ) -> Result<Task, StoreError> {
        let token = claimed
            .lease_token
            .clone()
            .ok_or(StoreError::LeaseLost(claimed.id))?;
        let settled = apply_settlement(claimed.clone(), &outcome, now);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item(&settled, self.ttl_after)?))
            .condition_expression(schema::COND_HOLDS_LEASE)
            .expression_attribute_names(names::STATUS, schema::STATUS)
            .expression_attribute_values(":running", s(TaskStatus::Running.as_str()))
            .expression_attribute_values(":token", s(&token))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(settled),
            Err(err) => match conditional_failure(&err) {
                // An SDK retry of a write whose first try landed: the outcome is recorded.
                Some(Some(old))
                    if get_s(&old, schema::LEASE_TOKEN) == Some(token.as_str())
                        && get_s(&old, schema::STATUS) != Some(TaskStatus::Running.as_str()) =>
                {
                    Ok(settled)
                }
                Some(_) => Err(StoreError::LeaseLost(claimed.id)),
                None => Err(sdk_error(err)),
            },
        }
    }
}

impl TaskCanceller for DynamoStore {
    async fn cancel(&self, id: TaskId, now: Timestamp) -> Result<Task, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(schema::ID, s(id.to_string()))
            .update_expression(schema::UPDATE_CANCEL)
            .condition_expression(schema::COND_PENDING)
            .expression_attribute_names(names::STATUS, schema::STATUS)
            .expression_attribute_names(names::QUEUE, schema::QUEUE)
            .expression_attribute_values(":pending", s(TaskStatus::Pending.as_str()))
            .expression_attribute_values(":cancelled", s(TaskStatus::Cancelled.as_str()))
            .expression_attribute_values(":now", s(now.to_text()))
            .expression_attribute_values(":cancelled_queue", s(queue_of(id, TaskStatus::Cancelled)))
            .expression_attribute_values(":now_key", s(ListKey::at(now, id).0))
            .expression_attribute_values(":expires", n(now.plus(self.ttl_after).unix_seconds()))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => from_item(output.attributes.unwrap_or_default()),
            Err(err) => match conditional_failure(&err) {
                Some(Some(old)) => Err(StoreError::Conflict {
                    id,
                    status: from_item(old)?.status,
                }),
                Some(None) => Err(StoreError::NotFound(id)),
                None => Err(sdk_error(err)),
            },
        }
    }

    async fn cancel_by_reference(
        &self,
        reference_uid: &str,
        task_type: Option<&str>,
        now: Timestamp,
    ) -> Result<Vec<TaskId>, StoreError> {
        let mut ids = self.reference_ids(reference_uid, task_type).await?;
        // The index is eventually consistent; the guard item is read consistently, so a task
        // created a moment ago is found too when the type is known.
        if let Some(task_type) = task_type {
            let guard = self.load(&guard_key(task_type, reference_uid)).await?;
            let holder = guard
                .as_ref()
                .and_then(|guard| get_s(guard, schema::GUARD_TASK_ID))
                .and_then(|id| id.parse::<TaskId>().ok());
            if let Some(holder) = holder.filter(|holder| !ids.contains(holder)) {
                ids.push(holder);
            }
        }
        // The index holds keys only, so the status check is the cancel's own condition.
        let outcomes: Vec<Option<TaskId>> = futures::stream::iter(ids)
            .map(|id| async move {
                match self.cancel(id, now).await {
                    Ok(task) => Ok(Some(task.id)),
                    Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => Ok(None),
                    Err(err) => Err(err),
                }
            })
            .buffered(WRITE_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(outcomes.into_iter().flatten().collect())
    }
}

/// Index entries read per cleanup chunk.
const PURGE_CHUNK: usize = 1000;

impl TaskPurger for DynamoStore {
    async fn purge_finished_before(
        &self,
        cutoff: Timestamp,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        let finished = [
            TaskStatus::Succeeded,
            TaskStatus::Failed,
            TaskStatus::Cancelled,
        ];
        for queue in queues(&finished) {
            let mut start: Option<HashMap<String, AttributeValue>> = None;
            loop {
                let output = self
                    .queue_query(&queue, cutoff)
                    .limit(PURGE_CHUNK as i32)
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(sdk_error)?;
                let ids = output
                    .items
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|item| get_s(&item, schema::ID).map(str::to_owned));
                let results: Vec<bool> = futures::stream::iter(ids)
                    .map(|id| self.purge_one(id, cutoff))
                    .buffer_unordered(WRITE_CONCURRENCY)
                    .try_collect()
                    .await?;
                let chunk = results.into_iter().filter(|gone| *gone).count() as u64;
                deleted += chunk;
                if chunk > 0 {
                    progress(chunk);
                }
                start = output.last_evaluated_key;
                if start.is_none() {
                    break;
                }
            }
        }
        Ok(deleted)
    }
}

impl QueueStats for DynamoStore {
    /// Per shard: one `Select=COUNT` query of the due range (index keys only, so about 100
    /// due tasks per read unit) and one `Limit=1` query for the oldest.
    async fn backlog(&self, now: Timestamp) -> Result<Backlog, StoreError> {
        let mut backlog = Backlog::default();
        for queue in queues(&[TaskStatus::Pending, TaskStatus::Running]) {
            let mut start: Option<HashMap<String, AttributeValue>> = None;
            loop {
                let output = self
                    .queue_query(&queue, now)
                    .select(aws_sdk_dynamodb::types::Select::Count)
                    .set_exclusive_start_key(start.take())
                    .send()
                    .await
                    .map_err(sdk_error)?;
                backlog.due += u64::try_from(output.count).unwrap_or_default();
                start = output.last_evaluated_key;
                if start.is_none() {
                    break;
                }
            }
            let oldest = self.query_queue(queue, now, Some(1)).await?;
            let oldest: Option<Timestamp> = oldest
                .first()
                .and_then(|(_, key)| ListKey(key.clone()).instant());
            backlog.oldest_due_at = match (backlog.oldest_due_at, oldest) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(backlog)
    }
}

impl TaskRetrier for DynamoStore {
    async fn retry(&self, id: TaskId, now: Timestamp) -> Result<Task, StoreError> {
        let task = self.get(id).await?.ok_or(StoreError::NotFound(id))?;
        if !matches!(task.status, TaskStatus::Failed | TaskStatus::Cancelled) {
            return Err(StoreError::Conflict {
                id,
                status: task.status,
            });
        }
        let update = Update::builder()
            .table_name(&self.table)
            .key(schema::ID, s(id.to_string()))
            .update_expression(schema::UPDATE_RETRY)
            .condition_expression(schema::COND_RETRYABLE)
            .expression_attribute_names(names::STATUS, schema::STATUS)
            .expression_attribute_names(names::QUEUE, schema::QUEUE)
            .expression_attribute_values(":failed", s(TaskStatus::Failed.as_str()))
            .expression_attribute_values(":cancelled", s(TaskStatus::Cancelled.as_str()))
            .expression_attribute_values(":pending", s(TaskStatus::Pending.as_str()))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":now", s(now.to_text()))
            .expression_attribute_values(":pending_queue", s(queue_of(id, TaskStatus::Pending)))
            .expression_attribute_values(":now_key", s(ListKey::at(now, id).0))
            .build()
            .map_err(|err| StoreError::Backend(format!("retry update: {err}")))?;
        let Some(reference) = task.reference_uid.clone() else {
            return self.retry_without_reference(id, now, update).await;
        };
        // Re-take the reference, then flip the task and re-version the guard in one
        // transaction: a create or another retry that read the guard before the flip fails
        // its own conditional write instead of becoming a second active holder.
        self.take_reference(&task, now).await?;
        let key = guard_key(&task.task_type, &reference);
        let guard = Put::builder()
            .table_name(&self.table)
            .item(schema::ID, s(&key))
            .item(schema::GUARD_TASK_ID, s(id.to_string()))
            .item(schema::GUARD_CREATED_AT, s(now.to_text()))
            .item(schema::GUARD_VERSION, s(new_lease_token()))
            .condition_expression(schema::COND_GUARD_HELD_BY)
            .expression_attribute_values(":task", s(id.to_string()))
            .build()
            .map_err(|err| StoreError::Backend(format!("retry guard: {err}")))?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(guard).build())
            .transact_items(TransactWriteItem::builder().update(update).build())
            .client_request_token(new_lease_token())
            .send()
            .await;
        match result {
            Ok(_) => self.get(id).await?.ok_or(StoreError::NotFound(id)),
            Err(err) => {
                let reasons: Vec<Option<String>> = err
                    .as_service_error()
                    .and_then(|e| match e {
                        TransactWriteItemsError::TransactionCanceledException(cancel) => Some(
                            cancel
                                .cancellation_reasons()
                                .iter()
                                .map(|r| r.code().map(str::to_owned))
                                .collect(),
                        ),
                        _ => None,
                    })
                    .unwrap_or_default();
                let failed = |i: usize| {
                    reasons
                        .get(i)
                        .and_then(Option::as_deref)
                        .is_some_and(|code| code == "ConditionalCheckFailed")
                };
                if failed(0) {
                    // Another create or retry took the reference in between.
                    let holder = self.load(&key).await?.and_then(|guard| {
                        get_s(&guard, schema::GUARD_TASK_ID).and_then(|h| h.parse().ok())
                    });
                    return Err(match holder {
                        Some(existing) => StoreError::Duplicate { existing },
                        None => StoreError::Unavailable("the reference changed; try again".into()),
                    });
                }
                if failed(1) {
                    let current = self.get(id).await?.ok_or(StoreError::NotFound(id))?;
                    return Err(StoreError::Conflict {
                        id,
                        status: current.status,
                    });
                }
                Err(sdk_error(err))
            }
        }
    }
}

/// Index reads one listing page makes at most before it returns a short page.
const LIST_ROUNDS: usize = 4;
/// Keys per `BatchGetItem` call (the service's limit).
const BATCH_GET_KEYS: usize = 100;
/// Calls a `BatchGetItem` makes for keys the service left unprocessed before giving up.
const BATCH_GET_TRIES: u32 = 8;

impl DynamoStore {
    /// Ids of the tasks with `reference_uid` (and `task_type`), from the eventually
    /// consistent reference index.
    async fn reference_ids(
        &self,
        reference_uid: &str,
        task_type: Option<&str>,
    ) -> Result<Vec<TaskId>, StoreError> {
        let mut ids = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(schema::REFERENCE_INDEX)
                .expression_attribute_values(":reference", s(reference_uid))
                .set_exclusive_start_key(start.take());
            query = match task_type {
                Some(task_type) => query
                    .key_condition_expression(schema::KEY_REFERENCE_AND_TYPE)
                    .expression_attribute_names(names::TYPE, schema::TYPE)
                    .expression_attribute_values(":type", s(task_type)),
                None => query.key_condition_expression(schema::KEY_REFERENCE),
            };
            let output = query.send().await.map_err(sdk_error)?;
            for item in output.items.unwrap_or_default() {
                if let Some(id) = get_s(&item, schema::ID).and_then(|id| id.parse().ok()) {
                    ids.push(id);
                }
            }
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(ids);
            }
        }
    }

    /// The tasks with `ids` that exist, read consistently, by id.
    async fn get_many(&self, ids: &[TaskId]) -> Result<HashMap<TaskId, Task>, StoreError> {
        let mut found = HashMap::with_capacity(ids.len());
        // BatchGetItem refuses a request that names one key twice.
        let mut unique = ids.to_vec();
        unique.sort_unstable();
        unique.dedup();
        for chunk in unique.chunks(BATCH_GET_KEYS) {
            let keys: Vec<Item> = chunk
                .iter()
                .map(|id| HashMap::from([(schema::ID.to_owned(), s(id.to_string()))]))
                .collect();
            let mut request = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(|err| StoreError::Backend(format!("batch get: {err}")))?,
            );
            let mut tries = 0;
            while let Some(keys) = request.take() {
                if tries > 0 {
                    // Unprocessed keys mean throttling: back off as the SDK would.
                    tokio::time::sleep(Duration::from_millis(25 << tries.min(6))).await;
                }
                tries += 1;
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, keys)
                    .send()
                    .await
                    .map_err(sdk_error)?;
                let items = output
                    .responses
                    .and_then(|mut responses| responses.remove(&self.table))
                    .unwrap_or_default();
                for item in items {
                    let task = from_item(item)?;
                    found.insert(task.id, task);
                }
                request = output
                    .unprocessed_keys
                    .and_then(|mut unprocessed| unprocessed.remove(&self.table))
                    .filter(|keys| !keys.keys().is_empty());
                if request.is_some() && tries >= BATCH_GET_TRIES {
                    return Err(StoreError::Unavailable(
                        "DynamoDB left keys of a batch read unprocessed; try again".into(),
                    ));
                }
            }
        }
        Ok(found)
    }

    /// The next `want` index entries `(key, id)` below `below` across `queue_names`, newest
    /// first, and the key to continue below when more remain.
    async fn list_keys(
        &self,
        queue_names: &[String],
        below: Option<&ListKey>,
        want: usize,
    ) -> Result<(Vec<(String, String)>, Option<ListKey>), StoreError> {
        let reads = queue_names.iter().map(|queue| async move {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(schema::QUEUE_INDEX)
                .expression_attribute_names(names::QUEUE, schema::QUEUE)
                .expression_attribute_values(":queue", s(queue))
                .scan_index_forward(false)
                .limit(i32::try_from(want).unwrap_or(i32::MAX));
            query = match below {
                Some(key) => query
                    .key_condition_expression(schema::KEY_QUEUE_BELOW)
                    .expression_attribute_values(":below", s(key.as_str())),
                None => query.key_condition_expression(schema::KEY_QUEUE),
            };
            let output = query.send().await.map_err(sdk_error)?;
            let entries: Vec<(String, String)> = output
                .items
                .unwrap_or_default()
                .iter()
                .filter_map(|item| {
                    Some((
                        get_s(item, schema::QUEUE_AT)?.to_owned(),
                        get_s(item, schema::ID)?.to_owned(),
                    ))
                })
                .collect();
            Ok::<_, StoreError>((entries, output.last_evaluated_key.is_some()))
        });
        let results = futures::future::try_join_all(reads).await?;
        // A queue with more entries has unread ones below its last: only keys at or above the
        // highest such last key are certainly in order.
        let bound = results
            .iter()
            .filter(|(_, more)| *more)
            .filter_map(|(entries, _)| entries.last().map(|(key, _)| key.clone()))
            .max();
        let unread = results.iter().any(|(_, more)| *more);
        let mut entries: Vec<(String, String)> = results
            .into_iter()
            .flat_map(|(entries, _)| entries)
            .filter(|(key, _)| bound.as_ref().is_none_or(|bound| key >= bound))
            .collect();
        entries.sort_by(|a, b| b.0.cmp(&a.0));
        let more = unread || entries.len() > want;
        entries.truncate(want);
        let next = if more {
            entries.last().map(|(key, _)| ListKey(key.clone()))
        } else {
            None
        };
        Ok((entries, next))
    }

    /// A listing by reference: every task of the reference is read, filtered and ordered here.
    async fn list_by_reference(
        &self,
        reference_uid: &str,
        filter: &ListFilter,
        after: Option<ListKey>,
        limit: usize,
    ) -> Result<TaskPage, StoreError> {
        let ids = self
            .reference_ids(reference_uid, filter.task_type.as_deref())
            .await?;
        let mut tasks: Vec<(ListKey, Task)> = self
            .get_many(&ids)
            .await?
            .into_values()
            .filter(|task| filter.matches(task))
            .map(|task| (ListKey::of(&task), task))
            .filter(|(key, _)| after.as_ref().is_none_or(|after| key < after))
            .collect();
        tasks.sort_by(|a, b| b.0.cmp(&a.0));
        let more = tasks.len() > limit;
        tasks.truncate(limit);
        let next = if more {
            tasks.last().map(|(key, _)| key.clone())
        } else {
            None
        };
        Ok(TaskPage {
            tasks: tasks.into_iter().map(|(_, task)| task).collect(),
            next,
        })
    }

    /// The number of entries in `queue` (a `Select=COUNT` query, paged by the service).
    async fn count_queue(&self, queue: String) -> Result<u64, StoreError> {
        let mut count = 0;
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(schema::QUEUE_INDEX)
                .key_condition_expression(schema::KEY_QUEUE)
                .expression_attribute_names(names::QUEUE, schema::QUEUE)
                .expression_attribute_values(":queue", s(queue.as_str()))
                .select(aws_sdk_dynamodb::types::Select::Count)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(sdk_error)?;
            count += u64::try_from(output.count).unwrap_or_default();
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(count);
            }
        }
    }
}

impl TaskLister for DynamoStore {
    async fn list(
        &self,
        filter: &ListFilter,
        after: Option<ListKey>,
        limit: usize,
    ) -> Result<TaskPage, StoreError> {
        if limit == 0 {
            return Ok(TaskPage::default());
        }
        if let Some(reference_uid) = &filter.reference_uid {
            return self
                .list_by_reference(reference_uid, filter, after, limit)
                .await;
        }
        let statuses = filter
            .status
            .map_or(TaskStatus::ALL.to_vec(), |status| vec![status]);
        let queue_names = queues(&statuses);
        let mut page = TaskPage::default();
        let mut below = after;
        for _ in 0..LIST_ROUNDS {
            let want = limit - page.tasks.len();
            let (entries, next) = self.list_keys(&queue_names, below.as_ref(), want).await?;
            let mut ids: Vec<TaskId> = Vec::with_capacity(entries.len());
            for id in entries.iter().filter_map(|(_, id)| id.parse().ok()) {
                // A task that just changed status can show in its old and new queue at once.
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            let mut found = self.get_many(&ids).await?;
            for id in ids {
                // The index lags the table: a task that changed status since is left out here
                // (it is listed where it is now), and one listed already is not repeated.
                if let Some(task) = found.remove(&id).filter(|task| filter.matches(task)) {
                    if !page.tasks.iter().any(|listed| listed.id == task.id) {
                        page.tasks.push(task);
                    }
                }
            }
            below = next;
            if page.tasks.len() >= limit || below.is_none() {
                break;
            }
        }
        page.next = below;
        Ok(page)
    }

    /// One `Select=COUNT` query per status and shard, run at once.
    async fn counts(&self) -> Result<StatusCounts, StoreError> {
        let reads = TaskStatus::ALL.into_iter().flat_map(|status| {
            (0..schema::QUEUE_SHARDS).map(move |shard| async move {
                let count = self.count_queue(item::queue_name(status, shard)).await?;
                Ok::<_, StoreError>((status, count))
            })
        });
        let mut counts = StatusCounts::default();
        for (status, count) in futures::future::try_join_all(reads).await? {
            counts.add(status, count);
        }
        Ok(counts)
    }
}

impl DynamoStore {
    async fn retry_without_reference(
        &self,
        id: TaskId,
        now: Timestamp,
        update: Update,
    ) -> Result<Task, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(schema::ID, s(id.to_string()))
            .update_expression(update.update_expression())
            .set_condition_expression(update.condition_expression().map(str::to_owned))
            .set_expression_attribute_names(update.expression_attribute_names().cloned())
            .set_expression_attribute_values(update.expression_attribute_values().cloned())
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => from_item(output.attributes.unwrap_or_default()),
            Err(err) => match conditional_failure(&err) {
                Some(Some(old)) => {
                    let current = from_item(old)?;
                    // An SDK retry of a retry that landed: the task is pending again, due now.
                    if current.status == TaskStatus::Pending && current.scheduled_at == now {
                        Ok(current)
                    } else {
                        Err(StoreError::Conflict {
                            id,
                            status: current.status,
                        })
                    }
                }
                Some(None) => Err(StoreError::NotFound(id)),
                None => Err(sdk_error(err)),
            },
        }
    }
}

//! The DynamoDB backend: one table keyed by task id, a sparse sharded queue index, a reference
//! index, and a conditional write for every state change.

pub mod due;
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

use self::due::{ScanGoal, SharedDueState};
use self::item::{
    Item, Queue, from_item, get_s, guard_key, idempotency_key_of, n, queue_of, s, to_item,
};
use self::schema::names;
use super::{
    Backlog, Created, LEASE_EXPIRED_ERROR, ListFilter, ListKey, QueueStats, Settlement,
    StatusCounts, StoreError, TaskCanceller, TaskLister, TaskPage, TaskPurger, TaskQueue,
    TaskReader, TaskRetrier, TaskWriter, apply_retry, apply_settlement, new_lease_token,
};
use crate::clock::Timestamp;
use crate::task::{Task, TaskId, TaskStatus};

/// Scans a claim makes at most when every claim of a round lost to another processor.
const CLAIM_ROUNDS: usize = 3;
/// Concurrent single-item writes one store call issues (claims, cancels, deletes).
const WRITE_CONCURRENCY: usize = 16;
/// How old a create may be when it writes its task; older ones give up (see `due::MARGIN`).
const CREATE_DEADLINE: Duration = Duration::from_secs(60);
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
    /// What this process knows of the due queue, shared by clones.
    due: SharedDueState,
}

impl DynamoStore {
    /// A store over `table`; finished items get a TTL `ttl_after` their finish.
    pub fn new(client: Client, table: impl Into<String>, ttl_after: Duration) -> Self {
        Self {
            client,
            table: table.into(),
            ttl_after,
            due: SharedDueState::default(),
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
        id: TaskId,
        due_by: Timestamp,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Task>, StoreError> {
        let token = new_lease_token();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(schema::ID, s(id.to_string()))
            .update_expression(schema::UPDATE_CLAIM)
            .condition_expression(schema::COND_CLAIMABLE)
            .expression_attribute_names(names::STATUS, schema::STATUS)
            .expression_attribute_values(":pending", s(TaskStatus::Pending.as_str()))
            .expression_attribute_values(":running", s(TaskStatus::Running.as_str()))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":lease", s(lease_until.to_text()))
            .expression_attribute_values(":now", s(now.to_text()))
            .expression_attribute_values(":due_key", s(ListKey::after_all_at(due_by).0))
            .expression_attribute_values(":due_by", s(due_by.to_text()))
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
                    if let Some(old) = old {
                        self.fail_exhausted(from_item(old)?, due_by, now).await?;
                    }
                    Ok(None)
                }
                None => Err(sdk_error(err)),
            },
        }
    }

    /// A running task whose final attempt's lease expired is failed, not run again.
    async fn fail_exhausted(
        &self,
        task: Task,
        due_by: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
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
        unless_condition_failed(result).map(|_| ())
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

    /// Deletes one finished task of `queue` found by cleanup; false when it changed meanwhile.
    async fn purge_one(
        &self,
        id: TaskId,
        queue: Queue,
        cutoff: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut delete = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(schema::ID, s(id.to_string()))
            .return_values(ReturnValue::AllOld);
        delete = match queue {
            Queue::Due => delete
                .condition_expression(schema::COND_PURGEABLE_SUCCESS)
                .expression_attribute_names(names::STATUS, schema::STATUS)
                .expression_attribute_values(":succeeded", s(TaskStatus::Succeeded.as_str()))
                .expression_attribute_values(":cutoff", s(cutoff.to_text())),
            Queue::Failed | Queue::Cancelled => delete
                .condition_expression(schema::COND_PURGEABLE)
                .expression_attribute_names(names::QUEUE, schema::QUEUE)
                .expression_attribute_values(":failed_queue", s(queue_of(id, TaskStatus::Failed)))
                .expression_attribute_values(
                    ":cancelled_queue",
                    s(queue_of(id, TaskStatus::Cancelled)),
                )
                .expression_attribute_values(":cutoff", s(ListKey::after_all_at(cutoff).0)),
        };
        let Some(output) = unless_condition_failed(delete.send().await)? else {
            return Ok(false);
        };
        let old = output.attributes.unwrap_or_default();
        self.release_guards_of(&old, &id.to_string()).await?;
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

/// The call's output, or `None` when its condition failed (the write was not needed or not
/// wanted any more); other errors converted.
fn unless_condition_failed<T, E, R>(
    result: Result<T, SdkError<E, R>>,
) -> Result<Option<T>, StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(output) => Ok(Some(output)),
        Err(err) if conditional_failure(&err).is_some() => Ok(None),
        Err(err) => Err(sdk_error(err)),
    }
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
        if written.is_ok() && Timestamp::now_utc().since(task.created_at) > CREATE_DEADLINE {
            // The due-queue entry is keyed by the creation instant: one that lands much later
            // could fall below a watermark (see `due::MARGIN`) and never be claimed.
            written = Err(StoreError::Unavailable(
                "the create took too long to reach DynamoDB; try again".into(),
            ));
        }
        if written.is_ok() {
            let put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(to_item(&task, self.ttl_after)?))
                .condition_expression(schema::COND_NEW_ITEM)
                .send()
                .await;
            // Ids are fresh ULIDs: only an SDK retry of our own landed put finds one.
            written = unless_condition_failed(put).map(|_| ());
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
        // Read the due entries and their items first, then claim only what is due: a claim that
        // fails its condition is billed like one that succeeds.
        let goal = ScanGoal {
            upper: ListKey::after_all_at(due_by).0,
            due_by,
            now,
            want: limit,
            read_cap: usize::MAX,
        };
        let mut claimed = Vec::with_capacity(limit);
        let mut first_error = None;
        // A round that lost every claim to another processor says nothing about what is still
        // due: look again (from another shard, see `note_claims`) before answering empty.
        for _ in 0..CLAIM_ROUNDS {
            // Boxed: the scan's future is deep, and callers' futures nest it several levels down.
            let found = Box::pin(self.scan_due(&goal)).await?;
            for task in found.exhausted {
                self.fail_exhausted(task, due_by, now).await?;
            }
            let tried = found.claimable.len().min(limit);
            let results: Vec<Result<Option<Task>, StoreError>> =
                futures::stream::iter(found.claimable.into_iter().take(limit))
                    .map(|task| self.claim_one(task.id, due_by, now, lease_until))
                    .buffered(WRITE_CONCURRENCY)
                    .collect()
                    .await;
            let mut failed = 0;
            for result in results {
                match result {
                    Ok(won) => claimed.extend(won),
                    Err(err) => {
                        failed += 1;
                        first_error.get_or_insert(err);
                    }
                }
            }
            let lost = tried - claimed.len() - failed;
            self.note_claims(lost, now);
            self.note_claimed(&claimed);
            if !claimed.is_empty() || lost == 0 || first_error.is_some() {
                break;
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
        // Only what changed is written: a success leaves the index keys as they are, so the
        // index is not written.
        let before = to_item(claimed, self.ttl_after)?;
        let after = to_item(&settled, self.ttl_after)?;
        let changes = ItemChanges::between(&before, &after);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(schema::ID, s(claimed.id.to_string()))
            .update_expression(changes.expression)
            .set_expression_attribute_names(Some(changes.names))
            .set_expression_attribute_values(Some(changes.values))
            .condition_expression(schema::COND_HOLDS_LEASE)
            .expression_attribute_names(names::STATUS, schema::STATUS)
            .expression_attribute_values(":running", s(TaskStatus::Running.as_str()))
            .expression_attribute_values(":token", s(&token))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let recorded = match result {
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
        }?;
        // The entry the task was claimed from is finished, or left behind by a move.
        let entry = ListKey::of(claimed);
        let left = recorded.status.is_finished() || ListKey::of(&recorded) != entry;
        self.note_settled(entry, left);
        Ok(recorded)
    }
}

/// An update expression that turns one item into another: `SET` for every attribute that
/// differs, `REMOVE` for every one that is gone.
struct ItemChanges {
    expression: String,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl ItemChanges {
    fn between(before: &Item, after: &Item) -> Self {
        let mut names = HashMap::new();
        let mut values = HashMap::new();
        let mut set = Vec::new();
        let mut remove = Vec::new();
        let mut changed: Vec<(&String, &AttributeValue)> = after
            .iter()
            .filter(|(name, value)| {
                name.as_str() != schema::ID && before.get(name.as_str()) != Some(*value)
            })
            .collect();
        changed.sort_by(|a, b| a.0.cmp(b.0));
        for (i, (name, value)) in changed.into_iter().enumerate() {
            names.insert(format!("#s{i}"), name.clone());
            values.insert(format!(":s{i}"), value.clone());
            set.push(format!("#s{i} = :s{i}"));
        }
        let mut gone: Vec<&String> = before
            .keys()
            .filter(|name| !after.contains_key(*name))
            .collect();
        gone.sort();
        for (i, name) in gone.into_iter().enumerate() {
            names.insert(format!("#r{i}"), name.clone());
            remove.push(format!("#r{i}"));
        }
        let mut expression = String::new();
        if !set.is_empty() {
            expression = format!("SET {}", set.join(", "));
        }
        if !remove.is_empty() {
            if !expression.is_empty() {
                expression.push(' ');
            }
            expression.push_str(&format!("REMOVE {}", remove.join(", ")));
        }
        Self {
            expression,
            names,
            values,
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
    /// Failed and cancelled tasks are found in their queues by finish. Succeeded tasks are in
    /// the due queue by scheduled instant: below the watermark every entry is finished; above
    /// it the items are read first, so pending and running tasks cost no failed delete.
    async fn purge_finished_before(
        &self,
        cutoff: Timestamp,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<u64, StoreError> {
        let mut deleted = 0;
        let upper = ListKey::after_all_at(cutoff).0;
        let marks = self.watermarks().await?;
        let partitions = (0..schema::QUEUE_SHARDS).flat_map(|shard| {
            [Queue::Due, Queue::Failed, Queue::Cancelled]
                .map(|queue| (queue, queue.shard(shard), shard))
        });
        for (queue, partition, shard) in partitions {
            let mark = marks.get(shard as usize).cloned().flatten();
            let mut start: Option<Item> = None;
            loop {
                let (entries, next) = self
                    .entries_page(&partition, None, Some(&upper), PURGE_CHUNK, start.take())
                    .await?;
                let mut ids: Vec<TaskId> = Vec::with_capacity(entries.len());
                let mut unsure: Vec<TaskId> = Vec::new();
                for (key, id) in entries {
                    let below_mark = mark.as_ref().is_some_and(|mark| &key <= mark);
                    if queue == Queue::Due && !below_mark {
                        unsure.push(id);
                    } else {
                        ids.push(id);
                    }
                }
                if !unsure.is_empty() {
                    let tasks = self.get_many(&unsure, false).await?;
                    ids.extend(unsure.into_iter().filter(|id| {
                        tasks.get(id).is_some_and(|task| {
                            task.status == TaskStatus::Succeeded
                                && task.finished_at.is_some_and(|at| at <= cutoff)
                        })
                    }));
                }
                let results: Vec<bool> = futures::stream::iter(ids)
                    .map(|id| self.purge_one(id, queue, cutoff))
                    .buffer_unordered(WRITE_CONCURRENCY)
                    .try_collect()
                    .await?;
                let chunk = results.into_iter().filter(|gone| *gone).count() as u64;
                deleted += chunk;
                if chunk > 0 {
                    progress(chunk);
                }
                start = next;
                if start.is_none() {
                    break;
                }
            }
        }
        Ok(deleted)
    }
}

/// Items a backlog read looks at before it counts the rest of the due range as due unread.
const BACKLOG_READS: usize = 5000;

impl QueueStats for DynamoStore {
    /// A scan of the due queue from the cursors, reading at most [`BACKLOG_READS`] items; past
    /// that, the remaining entries up to `now` are counted as due (an upper bound: in a real
    /// backlog most are, but a process whose cursor starts at the watermark also finds up to
    /// ten minutes of finished tasks there).
    async fn backlog(&self, now: Timestamp) -> Result<Backlog, StoreError> {
        let upper = ListKey::after_all_at(now).0;
        let goal = ScanGoal {
            upper: upper.clone(),
            due_by: now,
            now,
            want: usize::MAX,
            read_cap: BACKLOG_READS,
        };
        let found = Box::pin(self.scan_due(&goal)).await?;
        let due_tasks = found.claimable.iter().chain(&found.exhausted);
        let mut backlog = Backlog {
            due: u64::try_from(found.claimable.len() + found.exhausted.len()).unwrap_or(u64::MAX),
            oldest_due_at: due_tasks.filter_map(Task::due_at).min(),
        };
        for (shard, from) in found.unread {
            backlog.due += self
                .count_range(&Queue::Due.shard(shard), from.as_deref(), Some(&upper))
                .await?;
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
        let retried = apply_retry(task.clone(), now);
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
            .expression_attribute_values(":scheduled", s(retried.scheduled_at.to_text()))
            .expression_attribute_values(":pending_queue", s(queue_of(id, TaskStatus::Pending)))
            .expression_attribute_values(":now_key", s(ListKey::of(&retried).0))
            .build()
            .map_err(|err| StoreError::Backend(format!("retry update: {err}")))?;
        let Some(reference) = task.reference_uid.clone() else {
            return self
                .retry_without_reference(id, retried.scheduled_at, update)
                .await;
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
/// How far ahead of a listing's `now` a processor's clock may be: running and succeeded tasks
/// are looked for up to this much after it.
const LIST_SKEW: Duration = Duration::from_secs(300);

/// A part of one queue partition: keys above `lo` (excluded) up to `hi` (included).
#[derive(Debug, Clone)]
struct QueueRange {
    queue: String,
    lo: Option<String>,
    hi: Option<String>,
}
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

    /// The tasks with `ids` that exist, by id; `consistent` picks strongly consistent reads.
    async fn get_many(
        &self,
        ids: &[TaskId],
        consistent: bool,
    ) -> Result<HashMap<TaskId, Task>, StoreError> {
        let keys: Vec<String> = ids.iter().map(TaskId::to_string).collect();
        let mut found = HashMap::with_capacity(ids.len());
        for item in self.batch_get_items(&keys, consistent).await? {
            let task = from_item(item)?;
            found.insert(task.id, task);
        }
        Ok(found)
    }

    /// The items with the ids `keys` that exist, in `BatchGetItem` calls of up to 100 keys.
    async fn batch_get_items(
        &self,
        keys: &[String],
        consistent: bool,
    ) -> Result<Vec<Item>, StoreError> {
        let mut found = Vec::with_capacity(keys.len());
        // BatchGetItem refuses a request that names one key twice.
        let mut unique = keys.to_vec();
        unique.sort_unstable();
        unique.dedup();
        for chunk in unique.chunks(BATCH_GET_KEYS) {
            let keys: Vec<Item> = chunk
                .iter()
                .map(|id| HashMap::from([(schema::ID.to_owned(), s(id))]))
                .collect();
            let mut request = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(consistent)
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
                found.extend(
                    output
                        .responses
                        .and_then(|mut responses| responses.remove(&self.table))
                        .unwrap_or_default(),
                );
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

    /// The next `want` index entries `(key, id)` below `below` across `ranges`, newest first,
    /// and the key to continue below when more remain.
    async fn list_keys(
        &self,
        ranges: &[QueueRange],
        below: Option<&ListKey>,
        want: usize,
    ) -> Result<(Vec<(String, String)>, Option<ListKey>), StoreError> {
        let reads = ranges.iter().map(|range| async move {
            // `below` itself is left out after the read: key conditions have no open upper end
            // together with a lower one.
            let hi = match (range.hi.as_deref(), below.map(ListKey::as_str)) {
                (Some(hi), Some(below)) => Some(hi.min(below)),
                (hi, below) => hi.or(below),
            };
            if due::is_empty_range(range.lo.as_deref(), hi) {
                return Ok::<_, StoreError>((Vec::new(), false));
            }
            let output = self
                .range_query(&range.queue, range.lo.as_deref(), hi)
                .scan_index_forward(false)
                .limit(i32::try_from(want.saturating_add(1)).unwrap_or(i32::MAX))
                .send()
                .await
                .map_err(sdk_error)?;
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
                .filter(|(key, _)| below.is_none_or(|below| key.as_str() != below.as_str()))
                .collect();
            Ok((entries, output.last_evaluated_key.is_some()))
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

    /// The index ranges a listing of `status` (every status when `None`) reads: running and
    /// succeeded tasks are due-queue entries whose instant has come, pending ones are above
    /// the watermark.
    async fn list_ranges(
        &self,
        status: Option<TaskStatus>,
        now: Timestamp,
    ) -> Result<Vec<QueueRange>, StoreError> {
        let come = Some(ListKey::after_all_at(now.plus(LIST_SKEW)).0);
        let marks = match status {
            Some(TaskStatus::Pending | TaskStatus::Running) => self.watermarks().await?,
            _ => vec![None; schema::QUEUE_SHARDS as usize],
        };
        let due = |lo_mark: bool, hi: Option<String>| {
            (0..schema::QUEUE_SHARDS)
                .map(|shard| QueueRange {
                    queue: Queue::Due.shard(shard),
                    lo: marks
                        .get(shard as usize)
                        .cloned()
                        .flatten()
                        .filter(|_| lo_mark),
                    hi: hi.clone(),
                })
                .collect::<Vec<_>>()
        };
        let whole = |queue: Queue| {
            queue
                .shards()
                .into_iter()
                .map(|queue| QueueRange {
                    queue,
                    lo: None,
                    hi: None,
                })
                .collect::<Vec<_>>()
        };
        Ok(match status {
            None => [
                due(false, None),
                whole(Queue::Failed),
                whole(Queue::Cancelled),
            ]
            .concat(),
            Some(TaskStatus::Pending) => due(true, None),
            Some(TaskStatus::Running) => due(true, come),
            Some(TaskStatus::Succeeded) => due(false, come),
            Some(TaskStatus::Failed) => whole(Queue::Failed),
            Some(TaskStatus::Cancelled) => whole(Queue::Cancelled),
        })
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
            .get_many(&ids, true)
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
}

impl TaskLister for DynamoStore {
    async fn list(
        &self,
        filter: &ListFilter,
        after: Option<ListKey>,
        limit: usize,
        now: Timestamp,
    ) -> Result<TaskPage, StoreError> {
        if limit == 0 {
            return Ok(TaskPage::default());
        }
        if let Some(reference_uid) = &filter.reference_uid {
            return self
                .list_by_reference(reference_uid, filter, after, limit)
                .await;
        }
        let ranges = self.list_ranges(filter.status, now).await?;
        let mut page = TaskPage::default();
        let mut below = after;
        for _ in 0..LIST_ROUNDS {
            let want = limit - page.tasks.len();
            let (entries, next) = self.list_keys(&ranges, below.as_ref(), want).await?;
            let ids: Vec<TaskId> = entries
                .iter()
                .filter_map(|(_, id)| id.parse().ok())
                .collect();
            let found = self.get_many(&ids, true).await?;
            for (key, id) in &entries {
                // The index lags the table: a task that moved since is listed where it is now,
                // not at the entry it left, and one listed already is not repeated.
                let task = id
                    .parse()
                    .ok()
                    .and_then(|id: TaskId| found.get(&id))
                    .filter(|task| ListKey::of(task).as_str() == key && filter.matches(task));
                if let Some(task) = task {
                    if !page.tasks.iter().any(|listed| listed.id == task.id) {
                        page.tasks.push(task.clone());
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

    /// Per shard, run at once: failed and cancelled tasks are counted from the index
    /// (`Select=COUNT`, keys only). In the due queue, entries at or below the watermark are
    /// succeeded and entries far enough ahead of `now` pending, both counted the same way; the
    /// entries between (due, running, recently done) are read.
    async fn counts(&self, now: Timestamp) -> Result<StatusCounts, StoreError> {
        let marks = self.watermarks().await?;
        let come = ListKey::after_all_at(now.plus(LIST_SKEW)).0;
        let shards = (0..schema::QUEUE_SHARDS).map(|shard| {
            let mark = marks.get(shard as usize).cloned().flatten();
            let come = come.clone();
            async move {
                let due = Queue::Due.shard(shard);
                let mut counts = StatusCounts::default();
                let (failed, cancelled, succeeded, pending, recent) = futures::future::try_join5(
                    self.count_range(&Queue::Failed.shard(shard), None, None),
                    self.count_range(&Queue::Cancelled.shard(shard), None, None),
                    async {
                        match &mark {
                            Some(mark) => self.count_range(&due, None, Some(mark)).await,
                            None => Ok(0),
                        }
                    },
                    self.count_range(&due, Some(&come), None),
                    self.classify_range(&due, mark.as_deref(), &come),
                )
                .await?;
                counts.add(TaskStatus::Failed, failed);
                counts.add(TaskStatus::Cancelled, cancelled);
                counts.add(TaskStatus::Succeeded, succeeded);
                counts.add(TaskStatus::Pending, pending);
                for status in TaskStatus::ALL {
                    counts.add(status, recent.get(status));
                }
                Ok::<_, StoreError>(counts)
            }
        });
        let mut counts = StatusCounts::default();
        for shard in futures::future::try_join_all(shards).await? {
            for status in TaskStatus::ALL {
                counts.add(status, shard.get(status));
            }
        }
        Ok(counts)
    }
}

impl DynamoStore {
    /// The statuses of the tasks whose entries in `queue` lie above `lo` up to `hi`, read
    /// from their items; entries a task has moved away from are not counted.
    async fn classify_range(
        &self,
        queue: &str,
        lo: Option<&str>,
        hi: &str,
    ) -> Result<StatusCounts, StoreError> {
        let mut counts = StatusCounts::default();
        if due::is_empty_range(lo, Some(hi)) {
            return Ok(counts);
        }
        let mut start: Option<Item> = None;
        loop {
            let (entries, next) = self
                .entries_page(queue, lo, Some(hi), BATCH_GET_KEYS, start.take())
                .await?;
            let ids: Vec<TaskId> = entries.iter().map(|(_, id)| *id).collect();
            let tasks = self.get_many(&ids, false).await?;
            for (key, id) in entries {
                if let Some(task) = tasks.get(&id).filter(|t| ListKey::of(t).as_str() == key) {
                    counts.add(task.status, 1);
                }
            }
            start = next;
            if start.is_none() {
                return Ok(counts);
            }
        }
    }
}

impl DynamoStore {
    /// The retry `update` of task `id`, which makes it due at `scheduled`.
    async fn retry_without_reference(
        &self,
        id: TaskId,
        scheduled: Timestamp,
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
                    if current.status == TaskStatus::Pending && current.scheduled_at == scheduled {
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

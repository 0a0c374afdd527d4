//! The primitives every DynamoDB concept is built on: one table, conditional writes that
//! answer [`Write`], batch reads that retry unprocessed keys, paged range queries of the queue
//! index, and transactions.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    KeysAndAttributes, ReturnValue, ReturnValuesOnConditionCheckFailure, Select,
};

use super::client::sdk_error;
use super::expr::Expr;
use super::item::{Item, s};
use super::schema::{self, names};
use crate::store::{ListKey, StoreError};
use crate::task::TaskId;

mod transact;

pub use transact::Transact;

/// Keys per `BatchGetItem` call (the service's limit).
pub const BATCH_GET_KEYS: usize = 100;
/// Calls a `BatchGetItem` makes for keys the service left unprocessed before giving up.
const BATCH_GET_TRIES: u32 = 8;

/// The answer of a conditional write.
#[derive(Debug)]
pub enum Write<T> {
    /// The write landed.
    Done(T),
    /// The condition did not hold: nothing was written. The item as it was, if it exists.
    ConditionFailed(Option<Item>),
}

/// One entry of the queue index: a task's key there and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry's sort key.
    pub key: ListKey,
    /// The task it stands for.
    pub id: TaskId,
}

/// A part of one queue partition: keys above `lo` (left out) up to `hi` (included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    /// The partition, `<queue>#<shard>`.
    pub queue: String,
    /// Keys above this one, when set.
    pub lo: Option<ListKey>,
    /// Keys up to this one, when set.
    pub hi: Option<ListKey>,
}

impl KeyRange {
    /// True when no key lies in the range (DynamoDB refuses such a key condition).
    pub fn is_empty(&self) -> bool {
        matches!((&self.lo, &self.hi), (Some(lo), Some(hi)) if just_above(lo).as_str() > hi.as_str())
    }
}

/// The text just above `key`: keys have a fixed width, so no other key lies between them.
fn just_above(key: &ListKey) -> String {
    format!("{key} ")
}

/// One table and the client that reaches it.
#[derive(Debug, Clone)]
pub struct Table {
    client: Client,
    name: String,
}

impl Table {
    /// The table `name` through `client`.
    pub fn new(client: Client, name: impl Into<String>) -> Self {
        Self {
            client,
            name: name.into(),
        }
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The SDK client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The item with id `key`, read consistently.
    pub async fn get(&self, key: &str) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.name)
            .key(schema::ID, s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|err| sdk_error("GetItem", err))?;
        Ok(output.item)
    }

    /// Writes `item` if `condition` holds.
    pub async fn put(&self, item: Item, condition: Expr) -> Result<Write<()>, StoreError> {
        let (names, values) = condition.bindings(None);
        let result = self
            .client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item))
            .condition_expression(&condition.text)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        answer("PutItem", result.map(|_| ()))
    }

    /// Updates the item `key` if `condition` holds.
    pub async fn update(
        &self,
        key: &str,
        update: Expr,
        condition: Expr,
    ) -> Result<Write<()>, StoreError> {
        let written = self.update_then(key, update, condition, ReturnValue::None);
        Ok(match written.await? {
            Write::Done(_) => Write::Done(()),
            Write::ConditionFailed(old) => Write::ConditionFailed(old),
        })
    }

    /// Updates the item `key` if `condition` holds; the attributes the update changed, as
    /// written.
    pub async fn update_returning(
        &self,
        key: &str,
        update: Expr,
        condition: Expr,
    ) -> Result<Write<Item>, StoreError> {
        self.update_then(key, update, condition, ReturnValue::UpdatedNew)
            .await
    }

    async fn update_then(
        &self,
        key: &str,
        update: Expr,
        condition: Expr,
        returning: ReturnValue,
    ) -> Result<Write<Item>, StoreError> {
        let (names, values) = condition.bindings(Some(&update));
        let result = self
            .client
            .update_item()
            .table_name(&self.name)
            .key(schema::ID, s(key))
            .update_expression(&update.text)
            .condition_expression(&condition.text)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .return_values(returning)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        answer(
            "UpdateItem",
            result.map(|output| output.attributes.unwrap_or_default()),
        )
    }

    /// Deletes the item `key` if `condition` holds; the item deleted.
    pub async fn delete(&self, key: &str, condition: Expr) -> Result<Write<Item>, StoreError> {
        let (names, values) = condition.bindings(None);
        let result = self
            .client
            .delete_item()
            .table_name(&self.name)
            .key(schema::ID, s(key))
            .condition_expression(&condition.text)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        answer(
            "DeleteItem",
            result.map(|output| output.attributes.unwrap_or_default()),
        )
    }

    /// The items with the ids `keys` that exist, in `BatchGetItem` calls of up to 100 keys;
    /// keys the service leaves unprocessed (throttling) are asked for again with a backoff.
    pub async fn batch_get(
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
                    .map_err(|err| {
                        StoreError::backend_from("DynamoDB BatchGetItem request", err)
                    })?,
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
                    .request_items(&self.name, keys)
                    .send()
                    .await
                    .map_err(|err| sdk_error("BatchGetItem", err))?;
                found.extend(
                    output
                        .responses
                        .and_then(|mut responses| responses.remove(&self.name))
                        .unwrap_or_default(),
                );
                request = output
                    .unprocessed_keys
                    .and_then(|mut unprocessed| unprocessed.remove(&self.name))
                    .filter(|keys| !keys.keys().is_empty());
                if request.is_some() && tries >= BATCH_GET_TRIES {
                    return Err(StoreError::unavailable(
                        "DynamoDB left keys of a batch read unprocessed; try again",
                    ));
                }
            }
        }
        Ok(found)
    }

    /// One page of up to `limit` entries of `range` in the queue index, oldest first or
    /// newest first, from `start`; and where the next page starts, if anywhere.
    pub async fn entries(
        &self,
        range: &KeyRange,
        newest_first: bool,
        limit: usize,
        start: Option<Item>,
    ) -> Result<(Vec<Entry>, Option<Item>), StoreError> {
        if range.is_empty() {
            return Ok((Vec::new(), None));
        }
        let output = self
            .queue_query(range)
            .scan_index_forward(!newest_first)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|err| sdk_error("Query", err))?;
        let entries = output
            .items
            .unwrap_or_default()
            .iter()
            .filter_map(|item| {
                let key = item.get(schema::QUEUE_AT)?.as_s().ok()?;
                let id = item.get(schema::ID)?.as_s().ok()?.parse().ok()?;
                Some(Entry {
                    key: ListKey(key.clone()),
                    id,
                })
            })
            .collect();
        Ok((entries, output.last_evaluated_key))
    }

    /// The item ids of every entry of the index partition `queue`, page by page.
    pub async fn partition_ids(&self, queue: &str) -> Result<Vec<String>, StoreError> {
        let range = KeyRange {
            queue: queue.to_owned(),
            lo: None,
            hi: None,
        };
        let mut ids = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .queue_query(&range)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|err| sdk_error("Query", err))?;
            ids.extend(
                output
                    .items
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|item| Some(item.get(schema::ID)?.as_s().ok()?.clone())),
            );
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(ids);
            }
        }
    }

    /// The number of entries in `range` (`Select=COUNT`, index keys only).
    pub async fn count(&self, range: &KeyRange) -> Result<u64, StoreError> {
        if range.is_empty() {
            return Ok(0);
        }
        let mut count = 0;
        let mut start: Option<Item> = None;
        loop {
            let output = self
                .queue_query(range)
                .select(Select::Count)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|err| sdk_error("Query", err))?;
            count += u64::try_from(output.count).unwrap_or_default();
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(count);
            }
        }
    }

    /// The number of entries in `range`, reading at most about `max` of them: the count, and
    /// whether it is the whole range's.
    pub async fn count_up_to(
        &self,
        range: &KeyRange,
        max: usize,
    ) -> Result<(u64, bool), StoreError> {
        if range.is_empty() {
            return Ok((0, true));
        }
        let output = self
            .queue_query(range)
            .select(Select::Count)
            .limit(i32::try_from(max.max(1)).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|err| sdk_error("Query", err))?;
        let count = u64::try_from(output.count).unwrap_or_default();
        Ok((count, output.last_evaluated_key.is_none()))
    }

    /// Applies `update` to the item `key`, creating it when missing: for counters, whose
    /// `ADD`s need no condition.
    pub async fn update_always(&self, key: &str, update: Expr) -> Result<(), StoreError> {
        let (names, values) = update.bindings(None);
        self.client
            .update_item()
            .table_name(&self.name)
            .key(schema::ID, s(key))
            .update_expression(&update.text)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .send()
            .await
            .map_err(|err| sdk_error("UpdateItem", err))?;
        Ok(())
    }

    /// The ids of every task with `reference_uid` (and `task_type`) in the eventually
    /// consistent reference index.
    pub async fn reference_ids(
        &self,
        reference_uid: &str,
        task_type: Option<&str>,
    ) -> Result<Vec<TaskId>, StoreError> {
        let mut ids = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.name)
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
            let output = query.send().await.map_err(|err| sdk_error("Query", err))?;
            ids.extend(
                output
                    .items
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|item| item.get(schema::ID)?.as_s().ok()?.parse::<TaskId>().ok()),
            );
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(ids);
            }
        }
    }

    /// A query of the queue index over `range`.
    fn queue_query(
        &self,
        range: &KeyRange,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        let query = self
            .client
            .query()
            .table_name(&self.name)
            .index_name(schema::QUEUE_INDEX)
            .expression_attribute_names(names::QUEUE, schema::QUEUE)
            .expression_attribute_values(":queue", s(&range.queue));
        match (&range.lo, &range.hi) {
            (Some(lo), Some(hi)) => query
                .key_condition_expression(schema::KEY_QUEUE_BETWEEN)
                .expression_attribute_values(":lo", s(just_above(lo)))
                .expression_attribute_values(":hi", s(hi.as_str())),
            (Some(lo), None) => query
                .key_condition_expression(schema::KEY_QUEUE_FROM)
                .expression_attribute_values(":lo", s(just_above(lo))),
            (None, Some(hi)) => query
                .key_condition_expression(schema::KEY_QUEUE_UP_TO)
                .expression_attribute_values(":until", s(hi.as_str())),
            (None, None) => query.key_condition_expression(schema::KEY_QUEUE),
        }
    }
}

/// A write's result as [`Write`]: a failed condition check is an answer, not an error.
fn answer<T, E, R>(
    operation: &str,
    result: Result<T, SdkError<E, R>>,
) -> Result<Write<T>, StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match result {
        Ok(value) => Ok(Write::Done(value)),
        Err(err) => {
            let failed = err
                .as_service_error()
                .is_some_and(|service| service.code() == Some("ConditionalCheckFailedException"));
            if failed {
                Ok(Write::ConditionFailed(old_item_of(&err)))
            } else {
                Err(sdk_error(operation, err))
            }
        }
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

//! The items in the table, typed: a task, a guard, a watermark; and the conversion of each
//! both ways (via serde_dynamo). Nothing outside `store/dynamodb/` sees an item.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};

use super::schema::{
    self, GUARD_PREFIX, IDEMPOTENCY_PREFIX, QUEUE_SHARDS, SWEEP_PREFIX, WATERMARK_PREFIX,
};
use crate::clock::Timestamp;
use crate::retry::RetryPolicy;
use crate::store::{ListKey, StoreError};
use crate::task::{Held, Task, TaskId, TaskStatus};

/// A DynamoDB item.
pub type Item = HashMap<String, AttributeValue>;

/// The stored form of a task. Absent optional fields are left out of the item rather than
/// written as NULL: `referenceUid`, `queue` and `queueAt` are index keys, which must be strings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TaskItem {
    id: TaskId,
    #[serde(rename = "type")]
    task_type: String,
    payload: String,
    status: TaskStatus,
    scheduled_at: Timestamp,
    created_at: Timestamp,
    updated_at: Timestamp,
    attempts: u32,
    max_attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_failed_attempt_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    succeeded_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    finished_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reference_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease_expires_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<String>,
    #[serde(default)]
    retry_policy: RetryPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schedule_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schedule_tick: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    held: Option<Held>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    concurrency_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rate_key: Option<String>,
    #[serde(default)]
    queue: String,
    #[serde(default)]
    queue_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
}

/// The queue shard of a task: fixed by its id so every write of the task lands in the same one.
pub fn shard_of(id: TaskId) -> u32 {
    (id.as_u128() % u128::from(QUEUE_SHARDS)) as u32
}

/// The queues tasks are in: `due` holds pending, running and succeeded tasks (a claim and a
/// success do not move the entry), the others one status each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Queue {
    /// Pending, running and succeeded tasks, by scheduled instant.
    Due,
    /// Failed tasks, by finish.
    Failed,
    /// Cancelled tasks, by finish.
    Cancelled,
}

impl Queue {
    /// The queue a task with `status` is in.
    pub fn of(status: TaskStatus) -> Self {
        match status {
            TaskStatus::Pending | TaskStatus::Running | TaskStatus::Succeeded => Self::Due,
            TaskStatus::Failed => Self::Failed,
            TaskStatus::Cancelled => Self::Cancelled,
        }
    }

    /// The queue's name in the index, without the shard.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Due => "due",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// The index partition `<queue>#N` of shard `shard`.
    pub fn shard(self, shard: u32) -> String {
        format!("{}#{shard}", self.as_str())
    }

    /// Every shard's partition of the queue.
    pub fn shards(self) -> Vec<String> {
        (0..QUEUE_SHARDS).map(|shard| self.shard(shard)).collect()
    }
}

/// The queue partition task `id` is in while it has `status`.
pub fn queue_of(id: TaskId, status: TaskStatus) -> String {
    Queue::of(status).shard(shard_of(id))
}

/// The key of the watermark item of shard `shard` of the due queue.
pub fn watermark_key(shard: u32) -> String {
    format!("{WATERMARK_PREFIX}{}", Queue::Due.shard(shard))
}

/// The key of the sweep's progress item.
pub fn sweep_key() -> String {
    format!("{SWEEP_PREFIX}{}", Queue::Due.as_str())
}

/// The key of the guard item that holds `(reference_uid, task_type)` for one active task.
/// Task types never contain `#`, so the key is unambiguous.
pub fn guard_key(task_type: &str, reference_uid: &str) -> String {
    format!("{GUARD_PREFIX}{task_type}#{reference_uid}")
}

/// The key of the guard item that maps `(task_type, idempotency_key)` to its task.
pub fn idempotency_key_of(task_type: &str, key: &str) -> String {
    format!("{IDEMPOTENCY_PREFIX}{task_type}#{key}")
}

/// The item that stores `task`; finished tasks expire `ttl_after` their finish.
pub fn to_item(task: &Task, ttl_after: Duration) -> Result<Item, StoreError> {
    let item = TaskItem {
        id: task.id,
        task_type: task.task_type.clone(),
        payload: task.payload.clone(),
        status: task.status,
        scheduled_at: task.scheduled_at,
        created_at: task.created_at,
        updated_at: task.updated_at,
        attempts: task.attempts,
        max_attempts: task.max_attempts,
        last_error: task.last_error.clone(),
        last_failed_attempt_at: task.last_failed_attempt_at,
        succeeded_at: task.succeeded_at,
        finished_at: task.finished_at,
        reference_uid: task.reference_uid.clone(),
        lease_expires_at: task.lease_expires_at,
        idempotency_key: task.idempotency_key.clone(),
        retry_policy: task.retry_policy,
        lease_token: task.lease_token.clone(),
        schedule_name: task.schedule_name.clone(),
        schedule_tick: task.schedule_tick,
        held: task.held,
        concurrency_key: task.concurrency_key.clone(),
        rate_key: task.rate_key.clone(),
        queue: queue_of(task.id, task.status),
        queue_at: ListKey::of(task).to_string(),
        expires_at: task
            .finished_at
            .map(|finished| finished.plus(ttl_after).unix_seconds()),
    };
    serde_dynamo::to_item(item)
        .map_err(|err| StoreError::backend_from(format!("cannot encode task {}", task.id), err))
}

/// The task stored in `item`.
pub fn from_item(item: Item) -> Result<Task, StoreError> {
    let item: TaskItem = serde_dynamo::from_item(item)
        .map_err(|err| StoreError::backend_from("cannot decode a task item", err))?;
    Ok(Task {
        id: item.id,
        task_type: item.task_type,
        payload: item.payload,
        status: item.status,
        scheduled_at: item.scheduled_at,
        created_at: item.created_at,
        updated_at: item.updated_at,
        attempts: item.attempts,
        max_attempts: item.max_attempts,
        last_error: item.last_error,
        last_failed_attempt_at: item.last_failed_attempt_at,
        succeeded_at: item.succeeded_at,
        finished_at: item.finished_at,
        reference_uid: item.reference_uid,
        lease_expires_at: item.lease_expires_at,
        idempotency_key: item.idempotency_key,
        retry_policy: item.retry_policy,
        lease_token: item.lease_token,
        schedule_name: item.schedule_name,
        schedule_tick: item.schedule_tick,
        concurrency_key: item.concurrency_key,
        rate_key: item.rate_key,
        held: item.held,
    })
}

/// A string attribute value.
pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// A number attribute value.
pub fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The task id an item names, whether or not the rest of it decodes.
pub fn item_id(item: &Item) -> Option<TaskId> {
    item.get(schema::ID)?.as_s().ok()?.parse().ok()
}

/// A guard: the item that holds a `(referenceUid, type)` for one active task, or maps a
/// `(type, idempotencyKey)` to the task it made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuardItem {
    /// `ref#<type>#<referenceUid>` or `idem#<type>#<key>`.
    pub id: String,
    /// The task that holds it (empty on a malformed guard, which any create takes over).
    #[serde(default)]
    pub task_id: String,
    /// When it was written: a holder not written yet is a create in flight for a while.
    #[serde(default, deserialize_with = "lenient_timestamp")]
    pub created_at: Option<Timestamp>,
    /// Unique to each write, so a takeover is conditioned on the version it read (absent on
    /// guards written before guards carried one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl GuardItem {
    /// A fresh guard `id` for `task_id`, written at `now`.
    pub fn new(id: &str, task_id: TaskId, now: Timestamp) -> Self {
        Self {
            id: id.to_owned(),
            task_id: task_id.to_string(),
            created_at: Some(now),
            version: Some(crate::store::transition::new_lease_token()),
        }
    }

    /// The item.
    pub fn to_item(&self) -> Result<Item, StoreError> {
        serde_dynamo::to_item(self).map_err(|err| {
            StoreError::backend_from(format!("cannot encode guard {}", self.id), err)
        })
    }

    /// The guard stored in `item`.
    pub fn from_item(item: Item) -> Result<Self, StoreError> {
        serde_dynamo::from_item(item)
            .map_err(|err| StoreError::backend_from("cannot decode a guard item", err))
    }
}

/// An unreadable guard time counts as old: the holder is no longer in flight.
fn lenient_timestamp<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Timestamp>, D::Error> {
    let text: Option<String> = Option::deserialize(deserializer)?;
    Ok(text.and_then(|text| text.parse().ok()))
}

/// A shard's watermark: every `due#N` entry at or below `up_to` is finished, but the open
/// ones it lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatermarkItem {
    /// `mark#due#N`.
    pub id: String,
    /// The highest entry key passed, with everything below it (absent: no mark).
    #[serde(default)]
    pub up_to: Option<String>,
    /// The entries at or below `up_to` that were open when it was written.
    #[serde(default)]
    pub open_entries: Vec<OpenMark>,
}

/// An open entry below a watermark, as the watermark item lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenMark {
    /// The entry's key.
    #[serde(rename = "k")]
    pub key: String,
    /// Its task's type.
    #[serde(rename = "t")]
    pub task_type: String,
    /// Not claimable before then (a lease's expiry).
    #[serde(rename = "u")]
    pub until: String,
}

impl WatermarkItem {
    /// The watermark stored in `item`.
    pub fn from_item(item: Item) -> Result<Self, StoreError> {
        serde_dynamo::from_item(item)
            .map_err(|err| StoreError::backend_from("cannot decode a watermark item", err))
    }
}

/// Where the sweep's current pass stands (`sweep#due`): a pass reads the shards one after the
/// other, each from its bottom up to its watermark.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepItem {
    /// `sweep#due`.
    pub id: String,
    /// The shard the pass is at; [`QUEUE_SHARDS`] once the pass is over.
    #[serde(default)]
    pub shard: u32,
    /// The last entry of that shard the pass read (absent: none yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to: Option<String>,
    /// When the pass began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub began: Option<Timestamp>,
    /// Unique to each write: a sweep writes its progress only over the one it read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl SweepItem {
    /// The item.
    pub fn to_item(&self) -> Result<Item, StoreError> {
        serde_dynamo::to_item(self)
            .map_err(|err| StoreError::backend_from("cannot encode the sweep's progress", err))
    }

    /// The sweep's progress stored in `item`.
    pub fn from_item(item: Item) -> Result<Self, StoreError> {
        serde_dynamo::from_item(item)
            .map_err(|err| StoreError::backend_from("cannot decode the sweep's progress", err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::NewTask;

    #[test]
    fn round_trip_keeps_every_field_and_omits_absent_keys() {
        let now: Timestamp = "2026-11-27T20:00:00Z".parse().unwrap();
        let task = Task::from_new(NewTask::new("sendWebhook", "{\"a\":1}"), now);
        let item = to_item(&task, Duration::ZERO).unwrap();
        assert!(!item.contains_key("referenceUid"));
        assert!(!item.contains_key("lastError"));
        assert_eq!(
            item["queueAt"].as_s().ok().map(String::as_str),
            Some(format!("2026-11-27T20:00:00.000Z#{}", task.id).as_str())
        );
        assert_eq!(
            item["queue"].as_s().ok().map(String::as_str),
            Some(format!("due#{}", shard_of(task.id)).as_str())
        );
        assert_eq!(from_item(item).unwrap(), task);
    }

    #[test]
    fn succeeded_tasks_keep_their_due_entry_and_get_a_ttl() {
        let now: Timestamp = "2026-11-27T20:00:00Z".parse().unwrap();
        let mut task = Task::from_new(NewTask::new("t", "p"), now);
        let pending = to_item(&task, Duration::from_secs(60)).unwrap();
        task.status = TaskStatus::Succeeded;
        task.finished_at = Some(now.plus(Duration::from_secs(5)));
        let item = to_item(&task, Duration::from_secs(60)).unwrap();
        assert_eq!(
            item["queue"].as_s().ok().map(String::as_str),
            pending["queue"].as_s().ok().map(String::as_str)
        );
        assert_eq!(
            item["queueAt"].as_s().ok().map(String::as_str),
            pending["queueAt"].as_s().ok().map(String::as_str)
        );
        task.status = TaskStatus::Failed;
        let failed = to_item(&task, Duration::from_secs(60)).unwrap();
        assert!(failed["queue"].as_s().unwrap().starts_with("failed#"));
        assert_eq!(
            item.get("expiresAt").and_then(|v| v.as_n().ok()).unwrap(),
            &(now.unix_seconds() + 65).to_string()
        );
    }

    #[test]
    fn guard_and_watermark_items_use_the_schema_names() {
        let now: Timestamp = "2027-01-01T00:00:00Z".parse().unwrap();
        let id = TaskId::new(now.0);
        let guard = GuardItem::new("ref#t#r", id, now).to_item().unwrap();
        let mut names: Vec<&str> = guard.keys().map(String::as_str).collect();
        names.sort_unstable();
        let mut expected = [
            schema::ID,
            schema::GUARD_TASK_ID,
            schema::GUARD_CREATED_AT,
            schema::GUARD_VERSION,
        ];
        expected.sort_unstable();
        assert_eq!(names, expected);
        assert_eq!(GuardItem::from_item(guard).unwrap().task_id, id.to_string());
        let mark: Item = [
            (schema::ID.to_owned(), s(watermark_key(0))),
            (schema::UP_TO.to_owned(), s("k")),
        ]
        .into();
        assert_eq!(
            WatermarkItem::from_item(mark).unwrap().up_to.as_deref(),
            Some("k")
        );
    }
}

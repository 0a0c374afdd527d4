//! Every DynamoDB name Tasker uses (attributes, indexes, expressions) and the table definition.
//!
//! `template.yaml` defines the same table; a test compares [`TableSchema::tasks`] with it.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use serde::Serialize;

use crate::store::StoreError;

/// Partition key of the table: the task id (or a reference guard's key).
pub const ID: &str = "id";
/// Which queue an item is in, and its shard: `due#N` while pending, running or succeeded
/// (a claim and a success leave the entry where it is), `failed#N` or `cancelled#N`.
pub const QUEUE: &str = "queue";
/// Sort key in the queue index: the task's [`ListKey`](crate::store::ListKey),
/// `<instant>#<id>`, where the instant is when it was scheduled while in `due#N` and its finish
/// once failed or cancelled.
pub const QUEUE_AT: &str = "queueAt";
/// The caller's reference; partition key of the reference index.
pub const REFERENCE_UID: &str = "referenceUid";
/// The task type; sort key of the reference index.
pub const TYPE: &str = "type";
/// Task status attribute.
pub const STATUS: &str = "status";
/// When a task may run (its next attempt, after a failure).
pub const SCHEDULED_AT: &str = "scheduledAt";
/// Attempts started.
pub const ATTEMPTS: &str = "attempts";
/// Attempts allowed.
pub const MAX_ATTEMPTS: &str = "maxAttempts";
/// Lease expiry of a running task.
pub const LEASE_EXPIRES_AT: &str = "leaseExpiresAt";
/// The token of the latest claim; outcome writes are conditioned on it.
pub const LEASE_TOKEN: &str = "leaseToken";
/// Last change.
pub const UPDATED_AT: &str = "updatedAt";
/// Finish instant.
pub const FINISHED_AT: &str = "finishedAt";
/// Unix seconds after which DynamoDB TTL may delete a finished item (a backstop for cleanup).
pub const EXPIRES_AT: &str = "expiresAt";
/// On a guard item: the task that holds the `(referenceUid, type)` or idempotency pair.
pub const GUARD_TASK_ID: &str = "taskId";
/// On a reference guard item: when the guard was written.
pub const GUARD_CREATED_AT: &str = "createdAt";
/// On a guard item: a token unique to each write, which takeovers are conditioned on.
pub const GUARD_VERSION: &str = "version";
/// On a watermark item: every `due#N` entry at or below this key is finished.
pub const UP_TO: &str = "upTo";

/// Index over every task by status and shard, ordered by [`QUEUE_AT`]: claims, cleanup,
/// listings and counts read it instead of the table.
pub const QUEUE_INDEX: &str = "queue-index";
/// Sparse index over tasks that have a `referenceUid`.
pub const REFERENCE_INDEX: &str = "reference-index";

/// Number of queue shards; spreads a large backlog over index partitions.
pub const QUEUE_SHARDS: u32 = 4;
/// Prefix of a reference guard item's [`ID`].
pub const GUARD_PREFIX: &str = "ref#";
/// Prefix of an idempotency guard item's [`ID`].
pub const IDEMPOTENCY_PREFIX: &str = "idem#";
/// The idempotency key attribute of a task.
pub const IDEMPOTENCY_KEY: &str = "idempotencyKey";
/// Prefix of a due queue's watermark item's [`ID`] (`mark#due#N`).
pub const WATERMARK_PREFIX: &str = "mark#";
/// Prefix of the item holding the sweep's progress (`sweep#due`).
pub const SWEEP_PREFIX: &str = "sweep#";

/// Prefix of a rate key's item's [`ID`] (`rate#<key>`, see `keys.rs`).
pub const RATE_PREFIX: &str = "rate#";
/// A rate key item's next start (GCRA's theoretical arrival time).
pub const NEXT_START: &str = "nextStart";
/// A rate key item's first start not booked for a held task yet (SQS mode), in milliseconds
/// since the Unix epoch: a number, so that a booking is one atomic add.
pub const BOOKED_UNTIL: &str = "bookedUntil";
/// Prefix of a concurrency key's item's [`ID`] (`concurrency#<key>`, see `keys/slots.rs`).
pub const CONCURRENCY_PREFIX: &str = "concurrency#";
/// A concurrency key item's running tasks: a map of task id to its lease's end.
pub const HOLDERS: &str = "holders";
/// A concurrency key item's version, moved by every write that adds holders.
pub const KEY_VERSION: &str = "version";
/// A token unique to the last write that added holders to a concurrency key item: a write the
/// SDK repeated knows its first try landed.
pub const KEY_WRITER: &str = "writtenBy";

/// Prefix of a schedule item's [`ID`] (`sched#<name>`).
pub const SCHEDULE_PREFIX: &str = "sched#";
/// Prefix of a day's counts of finished tasks: `count#<YYYY-MM-DD>` (see `tally.rs`).
pub const TALLY_PREFIX: &str = "count#";
/// The item a processor writes what it last saw of the due queue to (see `overview.rs`).
pub const QUEUE_SEEN_ID: &str = "seen#due";
/// The queue-index partition every schedule item is in, under its name (which never changes,
/// so advancing a schedule never writes the index).
pub const SCHEDULE_QUEUE: &str = "sched";
/// On a schedule item: grows by one with every write, which is conditioned on it.
pub const REVISION: &str = "revision";
/// Condition for replacing a schedule: it is still at the revision read.
pub const COND_REVISION: &str = "revision = :revision";
/// Condition for deleting an item that must exist.
pub const COND_ITEM_EXISTS: &str = "attribute_exists(id)";

/// Expression attribute names used in every expression (`type` and `status` are reserved words).
pub mod names {
    /// `#status`
    pub const STATUS: &str = "#status";
    /// `#queue`
    pub const QUEUE: &str = "#queue";
    /// `#type`
    pub const TYPE: &str = "#type";
}

/// Condition for creating an item that must not exist yet.
pub const COND_NEW_ITEM: &str = "attribute_not_exists(id)";
/// The attributes a transition is conditioned on (see [`super::expr::unchanged`]): every
/// transition changes at least one of them (a claim writes a fresh `leaseToken`), so an item
/// that still has the values read has not changed since the read. `scheduledAt` is there for
/// failed and cancelled tasks, whose `queueAt` is their finish: with it, two states of a task
/// that agree on all six agree on every attribute a transition keeps.
pub const FINGERPRINT: [&str; 6] = [
    STATUS,
    ATTEMPTS,
    UPDATED_AT,
    LEASE_TOKEN,
    QUEUE_AT,
    SCHEDULED_AT,
];
/// Condition for purging a failed or cancelled task: finished at or before the cutoff.
pub const COND_PURGEABLE: &str =
    "#queue IN (:failed_queue, :cancelled_queue) AND queueAt <= :cutoff";
/// Condition for purging a succeeded task: finished at or before the cutoff.
pub const COND_PURGEABLE_SUCCESS: &str = "#status = :succeeded AND finishedAt <= :cutoff";
/// Condition for raising a watermark: it only ever rises.
pub const COND_WATERMARK_RISES: &str = "attribute_not_exists(upTo) OR upTo < :up_to";
/// Update expression of a watermark.
pub const UPDATE_WATERMARK: &str = "SET upTo = :up_to, updatedAt = :now, openEntries = :open";
/// Condition for deleting a guard, or re-taking it in a retry: it still names the task.
pub const COND_GUARD_HELD_BY: &str = "taskId = :task";
/// Condition for writing the sweep's progress: it is still at the version read.
pub const COND_VERSION: &str = "version = :version";
/// Condition for taking a guard over: it still names the holder we read, at the version we read.
pub const COND_GUARD_VERSION: &str = "taskId = :task AND version = :version";
/// The same for a guard written before guards carried a version.
pub const COND_GUARD_UNVERSIONED: &str = "taskId = :task AND attribute_not_exists(version)";
/// Key condition of a queue-index query up to a key.
pub const KEY_QUEUE_UP_TO: &str = "#queue = :queue AND queueAt <= :until";
/// Key condition of a whole queue.
pub const KEY_QUEUE: &str = "#queue = :queue";
/// Key condition of a queue-index query between two keys (both included).
pub const KEY_QUEUE_BETWEEN: &str = "#queue = :queue AND queueAt BETWEEN :lo AND :hi";
/// Key condition of a queue-index query from a key up (included).
pub const KEY_QUEUE_FROM: &str = "#queue = :queue AND queueAt >= :lo";
/// Key condition of a reference-index query, with and without the type.
pub const KEY_REFERENCE: &str = "referenceUid = :reference";
/// Key condition of a reference-index query narrowed to one type.
pub const KEY_REFERENCE_AND_TYPE: &str = "referenceUid = :reference AND #type = :type";

/// The table definition in a neutral form: built into `CreateTable` calls and compared with
/// the CloudFormation `AWS::DynamoDB::Table` properties in `template.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TableSchema {
    /// Every key attribute with its scalar type.
    pub attribute_definitions: Vec<AttributeDef>,
    /// The table's key.
    pub key_schema: Vec<KeyDef>,
    /// The global secondary indexes.
    pub global_secondary_indexes: Vec<IndexDef>,
    /// The TTL attribute.
    pub time_to_live_attribute: String,
}

/// An attribute definition.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttributeDef {
    /// Attribute name.
    pub attribute_name: String,
    /// `S`, `N` or `B`.
    pub attribute_type: String,
}

/// A key element.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyDef {
    /// Attribute name.
    pub attribute_name: String,
    /// `HASH` or `RANGE`.
    pub key_type: String,
}

/// A global secondary index.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct IndexDef {
    /// Index name.
    pub index_name: String,
    /// Index key.
    pub key_schema: Vec<KeyDef>,
    /// `KEYS_ONLY`, `INCLUDE` or `ALL`.
    pub projection_type: String,
}

fn key(name: &str, key_type: &str) -> KeyDef {
    KeyDef {
        attribute_name: name.to_owned(),
        key_type: key_type.to_owned(),
    }
}

impl TableSchema {
    /// The Tasker table.
    pub fn tasks() -> Self {
        let string_attr = |name: &str| AttributeDef {
            attribute_name: name.to_owned(),
            attribute_type: "S".to_owned(),
        };
        Self {
            attribute_definitions: [ID, QUEUE, QUEUE_AT, REFERENCE_UID, TYPE]
                .into_iter()
                .map(string_attr)
                .collect(),
            key_schema: vec![key(ID, "HASH")],
            // KEYS_ONLY keeps index writes at one unit: a claim's UpdateItem returns the item.
            global_secondary_indexes: vec![
                IndexDef {
                    index_name: QUEUE_INDEX.to_owned(),
                    key_schema: vec![key(QUEUE, "HASH"), key(QUEUE_AT, "RANGE")],
                    projection_type: "KEYS_ONLY".to_owned(),
                },
                IndexDef {
                    index_name: REFERENCE_INDEX.to_owned(),
                    key_schema: vec![key(REFERENCE_UID, "HASH"), key(TYPE, "RANGE")],
                    projection_type: "KEYS_ONLY".to_owned(),
                },
            ],
            time_to_live_attribute: EXPIRES_AT.to_owned(),
        }
    }
}

fn build_error(err: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::backend_from("invalid table definition", err)
}

fn key_elements(keys: &[KeyDef]) -> Result<Vec<KeySchemaElement>, StoreError> {
    keys.iter()
        .map(|k| {
            KeySchemaElement::builder()
                .attribute_name(&k.attribute_name)
                .key_type(KeyType::from(k.key_type.as_str()))
                .build()
                .map_err(build_error)
        })
        .collect()
}

/// Creates the table (on-demand billing) with its indexes and TTL, as `template.yaml` does.
pub async fn create_table(client: &Client, table: &str) -> Result<(), StoreError> {
    let schema = TableSchema::tasks();
    let mut request = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(key_elements(&schema.key_schema)?));
    for attr in &schema.attribute_definitions {
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(&attr.attribute_name)
                .attribute_type(ScalarAttributeType::from(attr.attribute_type.as_str()))
                .build()
                .map_err(build_error)?,
        );
    }
    for index in &schema.global_secondary_indexes {
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(&index.index_name)
                .set_key_schema(Some(key_elements(&index.key_schema)?))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::from(index.projection_type.as_str()))
                        .build(),
                )
                .build()
                .map_err(build_error)?,
        );
    }
    request
        .send()
        .await
        .map_err(|err| super::client::sdk_error("CreateTable", err))?;
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(&schema.time_to_live_attribute)
                .enabled(true)
                .build()
                .map_err(build_error)?,
        )
        .send()
        .await
        .map_err(|err| super::client::sdk_error("UpdateTimeToLive", err))?;
    Ok(())
}

//! The DynamoDB backend: one table keyed by task id, a sparse sharded queue index, a reference
//! index, and a conditional write for every state change.
//!
//! Layers, bottom up: [`table`] (the primitives: conditional writes answering
//! [`table::Write`], batch reads, range queries, transactions) and [`expr`] (every condition
//! and update, built from the names in [`schema`]); [`item`] (the typed items); then one module
//! per concept: [`tasks`] (reads, creates, transitions), [`guards`], [`queue`] (claims and
//! outcomes) over [`due`] (finding due tasks) and [`watermark`], [`listing`], [`purge`] and
//! [`sweep`] (the safety net below the watermarks). Each module implements its part of the
//! [`crate::store::Store`] interface as methods of [`DynamoStore`].

mod client;
mod delivery;
pub mod due;
mod expr;
mod flow;
mod guards;
pub mod item;
mod keys;
mod listing;
mod overview;
#[cfg(feature = "testing")]
pub mod probe;
mod purge;
mod queue;
mod schedules;
pub mod schema;
mod sweep;
mod table;
mod tally;
mod tasks;
mod watermark;

use std::time::Duration;

use aws_sdk_dynamodb::Client;

pub use self::client::{client_from_env, retry_config, timeout_config};
use self::due::DueQueue;
use self::table::Table;
use super::{ListKey, StoreError};

/// Tasks in one DynamoDB table.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    table: Table,
    ttl_after: Duration,
    /// What this process knows of the due queue, shared by clones.
    due: DueQueue,
    /// This process's changes to the counts of finished tasks, not yet written.
    tally: tally::Tally,
    /// This process's list of the schedules.
    schedules: schedules::KnownSchedules,
    /// The tasks this process holds for their keys, and the slots its attempts took.
    keys: keys::KeyState,
    /// When this process last published its look at the due queue; `None` until it claims
    /// from the due queue (only processors that scan it publish).
    seen: std::sync::Arc<std::sync::Mutex<Option<Option<std::time::Instant>>>>,
}

impl DynamoStore {
    /// A store over `table`; finished items get a TTL `ttl_after` their finish.
    pub fn new(client: Client, table: impl Into<String>, ttl_after: Duration) -> Self {
        let table = Table::new(client, table);
        Self {
            due: DueQueue::new(table.clone()),
            tally: tally::Tally::default(),
            schedules: schedules::KnownSchedules::default(),
            keys: keys::KeyState::default(),
            table,
            ttl_after,
            seen: std::sync::Arc::default(),
        }
    }

    /// Writes this process's counts of finished tasks now (after an operator's change, which
    /// no later run of this process may follow).
    async fn flush_tally(&self) {
        self.tally.flush(&self.table, self.ttl_after, true).await;
    }

    /// The table name.
    pub fn table(&self) -> &str {
        self.table.name()
    }

    /// The SDK client.
    pub fn client(&self) -> &Client {
        self.table.client()
    }

    /// The watermark of each due-queue shard as the table has it (`None`: never raised).
    pub async fn watermarks(&self) -> Result<Vec<Option<ListKey>>, StoreError> {
        let marks = watermark::read_all(&self.table).await?;
        Ok(marks.into_iter().map(|mark| Some(mark?.up_to)).collect())
    }

    /// The open entries each due-queue shard's watermark lists, by shard.
    pub async fn watermark_open(&self) -> Result<Vec<Vec<ListKey>>, StoreError> {
        let marks = watermark::read_all(&self.table).await?;
        let listed = |mark: Option<watermark::Mark>| {
            mark.map_or_else(Vec::new, |mark| {
                mark.open.into_iter().map(|(key, _)| key).collect()
            })
        };
        Ok(marks.into_iter().map(listed).collect())
    }
}

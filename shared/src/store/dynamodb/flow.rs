//! Flow control on DynamoDB: the paused types in one item, `flow#types`, an attribute
//! `paused:<type>` per paused type holding when it was paused; and the due and running tasks
//! per type from a bounded look at the due queue.

use super::DynamoStore;
use super::expr::Expr;
use super::item::{Item, s};
use super::table::Table;
use crate::clock::Timestamp;
use crate::store::{PausedTypes, StoreError, TypeCounts};

/// The item holding the paused types.
pub const FLOW_KEY: &str = "flow#types";
/// The prefix of a paused type's attribute.
const PAUSED_PREFIX: &str = "paused:";
/// Items a per-type count reads at most (half a read unit each), and index entries it takes.
const COUNT_READS: usize = 1000;
const COUNT_ENTRIES: usize = 5000;

/// The paused types in `item`.
fn paused_in(item: Option<Item>) -> Result<PausedTypes, StoreError> {
    let Some(item) = item else {
        return Ok(PausedTypes::new());
    };
    item.into_iter()
        .filter_map(|(name, value)| {
            let task_type = name.strip_prefix(PAUSED_PREFIX)?.to_owned();
            Some((task_type, value))
        })
        .map(|(task_type, value)| {
            let at = value
                .as_s()
                .ok()
                .and_then(|text| text.parse().ok())
                .ok_or_else(|| {
                    StoreError::backend(format!(
                        "DynamoDB: {FLOW_KEY} holds no instant for the paused type {task_type:?}"
                    ))
                })?;
            Ok((task_type, at))
        })
        .collect()
}

impl DynamoStore {
    /// The paused types, read eventually consistently (half a read unit): a pause reaches a
    /// processor within its next read plus the index-free item's replication, under a second.
    pub async fn type_list_paused(&self) -> Result<PausedTypes, StoreError> {
        let item = self
            .table
            .batch_get(&[FLOW_KEY.to_owned()], false)
            .await?
            .into_iter()
            .next();
        paused_in(item)
    }

    /// Pauses or resumes `task_type`; the paused types after the write, read consistently.
    pub async fn type_set_paused(
        &self,
        task_type: &str,
        paused: bool,
        now: Timestamp,
    ) -> Result<PausedTypes, StoreError> {
        set_paused(&self.table, task_type, paused, now).await
    }

    /// Due and running tasks per type, from a look at the due queue that reads at most
    /// [`COUNT_READS`] items: `exact` is false when it stopped there.
    pub async fn type_count(&self, now: Timestamp) -> Result<TypeCounts, StoreError> {
        self.due
            .active_by_type(now, COUNT_READS, COUNT_ENTRIES)
            .await
    }
}

async fn set_paused(
    table: &Table,
    task_type: &str,
    paused: bool,
    now: Timestamp,
) -> Result<PausedTypes, StoreError> {
    let update = if paused {
        Expr::new("SET #t = if_not_exists(#t, :at)").value(":at", s(now.to_text()))
    } else {
        Expr::new("REMOVE #t")
    }
    .name("#t", &format!("{PAUSED_PREFIX}{task_type}"));
    table.update_always(FLOW_KEY, update).await?;
    paused_in(table.get(FLOW_KEY).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flow_item_reads_as_its_paused_types() {
        let item = Item::from([
            ("id".to_owned(), s(FLOW_KEY)),
            (
                "paused:mail".to_owned(),
                s(crate::store::conformance::t0().to_text()),
            ),
        ]);
        let paused = paused_in(Some(item)).expect("reads");
        assert_eq!(paused.keys().collect::<Vec<_>>(), ["mail"]);
        assert!(paused_in(None).expect("reads").is_empty());
        let bad = Item::from([(
            "paused:x".to_owned(),
            aws_sdk_dynamodb::types::AttributeValue::N("1".to_owned()),
        )]);
        assert!(paused_in(Some(bad)).is_err());
    }
}

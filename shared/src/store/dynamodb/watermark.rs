//! The due queue's watermarks: one item per shard (`mark#due#N`) below which every entry is
//! finished. They only rise; see [`super::due`] for when a process may raise one.

use super::expr;
use super::item::{WatermarkItem, watermark_key};
use super::schema::QUEUE_SHARDS;
use super::table::{Table, Write};
use crate::clock::Timestamp;
use crate::store::{ListKey, StoreError};

/// The watermark of every shard as the table has it, by shard (`None`: never raised).
pub async fn read_all(table: &Table) -> Result<Vec<Option<ListKey>>, StoreError> {
    let keys: Vec<String> = (0..QUEUE_SHARDS).map(watermark_key).collect();
    let mut marks = vec![None; keys.len()];
    for item in table.batch_get(&keys, false).await? {
        let mark = WatermarkItem::from_item(item)?;
        if let Some(shard) = keys.iter().position(|key| *key == mark.id) {
            marks[shard] = mark.up_to.map(ListKey);
        }
    }
    Ok(marks)
}

/// Raises the watermark of `shard` to `key`, unless it is already as high.
pub async fn raise(
    table: &Table,
    shard: u32,
    key: &ListKey,
    now: Timestamp,
) -> Result<(), StoreError> {
    let update = expr::set_watermark(key.as_str(), now);
    // A failed condition: another process raised it further already.
    match table
        .update(
            &watermark_key(shard),
            update,
            expr::watermark_rises(key.as_str()),
        )
        .await?
    {
        Write::Done(()) | Write::ConditionFailed(_) => Ok(()),
    }
}

//! The due queue's watermarks: one item per shard (`mark#due#N`) below which every entry is
//! finished, but the open ones the item lists (a task under a long lease, a paused type's due
//! task). They only rise; see [`super::due`] for when a process may raise one.

use super::due::Open;
use super::expr;
use super::item::{OpenMark, WatermarkItem, watermark_key};
use super::schema::QUEUE_SHARDS;
use super::table::{Table, Write};
use crate::clock::Timestamp;
use crate::store::{ListKey, StoreError};

/// Open entries a watermark lists at most (about 100 bytes each, so the item stays within a
/// few write units); a process does not raise a watermark past more.
pub const OPEN_LISTED: usize = 32;

/// A shard's watermark as the table has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    /// Every entry at or below this key is finished, but `open`.
    pub up_to: ListKey,
    /// The entries at or below `up_to` that were open when it was written, with what each
    /// waited for.
    pub open: Vec<(ListKey, Open)>,
}

impl Mark {
    /// True when the entry `key` is at or below the watermark and not listed open: finished.
    pub fn passed(&self, key: &ListKey) -> bool {
        *key <= self.up_to && !self.open.iter().any(|(open, _)| open == key)
    }
}

/// The watermark of every shard as the table has it, by shard (`None`: never raised).
pub async fn read_all(table: &Table) -> Result<Vec<Option<Mark>>, StoreError> {
    let keys: Vec<String> = (0..QUEUE_SHARDS).map(watermark_key).collect();
    let mut marks = vec![None; keys.len()];
    for item in table.batch_get(&keys, false).await? {
        let mark = WatermarkItem::from_item(item)?;
        if let Some(shard) = keys.iter().position(|key| *key == mark.id) {
            marks[shard] = mark.up_to.map(|up_to| Mark {
                up_to: ListKey(up_to),
                open: mark.open_entries.into_iter().filter_map(listed).collect(),
            });
        }
    }
    Ok(marks)
}

/// An open entry as listed (read again at once if its instant is unreadable), if its key
/// names a task.
fn listed(mark: OpenMark) -> Option<(ListKey, Open)> {
    let key = ListKey(mark.key);
    if key.task_id().is_none() {
        tracing::warn!(key = %key, "a watermark lists an entry that names no task");
        return None;
    }
    let open = Open {
        task_type: mark.task_type,
        until: mark.until.parse().unwrap_or(Timestamp::MIN),
    };
    Some((key, open))
}

/// Raises the watermark of `shard` to `key`, listing the `open` entries at or below it, unless
/// it is already as high.
pub async fn raise(
    table: &Table,
    shard: u32,
    key: &ListKey,
    open: &[(ListKey, Open)],
    now: Timestamp,
) -> Result<(), StoreError> {
    let open: Vec<OpenMark> = open
        .iter()
        .map(|(key, open)| OpenMark {
            key: key.as_str().to_owned(),
            task_type: open.task_type.clone(),
            until: open.until.to_text(),
        })
        .collect();
    let update = expr::set_watermark(key.as_str(), now, &open);
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

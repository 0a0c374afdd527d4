//! Concurrency keys: one item per key (`concurrency#<key>`) whose `holders` map names each task
//! holding one of the key's slots with its lease's end. A claim round reads it consistently,
//! counts the holders whose lease has not ended, and adds the tasks it starts with one
//! conditional write on the version it read (dropping holders whose lease ended): a round whose
//! write finds the item moved by another claim starts none of the key's tasks. An attempt's
//! end removes its holder (conditioned on its lease, so a later attempt of the same task keeps
//! its own). A holder that crashed frees its slot when its lease ends, unwritten.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::super::DynamoStore;
use super::super::expr::Expr;
use super::super::item::{Item, n, s};
use super::super::schema::{CONCURRENCY_PREFIX, EXPIRES_AT, HOLDERS, ID, KEY_VERSION, KEY_WRITER};
use super::super::table::Write;
use crate::clock::Timestamp;
use crate::store::{Holders, StoreError};
use crate::task::TaskId;

/// Holders whose lease ended one write drops at most, so its expression stays under
/// DynamoDB's 4 KB (the next write drops more).
const REMOVES_PER_WRITE: usize = 100;

fn item_id(key: &str) -> String {
    format!("{CONCURRENCY_PREFIX}{key}")
}

/// A concurrency key's item as a claim read it.
#[derive(Debug, Clone, Default)]
pub(super) struct Slots {
    /// Each holder's task id and lease end.
    holders: Vec<(String, Timestamp)>,
    /// The item's version (`None`: no item yet).
    version: Option<u64>,
}

impl Slots {
    /// The holders whose lease has not ended by `now`.
    pub(super) fn running(&self, now: Timestamp) -> Holders {
        let live = self.holders.iter().filter(|(_, end)| *end > now);
        Holders {
            running: u32::try_from(live.clone().count()).unwrap_or(u32::MAX),
            first_end: live.map(|(_, end)| *end).min(),
        }
    }

    /// The item `item` of the key `key`.
    fn from_item(key: &str, item: &Item) -> Result<Self, StoreError> {
        let bad = StoreError::backend;
        let version = item
            .get(KEY_VERSION)
            .and_then(|value| value.as_n().ok())
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| bad(format!("{} has no version", item_id(key))))?;
        let mut holders = Vec::new();
        if let Some(AttributeValue::M(map)) = item.get(HOLDERS) {
            for (id, end) in map {
                let end = end
                    .as_s()
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .ok_or_else(|| bad(format!("{} has a bad lease for {id}", item_id(key))))?;
                holders.push((id.clone(), end));
            }
        }
        Ok(Self {
            holders,
            version: Some(version),
        })
    }

    /// True when task `id` holds a slot whose lease has not ended by `now`.
    pub(super) fn holds(&self, id: TaskId, now: Timestamp) -> bool {
        let id = id.to_string();
        self.holders
            .iter()
            .any(|(holder, end)| *holder == id && *end > now)
    }
}

impl DynamoStore {
    /// The concurrency key `key`'s holders (one consistent read).
    pub(super) async fn slots(&self, key: &str) -> Result<Slots, StoreError> {
        match self.table.get(&item_id(key)).await? {
            Some(item) => Slots::from_item(key, &item),
            None => Ok(Slots::default()),
        }
    }

    /// Adds `taken` (task ids with their lease's end) to `key`'s holders if the item is still
    /// as `read` at `now`, dropping holders whose lease ended: false when another claim moved
    /// it first.
    pub(super) async fn take_slots(
        &self,
        key: &str,
        read: &Slots,
        taken: &[(TaskId, Timestamp)],
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let last_end = read
            .holders
            .iter()
            .map(|(_, end)| *end)
            .chain(taken.iter().map(|(_, end)| *end))
            .max()
            .unwrap_or(now);
        let expires = n(last_end.plus(self.ttl_after).unix_seconds());
        let (update, condition) = match read.version {
            None => {
                let holders: HashMap<String, AttributeValue> = taken
                    .iter()
                    .map(|(id, end)| (id.to_string(), s(end.to_text())))
                    .collect();
                let update =
                    Expr::new("SET #h = :holders, #v = :one, #by = :by, #expires = :expires")
                        .value(":holders", AttributeValue::M(holders))
                        .value(":one", n(1));
                (
                    update,
                    Expr::new("attribute_not_exists(#id)").name("#id", ID),
                )
            }
            Some(version) => {
                let mut set = vec![
                    "#v = :next".to_owned(),
                    "#by = :by".to_owned(),
                    "#expires = :expires".to_owned(),
                ];
                let mut update = Expr::new("").value(":next", n(version + 1));
                for (i, (id, end)) in taken.iter().enumerate() {
                    set.push(format!("#h.#t{i} = :t{i}"));
                    update = update
                        .name(&format!("#t{i}"), &id.to_string())
                        .value(&format!(":t{i}"), s(end.to_text()));
                }
                // A holder whose lease ended frees its slot; its task is not one taken here
                // (paths of one update may not overlap).
                let ended = read
                    .holders
                    .iter()
                    .filter(|(id, end)| {
                        *end <= now && !taken.iter().any(|(t, _)| t.to_string() == *id)
                    })
                    .take(REMOVES_PER_WRITE);
                let mut remove = Vec::new();
                for (i, (id, _)) in ended.enumerate() {
                    remove.push(format!("#h.#x{i}"));
                    update = update.name(&format!("#x{i}"), id);
                }
                let mut text = format!("SET {}", set.join(", "));
                if !remove.is_empty() {
                    text.push_str(&format!(" REMOVE {}", remove.join(", ")));
                }
                update.text = text;
                let condition = Expr::new("#v = :read").value(":read", n(version));
                (update, condition)
            }
        };
        let writer = rand::random::<u64>().to_string();
        let update = update
            .name("#h", HOLDERS)
            .name("#v", KEY_VERSION)
            .name("#by", KEY_WRITER)
            .value(":by", s(writer.clone()))
            .name("#expires", EXPIRES_AT)
            .value(":expires", expires);
        Ok(
            match self.table.update(&item_id(key), update, condition).await? {
                Write::Done(()) => true,
                // The SDK may repeat a write whose answer it lost: that repeat meets the item as
                // the write left it, with its token.
                Write::ConditionFailed(Some(now_item)) => {
                    now_item.get(KEY_WRITER).and_then(|by| by.as_s().ok()) == Some(&writer)
                }
                Write::ConditionFailed(None) => false,
            },
        )
    }

    /// Frees the slot of `key` that the attempt of task `id` with lease end `end` holds (a
    /// later attempt's slot stays).
    pub(super) async fn release_slot(
        &self,
        key: &str,
        id: TaskId,
        end: Timestamp,
    ) -> Result<(), StoreError> {
        let update = Expr::new("REMOVE #h.#t")
            .name("#h", HOLDERS)
            .name("#t", &id.to_string());
        let condition = Expr::new("#h.#t = :end").value(":end", s(end.to_text()));
        // Refused: the slot is another attempt's, or already gone with its lease.
        self.table
            .update(&item_id(key), update, condition)
            .await
            .map(|_| ())
    }
}

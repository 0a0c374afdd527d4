//! Rate keys: one item per key (`rate#<key>`, its `nextStart`: GCRA's theoretical arrival
//! time), read consistently by a claim round that meets the key and moved by one conditional
//! write per key and round before the round claims the key's tasks. The item expires (TTL) a
//! retention after its next start.

use super::super::DynamoStore;
use super::super::expr::Expr;
use super::super::item::{n, s};
use super::super::schema::{EXPIRES_AT, ID, NEXT_START, RATE_PREFIX};
use super::super::table::Write;
use crate::clock::Timestamp;
use crate::store::StoreError;

fn item_id(key: &str) -> String {
    format!("{RATE_PREFIX}{key}")
}

impl DynamoStore {
    /// The rate key `key`'s next start, if it ever started a task (one consistent read).
    pub(super) async fn next_start(&self, key: &str) -> Result<Option<Timestamp>, StoreError> {
        let Some(item) = self.table.get(&item_id(key)).await? else {
            return Ok(None);
        };
        item.get(NEXT_START)
            .and_then(|value| value.as_s().ok())
            .map(|text| {
                text.parse()
                    .map_err(|err| StoreError::backend_from("a rate key's next start", err))
            })
            .transpose()
    }

    /// Moves `key`'s next start to `next` if it is still `read`: false when another process
    /// moved it first.
    pub(super) async fn move_next_start(
        &self,
        key: &str,
        read: Option<Timestamp>,
        next: Timestamp,
    ) -> Result<bool, StoreError> {
        let update = Expr::new("SET #next = :next, #expires = :expires")
            .name("#next", NEXT_START)
            .name("#expires", EXPIRES_AT)
            .value(":next", s(next.to_text()))
            .value(":expires", n(next.plus(self.ttl_after).unix_seconds()));
        let condition = match read {
            None => Expr::new("attribute_not_exists(#id)").name("#id", ID),
            Some(read) => Expr::new("#next = :read")
                .name("#next", NEXT_START)
                .value(":read", s(read.to_text())),
        };
        Ok(matches!(
            self.table.update(&item_id(key), update, condition).await?,
            Write::Done(())
        ))
    }

    /// See [`crate::store::Store::key_defer`]: the key's next start moves to `until` unless it
    /// is later already.
    pub async fn key_defer(&self, key: &str, until: Timestamp) -> Result<(), StoreError> {
        let update = Expr::new("SET #next = :until, #expires = :expires")
            .name("#next", NEXT_START)
            .name("#expires", EXPIRES_AT)
            .value(":until", s(until.to_text()))
            .value(":expires", n(until.plus(self.ttl_after).unix_seconds()));
        let condition = Expr::new("attribute_not_exists(#id) OR #next < :until")
            .name("#id", ID)
            .name("#next", NEXT_START)
            .value(":until", s(until.to_text()));
        // A later next start stands: nothing to write then.
        self.table
            .update(&item_id(key), update, condition)
            .await
            .map(|_| ())
    }
}

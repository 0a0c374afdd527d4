//! Rate keys on DynamoDB: one item per key (`rate#<key>`, its `nextStart`), read consistently
//! by a claim round that meets the key and moved by one conditional write per key and round,
//! before the round claims the key's tasks: a round whose write finds the item moved by another
//! process since its read starts none of them (they stay due for the next round), so the rate
//! holds across processes. A task a round holds is not written: this process's due state
//! passes its entry until its time (as it passes a message's), and another process judges it
//! when it reads it. A key's item expires (TTL) a retention after its next start. Concurrency
//! keys are not kept here yet (refused at create).

use std::collections::{HashMap, HashSet};

use super::DynamoStore;
use super::expr::Expr;
use super::item::{n, s};
use super::schema::{EXPIRES_AT, ID, NEXT_START, RATE_PREFIX};
use super::table::Write;
use crate::clock::Timestamp;
use crate::store::{Claim, Holders, KeyBook, LOOK_AGAIN, Need, StoreError, Verdict};
use crate::task::Task;

fn item_id(key: &str) -> String {
    format!("{RATE_PREFIX}{key}")
}

impl DynamoStore {
    /// See [`crate::store::Store::key_holds_written`]: holds are passed in this process's due state.
    pub async fn key_holds_written(&self) -> bool {
        false
    }

    /// The rate key `key`'s next start, if it ever started a task (one consistent read).
    async fn next_start(&self, key: &str) -> Result<Option<Timestamp>, StoreError> {
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
    async fn move_next_start(
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

    /// The `candidates` of a claim round that may start: a task whose rate key has used its
    /// rate is held (its entry passed until its time, the instant noted on the gate), and the
    /// tasks of a key another process moved since this round read it are left due.
    /// Answers the tasks that may start and how many were held.
    pub(super) async fn judge_keys(
        &self,
        candidates: Vec<Task>,
        claim: &Claim<'_>,
    ) -> Result<(Vec<Task>, usize), StoreError> {
        let limits = claim.gate.limits();
        if limits.is_empty() || candidates.iter().all(|task| task.rate_key.is_none()) {
            return Ok((candidates, 0));
        }
        let mut held = 0;
        let mut book = KeyBook::new(limits, claim.now);
        let mut read: HashMap<String, Option<Timestamp>> = HashMap::new();
        let mut starting = Vec::with_capacity(candidates.len());
        for task in candidates {
            if !book.limits(&task) {
                starting.push(task);
                continue;
            }
            for need in book.needs(&task) {
                match need {
                    Need::NextStart(key) => {
                        let next = self.next_start(&key).await?;
                        read.insert(key.clone(), next);
                        book.know_next_start(key, next);
                    }
                    // No task here has a concurrency key: they are refused at create.
                    Need::Holders(key) => book.know_holders(key, Holders::default()),
                }
            }
            let lease_until = claim.leases.until(&task.task_type, claim.now);
            match book.judge(&task, lease_until) {
                Verdict::Start => starting.push(task),
                Verdict::Hold { until, .. } => {
                    self.due.expect_delivery(&task, until);
                    claim.gate.note_hold(until);
                    held += 1;
                }
            }
        }
        let mut lost: HashSet<String> = HashSet::new();
        for (key, next) in book.moved() {
            let before = read.get(key).copied().flatten();
            if !self.move_next_start(key, before, next).await? {
                lost.insert(key.to_owned());
            }
        }
        if !lost.is_empty() {
            claim.gate.turn_away();
            claim.gate.note_hold(claim.now.plus(LOOK_AGAIN));
            starting.retain(|task| task.rate_key.as_ref().is_none_or(|key| !lost.contains(key)));
        }
        Ok((starting, held))
    }
}

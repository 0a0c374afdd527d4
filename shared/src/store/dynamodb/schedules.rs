//! Schedules on DynamoDB: one item each (`sched#<name>`), in the queue index's `sched`
//! partition under its name. The key never changes, so advancing a schedule is one write of
//! its item and none of the index (the index is `KEYS_ONLY`).
//!
//! Finding the due ones without reading every schedule on every run: each process keeps the
//! schedules it last read and reads them all again (the partition's keys, then the items,
//! eventually consistent) when that list is [`SCHEDULES_SEEN_WITHIN`] old. Its own writes
//! update the list at once. Candidates that look due are read again consistently before they
//! are returned, so a processor never fires from a stale copy.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::DynamoStore;
use super::expr;
use super::item::Item;
use super::schema::{SCHEDULE_PREFIX, SCHEDULE_QUEUE};
use super::table::Write;
use crate::clock::Timestamp;
use crate::schedule::Schedule;
use crate::store::{Expect, SCHEDULES_SEEN_WITHIN, ScheduleWrite, StoreError};

/// The stored form of a schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScheduleItem {
    id: String,
    queue: String,
    queue_at: String,
    revision: u64,
    #[serde(flatten)]
    schedule: Schedule,
}

fn key(name: &str) -> String {
    format!("{SCHEDULE_PREFIX}{name}")
}

fn to_item(schedule: &Schedule) -> Result<Item, StoreError> {
    serde_dynamo::to_item(ScheduleItem {
        id: key(&schedule.name),
        queue: SCHEDULE_QUEUE.to_owned(),
        queue_at: schedule.name.clone(),
        revision: schedule.revision,
        schedule: schedule.clone(),
    })
    .map_err(|err| {
        StoreError::backend_from(format!("cannot encode schedule {}", schedule.name), err)
    })
}

fn from_item(item: Item) -> Result<Schedule, StoreError> {
    let item: ScheduleItem = serde_dynamo::from_item(item)
        .map_err(|err| StoreError::backend_from("cannot decode a schedule item", err))?;
    let mut schedule = item.schedule;
    schedule.revision = item.revision;
    Ok(schedule)
}

/// The schedules in `items` that decode; one that does not (written by a newer Tasker, or by
/// hand) is logged and left out, so it cannot stop every other schedule.
fn decode_all(items: Vec<Item>) -> Vec<Schedule> {
    items
        .into_iter()
        .filter_map(|item| {
            let id = item
                .get(super::schema::ID)
                .and_then(|id| id.as_s().ok())
                .cloned()
                .unwrap_or_default();
            from_item(item)
                .inspect_err(|err| {
                    tracing::warn!(item = %id, error = %crate::report::Report(err), "skipping a schedule item that does not decode");
                })
                .ok()
        })
        .collect()
}

/// What this process last read of the schedules.
#[derive(Debug, Default)]
struct Known {
    read_at: Option<Timestamp>,
    by_name: BTreeMap<String, Schedule>,
    /// Counts this process's own writes; `written` keeps, per name, the count at its latest.
    writes: u64,
    written: BTreeMap<String, u64>,
}

/// This process's list of the schedules, shared by clones of the store.
#[derive(Debug, Clone, Default)]
pub struct KnownSchedules(Arc<Mutex<Known>>);

impl KnownSchedules {
    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl DynamoStore {
    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.schedules.lock()
    }

    /// Records what this process wrote or read of `name` (`None`: it is gone).
    fn remember(&self, name: &str, schedule: Option<Schedule>) {
        let mut known = self.known();
        known.writes += 1;
        let count = known.writes;
        known.written.insert(name.to_owned(), count);
        match schedule {
            Some(schedule) => known.by_name.insert(name.to_owned(), schedule),
            None => known.by_name.remove(name),
        };
    }

    /// The schedule `name`, read consistently.
    pub async fn schedule_get(&self, name: &str) -> Result<Option<Schedule>, StoreError> {
        let schedule = self
            .table
            .get(&key(name))
            .await?
            .map(from_item)
            .transpose()?;
        self.remember(name, schedule.clone());
        Ok(schedule)
    }

    /// Every schedule, by name (eventually consistent).
    pub async fn schedule_list(&self) -> Result<Vec<Schedule>, StoreError> {
        let ids = self.table.partition_ids(SCHEDULE_QUEUE).await?;
        let mut schedules = decode_all(self.table.batch_get(&ids, false).await?);
        schedules.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(schedules)
    }

    /// Writes `schedule` if `expect` holds.
    pub async fn schedule_put(
        &self,
        schedule: &Schedule,
        expect: Expect,
    ) -> Result<ScheduleWrite, StoreError> {
        let condition = match expect {
            Expect::Absent => expr::new_item(),
            Expect::Revision(revision) => expr::at_revision(revision),
        };
        match self.table.put(to_item(schedule)?, condition).await? {
            Write::Done(()) => {
                self.remember(&schedule.name, Some(schedule.clone()));
                Ok(ScheduleWrite::Written)
            }
            Write::ConditionFailed(item) => {
                let current = item.map(from_item).transpose()?;
                // An SDK retry of this very write, whose first try landed (revisions are
                // random per write, so an equal schedule is this write).
                if current.as_ref() == Some(schedule) {
                    self.remember(&schedule.name, current);
                    return Ok(ScheduleWrite::Written);
                }
                self.remember(&schedule.name, current.clone());
                Ok(ScheduleWrite::Conflict(current.map(Box::new)))
            }
        }
    }

    /// Deletes the schedule `name`; false when there was none.
    pub async fn schedule_delete(&self, name: &str) -> Result<bool, StoreError> {
        let deleted = matches!(
            self.table.delete(&key(name), expr::item_exists()).await?,
            Write::Done(_)
        );
        self.remember(name, None);
        Ok(deleted)
    }

    /// Reads every schedule into the list. What this process wrote or read while the list was
    /// on its way is kept: the list comes from an eventually consistent index.
    async fn refresh(&self, now: Timestamp) -> Result<(), StoreError> {
        let since = self.known().writes;
        let all = self.schedule_list().await?;
        let mut known = self.known();
        let mut by_name: BTreeMap<String, Schedule> =
            all.into_iter().map(|s| (s.name.clone(), s)).collect();
        let recent: Vec<String> = known
            .written
            .iter()
            .filter(|(_, count)| **count > since)
            .map(|(name, _)| name.clone())
            .collect();
        for name in recent {
            match known.by_name.get(&name) {
                Some(ours) => by_name.insert(name, ours.clone()),
                None => by_name.remove(&name),
            };
        }
        known.by_name = by_name;
        known.written.clear();
        known.read_at = Some(now);
        Ok(())
    }

    /// Up to `limit` due schedules, read consistently; see the module's documentation.
    pub async fn schedule_list_due(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<Schedule>, StoreError> {
        let stale = self
            .known()
            .read_at
            .is_none_or(|at| at > now || now.since(at) >= SCHEDULES_SEEN_WITHIN);
        if stale {
            self.refresh(now).await?;
        }
        let candidates: Vec<String> = {
            let known = self.known();
            let mut due: Vec<&Schedule> =
                known.by_name.values().filter(|s| s.is_due(now)).collect();
            due.sort_by_key(|s| s.next_run_at);
            due.iter().take(limit).map(|s| key(&s.name)).collect()
        };
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let fresh = decode_all(self.table.batch_get(&candidates, true).await?);
        for name in &candidates {
            let name = name.trim_start_matches(SCHEDULE_PREFIX);
            let current = fresh.iter().find(|s| s.name == name).cloned();
            self.remember(name, current);
        }
        let mut due: Vec<Schedule> = fresh.into_iter().filter(|s| s.is_due(now)).collect();
        due.sort_by_key(|s| s.next_run_at);
        Ok(due)
    }
}

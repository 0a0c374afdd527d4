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

use super::expr;
use super::item::Item;
use super::schema::{SCHEDULE_PREFIX, SCHEDULE_QUEUE};
use super::table::{Table, Write};
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

/// What this process last read of the schedules.
#[derive(Debug, Default)]
struct Known {
    read_at: Option<Timestamp>,
    by_name: BTreeMap<String, Schedule>,
}

/// The schedules of one table, with this process's list of them (shared by clones).
#[derive(Debug, Clone)]
pub struct Schedules {
    table: Table,
    known: Arc<Mutex<Known>>,
}

impl Schedules {
    pub fn new(table: Table) -> Self {
        Self {
            table,
            known: Arc::default(),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn remember(&self, name: &str, schedule: Option<Schedule>) {
        let mut known = self.known();
        match schedule {
            Some(schedule) => known.by_name.insert(name.to_owned(), schedule),
            None => known.by_name.remove(name),
        };
    }

    pub async fn get(&self, name: &str) -> Result<Option<Schedule>, StoreError> {
        let schedule = self
            .table
            .get(&key(name))
            .await?
            .map(from_item)
            .transpose()?;
        self.remember(name, schedule.clone());
        Ok(schedule)
    }

    pub async fn list(&self) -> Result<Vec<Schedule>, StoreError> {
        let ids = self.table.partition_ids(SCHEDULE_QUEUE).await?;
        let mut schedules = self
            .table
            .batch_get(&ids, false)
            .await?
            .into_iter()
            .map(from_item)
            .collect::<Result<Vec<_>, _>>()?;
        schedules.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(schedules)
    }

    pub async fn put(
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
                // An SDK retry of this very write, whose first try landed.
                if current.as_ref() == Some(schedule)
                    && current.as_ref().map(|c| c.revision) == Some(schedule.revision)
                {
                    self.remember(&schedule.name, current);
                    return Ok(ScheduleWrite::Written);
                }
                self.remember(&schedule.name, current.clone());
                Ok(ScheduleWrite::Conflict(current.map(Box::new)))
            }
        }
    }

    pub async fn delete(&self, name: &str) -> Result<bool, StoreError> {
        let deleted = matches!(
            self.table.delete(&key(name), expr::item_exists()).await?,
            Write::Done(_)
        );
        self.remember(name, None);
        Ok(deleted)
    }

    pub async fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<Schedule>, StoreError> {
        let stale = self
            .known()
            .read_at
            .is_none_or(|at| at > now || now.since(at) >= SCHEDULES_SEEN_WITHIN);
        if stale {
            let all = self.list().await?;
            let mut known = self.known();
            known.by_name = all.into_iter().map(|s| (s.name.clone(), s)).collect();
            known.read_at = Some(now);
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
        let fresh = self
            .table
            .batch_get(&candidates, true)
            .await?
            .into_iter()
            .map(from_item)
            .collect::<Result<Vec<_>, _>>()?;
        {
            let mut known = self.known();
            for name in &candidates {
                known
                    .by_name
                    .remove(name.trim_start_matches(SCHEDULE_PREFIX));
            }
            for schedule in &fresh {
                known
                    .by_name
                    .insert(schedule.name.clone(), schedule.clone());
            }
        }
        let mut due: Vec<Schedule> = fresh.into_iter().filter(|s| s.is_due(now)).collect();
        due.sort_by_key(|s| s.next_run_at);
        Ok(due)
    }
}

//! `GET /stats` on DynamoDB in a bounded number of reads, whatever the table holds.
//!
//! - Finished tasks: the hourly counts of [`super::tally`] over the retention (one or two day
//!   items with the default 24 h).
//! - Unfinished tasks up to now (pending and due, running) and the backlog: this process's own
//!   look at the due queue, reading at most [`OVERVIEW_READS`] items and [`OVERVIEW_ENTRIES`]
//!   index entries. When that does not reach now (a cold process facing minutes of finished
//!   entries above the watermarks, or a large backlog), what a processor last saw, if at most
//!   [`SEEN_FRESH`] old: processors publish their look (item `seen#due`) every [`SEEN_EVERY`]
//!   while they claim; the entries whose time came after that look are counted as pending.
//!   Without either, the numbers are what the capped look saw, marked as lower bounds.
//! - Pending tasks scheduled later: index entries above now, counted (keys only) up to
//!   [`COUNT_CAP`] per shard; past that, `pending` is a lower bound.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;

use super::DynamoStore;
use super::due::{Active, DueQueue};
use super::expr::Expr;
use super::item::{Queue, n, s};
use super::schema::{ID, QUEUE_SEEN_ID, QUEUE_SHARDS};
use super::table::{KeyRange, Table};
use super::tally;
use crate::clock::Timestamp;
use crate::store::{Backlog, ListKey, LowerBound, Overview, StatusCounts, StoreError};
use crate::task::TaskStatus;

/// Items this process's own look at the due queue reads at most (half a read unit each, for
/// items up to 4 KB: a large payload costs more).
const OVERVIEW_READS: usize = 30;
/// Index entries that look takes at most (about 80 per read unit).
const OVERVIEW_ENTRIES: usize = 320;
/// Index entries counted per shard and range, at most.
const COUNT_CAP: usize = 200;
/// How old a processor's published look may be and still be shown.
pub const SEEN_FRESH: Duration = Duration::from_secs(120);
/// How often a claiming processor publishes its look.
pub const SEEN_EVERY: Duration = Duration::from_secs(30);
/// Items and index entries a processor's look reads at most (at most about 560 read units,
/// every [`SEEN_EVERY`]; far less with the warm cursors of a processor that keeps up).
const SEEN_READS: usize = 1000;
const SEEN_ENTRIES: usize = 5000;

impl DynamoStore {
    /// Tasks due at `now` and the oldest of their due instants, from this process's look.
    pub async fn queue_backlog(&self, now: Timestamp) -> Result<Backlog, StoreError> {
        self.due.backlog(now).await
    }

    /// The counts per status and the backlog; see the module's documentation.
    pub async fn queue_overview(&self, now: Timestamp) -> Result<Overview, StoreError> {
        overview(self, now).await
    }

    /// What this process's scans of the due queue have read; see
    /// [`crate::store::Store::queue_reads`].
    pub async fn queue_reads(&self) -> crate::store::QueueReads {
        self.due.reads()
    }

    /// Nothing to listen to: DynamoDB cannot tell a process of another's writes (SQS mode is
    /// how a task starts at once there).
    pub async fn queue_listen(&self, _wake: std::sync::Arc<tokio::sync::Notify>) {}

    /// Each write is a request of its own, answered in any order; see
    /// [`crate::store::Store::queue_writes_in_order`].
    pub async fn queue_writes_in_order(&self) -> bool {
        false
    }

    /// Writes this process's counts of finished tasks when it is time to (at once at the
    /// `end` of a run), and publishes its look at the due queue every [`SEEN_EVERY`] while
    /// it claims; see [`crate::store::Store::queue_flush`].
    pub async fn queue_flush(&self, now: Timestamp, end: bool) {
        self.tally.flush(&self.table, self.ttl_after, end).await;
        // Not at the end of a run: its look would cost the run's last seconds.
        let publish_now = !end && {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            match seen.as_mut() {
                Some(last) if last.is_none_or(|at| at.elapsed() >= SEEN_EVERY) => {
                    *last = Some(std::time::Instant::now());
                    true
                }
                _ => false,
            }
        };
        if publish_now {
            if let Err(err) = publish(&self.table, &self.due, now).await {
                tracing::warn!(error = %crate::report::Report(&err), "could not publish this processor's look at the due queue");
            }
        }
    }

    /// None: the due queue's bounded look does not see why each task waits.
    pub async fn task_count_waiting(
        &self,
        _now: Timestamp,
        _cap: u64,
    ) -> Result<Option<crate::store::WaitingCounts>, StoreError> {
        Ok(None)
    }

    /// The counts per status, as [`DynamoStore::queue_overview`] has them.
    pub async fn task_count_by_status(&self, now: Timestamp) -> Result<StatusCounts, StoreError> {
        Ok(self.queue_overview(now).await?.counts)
    }
}

/// The counts and the backlog at `now`; see the module's documentation.
async fn overview(store: &DynamoStore, now: Timestamp) -> Result<Overview, StoreError> {
    let table = &store.table;
    let (finished, own, (later, later_whole)) = futures::future::try_join3(
        tally::finished(table, &store.tally, now, store.ttl_after),
        store.due.active(now, OVERVIEW_READS, OVERVIEW_ENTRIES),
        count_between(table, now, None),
    )
    .await?;
    let mut lower_bounds = Vec::new();
    let mut counts = finished;
    let (active, active_seen_at) = if own.complete {
        (own, None)
    } else {
        match read_seen(table).await? {
            Some((seen, at)) if now.since(at) <= SEEN_FRESH => {
                if !seen.complete {
                    lower_bounds.extend(ALL_BOUNDS);
                }
                // Entries whose time came after the look: pending then (some may have run
                // since, and are counted here as well as where they are now).
                let (since, whole) = count_between(table, at, Some(now)).await?;
                if !whole {
                    lower_bounds.push(LowerBound::Pending);
                }
                counts.add(TaskStatus::Pending, since);
                (seen, Some(at))
            }
            _ => {
                lower_bounds.extend(ALL_BOUNDS);
                (own, None)
            }
        }
    };
    if !later_whole {
        lower_bounds.push(LowerBound::Pending);
    }
    lower_bounds.sort();
    lower_bounds.dedup();
    counts.add(TaskStatus::Pending, active.pending + later);
    counts.add(TaskStatus::Running, active.running);
    Ok(Overview {
        counts,
        backlog: active.backlog,
        active_seen_at,
        lower_bounds,
        exact: false,
    })
}

const ALL_BOUNDS: [LowerBound; 3] = [LowerBound::Pending, LowerBound::Running, LowerBound::Due];

/// Entries after `from` (up to `to`, included, or all) in every shard, counted up to
/// [`COUNT_CAP`] each; and whether every shard was counted whole.
async fn count_between(
    table: &Table,
    from: Timestamp,
    to: Option<Timestamp>,
) -> Result<(u64, bool), StoreError> {
    let counts = (0..QUEUE_SHARDS).map(|shard| {
        let range = KeyRange {
            queue: Queue::Due.shard(shard),
            lo: Some(ListKey::after_all_at(from)),
            hi: to.map(ListKey::after_all_at),
        };
        async move { table.count_up_to(&range, COUNT_CAP).await }
    });
    let counted = futures::future::try_join_all(counts).await?;
    Ok(counted
        .into_iter()
        .fold((0, true), |(sum, whole), (count, complete)| {
            (sum + count, whole && complete)
        }))
}

/// A processor's look at the due queue, published (also when it stopped at its cap, marked
/// so).
pub async fn publish(table: &Table, due: &DueQueue, now: Timestamp) -> Result<(), StoreError> {
    let active = due.active(now, SEEN_READS, SEEN_ENTRIES).await?;
    let (set, oldest) = match active.backlog.oldest_due_at {
        Some(oldest) => (", #oldest = :oldest", Some(oldest)),
        None => ("", None),
    };
    let remove = if oldest.is_some() {
        ""
    } else {
        " REMOVE #oldest"
    };
    let mut update = Expr::new(format!(
        "SET #pending = :pending, #running = :running, #due = :due, #at = :at, \
         #complete = :complete{set}{remove}"
    ))
    .name("#pending", "pending")
    .name("#running", "running")
    .name("#due", "due")
    .name("#at", "seenAt")
    .name("#complete", "complete")
    .name("#oldest", "oldestDueAt")
    .value(":pending", n(active.pending))
    .value(":running", n(active.running))
    .value(":due", n(active.backlog.due))
    .value(":at", s(now.to_text()))
    .value(":complete", AttributeValue::Bool(active.complete));
    if let Some(oldest) = oldest {
        update = update.value(":oldest", s(oldest.to_text()));
    }
    table.update_always(QUEUE_SEEN_ID, update).await
}

/// The last published look and when it was taken, if any.
async fn read_seen(table: &Table) -> Result<Option<(Active, Timestamp)>, StoreError> {
    let items = table.batch_get(&[QUEUE_SEEN_ID.to_owned()], false).await?;
    let Some(item) = items.into_iter().find(|item| {
        item.get(ID)
            .and_then(|id| id.as_s().ok())
            .map(String::as_str)
            == Some(QUEUE_SEEN_ID)
    }) else {
        return Ok(None);
    };
    let number = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_default()
    };
    let time = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_s().ok())
            .and_then(|v| v.parse::<Timestamp>().ok())
    };
    let Some(at) = time("seenAt") else {
        return Ok(None);
    };
    let active = Active {
        pending: number("pending"),
        running: number("running"),
        backlog: Backlog {
            due: number("due"),
            oldest_due_at: time("oldestDueAt"),
        },
        complete: item
            .get("complete")
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false),
    };
    Ok(Some((active, at)))
}

//! `GET /stats` on DynamoDB in a bounded number of reads, whatever the table holds.
//!
//! - Finished tasks: the hourly counts of [`super::tally`] over the retention (a read of one
//!   or two day items with the default 24 h).
//! - Unfinished tasks up to now (pending and due, running) and the backlog: this process's own
//!   look at the due queue, reading at most [`OVERVIEW_READS`] items. When that is not enough
//!   (a cold process facing minutes of finished entries above the watermarks, or a large
//!   backlog), what a processor last saw, if it is at most [`SEEN_FRESH`] old: processors
//!   publish their look (one item, `seen#due`) every [`SEEN_EVERY`] while they work. Without
//!   either, the numbers are what the capped look saw, and are marked as lower bounds.
//! - Pending tasks scheduled later: a count of index entries above now, at most
//!   [`LATER_COUNT`] per shard (keys only); past that, `pending` is a lower bound.

use std::time::Duration;

use super::due::{Active, DueQueue};
use super::expr::Expr;
use super::item::{Queue, n, s};
use super::schema::{ID, QUEUE_SEEN_ID, QUEUE_SHARDS};
use super::table::{KeyRange, Table};
use super::tally;
use crate::clock::Timestamp;
use crate::store::{Backlog, ListKey, Overview, StoreError};
use crate::task::TaskStatus;

/// Items this process's own look at the due queue reads at most (half a read unit each).
const OVERVIEW_READS: usize = 40;
/// Index entries above now counted per shard, at most.
const LATER_COUNT: usize = 250;
/// How old a processor's published look may be and still be shown.
pub const SEEN_FRESH: Duration = Duration::from_secs(120);
/// How often a working processor publishes its look.
pub const SEEN_EVERY: Duration = Duration::from_secs(30);
/// Items a processor's look reads at most before it publishes nothing.
const SEEN_READS: usize = 5000;

/// The counts and the backlog at `now`; see the module's documentation.
pub async fn overview(
    table: &Table,
    due: &DueQueue,
    retention: Duration,
    now: Timestamp,
) -> Result<Overview, StoreError> {
    let (finished, own, (later, later_complete)) = futures::future::try_join3(
        tally::finished(table, now, retention),
        due.active(now, OVERVIEW_READS),
        later(table, now),
    )
    .await?;
    let mut lower_bounds = Vec::new();
    let (active, active_seen_at) = if own.complete {
        (own, None)
    } else {
        match read_seen(table).await? {
            Some((seen, at)) if now.since(at) <= SEEN_FRESH => (seen, Some(at)),
            _ => {
                lower_bounds.extend([TaskStatus::Pending, TaskStatus::Running]);
                (own, None)
            }
        }
    };
    if !later_complete && !lower_bounds.contains(&TaskStatus::Pending) {
        lower_bounds.push(TaskStatus::Pending);
    }
    let mut counts = finished;
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

/// Entries above `now` in every shard (pending tasks scheduled later), counted up to
/// [`LATER_COUNT`] each; and whether every shard was counted whole.
async fn later(table: &Table, now: Timestamp) -> Result<(u64, bool), StoreError> {
    let counts = (0..QUEUE_SHARDS).map(|shard| {
        let range = KeyRange {
            queue: Queue::Due.shard(shard),
            lo: Some(ListKey::after_all_at(now)),
            hi: None,
        };
        async move { table.count_up_to(&range, LATER_COUNT).await }
    });
    let counted = futures::future::try_join_all(counts).await?;
    Ok(counted
        .into_iter()
        .fold((0, true), |(sum, whole), (count, complete)| {
            (sum + count, whole && complete)
        }))
}

/// A processor's look at the due queue, published: scans up to [`SEEN_READS`] items and
/// writes what it saw, unless that was not the whole queue up to `now`.
pub async fn publish(table: &Table, due: &DueQueue, now: Timestamp) -> Result<(), StoreError> {
    let active = due.active(now, SEEN_READS).await?;
    if !active.complete {
        return Ok(());
    }
    let mut update = Expr::new(
        "SET #pending = :pending, #running = :running, #due = :due, #at = :at REMOVE #oldest",
    );
    if let Some(oldest) = active.backlog.oldest_due_at {
        update = Expr::new(
            "SET #pending = :pending, #running = :running, #due = :due, #at = :at, #oldest = :oldest",
        )
        .value(":oldest", s(oldest.to_text()));
    }
    let update = update
        .name("#pending", "pending")
        .name("#running", "running")
        .name("#due", "due")
        .name("#at", "seenAt")
        .name("#oldest", "oldestDueAt")
        .value(":pending", n(active.pending))
        .value(":running", n(active.running))
        .value(":due", n(active.backlog.due))
        .value(":at", s(now.to_text()));
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
        complete: true,
    };
    Ok(Some((active, at)))
}

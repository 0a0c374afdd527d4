//! Counts of finished tasks on DynamoDB, by the hour they finished in, so that `GET /stats`
//! reads a few items instead of counting the table.
//!
//! One item per UTC day, `count#<YYYY-MM-DD>`, with a number per status and hour (`s07`,
//! `f07`, `c07`: succeeded, failed, cancelled in 07:00–07:59), changed with `ADD`. A process adds
//! up its own changes (every write of a task that enters or leaves a finished status) and
//! writes them at most every [`FLUSH_EVERY`], at the end of a processor run, and after an
//! operator's cancel or retry: one write per day touched, never one per task. An item expires
//! (TTL) a day after the last task it counts.
//!
//! What the counts cover: tasks that finished within the retention (the store's `ttl_after`,
//! after which TTL removes them), counted by whole hours (the oldest hour counts whole until it
//! has all left the window). A process stopped before it writes loses its unwritten changes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::DynamoStore;
use super::expr::Expr;
use super::item::n;
use super::schema::{EXPIRES_AT, TALLY_PREFIX};
use super::table::Table;
use crate::clock::Timestamp;
use crate::report::Report;
use crate::store::{StatusCounts, StoreError, Throughput};
use crate::task::{Task, TaskStatus};

/// The longest a busy process keeps changes unwritten.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);
const DAY: Duration = Duration::from_secs(86_400);

/// A day (`YYYY-MM-DD`) and an attribute (`s07`) to add to.
type Slot = (String, String);

/// This process's changes not yet written, shared by clones.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    deltas: BTreeMap<Slot, i64>,
    flushed: Option<Instant>,
}

fn letter(status: TaskStatus) -> Option<char> {
    match status {
        TaskStatus::Succeeded => Some('s'),
        TaskStatus::Failed => Some('f'),
        TaskStatus::Cancelled => Some('c'),
        TaskStatus::Pending | TaskStatus::Running => None,
    }
}

/// Where `task` is counted, if it is finished.
fn slot(task: &Task) -> Option<Slot> {
    let letter = letter(task.status)?;
    let text = task.finished_at.unwrap_or(task.updated_at).to_text();
    let (day, hour) = (text.get(..10)?, text.get(11..13)?);
    Some((day.to_owned(), format!("{letter}{hour}")))
}

impl Tally {
    /// Counts the write that made `before` into `after`.
    pub fn record(&self, before: &Task, after: &Task) {
        let (from, to) = (slot(before), slot(after));
        if from == to {
            return;
        }
        let mut state = self.lock();
        for (slot, delta) in [(from, -1), (to, 1)] {
            if let Some(slot) = slot {
                *state.deltas.entry(slot).or_default() += delta;
            }
        }
    }

    /// Writes the changes if [`FLUSH_EVERY`] passed since the last write (or `now_anyway`).
    /// A failed write keeps them for the next; it is logged, never the caller's error.
    pub async fn flush(&self, table: &Table, ttl_after: Duration, now_anyway: bool) {
        let deltas = {
            let mut state = self.lock();
            let due = state.flushed.is_none_or(|at| at.elapsed() >= FLUSH_EVERY);
            if state.deltas.is_empty() || !(due || now_anyway) {
                return;
            }
            state.flushed = Some(Instant::now());
            std::mem::take(&mut state.deltas)
        };
        let mut by_day: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
        for ((day, attribute), delta) in deltas {
            if delta != 0 {
                by_day.entry(day).or_default().push((attribute, delta));
            }
        }
        // The writes run as a task of their own: a caller dropped half way (an HTTP client
        // that hung up during a cancel) does not lose the changes it took.
        let table = table.clone();
        let tally = self.clone();
        let writes = tokio::spawn(async move {
            for (day, adds) in by_day {
                if let Err(err) = write_day(&table, ttl_after, &day, &adds).await {
                    tracing::warn!(error = %Report(&err), day, "could not write the counts of finished tasks; kept for the next write");
                    let mut state = tally.lock();
                    for (attribute, delta) in adds {
                        *state.deltas.entry((day.clone(), attribute)).or_default() += delta;
                    }
                }
            }
        });
        if let Err(err) = writes.await {
            tracing::warn!(error = %Report(&err), "the write of the counts of finished tasks stopped");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unwritten(&self) -> Vec<(Slot, i64)> {
        self.lock()
            .deltas
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

async fn write_day(
    table: &Table,
    ttl_after: Duration,
    day: &str,
    adds: &[(String, i64)],
) -> Result<(), StoreError> {
    let terms: Vec<String> = (0..adds.len()).map(|i| format!("#a{i} :a{i}")).collect();
    let mut update = Expr::new(format!("ADD {} SET #exp = :exp", terms.join(", ")))
        .name("#exp", EXPIRES_AT)
        .value(":exp", n(expiry(day, ttl_after)));
    for (i, (attribute, delta)) in adds.iter().enumerate() {
        update = update
            .name(&format!("#a{i}"), attribute)
            .value(&format!(":a{i}"), n(delta));
    }
    table
        .update_always(&format!("{TALLY_PREFIX}{day}"), update)
        .await
}

/// A day item expires a day after the last task it counts would.
fn expiry(day: &str, ttl_after: Duration) -> i64 {
    let start: Option<Timestamp> = format!("{day}T00:00:00.000Z").parse().ok();
    start.map_or(i64::MAX, |start| {
        start.plus(DAY).plus(ttl_after).plus(DAY).unix_seconds()
    })
}

/// The counts of tasks that finished within `window` before `now`: the stored days plus this
/// process's unwritten changes. Half a read unit per day of the window.
/// Calls `add(day, attribute, value)` for every count in the day items `keys` and every count
/// this process has not written yet.
async fn each_count(
    table: &Table,
    tally: &Tally,
    keys: &[String],
    add: &mut impl FnMut(&str, &str, i64),
) -> Result<(), StoreError> {
    for item in table.batch_get(keys, false).await? {
        let Some(day) = item
            .get(super::schema::ID)
            .and_then(|id| id.as_s().ok())
            .and_then(|id| id.strip_prefix(TALLY_PREFIX))
            .map(str::to_owned)
        else {
            continue;
        };
        for (attribute, value) in &item {
            if let Some(value) = value.as_n().ok().and_then(|v| v.parse::<i64>().ok()) {
                add(&day, attribute, value);
            }
        }
    }
    for ((day, attribute), delta) in tally.unwritten() {
        add(&day, &attribute, delta);
    }
    Ok(())
}

impl DynamoStore {
    /// Tasks finished per hour over the last 24 hours up to `now`'s hour.
    pub async fn queue_throughput(&self, now: Timestamp) -> Result<Throughput, StoreError> {
        hourly(&self.table, &self.tally, now).await
    }
}

/// Tasks finished per hour over the last 24 hours up to `now`'s hour, from the day items of
/// today and yesterday (one unit at most) and this process's unwritten counts.
async fn hourly(table: &Table, tally: &Tally, now: Timestamp) -> Result<Throughput, StoreError> {
    const HOUR: Duration = Duration::from_secs(3600);
    let this_hour: Timestamp =
        format!("{}:00:00.000Z", now.to_text().get(..13).unwrap_or_default())
            .parse()
            .unwrap_or(now);
    let starts: Vec<Timestamp> = (0..24u32)
        .rev()
        .map(|back| this_hour.minus(HOUR * back))
        .collect();
    // "YYYY-MM-DD" and "HH" of each hour, the keys the counts are kept under.
    let slot_of = |at: Timestamp| {
        let text = at.to_text();
        (
            text.get(..10).unwrap_or_default().to_owned(),
            text.get(11..13).unwrap_or_default().to_owned(),
        )
    };
    let mut days: Vec<String> = starts.iter().map(|at| slot_of(*at).0).collect();
    days.dedup();
    let keys: Vec<String> = days.iter().map(|d| format!("{TALLY_PREFIX}{d}")).collect();
    let mut sums: std::collections::HashMap<(String, String), i64> =
        std::collections::HashMap::new();
    let mut add = |day: &str, attribute: &str, value: i64| {
        let finished =
            attribute.len() == 3 && matches!(attribute.chars().next(), Some('s' | 'f' | 'c'));
        if let (true, Some(hour)) = (finished, attribute.get(1..3)) {
            *sums.entry((day.to_owned(), hour.to_owned())).or_default() += value;
        }
    };
    each_count(table, tally, &keys, &mut add).await?;
    let buckets = starts
        .into_iter()
        .map(|at| {
            let sum = sums.get(&slot_of(at)).copied().unwrap_or_default();
            (at, u64::try_from(sum).unwrap_or_default())
        })
        .collect();
    Ok(Throughput {
        bucket: HOUR,
        buckets,
    })
}

pub async fn finished(
    table: &Table,
    tally: &Tally,
    now: Timestamp,
    window: Duration,
) -> Result<StatusCounts, StoreError> {
    let from = now.minus(window);
    let mut days = Vec::new();
    let mut at = from;
    loop {
        let day = at.to_text().get(..10).unwrap_or_default().to_owned();
        if days.last() != Some(&day) {
            days.push(day);
        }
        if at >= now {
            break;
        }
        at = at.plus(DAY).min(now);
    }
    // An hour counts while any of it is within the window.
    let first = from.to_text();
    let counted = |day: &str, hour: &str| format!("{day}T{hour}:59:59.999Z") >= first;
    let keys: Vec<String> = days.iter().map(|d| format!("{TALLY_PREFIX}{d}")).collect();
    let mut sums: std::collections::HashMap<TaskStatus, i64> = std::collections::HashMap::new();
    let mut add = |day: &str, attribute: &str, value: i64| {
        let (Some(letter), Some(hour)) = (attribute.chars().next(), attribute.get(1..3)) else {
            return;
        };
        let status = match letter {
            's' => TaskStatus::Succeeded,
            'f' => TaskStatus::Failed,
            'c' => TaskStatus::Cancelled,
            _ => return,
        };
        if attribute.len() == 3 && counted(day, hour) {
            *sums.entry(status).or_default() += value;
        }
    };
    each_count(table, tally, &keys, &mut add).await?;
    let mut counts = StatusCounts::default();
    for (status, sum) in sums {
        counts.add(status, u64::try_from(sum).unwrap_or(0));
    }
    Ok(counts)
}

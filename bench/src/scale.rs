//! Listings and counts at scale: the same HTTP calls (each listing filter, a first page and a
//! deep cursor, and `GET /stats`) on a table of `small` tasks, then on the same table grown to
//! `full`, side by side. Tasks are loaded through the store's own calls (create, cancel,
//! claim, settle), a mix of statuses: mostly succeeded, some failed and cancelled, some
//! pending a month out. On DynamoDB each call's read units come from the metering proxy.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tasker::store::Claim;

use futures::{StreamExt, TryStreamExt};
use indicatif::ProgressBar;
use tasker::store::{Leases, ListKey, Settlement};
use tasker::{AnyStore, NewTask, Store, Task, TaskId, Timestamp};
use tasker_tests::capacity::CapacityProxy;

use crate::phases::{self, CONCURRENCY};
use crate::results::{Scale, ScaleCall, sums};

/// Tasks created, then finished, per round of the load.
const CHUNK: usize = 1000;
/// Timed calls per measure (after one untimed call); the median is reported.
const REPEATS: usize = 5;

/// What the load makes of task `i`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Succeeded,
    Failed,
    Cancelled,
    Later,
}

fn fate(i: usize) -> Fate {
    match i % 100 {
        0..=3 => Fate::Failed,
        4..=6 => Fate::Cancelled,
        7..=9 => Fate::Later,
        _ => Fate::Succeeded,
    }
}

fn task_type(i: usize) -> &'static str {
    match i % 10 {
        0..=6 => "sendWebhook",
        7 | 8 => "sendEmail",
        _ => "report",
    }
}

/// Task `i` as the load creates it: one in 50 has a reference of its own, one in 100 (all
/// succeeded) belongs to the schedule `nightly`.
fn task(i: usize, now: Timestamp) -> Task {
    let mut new = NewTask::new(task_type(i), format!("{{\"n\":{i}}}"));
    if fate(i) == Fate::Later {
        new.scheduled_at = Some(now.plus(Duration::from_secs(30 * 86_400)));
    }
    if i % 50 == 25 {
        new.reference_uid = Some(format!("order-{i}"));
    }
    let mut task = Task::from_new(new, now);
    if i % 100 == 50 {
        task.schedule_name = Some("nightly".to_owned());
    }
    task
}

/// Loads tasks `from..to` into `store`; the listing key of task `mark` if it is among them.
async fn load(
    store: &AnyStore,
    from: usize,
    to: usize,
    mark: usize,
    bar: &ProgressBar,
) -> Option<ListKey> {
    let leases = Leases::fixed(Duration::from_secs(300));
    let mut marked = None;
    for start in (from..to).step_by(CHUNK) {
        let now = Timestamp::now_utc();
        let tasks: Vec<(usize, Task)> = (start..to.min(start + CHUNK))
            .map(|i| (i, task(i, now)))
            .collect();
        let fates: HashMap<TaskId, Fate> = tasks.iter().map(|(i, t)| (t.id, fate(*i))).collect();
        if let Some((_, t)) = tasks.iter().find(|(i, _)| *i == mark) {
            marked = Some(ListKey::of(t));
        }
        futures::stream::iter(tasks.into_iter().map(|(_, t)| store.task_create(t)))
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await
            .expect("create");
        let cancels = fates
            .iter()
            .filter(|(_, f)| **f == Fate::Cancelled)
            .map(|(id, _)| *id);
        futures::stream::iter(cancels.map(|id| store.task_cancel(id, now)))
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await
            .expect("cancel");
        let due = fates
            .values()
            .filter(|f| matches!(f, Fate::Succeeded | Fate::Failed))
            .count();
        // Tasks of earlier rounds left due on purpose (a backlog) are run here too.
        let mut settled = 0;
        let mut empty = 0;
        while settled < due {
            let now = Timestamp::now_utc();
            let claimed = store
                .task_claim(Claim::due(now, 100, &leases))
                .await
                .expect("claim");
            if claimed.is_empty() {
                // An index entry a moment from visible.
                empty += 1;
                assert!(empty < 1000, "the load's due tasks never became claimable");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            settled += claimed.iter().filter(|t| fates.contains_key(&t.id)).count();
            let outcomes = claimed.iter().map(|t| {
                let outcome = match fates.get(&t.id) {
                    Some(Fate::Failed) => Settlement::Failed {
                        error: "load: failed on purpose".to_owned(),
                    },
                    _ => Settlement::Succeeded,
                };
                store.task_settle(t, outcome, now)
            });
            futures::stream::iter(outcomes)
                .buffer_unordered(CONCURRENCY)
                .try_collect::<Vec<_>>()
                .await
                .expect("settle");
        }
        bar.inc((to.min(start + CHUNK) - start) as u64);
    }
    marked
}

/// After a load to `size` tasks: one in 1,000 claimed and left running (a lease of an hour),
/// then one in 100 due now and left there (a backlog), as a busy queue has. The running ones,
/// to be ended before loading more: a task running under a long lease holds the due queue's
/// cursors, and every later claim's scan pages through the entries after it.
async fn busy(store: &AnyStore, size: usize) -> Vec<Task> {
    let mut held = Vec::new();
    let now = Timestamp::now_utc();
    let leases = Leases::fixed(Duration::from_secs(3600));
    for n in [size / 1000, size / 100] {
        let tasks = (0..n)
            .map(|i| Task::from_new(NewTask::new("report", format!("{{\"busy\":{i}}}")), now));
        futures::stream::iter(tasks.map(|t| store.task_create(t)))
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await
            .expect("create");
        if n == size / 1000 {
            let mut running = 0;
            while running < n {
                let now = Timestamp::now_utc();
                let claimed = store
                    .task_claim(Claim::due(now, (n - running).min(100), &leases))
                    .await
                    .expect("claim");
                if claimed.is_empty() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                running += claimed.len();
                held.extend(claimed);
            }
        }
    }
    held
}

/// Makes the loaded table look like a processor's at work: a backlog and running tasks, the
/// loader's counts written (as at the end of a run) and its look at the queue published (as
/// every 30 s while it claims).
async fn settle_in(store: &AnyStore, size: usize) -> Vec<Task> {
    let held = busy(store, size).await;
    store.queue_flush(Timestamp::now_utc(), true).await;
    store.queue_flush(Timestamp::now_utc(), false).await;
    held
}

/// The calls measured, each a path of the API; `deep` is a cursor half way down the table.
fn calls(deep: &ListKey) -> Vec<(String, String)> {
    let deep = deep.to_string().replace('#', "%23");
    [
        ("GET /stats", "/stats".to_owned()),
        ("list, first page", "/tasks?limit=20".to_owned()),
        (
            "list, deep cursor",
            format!("/tasks?limit=20&cursor={deep}"),
        ),
        (
            "status=succeeded, deep cursor",
            format!("/tasks?limit=20&status=succeeded&cursor={deep}"),
        ),
        ("status=failed", "/tasks?limit=20&status=failed".to_owned()),
        (
            "status=cancelled",
            "/tasks?limit=20&status=cancelled".to_owned(),
        ),
        (
            "status=pending",
            "/tasks?limit=20&status=pending".to_owned(),
        ),
        (
            "status=running (none)",
            "/tasks?limit=20&status=running".to_owned(),
        ),
        (
            "type=sendWebhook",
            "/tasks?limit=20&type=sendWebhook".to_owned(),
        ),
        (
            "type=report, deep cursor",
            format!("/tasks?limit=20&type=report&cursor={deep}"),
        ),
        (
            "type=report&status=failed",
            "/tasks?limit=20&type=report&status=failed".to_owned(),
        ),
        (
            "referenceUid",
            "/tasks?limit=20&referenceUid=order-25".to_owned(),
        ),
        (
            "schedule=nightly",
            "/tasks?limit=20&schedule=nightly".to_owned(),
        ),
    ]
    .into_iter()
    .map(|(label, path)| (label.to_owned(), path))
    .collect()
}

/// The median time (ms) and read units of each call.
async fn measure(
    base: &str,
    calls: &[(String, String)],
    proxy: Option<&CapacityProxy>,
) -> Vec<(f64, Option<f64>)> {
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    for (label, path) in calls {
        let get = || async {
            let response = client
                .get(format!("{base}{path}"))
                .send()
                .await
                .expect("GET");
            assert!(
                response.status().is_success(),
                "{label}: {}",
                response.status()
            );
            response.bytes().await.expect("body");
        };
        get().await;
        let mut times = Vec::new();
        let mut units = Vec::new();
        for _ in 0..REPEATS {
            if let Some(proxy) = proxy {
                proxy.take();
            }
            let started = Instant::now();
            get().await;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            if let Some(proxy) = proxy {
                units.push(sums(&proxy.take()).read_units);
            }
        }
        out.push((median(times), (!units.is_empty()).then(|| median(units))));
    }
    out
}

/// What `GET /stats` answered: the numbers and how exact they are.
async fn stats(base: &str) -> serde_json::Value {
    reqwest::get(format!("{base}/stats"))
        .await
        .expect("GET /stats")
        .json()
        .await
        .expect("stats as JSON")
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The scale phase: `store` is loaded as a processor would (and writes what it keeps at the
/// end of each load, as a processor run does); `api`, another process on the same tasks,
/// serves the HTTP calls (metered by `proxy` on DynamoDB).
pub async fn scale(
    store: AnyStore,
    api: AnyStore,
    proxy: Option<&CapacityProxy>,
    label: &str,
    small: usize,
    full: usize,
) -> Scale {
    let tasker = Arc::new(tasker::Tasker::new(
        api,
        phases::noop_registry(ProgressBar::hidden()),
        tasker::ProcessorSettings::default(),
    ));
    let base = phases::serve_api(Arc::clone(&tasker)).await;
    let started = Instant::now();
    let bar = crate::bar(full, &format!("{label}: scale, loading"));
    let small_mark = load(&store, 0, small, small / 2 + 10, &bar)
        .await
        .expect("a deep cursor");
    let held = settle_in(&store, small).await;
    let at_small = measure(&base, &calls(&small_mark), proxy).await;
    let stats_small = stats(&base).await;
    let now = Timestamp::now_utc();
    for task in &held {
        store
            .task_settle(task, Settlement::Succeeded, now)
            .await
            .expect("end a held task");
    }
    let full_mark = load(&store, small, full, full / 2 + 10, &bar)
        .await
        .unwrap_or(small_mark);
    settle_in(&store, full).await;
    bar.finish_and_clear();
    let load_seconds = started.elapsed().as_secs_f64();
    let list = calls(&full_mark);
    let at_full = measure(&base, &list, proxy).await;
    let stats_full = stats(&base).await;
    Scale {
        stats_small,
        stats_full,
        store: label.to_owned(),
        small,
        full,
        load_seconds,
        calls: list
            .into_iter()
            .zip(at_small.into_iter().zip(at_full))
            .map(
                |((call, _), ((small_ms, small_read_units), (full_ms, full_read_units)))| {
                    ScaleCall {
                        call,
                        small_ms,
                        full_ms,
                        small_read_units,
                        full_read_units,
                    }
                },
            )
            .collect(),
    }
}

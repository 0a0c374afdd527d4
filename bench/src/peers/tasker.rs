//! Tasker in the peers' shape (`bench/peers/common.mjs`): the same passes, through the
//! library or over HTTP, on a fresh store for each.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use indicatif::ProgressBar;
use serde_json::json;
use tasker::{AnyStore, NewTask, ProcessorSettings, Registry, TaskError, Tasker, Timestamp};

use super::{Delays, Depth, Row, Shape};
use crate::phases::{self, unix_ms};
use crate::stores::{Bench, Kind, noop_tasker};

/// How the passes hand Tasker its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `Tasker::create` and `create_many` in the process that runs them.
    Library,
    /// `POST /tasks` and `POST /tasks/batch` to the API of the process that runs them, as an
    /// application talks to `tasker serve`.
    Http,
}

/// The longest the start-delay passes wait for their last task.
const DELAY_PASS_LIMIT: Duration = Duration::from_secs(120);

/// Tasker's row on a store of `kind`, its tasks handed over `via`.
pub async fn row(bench: &Bench, kind: Kind, via: Via, shape: &Shape) -> Row {
    let n = shape.jobs;
    let hidden = ProgressBar::hidden();
    let store = bench.store(kind, "peers-one").await;
    let tasker = Arc::new(noop_tasker(store.clone()));
    let enqueue_one_s = n as f64
        / match via {
            Via::Library => phases::enqueue_library(&tasker, n, 1, &hidden).await,
            Via::Http => {
                let base = phases::serve_api(Arc::clone(&tasker)).await;
                phases::enqueue_http_single(&base, n, &hidden).await
            }
        };
    let drain_s = n as f64 / phases::drain(store, n, &hidden).await.per_second;

    let store = bench.store(kind, "peers-batch").await;
    let tasker = Arc::new(noop_tasker(store.clone()));
    let enqueue_batch_s = match via {
        Via::Library => create_batches(&tasker, n, shape.batch).await,
        Via::Http => {
            let base = phases::serve_api(Arc::clone(&tasker)).await;
            n as f64 / phases::enqueue_http_batch(&base, n, &hidden).await
        }
    };
    let drain_batch_s = n as f64 / phases::drain(store, n, &hidden).await.per_second;

    let due_now_ms = start_delays(bench.store(kind, "peers-now").await, via, shape, 0).await;
    let delayed_1s_ms = start_delays(bench.store(kind, "peers-later").await, via, shape, 1).await;
    let mut depth = Vec::new();
    for &workers in &shape.depth_workers {
        let store = bench.store(kind, &format!("peers-depth-{workers}")).await;
        depth.push(depth_pass(store, shape, workers).await);
    }
    Row {
        system: "Tasker".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        setup: String::new(),
        jobs: n,
        concurrency: phases::CONCURRENCY,
        enqueue_one_s,
        drain_s,
        enqueue_batch_s,
        drain_batch_s,
        due_now_ms,
        delayed_1s_ms,
        depth,
    }
}

/// Creates `n` no-op tasks through the library in `create_many` calls of `batch`; seconds.
async fn create_batches(tasker: &Tasker<AnyStore>, n: usize, batch: usize) -> f64 {
    let started = Instant::now();
    for first in (0..n).step_by(batch.max(1)) {
        let news = (first..n.min(first + batch))
            .map(|i| NewTask::new("noop", format!("{{\"n\":{i}}}")))
            .collect();
        for created in tasker.create_many(news).await {
            created.expect("create in a batch");
        }
    }
    started.elapsed().as_secs_f64()
}

/// `tasker serve`'s loop over `store` while tasks due `delay_s` after they are created are
/// created at the shape's rate: how long after its due instant each one started.
async fn start_delays(store: AnyStore, via: Via, shape: &Shape, delay_s: u64) -> Delays {
    let delays: phases::Delays = Arc::default();
    let registry = phases::timed_registry(&delays, &ProgressBar::hidden());
    let tasker = Arc::new(Tasker::new(store, registry, ProcessorSettings::default()));
    let (stop, serving) = serve(&tasker);
    let base = match via {
        Via::Library => None,
        Via::Http => Some(phases::serve_api(Arc::clone(&tasker)).await),
    };
    let client = reqwest::Client::new();
    // As the peers do: the loop has started before the first task.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gap = Duration::from_secs_f64(1.0 / shape.rate);
    let start = Instant::now();
    for i in 0..shape.delay_jobs {
        tokio::time::sleep_until((start + gap * u32::try_from(i).unwrap_or(u32::MAX)).into()).await;
        let due = SystemTime::now() + Duration::from_secs(delay_s);
        let payload = json!({"dueMs": unix_ms(due)});
        match &base {
            None => {
                let mut new = NewTask::new("timed", payload.to_string());
                if delay_s > 0 {
                    new.scheduled_at = Some(Timestamp::new(due.into()));
                }
                tasker.create(new).await.expect("create a timed task");
            }
            Some(base) => {
                let response = client
                    .post(format!("{base}/tasks"))
                    .json(&json!({"type": "timed", "payload": payload, "delaySeconds": delay_s}))
                    .send()
                    .await
                    .expect("POST /tasks");
                assert_eq!(response.status(), 201, "create a timed task over HTTP");
            }
        }
    }
    let waiting = Instant::now();
    while delays.lock().unwrap_or_else(|p| p.into_inner()).len() < shape.delay_jobs {
        assert!(
            waiting.elapsed() < DELAY_PASS_LIMIT,
            "every timed task started within {} s",
            DELAY_PASS_LIMIT.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(());
    serving.await.expect("the serve loop");
    let summary = phases::delay_summary(&delays, shape.delay_jobs);
    Delays {
        p50: summary.p50_ms,
        p99: summary.p99_ms,
        max: summary.max_ms,
    }
}

/// `tasker serve`'s loop with `workers` slots over `store`, running 1 ms tasks while a producer
/// keeps the shape's depth target waiting (created through the library in batches): tasks
/// completed per second, as the peers' depth-target pass measures it.
async fn depth_pass(store: AnyStore, shape: &Shape, workers: usize) -> Depth {
    let started = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut registry = Registry::new();
    registry
        .register("work", {
            let (started, done) = (Arc::clone(&started), Arc::clone(&done));
            move |_| {
                let (started, done) = (Arc::clone(&started), Arc::clone(&done));
                async move {
                    started.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    done.fetch_add(1, Ordering::Relaxed);
                    Ok::<(), TaskError>(())
                }
            }
        })
        .expect("register work");
    let settings = ProcessorSettings {
        concurrency: workers,
        ..ProcessorSettings::default()
    };
    let tasker = Arc::new(Tasker::new(store, registry, settings));
    let (stop, serving) = serve(&tasker);
    let measured = Duration::from_secs_f64(shape.depth_seconds);
    let warm_until = Instant::now() + measured / 5;
    let mut from: Option<(Instant, usize)> = None;
    let mut created = 0;
    while from.is_none_or(|(at, _)| at.elapsed() < measured) {
        if from.is_none() && Instant::now() >= warm_until {
            from = Some((Instant::now(), done.load(Ordering::Relaxed)));
        }
        let waiting = created - started.load(Ordering::Relaxed).min(created);
        if waiting < shape.depth_target {
            let size = shape.batch.min(shape.depth_target - waiting);
            let news = (created..created + size)
                .map(|n| NewTask::new("work", format!("{{\"n\":{n}}}")))
                .collect();
            for made in tasker.create_many(news).await {
                made.expect("create a depth task");
            }
            created += size;
        } else {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let (at, before) = from.unwrap_or((Instant::now(), 0));
    let jobs_per_s = (done.load(Ordering::Relaxed) - before) as f64 / at.elapsed().as_secs_f64();
    let _ = stop.send(());
    serving.await.expect("the serve loop");
    Depth {
        workers,
        jobs_per_s,
    }
}

/// `tasker serve`'s loop for `tasker`, polling every second: the sender that stops it, and the
/// loop's task.
fn serve(
    tasker: &Arc<Tasker<AnyStore>>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<tasker::engine::RunSummary>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let tasker = Arc::clone(tasker);
    let serving = tokio::spawn(async move {
        let stop = async {
            let _ = stopped.await;
        };
        tasker.serve_queue(Duration::from_secs(1), stop).await
    });
    (stop, serving)
}

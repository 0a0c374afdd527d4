//! The measured phases on one store: ceiling, enqueue, drain, write units, start delay.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};
use indicatif::ProgressBar;
use serde_json::json;
use tasker::store::dynamodb::probe as dynamodb_probe;
use tasker::store::sqlite::probe as sqlite_probe;
use tasker::{
    AnyStore, AuthMode, NewTask, PollSettings, ProcessorSettings, Registry, RunSummary, Store,
    TaskError, Tasker, Timestamp, api,
};
use tasker_tests::dynamo;

/// Writes in flight at once: the processor's default concurrency and the store's claim fan-out.
pub const CONCURRENCY: usize = 16;

/// A registry whose `noop` handler only ticks `bar`.
pub fn noop_registry(bar: ProgressBar) -> Registry {
    let mut registry = Registry::new();
    registry
        .register("noop", move |_| {
            bar.inc(1);
            async { Ok::<(), TaskError>(()) }
        })
        .expect("register noop");
    registry
}

fn rate(count: usize, took: Duration) -> f64 {
    count as f64 / took.as_secs_f64().max(f64::EPSILON)
}

/// Single conditional writes per second on DynamoDB, `CONCURRENCY` at once, on a fresh table
/// of DynamoDB Local at `endpoint`, with the store's own client settings.
pub async fn dynamo_ceiling(endpoint: &str, n: usize, bar: &ProgressBar) -> f64 {
    let client = dynamo::client_for(endpoint);
    let table = dynamo::fresh_table(&client).await;
    let took = dynamodb_probe::conditional_writes(client, &table, n, CONCURRENCY, &|| bar.inc(1))
        .await
        .expect("ceiling writes");
    rate(n, took)
}

/// Single conditional writes per second on SQLite: one-row updates, each in its own immediate
/// transaction on one WAL connection (as the store holds it), `CONCURRENCY` callers at once.
pub async fn sqlite_ceiling(path: &std::path::Path, n: usize, bar: &ProgressBar) -> f64 {
    let took = sqlite_probe::conditional_writes(path, n, CONCURRENCY, &|| bar.inc(1))
        .await
        .expect("ceiling writes");
    rate(n, took)
}

/// Single conditional writes per second on PostgreSQL: one-row updates, each its own
/// transaction, `CONCURRENCY` at once over as many pooled connections, in the database at
/// `url`.
pub async fn postgres_ceiling(url: &str, n: usize, bar: &ProgressBar) -> f64 {
    let took = tasker::store::postgres::probe::conditional_writes(url, n, CONCURRENCY, &|| {
        bar.inc(1);
    })
    .await
    .expect("ceiling writes");
    rate(n, took)
}

/// Creates `n` no-op tasks through the library, `concurrency` at once; tasks per second.
pub async fn enqueue_library(
    tasker: &Tasker<AnyStore>,
    n: usize,
    concurrency: usize,
    bar: &ProgressBar,
) -> f64 {
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| async move {
            let created = tasker
                .create(NewTask::new("noop", format!("{{\"n\":{i}}}")))
                .await;
            bar.inc(1);
            created
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await
        .expect("create");
    rate(n, started.elapsed())
}

/// The HTTP API over `tasker` on a free 127.0.0.1 port; the base URL.
pub async fn serve_api(tasker: Arc<Tasker<AnyStore>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let app = api::router(tasker, AuthMode::Open);
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

/// `n` `POST /tasks` one after another; tasks per second.
pub async fn enqueue_http_single(base: &str, n: usize, bar: &ProgressBar) -> f64 {
    let client = reqwest::Client::new();
    let started = Instant::now();
    for i in 0..n {
        let response = client
            .post(format!("{base}/tasks"))
            .json(&json!({"type": "noop", "payload": {"n": i}}))
            .send()
            .await
            .expect("POST /tasks");
        assert_eq!(response.status(), 201, "create over HTTP");
        bar.inc(1);
    }
    rate(n, started.elapsed())
}

/// `n` tasks as `POST /tasks/batch` requests of 100, one after another; tasks per second.
pub async fn enqueue_http_batch(base: &str, n: usize, bar: &ProgressBar) -> f64 {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut sent = 0;
    while sent < n {
        let size = (n - sent).min(100);
        let tasks: Vec<_> = (sent..sent + size)
            .map(|i| json!({"type": "noop", "payload": {"n": i}}))
            .collect();
        let response = client
            .post(format!("{base}/tasks/batch"))
            .json(&json!({ "tasks": tasks }))
            .send()
            .await
            .expect("POST /tasks/batch");
        assert_eq!(response.status(), 200, "batch over HTTP");
        let body: serde_json::Value = response.json().await.expect("batch answer");
        let created = body["results"]
            .as_array()
            .map_or(0, |r| r.iter().filter(|r| r["status"] == "created").count());
        assert_eq!(created, size, "every batch item is created");
        sent += size;
        bar.inc(size as u64);
    }
    rate(n, started.elapsed())
}

/// What a drain measured.
pub struct Drain {
    /// Tasks per second.
    pub per_second: f64,
    /// Row writes (claims + outcomes) per task.
    pub writes_per_task: f64,
    /// Tasks that succeeded.
    pub succeeded: usize,
}

/// Runs the queue (as `tasker serve` and the processor do) until `n` tasks succeeded.
pub async fn drain(store: AnyStore, n: usize, bar: &ProgressBar) -> Drain {
    let tasker = Tasker::new(
        store,
        noop_registry(bar.clone()),
        ProcessorSettings::default(),
    );
    let started = Instant::now();
    let mut total = RunSummary::default();
    while total.outcomes.succeeded < n {
        let run = tasker.process_queue(None).await.expect("processor run");
        total.absorb(&run);
        if run.claimed == 0 {
            break;
        }
    }
    let took = started.elapsed();
    // Each task a claim handed out is one row write, and so is each outcome written or tried.
    let writes = total.claimed + total.outcomes.total();
    Drain {
        per_second: rate(total.outcomes.succeeded, took),
        writes_per_task: writes as f64 / total.outcomes.succeeded.max(1) as f64,
        succeeded: total.outcomes.succeeded,
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// Start delays in poll mode.
pub struct StartDelay {
    /// Tasks measured.
    pub tasks: usize,
    /// Median due→start, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile due→start, in milliseconds.
    pub p99_ms: f64,
    /// Largest due→start, in milliseconds.
    pub max_ms: f64,
}

/// Due → start delays in milliseconds, as the `timed` handler records them.
pub type Delays = Arc<std::sync::Mutex<Vec<f64>>>;

/// A registry whose `timed` handler records how long after its `dueMs` it started, and ticks
/// `bar`.
pub fn timed_registry(delays: &Delays, bar: &ProgressBar) -> Registry {
    let delays = Arc::clone(delays);
    let bar = bar.clone();
    let mut registry = Registry::new();
    registry
        .register("timed", move |ctx| {
            let started = unix_ms(SystemTime::now());
            let due: i64 = serde_json::from_str::<serde_json::Value>(&ctx.payload)
                .ok()
                .and_then(|p| p["dueMs"].as_i64())
                .unwrap_or(started);
            delays
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((started - due) as f64);
            bar.inc(1);
            async { Ok::<(), TaskError>(()) }
        })
        .expect("register timed");
    registry
}

/// Creates `n` `timed` tasks through `tasker`, due at spread-out instants over 10 s from 3 s
/// ahead; fails if that took longer than the lead (their delays would include the setup).
pub async fn create_timed<S: Store>(tasker: &Tasker<S>, n: usize) {
    let start = SystemTime::now() + Duration::from_secs(3);
    futures::stream::iter(0..n)
        .map(|i| {
            // Spread evenly over 10 s, at odd milliseconds, so no due instant lines up with a
            // poll.
            let offset = Duration::from_millis((i as u64 * 10_000 / n.max(1) as u64) + 7);
            let due = start + offset;
            let mut new = NewTask::new("timed", json!({"dueMs": unix_ms(due)}).to_string());
            new.scheduled_at = Some(Timestamp::new(due.into()));
            tasker.create(new)
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await
        .expect("create timed tasks");
    assert!(
        SystemTime::now() < start,
        "creating the timed tasks took longer than their 3 s lead"
    );
}

/// p50, p99 and max of the recorded `delays`, which must be `n`.
pub fn delay_summary(delays: &Delays, n: usize) -> StartDelay {
    let delays = delays.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(delays.len(), n, "every timed task started");
    let (p50_ms, p99_ms, max_ms) = percentiles(delays);
    StartDelay {
        tasks: n,
        p50_ms,
        p99_ms,
        max_ms,
    }
}

/// `n` tasks due at spread-out instants over 10 s (from 3 s ahead), and one processor
/// invocation in poll mode (`poll`, window 15 s) that runs them: how long after its due instant each one started.
pub async fn start_delay(
    store: AnyStore,
    n: usize,
    poll: PollSettings,
    bar: &ProgressBar,
) -> StartDelay {
    let delays: Delays = Arc::default();
    let tasker = Tasker::new(
        store.clone(),
        timed_registry(&delays, bar),
        ProcessorSettings::default(),
    );
    // Created by another Tasker, as the enqueue Lambda creates them: the processor learns of
    // them only by polling (one that created them would look at their instants). Polling must
    // start before the first task is due, or its delay would include the setup.
    let creator = Tasker::new(
        store,
        timed_registry(&delays, bar),
        ProcessorSettings::default(),
    );
    create_timed(&creator, n).await;
    let poll = PollSettings {
        window: Duration::from_secs(15),
        ..poll
    };
    tasker.poll_queue(None, poll).await.expect("poll window");
    delay_summary(&delays, n)
}

/// p50, p99 and max of `values` (NaN when there are none).
pub fn percentiles(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let pick = |q: f64| -> f64 {
        if values.is_empty() {
            return f64::NAN;
        }
        let index = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1;
        values[index]
    };
    (pick(0.50), pick(0.99), pick(1.0))
}

//! SQS mode beside poll mode, on DynamoDB Local and moto's SQS: due → start delays, drains of
//! the same backlog with 1, 2 and 4 workers, and what a task costs in DynamoDB units (through
//! the capacity proxy) and SQS calls (counted by the queue client).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use indicatif::ProgressBar;
use tasker::push::Push;
use tasker::push::sqs::SqsQueue;
use tasker::runtime::receive::receive;
use tasker::store::Created;
use tasker::{AnyStore, DynamoStore, NewTask, ProcessorSettings, Registry, Tasker};
use tasker_tests::capacity::CapacityProxy;
use tasker_tests::dynamo;
use tasker_tests::sqs::fresh_queues_at;

use crate::bar;
use crate::phases::{
    CONCURRENCY, Delays, create_timed, delay_summary, noop_registry, timed_registry,
};
use crate::results::{SqsDrain, SqsResults, StartDelay, sums};

/// The workers' long poll. moto wakes a waiting receive when a message is sent, or once a
/// second: a delayed message that becomes visible waits up to a second there (SQS answers a
/// long poll as soon as a message is available), so the start delay is measured with short
/// polls too.
const LONG_POLL: Duration = Duration::from_secs(1);

/// Messages kept waiting on the queue at most while a drain's backlog is fed in: moto's calls
/// cost more the longer its queue, and a real queue's backlog would not slow a worker.
const FEED_AHEAD: u64 = 300;

/// Every SQS-mode measurement.
pub async fn measure(ddb: &str, sqs: &str, tasks: usize, delay_tasks: usize) -> SqsResults {
    let long_polls = start_delay(ddb, sqs, delay_tasks, LONG_POLL).await;
    let short_polls = start_delay(ddb, sqs, delay_tasks, Duration::ZERO).await;
    let mut drains = Vec::new();
    for workers in [1, 2, 4] {
        drains.push(drain(ddb, sqs, tasks, workers).await);
    }
    SqsResults {
        start_delay: long_polls,
        start_delay_short_polls: short_polls,
        drains,
    }
}

/// Consumers reading `queue` with their own store clients on `table` at `endpoint`, until
/// `stop` turns true.
fn workers(
    count: usize,
    endpoint: &str,
    table: &str,
    queue: &SqsQueue,
    registry: impl Fn() -> Registry,
    wait: Duration,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..count)
        .map(|_| {
            let store = DynamoStore::new(dynamo::client_for(endpoint), table, Duration::ZERO);
            let tasker = Tasker::new(
                AnyStore::DynamoDb(store),
                registry(),
                ProcessorSettings::default(),
            )
            .with_push(Arc::new(queue.clone()));
            let queue = queue.clone();
            let mut stop = stop.clone();
            tokio::spawn(async move {
                receive(&tasker, &queue, wait, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            })
        })
        .collect()
}

/// `n` tasks due over 10 s from 3 s ahead, each sent with its delay at the create, and one
/// worker reading the queue: how long after its due instant each started.
async fn start_delay(ddb: &str, sqs: &str, n: usize, wait: Duration) -> StartDelay {
    let label = if wait.is_zero() {
        "short polls"
    } else {
        "long polls"
    };
    let progress = bar(
        n,
        &format!("DynamoDB Local: start delay, SQS mode, {label}"),
    );
    let queues = fresh_queues_at(sqs, 5, Duration::from_secs(60)).await;
    let store = dynamo::fresh_store_at(ddb).await;
    let delays: Delays = Arc::default();
    let registry = || timed_registry(&delays, &progress);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let readers = workers(
        1,
        ddb,
        store.table(),
        &queues.queue,
        registry,
        wait,
        &stopped,
    );
    let tasker = Tasker::new(
        AnyStore::DynamoDb(store),
        registry(),
        ProcessorSettings::default(),
    )
    .with_push(Arc::new(queues.queue.clone()));
    create_timed(&tasker, n).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while delays.lock().unwrap_or_else(|p| p.into_inner()).len() < n {
        assert!(
            Instant::now() < deadline,
            "every timed task started within a minute"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(true);
    for reader in readers {
        let _ = reader.await;
    }
    progress.finish_and_clear();
    let summary = delay_summary(&delays, n);
    StartDelay {
        tasks: n,
        poll_interval_seconds: 0.0,
        p50_ms: summary.p50_ms,
        p99_ms: summary.p99_ms,
        max_ms: summary.max_ms,
    }
}

/// `n` no-op tasks created in batches (their messages ten per call, as `POST /tasks/batch`
/// sends them) and drained by `count` workers, through the capacity proxy.
async fn drain(ddb: &str, sqs: &str, n: usize, count: usize) -> SqsDrain {
    let proxy = CapacityProxy::start(ddb).await;
    let queues = fresh_queues_at(sqs, 5, Duration::from_secs(60)).await;
    let monitor = SqsQueue::new(queues.client.clone(), queues.queue.url());
    let store = dynamo::fresh_store_at(&proxy.endpoint).await;
    proxy.take();
    let progress = bar(n, &format!("DynamoDB Local: SQS mode, {count} worker(s)"));
    let tasker = Tasker::new(
        AnyStore::DynamoDb(store.clone()),
        noop_registry(ProgressBar::hidden()),
        ProcessorSettings::default(),
    )
    .with_push(Arc::new(queues.queue.clone()));
    let started = Instant::now();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let readers = {
        let progress = progress.clone();
        workers(
            count,
            &proxy.endpoint,
            store.table(),
            &queues.queue,
            move || noop_registry(progress.clone()),
            LONG_POLL,
            &stopped,
        )
    };
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        while monitor.waiting().await.unwrap_or(0) > FEED_AHEAD {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let created: Vec<_> = futures::stream::iter(chunk.iter().copied())
            .map(|i| tasker.create_held(NewTask::new("noop", format!(r#"{{"n":{i}}}"#))))
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await
            .expect("create");
        let tasks: Vec<_> = created.into_iter().map(Created::into_task).collect();
        tasker.deliver(&tasks).await;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while progress.position() < n as u64 {
        assert!(
            Instant::now() < deadline,
            "the SQS drain finished within ten minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    for reader in readers {
        let _ = reader.await;
    }
    progress.finish_and_clear();
    let used = sums(&proxy.take());
    let per = |x: f64| x / n.max(1) as f64;
    SqsDrain {
        workers: count,
        tasks: n,
        seconds,
        per_second: n as f64 / seconds.max(f64::EPSILON),
        write_units_per_task: per(used.write_units),
        read_units_per_task: per(used.read_units),
        sqs_calls_per_task: per(queues.queue.calls() as f64),
    }
}

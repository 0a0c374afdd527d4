//! Several `tasker serve` processes over one PostgreSQL: racing for the same tasks, and carrying
//! on by themselves when the server restarts under them.

use std::time::Duration;
use tasker::store::postgres::PgStore;
use tasker_tests::fixtures::ApiClient;
use tasker_tests::postgres::{Cluster, fresh_database};
use tasker_tests::process::Serve;
use tasker_tests::receiver::Receiver;

fn serve_envs(concurrency: &str) -> Vec<(&'static str, String)> {
    [
        ("TASKER_WEBHOOK_ALLOW_PRIVATE", "true"),
        ("TASKER_CONCURRENCY", concurrency),
        ("TASKER_HANDLER_TIMEOUT", "3s"),
        ("TASKER_LEASE_GRACE", "1s"),
        ("TASKER_RETRY_INITIAL", "1s"),
    ]
    .map(|(name, value)| (name, value.to_owned()))
    .to_vec()
}

/// Waits until every task in `ids` has succeeded (60 s each at most); each as it was seen then.
async fn all_succeed(store: &PgStore, ids: &[String]) -> Vec<tasker::Task> {
    let mut succeeded = Vec::with_capacity(ids.len());
    for id in ids {
        let id: tasker::TaskId = id.parse().expect("a task id");
        let task = tasker_tests::eventually(
            &format!("task {id} to succeed"),
            Duration::from_secs(60),
            || async {
                let task = store.task_get(id).await.ok().flatten()?;
                (task.status == tasker::TaskStatus::Succeeded).then_some(task)
            },
        )
        .await;
        succeeded.push(task);
    }
    succeeded
}

/// GIVEN three `tasker serve` processes over one database, each polling every second and woken
/// by every create WHEN 600 webhooks are created through each, all at once while all three
/// drain THEN each of the 1,800 is delivered exactly once and succeeds on its first attempt:
/// none lost, none run twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_race_for_1800_tasks() {
    const PER_PROCESS: usize = 600;
    let url = fresh_database().await;
    let receiver = Receiver::start().await;
    let args = [
        "--store",
        "postgres",
        "--database-url",
        &url,
        "--interval",
        "1",
    ];
    let mut processes = Vec::new();
    for _ in 0..3 {
        processes.push(Serve::start(&args, &serve_envs("16")).await);
    }
    let creates = processes.iter().enumerate().map(|(n, serve)| {
        let api = ApiClient::open(&serve.base);
        let base = receiver.base.clone();
        async move {
            let range = n * PER_PROCESS..(n + 1) * PER_PROCESS;
            batch_of_webhooks(&api, &base, 0, range).await
        }
    });
    let ids: Vec<String> = futures::future::join_all(creates)
        .await
        .into_iter()
        .flatten()
        .collect();
    let store = PgStore::connect(&url, 2).await.expect("connected");
    let succeeded = all_succeed(&store, &ids).await;

    let deliveries = receiver.count_by_path();
    let twice: Vec<_> = deliveries.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(deliveries.len(), 3 * PER_PROCESS, "every task delivered");
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    for task in &succeeded {
        assert_eq!(
            task.attempts, 1,
            "task {} ran {} times",
            task.id, task.attempts
        );
    }
    drop(processes);
}

/// Creates a webhook per `i` in `range` through `api`, in batches of 100, each to
/// `{receiver}/delay/{delay_ms}/task-{i}`; their ids, in the order of `i`.
async fn batch_of_webhooks(
    api: &ApiClient,
    receiver: &str,
    delay_ms: u64,
    range: std::ops::Range<usize>,
) -> Vec<String> {
    let mut ids = Vec::new();
    let items: Vec<_> = range
        .map(|i| {
            serde_json::json!({
                "type": "sendWebhook",
                "payload": {"url": format!("{receiver}/delay/{delay_ms}/task-{i}"), "body": {"i": i}},
            })
        })
        .collect();
    for chunk in items.chunks(100) {
        let body = serde_json::json!({ "tasks": chunk });
        let (status, answer) = api
            .send(reqwest::Method::POST, "/tasks/batch", Some(&body))
            .await;
        assert_eq!(status, 200, "{answer}");
        for result in answer["results"].as_array().expect("results") {
            assert_eq!(result["status"], "created", "{result}");
            ids.push(result["id"].as_str().expect("an id").to_owned());
        }
    }
    ids
}

/// GIVEN two `tasker serve` processes over one PostgreSQL, looking at the queue only once an
/// hour, draining 300 webhooks of 200 ms WHEN the server is shut down (every connection cut)
/// a third of the way through, left down 3 s and started again THEN both processes carry on
/// by themselves: every task succeeds and is delivered, none lost, and only attempts the cut
/// caught (at most the 16 slots) are delivered twice; a task created afterwards through the
/// other process starts at once (its listener is back: the hour is never waited out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_mid_drain_loses_nothing() {
    const TASKS: usize = 300;
    const SLOTS: usize = 8;
    let mut cluster = Cluster::start();
    let receiver = Receiver::start().await;
    let envs = serve_envs("8");
    let args = [
        "--store",
        "postgres",
        "--database-url",
        &cluster.url,
        "--interval",
        "3600",
    ];
    let first = Serve::start(&args, &envs).await;
    let second = Serve::start(&args, &envs).await;
    let ids = batch_of_webhooks(&ApiClient::open(&first.base), &receiver.base, 200, 0..TASKS).await;

    tasker_tests::eventually(
        "a third of the webhooks delivered",
        Duration::from_secs(60),
        || async { (receiver.all().len() >= TASKS / 3).then_some(()) },
    )
    .await;
    cluster.stop();
    let at_stop = receiver.all().len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.start_again();
    assert!(
        at_stop < TASKS,
        "the drain ended before the stop: {at_stop}"
    );

    let late = batch_of_webhooks(
        &ApiClient::open(&second.base),
        &receiver.base,
        200,
        TASKS..TASKS + 1,
    )
    .await;
    let store = PgStore::connect(&cluster.url, 2).await.expect("connected");
    all_succeed(&store, &[ids, late].concat()).await;
    let deliveries = receiver.count_by_path();
    let twice: Vec<_> = deliveries.iter().filter(|(_, n)| **n > 1).collect();
    assert_eq!(deliveries.len(), TASKS + 1, "every task delivered");
    assert!(
        twice.len() <= 2 * SLOTS,
        "only attempts in flight at the cut run twice: {twice:?}"
    );
    drop((first, second));
}

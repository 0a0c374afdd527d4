//! SQS mode with real processes: `tasker serve` sending and `tasker worker` running; and a
//! `tasker worker` killed with SIGKILL in the middle of a batch of slow tasks. The messages it
//! held come back after the queue's visibility timeout, which outlasts the lease, so a new
//! worker claims the interrupted tasks again; only those in flight at the kill ran twice, and
//! none is lost. The tasks are kept in DynamoDB Local or in PostgreSQL: SQS delivers them
//! either way.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tasker::{AnyStore, NewTask, ProcessorSettings, Registry, Store, TaskId, TaskStatus, Tasker};
use tasker_tests::receiver::Receiver;
use tasker_tests::sqs::{Queues, fresh_queues};
use tasker_tests::{dynamo, eventually, process};

const TASKS: usize = 10;

/// The store a test's processes share: its handle here, and the environment that names it
/// to a child process (with the AWS settings the SQS client needs).
struct Shared {
    store: AnyStore,
    env: Vec<(&'static str, String)>,
}

async fn on_dynamodb() -> Shared {
    let store = dynamo::fresh_store().await;
    let mut env = dynamo::child_env();
    env.extend([
        ("TASKER_STORE", "dynamodb".to_owned()),
        ("TASKER_TABLE", store.table().to_owned()),
    ]);
    Shared {
        store: AnyStore::DynamoDb(store),
        env,
    }
}

async fn on_postgres() -> Shared {
    let url = tasker_tests::postgres::fresh_database().await;
    let store = tasker::store::postgres::PgStore::connect(&url, 4)
        .await
        .expect("connected");
    let mut env = dynamo::child_env();
    env.extend([
        ("TASKER_STORE", "postgres".to_owned()),
        ("TASKER_DATABASE_URL", url),
    ]);
    Shared {
        store: AnyStore::Postgres(store),
        env,
    }
}

/// A running `tasker worker`; killed (SIGKILL) when dropped.
struct Worker(Child);

impl Worker {
    fn start(shared: &Shared, queue_url: &str) -> Self {
        let mut command = Command::new(process::binary());
        command
            .args(["worker", "--queue-url", queue_url, "--wait", "1"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("TASKER_TEST_CHILD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("AWS_ENDPOINT_URL_SQS", tasker_tests::sqs::endpoint())
            // Four at a time out of each batch of ten; a claim lasts 3 s + 1 s.
            .env("TASKER_CONCURRENCY", "4")
            .env("TASKER_HANDLER_TIMEOUT", "3s")
            .env("TASKER_LEASE_GRACE", "1s")
            .env("TASKER_WEBHOOK_ALLOW_PRIVATE", "true")
            .stdin(Stdio::null());
        for (key, value) in &shared.env {
            command.env(key, value);
        }
        Self(command.spawn().expect("start tasker worker"))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GIVEN `tasker serve` in SQS mode and a `tasker worker` WHEN a task due now is created
/// through the API THEN the worker runs it (serve runs no tasks itself: only the mover).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_sends_and_a_worker_runs() {
    serve_sends_and_a_worker_runs_on(on_dynamodb().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_sends_and_a_worker_runs_on_postgres() {
    serve_sends_and_a_worker_runs_on(on_postgres().await).await;
}

async fn serve_sends_and_a_worker_runs_on(shared: Shared) {
    let Queues { queue, client, .. } = fresh_queues(5, Duration::from_secs(30)).await;
    let store = &shared.store;
    let receiver = Receiver::start().await;
    let mut env = shared.env.clone();
    env.extend([
        ("TASKER_DISPATCH", "sqs".to_owned()),
        ("TASKER_QUEUE_URL", queue.url().to_owned()),
        ("AWS_ENDPOINT_URL_SQS", tasker_tests::sqs::endpoint()),
        ("TASKER_WEBHOOK_ALLOW_PRIVATE", "true".to_owned()),
        // The worker's claims (3 s + 1 s), inside the queue's 30 s visibility.
        ("TASKER_HANDLER_TIMEOUT", "3s".to_owned()),
        ("TASKER_LEASE_GRACE", "1s".to_owned()),
    ]);
    let serve = process::Serve::start(&[], &env).await;
    let api = tasker_tests::fixtures::ApiClient::open(&serve.base);
    let body = serde_json::json!({
        "type": "sendWebhook",
        "payload": {"url": format!("{}/via-sqs", receiver.base), "body": {}},
    });
    let (status, created) = api.send(reqwest::Method::POST, "/tasks", Some(&body)).await;
    assert_eq!(status, 201, "{created}");
    let id: TaskId = created["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("task id");
    // Nothing runs it but a worker: serve only sends and moves. Once its message waits in
    // the queue, the task is still pending and nothing was delivered.
    eventually("serve to send the message", Duration::from_secs(30), || {
        let (client, url) = (client.clone(), queue.url().to_owned());
        async move {
            let (waiting, in_flight) = tasker_tests::sqs::messages_in(&client, &url).await;
            (waiting + in_flight == 1).then_some(())
        }
    })
    .await;
    let task = store.task_get(id).await.expect("read").expect("the task");
    assert_eq!(
        task.status,
        TaskStatus::Pending,
        "serve claimed the task itself"
    );
    assert!(receiver.all().is_empty(), "serve ran the task itself");
    let _worker = Worker::start(&shared, queue.url());
    eventually(
        "the worker to run the task",
        Duration::from_secs(30),
        || async {
            let task = store.task_get(id).await.ok()??;
            (task.status == TaskStatus::Succeeded).then_some(())
        },
    )
    .await;
    assert_eq!(receiver.requests_to("/via-sqs").len(), 1);
}

/// The path the webhook of task `i` posts to: the receiver answers it after 1.5 s.
fn slow_path(i: usize) -> String {
    format!("/delay/1500/task-{i}")
}

/// GIVEN ten webhooks that each take 1.5 s, sent to a queue whose messages stay hidden 6 s
/// after a receive (longer than the 4 s lease) WHEN the worker is killed while its second four
/// run THEN a new worker completes every task, and only those in flight ran twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_loses_nothing_and_reruns_only_what_was_in_flight() {
    a_killed_worker_loses_nothing_on(on_dynamodb().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_loses_nothing_and_reruns_only_what_was_in_flight_on_postgres() {
    a_killed_worker_loses_nothing_on(on_postgres().await).await;
}

async fn a_killed_worker_loses_nothing_on(shared: Shared) {
    let Queues { queue, .. } = fresh_queues(5, Duration::from_secs(6)).await;
    let store = &shared.store;
    let receiver = Receiver::start().await;
    let mut registry = Registry::new();
    registry
        .register("sendWebhook", |_| async { Ok(()) })
        .expect("register");
    let tasker = Tasker::new(store.clone(), registry, ProcessorSettings::default())
        .with_push(Arc::new(queue.clone()));
    let mut ids: Vec<TaskId> = Vec::new();
    for i in 0..TASKS {
        let payload = serde_json::json!({
            "url": format!("{}{}", receiver.base, slow_path(i)),
            "body": {"i": i},
        });
        let task = tasker
            .create(NewTask::new("sendWebhook", payload.to_string()))
            .await
            .expect("create")
            .into_task();
        ids.push(task.id);
    }

    let worker = Worker::start(&shared, queue.url());
    eventually(
        "the second four to start",
        Duration::from_secs(60),
        || async { (receiver.all().len() >= 5).then_some(()) },
    )
    .await;
    drop(worker);
    let mut in_flight = Vec::new();
    for id in &ids {
        let task = store
            .task_get(*id)
            .await
            .expect("get")
            .expect("task not lost");
        if task.status == TaskStatus::Running {
            in_flight.push(*id);
        }
    }
    assert!(
        !in_flight.is_empty(),
        "the kill should interrupt deliveries"
    );
    // A task claimed just before the kill may not have sent its webhook yet: what arrived by
    // now is what the killed worker delivered.
    let delivered_before = receiver.count_by_path();

    let _restarted = Worker::start(&shared, queue.url());
    for id in &ids {
        eventually(
            &format!("task {id} to succeed"),
            Duration::from_secs(60),
            || async {
                let task = store.task_get(*id).await.ok()??;
                (task.status == TaskStatus::Succeeded).then_some(())
            },
        )
        .await;
    }
    let deliveries = receiver.count_by_path();
    for (i, id) in ids.iter().enumerate() {
        // Once, or again once more when the kill interrupted it after its delivery.
        let before = delivered_before.get(&slow_path(i)).copied().unwrap_or(0);
        let expected = if in_flight.contains(id) {
            before + 1
        } else {
            1
        };
        assert_eq!(
            deliveries.get(&slow_path(i)).copied().unwrap_or(0),
            expected,
            "task {i} ({id}): in flight at the kill: {}",
            in_flight.contains(id)
        );
    }
}

/// GIVEN a queue whose visibility timeout (30 s) ends before the default claim (30 s timeout +
/// 30 s grace) WHEN `tasker worker` or `tasker serve` in SQS mode starts THEN it refuses to,
/// naming the type, the variables and the queue's setting (both used to start and run).
#[tokio::test]
async fn a_queue_whose_visibility_ends_before_a_claim_is_refused_at_start() {
    let Queues { queue, .. } = fresh_queues(5, Duration::from_secs(30)).await;
    let store = dynamo::fresh_store().await;
    let start = |args: &[&str]| {
        let mut command = Command::new(process::binary());
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .env("TASKER_STORE", "dynamodb")
            .env("TASKER_TABLE", store.table())
            .env("TASKER_DISPATCH", "sqs")
            .env("TASKER_QUEUE_URL", queue.url())
            .env("AWS_ENDPOINT_URL_SQS", tasker_tests::sqs::endpoint());
        for (key, value) in dynamo::child_env() {
            command.env(key, value);
        }
        process::output_within(&mut command, Duration::from_secs(30))
    };
    for args in [
        vec!["worker", "--queue-url", queue.url(), "--wait", "1"],
        vec!["serve", "--listen", "127.0.0.1:0"],
    ] {
        let output = start(&args);
        assert!(!output.status.success(), "{args:?} started");
        let err = String::from_utf8_lossy(&output.stderr);
        for part in [
            "\"sendWebhook\" holds each claim 60 s",
            "TASKER_HANDLER_TIMEOUT",
            "TASKER_LEASE_GRACE",
            "VisibilityTimeout is 30 s",
        ] {
            assert!(err.contains(part), "{args:?}: {part} missing from {err}");
        }
    }
}

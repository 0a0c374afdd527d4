//! Every DynamoDB call a function's handler makes is one its policy in `template.yaml` grants:
//! each handler runs against DynamoDB Local through a proxy that records the operations, so a
//! call the template forgot (which DynamoDB Local, having no IAM, would let through) fails here.

use std::collections::BTreeSet;
use std::time::Duration;
use tasker::store::{Claim, Store};

use std::sync::Arc;

use tasker::schedule::{Missed, Schedule, ScheduleSpec};
use tasker::store::{Expect, Leases};
use tasker::{AnyStore, NewTask, PollSettings, Task, compose};
use tasker_tests::capacity::CapacityProxy;
use tasker_tests::dynamo;
use tasker_tests::events::{self, send};
use tasker_tests::fixtures::config;
use tasker_tests::sqs::fresh_queues;
use tasker_tests::template::{granted_actions, template};

/// The DynamoDB actions the policies of `function` grant, on any resource.
fn allowed(function: &str) -> BTreeSet<String> {
    granted_actions(&template(), function)
        .into_iter()
        .map(|(_, action)| action.trim_start_matches("dynamodb:").to_owned())
        .collect()
}

/// The operations the proxy saw since it was last read; fails the test when it saw none (a
/// handler that went around the proxy would otherwise pass every check).
fn used(proxy: &CapacityProxy) -> BTreeSet<String> {
    let used: BTreeSet<String> = proxy.take().into_keys().collect();
    assert!(!used.is_empty(), "no DynamoDB call went through the proxy");
    used
}

/// Asserts `used` needs nothing `function` is not granted. A transaction is authorized per
/// write, as the put or update it holds.
fn assert_granted(function: &str, used: &BTreeSet<String>) {
    let allowed = allowed(function);
    for operation in used {
        let needs: &[&str] = match operation.as_str() {
            "TransactWriteItems" => &["PutItem", "UpdateItem"],
            other => &[other],
        };
        for action in needs {
            assert!(
                allowed.contains(*action),
                "{function} calls {operation}, which needs dynamodb:{action}: not granted in \
                 template.yaml ({allowed:?})"
            );
        }
    }
}

/// A store through a fresh recording proxy, and the proxy (cleared after the table's creation).
async fn recorded() -> (AnyStore, CapacityProxy) {
    let proxy = CapacityProxy::start(&dynamo::endpoint()).await;
    let store = AnyStore::DynamoDb(dynamo::fresh_store_at(&proxy.endpoint).await);
    proxy.take();
    (store, proxy)
}

#[tokio::test]
async fn the_enqueue_function_calls_only_what_it_may() {
    let (store, proxy) = recorded().await;
    let app = enqueue::app(
        &config(&[("TASKER_API_TOKEN", "test-token")]),
        store,
        None,
        compose::builtin_types,
    )
    .expect("app");
    let (_, created) = send(&app, "apigw-create-task.json", None).await;
    let id = created["id"].as_str().expect("id").to_owned();
    for (event, id) in [
        ("apigw-create-task.json", None),
        ("apigw-get-task.json", Some(id.as_str())),
        ("apigw-list-tasks.json", None),
        ("apigw-stats.json", None),
        ("apigw-cancel-by-reference.json", None),
        ("apigw-retry-task.json", Some(id.as_str())),
        ("apigw-cancel-task.json", Some(id.as_str())),
        ("apigw-batch-create.json", None),
        ("apigw-create-schedule.json", None),
        ("apigw-list-schedules.json", None),
        ("apigw-trigger-schedule.json", None),
        ("apigw-delete-schedule.json", None),
    ] {
        let (status, body) = send(&app, event, id).await;
        assert!(status.as_u16() < 500, "{event}: {status} {body}");
    }
    let used = used(&proxy);
    assert!(
        used.contains("TransactWriteItems"),
        "the retry of a referenced task: {used:?}"
    );
    assert_granted("EnqueueFunction", &used);
}

#[tokio::test]
async fn the_processor_function_calls_only_what_it_may() {
    let (store, proxy) = recorded().await;
    let config = config(&[("TASKER_API_TOKEN", "test-token")]);
    let tasker =
        compose::tasker_over(&config, store.clone(), compose::builtin_types).expect("tasker");
    // A task whose webhook the production default refuses (it fails), and a final attempt
    // whose lease expired (the run fails it).
    let now = tasker.now();
    let refused = r#"{"url":"http://127.0.0.1:9/hook","body":{}}"#;
    store
        .task_create(Task::from_new(NewTask::new("sendWebhook", refused), now))
        .await
        .expect("create");
    let mut last = NewTask::new("sendWebhook", refused);
    last.max_attempts = Some(1);
    store
        .task_create(Task::from_new(last, now))
        .await
        .expect("create");
    let past = now.minus(Duration::from_secs(120));
    store
        .task_claim(Claim {
            due_by: now,
            ..Claim::due(past, 1, &Leases::fixed(Duration::from_secs(1)))
        })
        .await
        .expect("claim");
    // A schedule whose tick came a minute ago: the run fires it (the tick's task, then the
    // schedule advanced).
    let spec = ScheduleSpec {
        name: "every-minute".to_owned(),
        cron: "* * * * *".to_owned(),
        timezone: "UTC".to_owned(),
        task_type: "sendWebhook".to_owned(),
        payload: refused.to_owned(),
        max_attempts: None,
        missed: Missed::Latest,
        paused: false,
    };
    let timing = spec.validate().expect("valid");
    let due = Schedule::new(spec, &timing, past);
    store
        .schedule_put(&due, Expect::Absent)
        .await
        .expect("put a schedule");
    proxy.take();
    let event = events::scheduled("scheduled-processor.json", Duration::from_secs(60));
    let summary = processor::handle(&tasker, "svc", PollSettings::default(), event, &|_| {})
        .await
        .expect("processor run");
    assert!(summary.claimed >= 1, "{summary:?}");
    let used = used(&proxy);
    assert!(used.contains("PutItem"), "the schedule fired: {used:?}");
    assert_granted("ProcessorFunction", &used);
    let fired = store
        .schedule_get("every-minute")
        .await
        .expect("get")
        .expect("kept");
    assert!(fired.last_run_at.is_some(), "{fired:?}");
}

#[tokio::test]
async fn the_cleanup_function_calls_only_what_it_may() {
    let (store, proxy) = recorded().await;
    let tasker = tasker::Tasker::new(
        store.clone(),
        tasker::Registry::new(),
        tasker::ProcessorSettings::default(),
    );
    let task = Task::from_new(NewTask::new("noop", "{}"), tasker.now());
    store.task_create(task).await.expect("create");
    proxy.take();
    let settings = cleanup::CleanupSettings {
        age: Duration::ZERO,
        sweep_entries: 1000,
        service: "svc",
    };
    let event = events::scheduled("scheduled-cleanup.json", Duration::from_secs(60));
    cleanup::handle(&tasker, settings, event, &|_| {})
        .await
        .expect("cleanup run");
    let used = used(&proxy);
    assert!(
        used.contains("UpdateItem"),
        "the sweep's progress: {used:?}"
    );
    assert_granted("CleanupFunction", &used);
}

/// SQS mode: the worker claims, runs and retries (sending the retry's message), and drops a
/// message for a task that is not due; the processor's mover reads the due queue and fails an
/// expired final attempt. Every DynamoDB call is granted.
#[tokio::test]
async fn the_worker_and_the_mover_call_only_what_they_may() {
    let (store, proxy) = recorded().await;
    let queues = fresh_queues(5, Duration::from_secs(30)).await;
    let config = config(&[("TASKER_API_TOKEN", "test-token")]);
    let tasker = compose::tasker_over(&config, store.clone(), compose::builtin_types)
        .expect("tasker")
        .with_push(Arc::new(queues.queue.clone()));
    let now = tasker.now();
    let refused = r#"{"url":"http://127.0.0.1:9/hook","body":{}}"#;
    let fails = Task::from_new(NewTask::new("sendWebhook", refused), now);
    let mut later = NewTask::new("sendWebhook", refused);
    later.scheduled_at = Some(now.plus(Duration::from_secs(3600)));
    let later = Task::from_new(later, now);
    for task in [&fails, &later] {
        store.task_create(task.clone()).await.expect("create");
    }
    proxy.take();
    let bodies = [fails.id.to_string(), later.id.to_string()];
    let lines = std::sync::Mutex::new(Vec::new());
    let emit = |line: &str| {
        lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line.to_owned())
    };
    let answer = worker::handle(
        &tasker,
        "svc",
        events::sqs(&bodies, Duration::from_secs(60)),
        &emit,
    )
    .await;
    let lines = lines.into_inner().unwrap_or_else(|p| p.into_inner());
    let metrics: serde_json::Value = serde_json::from_str(&lines[0]).expect("one EMF line");
    // The refused webhook failed for good (a private target is a permanent error).
    assert_eq!(metrics["Claimed"], 1, "{metrics}");
    assert_eq!(
        metrics["Failed"], 1,
        "the worker's failure is counted: {metrics}"
    );
    assert!(answer.batch_item_failures.is_empty(), "{answer:?}");
    assert_granted("WorkerFunction", &used(&proxy));

    let mut last = NewTask::new("sendWebhook", refused);
    last.max_attempts = Some(1);
    store
        .task_create(Task::from_new(last, now))
        .await
        .expect("create");
    store
        .task_claim(Claim {
            due_by: now,
            ..Claim::due(
                now.minus(Duration::from_secs(120)),
                1,
                &Leases::fixed(Duration::from_secs(1)),
            )
        })
        .await
        .expect("claim");
    proxy.take();
    tasker.move_due().await.expect("mover");
    let used = used(&proxy);
    assert!(
        used.contains("UpdateItem"),
        "the expired final attempt: {used:?}"
    );
    assert_granted("ProcessorFunction", &used);
}

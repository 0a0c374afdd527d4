//! SQS mode against moto's server and DynamoDB Local: messages only deliver, the table's
//! conditional claim decides, so duplicates, cancels, far-future tasks, lost sends, retries and
//! poison messages all come out right.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use http::{Method, StatusCode};
use serde_json::json;
use tasker::engine::{Handled, Message, Outcome, Work, WorkSummary};
use tasker::push::sqs::SqsQueue;
use tasker::runtime::receive::receive;
use tasker::store::Created;
use tasker::{
    AuthMode, Clock, DynamoStore, ManualClock, NewTask, ProcessorSettings, Registry, RetryPolicy,
    TaskError, TaskId, TaskStatus, Tasker, Timestamp,
};
use tasker_tests::sqs::{Gate, Queues, fresh_queues, messages_in, peek};
use tasker_tests::{dynamo, eventually};

/// How many times each task's handler ran.
type Runs = Arc<Mutex<HashMap<TaskId, u32>>>;

const RECORD: &str = "record";
const FAIL: &str = "fail";

fn registry(runs: &Runs) -> Registry {
    let mut registry = Registry::new();
    let seen = Arc::clone(runs);
    registry
        .register(RECORD, move |ctx| {
            let seen = Arc::clone(&seen);
            async move {
                *seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(ctx.id)
                    .or_default() += 1;
                Ok(())
            }
        })
        .expect("register record");
    let seen = Arc::clone(runs);
    // Three attempts, exactly one second apart: the minimum equals the cap.
    let failing = tasker::handlers::TypeSettings {
        max_attempts: 3,
        retry: RetryPolicy {
            initial_interval_ms: 1000,
            factor: 1.0,
            max_interval_ms: 1000,
            min_interval_ms: 1000,
        },
        ..tasker::handlers::TypeSettings::default()
    };
    registry
        .register_with(FAIL, failing, move |ctx| {
            let seen = Arc::clone(&seen);
            async move {
                *seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(ctx.id)
                    .or_default() += 1;
                Err(TaskError::Retryable("the receiver is down".into()))
            }
        })
        .expect("register fail");
    registry
}

fn settings() -> ProcessorSettings {
    ProcessorSettings {
        concurrency: 16,
        lease_grace: Duration::from_secs(1),
        ..ProcessorSettings::default()
    }
}

fn runs_of(runs: &Runs, id: TaskId) -> u32 {
    runs.lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&id)
        .copied()
        .unwrap_or(0)
}

/// A store over the same table with a client of its own: another process's view.
fn same_table(store: &DynamoStore) -> DynamoStore {
    DynamoStore::new(
        dynamo::client(),
        store.table().to_owned(),
        dynamo::RETENTION,
    )
}

/// Receives from `queue` until `count` messages were worked by `tasker` (deleting the ones
/// done with), or panics after `limit`.
async fn work_messages(
    tasker: &Tasker<DynamoStore>,
    queue: &SqsQueue,
    count: usize,
    limit: Duration,
) -> Vec<Handled> {
    let started = std::time::Instant::now();
    let mut handled = Vec::new();
    while handled.len() < count {
        assert!(
            started.elapsed() < limit,
            "only {} of {count} messages came within {limit:?}",
            handled.len()
        );
        let received = queue
            .receive(10, Duration::from_secs(1))
            .await
            .expect("receive");
        let messages: Vec<Message> = received
            .iter()
            .map(|m| Message {
                message_id: m.message_id.clone(),
                body: m.body.clone(),
            })
            .collect();
        let results = tasker.work(&messages, None).await;
        let done: Vec<&str> = received
            .iter()
            .zip(&results)
            .filter(|(_, h)| **h != Handled::Again)
            .map(|(m, _)| m.receipt_handle.as_str())
            .collect();
        queue.delete(&done).await.expect("delete");
        handled.extend(results);
    }
    handled
}

/// Like [`work_messages`], but counts only the messages that led to an attempt: a retry's
/// delayed message that comes earlier than the worker waits is dropped once a new message is
/// sent for the task's time (nothing is lost), which a loaded machine makes happen now and then.
async fn work_attempts(
    tasker: &Tasker<DynamoStore>,
    queue: &SqsQueue,
    count: usize,
    limit: Duration,
) -> Vec<Handled> {
    let started = std::time::Instant::now();
    let mut attempts = Vec::new();
    while attempts.len() < count {
        let left = limit.saturating_sub(started.elapsed());
        let handled = work_messages(tasker, queue, 1, left).await;
        attempts.extend(
            handled
                .into_iter()
                .filter(|h| *h != Handled::Done(Work::Dropped)),
        );
    }
    attempts
}

/// GIVEN 2,000 tasks whose messages are each sent twice WHEN four workers (each with its own
/// store client, as separate Lambdas) drain the queue THEN every task ran exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_workers_run_each_task_once_though_every_message_comes_twice() {
    const TASKS: usize = 2000;
    let Queues { queue, client, .. } = fresh_queues(5, Duration::from_secs(30)).await;
    let store = dynamo::fresh_store().await;
    let runs: Runs = Arc::default();
    let tasker =
        Tasker::new(store.clone(), registry(&runs), settings()).with_push(Arc::new(queue.clone()));
    let tasks: Vec<_> = futures::stream::iter(0..TASKS)
        .map(|i| {
            let tasker = &tasker;
            async move {
                let new = NewTask::new(RECORD, format!(r#"{{"n":{i}}}"#));
                match tasker.create_held(new).await.expect("create") {
                    Created::New(task) => task,
                    Created::Existing(task) => panic!("unexpected existing task {}", task.id),
                }
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let worker = Tasker::new(same_table(&store), registry(&runs), settings())
                .with_push(Arc::new(queue.clone()));
            let queue = queue.clone();
            let mut stopped = stopped.clone();
            tokio::spawn(async move {
                receive(&worker, &queue, Duration::from_secs(1), async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
            })
        })
        .collect();
    // Every message twice, fifty tasks at a time while the workers read: moto's queue costs
    // grow with its length, so it is kept short.
    for chunk in tasks.chunks(50) {
        tasker.deliver(chunk).await;
        tasker.deliver(chunk).await;
    }
    eventually("every task to succeed", Duration::from_secs(240), || {
        let store = store.clone();
        async move {
            let counts = store
                .task_count_by_status(Timestamp::now_utc())
                .await
                .ok()?;
            (counts.succeeded == TASKS as u64).then_some(())
        }
    })
    .await;
    // The copies still queued are claimed and dropped: none waits, and none is in a worker's
    // hands (received, not yet deleted).
    eventually("the queue to empty", Duration::from_secs(120), || {
        let (client, url) = (client.clone(), queue.url().to_owned());
        async move {
            let (waiting, in_flight) = tasker_tests::sqs::messages_in(&client, &url).await;
            (waiting == 0 && in_flight == 0).then_some(())
        }
    })
    .await;
    let _ = stop.send(true);
    let mut total = WorkSummary::default();
    for worker in workers {
        total.absorb(&worker.await.expect("worker"));
    }

    let runs = runs.lock().unwrap_or_else(|p| p.into_inner()).clone();
    assert_eq!(runs.len(), TASKS);
    let twice: Vec<_> = runs.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "tasks that ran more than once: {twice:?}");
    assert_eq!(total.outcomes.succeeded, TASKS);
    // SQS (and moto) deliver at least once: a few messages may come a third time.
    assert!(
        total.messages >= 2 * TASKS,
        "every message, copies included, was handled: {total:?}"
    );
    assert_eq!(
        total.dropped,
        total.messages - TASKS,
        "every copy was dropped: {total:?}"
    );
    assert_eq!(total.again, 0, "{total:?}");
}

/// GIVEN a task whose message is on its way WHEN it is cancelled before the message arrives
/// THEN the message is dropped and the task never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_task_never_runs_and_its_message_is_dropped() {
    let Queues { queue, client, .. } = fresh_queues(5, Duration::from_secs(30)).await;
    let store = dynamo::fresh_store().await;
    let runs: Runs = Arc::default();
    let tasker =
        Tasker::new(store.clone(), registry(&runs), settings()).with_push(Arc::new(queue.clone()));
    let mut new = NewTask::new(RECORD, "{}");
    new.scheduled_at = Some(Timestamp::now_utc().plus(Duration::from_secs(2)));
    let task = tasker.create(new).await.expect("create").into_task();
    assert_eq!(queue.calls(), 1, "the create sent its message");
    tasker.cancel(task.id).await.expect("cancel");
    let handled = work_messages(&tasker, &queue, 1, Duration::from_secs(20)).await;
    assert_eq!(handled, vec![Handled::Done(Work::Dropped)]);
    assert_eq!(runs_of(&runs, task.id), 0);
    let stored = store.task_get(task.id).await.expect("get").expect("task");
    assert_eq!(stored.status, TaskStatus::Cancelled);
    assert!(
        peek(&client, queue.url()).await.is_empty(),
        "the message was deleted"
    );
}

/// GIVEN a paused type WHEN its task's message arrives THEN the worker drops it and the task
/// stays pending; the mover sends nothing for it until the type is resumed, then the task runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_types_message_is_dropped_and_the_mover_sends_it_after_the_resume() {
    let Queues { queue, .. } = fresh_queues(5, Duration::from_secs(30)).await;
    let store = dynamo::fresh_store().await;
    let runs: Runs = Arc::default();
    let clock = Arc::new(ManualClock::new(Timestamp::now_utc()));
    let tasker = Tasker::with_clock(store.clone(), registry(&runs), settings(), clock.clone())
        .with_push(Arc::new(queue.clone()));
    tasker.pause_type(RECORD, true).await.expect("pause");
    let task = tasker
        .create(NewTask::new(RECORD, "{}"))
        .await
        .expect("create")
        .into_task();
    assert_eq!(queue.calls(), 1, "the create still sends its message");
    let handled = work_messages(&tasker, &queue, 1, Duration::from_secs(20)).await;
    assert_eq!(handled, vec![Handled::Done(Work::Dropped)]);
    assert_eq!(runs_of(&runs, task.id), 0);
    let stored = store.task_get(task.id).await.expect("get").expect("task");
    assert_eq!(stored.status, TaskStatus::Pending);

    clock.advance(Duration::from_secs(60));
    let held = tasker.move_due().await.expect("mover");
    assert_eq!((held.found, held.sent), (0, 0), "paused: nothing sent");

    tasker.pause_type(RECORD, false).await.expect("resume");
    let moved = tasker.move_due().await.expect("mover");
    assert_eq!((moved.sent, moved.repaired), (1, 1), "late now: sent again");
    let handled = work_messages(&tasker, &queue, 1, Duration::from_secs(20)).await;
    assert_eq!(handled, vec![Handled::Done(Work::Ran(Outcome::Succeeded))]);
    assert_eq!(runs_of(&runs, task.id), 1);
}

/// GIVEN a task 20 minutes out WHEN it is created THEN nothing is sent; the mover sends it once
/// it is within 15 minutes, and it runs when due, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_task_is_sent_by_the_mover_and_runs_when_due() {
    let Queues { queue, .. } = fresh_queues(5, Duration::from_secs(30)).await;
    let store = dynamo::fresh_store().await;
    let runs: Runs = Arc::default();
    let clock = Arc::new(ManualClock::new(Timestamp::now_utc()));
    let tasker = Tasker::with_clock(store.clone(), registry(&runs), settings(), clock.clone())
        .with_push(Arc::new(queue.clone()));
    let due = clock.now().plus(Duration::from_secs(20 * 60));
    let mut new = NewTask::new(RECORD, "{}");
    new.scheduled_at = Some(due);
    let task = tasker.create(new).await.expect("create").into_task();
    assert_eq!(
        queue.calls(),
        0,
        "nothing is sent for a task 20 minutes out"
    );

    clock.advance(Duration::from_secs(4 * 60));
    let early = tasker.move_due().await.expect("mover");
    assert_eq!(
        (early.found, early.sent),
        (0, 0),
        "16 minutes out: still in the table"
    );

    clock.advance(Duration::from_secs(15 * 60 + 59));
    let moved = tasker.move_due().await.expect("mover");
    assert_eq!((moved.sent, moved.repaired), (1, 0));
    let again = tasker.move_due().await.expect("mover");
    assert_eq!(again.sent, 0, "its message is on its way: not sent twice");

    // Delivered a second early by this clock: not run, sent again for its time.
    let handled = work_messages(&tasker, &queue, 1, Duration::from_secs(20)).await;
    assert_eq!(handled, vec![Handled::Done(Work::Dropped)]);
    assert_eq!(runs_of(&runs, task.id), 0, "not run before it is due");
    clock.advance(Duration::from_secs(1));
    let handled = work_messages(&tasker, &queue, 1, Duration::from_secs(20)).await;
    assert_eq!(handled, vec![Handled::Done(Work::Ran(Outcome::Succeeded))]);
    assert_eq!(runs_of(&runs, task.id), 1);
    let stored = store.task_get(task.id).await.expect("get").expect("task");
    assert_eq!(stored.status, TaskStatus::Succeeded);
    assert!(stored.succeeded_at.is_some_and(|at| at >= due));
}

/// GIVEN SQS unreachable WHEN the API creates a task THEN it answers 201, and the mover sends
/// the task once it is late, and it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_succeeds_while_sqs_is_down_and_the_mover_repairs_it() {
    let Queues { queue, .. } = fresh_queues(5, Duration::from_secs(30)).await;
    let store = dynamo::fresh_store().await;
    let runs: Runs = Arc::default();
    // Nothing listens on a port just released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}", closed.local_addr().expect("address"));
    drop(closed);
    let unreachable = SqsQueue::new(
        tasker_tests::sqs::client_for(&dead),
        format!("{dead}/123456789012/tasker"),
    );
    let api =
        Tasker::new(store.clone(), registry(&runs), settings()).with_push(Arc::new(unreachable));
    let app = tasker::api::router(Arc::new(api), AuthMode::Open);
    let body = json!({"type": RECORD, "payload": {"to": "someone"}}).to_string();
    let (status, created) =
        tasker_tests::http::call(&app, Method::POST, "/tasks", body, None).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id: TaskId = created["id"]
        .as_str()
        .expect("an id")
        .parse()
        .expect("a task id");

    // The mover, a little over half a minute later.
    let clock = Arc::new(ManualClock::new(
        Timestamp::now_utc().plus(Duration::from_secs(31)),
    ));
    let mover = Tasker::with_clock(same_table(&store), registry(&runs), settings(), clock)
        .with_push(Arc::new(queue.clone()));
    let moved = mover.move_due().await.expect("mover");
    assert_eq!((moved.sent, moved.repaired), (1, 1));
    let handled = work_messages(&mover, &queue, 1, Duration::from_secs(20)).await;
    assert_eq!(handled, vec![Handled::Done(Work::Ran(Outcome::Succeeded))]);
    assert_eq!(runs_of(&runs, id), 1);
}

/// GIVEN SQS down when a task is created WHEN it answers again THEN the creating process sends
/// the kept message itself a second or so later, without the mover, and the task runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_failed_is_sent_again_by_its_process_once_sqs_answers() {
    let Queues { queue, .. } = fresh_queues(5, Duration::from_secs(30)).await;
    let store = dynamo::fresh_store().await;
    let runs: Runs = Arc::default();
    let gate = Gate::shut().await;
    let through_gate = SqsQueue::new(tasker_tests::sqs::client_for(&gate.endpoint), queue.url());
    let api =
        Tasker::new(store.clone(), registry(&runs), settings()).with_push(Arc::new(through_gate));
    let created = api
        .create(NewTask::new(RECORD, r#"{"to": "someone"}"#))
        .await
        .expect("a create succeeds while SQS is down");
    let moto = tasker_tests::sqs::client_for(&tasker_tests::sqs::endpoint());
    assert_eq!(messages_in(&moto, queue.url()).await, (0, 0));

    gate.open();
    eventually("the kept message sent", Duration::from_secs(10), || async {
        api.resend().await;
        (messages_in(&moto, queue.url()).await == (1, 0)).then_some(())
    })
    .await;
    let worker = Tasker::new(same_table(&store), registry(&runs), settings())
        .with_push(Arc::new(queue.clone()));
    let handled = work_messages(&worker, &queue, 1, Duration::from_secs(20)).await;
    assert_eq!(handled, vec![Handled::Done(Work::Ran(Outcome::Succeeded))]);
    assert_eq!(runs_of(&runs, created.task().id), 1);
}

/// GIVEN a task that always fails, three attempts, one second apart WHEN workers read the
/// queue THEN each retry comes back through a delayed message, and the task ends failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_task_retries_through_delayed_messages_then_fails() {
    let Queues { queue, .. } = fresh_queues(5, Duration::from_secs(30)).await;
    let store = dynamo::fresh_store().await;
    let runs: Runs = Arc::default();
    let tasker = Tasker::new(store.clone(), registry(&runs), settings())
        .with_push(Arc::new(queue.clone()))
        .with_jitter(|| 1.0);
    let task = tasker
        .create(NewTask::new(FAIL, "{}"))
        .await
        .expect("create")
        .into_task();
    let handled = work_attempts(&tasker, &queue, 3, Duration::from_secs(30)).await;
    assert_eq!(
        handled,
        vec![
            Handled::Done(Work::Ran(Outcome::Retried)),
            Handled::Done(Work::Ran(Outcome::Retried)),
            Handled::Done(Work::Ran(Outcome::Failed)),
        ]
    );
    let stored = store.task_get(task.id).await.expect("get").expect("task");
    assert_eq!(stored.status, TaskStatus::Failed);
    assert_eq!(stored.attempts, 3);
    assert_eq!(runs_of(&runs, task.id), 3);
}

/// GIVEN a message that names no task WHEN workers receive it THEN they leave it, and after the
/// redrive policy's two receives it is in the dead-letter queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_ends_in_the_dead_letter_queue() {
    let Queues {
        queue,
        dlq_url,
        client,
    } = fresh_queues(2, Duration::from_secs(1)).await;
    let store = dynamo::fresh_store().await;
    let runs: Runs = Arc::default();
    let tasker = Tasker::new(store, registry(&runs), settings());
    client
        .send_message()
        .queue_url(queue.url())
        .message_body("<not a task id>")
        .send()
        .await
        .expect("send the poison message");
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let worker = {
        let queue = queue.clone();
        tokio::spawn(async move {
            receive(&tasker, &queue, Duration::from_secs(1), async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
        })
    };
    let dead = eventually(
        "the message in the dead-letter queue",
        Duration::from_secs(30),
        || {
            let client = client.clone();
            let dlq_url = dlq_url.clone();
            async move {
                let bodies = peek(&client, &dlq_url).await;
                (!bodies.is_empty()).then_some(bodies)
            }
        },
    )
    .await;
    let _ = stop.send(true);
    let summary = worker.await.expect("worker");
    assert_eq!(dead, vec!["<not a task id>".to_owned()]);
    assert_eq!(summary.again, 2, "received twice, left both times");
    assert_eq!(summary.messages, 2);
}
